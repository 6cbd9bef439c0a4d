"""What every region loss is computed from: the checked input as probabilities and target, the
soft counts ``tp, fp, fn`` per sample and class, the one overlap ratio (the Tversky index, of
which Dice is the case α = β = ½), and the reduction over classes.

``batch=False`` (the default) scores each image; ``batch=True`` pools the counts over the batch
first (nnU-Net's "batch Dice"), one score repeated per sample for ``reduction="none"``.
"""

from __future__ import annotations

import torch

from medsegloss._checks import check_in_range, check_reduction, check_target, check_weight
from medsegloss._ops import (
    flatten_spatial, fused_soft_counts, probabilities, reduce, select_classes, soft_counts, target_probabilities,
    use_fused,
)

TINY = 1e-12  # floor under the bases of powers < 1 (and of squares inverted), whose slope is infinite at 0


def pool(counts, batch: bool):
    """Sum ``(N, C)`` statistics over the batch when ``batch`` (nnU-Net's batch Dice)."""
    return tuple(x.sum(0, keepdim=True) for x in counts) if batch else counts


def _masked_inputs(logits, target, ignore_index):
    probs = probabilities(logits)
    onehot, valid = target_probabilities(target, logits.shape[1], ignore_index, probs.dtype)
    if valid is None:
        voxels = torch.full((probs.shape[0], 1), float(flatten_spatial(probs).shape[-1]), dtype=probs.dtype,
                            device=probs.device)
        return probs, onehot, voxels
    return probs * valid, onehot * valid, flatten_spatial(valid).sum(-1)


def region_inputs(logits, target, ignore_index=None):
    """Checked input -> the probabilities and the target, both ``(N, C, *spatial)`` floats and zero
    at ignored voxels, and the number of counted voxels per sample ``(N, 1)``."""
    return _masked_inputs(logits, check_target(target, logits, ignore_index), ignore_index)


def region_counts(logits, target, ignore_index=None, batch=False):
    """Checked input -> soft ``tp, fp, fn`` of shape ``(N, C)`` (or ``(1, C)`` when ``batch``):
    one fused pass without a one-hot target where :func:`~medsegloss._ops.use_fused` allows."""
    target = check_target(target, logits, ignore_index)
    if use_fused(logits, target, ignore_index, label_counts=True):
        return pool(fused_soft_counts(logits, target if not target.is_floating_point() else target[:, 0]), batch)
    probs, onehot, _ = _masked_inputs(logits, target, ignore_index)
    return pool(soft_counts(probs, onehot), batch)


def tversky_index(tp, fp, fn, alpha: float, beta: float, smooth: float) -> torch.Tensor:
    r"""Tversky index per sample and class, :math:`(TP + s)/(TP + \alpha FP + \beta FN + s)`: the
    one overlap ratio of the region losses (IoU at α = β = 1, Dice at ½, Hashemi's F_β)."""
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def dice_score(tp, fp, fn, smooth: float) -> torch.Tensor:
    r"""Soft Dice per sample and class, :math:`(2TP + s)/(2TP + FP + FN + s)`: the Tversky index at
    α = β = ½ with ``s/2`` (the same ratio halved, which floating point does exactly)."""
    return tversky_index(tp, fp, fn, 0.5, 0.5, smooth / 2)


def check_alpha_beta(alpha, beta) -> None:
    check_in_range("alpha", alpha, 0.0, float("inf"))
    check_in_range("beta", beta, 0.0, float("inf"))


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
