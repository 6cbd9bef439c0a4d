"""Property-based fuzzing of the loss input contract, for every registered loss.

Hypothesis draws a shape (2-D / 3-D, N = 0..2, C = 1..4, small spatial sizes), a logits dtype
(float16 / 32 / 64, or an integer dtype), a target kind (integer labels of several dtypes, bool
labels, float one-hot / soft labels) and values that may lie out of range (labels below 0 or at
C and beyond, float targets outside [0, 1], NaN, inf). The property: an input the contract
accepts gives a finite value with finite gradients reaching the logits; any other input a
``ValueError`` / ``TypeError`` whose message names the problem. Never another exception type,
never a silent NaN, never a valid input refused. ``derandomize=True`` keeps CI reproducible; a
failure prints the drawn case. (The forbidden inputs, one by one with their messages:
``test_contract.py``.)
"""

from __future__ import annotations

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medsegloss import losses  # noqa: E402

NAMES = losses.available()
LOGIT_DTYPES = [torch.float32, torch.float32, torch.float16, torch.float64, torch.float64, torch.int64]
LABEL_DTYPES = [torch.int64, torch.int32, torch.uint8, torch.bool]
FLOAT_DTYPES = [torch.float16, torch.float32, torch.float64]
# what a contract error must talk about: the argument, its shape / dtype / values
PROBLEM_WORDS = ("logits", "target", "label", "shape", "dtype", "channel", "class", "probabilit", "empty")

FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def loss_inputs(draw, name: str):
    """``(logits, target, description)`` with a requires-grad float logits tensor (or an integer
    one, which must be refused) and a target that may or may not satisfy the contract."""
    binary = losses.info(name).binary_only
    dims = draw(st.sampled_from([2, 3]))
    n = draw(st.sampled_from([1, 2, 1, 2, 0]))
    c = draw(st.sampled_from([1, 1, 2])) if binary else draw(st.integers(1, 4))
    spatial = tuple(draw(st.integers(1, 5)) for _ in range(dims))
    logits_dtype = draw(st.sampled_from(LOGIT_DTYPES))
    scale = draw(st.sampled_from([1.0, 10.0]))
    kind = draw(st.sampled_from(["labels", "labels", "float", "float_soft", "float_bad"]))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    shape = (n, c, *spatial)
    if logits_dtype.is_floating_point:
        logits = (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(logits_dtype)
        logits.requires_grad_()
    else:
        logits = torch.randint(-3, 4, shape, generator=generator, dtype=logits_dtype)
    classes = max(c, 2)
    if kind == "labels":
        label_dtype = draw(st.sampled_from(LABEL_DTYPES))
        low, high = draw(st.sampled_from([(0, classes), (0, classes), (-2, classes), (0, classes + 3)]))
        target = torch.randint(low, high, (n, *spatial), generator=generator)
        if label_dtype == torch.bool:
            target = target > 0
        elif label_dtype == torch.uint8:
            target = target.clamp(min=0).to(label_dtype)  # uint8 cannot hold negatives
        else:
            target = target.to(label_dtype)
        if draw(st.booleans()):
            target = target.unsqueeze(1)  # (N, 1, *spatial) labels, as loaders produce
    else:
        target_dtype = draw(st.sampled_from(FLOAT_DTYPES))
        labels = torch.randint(0, classes, (n, *spatial), generator=generator)
        one_hot = torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).double()
        target = one_hot[:, 1:] if c == 1 else one_hot
        if kind == "float_soft":
            target = 0.8 * target + 0.2 * torch.rand(target.shape, generator=generator, dtype=torch.float64)
        elif kind == "float_bad" and target.numel():
            bad = draw(st.sampled_from([-0.25, 1.5, 255.0, float("nan"), float("inf"), -float("inf")]))
            target = target.contiguous().clone()
            target.view(-1)[seed % target.numel()] = bad
        if draw(st.integers(0, 4)) == 0:  # now and then a wrong channel count
            target = torch.cat([target, target[:, :1]], dim=1)
        target = target.to(target_dtype)
    description = f"{name}: logits {tuple(logits.shape)} {logits.dtype}, target {tuple(target.shape)} {target.dtype}"
    return logits, target, description


def _valid(name: str, logits: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether the contract accepts ``(logits, target)`` for loss ``name``: float logits of a
    non-empty batch; integer (or bool) labels ``(N, *spatial)`` or ``(N, 1, *spatial)`` in
    ``[0, C)`` (``{0, 1}`` for one channel), or float targets ``(N, C, *spatial)`` in ``[0, 1]``;
    one channel for a binary-only loss, and a one-hot float target for ``gwdl`` (its closed form
    has no soft labels)."""
    n, c, *spatial = logits.shape
    if not logits.is_floating_point() or logits.numel() == 0:
        return False
    if losses.info(name).binary_only and c != 1:
        return False
    if target.is_floating_point():
        values = target.double()
        if tuple(target.shape) != tuple(logits.shape) or not bool(((values >= 0) & (values <= 1)).all()):
            return False
        return name != "gwdl" or bool(((values == 0) | (values == 1)).all()) and (c == 1 or bool((values.sum(1) == 1).all()))
    labels = target[:, 0] if target.ndim == logits.ndim and target.shape[1] == 1 else target
    if tuple(labels.shape) != (n, *spatial):
        return False
    return bool((labels.long() >= 0).all() and (labels.long() < max(c, 2)).all())


def _contract_holds(name: str, logits, target, description: str) -> None:
    loss = losses.get(name)
    valid = _valid(name, logits, target)
    try:
        value = loss(logits, target)
    except (ValueError, TypeError) as error:
        assert not valid, f"{description}: a valid input refused: {error!r}"
        message = str(error).lower()
        assert any(word in message for word in PROBLEM_WORDS), f"{description}: vague error {error!r}"
        return
    except Exception as error:  # noqa: BLE001  the property: no other exception type escapes
        pytest.fail(f"{description}: {type(error).__name__}: {error}")
    assert valid, f"{description}: an input the contract forbids gave a value {value}"
    assert torch.isfinite(value).all(), f"{description}: non-finite loss {value}"
    value.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all(), f"{description}: non-finite gradient"


@pytest.mark.parametrize("name", NAMES)  # each name its own derandomized stream of cases
@FUZZ
@given(data=st.data())
def test_fuzz_every_loss_returns_finite_values_or_a_contract_error(name, data):
    _contract_holds(name, *data.draw(loss_inputs(name)))
