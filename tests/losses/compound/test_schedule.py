"""Term-weight schedules (``losses.compound.schedule``): closed-form values, applying a schedule
to a WeightedSum changes the loss as the formula says, and a training run follows the schedule of
its loss string."""

from __future__ import annotations

import json

import pytest
import torch

from medsegloss import losses
from medsegloss.losses.compound.language import parse_schedule


@pytest.mark.parametrize("total", [2, 11, 1000])
def test_linear_over_the_budget_runs_from_a_at_the_first_step_to_b_at_the_last(total):
    schedule = parse_schedule("boundary=linear(0.01, 1.0)")
    for step in range(0, total, max(1, total // 7)):
        expected = 0.01 + (1.0 - 0.01) * step / (total - 1)
        assert schedule.weights(step, total)["boundary"] == pytest.approx(expected, rel=1e-12)
    assert schedule.weights(total - 1, total)["boundary"] == 1.0


def test_linear_between_two_steps_holds_its_ends_outside():
    schedule = parse_schedule("b=linear(2, 4, 10, 20)")
    values = [schedule.weights(step, 100)["b"] for step in (0, 10, 15, 20, 99)]
    assert values == [2.0, 2.0, 3.0, 4.0, 4.0]


def test_step_is_piecewise_constant_from_each_point_on():
    schedule = parse_schedule("boundary=step(0@0, 1@2000); dice=step(1@0, 0.5@10, 0.25@20)")
    assert [schedule.weights(s, 5000)["boundary"] for s in (0, 1999, 2000, 4999)] == [0, 0, 1, 1]
    assert [schedule.weights(s, 5000)["dice"] for s in (9, 10, 19, 20)] == [1, 0.5, 0.5, 0.25]


def test_applied_schedule_gives_the_weighted_sum_of_its_terms():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 12, 12, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 12, 12), generator=generator)
    loss = losses.build("gdl + 0.01*boundary")
    schedule = parse_schedule("boundary=linear(0.5, 2.0)")
    schedule.check_terms(loss)
    gdl = losses.get("gdl")(logits, target)
    boundary = losses.get("boundary")(logits, target)
    for step, weight in ((0, 0.5), (10, 2.0)):
        assert schedule.apply(loss, step, total_steps=11) == {"boundary": weight}
        assert float(loss(logits, target)) == pytest.approx(float(gdl + weight * boundary), rel=1e-12)


def test_a_schedule_must_name_terms_of_a_compound_loss():
    schedule = parse_schedule("boundary=linear(0, 1)")
    with pytest.raises(ValueError, match=r"term\(s\) \['boundary'\] that the loss does not have"):
        schedule.check_terms(losses.build("ce + dice"))
    with pytest.raises(ValueError, match="needs a compound loss"):
        schedule.check_terms(losses.get("dice"))


# ---------------------------------------------------------------- in the trainer


TINY = {"image_size": 32, "base_width": 4, "depth": 2, "batch_size": 4, "lr": 1e-2, "metrics": ("dice",),
        "device": "cpu", "dataset_options": {"num_cases": 6, "slices_per_case": 4}, "val_fraction": 0.2,
        "test_fraction": 0.34, "threads": 1, "steps": 6, "val_every": 3, "dataset": "phantom-lesion"}


def _run(tmp_path, name, **changes):
    from medsegloss.experiment.config import Config
    from medsegloss.experiment.trainer import fit

    out = tmp_path / name
    fit(Config.preset("default", **{**TINY, **changes}), out, quiet=True)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return torch.load(out / "last.pt", weights_only=True)["model"], lines


def test_a_scheduled_run_logs_its_weights_and_a_constant_schedule_changes_nothing(tmp_path):
    plain, _ = _run(tmp_path, "plain", loss="gdl + 0.5*boundary")
    constant, lines = _run(tmp_path, "constant", loss="gdl + 0.5*boundary", loss_schedule="boundary=step(0.5@0)")
    assert [line["term_weights"] for line in lines] == [{"gdl": 1.0, "boundary": 0.5}] * 2
    assert all(torch.equal(plain[key], constant[key]) for key in plain)
    ramped, lines = _run(tmp_path, "ramped", loss="gdl + 0.5*boundary", loss_schedule="boundary=step(0@0, 1@3)")
    assert [line["term_weights"]["boundary"] for line in lines] == [0.0, 1.0]
    assert any(not torch.equal(plain[key], ramped[key]) for key in plain)
    # the same schedule written after '|' in the loss string (a bench loss) gives the same run
    piped, _ = _run(tmp_path, "piped", loss="gdl + 0.5*boundary | boundary=step(0@0, 1@3)")
    assert all(torch.equal(piped[key], ramped[key]) for key in plain)


@pytest.mark.parametrize("changes, words", [
    ({"loss": "gdl + boundary", "loss_schedule": "hd=linear(0, 1)"}, "does not have"),
    ({"loss": "dice", "loss_schedule": "dice=linear(0, 1)"}, "needs a compound loss"),
    ({"loss": "gdl + boundary | boundary=linear(0, 1)", "loss_schedule": "boundary=linear(0, 1)"}, "keep one"),
    ({"loss": "gdl + boundary", "loss_schedule": "boundary=linear(1)"}, "linear takes"),
])
def test_a_bad_schedule_fails_before_any_work(tmp_path, changes, words):
    from medsegloss.experiment.config import Config
    from medsegloss.experiment.components import check_config

    with pytest.raises(ValueError, match=words):
        check_config(Config.preset("default", **{**TINY, **changes}))
