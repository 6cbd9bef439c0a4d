"""Boundary-based losses: the losses built on the signed distance maps of :mod:`medsegloss.distance`
(the distance-penalized CE, ``dpce``, takes the same maps but is a distribution-family loss, in
:mod:`medsegloss.losses.distribution`), and the approximations of the Hausdorff distance:
Karimi & Salcudean's distance-transform loss (``hd``), its logarithm (``log_hd``) and their
erosion-based loss (``hd_er``), which needs no distance map (it erodes the squared error itself).

Each loss but ``hd_er`` takes ``dist=``, the target's signed distance maps ``(N, C, *spatial)`` from
:func:`medsegloss.distance.signed_distance_map`, in the boundary-loss paper's convention (outside
the distance to the object, inside one minus the distance to the background; all zeros for an
empty or full class), so a data loader can compute them once per sample and a training step
pays nothing for them; without ``dist`` the loss computes them from the target (with
``spacing``). Distances are in spacing units. ``ignore_index`` is not supported: the papers'
distance maps have no notion of unlabelled voxels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def log_hausdorff_dt_loss(logits: torch.Tensor, target: torch.Tensor, *, dist: torch.Tensor | None = None,
                          alpha: float = 2.0, spacing=None, include_background: bool = False,
                          reduction: str = "mean") -> torch.Tensor:
    r"""Log distance-transform Hausdorff loss: ``log(1 + HD_DT)`` per sample (MONAI's
    ``LogHausdorffDTLoss``; after Karimi & Salcudean, 2019).

    .. math:: L = \log\Big(1 + \frac{1}{|K|\,V} \sum_{c \in K} \sum_v (p_c - g_c)^2
              \, (d_{g,c}^\alpha + d_{p,c}^\alpha)\Big)

    The inner term is :func:`hausdorff_dt_loss` (same ``dist``,
    ``alpha``, ``spacing``, ``include_background``); the logarithm tames its large early values,
    whose scale grows with the image size. The log is taken per sample, so ``reduction="none"``
    values average to the default; MONAI takes it after its batch mean (equal for one sample).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        floats, dist ``(N, C, *spatial)`` or None; returns a scalar, or ``(N,)`` for
        ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> log_hausdorff_dt_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    per_sample = hausdorff_dt_loss(logits, target, dist=dist, alpha=alpha, spacing=spacing,
                                   include_background=include_background, reduction="none")
    return reduce(torch.log1p(per_sample), reduction)


def _cross_average(image: torch.Tensor) -> torch.Tensor:
    """The mean of each voxel and its face neighbours (zero outside the image): a convolution
    with the cross (1/5 in 2-D, 1/7 in 3-D), written as shifted sums, which on the CPU is several
    times faster than a one-channel ``conv2d``/``conv3d``.

    Shape:
        ``(B, 1, *spatial)`` with 2 or 3 spatial axes; returns the same shape.
    """
    spatial = image.ndim - 2
    padded = F.pad(image, (1, 1) * spatial)
    inner = tuple(slice(1, -1) for _ in range(spatial))
    total = padded[(..., *inner)].clone()
    for axis in range(spatial):
        for start in (0, 2):
            index = list(inner)
            index[axis] = slice(start, start + image.shape[2 + axis])
            total = total + padded[(..., *index)]
    return total / (2 * spatial + 1)


def hausdorff_erosion_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 2.0, erosions: int = 10,
                           include_background: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Erosion-based Hausdorff loss (Karimi & Salcudean, 2019, eq. 10): the squared error eroded
    ``K`` times, each erosion weighted by ``k^α``.

    .. math:: L = \frac{1}{|K_c|\,V} \sum_{c \in K_c} \sum_{k=1}^{K} k^{\alpha} \sum_v (\Delta_c \ominus_k B)(v),
              \qquad \Delta_c = (p_c - g_c)^2

    A soft erosion ``⊖ B`` is the paper's: a convolution with the cross ``B`` (the voxel and its
    face neighbours, weights summing to 1), minus 0.5, negatives set to 0, then rescaled to
    ``[0, 1]`` (min–max over the image, per class; left as is when constant). Errors that survive
    ``k`` erosions lie ``≥ k`` voxels deep in a wrong region, so the deepest mistakes — those that
    set the Hausdorff distance — weigh most. The paper's ``α = 2``; ``K = erosions = 10`` as in
    the public implementations (kornia's ``HausdorffERLoss``, which this equals with
    ``include_background=True``). Errors too thin to survive the first erosion (``< 0.5`` on
    average over a cross) give no loss and no gradient: it is meant to be added to a region loss.
    ``K_c``: the foreground classes by default, as for ``hd``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        floats; returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> hausdorff_erosion_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    check_in_range("alpha", alpha, 0.0, float("inf"))
    if not isinstance(erosions, int) or erosions < 1:
        raise ValueError(f"erosions must be a positive integer, got {erosions!r}")
    target = check_target(target, logits)
    probs = probabilities(logits)
    onehot = target_probabilities(target, logits.shape[1], dtype=probs.dtype)[0]
    error = (select_classes(probs, include_background) - select_classes(onehot, include_background)).square()
    n, k, *spatial = error.shape
    image = error.reshape(n * k, 1, *spatial)  # one image per sample and class
    total = torch.zeros_like(image)
    for step in range(1, erosions + 1):
        eroded = (_cross_average(image) - 0.5).relu()
        flat = eroded.reshape(n * k, -1)
        low = flat.amin(1).view(-1, *([1] * (eroded.ndim - 1)))
        span = flat.amax(1).view_as(low) - low
        image = torch.where(span > 0, (eroded - low) / torch.where(span > 0, span, torch.ones_like(span)), eroded)
        total = total + float(step) ** alpha * image
    return reduce(total.reshape(n, -1).mean(-1), reduction)


BoundaryLoss = loss_class(
    "BoundaryLoss", boundary_loss, "boundary", family="boundary", paper="Kervadec et al., 2019", needs_distance=True,
    formula="Boundary loss, mean of p_c·φ_c over voxels and foreground classes (φ: signed distance)", peers={"monai": "BoundaryLoss"})


HausdorffDTLoss = loss_class(
    "HausdorffDTLoss", hausdorff_dt_loss, "hd", family="boundary", paper="Karimi & Salcudean, 2019", needs_distance=True,
    formula="Distance-transform Hausdorff loss, mean of (p − g)²·(d_g^α + d_p^α)", peers={"monai": "HausdorffDTLoss"})


BoundaryWeightedLoss = loss_class(
    "BoundaryWeightedLoss", boundary_weighted_loss, "boundary_weighted", family="boundary", paper="Kim et al.", needs_distance=True,
    formula="Boundary-weighted CE, p1·mean CE on a band around the boundary + p2·mean CE elsewhere")


LogHausdorffDTLoss = loss_class(
    "LogHausdorffDTLoss", log_hausdorff_dt_loss, "log_hd", family="boundary",
    paper="Karimi & Salcudean, 2019 (log form: MONAI)", needs_distance=True,
    formula="Log distance-transform Hausdorff loss, log(1 + mean of (p − g)²·(d_g^α + d_p^α))",
    peers={"monai": "LogHausdorffDTLoss (one sample)"})


HausdorffErosionLoss = loss_class(
    "HausdorffErosionLoss", hausdorff_erosion_loss, "hd_er", family="boundary", paper="Karimi & Salcudean, 2019",
    formula="Erosion Hausdorff loss, Σ_k k^α · mean of the squared error eroded k times",
    peers={"kornia": "HausdorffERLoss (include_background=True)"},
    # errors thinner than the cross (random noise) vanish in the first erosion, and a lone
    # surviving voxel is rescaled to a constant 1: no gradient there, as in the paper and kornia
    gradient_can_vanish=True)


__all__ = exports(__name__)
