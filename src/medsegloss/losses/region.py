"""Region-based losses: formulas over the soft counts ``tp, fp, fn`` per sample and class.

Every loss here computes a score per class first and averages afterwards, so class-asymmetric
weights (Tversky's α ≠ β) keep their meaning. ``batch=False`` (the default) scores each image
and averages, so ``reduction="none"`` gives one value per sample and terms add up; ``batch=True``
pools the counts over the batch first (one score, nnU-Net's "batch Dice"), which is steadier
when single images often lack a class, and is repeated per sample for ``reduction="none"``.

The overlap scores are one family: with ``TI(α, β) = (TP + s)/(TP + α·FP + β·FN + s)``, Dice is
``TI(½, ½)``, IoU is ``TI(1, 1)`` and Hashemi's F_β is ``TI(1/(1+β²), β²/(1+β²))``; the code says
so by calling :func:`tversky_index`.
"""

from __future__ import annotations

import torch

from medsegloss._checks import check_in_range, check_reduction, check_target, check_weight
from medsegloss._ops import (
    flatten_spatial,
    probabilities,
    reduce,
    select_classes,
    soft_counts,
    fused_soft_counts,
    target_probabilities,
    use_fused,
)
from medsegloss.losses._registry import exports, loss_class


_TINY = 1e-12  # floor under scores raised to a power < 1, whose slope is infinite at 0


def _pool(counts, batch: bool):
    """Sum ``(N, C)`` statistics over the batch when ``batch`` (nnU-Net's batch Dice)."""
    return tuple(x.sum(0, keepdim=True) for x in counts) if batch else counts


def region_counts(logits, target, ignore_index=None, batch=False):
    """Checked input -> soft ``tp, fp, fn`` of shape ``(N, C)`` (or ``(1, C)`` when ``batch``)."""
    target = check_target(target, logits, ignore_index)
    if use_fused(logits, target, ignore_index, label_counts=True):  # one pass, no one-hot
        return _pool(fused_soft_counts(logits, target if not target.is_floating_point() else target[:, 0]), batch)
    probs = probabilities(logits)
    onehot, valid = target_probabilities(target, logits.shape[1], ignore_index, probs.dtype)
    return _pool(soft_counts(probs, onehot, valid), batch)


def _flat_inputs(logits, target, ignore_index):
    """Checked input -> probabilities and target as ``(N, C, V)``, zero at ignored voxels, and
    the number of counted voxels per sample ``(N, 1)``."""
    target = check_target(target, logits, ignore_index)
    probs = probabilities(logits)
    onehot, valid = target_probabilities(target, logits.shape[1], ignore_index, probs.dtype)
    if valid is not None:
        probs, onehot = probs * valid, onehot * valid
        voxels = flatten_spatial(valid).sum(-1)
    else:
        voxels = torch.full((probs.shape[0], 1), float(flatten_spatial(probs).shape[-1]), dtype=probs.dtype,
                            device=probs.device)
    return flatten_spatial(probs), flatten_spatial(onehot), voxels


def reduce_classes(per_class_loss: torch.Tensor, n: int, weight=None, include_background=True,
                   reduction="mean") -> torch.Tensor:
    """``(N, C)`` (or ``(1, C)``) per-class losses -> weighted class mean per sample -> reduced.

    The class mean is ``Σ w_c·l_c / Σ w_c`` over the kept classes (plain mean without weights).
    """
    check_reduction(reduction)
    c = per_class_loss.shape[1]
    weight = check_weight(weight, c, per_class_loss.device, per_class_loss.dtype)
    per_class_loss = select_classes(per_class_loss, include_background)
    if weight is None:
        per_sample = per_class_loss.mean(1)
    else:
        weight = select_classes(weight.view(1, -1), include_background)
        per_sample = (per_class_loss * weight).sum(1) / weight.sum().clamp_min(1e-12)
    if per_sample.shape[0] != n:  # batch=True: one value for the batch, repeated per sample
        per_sample = per_sample.expand(n)
    return reduce(per_sample, reduction)


def tversky_index(tp, fp, fn, alpha: float, beta: float, smooth: float) -> torch.Tensor:
    r"""Tversky index per sample and class, :math:`(TP + s)/(TP + \alpha FP + \beta FN + s)`."""
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def _check_alpha_beta(alpha, beta):
    check_in_range("alpha", alpha, 0.0, float("inf"))
    check_in_range("beta", beta, 0.0, float("inf"))


def sensitivity_specificity_loss(logits: torch.Tensor, target: torch.Tensor, *, r: float = 0.05,
                                 smooth: float = 1e-5, weight=None, ignore_index: int | None = None,
                                 include_background: bool = True, batch: bool = False,
                                 reduction: str = "mean") -> torch.Tensor:
    r"""Sensitivity–specificity loss (Brosch et al., 2015) per class, then averaged.

    .. math:: SS_c = r\,\frac{\sum (g - p)^2 g}{\sum g + s} + (1 - r)\,\frac{\sum (g - p)^2 (1 - g)}{\sum (1 - g) + s}

    The squared error on the class's voxels (sensitivity term, weight ``r``) and on the others
    (specificity term, weight ``1 − r``); a small ``r`` (0.05 in the paper) makes errors in the
    large background count. Computed as one squared-error map: ``Σ e(1−g) = Σ e − Σ e·g``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> sensitivity_specificity_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    r = check_in_range("r", r)
    p, g, voxels = _flat_inputs(logits, target, ignore_index)
    squared_error = (p - g).square_()
    on_target, total, target_sum = (squared_error * g).sum(-1), squared_error.sum(-1), g.sum(-1)
    on_target, total, target_sum, voxels = _pool((on_target, total, target_sum, voxels), batch)
    sensitivity = on_target / (target_sum + smooth)
    specificity = (total - on_target) / (voxels - target_sum + smooth)
    return reduce_classes(r * sensitivity + (1 - r) * specificity, logits.shape[0], weight, include_background,
                          reduction)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, squared: bool = False, smooth: float = 1e-5,
              weight=None, ignore_index: int | None = None, include_background: bool = True, batch: bool = False,
              reduction: str = "mean") -> torch.Tensor:
    r"""Soft Dice loss (Milletari et al., 2016): ``1 − Dice`` per class, then averaged.

    .. math:: D_c = \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s} = \frac{2\sum p g + s}{\sum p + \sum g + s}

    It *is* the Tversky loss at α = β = ½ (the same ratio multiplied through by 2, so
    ``tversky(½, ½, smooth=s/2)`` equals ``dice(smooth=s)``). ``squared=True`` is the V-Net form
    with squares in the denominator, :math:`(2\sum pg + s)/(\sum p^2 + \sum g^2 + s)`.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> dice_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    if squared:
        p, g, _ = _flat_inputs(logits, target, ignore_index)
        tp, p_squares, g_squares = _pool(((p * g).sum(-1), (p * p).sum(-1), (g * g).sum(-1)), batch)
        score = (2 * tp + smooth) / (p_squares + g_squares + smooth)
    else:
        tp, fp, fn = region_counts(logits, target, ignore_index, batch)
        score = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    return reduce_classes(1.0 - score, logits.shape[0], weight, include_background, reduction)


def iou_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1e-5, weight=None,
             ignore_index: int | None = None, include_background: bool = True, batch: bool = False,
             reduction: str = "mean") -> torch.Tensor:
    r"""Soft IoU (Jaccard) loss (Rahman & Wang, 2016): ``1 − IoU`` per class, then averaged.

    .. math:: J_c = \frac{TP_c + s}{TP_c + FP_c + FN_c + s} = \frac{\sum pg + s}{\sum p + \sum g - \sum pg + s}

    The Tversky index at α = β = 1.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> iou_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    tp, fp, fn = region_counts(logits, target, ignore_index, batch)
    score = tversky_index(tp, fp, fn, 1.0, 1.0, smooth)
    return reduce_classes(1.0 - score, logits.shape[0], weight, include_background, reduction)


def tversky_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                 smooth: float = 1e-5, weight=None, ignore_index: int | None = None,
                 include_background: bool = True, batch: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Tversky loss (Salehi et al., 2017): ``1 − TI`` per class, then averaged.

    .. math:: TI_c = \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}

    ``alpha`` weighs false positives and ``beta`` false negatives (``beta > alpha`` favours
    recall). Computed per class, then averaged, so swapping α and β changes the value whenever
    FP ≠ FN. With ``alpha = beta = 0.5`` it is the Dice loss.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> tversky_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    _check_alpha_beta(alpha, beta)
    tp, fp, fn = region_counts(logits, target, ignore_index, batch)
    score = tversky_index(tp, fp, fn, alpha, beta, smooth)
    return reduce_classes(1.0 - score, logits.shape[0], weight, include_background, reduction)


def focal_tversky_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.3, beta: float = 0.7,
                       gamma: float = 4 / 3, smooth: float = 1e-5, weight=None, ignore_index: int | None = None,
                       include_background: bool = True, batch: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Focal Tversky loss (Abraham & Khan, 2019): ``(1 − TI_c)^{1/γ}`` per class, then averaged.

    .. math:: FTL_c = (1 - TI_c)^{1/\gamma}

    ``alpha`` weighs FP and ``beta`` FN as in :func:`tversky_loss` (the paper names them the other
    way round: its α = 0.7 on FN is ``beta=0.7`` here). ``gamma`` is the focusing exponent (the
    paper's 4/3, used as ``1/γ``); ``gamma = 1`` is the Tversky loss. ``1 − TI`` is floored at
    1e-12 first, where the power's slope would be infinite.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> focal_tversky_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    _check_alpha_beta(alpha, beta)
    gamma = check_in_range("gamma", gamma, 1e-6, float("inf"))
    tp, fp, fn = region_counts(logits, target, ignore_index, batch)
    per_class = (1.0 - tversky_index(tp, fp, fn, alpha, beta, smooth)).clamp_min(_TINY).pow(1.0 / gamma)
    return reduce_classes(per_class, logits.shape[0], weight, include_background, reduction)


def asymmetric_loss(logits: torch.Tensor, target: torch.Tensor, *, beta: float = 1.5, smooth: float = 1e-5,
                    weight=None, ignore_index: int | None = None, include_background: bool = True,
                    batch: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Asymmetric similarity loss (Hashemi et al., 2018): ``1 − F_β`` per class, then averaged.

    .. math:: F_\beta = \frac{(1+\beta^2) TP + s}{(1+\beta^2) TP + \beta^2 FN + FP + s}

    Larger ``beta`` weighs false negatives more (recall), as in the paper, whose text and formula
    put β² on FN. The survey (Ma et al., 2021, eq. 7) prints β² on the FP term, against its own
    text and the paper: this follows the paper. ``beta = 1`` is the Dice loss. It is the Tversky
    index with α = 1/(1+β²) on FP and β²/(1+β²) on FN (smoothing scaled alike).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> asymmetric_loss(logits, torch.randint(0, 3, (2, 8, 8)), beta=1.5).backward()
    """
    check_in_range("beta", beta, 0.0, float("inf"))
    tp, fp, fn = region_counts(logits, target, ignore_index, batch)
    scale = 1.0 + beta**2
    score = tversky_index(tp, fp, fn, 1.0 / scale, beta**2 / scale, smooth / scale)
    return reduce_classes(1.0 - score, logits.shape[0], weight, include_background, reduction)


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
    weight = torch.where(volume > 0, 1.0 / volume.clamp_min(_TINY).square(), torch.zeros_like(volume))
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


def focal_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, beta: float = 2.0, smooth: float = 1e-5,
                    weight=None, ignore_index: int | None = None, include_background: bool = True,
                    batch: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Focal Dice loss (Wang & Chung, 2018): ``1 − D_c^{1/β}`` per class, then (weighted) averaged.

    .. math:: L = \frac{\sum_c W_c (1 - D_c^{1/\beta})}{\sum_c W_c}

    ``D_c`` is the soft Dice score of class ``c``; ``beta > 1`` lifts the scores of easy classes
    towards 1 faster than those of hard ones, so hard classes dominate. ``beta = 1`` is the Dice
    loss. The paper sums over classes; the weighted mean here keeps the value in ``[0, 1]``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> focal_dice_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    beta = check_in_range("beta", beta, 1e-6, float("inf"))
    tp, fp, fn = region_counts(logits, target, ignore_index, batch)
    score = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    per_class = 1.0 - score.clamp_min(_TINY).pow(1.0 / beta)
    return reduce_classes(per_class, logits.shape[0], weight, include_background, reduction)


SensitivitySpecificityLoss = loss_class(
    "SensitivitySpecificityLoss", sensitivity_specificity_loss, "ss", family="region", paper="Brosch et al., 2015",
    formula="Sensitivity–specificity r·Σ(g−p)²g/Σg + (1−r)·Σ(g−p)²(1−g)/Σ(1−g) per class")


DiceLoss = loss_class(
    "DiceLoss", dice_loss, "dice", family="region", paper="Milletari et al., 2016",
    formula="Soft Dice loss, 1 − 2Σpg/(Σp + Σg) per class (squared=True: Σp² + Σg²)", peers={"monai": "DiceLoss"})


IoULoss = loss_class(
    "IoULoss", iou_loss, "iou", family="region", paper="Rahman & Wang, 2016",
    formula="Soft IoU (Jaccard) loss, 1 − TP/(TP + FP + FN) per class", peers={"monai": "DiceLoss(jaccard=True)"})


TverskyLoss = loss_class(
    "TverskyLoss", tversky_loss, "tversky", family="region", paper="Salehi et al., 2017",
    formula="Tversky loss, 1 − TP/(TP + α·FP + β·FN) per class (α weighs FP, β weighs FN)", peers={"monai": "TverskyLoss"})


GeneralizedDiceLoss = loss_class(
    "GeneralizedDiceLoss", generalized_dice_loss, "gdl", family="region", paper="Sudre et al., 2017",
    formula="Generalized Dice, 1 − 2Σw·TP/Σw·(2TP + FP + FN), w_c = 1/(Σg_c)²", peers={"monai": "GeneralizedDiceLoss (smooth=0)"})


FocalTverskyLoss = loss_class(
    "FocalTverskyLoss", focal_tversky_loss, "focal_tversky", family="region", paper="Abraham & Khan, 2019",
    formula="Focal Tversky, (1 − TI_c)^(1/γ) per class (γ = 1 is Tversky)")


AsymmetricLoss = loss_class(
    "AsymmetricLoss", asymmetric_loss, "asym", family="region", paper="Hashemi et al., 2018",
    formula="Asymmetric similarity, 1 − F_β per class, β² weighs FN (β = 1 is Dice)")


PenaltyGeneralizedDiceLoss = loss_class(
    "PenaltyGeneralizedDiceLoss", penalty_generalized_dice_loss, "pgdl", family="region", paper="Yang et al., 2019",
    formula="Penalty generalized Dice, 1 − G/(1 + k(1 − G)) on the generalized Dice score G")


FocalDiceLoss = loss_class(
    "FocalDiceLoss", focal_dice_loss, "focal_dice", family="region", paper="Wang & Chung, 2018",
    formula="Focal Dice, Σ_c W_c(1 − D_c^(1/β)) / Σ_c W_c")


__all__ = exports(__name__, ["tversky_index", "generalized_dice_score"])
