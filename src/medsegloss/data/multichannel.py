"""What the standard-layout loaders (``nnunet``, ``msd``) share: multi-channel cases, the label
description of a ``dataset.json`` (classes, overlapping regions, an ignore label), per-channel
normalization, optional resampling to one spacing, and the dataset that serves them.

A case here holds ``image (C, D, H, W)`` (one volume per input channel) and ``label (D, H, W)``:
the label file's own values (uint8). Items are built from those:

* integer classes: ``label`` int64 ``(H, W)`` / ``(D, H, W)``, the file's values (which are the
  class indices: both formats require consecutive values from 0); ignored voxels keep the ignore
  value, the dataset's ``ignore_index``;
* regions (``multilabel=True``): ``label`` float32 multi-hot ``(R, H, W)`` / ``(R, D, H, W)``,
  channel ``r`` = 1 where the voxel's value is in region ``r``'s list; with an ignore label the
  item also has ``"ignore"``: bool ``(H, W)`` / ``(D, H, W)``, True where the voxel is unlabelled
  (its region channels are all 0 there).

Normalization (per channel, by the channel's name, the nnU-Net rule):

* ``"CT"`` (any case): clip to the 0.5th-99.5th percentiles of the *training split's* foreground
  intensities (voxels with a label value other than 0 and the ignore value; at most 100 000
  evenly strided voxels per case), then subtract their mean and divide by their standard
  deviation (both of the unclipped foreground values, as nnU-Net's CTNormalization). One set of
  statistics for every split, so val and test see the training scale;
* ``"noNorm"``: left as stored;
* anything else (T1, T2, FLAIR, ADC, R, G, B...): z-scored per image with the mean and standard
  deviation of its **nonzero** voxels (skull-stripped MRI has an exact-0 background that would
  otherwise dominate them), the formula applied to every voxel (all voxels when none is nonzero).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsegloss.data.base import Case, DatasetError, SegmentationDataset, check_finite_image, mask_without_alpha
from medsegloss.data.nifti import integer_labels

CT_PERCENTILES = (0.5, 99.5)
CT_SAMPLES_PER_CASE = 100_000
_CT_STATISTICS: dict[tuple, dict[int, tuple[float, float, float, float]]] = {}


@dataclass(frozen=True)
class LabelSpec:
    """The labels a ``dataset.json`` declares.

    Attributes:
        class_names: integer mode: the class names by value (background first); region mode: the
            region names (background is not a region).
        regions: region mode: each region's label values; ``None`` for integer classes.
        ignore: the ignore label's value, or None.
        values: every value a label file may hold (classes or region members, 0, ignore).
    """

    class_names: tuple[str, ...]
    regions: tuple[tuple[int, ...], ...] | None
    ignore: int | None
    values: frozenset[int]

    @property
    def multilabel(self) -> bool:
        return self.regions is not None


def _as_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
        raise DatasetError(f"{where}: expected an integer label value, got {value!r}")
    return int(value)


def label_spec(labels: dict, source) -> LabelSpec:
    """Parse nnU-Net v2 ``labels`` (name -> value, or name -> list of values for regions;
    ``"ignore"`` -> the highest value). Errors name ``source`` (the dataset.json)."""
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(f"{source}: 'labels' must be a non-empty object name -> value, got {labels!r}")
    ignore = None
    entries = {}
    for name, value in labels.items():
        if name == "ignore":
            ignore = _as_int(value, f"{source}: labels['ignore']")
        elif isinstance(value, (list, tuple)):
            if not value:
                raise DatasetError(f"{source}: region {name!r} lists no label values")
            entries[name] = tuple(sorted({_as_int(v, f"{source}: labels[{name!r}]") for v in value}))
        else:
            entries[name] = _as_int(value, f"{source}: labels[{name!r}]")
    background = [name for name, value in entries.items() if value == 0 or value == (0,)]
    if not background:
        raise DatasetError(f"{source}: 'labels' must map the background to 0, got {labels!r}")
    regional = any(isinstance(value, tuple) for value in entries.values())
    members = {v for value in entries.values() for v in (value if isinstance(value, tuple) else (value,))}
    if any(v < 0 or v > 254 for v in members | ({ignore} if ignore is not None else set())):
        raise DatasetError(f"{source}: label values must lie in [0, 254], got {labels!r}")
    if ignore is not None and ignore <= max(members):
        raise DatasetError(f"{source}: the 'ignore' label must have the highest value (nnU-Net's rule), "
                           f"got ignore={ignore} with labels up to {max(members)}")
    if regional:
        regions = {name: value if isinstance(value, tuple) else (value,)
                   for name, value in entries.items() if name not in background}
        if any(0 in values for values in regions.values()):
            raise DatasetError(f"{source}: a region may not contain the background value 0: {regions}")
        names, spec_regions = tuple(regions), tuple(regions.values())
    else:
        by_value = sorted(entries.items(), key=lambda item: item[1])
        found = [value for _, value in by_value]
        if found != list(range(len(found))):
            raise DatasetError(f"{source}: class label values must be consecutive from 0 (0, 1, 2, ...), "
                               f"got {found}")
        names, spec_regions = tuple(name for name, _ in by_value), None
    values = frozenset(members | {0} | ({ignore} if ignore is not None else set()))
    return LabelSpec(names, spec_regions, ignore, values)


# --------------------------------------------------------------------------------------- reading

def read_picture(path, *, label: bool = False) -> np.ndarray:
    """A PNG / TIFF / BMP file as ``(B, D, H, W)`` (``B`` colour bands, ``D`` pages), float32 for
    images; labels as ``(D, H, W)`` int64 (single-band only; a label's alpha band is read by
    :func:`~medsegloss.data.base.mask_without_alpha`). An image's RGBA drops the alpha band."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"file {path} does not exist")
    try:
        with Image.open(path) as picture:
            pages = []
            for frame in ImageSequence.Iterator(picture):
                if frame.mode == "P" and not label:
                    frame = frame.convert("RGB")
                if label and frame.mode in ("RGBA", "LA", "La", "PA"):  # the classes may be in the alpha
                    pages.append(mask_without_alpha(np.asarray(frame), path, frame.mode))
                    continue
                if frame.mode in ("RGBA", "LA", "CMYK", "YCbCr"):
                    frame = frame.convert("RGB" if frame.mode != "LA" else "L")
                pages.append(np.asarray(frame))
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DatasetError(f"cannot read image {path} (corrupt or truncated?): {type(error).__name__}: {error}") from error
    if len({page.shape for page in pages}) != 1:
        raise DatasetError(f"{path}: pages of different sizes {[page.shape for page in pages]}")
    stack = np.stack(pages)  # (D, H, W) or (D, H, W, B)
    if label:
        if stack.ndim == 4:
            raise DatasetError(f"label {path} is a colour image: save label values as a single-channel image")
        return integer_labels(stack, path)
    stack = stack[None] if stack.ndim == 3 else np.moveaxis(stack, -1, 0)
    return check_finite_image(np.ascontiguousarray(stack, dtype=np.float32), path)


def read_dataset_json(root, layout: str, holds: str) -> tuple[Path, dict]:
    """``root/dataset.json`` as ``(path, object)``; errors name the file. ``layout`` names the
    format in the messages (e.g. "nnU-Net dataset"), ``holds`` what such a folder holds."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{layout} root {root} does not exist or is not a folder")
    path = root / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path} does not exist (a {layout} folder holds {holds})")
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is not readable JSON: {error}") from None
    except RecursionError:
        raise DatasetError(f"{path} is not readable JSON: nested too deeply for the JSON reader") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path} must hold a JSON object, got {type(content).__name__}")
    return path, content


def read_file(path, *, label: bool = False, channels_last_axis: bool = False):
    """``(array, spacing (sz, sy, sx), affine or None, single)`` of a NIfTI or picture file.

    Images come as ``(B, D, H, W)`` float32 (``B`` bands: RGB pictures have 3; a 4-D NIfTI with
    ``channels_last_axis`` its last axis), labels as ``(D, H, W)`` int64. ``single`` marks a plain
    2-D image (spacing 1 between its one slice). Errors name the file.
    """
    from medsegloss.data.nifti import as_volume, is_nifti, read_nifti

    path = Path(path)
    if not is_nifti(path.name):
        array = read_picture(path, label=label)
        return array, (1.0, 1.0, 1.0), None, array.shape[-3] == 1
    if channels_last_axis and not label:
        return (*read_nifti_channels(path), False)
    array, spacing, affine = read_nifti(path, label=label)
    single = array.ndim == 2
    array, spacing = as_volume(array, spacing)
    return (array if label else array[None]), spacing, affine, single


def read_nifti_channels(path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """A 3-D or 4-D NIfTI image (``(x, y, z[, c])``, as the Decathlon stores its modalities) as
    ``(C, z, y, x)`` float32, the spacing ``(sz, sy, sx)`` and the header's affine."""
    import nibabel

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"NIfTI file {path} does not exist")
    try:
        image = nibabel.load(str(path))
        array = np.asarray(image.dataobj, dtype=np.float32)
        zooms = tuple(float(z) for z in image.header.get_zooms())
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as error:  # nibabel raises many types (EOFError, zlib.error, ImageFileError...)
        raise DatasetError(f"cannot read NIfTI file {path} (corrupt or truncated?): "
                           f"{type(error).__name__}: {error}") from error
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise DatasetError(f"{path}: expected a 3-D (x, y, z) or 4-D (x, y, z, channel) image, got shape {array.shape}")
    check_finite_image(array, path)
    spacing = tuple(reversed(zooms[:3]))
    if any(not s > 0 for s in spacing):
        spacing = (1.0, 1.0, 1.0)
    return np.ascontiguousarray(array.transpose(3, 2, 1, 0)), spacing, affine


def check_same_affine(case_id: str, first: tuple, second: tuple) -> None:
    """Two files of one case, each ``(path, affine or None, role)``, lie on one grid (affines
    equal to rtol 1e-4, atol 1e-3 mm); else a DatasetError naming both files and the affines.
    Training checks every channel against the label, ``predict`` the channels against each other."""
    (path, affine, role), (other_path, other_affine, other_role) = first, second
    if affine is None or other_affine is None or np.allclose(affine, other_affine, rtol=1e-4, atol=1e-3):
        return
    difference = float(np.abs(affine - other_affine).max())
    raise DatasetError(f"case {case_id!r}: {role} {path} and {other_role} {other_path} have different affines "
                       f"(not co-registered? largest difference {difference:.4g}): {Path(path).name} "
                       f"{np.round(affine, 4).tolist()}, {Path(other_path).name} {np.round(other_affine, 4).tolist()}")


def check_case(case_id: str, channels: list[tuple[Path, np.ndarray, np.ndarray | None]], label_path: Path,
               label: np.ndarray, label_affine, spec: LabelSpec) -> None:
    """Every channel matches the label's shape and affine; every label value is declared."""
    for path, array, affine in channels:
        if array.shape[1:] != label.shape:
            raise DatasetError(f"case {case_id!r}: image {path} has shape {array.shape[1:]} (z, y, x) but its "
                               f"label {label_path} has {label.shape}")
        check_same_affine(case_id, (path, affine, "image"), (label_path, label_affine, "label"))
    values = np.unique(label)
    undeclared = sorted(set(values.tolist()) - spec.values)
    if undeclared:
        raise DatasetError(f"case {case_id!r}: label {label_path} holds values {undeclared[:10]} not declared in "
                           f"dataset.json (declared: {sorted(spec.values)})")


# --------------------------------------------------------------------------------- normalization

def foreground(label: np.ndarray, ignore: int | None) -> np.ndarray:
    """Voxels that belong to some class or region: label not 0 and not the ignore value."""
    mask = label > 0
    return mask & (label != ignore) if ignore is not None else mask


def ct_statistics(samples: list[np.ndarray]) -> tuple[float, float, float, float]:
    """``(low, high, mean, std)``: the 0.5th / 99.5th percentiles, mean and std of the pooled
    foreground intensities (float64)."""
    values = np.concatenate([np.asarray(s, np.float64).ravel() for s in samples]) if samples else np.zeros(0)
    if values.size == 0:
        raise DatasetError("CT normalization needs foreground voxels in the training cases; none were found")
    low, high = np.percentile(values, CT_PERCENTILES)
    return float(low), float(high), float(values.mean()), float(values.std())


def foreground_sample(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """At most :data:`CT_SAMPLES_PER_CASE` foreground intensities, evenly strided (deterministic)."""
    values = image[mask]
    step = max(1, math.ceil(values.size / CT_SAMPLES_PER_CASE))
    return values[::step]


def normalize_channel(channel: np.ndarray, name: str, statistics: tuple[float, float, float, float] | None) -> np.ndarray:
    """One channel by the module's rule (``statistics`` for a CT channel: see :func:`ct_statistics`)."""
    channel = np.asarray(channel, np.float32)
    if name.lower() == "ct":
        low, high, mean, std = statistics
        return ((np.clip(channel, low, high) - mean) / max(std, 1e-8)).astype(np.float32)
    if name.lower() == "nonorm":
        return channel
    nonzero = channel[channel != 0]
    values = nonzero if nonzero.size else channel
    mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
    return ((channel - mean) / (std if std > 0 else 1.0)).astype(np.float32)


def is_ct(name: str) -> bool:
    return name.lower() == "ct"


# ------------------------------------------------------------------------------------- geometry

def resample(image: np.ndarray, label: np.ndarray, spacing, target, single: bool):
    """``image (C, D, H, W)`` linearly and ``label (D, H, W)`` by nearest neighbour onto the
    ``target (sz, sy, sx)`` grid: ``new = round(old * spacing / target)`` voxels per axis (at least
    1), covering the same extent; the returned spacing is the exact ``old * spacing / new``. A
    single 2-D picture keeps its one slice."""
    old_shape = label.shape
    shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(old_shape, spacing, target))
    if single:
        shape = (1, *shape[1:])
    if shape == label.shape:
        return image, label, tuple(spacing)
    image_t = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None]
    image = torch.nn.functional.interpolate(image_t, size=shape, mode="trilinear", align_corners=False)[0].numpy()
    label_t = torch.from_numpy(np.ascontiguousarray(label, np.float32))[None, None]
    # nearest-exact samples at voxel centres (plain "nearest" shifts by half a voxel)
    label = torch.nn.functional.interpolate(label_t, size=shape, mode="nearest-exact")[0, 0].numpy().astype(np.uint8)
    new_spacing = tuple(float(s) * n / m for s, n, m in zip(spacing, old_shape, shape))
    return image, label, new_spacing


def resize(case_id: str, image: np.ndarray, label: np.ndarray, spacing, size, single: bool) -> Case:
    """Each channel and the label resized in-plane to ``size x size`` (see
    :func:`medsegloss.data.transforms.resize_case`); ``size=None`` keeps them."""
    from medsegloss.data.transforms import resize_case

    resized = [resize_case(case_id, channel, label, spacing, size, single) for channel in image]
    first = resized[0]
    stacked = np.stack([case.image for case in resized])
    return Case(case_id, stacked, first.label, first.spacing, single)


# -------------------------------------------------------------------------------------- dataset

class ChannelDataset(SegmentationDataset):
    """Cases with ``C`` input channels, integer classes or overlapping regions.

    Items: ``{"image": float32 (C, H, W) | (C, D, H, W), "label": int64 (H, W) | (D, H, W), or
    float32 multi-hot (R, H, W) | (R, D, H, W) when ``multilabel``, "case", "slice", "spacing"}``
    plus ``"ignore"`` (bool, spatial) for a multilabel dataset with an ignore label.

    Attributes beyond :class:`SegmentationDataset`'s: ``channel_names``, ``num_channels``,
    ``multilabel``, ``region_names`` / ``region_values`` (multilabel), ``ignore_index`` (the
    ignore label's value, or None), ``test_images`` (case -> channel files without labels).
    """

    def __init__(self, cases: list[Case], *, spec: LabelSpec, channel_names: list[str], test_images=None,
                 **kwargs):
        super().__init__(cases, class_names=list(spec.class_names), **kwargs)
        self.channel_names = list(channel_names)
        self.num_channels = len(self.channel_names)
        self.multilabel = spec.multilabel
        self.region_names = list(spec.class_names) if spec.multilabel else None
        self.region_values = [list(values) for values in spec.regions] if spec.multilabel else None
        self.ignore_index = spec.ignore
        self.test_images = dict(test_images or {})
        self._spec = spec
        if spec.multilabel:
            # value -> multi-hot row: one lookup instead of R comparisons per item
            self._table = np.zeros((len(spec.regions), 256), np.float32)
            for r, values in enumerate(spec.regions):
                self._table[r, list(values)] = 1.0

    def __getitem__(self, index: int) -> dict:
        case, image, label, spacing, slice_ = self.item_arrays(index)
        item = {"image": torch.from_numpy(np.array(image, dtype=np.float32)), "case": case.id, "slice": slice_,
                "spacing": tuple(float(s) for s in spacing)}
        if not self.multilabel:
            item["label"] = torch.from_numpy(np.asarray(label, dtype=np.int64))
            return item
        label = np.asarray(label)
        item["label"] = torch.from_numpy(np.take(self._table, label, axis=1))  # (R, *spatial); 10x faster than [:, label]
        if self.ignore_index is not None:
            item["ignore"] = torch.from_numpy(label == self.ignore_index)
        return item

    def __repr__(self) -> str:
        mode = f"regions={self.region_names}" if self.multilabel else f"classes={self.class_names}"
        return (f"{type(self).__name__}({self.name!r}, split={self.split_name!r}, cases={len(self._cases)}, "
                f"items={len(self)}, dims={self.dims}, channels={self.channel_names}, {mode})")


# ------------------------------------------------------------------------------- the whole load

@dataclass(frozen=True)
class CaseFiles:
    """One labelled case: its channel files (in channel order) and its label file."""

    id: str
    images: tuple[Path, ...]
    label: Path


def read_case_arrays(files: CaseFiles, spec: LabelSpec, num_channels: int, channels_last_axis: bool = False):
    """``(image (C, D, H, W) raw float32, label (D, H, W) int64, spacing, single)``, checked."""
    label, spacing, label_affine, single = read_file(files.label, label=True)
    channels = []
    for path in files.images:
        array, _, affine, _ = read_file(path, channels_last_axis=channels_last_axis)
        channels.append((path, array, affine))
    check_case(files.id, channels, files.label, label, label_affine, spec)
    image = np.concatenate([array for _, array, _ in channels]) if len(channels) > 1 else channels[0][1]
    if image.shape[0] != num_channels:
        raise DatasetError(f"case {files.id!r}: {', '.join(str(p) for p, _, _ in channels)} hold {image.shape[0]} "
                           f"channel(s) but dataset.json declares {num_channels}")
    return image, label, spacing, single


def training_ct_statistics(train_files: list[CaseFiles], spec: LabelSpec, channel_names: list[str],
                           channels_last_axis: bool, on_error: str) -> dict[int, tuple[float, float, float, float]]:
    """CT channel index -> ``(low, high, mean, std)`` over the training cases' foreground;
    memoized per set of files (path, mtime, size)."""
    from medsegloss.data.base import handle_bad
    from medsegloss.data.cache import file_key

    ct_channels = [c for c, name in enumerate(channel_names) if is_ct(name)]
    if not ct_channels:
        return {}
    key = (tuple(channel_names), spec.ignore,
           tuple(file_key(path) for files in train_files for path in (*files.images, files.label)))
    if key not in _CT_STATISTICS:
        samples: dict[int, list[np.ndarray]] = {c: [] for c in ct_channels}
        for files in train_files:
            try:
                image, label, _, _ = read_case_arrays(files, spec, len(channel_names), channels_last_axis)
            except DatasetError as error:
                handle_bad(str(error), on_error)
                continue
            mask = foreground(label, spec.ignore)
            for c in ct_channels:
                samples[c].append(foreground_sample(image[c], mask))
        _CT_STATISTICS[key] = {c: ct_statistics(samples[c]) for c in ct_channels}
    return _CT_STATISTICS[key]


def build_case(files: CaseFiles, spec: LabelSpec, channel_names: list[str], statistics, size, spacing,
               channels_last_axis: bool) -> Case:
    """Read, check, normalize, resample (``spacing`` given) and resize one case."""
    image, label, native_spacing, single = read_case_arrays(files, spec, len(channel_names), channels_last_axis)
    image = np.stack([normalize_channel(image[c], name, statistics.get(c)) for c, name in enumerate(channel_names)])
    label = label.astype(np.uint8)
    if spacing is not None:
        image, label, native_spacing = resample(image, label, native_spacing, spacing, single)
    return resize(files.id, image, label, native_spacing, size, single)


def check_spacing_option(spacing) -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(v > 0 and math.isfinite(v) for v in values):
        raise ValueError(f"spacing must be None or three positive numbers (sz, sy, sx) in mm, got {spacing!r}")
    return values


def load_cases(name: str, files: list[CaseFiles], spec: LabelSpec, channel_names: list[str], *, split: str,
               size, spacing, seed, dims, split_file, val_fraction, test_fraction, on_error, cache_dir,
               channels_last_axis: bool = False, test_images=None) -> ChannelDataset:
    """The split, the CT statistics of its training part, and the cases of ``split``, served."""
    from medsegloss.data.base import handle_bad
    from medsegloss.data.cache import cached_case, file_key
    from medsegloss.data.splits import resolve_split, select

    spacing = check_spacing_option(spacing)
    by_id = {f.id: f for f in files}
    ids = sorted(by_id)
    split_dict = resolve_split(ids, split_file=split_file, seed=seed, val_fraction=val_fraction,
                               test_fraction=test_fraction)
    statistics = training_ct_statistics([by_id[i] for i in split_dict["train"]], spec, channel_names,
                                        channels_last_axis, on_error)
    cases = []
    for case_id in select(split_dict, split, ids):
        case_files = by_id[case_id]
        key = (name, case_id, tuple(file_key(p) for p in (*case_files.images, case_files.label)),
               tuple(channel_names), sorted(statistics.items()), sorted(spec.values), size, spacing, 1)
        try:
            cases.append(cached_case(key, lambda: build_case(case_files, spec, channel_names, statistics, size,
                                                             spacing, channels_last_axis), cache_dir))
        except DatasetError as error:
            handle_bad(str(error), on_error)
    options = dict(size=size, spacing=spacing, ct_statistics={channel_names[c]: list(v) for c, v in statistics.items()})
    return ChannelDataset(cases, spec=spec, channel_names=channel_names, test_images=test_images, name=name,
                          dims=dims, split=split_dict, split_name=split, options=options)
