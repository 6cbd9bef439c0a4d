"""Overlap metrics of two binary masks, all derived from one set of confusion counts.

``tp`` = voxels in both masks, ``fp`` = in the prediction only, ``fn`` = in the reference only,
``tn`` = in neither. Each metric is a ratio of these counts; when the ratio is 0/0 the empty-mask
table of :mod:`medsegloss.metrics` decides (perfect when there was nothing to find and nothing
was found; NaN or the worst value, by ``empty``, when the ratio is undefined otherwise).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from medsegloss.metrics._inputs import binary_pair, check_empty
from medsegloss.metrics._registry import register

__all__ = ["Counts", "confusion", "dice", "iou", "pixel_error", "precision", "recall", "sensitivity",
           "specificity", "volume_similarity"]


class Counts(NamedTuple):
    """Confusion counts of one binary mask pair (or of one class in a label map)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def pred_empty(self) -> bool:
        return self.tp + self.fp == 0

    @property
    def ref_empty(self) -> bool:
        return self.tp + self.fn == 0


def confusion(pred, ref) -> Counts:
    """The confusion counts of two binary masks (three counts over the voxels).

    >>> confusion(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]))
    Counts(tp=1, fp=1, fn=1, tn=1)
    """
    pred, ref = binary_pair(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return Counts(tp, fp, fn, pred.size - tp - fp - fn)


def _ratio(numerator: int, denominator: int, both_empty: bool, empty: str) -> float:
    """``numerator / denominator``; 0/0 is a perfect 1 when both sets the ratio compares are
    empty (nothing to find, nothing found), otherwise undefined: NaN (``empty="nan"``) or the
    worst value 0 (``empty="worst"``)."""
    if denominator:
        return numerator / denominator
    if both_empty:
        return 1.0
    return math.nan if empty == "nan" else 0.0


def _dice(c: Counts, empty: str = "nan") -> float:
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, True, empty)


def _iou(c: Counts, empty: str = "nan") -> float:
    return _ratio(c.tp, c.tp + c.fp + c.fn, True, empty)


def _pixel_error(c: Counts, empty: str = "nan") -> float:
    return (c.fp + c.fn) / (c.tp + c.fp + c.fn + c.tn)


def _precision(c: Counts, empty: str = "nan") -> float:
    return _ratio(c.tp, c.tp + c.fp, c.ref_empty, empty)


def _recall(c: Counts, empty: str = "nan") -> float:
    return _ratio(c.tp, c.tp + c.fn, c.pred_empty, empty)


def _specificity(c: Counts, empty: str = "nan") -> float:
    # 0/0 only when the reference has no background; perfect if the prediction has none either
    return _ratio(c.tn, c.tn + c.fp, c.tn + c.fn == 0, empty)


def _volume_similarity(c: Counts, empty: str = "nan") -> float:
    total = 2 * c.tp + c.fp + c.fn
    return 1.0 - abs(c.fn - c.fp) / total if total else 1.0


_FRACTION = dict(higher_is_better=True, unit="fraction", perfect=1.0, worst=0.0, kind="overlap")


@register("dice", **_FRACTION, from_parts=_dice, empty_rule="both empty: 1; one empty: 0")
def dice(pred, ref, *, empty: str = "nan") -> float:
    """Dice similarity coefficient ``2|P∩R| / (|P| + |R|) = 2tp / (2tp + fp + fn)`` (Dice, 1945).

    >>> dice(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]))
    0.5

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1 (NumPy or torch). Returns a float.
    """
    return _dice(confusion(pred, ref), check_empty(empty))


@register("iou", **_FRACTION, from_parts=_iou, empty_rule="both empty: 1; one empty: 0")
def iou(pred, ref, *, empty: str = "nan") -> float:
    """Intersection over union (Jaccard, 1912) ``|P∩R| / |P∪R| = tp / (tp + fp + fn)``; IoU = D / (2 − D).

    >>> iou(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]))
    0.3333333333333333

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1. Returns a float.
    """
    return _iou(confusion(pred, ref), check_empty(empty))


@register("pixel_error", higher_is_better=False, unit="fraction", perfect=0.0, worst=1.0, kind="overlap",
          margin=0.001, from_parts=_pixel_error, empty_rule="always defined: (fp + fn) / voxels")
def pixel_error(pred, ref, *, empty: str = "nan") -> float:
    """Fraction of voxels labelled wrong ``(fp + fn) / (tp + fp + fn + tn)``: the pixel error of the
    ISBI 2012 EM challenge (Arganda-Carreras et al., 2015) used by the U-Net paper (Ronneberger
    et al., 2015). Never undefined; ``empty`` is accepted for a uniform call.

    >>> pixel_error(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]))
    0.5

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1. Returns a float.
    """
    check_empty(empty)
    return _pixel_error(confusion(pred, ref))


@register("precision", **_FRACTION, from_parts=_precision,
          empty_rule="both empty: 1; pred empty: NaN or 0; ref empty: 0")
def precision(pred, ref, *, empty: str = "nan") -> float:
    """Precision (positive predictive value) ``tp / (tp + fp)``.

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1. Returns a float.
    """
    return _precision(confusion(pred, ref), check_empty(empty))


@register("recall", **_FRACTION, from_parts=_recall,
          empty_rule="both empty: 1; ref empty: NaN or 0; pred empty: 0")
def recall(pred, ref, *, empty: str = "nan") -> float:
    """Recall (sensitivity, true positive rate) ``tp / (tp + fn)``.

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1. Returns a float.
    """
    return _recall(confusion(pred, ref), check_empty(empty))


sensitivity = recall


@register("specificity", **_FRACTION, from_parts=_specificity,
          empty_rule="defined unless ref covers the image: then 1 if pred does too, else NaN or 0")
def specificity(pred, ref, *, empty: str = "nan") -> float:
    """Specificity (true negative rate) ``tn / (tn + fp)``: the recall of the background.

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1. Returns a float.
    """
    return _specificity(confusion(pred, ref), check_empty(empty))


@register("volume_similarity", **_FRACTION, from_parts=_volume_similarity,
          empty_rule="both empty: 1; one empty: 0")
def volume_similarity(pred, ref, *, empty: str = "nan") -> float:
    """Volume similarity ``1 − ||P| − |R|| / (|P| + |R|) = 1 − |fn − fp| / (2tp + fp + fn)``
    (Taha & Hanbury, 2015). Compares sizes only: 1 for two equal-size masks that do not overlap.

    >>> volume_similarity(np.array([[1, 1, 0, 0]]), np.array([[0, 0, 1, 1]]))
    1.0

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1. Returns a float.
    """
    check_empty(empty)
    return _volume_similarity(confusion(pred, ref))
