"""Generalized Dice losses: one score over all classes, each class weighted so that small
structures count as much as large ones (Sudre et al., 2017; Yang et al.'s penalty form), and
the generalized Wasserstein Dice (Fidon et al., 2017), which charges a mistake by how far apart
the two labels are.
"""

from __future__ import annotations

import torch

from medsegloss._checks import check_in_range, check_reduction, check_target
from medsegloss._ops import flatten_spatial, label_count, probabilities, reduce, select_classes
from medsegloss.losses._registry import exports, loss_class
from medsegloss.losses.region._counts import TINY, region_counts


def generalized_dice_score(tp, fp, fn, smooth: float = 1e-5) -> torch.Tensor:
    r"""Generalized Dice score (Sudre et al., 2017) per sample, from ``(N, C)`` counts -> ``(N,)``.

    .. math:: G = \frac{2\sum_c w_c TP_c + s}{\sum_c w_c (2TP_c + FP_c + FN_c) + s},\qquad w_c = \frac{1}{(\sum_v g_c)^2}

    **Absent classes** (``Σ g_c = 0``, where ``w_c`` would be ``inf``) get the largest weight
    among the present classes of the sample, so predicting them is penalised as much as missing
    the rarest present class; a sample with no class present gets equal weights. The weights are
    then normalised to sum to 1 per sample (``G`` is unchanged without smoothing; with it, ``s``
    stays small relative to the weighted sums whatever the volume size).
    """
    volume = (tp + fn).detach()  # Σ g per class; the weights are constants of the target
    weight = torch.where(volume > 0, 1.0 / volume.clamp_min(TINY).square(), torch.zeros_like(volume))
    largest = weight.amax(1, keepdim=True)
    weight = torch.where(volume > 0, weight, torch.where(largest > 0, largest, torch.ones_like(largest)))
    weight = weight / weight.sum(1, keepdim=True)
    return (2 * (weight * tp).sum(1) + smooth) / ((weight * (2 * tp + fp + fn)).sum(1) + smooth)


def _generalized_dice(logits, target, smooth, ignore_index, include_background, batch):
    tp, fp, fn = (select_classes(x, include_background) for x in region_counts(logits, target, ignore_index, batch))
    score = generalized_dice_score(tp, fp, fn, smooth)
    return score.expand(logits.shape[0]) if batch else score


def generalized_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1e-5,
                          ignore_index: int | None = None, include_background: bool = True, batch: bool = False,
                          reduction: str = "mean") -> torch.Tensor:
    r"""Generalized Dice loss (Sudre et al., 2017): ``1 − G``, one score over all classes.

    ``G`` (:func:`generalized_dice_score`) weighs each class by ``1/(Σg)²``, so small structures
    count as much as large ones; absent classes take the sample's largest present-class weight.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> generalized_dice_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    score = _generalized_dice(logits, target, smooth, ignore_index, include_background, batch)
    return reduce(1.0 - score, reduction)


def penalty_generalized_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, k: float = 2.5,
                                  smooth: float = 1e-5, ignore_index: int | None = None,
                                  include_background: bool = True, batch: bool = False,
                                  reduction: str = "mean") -> torch.Tensor:
    r"""Penalty generalized Dice loss (Yang et al., 2019) on the generalized Dice score ``G``.

    .. math:: L = 1 - \frac{G}{1 + k(1 - G)}

    ``k`` penalises the FP and FN left in ``G``; ``k = 0`` is the generalized Dice loss.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> penalty_generalized_dice_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    k = check_in_range("k", k, 0.0, float("inf"))
    score = _generalized_dice(logits, target, smooth, ignore_index, include_background, batch)
    return reduce(1.0 - score / (1.0 + k * (1.0 - score)), reduction)


def _wasserstein_matrix(dist_matrix, num_labels: int, device, dtype) -> torch.Tensor:
    """The label distance matrix ``M``: ``1 − I`` by default; a given one is checked and scaled
    so that its largest entry is 1 (the GWDS needs ``W <= 1``)."""
    if dist_matrix is None:
        return 1.0 - torch.eye(num_labels, device=device, dtype=dtype)
    matrix = torch.as_tensor(dist_matrix, device=device, dtype=dtype)
    if matrix.shape != (num_labels, num_labels):
        raise ValueError(f"dist_matrix must be ({num_labels}, {num_labels}), one row and column per label, "
                         f"got shape {tuple(matrix.shape)}")
    if not torch.isfinite(matrix).all() or (matrix < 0).any() or matrix.max() <= 0:
        raise ValueError(f"dist_matrix must be finite, non-negative and not all zero, got {matrix.tolist()}")
    if (matrix.diagonal() != 0).any():
        raise ValueError(f"dist_matrix must have zeros on its diagonal (a label is at distance 0 from itself), "
                         f"got diagonal {matrix.diagonal().tolist()}")
    return matrix / matrix.max()


def _labels_of(target: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Integer labels of a checked target; a float target must be one-hot (the Wasserstein
    distance to a soft label is an optimal-transport problem, not this closed form)."""
    if not target.is_floating_point():
        return target
    if not ((target == 0) | (target == 1)).all() or (target.shape[1] > 1 and not (target.sum(1) == 1).all()):
        raise ValueError("gwdl needs integer labels or a one-hot float target; got soft labels")
    return target[:, 0].long() if target.shape[1] == 1 else target.argmax(1)


def generalized_wasserstein_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, dist_matrix=None,
                                      weighting: str = "default", smooth: float = 1e-5,
                                      ignore_index: int | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Generalized Wasserstein Dice loss (Fidon et al., 2017): ``1 − GWDS``, one score over all
    classes that charges a mistake by how far apart the two labels are.

    .. math:: W_v = \sum_{c} M_{y_v, c}\, p_c(v),\qquad
              TP = \sum_v \alpha_{y_v} (1 - W_v),\qquad
              GWDS = \frac{2\,TP + s}{2\,TP + \sum_v W_v + s}

    ``W_v`` is the Wasserstein distance between the predicted distribution and the one-hot label
    under the label distance matrix ``M`` (``dist_matrix``, ``K × K`` with ``K = C``, or 2 for
    one-channel logits; default ``1 − I``, every mistake costs 1; scaled so its maximum is 1).
    ``weighting="default"`` is the paper's ``α = 0`` for the background (label 0) and 1 for the
    others. ``weighting="gdl"`` uses MONAI's variant ``α_l = 1/(V_l + 1)`` (``V_l``: voxels of
    label ``l`` in the sample) with the denominator ``Σ_v α_{y_v}(2 − W_v)``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or one-hot ``(N, C, *spatial)``
        floats; returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> generalized_wasserstein_dice_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    if weighting not in ("default", "gdl"):
        raise ValueError(f"weighting must be 'default' or 'gdl', got {weighting!r}")
    target = check_target(target, logits, ignore_index)
    probs = probabilities(logits)
    n, c = probs.shape[:2]
    k = label_count(c)
    if c == 1:
        probs = torch.cat([1.0 - probs, probs], 1)
    matrix = _wasserstein_matrix(dist_matrix, k, probs.device, probs.dtype)
    labels = _labels_of(target, k).reshape(n, -1)
    valid = None if ignore_index is None or target.is_floating_point() else labels != ignore_index
    if valid is not None:
        labels = torch.where(valid, labels, torch.zeros_like(labels))
    probs = flatten_spatial(probs)
    # W_v = Σ_c M[y_v, c]·p_c(v): every label's row against p(v) is one small matmul, then the true
    # label's row is gathered (no (N, V, K) copy of the matrix rows)
    if dist_matrix is None:  # M = 1 − I: W_v = 1 − p_{y_v}(v)
        wasserstein = 1.0 - probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    else:
        wasserstein = torch.matmul(matrix, probs).gather(1, labels.unsqueeze(1)).squeeze(1)  # (N, V)
    if weighting == "default":
        alpha = torch.ones(k, device=probs.device, dtype=probs.dtype)
        alpha[0] = 0.0
        alpha = alpha[labels]
    else:
        counted = labels if valid is None else torch.where(valid, labels, torch.full_like(labels, k))
        volumes = torch.zeros(n, k + 1, device=probs.device, dtype=probs.dtype)
        volumes.scatter_add_(1, counted, torch.ones_like(wasserstein))
        alpha = (1.0 / (volumes[:, :k] + 1.0)).gather(1, labels)
    if valid is not None:
        alpha, wasserstein = alpha * valid, wasserstein * valid
    true_positives = (alpha * (1.0 - wasserstein)).sum(1)
    if weighting == "default":
        denominator = 2.0 * true_positives + wasserstein.sum(1)
    else:
        denominator = (alpha * (2.0 - wasserstein)).sum(1)
    return reduce(1.0 - (2.0 * true_positives + smooth) / (denominator + smooth), reduction)


GeneralizedDiceLoss = loss_class(
    "GeneralizedDiceLoss", generalized_dice_loss, "gdl", family="region", paper="Sudre et al., 2017",
    formula="Generalized Dice, 1 − 2Σw·TP/Σw·(2TP + FP + FN), w_c = 1/(Σg_c)²", peers={"monai": "GeneralizedDiceLoss (smooth=0)"})


PenaltyGeneralizedDiceLoss = loss_class(
    "PenaltyGeneralizedDiceLoss", penalty_generalized_dice_loss, "pgdl", family="region", paper="Yang et al., 2019",
    formula="Penalty generalized Dice, 1 − G/(1 + k(1 − G)) on the generalized Dice score G")


GeneralizedWassersteinDiceLoss = loss_class(
    "GeneralizedWassersteinDiceLoss", generalized_wasserstein_dice_loss, "gwdl", family="region",
    paper="Fidon et al., 2017",
    formula="Generalized Wasserstein Dice, 1 − 2TP/(2TP + ΣW), W the label-distance-weighted error",
    peers={"monai": "GeneralizedWassersteinDiceLoss"},
    multilabel_refusal="its label distance matrix relates mutually exclusive labels; overlapping regions have none")


__all__ = exports(__name__, ["generalized_dice_score"])
