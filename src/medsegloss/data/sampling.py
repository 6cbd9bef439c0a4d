"""Training samples as a pure function of ``(seed, global sample index)``: patches with
foreground oversampling and seeded augmentation.

A training run is a stream of samples. Step ``s`` of a run with ``B`` samples per step (per
process) reads the global sample indices ``s * B ... s * B + B - 1`` (:func:`sample_indices`;
under DDP with ``W`` processes, rank ``r`` reads its ``B`` of the ``B * W`` indices of the step).
:class:`PatchSampler` maps an index ``i`` to a sample that depends on ``(seed, i)`` and the
dataset only: no global random state, no epoch counter, no worker id. So

- every loss trained with one seed sees the same cases, patches, augmentations and order;
- a run resumed at step ``s`` continues the stream exactly where it stopped;
- DataLoader workers, other processes and other machines produce the same samples.

The rule for one sample ``i`` (two independent generators: NumPy's PCG64 seeded with
``SeedSequence([seed, i, 0])`` for the choice of case and patch, ``[seed, i, 1]`` for the
augmentation, so switching augmentation off leaves every patch where it was):

1. **Foreground oversampling** (nnU-Net's ``oversample_foreground_percent``, made exact): sample
   ``i`` is a *foreground sample* when ``floor((i + 1) * f) > floor(i * f)``, ``f`` the
   ``foreground_fraction`` (taken as the nearest fraction ``p / q`` with ``q <= 10**6``). Any
   ``n`` consecutive samples hold ``floor(n f)`` or ``ceil(n f)`` foreground samples, hence a
   batch of ``B`` holds ``floor(B f)`` or ``ceil(B f)``, and a run of ``S`` steps exactly
   ``floor(S B f)`` from index 0. (nnU-Net forces the last ``B - round(B (1 - f))`` samples of
   every batch, which for ``B = 2`` and ``f = 0.33`` is 50 %, not 33 %.)
2. **Case**: a foreground sample draws its item uniformly among the items that contain
   foreground, then a foreground class uniformly among the classes present in that item, then a
   voxel uniformly among that class's stored locations (at most ``max_locations`` per item and
   class, an evenly spaced subset in raster order, computed once when the sampler is built), and
   centres the patch on it: ``start = voxel - patch // 2``, shifted to lie inside the item. Any
   other sample (or a foreground sample when no item has foreground) draws its item uniformly
   and the patch start uniformly in ``[0, size - patch]`` per axis.
3. **Padding**: along an axis where the item is smaller than the patch, the item is centred in
   the patch and the rest filled with ``image_pad_value`` (0: the mean of a z-scored image) and
   ``label_pad_value`` (0, background; an ``ignore_index`` where the loss supports one).
4. **Augmentation** (``augment=True``): each spatial axis flipped with probability 1/2; then a
   rotation by ``k * 90`` degrees in the (H, W) plane, ``k`` uniform in {0, 1, 2, 3}, applied only
   when the patch is square in (H, W); then, per image channel, ``image * a + b`` with ``a ~
   U(0.9, 1.1)`` and ``b ~ U(-0.1, 0.1)``. Flips and rotations permute voxels, and the same
   permutation is applied to the image, the label and ``dist``; an odd rotation swaps the in-plane
   entries of ``"spacing"``.
5. **Distance maps**: ``"dist"`` is always the signed distance map of the *returned* label (the
   definition the boundary losses compute themselves from the target, in pixels). A crop changes
   distances near its border, so a cropped sample's map is computed after cropping and
   augmentation (``distance_classes=C``). For whole items (``patch_size=None``) a map cached by
   :class:`~medsegloss.data.WithDistanceMaps` is flipped and rotated along instead, which is
   exact: Euclidean distances on the voxel grid are unchanged by flips and 90-degree rotations.
   A source with ``"dist"`` and a patch size is refused (its maps would be of the whole item).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

__all__ = ["PatchSampler", "StepBatchSampler", "sample_indices", "is_foreground_sample"]

PATCH_STREAM, AUGMENT_STREAM = 0, 1  # the two generators of one sample (see the module docstring)


def _as_fraction(foreground_fraction) -> Fraction:
    if isinstance(foreground_fraction, bool) or not isinstance(foreground_fraction, (int, float, Fraction)) \
            or not 0 <= foreground_fraction <= 1:
        raise ValueError(f"foreground_fraction must be a number in [0, 1], got {foreground_fraction!r}")
    # exact integer arithmetic below: 1/3 as a float would put floor(3 * 0.333...) at 0, not 1
    return Fraction(foreground_fraction).limit_denominator(10**6)


def _check_index(index, name: str = "index") -> int:
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"{name} must be an int >= 0 (a global sample index), got {index!r}")
    return int(index)


def is_foreground_sample(index: int, foreground_fraction: float) -> bool:
    """Whether global sample ``index`` is a foreground sample: ``floor((i+1) f) > floor(i f)``.

    >>> [is_foreground_sample(i, 1 / 3) for i in range(6)]
    [False, False, True, False, False, True]
    """
    index, fraction = _check_index(index), _as_fraction(foreground_fraction)
    p, q = fraction.numerator, fraction.denominator
    return (index + 1) * p // q > index * p // q


def sample_indices(step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> range:
    """The global sample indices of optimizer step ``step`` (0-based) on process ``rank``.

    A step reads ``batch_size * world_size`` consecutive indices; rank ``r`` takes the ``r``-th
    block of ``batch_size``. One process reads ``step * B ... step * B + B - 1``.

    >>> list(sample_indices(3, 4)), list(sample_indices(3, 4, rank=1, world_size=2))
    ([12, 13, 14, 15], [28, 29, 30, 31])
    """
    step = _check_index(step, "step")
    for name, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1), ("rank", rank, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if rank >= world_size:
        raise ValueError(f"rank must be < world_size, got rank {rank} of world_size {world_size}")
    start = (step * world_size + rank) * batch_size
    return range(start, start + batch_size)


class StepBatchSampler(torch.utils.data.Sampler):
    """A DataLoader ``batch_sampler`` yielding :func:`sample_indices` of steps
    ``start_step ... total_steps - 1``: ``DataLoader(PatchSampler(...), batch_sampler=...)``.
    Resuming at step ``s`` is ``start_step=s``."""

    def __init__(self, batch_size: int, total_steps: int, start_step: int = 0, rank: int = 0, world_size: int = 1):
        sample_indices(_check_index(start_step, "start_step"), batch_size, rank, world_size)  # validates
        self.total_steps = _check_index(total_steps, "total_steps")
        self.batch_size, self.start_step, self.rank, self.world_size = batch_size, start_step, rank, world_size

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            yield list(sample_indices(step, self.batch_size, self.rank, self.world_size))

    def __len__(self) -> int:
        return max(self.total_steps - self.start_step, 0)


# ---------------------------------------------------------------- array helpers
def crop_or_pad(array: np.ndarray, start, size, value) -> np.ndarray:
    """The window ``[start, start + size)`` of the trailing ``len(size)`` axes of ``array``; the
    part of the window outside the array is filled with ``value``. Always a new array."""
    lead = array.ndim - len(size)
    out = np.full(array.shape[:lead] + tuple(size), value, dtype=array.dtype)
    source, target = [], []
    for begin, length, extent in zip(start, size, array.shape[lead:]):
        low, high = max(begin, 0), min(begin + length, extent)
        source.append(slice(low, max(high, low)))
        target.append(slice(low - begin, max(high, low) - begin))
    out[(Ellipsis, *target)] = array[(Ellipsis, *source)]
    return out


def centred_start(voxel: int, patch: int, extent: int) -> int:
    """Start of a patch of ``patch`` voxels centred on ``voxel``, shifted to lie inside
    ``[0, extent)``; when ``extent < patch`` the item is centred in the patch instead. The
    patch always contains ``voxel``."""
    if extent <= patch:
        return -((patch - extent) // 2)
    return min(max(voxel - patch // 2, 0), extent - patch)


def random_start(rng: np.random.Generator, patch: int, extent: int) -> int:
    """A start uniform in ``[0, extent - patch]``; centred padding when ``extent < patch``."""
    if extent <= patch:
        return -((patch - extent) // 2)
    return int(rng.integers(0, extent - patch + 1))


def spatial_transform(array: np.ndarray, flips, quarter_turns: int, spatial_dims: int) -> np.ndarray:
    """Flip the trailing ``spatial_dims`` axes where ``flips`` is true, then rotate the last two
    axes by ``quarter_turns * 90`` degrees (``np.rot90``): a permutation of the voxels."""
    lead = array.ndim - spatial_dims
    axes = tuple(lead + axis for axis, flip in enumerate(flips) if flip)
    if axes:
        array = np.flip(array, axes)
    if quarter_turns % 4:
        array = np.rot90(array, quarter_turns, axes=(array.ndim - 2, array.ndim - 1))
    return np.ascontiguousarray(array)


def foreground_locations(label: np.ndarray, multilabel: bool, ignore_index, max_locations: int) -> dict:
    """``{class: flat voxel indices}`` of every foreground class present in one item's label.

    Integer labels: every value other than 0 and ``ignore_index`` is a foreground class.
    Multi-hot ``(R, *spatial)``: channel ``r`` is class ``r`` (voxels > 0.5 for floats, != 0
    otherwise). At most ``max_locations`` indices per class: an evenly spaced subset of the
    raster order, so the stored voxels cover the whole structure.
    """
    def subset(indices):
        if len(indices) > max_locations:
            indices = indices[np.linspace(0, len(indices) - 1, max_locations).round().astype(np.int64)]
        return indices

    if multilabel:
        found = {}
        for channel in range(label.shape[0]):
            mask = label[channel] > 0.5 if np.issubdtype(label.dtype, np.floating) else label[channel] != 0
            indices = np.flatnonzero(mask)
            if len(indices):
                found[channel] = subset(indices)
        return found
    flat = label.ravel()
    keep = flat != 0
    if ignore_index is not None:
        keep &= flat != ignore_index
    indices = np.flatnonzero(keep)
    values = flat[indices]
    order = np.argsort(values, kind="stable")  # stable: each class's indices stay in raster order
    indices, values = indices[order], values[order]
    classes, starts = np.unique(values, return_index=True)
    ends = list(starts[1:]) + [len(values)]
    return {int(c): subset(indices[a:b]) for c, a, b in zip(classes, starts, ends)}


def _numpy(value) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


# ---------------------------------------------------------------- the sampler
class PatchSampler(torch.utils.data.Dataset):
    """Training samples indexed by the global sample index (the rule: module docstring).

    Args:
        dataset: items ``{"image": (C, *spatial) float, "label": (*spatial) int labels or
            (R, *spatial) multi-hot, optional "dist": (K, *spatial), "case", "slice",
            "spacing"}``, spatial ``(H, W)`` or ``(D, H, W)``.
        patch_size: the patch's spatial size (an int for every axis, or one per axis); None
            serves whole items (their own sizes; then only augmentation varies).
        foreground_fraction: share of samples centred on foreground (1/3 as in nnU-Net).
        augment: flips, 90-degree rotations, intensity scale and shift.
        seed: int >= 0; samples are a function of ``(seed, index)``.
        distance_classes: when given, ``"dist"`` = ``signed_distance_map(label, C)`` of the
            returned label (``C`` as the loss's logit channels; 1 = the binary foreground).
        image_pad_value, label_pad_value: fill values where the item is smaller than the patch.
        ignore_index: a label value that is neither background nor foreground.
        max_locations: foreground voxels stored per item and class.
        intensity_scale, intensity_shift: ranges of the per-channel ``a`` and ``b``.

    Items: ``{"image": float32 (C, *patch), "label": (*patch) or (R, *patch) in the source
    dtype, ["dist": float32 (K, *patch)], "case", "slice", "spacing", "source_index": int,
    "foreground_sample": bool, "start": per-axis patch start in the source item}``.
    The stream is unbounded: ``len()`` is the number of source items, but every index >= 0 is
    valid; use :class:`StepBatchSampler` (or :func:`sample_indices`) to read it.
    """

    def __init__(self, dataset, patch_size=None, *, foreground_fraction: float = 1 / 3, augment: bool = True,
                 seed: int = 0, distance_classes: int | None = None, image_pad_value: float = 0.0,
                 label_pad_value: int = 0, ignore_index: int | None = None, max_locations: int = 10_000,
                 intensity_scale=(0.9, 1.1), intensity_shift=(-0.1, 0.1)):
        if len(dataset) == 0:
            raise ValueError("the dataset has no items: nothing to sample")
        self.seed = _check_index(seed, "seed")
        self.fraction = _as_fraction(foreground_fraction)
        self.dataset, self.augment = dataset, bool(augment)
        self.distance_classes, self.ignore_index = distance_classes, ignore_index
        self.image_pad_value, self.label_pad_value = float(image_pad_value), label_pad_value
        self.intensity_scale, self.intensity_shift = _range(intensity_scale, "intensity_scale"), \
            _range(intensity_shift, "intensity_shift")
        if isinstance(max_locations, bool) or not isinstance(max_locations, int) or max_locations < 1:
            raise ValueError(f"max_locations must be an int >= 1, got {max_locations!r}")
        if distance_classes is not None and (not isinstance(distance_classes, int) or distance_classes < 1):
            raise ValueError(f"distance_classes must be None or an int >= 1, got {distance_classes!r}")
        self._shapes, self._locations = [], []
        for index in range(len(dataset)):  # one pass, once: the voxels foreground samples centre on
            item = dataset[index]
            image, label = _numpy(item["image"]), _numpy(item["label"])
            spatial = self._check_item(index, image, label, item)
            self._shapes.append(spatial)
            self._locations.append(foreground_locations(label, self.multilabel, ignore_index, max_locations))
        self.patch_size = self._check_patch(patch_size)
        self.with_foreground = [index for index, found in enumerate(self._locations) if found]

    def _check_item(self, index: int, image: np.ndarray, label: np.ndarray, item: dict) -> tuple:
        if image.ndim not in (3, 4):
            raise ValueError(f"item {index}: image must be (C, H, W) or (C, D, H, W), got shape {image.shape}")
        spatial = image.shape[1:]
        multilabel = label.ndim == image.ndim
        if label.shape[label.ndim - len(spatial):] != spatial or label.ndim not in (image.ndim - 1, image.ndim):
            raise ValueError(f"item {index}: label shape {label.shape} does not match image shape {image.shape} "
                             f"(expected {spatial} labels or (R, *{spatial}) multi-hot)")
        if index == 0:
            self.spatial_dims, self.multilabel, self.has_dist = len(spatial), multilabel, "dist" in item
        elif (len(spatial), multilabel) != (self.spatial_dims, self.multilabel):
            raise ValueError(f"item {index}: image {image.shape} and label {label.shape} differ in kind from item 0")
        if not multilabel and label.size and label.min() < 0 and label.min() != self.ignore_index:
            raise ValueError(f"item {index}: negative label value {label.min()} (set ignore_index if it is one)")
        return spatial

    def _check_patch(self, patch_size):
        if patch_size is None:
            return None
        size = (patch_size,) * self.spatial_dims if isinstance(patch_size, int) else tuple(patch_size)
        if len(size) != self.spatial_dims or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f"patch_size must be None, an int >= 1 or {self.spatial_dims} ints >= 1 "
                             f"(the items are {self.spatial_dims}-D), got {patch_size!r}")
        if self.has_dist:
            raise ValueError("the dataset's items carry 'dist' (distance maps of the whole item), which a crop would "
                             "make wrong near its border: pass the dataset without WithDistanceMaps and "
                             "distance_classes=C, so the maps are computed on each patch")
        return size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # num_classes, class_names, cases... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def choose(self, index: int) -> tuple[int, tuple, bool]:
        """``(source item, patch start per axis, foreground sample?)`` of sample ``index``."""
        rng = np.random.default_rng([self.seed, _check_index(index), PATCH_STREAM])
        p, q = self.fraction.numerator, self.fraction.denominator
        if (index + 1) * p // q > index * p // q and self.with_foreground:
            source = self.with_foreground[int(rng.integers(len(self.with_foreground)))]
            locations = self._locations[source]
            classes = sorted(locations)
            voxels = locations[classes[int(rng.integers(len(classes)))]]
            voxel = np.unravel_index(int(voxels[int(rng.integers(len(voxels)))]), self._shapes[source])
            patch = self.patch_size or self._shapes[source]
            return source, tuple(centred_start(int(v), p_, e) for v, p_, e in
                                 zip(voxel, patch, self._shapes[source])), True
        source = int(rng.integers(len(self.dataset)))
        patch = self.patch_size or self._shapes[source]
        return source, tuple(random_start(rng, p_, e) for p_, e in zip(patch, self._shapes[source])), False

    def augmentation(self, index: int, channels: int) -> tuple:
        """``(flips per axis, quarter turns, scale per channel, shift per channel)`` of sample
        ``index``; every draw is made whatever the patch's shape, so it depends on (seed, index)."""
        rng = np.random.default_rng([self.seed, _check_index(index), AUGMENT_STREAM])
        flips = rng.random(self.spatial_dims) < 0.5
        quarter_turns = int(rng.integers(4))
        scale = rng.uniform(*self.intensity_scale, size=channels)
        shift = rng.uniform(*self.intensity_shift, size=channels)
        return flips, quarter_turns, scale, shift

    def __getitem__(self, index: int) -> dict:
        source, start, foreground = self.choose(_check_index(index))
        item = self.dataset[source]
        image, label = _numpy(item["image"]), _numpy(item["label"])
        size = self.patch_size or image.shape[1:]
        image = crop_or_pad(image.astype(np.float32, copy=False), start, size, self.image_pad_value)
        label = crop_or_pad(label, start, size, self.label_pad_value)
        dist = _numpy(item["dist"]).astype(np.float32, copy=False) if "dist" in item else None
        spacing = tuple(item.get("spacing", ()))
        if self.augment:
            flips, quarter_turns, scale, shift = self.augmentation(index, image.shape[0])
            quarter_turns = quarter_turns if size[-1] == size[-2] else 0  # a non-square patch keeps its shape
            image = spatial_transform(image, flips, quarter_turns, self.spatial_dims)
            label = spatial_transform(label, flips, quarter_turns, self.spatial_dims)
            if dist is not None:
                dist = spatial_transform(dist, flips, quarter_turns, self.spatial_dims)
            image = image * scale.astype(np.float32).reshape(-1, *[1] * self.spatial_dims) \
                + shift.astype(np.float32).reshape(-1, *[1] * self.spatial_dims)
            if quarter_turns % 2 and len(spacing) >= 2:
                spacing = (*spacing[:-2], spacing[-1], spacing[-2])
        out = {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
               "label": torch.from_numpy(np.ascontiguousarray(label)),
               "case": item.get("case", str(source)), "slice": item.get("slice", -1), "spacing": spacing,
               "source_index": source, "foreground_sample": foreground, "start": start}
        if dist is None and self.distance_classes is not None:
            from medsegloss.distance import signed_distance_map

            target = out["label"][None].float() if self.multilabel else out["label"][None]
            dist = signed_distance_map(target, self.distance_classes)[0].numpy()
        if dist is not None:
            out["dist"] = torch.from_numpy(np.ascontiguousarray(dist, dtype=np.float32))
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(items={len(self.dataset)}, patch_size={self.patch_size}, "
                f"foreground_fraction={self.fraction}, augment={self.augment}, seed={self.seed}, "
                f"items_with_foreground={len(self.with_foreground)})")


def _range(value, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not low <= high:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return low, high
