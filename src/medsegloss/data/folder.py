"""``folder``: your own data as ``ROOT/images/`` and ``ROOT/masks/``, matched by file stem.

Formats: PNG, JPEG, TIFF (multi-page TIFF = a volume), NIfTI (``.nii``, ``.nii.gz``; 2-D or 3-D,
spacing from the header). Colour images are converted to grey (Pillow's ``L``: ITU-R 601 luma);
every image is clipped to its 1st-99th percentile and z-scored.

Mask values -> class indices (the same mapping for every split, from all masks of the folder):

* ``mask_values=[v0, v1, ...]`` given: value ``v_k`` becomes class ``k``; any other value is an error;
* else if the values are within {0, 255} or {0, 1}: binary, 0 -> 0 and 255 (or 1) -> 1;
* else if ``num_classes`` is given: values must already be class indices in ``[0, num_classes)``;
* else: the sorted distinct values become ``0, 1, ..., K-1`` (e.g. {0, 85, 170, 255} -> 0..3).

Masks must be single-channel (grey, palette indices or 1-bit); a colour mask is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsegloss.data.base import DatasetError, handle_bad

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
    return np.stack(frames), (1.0, 1.0, 1.0), len(frames) == 1


def _frame_array(frame, path: Path, mask: bool) -> np.ndarray:
    if mask:
        if frame.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
            bands = np.asarray(frame)
            channels = bands[..., :3] if bands.ndim == 3 else bands
            if channels.ndim == 3 and not (channels == channels[..., :1]).all():
                raise DatasetError(f"mask {path} is a colour image (mode {frame.mode}): save class values as a "
                                   "single-channel (grey or palette) image")
            return np.asarray(channels[..., 0] if channels.ndim == 3 else channels).astype(np.int64)
        return np.asarray(frame).astype(np.int64)
    if frame.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        frame = frame.convert("L")
    return np.asarray(frame).astype(np.float32)


def _unique_values(path: Path) -> np.ndarray:
    from medsegloss.data.cache import file_key

    key = file_key(path)
    if key not in _UNIQUE:
        _UNIQUE[key] = np.unique(read_image(path, mask=True)[0])
    return _UNIQUE[key]


def value_mapping(values_by_file: dict[Path, np.ndarray], num_classes=None, mask_values=None) -> dict[int, int]:
    """Mask value -> class index, by the rules of the module docstring; errors name a file."""
    found = np.unique(np.concatenate(list(values_by_file.values()))) if values_by_file else np.array([0])
    if mask_values is not None:
        mapping = {int(v): k for k, v in enumerate(mask_values)}
    elif set(found.tolist()) <= {0, 255} or set(found.tolist()) <= {0, 1}:
        mapping = {0: 0, 1: 1, 255: 1}
    elif num_classes is not None:
        mapping = {k: k for k in range(int(num_classes))}
    else:
        mapping = {int(v): k for k, v in enumerate(found)}
    for path, values in values_by_file.items():
        unknown = sorted(set(values.tolist()) - set(mapping))
        if unknown:
            raise DatasetError(f"mask {path} holds values {unknown[:10]} outside the declared classes "
                               f"(mask value -> class: {mapping})")
    return mapping


def _read_case(stem, image_path, mask_path, mapping, size, spacing):
    from medsegloss.data.transforms import normalize_percentile, resize_case

    image, image_spacing, single = read_image(image_path)
    mask, _, _ = read_image(mask_path, mask=True)
    if image.shape != mask.shape:
        raise DatasetError(f"image {image_path} has shape {image.shape} but mask {mask_path} has {mask.shape}")
    lookup = np.zeros(int(mask.max()) + 1, np.uint8)
    for value, index in mapping.items():
        if value < lookup.size:
            lookup[value] = index
    if spacing is not None:
        image_spacing = (image_spacing[0], *(float(s) for s in spacing))
    return resize_case(stem, normalize_percentile(image, 1, 99), lookup[mask], image_spacing, size, single)


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
         val_fraction: float = 0.1, test_fraction: float = 0.2, on_error: str = "raise", cache_dir=None):
    """``folder`` images with masks (see the module docstring for the value mapping).

    Args:
        size: square output side (``None`` keeps each image's size: then all must match to batch).
        num_classes, mask_values: see the mapping rules; ``class_names``: names for the classes.
        spacing: in-plane ``(sy, sx)`` pixel size for pictures (default 1; NIfTI: the header).
        on_error: ``"raise"`` or ``"skip"`` (log a warning and leave the file out).
    """
    from medsegloss.data.base import SegmentationDataset
    from medsegloss.data.cache import cached_case, file_key
    from medsegloss.data.splits import resolve_split, select

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
    count = int(num_classes) if num_classes is not None else max(mapping.values()) + 1
    names = options_class_names(class_names=class_names, num_classes=count)
    if len(names) != count:
        raise ValueError(f"class_names has {len(names)} names for {count} classes: {names}")
    split_dict = resolve_split(stems, split_file=split_file, seed=seed, val_fraction=val_fraction,
                               test_fraction=test_fraction)
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
