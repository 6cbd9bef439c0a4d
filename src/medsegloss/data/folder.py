"""``folder``: your own data as ``ROOT/images/`` and ``ROOT/masks/``, matched by file stem.

Formats: PNG, JPEG, TIFF (multi-page TIFF = a volume), NIfTI (``.nii``, ``.nii.gz``; 2-D or 3-D,
spacing from the header). Colour images are converted to grey (Pillow's ``L``: ITU-R 601 luma);
every image is clipped to its 1st-99th percentile and z-scored.

Mask values -> class indices (the same mapping for every split, from all masks of the folder):

* ``mask_values=[v0, v1, ...]`` given (distinct integers, negative ones allowed): value ``v_k``
  becomes class ``k``; any other value is an error;
* else a negative value is an error (declare it with ``mask_values``);
* else if the values are within {0, 255} or {0, 1}: binary, 0 -> 0 and 255 (or 1) -> 1; masks
  using 0/1 and masks using 0/255 in one folder are an error (which convention is meant?);
* else if ``num_classes`` is given: values must already be class indices in ``[0, num_classes)``;
* else: the sorted distinct values become ``0, 1, ..., K-1`` (e.g. {0, 85, 170, 255} -> 0..3).

Masks must be single-channel (grey, palette indices or 1-bit) with integer values (a float mask
holding 0.7 is an error, never truncated); a colour mask is an error. A mask with an alpha
band (LA, PA, RGBA) is read from the band that holds the classes: the grey one, or the alpha when
the grey is constant; labels in both is an error. At most ``MAX_CLASSES``
(256) classes: a mask with more distinct values is refused before anything is allocated for it
(the mapping is a sorted search over the declared values, never a table sized by the largest
value). Images holding NaN or inf are an error. Every error names the file.

Groups (``group=``): slices or pictures of one patient are not independent cases. Declare which
files belong together and they stay in one part of every split and fold, and the benchmark's
statistics count the groups: ``group="^(patient\\d+)_"`` (a regular expression searched in the
file stem; its first capture group, else the whole match, names the group; a stem it does not
match is an error) or ``group="groups.csv"`` (a CSV of ``file,group`` lines, ``file`` the stem or
file name, relative to the root or absolute).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsegloss.data.base import DatasetError, check_finite_image, handle_bad, mask_without_alpha

MAX_CLASSES = 256  # labels are stored as uint8
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nii.gz")
_UNIQUE: dict[tuple, np.ndarray] = {}  # file_key -> distinct mask values (masks are scanned once)


def _stem(path: Path) -> str:
    from medsegloss.data.nifti import strip_suffix

    return strip_suffix(path.name)


def _listing(folder: Path, on_error: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
            stem = _stem(path)
            if stem in files:
                handle_bad(f"{path} and {files[stem]} have the same stem {stem!r}", on_error)
                continue
            files[stem] = path
    return files


def read_image(path, *, mask: bool = False) -> tuple[np.ndarray, tuple[float, float, float], bool]:
    """``(array (D, H, W), spacing (sz, sy, sx), single)`` of an image or mask file; ``single`` is
    True for a plain 2-D picture. Errors name the file."""
    from medsegloss.data.nifti import as_volume, is_nifti, read_nifti

    path = Path(path)
    if is_nifti(path.name):
        array, spacing, _ = read_nifti(path, label=mask)
        single = array.ndim == 2
        array, spacing = as_volume(array, spacing)
        return array, spacing, single
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            frames = [_frame_array(frame, path, mask) for frame in ImageSequence.Iterator(picture)]
    except (OSError, UnidentifiedImageError, SyntaxError) as error:  # Pillow's corrupt/truncated errors
        raise DatasetError(f"cannot read image {path} (corrupt or truncated?): {type(error).__name__}: {error}") from error
    if len({frame.shape for frame in frames}) != 1:
        raise DatasetError(f"{path}: pages of different sizes {[f.shape for f in frames]}")
    array = np.stack(frames)
    if not mask:
        check_finite_image(array, path)  # a float TIFF may hold NaN / inf
    return array, (1.0, 1.0, 1.0), len(frames) == 1


def _frame_array(frame, path: Path, mask: bool) -> np.ndarray:
    from medsegloss.data.nifti import integer_labels

    if mask:
        if frame.mode in ("LA", "La", "PA"):  # grey (or palette) + alpha
            return integer_labels(mask_without_alpha(np.asarray(frame), path, frame.mode), path)
        if frame.mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
            bands = np.asarray(frame)
            channels = mask_without_alpha(bands, path, frame.mode) if frame.mode == "RGBA" else bands
            if channels.ndim == 3 and not (channels == channels[..., :1]).all():
                raise DatasetError(f"mask {path} is a colour image (mode {frame.mode}): save class values as a "
                                   "single-channel (grey or palette) image")
            return integer_labels(channels[..., 0] if channels.ndim == 3 else channels, path)
        return integer_labels(np.asarray(frame), path)  # float TIFF: 0.7 is an error, never truncated to 0
    if frame.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        frame = frame.convert("L")
    return np.asarray(frame).astype(np.float32)


def _unique_values(path: Path) -> np.ndarray:
    """The distinct values of a mask file (cached by path, modification time and size)."""
    from medsegloss.data.cache import file_key

    key = file_key(path)
    if key not in _UNIQUE:
        values = np.unique(read_image(path, mask=True)[0])
        if values.size > MAX_CLASSES:
            raise DatasetError(
                f"mask {path} holds {values.size} distinct values (from {_show(values[:3])[1:-1]} to "
                f"{values[-1]}), more than the {MAX_CLASSES} classes a mask can have: is it an image "
                "rather than a mask?"
            )
        _UNIQUE[key] = values
    return _UNIQUE[key]


def _show(values, limit: int = 10) -> str:
    """At most ``limit`` values of a sorted array, as a list with ``...`` when cut."""
    values = [int(v) for v in values]
    return str(values[:limit])[:-1] + (", ...]" if len(values) > limit else "]")


def _files(paths, limit: int = 3) -> str:
    paths = [str(p) for p in paths]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def check_mask_values(mask_values) -> list[int]:
    """``mask_values``: distinct integers (negative ones allowed: they are declared), at most
    ``MAX_CLASSES``. Integral floats (``255.0`` from a config file) are taken as integers."""
    if isinstance(mask_values, (str, bytes, dict)) or not hasattr(mask_values, "__iter__"):
        raise TypeError(f"mask_values must be a list of integers (value of class 0, 1, ...), got {mask_values!r}")
    values = list(mask_values)
    if not values or len(values) > MAX_CLASSES:
        raise ValueError(f"mask_values must list 1 to {MAX_CLASSES} values (one per class), got {len(values)}")
    integers = []
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"mask_values must hold integers, got {value!r} in {values}")
        if not float(value).is_integer() or abs(float(value)) > 2**53:
            raise ValueError(f"mask_values must hold integers (masks hold integer values), got {value!r} in {values}")
        integers.append(int(value))
    duplicates = sorted({v for v in integers if integers.count(v) > 1})
    if duplicates:
        raise ValueError(f"mask_values lists {duplicates} more than once ({integers}): each value is one class")
    return integers


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an integer, got {num_classes!r}")
    if not 1 <= int(num_classes) <= MAX_CLASSES:
        raise ValueError(f"num_classes must lie in [1, {MAX_CLASSES}], got {num_classes}")
    return int(num_classes)


def value_mapping(values_by_file: dict[Path, np.ndarray], num_classes=None, mask_values=None) -> dict[int, int]:
    """Mask value -> class index, by the rules of the module docstring.

    ``values_by_file`` holds each mask file's distinct values. Every value outside the mapping, a
    negative value not declared in ``mask_values``, or a folder mixing the 0/1 and 0/255 binary
    conventions raises :class:`DatasetError` naming the files and the values.
    """
    if num_classes is not None:
        num_classes = _check_num_classes(num_classes)
    found = np.unique(np.concatenate(list(values_by_file.values()))) if values_by_file else np.array([0])
    if mask_values is not None:
        mapping = {value: k for k, value in enumerate(check_mask_values(mask_values))}
    else:
        # values are sorted: a file holds a negative value when its first one is
        negative = {path: values[values < 0] for path, values in values_by_file.items() if values.size and values[0] < 0}
        if negative:
            path, values = next(iter(negative.items()))
            others = f" (so do {_files(list(negative)[1:])})" if len(negative) > 1 else ""
            raise DatasetError(
                f"mask {path} holds negative values {_show(values)}{others}; values found in the folder: "
                f"{_show(found)}. Declare every value's class with mask_values=[...] (value of class 0 "
                "first), e.g. to map -1 to a class of its own"
            )
        binary = set(found.tolist()) <= {0, 1, 255}
        if binary and {1, 255} <= set(found.tolist()) and num_classes is None:
            ones = [path for path, values in values_by_file.items() if 1 in values and 255 not in values]
            fives = [path for path, values in values_by_file.items() if 255 in values and 1 not in values]
            both = [path for path, values in values_by_file.items() if 1 in values and 255 in values]
            raise DatasetError(
                "masks mix the binary conventions 0/1 and 0/255: "
                + "; ".join(part for part in (f"0/1 in {_files(ones)}" if ones else "",
                                              f"0/255 in {_files(fives)}" if fives else "",
                                              f"0/1/255 in {_files(both)}" if both else "") if part)
                + ". Save every mask one way, or declare the classes with mask_values "
                "(e.g. [0, 1, 255] for three classes, or num_classes=...)"
            )
        if binary and not {1, 255} <= set(found.tolist()):
            mapping = {0: 0, 255 if 255 in found else 1: 1}
        elif num_classes is not None:
            mapping = {k: k for k in range(num_classes)}
        else:
            if found.size > MAX_CLASSES:
                raise DatasetError(
                    f"the masks hold {found.size} distinct values together ({_show(found)}), more than "
                    f"{MAX_CLASSES} classes; declare the classes with mask_values=[...]"
                )
            mapping = {int(v): k for k, v in enumerate(found)}
    for path, values in values_by_file.items():
        unknown = values[~np.isin(values, np.fromiter(mapping, np.int64, len(mapping)))]
        if unknown.size:
            raise DatasetError(f"mask {path} holds values {_show(unknown)} outside the declared classes "
                               f"(mask value -> class: {_show_mapping(mapping)})")
    if num_classes is not None and max(mapping.values()) >= num_classes:
        raise ValueError(f"num_classes={num_classes} is fewer than the {max(mapping.values()) + 1} classes of "
                         f"the mapping (mask value -> class: {_show_mapping(mapping)})")
    return mapping


def _show_mapping(mapping: dict[int, int], limit: int = 12) -> str:
    items = list(mapping.items())
    text = ", ".join(f"{value}: {index}" for value, index in items[:limit])
    return "{" + text + (", ..." if len(items) > limit else "") + "}"


def apply_mapping(mask: np.ndarray, mapping: dict[int, int], path) -> np.ndarray:
    """Class indices (uint8) of a mask's values: a sorted search over the mapping's keys, so a
    value of 2**40 costs nothing (a lookup table indexed by value would need 1 TiB, and negative
    values would wrap around to its end). A value outside the mapping is an error naming ``path``.

    Shape:
        mask any shape (integer values); returns uint8 of the same shape.
    """
    keys = np.array(sorted(mapping), dtype=np.int64)
    classes = np.array([mapping[int(key)] for key in keys], dtype=np.uint8)
    index = np.minimum(np.searchsorted(keys, mask), keys.size - 1)
    known = keys[index] == mask
    if not known.all():
        raise DatasetError(f"mask {path} holds values {_show(np.unique(mask[~known]))} outside the declared "
                           f"classes (mask value -> class: {_show_mapping(mapping)})")
    return classes[index]


def _read_case(stem, image_path, mask_path, mapping, size, spacing):
    from medsegloss.data.transforms import normalize_percentile, resize_case

    image, image_spacing, single = read_image(image_path)
    mask, _, _ = read_image(mask_path, mask=True)
    if image.shape != mask.shape:
        raise DatasetError(f"image {image_path} has shape {image.shape} but mask {mask_path} has {mask.shape}")
    if spacing is not None:
        image_spacing = (image_spacing[0], *spacing)
    return resize_case(stem, normalize_percentile(image, 1, 99), apply_mapping(mask, mapping, mask_path),
                       image_spacing, size, single)


def options_class_names(*, class_names=None, num_classes=None, **_) -> list[str] | None:
    """The class names of the dataset ``load`` builds with these options: ``class_names``, else
    default names for ``num_classes`` classes, else None (the masks' values decide)."""
    if class_names is not None:
        return list(class_names)
    if num_classes is None:
        return None
    count = int(num_classes)
    return ["background", "foreground"] if count == 2 else ["background"] + [f"class{k}" for k in range(1, count)]


def load(root=None, split: str = "train", *, size: int | None = 256, num_classes: int | None = None,
         mask_values=None, class_names=None, spacing=None, seed: int = 0, dims: int = 2, split_file=None,
         val_fraction: float = 0.1, test_fraction: float = 0.2, on_error: str = "raise", cache_dir=None,
         group: str | None = None):
    """``folder`` images with masks (see the module docstring for the value mapping and groups).

    Args:
        size: square output side (``None`` keeps each image's size: then all must match to batch).
        num_classes, mask_values: see the mapping rules; ``class_names``: names for the classes.
        spacing: in-plane ``(sy, sx)`` pixel size for pictures (default 1; NIfTI: the header).
        on_error: ``"raise"`` or ``"skip"`` (log a warning and leave the file out).
        group: a regex on the file stem or a CSV of ``file,group``: files of one group (a patient)
            are one unit of the split, the folds and the statistics.
    """
    from medsegloss.data.base import SegmentationDataset
    from medsegloss.data.cache import cached_case, file_key
    from medsegloss.data.splits import resolve_split, select

    from medsegloss._checks import check_spacing

    if spacing is not None:
        spacing = check_spacing(spacing, 2)  # finite, positive, named in the error
    root = Path(root)
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise DatasetError(f"folder dataset root {root} has no {sub}/ subfolder (expected images/ and masks/)")
    images, masks = _listing(root / "images", on_error), _listing(root / "masks", on_error)
    for stem in sorted(set(images) - set(masks)):
        handle_bad(f"image {images[stem]} has no mask in {root / 'masks'} (matched by stem {stem!r})", on_error)
    for stem in sorted(set(masks) - set(images)):
        handle_bad(f"mask {masks[stem]} has no image in {root / 'images'} (matched by stem {stem!r})", on_error)
    stems = sorted(set(images) & set(masks))
    values = {}
    for stem in list(stems):
        try:
            values[masks[stem]] = _unique_values(masks[stem])
        except DatasetError as error:
            handle_bad(str(error), on_error)
            stems.remove(stem)
    if not stems:
        raise DatasetError(f"no image with a matching mask in {root / 'images'} and {root / 'masks'}")
    mapping = value_mapping(values, num_classes, mask_values)
    count = _check_num_classes(num_classes) if num_classes is not None else max(mapping.values()) + 1
    names = options_class_names(class_names=class_names, num_classes=count)
    if len(names) != count:
        raise ValueError(f"class_names has {len(names)} names for {count} classes: {names}")
    units = group_units(root, stems, group) if group is not None else None
    split_dict = resolve_split(stems, split_file=split_file, seed=seed, val_fraction=val_fraction,
                               test_fraction=test_fraction, unit_of=units.__getitem__ if units else None)
    cases = []
    for stem in select(split_dict, split, stems):
        key = ("folder", stem, file_key(images[stem]), file_key(masks[stem]), sorted(mapping.items()), size,
               None if spacing is None else tuple(spacing), 1)
        try:
            cases.append(cached_case(key, lambda: _read_case(stem, images[stem], masks[stem], mapping, size,
                                                             spacing), cache_dir))
        except DatasetError as error:
            handle_bad(str(error), on_error)
    options = dict(size=size, mapping={str(k): v for k, v in mapping.items()})
    return SegmentationDataset(cases, name="folder", class_names=names, dims=dims, split=split_dict,
                               split_name=split, options=options)


def group_units(root: Path, stems: list[str], group: str) -> dict[str, str]:
    """stem -> group for ``group=``: a CSV file (``file,group`` per line) when ``group`` names an
    existing file (relative to ``root`` or absolute), else a regular expression on the stem."""
    import csv
    import re

    table = Path(group) if Path(group).is_absolute() else root / group
    if group.lower().endswith(".csv") or table.is_file():
        if not table.is_file():
            raise DatasetError(f"group file {table} does not exist")
        mapping = {}
        with open(table, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or row[0].strip().lower() in ("", "file", "filename", "stem"):
                    continue
                if len(row) < 2 or not row[1].strip():
                    raise DatasetError(f"group file {table} line {number}: expected 'file,group', got {row!r}")
                mapping[_stem(Path(row[0].strip()))] = row[1].strip()
        missing = [stem for stem in stems if stem not in mapping]
        if missing:
            raise DatasetError(f"group file {table} names no group for {len(missing)} file(s), e.g. {missing[:3]}")
        return {stem: mapping[stem] for stem in stems}
    try:
        pattern = re.compile(group)
    except re.error as error:
        raise ValueError(f"group={group!r} is neither a CSV file in {root} nor a valid regular expression: {error}") from None
    units = {}
    for stem in stems:
        match = pattern.search(stem)
        if match is None:
            raise DatasetError(f"group={group!r} does not match the file stem {stem!r}: every file needs a group")
        units[stem] = match.group(1) if pattern.groups else match.group(0)
    return units
