"""Sliding-window inference: logits of an image larger than the patches a model was trained on.

The image is tiled by patches overlapping by ``overlap`` of their size (the last window of each
axis flush with the end), the model runs on batches of windows, and each voxel's logits are the
weighted mean of the windows that cover it:

    logits(v) = sum_w g(v - start_w) * model(window_w)(v - start_w) / sum_w g(v - start_w)

with ``g`` a Gaussian importance map centred on the patch (``sigma = patch / 8`` per axis, as
nnU-Net: a window's border, where its convolutions saw zero padding, counts less) or 1 everywhere
(``gaussian=False``: plain averaging). An image smaller than the patch along an axis is padded
with zeros (symmetrically) up to the patch and the padding cropped off the logits.
"""

from __future__ import annotations

import itertools
import math
import operator

import torch

SIGMA_FRACTION = 1.0 / 8.0


def gaussian_importance(patch_size, *, sigma_fraction: float = SIGMA_FRACTION, dtype=torch.float32,
                        device=None) -> torch.Tensor:
    """The separable Gaussian ``prod_i exp(-(x_i - c_i)^2 / (2 sigma_i^2))`` over the patch,
    ``c_i = (p_i - 1) / 2``, ``sigma_i = p_i * sigma_fraction``, scaled to a maximum of 1 and
    floored at its smallest positive value (so every voxel keeps a nonzero weight).

    Shape:
        ``patch_size`` (the patch's spatial shape).
    """
    weights = None
    for length in patch_size:
        x = torch.arange(length, dtype=torch.float64)
        sigma = max(length * sigma_fraction, 1e-6)
        axis = torch.exp(-((x - (length - 1) / 2) ** 2) / (2 * sigma**2))
        weights = axis if weights is None else weights[..., None] * axis
    weights = weights / weights.max()
    positive = weights[weights > 0]
    weights = weights.clamp_min(float(positive.min()))
    return weights.to(dtype=dtype, device=device)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis: the fewest windows whose steps are at most
    ``floor(patch * (1 - overlap))`` voxels (at least 1), evenly spread from 0 to ``size - patch`` (one window when the
    axis is no longer than the patch).

    >>> window_starts(10, 4, 0.5), window_starts(4, 4, 0.5), window_starts(9, 4, 0.0)
    ([0, 2, 4, 6], [0], [0, 2, 5])
    """
    if size <= patch:
        return [0]
    step = max(math.floor(patch * (1.0 - overlap) + 1e-9), 1)  # integer, so rounded steps never exceed it
    count = math.ceil((size - patch) / step) + 1
    return [round(i * (size - patch) / (count - 1)) for i in range(count)]


def _check(model, image, patch_size, overlap, batch_size) -> tuple[int, ...]:
    if not callable(model):
        raise TypeError(f"model must be callable (an nn.Module), got {type(model).__name__}")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor (N, C, *spatial), got {type(image).__name__}")
    if image.ndim not in (4, 5):
        raise ValueError(f"image must be (N, C, H, W) or (N, C, D, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a floating-point tensor, got dtype {image.dtype}")
    spatial = image.ndim - 2
    if isinstance(patch_size, int) and not isinstance(patch_size, bool):
        patch_size = (patch_size,) * spatial
    try:
        patch = tuple(operator.index(p) for p in patch_size)
    except TypeError:  # not a sequence, or a float / bool-free non-integer inside
        patch = ()
    if len(patch) != spatial or any(p < 1 for p in patch):
        raise ValueError(f"patch_size must be {spatial} positive ints for an image of shape {tuple(image.shape)}, "
                         f"got {patch_size!r}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return patch


def sliding_window_logits(model, image: torch.Tensor, patch_size, overlap: float = 0.5, gaussian: bool = True,
                          batch_size: int = 4) -> torch.Tensor:
    """Logits of ``model`` over ``image`` by overlapping windows (see the module docstring).

    Runs under ``torch.no_grad()``; put the model in ``eval()`` mode first (batch normalization in
    training mode would mix the statistics of the windows of a batch). Windows of every sample
    are batched together, ``batch_size`` at a time.

    Args:
        model: maps ``(B, C, *patch_size)`` to logits ``(B, K, *patch_size)``.
        image: the input, float.
        patch_size: the window's spatial shape (an int for a cube / square).
        overlap: fraction of a window shared with its neighbour along each axis, in [0, 1).
        gaussian: Gaussian importance weighting (``sigma = patch / 8``) or plain averaging.
        batch_size: windows per model call.

    Shape:
        image ``(N, C, H, W)`` or ``(N, C, D, H, W)``; returns ``(N, K, H, W)`` or
        ``(N, K, D, H, W)`` in the model's output dtype, on the image's device.

    >>> model = torch.nn.Conv2d(1, 3, 1)
    >>> sliding_window_logits(model, torch.randn(2, 1, 40, 30), (16, 16)).shape
    torch.Size([2, 3, 40, 30])
    """
    patch = _check(model, image, patch_size, overlap, batch_size)
    spatial = tuple(image.shape[2:])
    # pad short axes symmetrically up to the patch (F.pad lists the last axis first)
    before = [max(p - s, 0) // 2 for s, p in zip(spatial, patch)]
    after = [max(p - s, 0) - b for s, p, b in zip(spatial, patch, before)]
    padding = [amount for b, a in zip(reversed(before), reversed(after)) for amount in (b, a)]
    padded = torch.nn.functional.pad(image, padding) if any(padding) else image
    full = tuple(padded.shape[2:])
    starts = list(itertools.product(*(window_starts(s, p, overlap) for s, p in zip(full, patch))))
    jobs = [(n, start) for n in range(image.shape[0]) for start in starts]
    importance = (gaussian_importance(patch, device=image.device) if gaussian
                  else torch.ones(patch, device=image.device))
    logits = weight = None
    with torch.no_grad():
        for first in range(0, len(jobs), batch_size):
            chunk = jobs[first:first + batch_size]
            windows = torch.stack([padded[(n, slice(None)) + tuple(slice(s, s + p) for s, p in zip(start, patch))]
                                   for n, start in chunk])
            out = model(windows)
            if out.ndim != windows.ndim or tuple(out.shape[2:]) != patch or out.shape[0] != len(chunk):
                raise ValueError(f"model must map windows {tuple(windows.shape)} to logits (B, K, *{patch}), "
                                 f"got {tuple(out.shape)}")
            if logits is None:
                logits = torch.zeros((image.shape[0], out.shape[1], *full), dtype=out.dtype, device=image.device)
                weight = torch.zeros(full, dtype=out.dtype, device=image.device)
                importance = importance.to(out.dtype)
            for (n, start), window_logits in zip(chunk, out):
                region = tuple(slice(s, s + p) for s, p in zip(start, patch))
                logits[(n, slice(None)) + region] += window_logits.to(image.device) * importance
                if n == 0:  # every sample has the same windows, so the weights once
                    weight[region] += importance
    logits = logits / weight
    crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    return logits[(slice(None), slice(None)) + crop]
