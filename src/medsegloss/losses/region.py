"""Region-based losses: formulas over the soft counts ``tp, fp, fn`` per sample and class.

Every loss here computes a score per class first and averages afterwards, so class-asymmetric
weights (Tversky's α ≠ β) keep their meaning. ``batch=False`` (the default) scores each image
and averages, so ``reduction="none"`` gives one value per sample and terms add up; ``batch=True``
pools the counts over the batch first (one score, nnU-Net's "batch Dice"), which is steadier
when single images often lack a class, and is repeated per sample for ``reduction="none"``.
"""

from __future__ import annotations

import torch
from torch import nn

from medsegloss._checks import check_probability, check_reduction, check_target, check_weight
from medsegloss._ops import probabilities, reduce, select_classes, soft_counts, target_probabilities
from medsegloss.losses._registry import register

__all__ = ["tversky_loss", "dice_loss", "TverskyLoss", "DiceLoss"]


def region_counts(logits, target, ignore_index=None, batch=False):
    """Checked input -> soft ``tp, fp, fn`` of shape ``(N, C)`` (or ``(1, C)`` when ``batch``)."""
    target = check_target(target, logits, ignore_index)
    probs = probabilities(logits)
    onehot, valid = target_probabilities(target, logits.shape[1], ignore_index)
    tp, fp, fn = soft_counts(probs, onehot, valid)
    if batch:
        tp, fp, fn = tp.sum(0, keepdim=True), fp.sum(0, keepdim=True), fn.sum(0, keepdim=True)
    return tp, fp, fn


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
    check_probability("alpha", alpha, 0.0, float("inf"))
    check_probability("beta", beta, 0.0, float("inf"))
    tp, fp, fn = region_counts(logits, target, ignore_index, batch)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return reduce_classes(1.0 - index, logits.shape[0], weight, include_background, reduction)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1e-5, weight=None,
              ignore_index: int | None = None, include_background: bool = True, batch: bool = False,
              reduction: str = "mean") -> torch.Tensor:
    r"""Soft Dice loss (Milletari et al., 2016): ``1 − Dice`` per class, then averaged.

    .. math:: D_c = \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s} = \frac{2\sum p g + s}{\sum p + \sum g + s}

    It *is* the Tversky loss at α = β = ½ (same formula, multiplied through by 2).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> dice_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    tp, fp, fn = region_counts(logits, target, ignore_index, batch)
    score = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    return reduce_classes(1.0 - score, logits.shape[0], weight, include_background, reduction)


class _RegionLoss(nn.Module):
    """Stores options; calls the functional form. Subclasses set ``function``."""

    function = None

    def __init__(self, **options):
        super().__init__()
        check_reduction(options.get("reduction", "mean"))
        self.options = options

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return type(self).function(logits, target, **self.options)


@register("tversky", family="region", paper="Salehi et al., 2017", function=tversky_loss)
class TverskyLoss(_RegionLoss):
    """Tversky loss, 1 − TP/(TP + α·FP + β·FN) per class (α weighs FP, β weighs FN)."""

    function = staticmethod(tversky_loss)

    def __init__(self, *, alpha=0.3, beta=0.7, smooth=1e-5, weight=None, ignore_index=None,
                 include_background=True, batch=False, reduction="mean"):
        super().__init__(alpha=alpha, beta=beta, smooth=smooth, weight=weight, ignore_index=ignore_index,
                         include_background=include_background, batch=batch, reduction=reduction)


@register("dice", family="region", paper="Milletari et al., 2016", function=dice_loss)
class DiceLoss(_RegionLoss):
    """Soft Dice loss, 1 − 2Σpg/(Σp + Σg) per class."""

    function = staticmethod(dice_loss)

    def __init__(self, *, smooth=1e-5, weight=None, ignore_index=None, include_background=True,
                 batch=False, reduction="mean"):
        super().__init__(smooth=smooth, weight=weight, ignore_index=ignore_index,
                         include_background=include_background, batch=batch, reduction=reduction)
