"""Region losses that preserve topology through skeletons: clDice (Shit et al., 2021) and
Skeleton Recall (Kirchhoff et al., 2024), for tubular and curvilinear structures (vessels,
airways, neurons, roads), where a thin missed connection costs little Dice but breaks the shape.

Both are computed per class over the kept classes (the background, whose skeleton means little,
is left out by default) and averaged; 2-D and 3-D alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medsegloss._checks import check_reduction
from medsegloss._ops import flatten_spatial, reduce, select_classes
from medsegloss.losses._registry import exports, loss_class
from medsegloss.losses.region._counts import region_inputs


def soft_erosion(x: torch.Tensor) -> torch.Tensor:
    """Grey-level erosion with the cross (the voxel and its face neighbours): the minimum over it,
    as one 1-D min-pool per axis (their minimum is the minimum over the cross). The image edge
    does not count as background.

    Shape:
        ``(N, C, *spatial)`` with 2 or 3 spatial axes; returns the same shape.
    """
    spatial = x.ndim - 2
    pool = F.max_pool2d if spatial == 2 else F.max_pool3d
    result = None
    for axis in range(spatial):
        size = [1] * spatial
        size[axis] = 3
        padding = [0] * spatial
        padding[axis] = 1
        along = -pool(-x, tuple(size), 1, tuple(padding))
        result = along if result is None else torch.minimum(result, along)
    return result


def soft_dilation(x: torch.Tensor) -> torch.Tensor:
    """Grey-level dilation with the full 3×3 (3×3×3) square: a max-pool. Shape as the input."""
    pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
    return pool(x, 3, 1, 1)


def soft_skeleton(x: torch.Tensor, iterations: int) -> torch.Tensor:
    r"""Soft skeleton (Shit et al., 2021, Alg. 1): what each opening removes, accumulated over
    ``iterations + 1`` erosions.

    .. math:: S_0 = (x - \mathrm{open}(x))_+,\qquad
              S_{k} = S_{k-1} + \big(\delta_k - S_{k-1}\delta_k\big)_+,\quad
              \delta_k = (\ominus^k x - \mathrm{open}(\ominus^k x))_+

    with ``open = dilate ∘ erode`` (:func:`soft_erosion`, :func:`soft_dilation`). On a 0/1 mask
    it is the morphological skeleton of Lantuéjoul's formula, up to structures thicker than
    ``2·iterations + 1`` voxels; on probabilities it is differentiable.

    Shape:
        ``(N, C, *spatial)``; returns the same shape.
    """
    skeleton = (x - soft_dilation(soft_erosion(x))).relu()
    for _ in range(iterations):
        x = soft_erosion(x)
        delta = (x - soft_dilation(soft_erosion(x))).relu()
        skeleton = skeleton + (delta - skeleton * delta).relu()
    return skeleton


def _check_iterations(iterations) -> int:
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    return iterations


def _kept_classes(logits, target, include_background):
    """Checked input -> kept-class probabilities and target, both ``(N, K, *spatial)``."""
    probs, onehot, _ = region_inputs(logits, target)
    return select_classes(probs, include_background), select_classes(onehot, include_background)


def cldice_loss(logits: torch.Tensor, target: torch.Tensor, *, iterations: int = 3, smooth: float = 1.0,
                include_background: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Soft clDice loss (Shit et al., 2021): ``1 − clDice`` per class, then averaged.

    .. math:: T_{prec} = \frac{\sum S_p\, g + s}{\sum S_p + s},\quad
              T_{sens} = \frac{\sum S_g\, p + s}{\sum S_g + s},\quad
              clDice = \frac{2\,T_{prec}\,T_{sens}}{T_{prec} + T_{sens}}

    ``S_p``, ``S_g``: the :func:`soft_skeleton` of the prediction and of the target
    (``iterations`` = the paper's ``k``, 3 as in its code; it should exceed the largest radius of
    the structures). The topology precision is the part of the predicted skeleton inside the
    target, the sensitivity the part of the target's skeleton covered by the prediction.
    ``smooth = 1`` as in the paper's code. Background excluded by default, as there.

    MONAI's ``SoftclDiceLoss`` is the same for one kept class (binary logits, or ``C = 2``
    without background) with its harmonic-mean ``smooth`` (1e-4) made tiny. For ``C >= 2`` it
    differs by definition: it pools the kept channels into one score per sample (each sum runs
    over channels and voxels, so the largest structure dominates), and its default keeps the
    background; this loss scores each class and averages (the package's rule), background
    excluded as in the paper's code. Ours is the mean of MONAI's one-class scores (tested).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> cldice_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    iterations = _check_iterations(iterations)
    probs, onehot = _kept_classes(logits, target, include_background)
    skeleton_pred = flatten_spatial(soft_skeleton(probs, iterations))
    with torch.no_grad():  # the target's skeleton is a constant
        skeleton_true = flatten_spatial(soft_skeleton(onehot, iterations))
    probs, onehot = flatten_spatial(probs), flatten_spatial(onehot)
    precision = ((skeleton_pred * onehot).sum(-1) + smooth) / (skeleton_pred.sum(-1) + smooth)
    sensitivity = ((skeleton_true * probs).sum(-1) + smooth) / (skeleton_true.sum(-1) + smooth)
    cldice = 2.0 * precision * sensitivity / (precision + sensitivity)
    return reduce((1.0 - cldice).mean(1), reduction)


@torch.no_grad()
def tubed_skeleton(masks: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """The skeleton of 0/1 masks, thickened by one voxel in every direction (a "tube").

    The skeleton is the :func:`soft_skeleton` of the mask (exact binary morphology on 0/1 input:
    Lantuéjoul's skeleton by openings, ``iterations`` erosions), then dilated with the 3×3(×3)
    square (the paper's "tube"; the square is this package's choice). Kirchhoff et al. skeletonise with ``skimage.morphology.skeletonize`` (a thinning,
    which keeps the skeleton connected); this package does not depend on scikit-image, and for the
    recall of thin structures the two differ only along the edges of thick ones.

    Shape:
        ``(N, K, *spatial)`` 0/1 floats; returns 0/1 floats of the same shape.
    """
    return soft_dilation((soft_skeleton(masks, iterations) > 0.5).to(masks.dtype))


def skeleton_recall_loss(logits: torch.Tensor, target: torch.Tensor, *, iterations: int = 10, smooth: float = 1.0,
                         include_background: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Skeleton Recall loss (Kirchhoff et al., 2024): ``1 −`` the soft recall of the prediction on
    the target's tubed skeleton, per class, then averaged.

    .. math:: L = \frac{1}{|K|}\sum_{c \in K}\Big(1 - \frac{\sum_v p_c(v)\, T_c(v) + s}{\sum_v T_c(v) + s}\Big)

    ``T_c`` is the :func:`tubed_skeleton` of the class's mask, kept inside the mask (so an exact
    prediction scores 0 even where the tube would be wider than the structure), computed from
    the target without gradient: no soft
    skeleton of the prediction, so it costs little more than Dice. Missing any part of a thin
    structure's centre line is penalised as much as missing a thick one's. A class without
    skeleton scores 0. Meant to be added to Dice + CE (the paper's weight 1). Background excluded
    by default; binarised soft targets (``> 0.5``).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> skeleton_recall_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    iterations = _check_iterations(iterations)
    probs, onehot = _kept_classes(logits, target, include_background)
    masks = (onehot > 0.5).to(probs.dtype)
    tube = flatten_spatial(tubed_skeleton(masks, iterations) * masks)
    recall = ((flatten_spatial(probs) * tube).sum(-1) + smooth) / (tube.sum(-1) + smooth)
    return reduce((1.0 - recall).mean(1), reduction)


ClDiceLoss = loss_class(
    "ClDiceLoss", cldice_loss, "cldice", family="region", paper="Shit et al., 2021",
    formula="Soft clDice, 1 − harmonic mean of topology precision and sensitivity on soft skeletons",
    peers={"monai": "SoftclDiceLoss (one kept class; it pools C >= 2 classes)"})


SkeletonRecallLoss = loss_class(
    "SkeletonRecallLoss", skeleton_recall_loss, "skeleton_recall", family="region", paper="Kirchhoff et al., 2024",
    formula="Skeleton Recall, 1 − Σp·T/ΣT on the target's tubed skeleton T, per class")


__all__ = exports(__name__, ["soft_erosion", "soft_dilation", "soft_skeleton", "tubed_skeleton"])
