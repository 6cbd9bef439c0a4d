"""Learning-rate schedules: closed forms, torch's own schedulers as peers, the optimizer helper."""

from __future__ import annotations

import math

import pytest
import torch

from medsegloss.experiment.lr_schedule import apply_learning_rate, learning_rate

TOTAL, BASE = 40, 0.01


def _torch_rates(make_scheduler, steps: int, base: float = BASE) -> list[float]:
    """The rate torch's scheduler gives each of ``steps`` updates (read before optimizer.step)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_constant_is_the_base_rate_exactly():
    assert all(learning_rate(step, TOTAL, BASE) == BASE for step in range(TOTAL))


def test_poly_matches_the_nnunet_formula_and_torch_polynomial_lr():
    ours = [learning_rate(step, TOTAL, BASE, "poly") for step in range(TOTAL)]
    assert ours == pytest.approx([BASE * (1 - step / TOTAL) ** 0.9 for step in range(TOTAL)], rel=1e-12)
    peer = _torch_rates(lambda opt: torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=TOTAL, power=0.9), TOTAL)
    assert ours == pytest.approx(peer, rel=1e-6)


def test_cosine_matches_the_formula_and_torch_cosine_annealing():
    ours = [learning_rate(step, TOTAL, BASE, "cosine") for step in range(TOTAL)]
    assert ours == pytest.approx([BASE * (1 + math.cos(math.pi * step / TOTAL)) / 2 for step in range(TOTAL)],
                                 rel=1e-12)
    peer = _torch_rates(lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=TOTAL, eta_min=0.0), TOTAL)
    assert ours == pytest.approx(peer, rel=1e-6, abs=1e-12)
    assert ours[0] == BASE and 0 < ours[-1] < BASE * 1e-2  # from the base towards 0


@pytest.mark.parametrize("schedule", ["constant", "poly", "cosine"])
def test_warmup_is_linear_then_the_schedule_over_the_remaining_steps(schedule):
    warmup = 8
    rates = [learning_rate(step, TOTAL, BASE, schedule, warmup_steps=warmup) for step in range(TOTAL)]
    peer = _torch_rates(lambda opt: torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0,
                                                                      total_iters=warmup - 1), warmup)
    assert rates[:warmup] == pytest.approx(peer, rel=1e-9)
    assert rates[warmup - 1] == pytest.approx(BASE)
    after = [learning_rate(step, TOTAL - warmup, BASE, schedule) for step in range(TOTAL - warmup)]
    assert rates[warmup:] == after  # the schedule restarted at the end of the warm-up


def test_apply_sets_every_group_from_its_own_base_and_survives_a_state_dict_round_trip():
    weights = [torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)]
    optimizer = torch.optim.Adam([{"params": [weights[0]], "lr": 0.01}, {"params": [weights[1]], "lr": 0.001}])
    for step in range(5):
        apply_learning_rate(optimizer, step, 10, "poly")
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(
        [0.01 * (1 - 4 / 10) ** 0.9, 0.001 * (1 - 4 / 10) ** 0.9])
    resumed = torch.optim.Adam([{"params": [weights[0]]}, {"params": [weights[1]]}], lr=0.5)
    resumed.load_state_dict(optimizer.state_dict())
    assert apply_learning_rate(resumed, 5, 10, "poly") == pytest.approx(0.01 * 0.5 ** 0.9)
    assert resumed.param_groups[1]["lr"] == pytest.approx(0.001 * 0.5 ** 0.9)


def test_a_constant_schedule_changes_no_training_step():
    def train(scheduled: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        data = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
        for step in range(20):
            if scheduled:
                apply_learning_rate(optimizer, step, 20, "constant")
            optimizer.zero_grad()
            model(data).pow(2).mean().backward()
            optimizer.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(train(True), train(False))


@pytest.mark.parametrize("arguments, message", [
    ((40, 40, BASE), "step must be < total_steps"),
    ((-1, 40, BASE), "step must be an int >= 0"),
    ((0, 0, BASE), "total_steps must be an int >= 1"),
    ((0, 40, 0.0), "base_lr"),
    ((0, 40, BASE, "linear"), "schedule must be one of constant, poly, cosine"),
    ((0, 40, BASE, "poly", 40), "warmup_steps must be < total_steps"),
])
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        learning_rate(*arguments)
