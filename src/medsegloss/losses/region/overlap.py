"""Overlap losses: formulas over the soft counts ``tp, fp, fn`` of each class
(:mod:`~medsegloss.losses.region._counts`), scored per class first and averaged afterwards, so
class-asymmetric weights (Tversky's α ≠ β) keep their meaning.

The overlap scores are one family: with ``TI(α, β) = (TP + s)/(TP + α·FP + β·FN + s)``
(:func:`~medsegloss.losses.region._counts.tversky_index`), Dice is ``TI(½, ½)``, IoU is
``TI(1, 1)`` and Hashemi's F_β is ``TI(1/(1+β²), β²/(1+β²))``; the code says so by calling it.
The sensitivity–specificity loss and the Matthews correlation coefficient also count the true
negatives.
"""

from __future__ import annotations

import torch

from medsegloss._checks import check_in_range, check_reduction
from medsegloss._ops import flatten_spatial, soft_counts
from medsegloss.losses._registry import exports, loss_class
from medsegloss.losses.region._counts import (
    TINY, check_alpha_beta, dice_score, pool, reduce_classes, region_counts, region_inputs, tversky_index,
)


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
    p, g, voxels = region_inputs(logits, target, ignore_index)
    p, g = flatten_spatial(p), flatten_spatial(g)
    squared_error = (p - g).square_()
    on_target, total, target_sum = (squared_error * g).sum(-1), squared_error.sum(-1), g.sum(-1)
    on_target, total, target_sum, voxels = pool((on_target, total, target_sum, voxels), batch)
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
        p, g, _ = (flatten_spatial(x) for x in region_inputs(logits, target, ignore_index))
        tp, p_squares, g_squares = pool(((p * g).sum(-1), (p * p).sum(-1), (g * g).sum(-1)), batch)
        score = (2 * tp + smooth) / (p_squares + g_squares + smooth)
    else:
        score = dice_score(*region_counts(logits, target, ignore_index, batch), smooth)
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
    check_alpha_beta(alpha, beta)
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
    check_alpha_beta(alpha, beta)
    gamma = check_in_range("gamma", gamma, 1e-6, float("inf"))
    tp, fp, fn = region_counts(logits, target, ignore_index, batch)
    per_class = (1.0 - tversky_index(tp, fp, fn, alpha, beta, smooth)).clamp_min(TINY).pow(1.0 / gamma)
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
    score = dice_score(*region_counts(logits, target, ignore_index, batch), smooth)
    per_class = 1.0 - score.clamp_min(TINY).pow(1.0 / beta)
    return reduce_classes(per_class, logits.shape[0], weight, include_background, reduction)


def mcc_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1e-5, weight=None,
             ignore_index: int | None = None, include_background: bool = True, batch: bool = False,
             reduction: str = "mean") -> torch.Tensor:
    r"""Matthews correlation coefficient loss (Abhishek & Hamarneh, 2021): ``1 − MCC`` per class
    (one class against the rest), then averaged.

    .. math:: MCC_c = \frac{TP_c\,TN_c - FP_c\,FN_c}
              {\sqrt{(TP_c+FP_c)(TP_c+FN_c)(TN_c+FP_c)(TN_c+FN_c) + s}}

    with the soft counts ``TP = Σpg``, ``FP = Σp(1−g)``, ``FN = Σ(1−p)g`` and
    ``TN = Σ(1−p)(1−g) = V − TP − FP − FN``. Unlike Dice it rewards the true negatives too.
    ``s`` (``smooth``) keeps the root's slope finite. An exact prediction (``FP = FN = 0``)
    scores 0, also for a class absent from both, whose MCC is otherwise 0 (as MONAI's
    ``MCCLoss``, which this equals). The paper is binary; for ``C >= 2`` each softmax channel is
    scored against the rest and the classes averaged (weighted by ``weight``).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> mcc_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    probs, onehot, voxels = region_inputs(logits, target, ignore_index)
    tp, fp, fn, voxels = pool((*soft_counts(probs, onehot), voxels), batch)
    tn = voxels - tp - fp - fn
    mcc = (tp * tn - fp * fn) / torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn) + smooth)
    per_class = torch.where((fp == 0) & (fn == 0), torch.zeros_like(mcc), 1.0 - mcc)
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


FocalTverskyLoss = loss_class(
    "FocalTverskyLoss", focal_tversky_loss, "focal_tversky", family="region", paper="Abraham & Khan, 2019",
    formula="Focal Tversky, (1 − TI_c)^(1/γ) per class (γ = 1 is Tversky)")


AsymmetricLoss = loss_class(
    "AsymmetricLoss", asymmetric_loss, "asym", family="region", paper="Hashemi et al., 2018",
    formula="Asymmetric similarity, 1 − F_β per class, β² weighs FN (β = 1 is Dice)")


FocalDiceLoss = loss_class(
    "FocalDiceLoss", focal_dice_loss, "focal_dice", family="region", paper="Wang & Chung, 2018",
    formula="Focal Dice, Σ_c W_c(1 − D_c^(1/β)) / Σ_c W_c")


MCCLoss = loss_class(
    "MCCLoss", mcc_loss, "mcc", family="region", paper="Abhishek & Hamarneh, 2021",
    formula="Matthews correlation coefficient loss, 1 − (TP·TN − FP·FN)/√((TP+FP)(TP+FN)(TN+FP)(TN+FN)) per class",
    peers={"monai": "MCCLoss"})


__all__ = exports(__name__)
