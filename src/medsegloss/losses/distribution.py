"""Distribution-based losses: per-voxel likelihood terms (cross-entropy and its variants).

Each is a per-voxel map ``(N, *spatial)`` averaged over the counted voxels of each sample, so
``reduction="none"`` gives one value per sample. All start from the per-voxel cross-entropy
``−log p_t`` of :func:`medsegloss._ops.cross_entropy_map` (one fused softmax), whose ``exp(−ce)``
is the true-class probability ``p_t``: focal and TopK-threshold need no second softmax.
One-channel logits are binary (sigmoid); their labels are 0 (background) and 1 (foreground),
so per-label weights have two values there. The distance-penalized CE (``dpce``) takes the
target's distance maps (``dist=``) like the boundary losses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medsegloss._checks import check_distance_map, check_in_range, check_reduction, check_target, check_weight
from medsegloss._ops import (
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
from medsegloss.distance import boundary_distance, class_masks
from medsegloss.losses._registry import exports, loss_class



def _valid_mask(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor | None:
    """``(N, *spatial)`` bool mask of counted voxels, or None when all count."""
    if ignore_index is None or target.is_floating_point():
        return None
    return target != ignore_index


def smoothed_target(target: torch.Tensor, num_channels: int, label_smoothing: float) -> torch.Tensor:
    r"""A checked float target mixed with the uniform distribution over the ``K`` labels:
    ``(1 − ε)·g + ε/K`` (``K = C``; 2 for one-channel logits, whose channel is the foreground
    probability). Shape as the target."""
    return target * (1.0 - label_smoothing) + label_smoothing / label_count(num_channels)


def _smoothed_cross_entropy_map(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None,
                                label_smoothing: float) -> torch.Tensor:
    """Per-voxel label-smoothed CE ``(N, *spatial)``; ignored voxels 0."""
    logits = at_least_float32(logits)
    c = logits.shape[1]
    if c > 1 and not target.is_floating_point():  # torch's definition: (1 − ε)·CE + ε·mean_c(−log p_c)
        return F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing,
                               ignore_index=-100 if ignore_index is None else ignore_index)
    if target.is_floating_point():
        soft = target.to(logits.dtype)
    else:  # binary labels -> foreground probability; ignored voxels masked below
        soft = (target == 1).to(logits.dtype).unsqueeze(1)
    values = cross_entropy_map(logits, smoothed_target(soft, c, label_smoothing))
    valid = _valid_mask(target, ignore_index)
    return values if valid is None else values * valid


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0,
                       ignore_index: int | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Cross-entropy, averaged over the voxels of each sample.

    .. math:: L = -\frac{1}{V}\sum_v \sum_c \tilde g_{v,c} \log p_{v,c},\qquad
              \tilde g = (1 - \varepsilon)\, g + \varepsilon / K

    Softmax CE for ``C >= 2``; binary (sigmoid) CE for one-channel logits, as the reference
    experiment uses for its binary task. Voxels equal to ``ignore_index`` do not count.
    ``label_smoothing`` ``ε`` mixes the target with the uniform distribution over the ``K``
    labels (``K = C``, or 2 for one channel: foreground ``1 − ε/2``, background ``ε/2``):
    ``torch.nn.functional.cross_entropy(label_smoothing=ε)`` for labels, and SMP's
    ``SoftCrossEntropyLoss(smooth_factor=ε)``; ``ε = 0`` is plain CE.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> cross_entropy_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    label_smoothing = check_in_range("label_smoothing", label_smoothing)
    target = check_target(target, logits, ignore_index)
    if reduction == "mean" and use_fused(logits, target, ignore_index):
        # every sample has V voxels, so the mean of per-sample means is the plain voxel mean:
        # one fused kernel with its own backward, no (N, *spatial) map
        logits = at_least_float32(logits)
        if logits.shape[1] == 1:  # checked labels are 0 / 1 (or soft): the foreground
            foreground = (target[:, 0] if target.is_floating_point() else target).to(logits.dtype)
            if label_smoothing:
                foreground = smoothed_target(foreground, 1, label_smoothing)
            return F.binary_cross_entropy_with_logits(logits[:, 0], foreground)
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    if label_smoothing:
        values = _smoothed_cross_entropy_map(logits, target, ignore_index, label_smoothing)
    else:
        values = cross_entropy_map(logits, target, ignore_index)
    return per_voxel_reduce(values, _valid_mask(target, ignore_index), reduction)


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
    k = check_in_range("k", k, 0.0, 100.0)
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
    t = check_in_range("t", t, 0.0, 1.0)
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
    gamma = check_in_range("gamma", gamma, 0.0, float("inf"))
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


CrossEntropyLoss = loss_class(
    "CrossEntropyLoss", cross_entropy_loss, "ce", family="distribution", paper="Ma et al., 2021 (survey); standard",
    formula="Cross-entropy −Σ g·log p (softmax; sigmoid/binary for one-channel logits; label_smoothing ε: g → (1 − ε)g + ε/K)")


WeightedCrossEntropyLoss = loss_class(
    "WeightedCrossEntropyLoss", weighted_cross_entropy_loss, "wce", family="distribution", paper="Ronneberger et al., 2015; Ma et al., 2021",
    formula="Weighted CE −Σ w_c·g·log p / V (weights given, or inverse class frequency: weight='auto')")


BinaryCrossEntropyLoss = loss_class(
    "BinaryCrossEntropyLoss", binary_cross_entropy_loss, "bce", family="distribution", paper="standard (one-vs-rest sigmoid)",
    formula="Binary CE with a sigmoid per channel, −[g·log σ(x) + (1−g)·log(1−σ(x))]")


TopKLoss = loss_class(
    "TopKLoss", topk_loss, "topk", family="distribution", paper="Wu et al., 2016",
    formula="TopK: mean CE of the k % hardest voxels (k = 100 is CE)")


TopKThresholdLoss = loss_class(
    "TopKThresholdLoss", topk_threshold_loss, "topk_threshold", family="distribution", paper="Wu et al., 2016",
    formula="TopK by threshold: mean CE over the voxels with true-class probability p_t < t")


FocalLoss = loss_class(
    "FocalLoss", focal_loss, "focal", family="distribution", paper="Lin et al., 2017",
    formula="Focal loss −α_t·(1 − p_t)^γ·log p_t (γ = 0 without α is CE)", peers={"monai": "FocalLoss (ours = C ×)"})


# ---------------------------------------------------------------------------------------------
# Distance-penalized CE: weighted by the target's distance maps, like the boundary losses.


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


DistancePenalizedCrossEntropyLoss = loss_class(
    "DistancePenalizedCrossEntropyLoss", distance_penalized_cross_entropy_loss, "dpce", family="distribution", paper="Caliva et al., 2019", needs_distance=True,
    formula="Distance-penalized CE (1 + D)·(−log p_t), D = 1 at the target's boundaries, 0 farthest away")


__all__ = exports(__name__, ["inverse_frequency_weights", "smoothed_target"])
