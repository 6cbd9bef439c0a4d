"""The classic UNet (Ronneberger et al., 2015), 2-D or 3-D, with batch normalization.

Encoder: ``depth`` times (DoubleConv, 2x2 max-pool), channels doubling from ``base``; a
bottleneck DoubleConv; decoder: ``depth`` times (2x2 transposed conv halving the channels,
concatenation with the encoder's skip features, DoubleConv); a 1x1 conv to the output channels.
Convolutions are padded ("same"), so the output has the input's size: inputs whose size is not
a multiple of ``2**depth`` are zero-padded up to one and the output is cropped back.

With ``deep_supervision=True`` (nnU-Net's training scheme) each lower decoder level also gets a
1x1 conv head; in training mode the forward pass returns ``[full, 1/2, 1/4, ...]`` logits for
:func:`medsegloss.losses.deep_supervision`, in eval mode the full-resolution logits only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LAYERS = {  # dims -> (conv, transposed conv, max-pool, batch norm)
    2: (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d),
    3: (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.BatchNorm3d),
}


class DoubleConv(nn.Sequential):
    """(3x3 conv, batch norm, ReLU) twice; the conv has no bias because the norm re-centres."""

    def __init__(self, in_channels: int, out_channels: int, dims: int = 2):
        conv, _, _, norm = _LAYERS[dims]
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1, bias=False), norm(out_channels), nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=False), norm(out_channels), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """UNet of Ronneberger et al., 2015 ("U-Net: Convolutional Networks for Biomedical Image
    Segmentation"), with same-padding and batch normalization.

    Args:
        in_channels: image channels (1 for CT/MRI).
        num_classes: output channels: the number of classes for softmax, or 1 for a binary task
            with a sigmoid (the trainer's ``binary_as_one_channel``).
        base: channels of the first level (64 in the paper; 8-16 for CPU runs). Level ``i`` has
            ``base * 2**i`` channels.
        depth: number of down-sampling steps (4 in the paper).
        dims: 2 for images ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)``.
        deep_supervision: add a 1x1 conv head to each decoder level below full resolution
            (``depth - 1`` heads, at 1/2 ... 1/2**(depth-1)); training-mode forward then returns
            the list of ``depth`` logits, full resolution first. False builds exactly the plain
            network (same parameters, same initial weights for a given seed).

    Shape:
        input ``(N, in_channels, *spatial)``, any spatial size; output
        ``(N, num_classes, *spatial)`` raw logits. With deep supervision in training mode, a list
        whose ``i``-th entry is ``(N, num_classes, *ceil(spatial / 2**i))``: the voxels of the
        padded grid that cover the input.

    >>> net = UNet(1, 3, base=4, depth=2)
    >>> net(torch.randn(2, 1, 17, 30)).shape
    torch.Size([2, 3, 17, 30])
    """

    def __init__(self, in_channels: int, num_classes: int, base: int = 64, depth: int = 4, dims: int = 2,
                 deep_supervision: bool = False):
        super().__init__()
        if dims not in _LAYERS:
            raise ValueError(f"dims must be 2 (images) or 3 (volumes), got {dims!r}")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("base", base)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be an int >= 0, got {depth!r}")
        conv, up_conv, pool, _ = _LAYERS[dims]
        self.in_channels, self.num_classes, self.base, self.depth, self.dims = in_channels, num_classes, base, depth, dims
        widths = [base * 2**level for level in range(depth + 1)]
        self.pool = pool(2)
        self.down = nn.ModuleList([DoubleConv(in_channels, widths[0], dims)])
        self.down.extend(DoubleConv(widths[level - 1], widths[level], dims) for level in range(1, depth + 1))
        self.up = nn.ModuleList(up_conv(widths[level], widths[level - 1], 2, stride=2) for level in range(depth, 0, -1))
        self.up_convs = nn.ModuleList(DoubleConv(2 * widths[level - 1], widths[level - 1], dims)
                                      for level in range(depth, 0, -1))
        self.head = conv(widths[0], num_classes, 1)
        self.deep_supervision = bool(deep_supervision)
        if self.deep_supervision:
            # built last, so every other layer draws the same initial weights as without the heads
            self.deep_supervision_heads = nn.ModuleList(conv(widths[level], num_classes, 1)
                                                        for level in range(1, depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            layout = "(N, C, H, W)" if self.dims == 2 else "(N, C, D, H, W)"
            raise ValueError(f"UNet(dims={self.dims}, in_channels={self.in_channels}) expects input {layout} "
                             f"with C={self.in_channels}, got shape {tuple(x.shape)}")
        size = x.shape[2:]
        multiple = 2**self.depth
        # pad the end of each spatial axis up to a multiple of 2**depth so every pooling halves exactly
        padding = []
        for length in reversed(size):  # F.pad lists the last axis first
            padding += [0, -length % multiple]
        if any(padding):
            x = F.pad(x, padding)
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        supervise = self.deep_supervision and self.training
        lower = []  # logits of the decoder levels below full resolution, coarsest first
        for step, (up, block) in enumerate(zip(self.up, self.up_convs)):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
            scale = self.depth - 1 - step  # this level's resolution is 1 / 2**scale
            if supervise and scale > 0:
                lower.append(self.deep_supervision_heads[scale - 1](x))
        x = self.head(x)
        if any(padding):
            x = x[(..., *(slice(0, length) for length in size))]
        if not supervise:
            return x
        # crop each to the cells covering the input: ceil(length / 2**scale)
        return [x] + [logits[(..., *(slice(0, -(-length // 2**scale)) for length in size))]
                      for scale, logits in enumerate(reversed(lower), start=1)]
