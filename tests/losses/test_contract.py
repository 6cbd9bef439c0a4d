"""The input contract, checked for every registered loss: registering a loss gets it tested.

Tiny shapes (2×3×8×8, 2×3×4×6×6) keep the whole matrix at a few seconds. Losses marked
``binary_only`` run on one-channel logits; ``needs_distance`` ones compute their maps from the
target. A loss whose value comes from a fused kernel (``_ops.use_fused`` says yes on a contract
input) runs each property on the kernel and on the plain path (the one a CUDA run takes); the
others run once. Bad targets are refused here, for every loss, with the contract's messages.
"""

from __future__ import annotations

import contextlib
import sys
from unittest import mock

import numpy as np
import pytest
import torch

import references as ref

from conftest import random_labels, random_logits
from medsegloss import losses
from medsegloss._ops import fused_paths

NAMES = losses.available()
SHAPES = {"2d": (2, 3, 8, 8), "3d": (2, 3, 4, 6, 6)}


def _channels(name: str, shape) -> tuple:
    """One-channel logits for binary-only losses."""
    return (shape[0], 1, *shape[2:]) if losses.info(name).binary_only else tuple(shape)


def _case(name, shape=SHAPES["2d"], seed=0, scale=1.0):
    shape = _channels(name, shape)
    logits = random_logits(shape, seed=seed, scale=scale)
    labels = random_labels((shape[0], *shape[2:]), shape[1], seed=seed + 1)
    return logits, labels


def _perfect_logits(labels, channels):
    """Logits whose prediction is the target (±20 for one channel, 20·one-hot otherwise)."""
    if channels == 1:
        return 20.0 * (2.0 * labels.unsqueeze(1).float() - 1.0)
    return 20.0 * torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).float()


def _blob_case(shape, scale=4.0):
    """A structured input: a box of class 1 (a quarter of each side from the edges) and a
    prediction of the same box shifted by a quarter of the last axis, logits ``±scale``."""
    n, c, *spatial = shape
    labels = torch.zeros((n, *spatial), dtype=torch.long)
    labels[(slice(None), *(slice(s // 4, 3 * s // 4) for s in spatial))] = 1
    predicted = labels.roll(max(spatial[-1] // 4, 1), dims=-1)
    onehot = predicted.unsqueeze(1).float() if c == 1 else \
        torch.nn.functional.one_hot(predicted, c).movedim(-1, 1).float()
    return (scale * (2.0 * onehot - 1.0)).requires_grad_(), labels


def _gradient_must_reach(name, logits, labels, grad):
    """Non-zero gradient on this input; for a loss whose gradient can vanish on unstructured
    noise (registry flag), on the shifted blob of the same shape instead."""
    if losses.info(name).gradient_can_vanish:
        logits, labels = _blob_case(tuple(logits.shape))
        _, grad = _value_and_grad(losses.get(name), logits, labels)
        assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def _value_and_grad(loss, logits, target):
    value = loss(logits, target)
    value.backward()
    return value, logits.grad


def _names_with_a_kernel() -> set[str]:
    """The losses for which some loss module's ``use_fused`` answers yes on the contract's inputs
    (labels, C = 3 and C = 1): their value comes from a fused kernel there."""
    modules = [module for name, module in list(sys.modules.items())
               if name.startswith("medsegloss.losses") and callable(getattr(module, "use_fused", None))]
    found, current = set(), [None]

    def recording(original):
        def use_fused(*args, **kwargs):
            if original(*args, **kwargs):
                found.add(current[0])
                return True
            return False
        return use_fused

    with contextlib.ExitStack() as stack, torch.no_grad():
        for module in modules:
            stack.enter_context(mock.patch.object(module, "use_fused", recording(module.use_fused)))
        for name in NAMES:
            current[0] = name
            for channels in (1,) if losses.info(name).binary_only else (1, 3):
                logits = random_logits((1, channels, 6, 6), requires_grad=False)
                losses.get(name)(logits, random_labels((1, 6, 6), channels))
    return found


KERNELS = _names_with_a_kernel()


def _on_paths(names):
    """``(name, path)`` parameters: the fused and the plain path for a loss with a kernel, else the rule."""
    return [pytest.param(name, path, id=f"{path}-{name}") for name in names
            for path in (("fused", "plain") if name in KERNELS else ("rule",))]


@pytest.fixture
def path(request):
    """Force the path of the test's ``path`` parameter (``rule``: use_fused decides)."""
    with fused_paths({"fused": True, "plain": False, "rule": None}[request.param]):
        yield request.param


def test_the_kernel_probe_finds_the_kernels():
    assert {"ce", "dice", "iou", "tversky", "gdl", "dice_ce", "focal"} <= KERNELS
    assert not KERNELS & {"mcc", "lovasz", "cldice", "boundary", "hd_er", "combo", "lesion"}


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("name, path", _on_paths(NAMES), indirect=["path"])
def test_finite_value_and_gradient_reach_the_logits(name, path, dims):
    logits, labels = _case(name, SHAPES[dims])
    value, grad = _value_and_grad(losses.get(name), logits, labels)
    assert value.shape == () and torch.isfinite(value)
    assert grad is not None and torch.isfinite(grad).all()
    _gradient_must_reach(name, logits, labels, grad)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 1, 8, 12, 12)])
@pytest.mark.parametrize("name", [name for name in NAMES if losses.info(name).gradient_can_vanish])
def test_a_loss_whose_gradient_can_vanish_on_noise_has_one_on_a_shifted_blob(name, shape):
    """The flag excuses noise only: a wrong box of the right size gives a gradient, which
    lowers the loss (a small step against it)."""
    logits, labels = _blob_case(shape)
    logits = logits.detach().double().requires_grad_()  # float64: a small step's decrease is not lost in rounding
    value, grad = _value_and_grad(losses.get(name), logits, labels)
    assert float(value.detach()) > 0 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        stepped = losses.get(name)(logits - 1e-3 * grad / grad.abs().max(), labels)
    assert float(stepped) < float(value.detach())


@pytest.mark.parametrize("name, path", _on_paths(NAMES), indirect=["path"])
def test_class_absent_from_the_target(name, path):
    logits, labels = _case(name)
    labels = labels.clone()
    labels[labels == labels.max()] = 0  # the highest class (the foreground for one channel) is absent
    value, grad = _value_and_grad(losses.get(name), logits, labels)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name, path", _on_paths(NAMES), indirect=["path"])
def test_saturated_logits_stay_finite(name, path):
    logits, labels = _case(name, scale=1000.0)
    value, grad = _value_and_grad(losses.get(name), logits, labels)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    perfect = (_perfect_logits(labels, logits.shape[1]) * 50).requires_grad_()  # ±1000, p exactly 0 / 1
    value, grad = _value_and_grad(losses.get(name), perfect, labels)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name, path", _on_paths(NAMES), indirect=["path"])
def test_bf16_autocast_computes_in_float32(name, path):
    logits, labels = _case(name)
    half = logits.detach().to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = losses.get(name)(half, labels)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(half.grad.float()).all()
    torch.testing.assert_close(value, losses.get(name)(half.detach().float(), labels), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, path", _on_paths(NAMES), indirect=["path"])
def test_perfect_prediction_scores_no_higher_than_random(name, path):
    loss = losses.get(name)
    logits, labels = _case(name)
    perfect = _perfect_logits(labels, logits.shape[1])
    with torch.no_grad():
        assert float(loss(perfect, labels)) <= float(loss(logits, labels))


# class -> options -> float64 reference: registry name, non-default options, reference(logits, labels)
CLASS_REFERENCES = {
    "dice": ({"smooth": 0.5}, lambda x, y: ref.class_mean(ref.dice(*ref.region_statistics(x, y)[:2], smooth=0.5))),
    "tversky": ({"alpha": 0.2, "beta": 0.9},
                lambda x, y: ref.class_mean(ref.tversky(*ref.region_statistics(x, y)[:2], alpha=0.2, beta=0.9))),
    "focal": ({"gamma": 3.0}, lambda x, y: ref.focal(x, y, 3.0)),
    "topk": ({"k": 25}, lambda x, y: ref.topk(x, y, 25)),
    "boundary": ({"include_background": True}, lambda x, y: ref.boundary_ref(x, y, True)),
    "combo": ({"alpha": 0.3, "beta": 0.8}, lambda x, y: ref.combo_ref(x, y, 0.3, 0.8)),
}


@pytest.mark.parametrize("name, path", _on_paths(CLASS_REFERENCES), indirect=["path"])
def test_class_matches_float64_reference(name, path):
    options, reference = CLASS_REFERENCES[name]
    logits = random_logits((2, 3, 6, 7), seed=5, dtype=torch.float64, scale=2.0)
    labels = random_labels((2, 6, 7), 3, seed=6)
    value = losses.get(name, reduction="none", **options)(logits, labels)
    expected = reference(logits.detach().numpy(), labels.numpy())
    torch.testing.assert_close(value.detach(), torch.from_numpy(np.asarray(expected, np.float64)), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name, path", _on_paths(NAMES), indirect=["path"])
def test_reduction_none_gives_one_value_per_sample(name, path):
    if "reduction" not in losses.info(name).options:
        pytest.skip(f"{name} has no reduction option")
    logits, labels = _case(name, (3, 3, 8, 8))
    per_sample = losses.get(name, reduction="none")(logits, labels)
    assert per_sample.shape == (3,)
    torch.testing.assert_close(per_sample.mean(), losses.get(name)(logits, labels))
    torch.testing.assert_close(per_sample.sum(), losses.get(name, reduction="sum")(logits, labels))


@pytest.mark.parametrize("name", NAMES)
def test_bad_targets_raise_clear_errors(name):
    """The one home of the property: every input the contract forbids is refused with its message."""
    loss = losses.get(name)
    logits, labels = _case(name)
    n, c, h, w = logits.shape
    with pytest.raises(ValueError, match=r"integer target must have shape \(N, \*spatial\) = \(2, 8, 8\).*got \(2, 8, 7\)"):
        loss(logits, labels[..., :7])
    for bad_label in (max(c, 2), -1):
        out_of_range = labels.clone()
        out_of_range[1, 3, 5] = bad_label
        with pytest.raises(ValueError, match=rf"target labels must lie in \[0, {max(c, 2) - 1}\].*got values in"):
            loss(logits, out_of_range)
    with pytest.raises(ValueError, match=rf"one-hot target has {c + 1} channels but logits have C={c}"):
        loss(logits, torch.zeros(n, c + 1, h, w))
    for fill in (8.0, -0.5, float("nan"), float("inf")):
        target = torch.zeros(logits.shape)
        target[:, :, 2:4, 2:4] = fill
        with pytest.raises(ValueError, match=r"float target must hold probabilities in \[0, 1\]"):
            loss(logits, target)
    with pytest.raises(ValueError, match=r"logits must not be empty: got shape \(0, "):
        loss(logits[:0], labels[:0])
    with pytest.raises(ValueError, match="floating-point tensor"):
        loss(logits.detach().long(), labels)


def test_float_target_at_the_ends_of_0_1_is_accepted():
    logits = random_logits((2, 3, 6, 6))
    target = torch.nn.functional.one_hot(random_labels((2, 6, 6), 3), 3).movedim(-1, 1).double()
    assert torch.isfinite(losses.get("dice")(logits, target))


@pytest.mark.parametrize("name, path", _on_paths([name for name in NAMES if not losses.info(name).binary_only]),
                         indirect=["path"])
def test_one_channel_logits_are_binary(name, path):
    loss = losses.get(name)
    logits, labels = random_logits((2, 1, 8, 8), seed=3), random_labels((2, 8, 8), 1, seed=4)
    value, grad = _value_and_grad(loss, logits, labels)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    _gradient_must_reach(name, logits, labels, grad)
    assert float(loss(_perfect_logits(labels, 1), labels)) <= float(value.detach())
    with pytest.raises(ValueError, match="target labels must lie in"):
        loss(logits, labels + 1)  # label 2 with one channel: binary means {0, 1}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_fused_and_plain_paths_agree(name, channels):
    """Values to 1e-10 and gradients in float64, whichever path `use_fused` picks (labels, and
    one-hot / soft labels for one channel)."""
    from medsegloss._ops import fused_paths

    if losses.info(name).binary_only and channels != 1:
        pytest.skip("binary-only loss")
    logits = random_logits((2, channels, 6, 5), seed=21, dtype=torch.float64, scale=2.0)
    labels = random_labels((2, 6, 5), channels, seed=22)
    targets = [labels] + ([labels.unsqueeze(1).double()] if channels == 1 else [])
    for target in targets:
        results = []
        for enabled in (True, False):
            with fused_paths(enabled):
                value = losses.get(name, reduction="none")(logits, target) if "reduction" in \
                    losses.info(name).options else losses.get(name)(logits, target)
                (grad,) = torch.autograd.grad(value.sum(), logits)
                results.append((value.detach(), grad))
        (fused_value, fused_grad), (plain_value, plain_grad) = results
        torch.testing.assert_close(fused_value, plain_value, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-8, atol=1e-10)
