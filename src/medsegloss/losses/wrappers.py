"""Wrappers that change *where* a loss is computed, for every loss of the catalogue at once:
a region-of-interest mask (:class:`MaskedLoss`) and deep supervision (:class:`DeepSupervisionLoss`).

>>> import torch
>>> from medsegloss import losses
>>> logits = torch.randn(2, 3, 16, 16, requires_grad=True)
>>> target = torch.randint(0, 3, (2, 16, 16))
>>> roi = torch.zeros(2, 16, 16, dtype=torch.bool); roi[:, 4:12, 4:12] = True
>>> losses.masked(losses.build("ce + dice"))(logits, target, roi).backward()
>>> outputs = [logits, torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]  # full, 1/2, 1/4
>>> float(losses.deep_supervision(losses.get("dice_ce"))(outputs, target).detach()) > 0
True

How the mask works, and why not otherwise. Masked-out voxels are relabelled to the wrapped
loss's ``ignore_index`` (the loss is rebuilt with ``ignore_index=-100`` when it had none), so the
loss itself leaves them out of every sum and every count. That is exact: the masked loss equals
the loss computed on only the voxels inside the mask, for every loss whose ``ignore_index``
excludes voxels (every distribution and region loss, and the sums of them), tested against that
reference. MONAI's ``MaskedLoss`` instead multiplies the *probabilities* and the target by the
mask; that is exact only for the soft-count (Dice-like) losses, and it cannot be done from
outside here, where every loss takes raw logits and applies softmax itself (a softmax cannot
give an all-zero voxel). Losses without ``ignore_index`` (the boundary family, whose distance maps
are computed on the whole image, and the hybrids ``combo``, ``ell``, ``bce_iou_ssim``, ``lesion``,
whose terms or windows have no notion of an excluded voxel) are refused with an error naming the
term, rather than being silently wrong.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from medsegloss._ops import FunctionalLoss
from medsegloss.losses.compound.weighted_sum import WeightedSum

__all__ = ["MaskedLoss", "masked", "DeepSupervisionLoss", "deep_supervision", "deep_supervision_weights",
           "downsample_nearest"]

MASK_IGNORE_INDEX = -100  # the label masked-out voxels get when the wrapped loss had no ignore_index


# ---------------------------------------------------------------------------------------------
# Region-of-interest mask


def _leaves(loss: nn.Module) -> list[tuple[str, nn.Module]]:
    """The single losses inside ``loss`` (the terms of a WeightedSum, recursively), named."""
    if isinstance(loss, WeightedSum):
        found = []
        for name, term in zip(loss.names, loss.terms):
            found += [(name if inner == "" else f"{name}.{inner}", module) for inner, module in _leaves(term)]
        return found
    return [("", loss)]


def _takes_ignore_index(loss: nn.Module) -> bool:
    return isinstance(loss, FunctionalLoss) and "ignore_index" in inspect.signature(type(loss)).parameters


def _mask_ignore_index(loss: nn.Module) -> int:
    """The label that makes ``loss`` skip a voxel; refuses losses where no label can."""
    leaves = _leaves(loss)
    for name, leaf in leaves:
        if getattr(leaf, "needs_distance", False):
            raise ValueError(
                f"masked(): {type(leaf).__name__}{f' (term {name!r})' if name else ''} uses signed distance maps "
                "of the whole image, so restricting it to a mask is not defined; mask a loss without distance maps"
            )
        if not _takes_ignore_index(leaf):
            raise ValueError(
                f"masked(): {type(leaf).__name__}{f' (term {name!r})' if name else ''} has no ignore_index option, so "
                "a mask cannot exclude voxels from it exactly (its formula has no notion of a skipped voxel); "
                "masks work with the distribution and region losses and the sums of them"
            )
    existing = {leaf.options["ignore_index"] for _, leaf in leaves if leaf.options.get("ignore_index") is not None}
    if len(existing) > 1:
        raise ValueError(f"masked(): the terms of the loss ignore different labels {sorted(existing)}; give them one")
    return existing.pop() if existing else MASK_IGNORE_INDEX


def _with_ignore_index(loss: nn.Module, value: int) -> nn.Module:
    """``loss`` with ``ignore_index=value`` wherever it had none (a new module; ``loss`` is unchanged)."""
    if isinstance(loss, WeightedSum):
        joint = loss.joint
        if isinstance(joint, partial) and "ignore_index" in joint.keywords:
            joint = partial(joint.func, *joint.args, **{**joint.keywords, "ignore_index": value})
        elif joint is not None:
            joint = None  # a joint pass must equal the terms one by one, so dropping it is exact
        rebuilt = WeightedSum([(name, loss.weights[name], _with_ignore_index(term, value))
                               for name, term in zip(loss.names, loss.terms)], joint=joint)
        rebuilt.weights = loss.weights  # shared: a weight schedule on the original still applies
        rebuilt.schedule = loss.schedule
        return rebuilt
    if loss.options.get("ignore_index") == value:
        return loss
    return type(loss)(**{**loss.options, "ignore_index": value})


def _check_mask(mask, logits: torch.Tensor) -> torch.Tensor:
    """A mask ``(N, 1, *spatial)`` or ``(N, *spatial)`` of 0/1 or bool -> bool ``(N, *spatial)``."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    n, _, *spatial = logits.shape
    if mask.ndim == logits.ndim and mask.shape[1] == 1:
        mask = mask[:, 0]
    if list(mask.shape) != [n, *spatial]:
        raise ValueError(f"mask must have shape (N, *spatial) = {(n, *spatial)} or (N, 1, *spatial) to match "
                         f"logits {tuple(logits.shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_complex() or ((mask != 0) & (mask != 1)).any():
            raise ValueError(f"mask must be bool or hold only 0 and 1, got dtype {mask.dtype} with other values")
        mask = mask != 0
    return mask


def _labels_of(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Integer labels ``(N, *spatial)`` for a target; a float target must be hard one-hot (or 0/1
    for one-channel logits) so that it is the same loss as its labels."""
    if not target.is_floating_point():
        if target.ndim == logits.ndim and target.shape[1] == 1:
            return target[:, 0]
        return target
    binary = ((target == 0) | (target == 1)).all()
    if logits.shape[1] == 1 and target.ndim == logits.ndim and target.shape[1] == 1 and binary:
        return target[:, 0].long()
    if target.ndim == logits.ndim and target.shape[1] == logits.shape[1] and binary and (target.sum(1) == 1).all():
        return target.argmax(1)
    raise ValueError(
        f"masked(): a float target {tuple(target.shape)} must be hard one-hot (0/1, one class per voxel) so the "
        "mask can relabel voxels as ignored; soft or multi-hot targets cannot be masked exactly that way"
    )


class MaskedLoss(nn.Module):
    """``loss`` computed on the voxels inside a region-of-interest mask only.

    ``forward(logits, target, mask)``: voxels where ``mask`` is 0/False count for nothing (they
    are relabelled to the loss's ``ignore_index``; see the module docstring for why that is exact).
    The wrapped loss is rebuilt with ``ignore_index=-100`` when it had none (``self.loss``; a
    WeightedSum keeps sharing its ``weights`` dict with the original), or keeps its own
    ``ignore_index``, whose voxels stay ignored. A sample whose mask is empty scores what the
    loss gives a sample with every voxel ignored (0 for cross-entropy and Dice).

    Losses without ``ignore_index`` or with distance maps raise ``ValueError`` at construction;
    float targets must be hard one-hot (soft labels raise ``ValueError``).

    Shape:
        logits ``(N, C, *spatial)``; target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        one-hot floats; mask ``(N, *spatial)`` or ``(N, 1, *spatial)``, bool or 0/1; returns what
        the wrapped loss returns.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise TypeError(f"masked() wraps a loss module, got {type(loss).__name__}")
        self.ignore_index = _mask_ignore_index(loss)
        self.loss = _with_ignore_index(loss, self.ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from medsegloss._checks import check_logits

        check_logits(logits)
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
        mask = _check_mask(mask, logits).to(target.device)
        labels = _labels_of(target, logits).long()  # uint8 / bool labels cannot hold ignore_index -100
        return self.loss(logits, torch.where(mask, labels, torch.full_like(labels, self.ignore_index)))

    @property
    def last_values(self) -> dict[str, float]:
        """The wrapped sum's term values (empty for a single loss)."""
        return getattr(self.loss, "last_values", {})


def masked(loss: nn.Module) -> MaskedLoss:
    """``loss`` restricted to a region-of-interest mask: ``masked(loss)(logits, target, mask)``."""
    return MaskedLoss(loss)


# ---------------------------------------------------------------------------------------------
# Deep supervision


def deep_supervision_weights(count: int, zero_lowest: bool = False) -> list[float]:
    """nnU-Net's output weights ``1, 1/2, 1/4, ...`` normalised to sum 1 (full resolution first).

    ``zero_lowest=True`` also sets the lowest resolution's weight to 0 before normalising, as
    nnU-Net v2 does (its coarsest output is a few voxels wide); needs ``count >= 2``.

    >>> deep_supervision_weights(3)
    [0.5714285714285714, 0.2857142857142857, 0.14285714285714285]
    >>> deep_supervision_weights(3, zero_lowest=True)
    [0.6666666666666666, 0.3333333333333333, 0.0]
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    if zero_lowest and count < 2:
        raise ValueError("zero_lowest needs at least two outputs (one output cannot have weight 0)")
    weights = [0.5**index for index in range(count)]
    if zero_lowest:
        weights[-1] = 0.0
    total = sum(weights)
    return [weight / total for weight in weights]


def downsample_nearest(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour down-sampling of the last ``len(size)`` axes to ``size``, any dtype.

    Where ``L`` is an integer multiple ``f`` of ``size`` (or ``size = ceil(L / f)``, a cropped
    network output), voxel ``j`` takes input voxel ``j·f``: the first voxel of each pooling cell.
    Otherwise it takes voxel ``floor(j·L / size)``, as ``F.interpolate(mode="nearest")``. Labels
    (and ``ignore_index``) stay labels, one-hot stays one-hot.

    Shape:
        tensor ``(..., *spatial)``; returns ``(..., *size)``.
    """
    size = tuple(int(length) for length in size)
    spatial = tuple(tensor.shape[tensor.ndim - len(size):])
    for axis, (length, new) in enumerate(zip(spatial, size)):
        if new == length:
            continue
        if not 0 < new < length:
            raise ValueError(f"cannot down-sample spatial shape {spatial} to {size}: every new length must be "
                             "between 1 and the old one")
        factor = math.ceil(length / new)
        if math.ceil(length / factor) == new:
            index = torch.arange(new, device=tensor.device) * factor
        else:
            index = torch.div(torch.arange(new, device=tensor.device) * length, new, rounding_mode="floor")
        tensor = tensor.index_select(tensor.ndim - len(size) + axis, index)
    return tensor


class DeepSupervisionLoss(nn.Module):
    r"""``Σ_i w_i · loss(outputs[i], target↓_i)`` over network outputs at decreasing resolution.

    Args:
        loss: any loss of the contract (a :class:`MaskedLoss` too).
        weights: one non-negative weight per output, normalised to sum 1; ``None`` gives
            ``1, 1/2, 1/4, ...`` normalised (:func:`deep_supervision_weights`). Unlike nnU-Net v2,
            the lowest resolution keeps its weight by default (a head that is built should be
            trained); pass ``deep_supervision_weights(k, zero_lowest=True)`` for nnU-Net's rule.
            Outputs of weight 0 are not computed.

    The target (and any further per-voxel tensors, e.g. a :class:`MaskedLoss`'s mask) is down-
    sampled to each output's size by nearest neighbour (:func:`downsample_nearest`), for one-hot
    float targets too: averaging would turn boundaries into soft labels (a different loss) and
    cannot average an ``ignore_index``; nearest keeps every voxel a real label, and gives the
    same target whether given as labels or one-hot. nnU-Net down-samples its targets the same way.

    Losses with distance maps (``needs_distance``) are refused: a signed distance map cannot be
    down-sampled into the map of the down-sampled target.

    ``outputs`` may also be a single tensor: then it is the plain loss. ``last_values`` holds each
    output's last (unweighted) loss value.

    Shape:
        outputs: a list of ``(N, C, *spatial_i)`` logits, the first at the target's resolution;
        target ``(N, *spatial)`` labels, or ``(N, C, *spatial)`` floats; returns a scalar (or what
        the loss returns).
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None):
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise TypeError(f"deep_supervision() wraps a loss module, got {type(loss).__name__}")
        if getattr(loss, "needs_distance", False) or any(getattr(leaf, "needs_distance", False)
                                                         for _, leaf in _leaves(getattr(loss, "loss", loss))):
            raise ValueError(
                f"deep_supervision(): {type(loss).__name__} uses signed distance maps, which cannot be "
                "down-sampled exactly to the lower outputs' resolution; train it without deep supervision"
            )
        if weights is not None:
            weights = [float(weight) for weight in weights]
            if not weights or any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"weights must be finite, non-negative and not all 0, got {weights}")
            weights = [weight / sum(weights) for weight in weights]
        self.loss = loss
        self.weights = weights
        self._last: dict[str, torch.Tensor] = {}

    def forward(self, outputs, target: torch.Tensor, *per_voxel: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        if not isinstance(outputs, (list, tuple)) or not outputs or \
                not all(isinstance(output, torch.Tensor) for output in outputs):
            raise TypeError("outputs must be a tensor or a non-empty list/tuple of logits tensors, got "
                            f"{type(outputs).__name__}")
        weights = self.weights or deep_supervision_weights(len(outputs))
        if len(weights) != len(outputs):
            raise ValueError(f"deep supervision has {len(weights)} weights but the network gave {len(outputs)} outputs")
        spatial = outputs[0].ndim - 2
        if spatial < 1 or tuple(target.shape[target.ndim - spatial:]) != tuple(outputs[0].shape[2:]):
            raise ValueError(f"the first output {tuple(outputs[0].shape)} must have the target's resolution, "
                             f"got target {tuple(target.shape)}")
        total, self._last = 0.0, {}
        for index, (output, weight) in enumerate(zip(outputs, weights)):
            if weight == 0:
                continue
            size = output.shape[2:]
            value = self.loss(output, downsample_nearest(target, size),
                              *(downsample_nearest(extra, size) for extra in per_voxel))
            self._last[f"output{index}"] = value.detach()
            total = total + weight * value
        return total

    @property
    def last_values(self) -> dict[str, float]:
        """Each computed output's last unweighted loss, ``{"output0": ..., "output1": ...}`` (outputs of
        weight 0 are absent)."""
        return {name: float(value.float().mean()) for name, value in self._last.items()}

    def extra_repr(self) -> str:
        return "weights=" + ("1, 1/2, 1/4, ... normalised" if self.weights is None
                             else ", ".join(f"{weight:.4g}" for weight in self.weights))


def deep_supervision(loss: nn.Module, weights: Sequence[float] | None = None) -> DeepSupervisionLoss:
    """``loss`` over a list of outputs at decreasing resolution (:class:`DeepSupervisionLoss`)."""
    return DeepSupervisionLoss(loss, weights)
