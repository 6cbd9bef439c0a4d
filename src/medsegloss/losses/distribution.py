"""Distribution-based losses: per-voxel likelihood terms (cross-entropy and its variants).

Each is a per-voxel map ``(N, *spatial)`` averaged over the counted voxels of each sample, so
``reduction="none"`` gives one value per sample. All start from the per-voxel cross-entropy
``−log p_t`` of :func:`medsegloss._ops.cross_entropy_map` (one fused softmax), whose ``exp(−ce)``
is the true-class probability ``p_t``: focal and TopK-threshold need no second softmax.
One-channel logits are binary (sigmoid); their labels are 0 (background) and 1 (foreground),
so per-label weights have two values there. The distance-penalized CE (``dpce``) is in this
family but lives in :mod:`medsegloss.losses.boundary`, with the other losses built on distance maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medsegloss._checks import check_probability, check_reduction, check_target, check_weight
from medsegloss._ops import (
    FunctionalLoss,
    at_least_float32,
    binary_focal_sums,
    cross_entropy_map,
    label_count,
    per_voxel_reduce,
    reduce,
    target_probabilities,
    use_fused,
    voxel_label_weight,
)
from medsegloss.losses._registry import register

__all__ = [
    "cross_entropy_loss", "weighted_cross_entropy_loss", "binary_cross_entropy_loss", "topk_loss",
    "topk_threshold_loss", "focal_loss", "inverse_frequency_weights",
    "CrossEntropyLoss", "WeightedCrossEntropyLoss", "BinaryCrossEntropyLoss", "TopKLoss", "TopKThresholdLoss",
    "FocalLoss",
]


def _valid_mask(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor | None:
    """``(N, *spatial)`` bool mask of counted voxels, or None when all count."""
    if ignore_index is None or target.is_floating_point():
        return None
    return target != ignore_index


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    r"""Cross-entropy, averaged over the voxels of each sample.

    .. math:: L = -\frac{1}{V}\sum_v \sum_c g_{v,c} \log p_{v,c}

    Softmax CE for ``C >= 2``; binary (sigmoid) CE for one-channel logits, as the reference
    experiment uses for its binary task. Voxels equal to ``ignore_index`` do not count.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> cross_entropy_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    target = check_target(target, logits, ignore_index)
    if reduction == "mean" and use_fused(logits, target, ignore_index):
        # every sample has V voxels, so the mean of per-sample means is the plain voxel mean:
        # one fused kernel with its own backward, no (N, *spatial) map
        logits = at_least_float32(logits)
        if logits.shape[1] == 1:  # checked labels are 0 / 1 (or soft): the foreground
            foreground = target[:, 0] if target.is_floating_point() else target
            return F.binary_cross_entropy_with_logits(logits[:, 0], foreground.to(logits.dtype))
        return F.cross_entropy(logits, target)
    return per_voxel_reduce(cross_entropy_map(logits, target, ignore_index), _valid_mask(target, ignore_index), reduction)


@torch.no_grad()
def inverse_frequency_weights(target: torch.Tensor, num_channels: int, ignore_index: int | None = None) -> torch.Tensor:
    r"""Balanced class weights of a (checked) target batch: :math:`w_c = V / (K\,n_c)`.

    ``n_c`` is the number of (counted) voxels of label ``c`` (the sum of its soft labels), ``V``
    their total and ``K`` the number of labels (``C``, or 2 for one-channel logits). Every present
    class then carries the same total weight; an absent class gets weight 0 (it has no voxels to
    weigh, and 0 keeps ``inf`` out of the sums).

    Shape:
        returns ``(K,)`` float32.
    """
    k = label_count(num_channels)
    if target.is_floating_point():
        if num_channels == 1:
            foreground = target.float().sum()
            counts = torch.stack([target[:, 0].numel() - foreground, foreground])
        else:
            counts = target.float().sum(dim=[0, *range(2, target.ndim)])
    else:
        labels = target if ignore_index is None else target[target != ignore_index]
        counts = torch.bincount(labels.reshape(-1), minlength=k)[:k].float()
    weight = counts.sum() / (k * counts)
    return torch.where(counts > 0, weight, torch.zeros_like(weight))


def _binary_weighted_cross_entropy(logits: torch.Tensor, foreground: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``−(w₁·y·log σ(x) + w₀·(1−y)·log σ(−x))`` per voxel for one-channel logits."""
    x = at_least_float32(logits)[:, 0]
    y = foreground.to(x.dtype)
    return -(weight[1] * y * F.logsigmoid(x) + weight[0] * (1 - y) * F.logsigmoid(-x))


def weighted_cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, *, weight="auto",
                                ignore_index: int | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Weighted cross-entropy (survey form, Ma et al., 2021), averaged over the voxels.

    .. math:: L = -\frac{1}{V}\sum_v \sum_c w_c\, g_{v,c} \log p_{v,c}

    ``weight``: one value per label (``C`` values; two, background and foreground, for one-channel
    logits), or ``"auto"`` for the inverse class frequency of the target batch
    (:func:`inverse_frequency_weights`). The sum is divided by the voxel count ``V``, not by
    ``Σ w_{g_v}`` as ``torch.nn.functional.cross_entropy`` does, so all-ones weights give CE exactly
    and the weights scale the loss as written.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> weighted_cross_entropy_loss(logits, torch.randint(0, 3, (2, 8, 8)), weight=[0.2, 1, 2]).backward()
    """
    check_reduction(reduction)
    target = check_target(target, logits, ignore_index)
    c, dtype = logits.shape[1], at_least_float32(logits).dtype
    if isinstance(weight, str):
        if weight != "auto":
            raise ValueError(f"weight must be 'auto' or one value per label, got {weight!r}")
        weight = inverse_frequency_weights(target, c, ignore_index).to(logits.device, dtype)
    else:
        weight = check_weight(weight, label_count(c), logits.device, dtype)
    valid = _valid_mask(target, ignore_index)
    if c > 1:
        values = cross_entropy_map(logits, target, ignore_index, weight)
    else:
        foreground = target[:, 0] if target.is_floating_point() else target == 1
        values = _binary_weighted_cross_entropy(logits, foreground, weight)
        if valid is not None:
            values = values * valid
    return per_voxel_reduce(values, valid, reduction)


def binary_cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, *, weight=None,
                              ignore_index: int | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Binary cross-entropy with a sigmoid per channel (one-vs-rest), averaged over channels
    and voxels.

    .. math:: L = -\frac{1}{CV}\sum_{v,c} w_c\,[g_{v,c}\log\sigma(x_{v,c}) + (1-g_{v,c})\log(1-\sigma(x_{v,c}))]

    For one-channel logits it is the usual binary CE. For ``C >= 2`` each channel is its own
    binary problem: the target is a float multi-label tensor (channels may overlap), or integer
    labels read as their one-hot. ``weight``: one value per channel.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    >>> binary_cross_entropy_loss(logits, torch.randint(0, 2, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    target = check_target(target, logits, ignore_index)
    logits = at_least_float32(logits)
    c = logits.shape[1]
    weight = check_weight(weight, c, logits.device, logits.dtype)
    channels, _ = target_probabilities(target, c, ignore_index, logits.dtype)
    values = F.binary_cross_entropy_with_logits(logits, channels, reduction="none")
    if weight is not None:
        values = values * weight.view(1, -1, *([1] * (logits.ndim - 2)))
    values = values.mean(1)
    valid = _valid_mask(target, ignore_index)
    if valid is not None:
        values = values * valid
    return per_voxel_reduce(values, valid, reduction)


def topk_loss(logits: torch.Tensor, target: torch.Tensor, *, k: float = 10.0, ignore_index: int | None = None,
              reduction: str = "mean") -> torch.Tensor:
    r"""TopK loss (Wu et al., 2016): the mean cross-entropy of the ``k`` % hardest voxels of each
    sample.

    .. math:: L = \frac{1}{|K|}\sum_{v \in K} -\log p_{v,t},\quad K = \text{the } \lceil kV/100 \rceil
              \text{ voxels of largest CE}

    ``k = 100`` is plain cross-entropy. Ignored voxels are not candidates (``V`` counts only the
    others); a sample with no counted voxel scores 0. The selection is piecewise constant, so the
    gradient flows to the selected voxels only.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> topk_loss(logits, torch.randint(0, 3, (2, 8, 8)), k=10).backward()
    """
    check_reduction(reduction)
    k = check_probability("k", k, 0.0, 100.0)
    if k == 0:
        raise ValueError("k must be a percentage in (0, 100], got 0")
    target = check_target(target, logits, ignore_index)
    n = logits.shape[0]
    values = cross_entropy_map(logits, target, ignore_index).reshape(n, -1)  # ignored voxels are 0
    valid = _valid_mask(target, ignore_index)
    if valid is None:
        keep = math.ceil(k * values.shape[1] / 100)
        per_sample = values.topk(keep, dim=1, sorted=False).values.mean(1)
    else:
        counted = valid.reshape(n, -1).sum(1)
        keep = torch.ceil(counted.double() * k / 100).long()
        top = values.topk(int(keep.max().clamp_min(1)), dim=1, sorted=True).values
        in_top = torch.arange(top.shape[1], device=top.device) < keep.unsqueeze(1)
        per_sample = (top * in_top).sum(1) / keep.clamp_min(1)
    return reduce(per_sample, reduction)


def topk_threshold_loss(logits: torch.Tensor, target: torch.Tensor, *, t: float = 0.7,
                        ignore_index: int | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""TopK loss with a probability threshold (Wu et al., 2016, online bootstrapping): the mean
    cross-entropy over the voxels whose true-class probability is below ``t``.

    .. math:: L = \frac{\sum_v [p_{v,t} < t]\,(-\log p_{v,t})}{\sum_v [p_{v,t} < t]}

    Easy voxels (``p_t ≥ t``) are dropped; a sample with none below ``t`` scores 0. ``t = 1``
    keeps every voxel that is not already perfect (plain CE up to those zero terms). For soft
    labels ``p_t = exp(−CE)``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> topk_threshold_loss(logits, torch.randint(0, 3, (2, 8, 8)), t=0.7).backward()
    """
    check_reduction(reduction)
    t = check_probability("t", t, 0.0, 1.0)
    target = check_target(target, logits, ignore_index)
    values = cross_entropy_map(logits, target, ignore_index)
    hard = values > -math.log(t) if t > 0 else torch.zeros_like(values, dtype=torch.bool)  # p_t < t
    valid = _valid_mask(target, ignore_index)
    if valid is not None:
        hard = hard & valid  # ignored voxels have CE 0; with t = 1 they must not count either
    return per_voxel_reduce(values * hard, hard, reduction)


def _focal_alpha(alpha, num_channels: int, device, dtype) -> torch.Tensor | None:
    """Per-label α: a sequence (one per label), or one number α = Lin et al.'s binary (1 − α, α)."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        if num_channels != 1:
            raise ValueError(f"alpha must be one value per class (C={num_channels}), got the single number {alpha}")
        alpha = (1.0 - float(alpha), float(alpha))
    return check_weight(alpha, label_count(num_channels), device, dtype)


def _soft_focal_map(logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha) -> torch.Tensor:
    """``−Σ_c α_c g_c (1 − p_c)^γ log p_c`` for soft labels. One-channel logits are the two-class
    softmax of ``(0, x)``, whose probabilities are ``(σ(−x), σ(x))``."""
    logits = at_least_float32(logits)
    if logits.shape[1] == 1:
        logits = torch.cat([torch.zeros_like(logits), logits], 1)
        target = torch.cat([1 - target, target], 1)
    log_p = torch.log_softmax(logits, dim=1)
    values = target.to(log_p.dtype) * log_p * (-torch.expm1(log_p)).pow(gamma)
    if alpha is not None:
        values = values * alpha.view(1, -1, *([1] * (logits.ndim - 2)))
    return -values.sum(1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0, alpha=None,
               ignore_index: int | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Focal loss (Lin et al., 2017), averaged over the voxels.

    .. math:: L = -\frac{1}{V}\sum_v \alpha_{t}\,(1 - p_{v,t})^{\gamma} \log p_{v,t}

    ``gamma`` down-weights easy voxels; ``alpha``: per-label weights (one per class; two,
    background and foreground, for one-channel logits, where one number α means ``(1 − α, α)``).
    ``gamma = 0`` without ``alpha`` is cross-entropy. Computed from the fused CE as
    ``(1 − e^{−CE})^γ · CE``, with ``1 − e^{−CE}`` by ``expm1`` (exact for confident voxels).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> focal_loss(logits, torch.randint(0, 3, (2, 8, 8)), gamma=2.0).backward()
    """
    check_reduction(reduction)
    gamma = check_probability("gamma", gamma, 0.0, float("inf"))
    target = check_target(target, logits, ignore_index)
    alpha = _focal_alpha(alpha, logits.shape[1], logits.device, at_least_float32(logits).dtype)
    if target.is_floating_point():
        return per_voxel_reduce(_soft_focal_map(logits, target, gamma, alpha), None, reduction)
    if logits.shape[1] == 1 and alpha is None and gamma >= 1 and use_fused(logits, target, ignore_index):
        # binary labels: one fused pass (the clamp below matters only for γ < 1)
        return reduce(binary_focal_sums(logits, target, gamma) / target[0].numel(), reduction)
    values = cross_entropy_map(logits, target, ignore_index)  # −log p_t; 0 where ignored
    if gamma != 0:
        focus = -torch.expm1(-values)  # 1 − p_t
        if gamma < 1:  # x^γ has an infinite slope at 0 for γ < 1: keep the gradient finite
            focus = focus.clamp_min(1e-12)
        values = values * focus.pow(gamma)
    if alpha is not None:
        values = values * voxel_label_weight(target, alpha, ignore_index)
    return per_voxel_reduce(values, _valid_mask(target, ignore_index), reduction)


@register("ce", family="distribution", paper="Ma et al., 2021 (survey); standard", function=cross_entropy_loss)
class CrossEntropyLoss(FunctionalLoss):
    """Cross-entropy −Σ g·log p (softmax; sigmoid/binary for one-channel logits)."""

    function = staticmethod(cross_entropy_loss)


@register("wce", family="distribution", paper="Ronneberger et al., 2015; Ma et al., 2021",
          function=weighted_cross_entropy_loss)
class WeightedCrossEntropyLoss(FunctionalLoss):
    """Weighted CE −Σ w_c·g·log p / V (weights given, or inverse class frequency: weight='auto')."""

    function = staticmethod(weighted_cross_entropy_loss)


@register("bce", family="distribution", paper="standard (one-vs-rest sigmoid)", function=binary_cross_entropy_loss)
class BinaryCrossEntropyLoss(FunctionalLoss):
    """Binary CE with a sigmoid per channel, −[g·log σ(x) + (1−g)·log(1−σ(x))]."""

    function = staticmethod(binary_cross_entropy_loss)


@register("topk", family="distribution", paper="Wu et al., 2016", function=topk_loss)
class TopKLoss(FunctionalLoss):
    """TopK: mean CE of the k % hardest voxels (k = 100 is CE)."""

    function = staticmethod(topk_loss)


@register("topk_threshold", family="distribution", paper="Wu et al., 2016", function=topk_threshold_loss)
class TopKThresholdLoss(FunctionalLoss):
    """TopK by threshold: mean CE over the voxels with true-class probability p_t < t."""

    function = staticmethod(topk_threshold_loss)


@register("focal", family="distribution", paper="Lin et al., 2017", function=focal_loss)
class FocalLoss(FunctionalLoss):
    """Focal loss −α_t·(1 − p_t)^γ·log p_t (γ = 0 without α is CE)."""

    function = staticmethod(focal_loss)
