"""Boundary-based losses: the losses built on the signed distance maps of :mod:`medsegloss.distance`
(the distance-penalized CE, ``dpce``, takes the same maps but is a distribution-family loss, in
:mod:`medsegloss.losses.distribution`).

Each loss takes ``dist=``, the target's signed distance maps ``(N, C, *spatial)`` from
:func:`medsegloss.distance.signed_distance_map`, in the boundary-loss paper's convention (outside
the distance to the object, inside one minus the distance to the background; all zeros for an
empty or full class), so a data loader can compute them once per sample and a training step
pays nothing for them; without ``dist`` the loss computes them from the target (with
``spacing``). Distances are in spacing units. ``ignore_index`` is not supported: the papers'
distance maps have no notion of unlabelled voxels.
"""

from __future__ import annotations

import torch
from medsegloss._checks import check_distance_map, check_in_range, check_reduction, check_target
from medsegloss._ops import (
    cross_entropy_map, probabilities, reduce, select_classes, target_probabilities,
)
from medsegloss.distance import boundary_distance, class_masks, signed_distance_map, unsigned_distance_map
from medsegloss.losses._registry import exports, loss_class



def target_distance(logits: torch.Tensor, target: torch.Tensor, dist: torch.Tensor | None = None,
                    spacing=None) -> torch.Tensor:
    """The target's signed distance maps, checked against ``logits``: ``dist`` when given, else
    computed from the (already checked) ``target`` with ``spacing``.

    Shape:
        logits ``(N, C, *spatial)``; returns float ``(N, C, *spatial)`` on the logits' device.
    """
    if dist is None:
        dist = signed_distance_map(target, num_classes=logits.shape[1], spacing=spacing)
    else:
        dist = check_distance_map(dist, logits)
    dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    return dist.detach().to(device=logits.device, dtype=dtype)


def boundary_loss(logits: torch.Tensor, target: torch.Tensor, *, dist: torch.Tensor | None = None,
                  spacing=None, include_background: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Boundary loss (Kervadec et al., 2019): the softmax (sigmoid) probabilities integrated
    against the target's signed distance map, averaged over voxels and kept classes.

    .. math:: L = \frac{1}{|K|\,V} \sum_{c \in K} \sum_v \phi_c(v)\, p_c(v)

    ``φ_c`` is the paper's level set of class ``c`` (its reference code, and MONAI's
    ``BoundaryLoss``): outside the distance to the class, inside one minus the distance to the
    background, so the border voxels of the class weigh 0 and the loss falls as probability mass
    moves inside the target; a perfect prediction gives ``mean(φ_c · g_c)``, the minimum
    (zero or negative). ``K`` is the foreground classes (``include_background=False``, the
    paper's choice) or all of them. Meant to be added to a region loss (``gdl_boundary``).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        floats, dist ``(N, C, *spatial)`` or None; returns a scalar, or ``(N,)`` for
        ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> boundary_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    target = check_target(target, logits)
    dist = target_distance(logits, target, dist, spacing)
    per_voxel = select_classes(probabilities(logits) * dist, include_background)
    return reduce(per_voxel.reshape(logits.shape[0], -1).mean(-1), reduction)


def hausdorff_dt_loss(logits: torch.Tensor, target: torch.Tensor, *, dist: torch.Tensor | None = None,
                      alpha: float = 2.0, spacing=None, include_background: bool = False,
                      reduction: str = "mean") -> torch.Tensor:
    r"""Distance-transform Hausdorff loss (Karimi & Salcudean, 2019, eq. 8).

    .. math:: L = \frac{1}{|K|\,V} \sum_{c \in K} \sum_v (p_c - g_c)^2 \, (d_{g,c}^\alpha + d_{p,c}^\alpha)

    ``d_g`` is the (unsigned) distance of each voxel to the target's boundary (recovered from the
    level set ``dist``: :func:`~medsegloss.distance.boundary_distance`) and
    ``d_p`` the same for the prediction thresholded at ``p > 0.5``, recomputed every call without
    gradient (one exact EDT per image and class, :func:`unsigned_distance_map`). Errors far from
    either boundary cost the most, approximating the Hausdorff distance. ``alpha = 2`` as in the
    paper; ``K`` as in :func:`boundary_loss` (background excluded by default).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        floats, dist ``(N, C, *spatial)`` or None; returns a scalar, or ``(N,)`` for
        ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> hausdorff_dt_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    check_in_range("alpha", alpha, 0.0, float("inf"))
    target = check_target(target, logits)
    dist = target_distance(logits, target, dist, spacing)
    probs = select_classes(probabilities(logits), include_background)
    onehot = select_classes(target_probabilities(target, logits.shape[1], dtype=probs.dtype)[0], include_background)
    target_boundary_distance = select_classes(boundary_distance(dist, class_masks(target, logits.shape[1])),
                                              include_background)
    pred_distance = unsigned_distance_map(probs.detach() > 0.5, spacing).to(probs.dtype)
    weight = target_boundary_distance.pow(alpha) + pred_distance.pow(alpha)
    per_voxel = (probs - onehot).square() * weight
    return reduce(per_voxel.reshape(logits.shape[0], -1).mean(-1), reduction)


def boundary_weighted_loss(logits: torch.Tensor, target: torch.Tensor, *, dist: torch.Tensor | None = None,
                           band_width: float = 2.0, p1: float = 0.75, p2: float = 0.25, spacing=None,
                           reduction: str = "mean") -> torch.Tensor:
    r"""Boundary-weighted cross-entropy (after Kim et al.): the mean cross-entropy on a band
    around the target's boundaries, weighted ``p1``, plus the mean elsewhere, weighted ``p2``.

    .. math:: L = p_1 \frac{1}{|B|}\sum_{v \in B} CE(v) + p_2 \frac{1}{|\bar B|}\sum_{v \notin B} CE(v),
              \qquad B = \{v : 0 < d_c(v) \le w \text{ for some class } c\}

    The per-voxel loss is the contract's cross-entropy (softmax CE; sigmoid BCE for one-channel
    logits). ``d_c`` is the unsigned distance to the boundary of class ``c``
    (:func:`~medsegloss.distance.boundary_distance`). ``w = band_width`` is in spacing units (2 = two voxel layers either side at unit
    spacing); empty and full classes have no boundary. A region with no voxels contributes 0.
    The defaults ``p1 = 0.75, p2 = 0.25`` are this package's choice (3x emphasis on the band; the
    loss equals CE when the per-voxel CE is uniform), not values from the paper.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        floats, dist ``(N, C, *spatial)`` or None; returns a scalar, or ``(N,)`` for
        ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> boundary_weighted_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    check_in_range("band_width", band_width, 0.0, float("inf"))
    check_in_range("p1", p1, 0.0, float("inf"))
    check_in_range("p2", p2, 0.0, float("inf"))
    target = check_target(target, logits)
    dist = target_distance(logits, target, dist, spacing)
    distance = boundary_distance(dist, class_masks(target, logits.shape[1]))
    band = ((distance != 0) & (distance <= band_width)).any(1).reshape(logits.shape[0], -1)
    ce = cross_entropy_map(logits, target).reshape(logits.shape[0], -1)
    band_mean = (ce * band).sum(-1) / band.sum(-1).clamp_min(1)
    rest_mean = (ce * ~band).sum(-1) / (~band).sum(-1).clamp_min(1)
    return reduce(p1 * band_mean + p2 * rest_mean, reduction)


BoundaryLoss = loss_class(
    "BoundaryLoss", boundary_loss, "boundary", family="boundary", paper="Kervadec et al., 2019", needs_distance=True,
    formula="Boundary loss, mean of p_c·φ_c over voxels and foreground classes (φ: signed distance)", peers={"monai": "BoundaryLoss"})


HausdorffDTLoss = loss_class(
    "HausdorffDTLoss", hausdorff_dt_loss, "hd", family="boundary", paper="Karimi & Salcudean, 2019", needs_distance=True,
    formula="Distance-transform Hausdorff loss, mean of (p − g)²·(d_g^α + d_p^α)", peers={"monai": "HausdorffDTLoss"})


BoundaryWeightedLoss = loss_class(
    "BoundaryWeightedLoss", boundary_weighted_loss, "boundary_weighted", family="boundary", paper="Kim et al.", needs_distance=True,
    formula="Boundary-weighted CE, p1·mean CE on a band around the boundary + p2·mean CE elsewhere")


__all__ = exports(__name__)
