"""Property-based fuzzing of the loss input contract, for every registered loss.

Hypothesis draws a shape (2-D / 3-D, N = 0..2, C = 1..4, small spatial sizes), a logits dtype
(float16 / 32 / 64, or an integer dtype), a target kind (integer labels of several dtypes, bool
labels, float one-hot / soft labels) and values that may lie out of range (labels below 0 or at
C and beyond, float targets outside [0, 1], NaN, inf). The property: either a finite value with
finite gradients reaching the logits, or a ``ValueError`` / ``TypeError`` whose message names the
problem. Never another exception type, never a silent NaN. ``derandomize=True`` keeps CI
reproducible; a failure prints the drawn case.
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


def _contract_holds(name: str, logits, target, description: str) -> None:
    loss = losses.get(name)
    try:
        value = loss(logits, target)
    except (ValueError, TypeError) as error:
        message = str(error).lower()
        assert any(word in message for word in PROBLEM_WORDS), f"{description}: vague error {error!r}"
        return
    except Exception as error:  # noqa: BLE001  the property: no other exception type escapes
        pytest.fail(f"{description}: {type(error).__name__}: {error}")
    assert torch.isfinite(value).all(), f"{description}: non-finite loss {value}"
    value.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all(), f"{description}: non-finite gradient"


@pytest.mark.parametrize("name", NAMES)  # each name its own derandomized stream of cases
@FUZZ
@given(data=st.data())
def test_fuzz_every_loss_returns_finite_values_or_a_contract_error(name, data):
    _contract_holds(name, *data.draw(loss_inputs(name)))


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(dims=st.sampled_from([2, 3]), n=st.integers(1, 2), size=st.integers(2, 4),
       bad=st.sampled_from(["label_high", "label_negative", "float_high", "float_nan", "float_inf", "empty"]),
       dtype=st.sampled_from([torch.float32, torch.float64]), position=st.integers(0, 2**10))
def test_fuzz_out_of_range_inputs_are_always_refused(name, dims, n, size, bad, dtype, position):
    """The inputs the contract forbids: never a value, whatever the shape, dtype and position."""
    c = 1 if losses.info(name).binary_only else 3
    spatial = (size,) * dims
    n = 0 if bad == "empty" else n
    logits = torch.zeros((n, c, *spatial), dtype=dtype, requires_grad=True)
    if bad.startswith("label") or bad == "empty":
        target = torch.zeros((n, *spatial), dtype=torch.long)
        if n:
            target.view(-1)[position % target.numel()] = max(c, 2) if bad == "label_high" else -1
    else:
        target = torch.zeros((n, c, *spatial), dtype=dtype)
        value = {"float_high": 1.5, "float_nan": float("nan"), "float_inf": float("inf")}[bad]
        target.view(-1)[position % target.numel()] = value
    with pytest.raises(ValueError, match="labels must lie in|probabilities in|must not be empty"):
        losses.get(name)(logits, target)
