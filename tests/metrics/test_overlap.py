"""Overlap metrics: formulas from the counts, hand-checked values, medpy, the empty-mask table,
and bad input."""

import math

import numpy as np
import pytest
import torch

from medsegloss import metrics
from medsegloss.metrics.overlap import Counts, confusion

OVERLAP = ["dice", "iou", "pixel_error", "precision", "recall", "specificity", "volume_similarity"]


def random_pair(shape, seed, fraction=0.4):
    rng = np.random.default_rng(seed)
    return rng.random(shape) < fraction, rng.random(shape) < fraction


def formulas(pred, ref):
    """float64 reference values written from the definitions (masks non-degenerate)."""
    p, r = pred.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    tp, fp, fn, tn = (p * r).sum(), (p * (1 - r)).sum(), ((1 - p) * r).sum(), ((1 - p) * (1 - r)).sum()
    return {
        "dice": 2 * tp / (p.sum() + r.sum()),
        "iou": tp / np.maximum(p, r).sum(),
        "pixel_error": np.mean(p != r),
        "precision": tp / p.sum(),
        "recall": tp / r.sum(),
        "specificity": tn / (1 - r).sum(),
        "volume_similarity": 1 - abs(p.sum() - r.sum()) / (p.sum() + r.sum()),
    }


@pytest.mark.parametrize("shape", [(7, 9), (4, 5, 6)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_formulas(shape, seed):
    pred, ref = random_pair(shape, seed)
    expected = formulas(pred, ref)
    for name in OVERLAP:
        assert getattr(metrics, name)(pred, ref) == pytest.approx(expected[name], rel=1e-12, abs=1e-15), name


def test_confusion_counts_equal_direct_sums():
    pred, ref = random_pair((6, 7, 8), 3)
    counts = confusion(pred, ref)
    assert counts == Counts(int((pred & ref).sum()), int((pred & ~ref).sum()), int((~pred & ref).sum()),
                            int((~pred & ~ref).sum()))
    assert sum(counts) == pred.size


def test_hand_checked_values():
    pred = np.array([[1, 1, 1, 0, 0, 0]])
    ref = np.array([[0, 1, 1, 1, 1, 0]])  # tp 2, fp 1, fn 2, tn 1
    assert metrics.dice(pred, ref) == pytest.approx(4 / 7)
    assert metrics.iou(pred, ref) == pytest.approx(2 / 5)
    assert metrics.pixel_error(pred, ref) == pytest.approx(3 / 6)
    assert metrics.precision(pred, ref) == pytest.approx(2 / 3)
    assert metrics.recall(pred, ref) == metrics.sensitivity(pred, ref) == pytest.approx(2 / 4)
    assert metrics.specificity(pred, ref) == pytest.approx(1 / 2)
    assert metrics.volume_similarity(pred, ref) == pytest.approx(1 - 1 / 7)


def test_iou_dice_identity():
    pred, ref = random_pair((12, 12), 4)
    d = metrics.dice(pred, ref)
    assert metrics.iou(pred, ref) == pytest.approx(d / (2 - d), rel=1e-12)


@pytest.mark.parametrize("convert", [
    lambda m: m,
    lambda m: m.astype(np.uint8),
    lambda m: m.astype(np.float32),
    lambda m: torch.from_numpy(m),
    lambda m: torch.from_numpy(m).long(),
])
def test_input_types_give_the_same_value(convert):
    pred, ref = random_pair((5, 6, 7), 5)
    assert metrics.dice(convert(pred), convert(ref)) == metrics.dice(pred, ref)
    assert metrics.specificity(convert(pred), convert(ref)) == metrics.specificity(pred, ref)


def test_agrees_with_medpy():
    binary = pytest.importorskip("medpy.metric.binary")
    for shape, seed in [((9, 11), 6), ((5, 6, 7), 7)]:
        pred, ref = random_pair(shape, seed)
        assert metrics.dice(pred, ref) == pytest.approx(binary.dc(pred, ref), abs=1e-12)
        assert metrics.iou(pred, ref) == pytest.approx(binary.jc(pred, ref), abs=1e-12)
        assert metrics.precision(pred, ref) == pytest.approx(binary.precision(pred, ref), abs=1e-12)
        assert metrics.recall(pred, ref) == pytest.approx(binary.recall(pred, ref), abs=1e-12)
        assert metrics.specificity(pred, ref) == pytest.approx(binary.specificity(pred, ref), abs=1e-12)


# the empty-mask table of medsegloss.metrics: (both empty, only pred empty, only ref empty) per
# policy; NAN stands for "NaN"
NAN = math.nan
EMPTY_TABLE = {
    "nan": {
        "dice": (1, 0, 0), "iou": (1, 0, 0), "volume_similarity": (1, 0, 0),
        "precision": (1, NAN, 0), "recall": (1, 0, NAN),
    },
    "worst": {
        "dice": (1, 0, 0), "iou": (1, 0, 0), "volume_similarity": (1, 0, 0),
        "precision": (1, 0, 0), "recall": (1, 0, 0),
    },
}


def empty_cases():
    some = np.zeros((4, 5), bool)
    some[1:3, 1:4] = True
    none = np.zeros((4, 5), bool)
    return [(none, none), (none, some), (some, none)]  # (pred, ref): both, pred empty, ref empty


@pytest.mark.parametrize("empty", ["nan", "worst"])
def test_empty_mask_table(empty):
    for name, expected in EMPTY_TABLE[empty].items():
        for (pred, ref), value in zip(empty_cases(), expected):
            got = getattr(metrics, name)(pred, ref, empty=empty)
            assert (math.isnan(got) and math.isnan(value)) or got == value, (name, empty, got, value)
    # pixel error and specificity stay the formula: 0 wrong of 20, 6 wrong of 20
    for (pred, ref), error in zip(empty_cases(), (0, 6 / 20, 6 / 20)):
        assert metrics.pixel_error(pred, ref, empty=empty) == pytest.approx(error)
    assert [metrics.specificity(p, r, empty=empty) for p, r in empty_cases()] == [1, 1, pytest.approx(14 / 20)]


@pytest.mark.parametrize("empty, expected", [("nan", NAN), ("worst", 0.0)])
def test_specificity_when_the_reference_has_no_background(empty, expected):
    full = np.ones((3, 3), bool)
    assert metrics.specificity(full, full, empty=empty) == 1.0
    partial = full.copy()
    partial[0, 0] = False
    got = metrics.specificity(partial, full, empty=empty)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def test_bad_input_is_a_clear_error():
    a = np.zeros((4, 4), bool)
    with pytest.raises(ValueError, match=r"same shape.*\(4, 4\).*\(4, 5\)"):
        metrics.dice(a, np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match=r"binary mask.*values such as \[2\]"):
        metrics.dice(np.full((4, 4), 2), a)
    with pytest.raises(ValueError, match=r"binary mask.*float64.*0.5"):
        metrics.iou(a, np.full((4, 4), 0.5))
    with pytest.raises(ValueError, match=r"2-D .* or 3-D .*got shape \(4,\)"):
        metrics.dice(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="empty arrays"):
        metrics.dice(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="empty must be one of"):
        metrics.precision(a, a, empty="zero")
    with pytest.raises(TypeError, match="numbers or booleans"):
        metrics.dice(np.array([["a"]]), np.array([["b"]]))
