"""Boundary-based losses, and the distance-penalized CE (``dpce``, family "distribution"): the
losses built on the signed distance maps of :mod:`medsegloss.distance`.

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
from medsegloss._checks import check_distance_map, check_probability, check_reduction, check_target
from medsegloss._ops import (
    FunctionalLoss, cross_entropy_map, per_voxel_reduce, probabilities, reduce, select_classes, target_probabilities,
)
from medsegloss.distance import boundary_distance, class_masks, signed_distance_map, unsigned_distance_map
from medsegloss.losses._registry import register

__all__ = [
    "boundary_loss", "hausdorff_dt_loss", "boundary_weighted_loss", "distance_penalized_cross_entropy_loss",
    "BoundaryLoss", "HausdorffDTLoss", "BoundaryWeightedLoss", "DistancePenalizedCrossEntropyLoss",
]


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
    check_probability("alpha", alpha, 0.0, float("inf"))
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
    check_probability("band_width", band_width, 0.0, float("inf"))
    check_probability("p1", p1, 0.0, float("inf"))
    check_probability("p2", p2, 0.0, float("inf"))
    target = check_target(target, logits)
    dist = target_distance(logits, target, dist, spacing)
    distance = boundary_distance(dist, class_masks(target, logits.shape[1]))
    band = ((distance != 0) & (distance <= band_width)).any(1).reshape(logits.shape[0], -1)
    ce = cross_entropy_map(logits, target).reshape(logits.shape[0], -1)
    band_mean = (ce * band).sum(-1) / band.sum(-1).clamp_min(1)
    rest_mean = (ce * ~band).sum(-1) / (~band).sum(-1).clamp_min(1)
    return reduce(p1 * band_mean + p2 * rest_mean, reduction)


@register("boundary", family="boundary", paper="Kervadec et al., 2019", function=boundary_loss,
          needs_distance=True)
class BoundaryLoss(FunctionalLoss):
    """Boundary loss, mean of p_c·φ_c over voxels and foreground classes (φ: signed distance)."""

    function = staticmethod(boundary_loss)
    needs_distance = True


@register("hd", family="boundary", paper="Karimi & Salcudean, 2019", function=hausdorff_dt_loss,
          needs_distance=True)
class HausdorffDTLoss(FunctionalLoss):
    """Distance-transform Hausdorff loss, mean of (p − g)²·(d_g^α + d_p^α)."""

    function = staticmethod(hausdorff_dt_loss)
    needs_distance = True


@register("boundary_weighted", family="boundary", paper="Kim et al.", function=boundary_weighted_loss,
          needs_distance=True)
class BoundaryWeightedLoss(FunctionalLoss):
    """Boundary-weighted CE, p1·mean CE on a band around the boundary + p2·mean CE elsewhere."""

    function = staticmethod(boundary_weighted_loss)
    needs_distance = True


# ---------------------------------------------------------------------------------------------
# Distance-penalized CE: a distribution-family loss, filed here because it is built on the
# target's distance maps like the boundary losses.


@torch.no_grad()
def boundary_proximity(dist: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    r"""DPCE's penalty ``D ∈ [0, 1]`` per voxel: 1 at the boundary of the voxel's own class,
    falling linearly to 0 at the voxel farthest from it in the sample.

    .. math:: d_v = d_{g_v}(v),\qquad D_v = 1 - d_v / \max_u d_u

    ``d_c`` is the unsigned distance to the boundary of class ``c``, recovered from the target's
    level sets ``dist`` (:func:`medsegloss.distance.boundary_distance`); soft labels use
    ``d = Σ_c g_c d_c``; one-channel logits ``d = d_fg`` (the same for both sides). A
    sample without any boundary (all ``φ = 0``) gets ``D = 0``: plain CE.

    Shape:
        dist ``(N, C, *spatial)``; returns ``(N, *spatial)``.
    """
    unsigned = boundary_distance(dist, class_masks(target, dist.shape[1]))
    if dist.shape[1] == 1:
        distance = unsigned[:, 0]
    elif target.is_floating_point():
        distance = (target * unsigned).sum(1)
    else:
        labels = target if ignore_index is None else torch.where(target == ignore_index, 0, target)
        distance = unsigned.gather(1, labels.unsqueeze(1)).squeeze(1)
    farthest = distance.reshape(distance.shape[0], -1).amax(1).view(-1, *([1] * (distance.ndim - 1)))
    return torch.where(farthest > 0, 1 - distance / farthest.clamp_min(1e-12), torch.zeros_like(distance))


def distance_penalized_cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, *,
                                          dist: torch.Tensor | None = None, spacing=None,
                                          ignore_index: int | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Distance-map-penalized cross-entropy (Caliva et al., 2019), averaged over the voxels.

    .. math:: L = \frac{1}{V}\sum_v (1 + D_v)\,(-\log p_{v,t})

    ``D`` (:func:`boundary_proximity`) is the target's distance-to-boundary map inverted and
    scaled to ``[0, 1]``, so voxels at the object boundaries weigh up to twice as much as those
    far from them (the paper's "inverted distance map"; the linear scaling is this package's
    choice, keeping the weights bounded). ``dist``: signed distance maps ``(N, C, *spatial)``
    from :func:`medsegloss.distance.signed_distance_map` (computed here from the target, with
    ``spacing``, when None; cache them in the data loader to save the EDT per step).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats,
        dist ``(N, C, *spatial)``; returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> distance_penalized_cross_entropy_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    target = check_target(target, logits, ignore_index)
    if dist is None:
        from medsegloss.distance import signed_distance_map

        dist = signed_distance_map(target, num_classes=logits.shape[1], spacing=spacing)
    else:
        dist = check_distance_map(dist, logits)
    values = cross_entropy_map(logits, target, ignore_index)
    values = values * (1 + boundary_proximity(dist.to(values.dtype), target, ignore_index))
    valid = None if ignore_index is None or target.is_floating_point() else target != ignore_index
    return per_voxel_reduce(values, valid, reduction)


@register("dpce", family="distribution", paper="Caliva et al., 2019", function=distance_penalized_cross_entropy_loss,
          needs_distance=True)
class DistancePenalizedCrossEntropyLoss(FunctionalLoss):
    """Distance-penalized CE (1 + D)·(−log p_t), D = 1 at the target's boundaries, 0 farthest away."""

    function = staticmethod(distance_penalized_cross_entropy_loss)
    needs_distance = True
