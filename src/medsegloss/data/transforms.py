"""Resizing, intensity normalization, and the wrapper that attaches signed distance maps.

Resizing keeps the aspect ratio: each slice is padded to a square (images with their background
value, labels with 0), then scaled to ``size x size`` (images bilinear with antialiasing, labels
nearest neighbour), and the spacing grows by the same factor, so millimetre metrics stay right.
"""

from __future__ import annotations

import numpy as np
import torch

from medsegloss.data.base import Case


def pad_to_square(volume: np.ndarray, value: float) -> np.ndarray:
    """Pad ``(D, H, W)`` symmetrically to ``(D, S, S)``, ``S = max(H, W)``."""
    d, h, w = volume.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    if h == w:
        return volume
    out = np.full((d, side, side), value, dtype=volume.dtype)
    out[:, top:top + h, left:left + w] = volume
    return out


def resize_image(volume: np.ndarray, size: int) -> np.ndarray:
    """``(D, H, W)`` float image -> ``(D, size, size)`` float32: pad with the minimum, then
    bilinear (antialiased when shrinking)."""
    volume = pad_to_square(np.asarray(volume, np.float32), float(volume.min()) if volume.size else 0.0)
    if volume.shape[1] == size:
        return np.ascontiguousarray(volume)
    tensor = torch.from_numpy(np.ascontiguousarray(volume))[:, None]
    out = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False,
                                          antialias=volume.shape[1] > size)
    return out[:, 0].numpy()


def resize_label(volume: np.ndarray, size: int) -> np.ndarray:
    """``(D, H, W)`` labels -> ``(D, size, size)`` uint8: pad with 0, then nearest neighbour
    (pixel centres: source index ``floor((i + 0.5) * S / size)``)."""
    volume = pad_to_square(np.asarray(volume), 0)
    side = volume.shape[1]
    if side == size:
        return np.ascontiguousarray(volume, dtype=np.uint8)
    index = np.minimum(((np.arange(size) + 0.5) * side / size).astype(np.int64), side - 1)
    return np.ascontiguousarray(volume[:, index][:, :, index], dtype=np.uint8)


def resize_case(case_id: str, image: np.ndarray, label: np.ndarray, spacing, size: int | None,
                single: bool = False) -> Case:
    """A :class:`Case` with both volumes resized in-plane to ``size`` (``None`` keeps them) and
    the in-plane spacing scaled to match."""
    sz, sy, sx = (float(s) for s in spacing)
    if size is not None:
        size = int(size)
        if size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {size}")
        side = max(image.shape[1:])
        # padding keeps the voxel size; scaling side -> size multiplies it by side / size
        sy, sx = sy * side / size, sx * side / size
        image, label = resize_image(image, size), resize_label(label, size)
    return Case(case_id, np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label, np.uint8),
                (sz, sy, sx), single)


def normalize_percentile(volume: np.ndarray, low: float = 1.0, high: float = 99.0,
                         mask: np.ndarray | None = None) -> np.ndarray:
    """Clip to the ``[low, high]`` percentiles, then z-score (zero mean, unit std), both computed
    over ``mask`` (default: the whole volume). MRI has no absolute intensity scale, so each
    volume is normalized on its own."""
    values = volume[mask] if mask is not None and mask.any() else volume
    lo, hi = np.percentile(values, [low, high])
    clipped = np.clip(volume, lo, hi).astype(np.float32)
    inside = clipped[mask] if mask is not None and mask.any() else clipped
    std = float(inside.std())
    return (clipped - float(inside.mean())) / (std if std > 0 else 1.0)


def window(volume: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to ``[low, high]`` (e.g. a CT window in HU) and scale linearly to ``[-1, 1]``."""
    return ((np.clip(volume, low, high) - low) * (2.0 / (high - low)) - 1.0).astype(np.float32)


class WithDistanceMaps(torch.utils.data.Dataset):
    """Adds ``"dist"``: float32 ``(C, *spatial)`` signed distance maps of the item's label, for
    the boundary losses (Kervadec et al., 2019: computed once per sample in the loader).

    Maps come from :func:`medsegloss.distance.signed_distance_map`, in the boundary-loss paper's
    convention (outside the distance to the class, inside one minus the distance to the
    background; zeros for an absent class), the one every distance-based loss takes as ``dist=``
    (``hd``, ``boundary_weighted`` and ``dpce`` recover the unsigned distance from it), one per class (``num_classes=1``: the foreground,
    label 1, only, to match one-channel logits). They are computed on first access and cached
    per item; with DataLoader workers, use ``persistent_workers=True`` or call
    :meth:`precompute` first, so each map is computed once per run.

    Args:
        dataset: a medsegloss dataset (items with ``"label"`` and ``"spacing"``).
        num_classes: channels of the map (default: ``dataset.num_classes``).
        spacing: ``None`` = distances in pixels (what a loss computes by itself when given no
            ``dist``); ``"item"`` = in the item's physical units (mm).
    """

    def __init__(self, dataset, num_classes: int | None = None, spacing: str | None = None):
        if spacing not in (None, "item"):
            raise ValueError(f"spacing must be None (pixels) or 'item' (the item's spacing), got {spacing!r}")
        self.dataset = dataset
        self.num_classes = int(num_classes if num_classes is not None else dataset.num_classes)
        self.spacing = spacing
        self._maps: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # num_classes, class_names, cases, split... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _map(self, index: int, item: dict) -> torch.Tensor:
        if index not in self._maps:
            from medsegloss.distance import signed_distance_map

            spacing = item["spacing"] if self.spacing == "item" else None
            self._maps[index] = signed_distance_map(item["label"][None], self.num_classes, spacing)[0]
        return self._maps[index]

    def __getitem__(self, index: int) -> dict:
        index = index + len(self) if index < 0 else index
        item = dict(self.dataset[index])
        item["dist"] = self._map(index, item)
        return item

    def precompute(self) -> WithDistanceMaps:
        """Compute every item's map now (e.g. before forking DataLoader workers)."""
        for index in range(len(self)):
            self._map(index, self.dataset[index])
        return self
