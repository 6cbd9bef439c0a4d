"""Distribution-based losses: per-voxel likelihood terms (cross-entropy and its variants)."""

from __future__ import annotations

import torch
from torch import nn

from medsegloss._checks import check_reduction, check_target, check_weight
from medsegloss._ops import cross_entropy_map, per_voxel_reduce
from medsegloss.losses._registry import register

__all__ = ["cross_entropy_loss", "CrossEntropyLoss"]


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
    valid = None if ignore_index is None or target.is_floating_point() else target != ignore_index
    return per_voxel_reduce(cross_entropy_map(logits, target, ignore_index), valid, reduction)


@register("ce", family="distribution", paper="Ma et al., 2021 (survey); standard", function=cross_entropy_loss)
class CrossEntropyLoss(nn.Module):
    """Cross-entropy (softmax; sigmoid/binary for one-channel logits)."""

    def __init__(self, *, ignore_index=None, reduction="mean"):
        super().__init__()
        self.ignore_index, self.reduction = ignore_index, check_reduction(reduction)

    def forward(self, logits, target):
        return cross_entropy_loss(logits, target, ignore_index=self.ignore_index, reduction=self.reduction)
