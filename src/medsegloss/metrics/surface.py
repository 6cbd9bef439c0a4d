"""Surface-distance metrics of two binary masks, in spacing units (mm when the spacing is in mm).

Every metric here reduces the same two sets of distances from
:func:`medsegloss.distance.surface_distances`:

* the **surface** of a mask is its foreground voxels with a face-neighbour outside the mask (the
  image edge counts as outside): :func:`medsegloss.distance.surface`, the same boundary the
  boundary losses use, and medpy's ``mask ^ binary_erosion(mask)``;
* ``d(P→R)``: for each surface voxel of the prediction, the distance between its centre and the
  nearest surface voxel centre of the reference; ``d(R→P)`` the other way.

With both masks non-empty the values equal medpy's ``hd``, ``hd95`` (use ``pooled=True``) and
``assd`` on the same input and spacing. When a mask is empty there is no surface to measure
from or to: the ``empty`` policy of :mod:`medsegloss.metrics` decides (NaN by default; with
``empty="worst"``, the image diagonal ``sqrt(Σ (n_i·s_i)²)`` for a one-sided miss and a perfect
score when both masks are empty).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from medsegloss._checks import check_spacing
from medsegloss.distance import surface_distances
from medsegloss.metrics._inputs import binary_pair, check_empty, empty_state
from medsegloss.metrics._registry import register

__all__ = ["SurfaceDistances", "distances", "hd", "hd95", "hd95_pooled", "assd", "masd", "nsd"]


class SurfaceDistances(NamedTuple):
    """The directed surface distances of one mask pair, or the reason there are none."""

    pred_to_ref: np.ndarray | None  # None unless both masks are non-empty
    ref_to_pred: np.ndarray | None
    empty: str  # "none", "both", "pred" (missed) or "ref" (spurious)
    diagonal: float  # sqrt(Σ (n_i·s_i)²): the worst-case distance for this image and spacing


def image_diagonal(shape, spacing) -> float:
    """``sqrt(Σ (n_i·s_i)²)``: longer than any distance between two voxel centres of the image."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def distances(pred, ref, spacing=None, max_distance: float | None = None) -> SurfaceDistances:
    """Directed surface distances of two binary masks, with their empty state.

    ``max_distance``: distances beyond it may come back as ``inf`` (enough for :func:`nsd`).

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1; spacing: one value per axis.
    """
    pred, ref = binary_pair(pred, ref)
    spacing = check_spacing(spacing, pred.ndim)
    diagonal = image_diagonal(pred.shape, spacing)
    state = empty_state(bool(pred.any()), bool(ref.any()))
    if state != "none":
        return SurfaceDistances(None, None, state, diagonal)
    return SurfaceDistances(*surface_distances(pred, ref, spacing, max_distance), state, diagonal)


def _when_empty(d: SurfaceDistances, empty: str, perfect: float, worst: float) -> float | None:
    """The value of a metric when a mask is empty; ``None`` when both masks have a surface."""
    check_empty(empty)
    if d.empty == "none":
        return None
    if empty == "nan":
        return math.nan
    return perfect if d.empty == "both" else worst


def _hd(d: SurfaceDistances, empty: str = "nan") -> float:
    value = _when_empty(d, empty, 0.0, d.diagonal)
    return value if value is not None else float(max(d.pred_to_ref.max(), d.ref_to_pred.max()))


def _hd95(d: SurfaceDistances, empty: str = "nan", pooled: bool = False) -> float:
    value = _when_empty(d, empty, 0.0, d.diagonal)
    if value is not None:
        return value
    if pooled:
        return float(np.percentile(np.concatenate([d.pred_to_ref, d.ref_to_pred]), 95))
    return float(max(np.percentile(d.pred_to_ref, 95), np.percentile(d.ref_to_pred, 95)))


def _hd95_pooled(d: SurfaceDistances, empty: str = "nan") -> float:
    return _hd95(d, empty, pooled=True)


def _assd(d: SurfaceDistances, empty: str = "nan") -> float:
    value = _when_empty(d, empty, 0.0, d.diagonal)
    if value is not None:
        return value
    total = d.pred_to_ref.sum() + d.ref_to_pred.sum()
    return float(total / (d.pred_to_ref.size + d.ref_to_pred.size))


def _masd(d: SurfaceDistances, empty: str = "nan") -> float:
    value = _when_empty(d, empty, 0.0, d.diagonal)
    return value if value is not None else float((d.pred_to_ref.mean() + d.ref_to_pred.mean()) / 2)


def _nsd(d: SurfaceDistances, empty: str = "nan", tolerance: float = 1.0) -> float:
    value = _when_empty(d, empty, 1.0, 0.0)
    if value is not None:
        return value
    within = np.count_nonzero(d.pred_to_ref <= tolerance) + np.count_nonzero(d.ref_to_pred <= tolerance)
    return float(within / (d.pred_to_ref.size + d.ref_to_pred.size))


_DISTANCE = dict(kind="surface", higher_is_better=False, unit="spacing units", perfect=0.0, worst=None, margin=1.0,
                 empty_rule="both empty: NaN or 0; one empty: NaN or the image diagonal")


@register("hd", **_DISTANCE, from_parts=_hd)
def hd(pred, ref, spacing=None, *, empty: str = "nan") -> float:
    """Hausdorff distance ``max(max d(P→R), max d(R→P))`` between the surfaces (Huttenlocher
    et al., 1993), in spacing units.

    >>> a = np.zeros((8, 8), bool); a[2:5, 2:5] = True
    >>> hd(a, np.roll(a, 2, axis=1))  # a square moved by 2 voxels
    2.0

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1; spacing: one value per axis.
    """
    return _hd(distances(pred, ref, spacing), empty)


@register("hd95", **_DISTANCE, from_parts=_hd95)
def hd95(pred, ref, spacing=None, *, pooled: bool = False, empty: str = "nan") -> float:
    """95th-percentile Hausdorff distance, in spacing units.

    Default: ``max(P95 d(P→R), P95 d(R→P))``, the maximum of the two directed 95th percentiles
    (MONAI, surface-distance's ``compute_robust_hausdorff``). ``pooled=True``: the 95th
    percentile of both directions' distances pooled together (medpy's ``hd95``). Percentiles
    interpolate linearly (``numpy.percentile``), as both of those do.

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1; spacing: one value per axis.
    """
    return _hd95(distances(pred, ref, spacing), empty, pooled=pooled)


@register("hd95_pooled", **_DISTANCE, from_parts=_hd95_pooled)
def hd95_pooled(pred, ref, spacing=None, *, empty: str = "nan") -> float:
    """95th percentile of both directions' surface distances pooled (medpy's ``hd95``):
    ``hd95(..., pooled=True)`` under its own name, for tables.

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1; spacing: one value per axis.
    """
    return _hd95(distances(pred, ref, spacing), empty, pooled=True)


@register("assd", **_DISTANCE, from_parts=_assd)
def assd(pred, ref, spacing=None, *, empty: str = "nan") -> float:
    """Average symmetric surface distance: the mean of both directions' distances pooled,
    ``(Σ d(P→R) + Σ d(R→P)) / (|∂P| + |∂R|)`` (Heimann et al., 2009; medpy ≥ 0.5, MONAI
    ``symmetric=True``, MetricsReloaded).

    >>> a = np.zeros((8, 8), bool); a[2:5, 2:5] = True
    >>> assd(a, a)
    0.0

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1; spacing: one value per axis.
    """
    return _assd(distances(pred, ref, spacing), empty)


@register("masd", **_DISTANCE, from_parts=_masd)
def masd(pred, ref, spacing=None, *, empty: str = "nan") -> float:
    """Mean average surface distance: the mean of the two directed averages,
    ``(mean d(P→R) + mean d(R→P)) / 2`` (the older ASSD definition; medpy < 0.5). Equals
    :func:`assd` when both surfaces have as many voxels.

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1; spacing: one value per axis.
    """
    return _masd(distances(pred, ref, spacing), empty)


@register("nsd", kind="surface", higher_is_better=True, unit="fraction", perfect=1.0, worst=0.0,
          empty_rule="both empty: NaN or 1; one empty: NaN or 0", from_parts=_nsd)
def nsd(pred, ref, spacing=None, tolerance: float = 1.0, *, empty: str = "nan") -> float:
    """Normalized surface Dice at ``tolerance`` (spacing units): the fraction of both surfaces
    within ``tolerance`` of the other, ``(|{d(P→R) ≤ τ}| + |{d(R→P) ≤ τ}|) / (|∂P| + |∂R|)``
    (Nikolov et al., 2021), counting surface voxels (MONAI ``compute_surface_dice`` with
    ``use_subvoxels=False``; surface-distance weighs surfels by area instead).

    >>> a = np.zeros((8, 8), bool); a[2:5, 2:5] = True
    >>> nsd(a, np.roll(a, 1, axis=1), tolerance=1.0)
    1.0

    Shape:
        pred, ref: ``(H, W)`` or ``(D, H, W)``, bool or 0/1; spacing: one value per axis.
    """
    tolerance = float(tolerance)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative distance in spacing units, got {tolerance}")
    return _nsd(distances(pred, ref, spacing, max_distance=tolerance), empty, tolerance)
