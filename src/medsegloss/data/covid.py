"""``covid-ct``: the "COVID-19 CT Lung and Infection Segmentation" dataset (Ma et al., 2020;
20 CT volumes with lung and infection masks).

Two layouts are recognised under ``root`` (folder names case-insensitive):

* the Zenodo release: ``COVID-19-CT-Seg_20cases/``, ``Infection_Mask/``, ``Lung_Mask/``,
  ``Lung_and_Infection_Mask/``, every file named like its image
  (``coronacases_001.nii.gz``, ``radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii.gz``);
* the common re-packaging: ``ct_scans/`` (``coronacases_org_001.nii``,
  ``radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii``), ``infection_mask/``, ``lung_mask/``,
  ``lung_and_infection_mask/`` (``coronacases_001.nii``, ``radiopaedia_4_85506_1.nii``).

Images and masks are matched by a normalized case id (:func:`case_id`). The volumes mix
Hounsfield units (``coronacases``) and intensities already scaled to 0-255 (``radiopaedia``):
HU volumes (minimum below -500) get the lung window [-1000, 400] HU, 0-255 volumes are mapped
linearly, both to [-1, 1]. Images are kept as float16 in memory (20 volumes of ~200-300 slices).

Targets: ``"infection"`` (default; background, infection) or ``"lungs+infection"``
(background, lung, infection) from ``Lung_and_Infection_Mask`` (1 left lung, 2 right lung,
3 infection) or, without it, from ``Lung_Mask`` + ``Infection_Mask``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medsegloss.data.base import DatasetError, handle_bad

TARGETS = {"infection": ["background", "infection"], "lungs+infection": ["background", "lung", "infection"]}
_IMAGE_FOLDERS = ("covid-19-ct-seg_20cases", "ct_scans")
_MASK_FOLDERS = {"infection": "infection_mask", "lung": "lung_mask", "lung_and_infection": "lung_and_infection_mask"}


def case_id(file_name: str) -> str:
    """Normalized case id shared by a volume and its masks in both layouts.

    >>> case_id("coronacases_org_001.nii"), case_id("coronacases_001.nii.gz")
    ('coronacases_001', 'coronacases_001')
    >>> case_id("radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii"), case_id("radiopaedia_4_85506_1.nii")
    ('radiopaedia_4_85506_1', 'radiopaedia_4_85506_1')
    """
    from medsegloss.data.nifti import strip_suffix

    stem = strip_suffix(file_name).lower()
    match = re.fullmatch(r"coronacases_(?:org_)?(\d+)", stem)
    if match:
        return f"coronacases_{int(match.group(1)):03d}"
    match = re.fullmatch(r"radiopaedia_(?:org_)?(?:covid-19-pneumonia-)?(\d+)_(\d+)_(\d+)(?:-dcm)?", stem)
    if match:
        return "radiopaedia_" + "_".join(match.groups())
    return stem.replace("_org_", "_").replace("-dcm", "")


def _subfolders(root: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in root.iterdir() if p.is_dir()}


def _nifti_files(folder: Path, on_error: str) -> dict[str, Path]:
    from medsegloss.data.nifti import is_nifti

    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_nifti(path.name):
            continue
        key = case_id(path.name)
        if key in files:
            handle_bad(f"{path} and {files[key]} both map to case {key!r}", on_error)
            continue
        files[key] = path
    return files


def to_unit_range(volume: np.ndarray, path, intensity: str = "auto") -> np.ndarray:
    """HU -> lung window [-1000, 400]; 0-255 -> linear; both to [-1, 1] (see module doc)."""
    from medsegloss.data.transforms import window

    low, high = float(volume.min()), float(volume.max())
    if intensity == "auto":
        if low < -500:
            intensity = "hu"
        elif low >= 0 and high <= 255.5:
            intensity = "0-255"
        else:
            raise DatasetError(f"{path}: intensities in [{low:g}, {high:g}] are neither Hounsfield units (air "
                               "near -1000) nor 0-255; pass intensity='hu' or '0-255'")
    if intensity == "hu":
        return window(volume, -1000.0, 400.0)
    if intensity == "0-255":
        return window(volume, 0.0, 255.0)
    raise ValueError(f"intensity must be 'auto', 'hu' or '0-255', got {intensity!r}")


def _read_mask(path: Path, allowed: int, shape) -> np.ndarray:
    from medsegloss.data.base import check_labels
    from medsegloss.data.nifti import read_nifti

    mask, _, _ = read_nifti(path, label=True)
    if mask.shape != shape:
        raise DatasetError(f"mask {path} has shape {mask.shape} (z, y, x) but its image has {shape}")
    check_labels(mask, allowed, path)
    return mask


def _read_case(key: str, image_path: Path, masks: dict[str, Path], target: str, intensity: str, size):
    from medsegloss.data.base import Case
    from medsegloss.data.nifti import read_nifti
    from medsegloss.data.transforms import resize_case

    image, spacing, _ = read_nifti(image_path)
    if target == "infection":
        label = _read_mask(masks["infection"], 2, image.shape)
    elif "lung_and_infection" in masks:
        combined = _read_mask(masks["lung_and_infection"], 4, image.shape)
        label = np.array([0, 1, 1, 2], np.uint8)[combined]  # left/right lung -> lung, 3 -> infection
    else:
        label = (_read_mask(masks["lung"], 3, image.shape) > 0).astype(np.uint8)
        label[_read_mask(masks["infection"], 2, image.shape) == 1] = 2
    case = resize_case(key, to_unit_range(image, image_path, intensity), label, spacing, size)
    return Case(case.id, case.image.astype(np.float16), case.label, case.spacing)


def options_class_names(*, target: str = "infection", **_) -> list[str]:
    """The class names of the dataset ``load`` builds with these options (``target``)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
    return list(TARGETS[target])


def load(root=None, split: str = "train", *, size: int = 256, target: str = "infection", intensity: str = "auto",
         seed: int = 0, dims: int = 2, split_file=None, val_fraction: float = 0.1, test_fraction: float = 0.2,
         on_error: str = "raise", cache_dir=None):
    """``covid-ct`` slices (or volumes with ``dims=3``).

    Args:
        target: ``"infection"`` or ``"lungs+infection"``.
        intensity: ``"auto"`` (detect HU vs 0-255 per volume), ``"hu"`` or ``"0-255"``.
        on_error: ``"raise"`` or ``"skip"`` (log a warning and leave the case out).
        cache_dir: folder for the on-disk ``.npy`` cache of decoded volumes (recommended: the
            CT volumes take seconds each to decode).
    """
    from medsegloss.data.base import SegmentationDataset
    from medsegloss.data.cache import cached_case, file_key
    from medsegloss.data.splits import resolve_split, select

    options_class_names(target=target)  # a bad target fails before any file is read
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"covid-ct root {root} does not exist or is not a folder")
    folders = _subfolders(root)
    image_folder = next((folders[name] for name in _IMAGE_FOLDERS if name in folders), None)
    if image_folder is None:
        raise DatasetError(f"no CT folder in {root}: expected one of 'COVID-19-CT-Seg_20cases/' or 'ct_scans/'")
    needed = ["infection"] if target == "infection" else (
        ["lung_and_infection"] if _MASK_FOLDERS["lung_and_infection"] in folders else ["lung", "infection"])
    for kind in needed:
        if _MASK_FOLDERS[kind] not in folders:
            raise DatasetError(f"no {_MASK_FOLDERS[kind]}/ folder in {root} (needed for target={target!r})")
    images = _nifti_files(image_folder, on_error)
    masks = {kind: _nifti_files(folders[_MASK_FOLDERS[kind]], on_error) for kind in needed}
    files = {}
    for key, image_path in images.items():
        missing = [kind for kind in needed if key not in masks[kind]]
        if missing:
            handle_bad(f"{image_path} has no mask in {', '.join(_MASK_FOLDERS[k] + '/' for k in missing)} "
                       f"(case id {key!r})", on_error)
        else:
            files[key] = (image_path, {kind: masks[kind][key] for kind in needed})
    for kind in needed:
        for key in sorted(set(masks[kind]) - set(images)):
            handle_bad(f"mask {masks[kind][key]} has no CT volume in {image_folder} (case id {key!r})", on_error)
    if not files:
        raise DatasetError(f"no CT volume with masks found under {root}")
    ids = sorted(files)
    split_dict = resolve_split(ids, split_file=split_file, seed=seed, val_fraction=val_fraction,
                               test_fraction=test_fraction)
    cases = []
    for key in select(split_dict, split, ids):
        image_path, mask_paths = files[key]
        cache_key = ("covid", key, file_key(image_path), tuple(file_key(p) for p in mask_paths.values()),
                     target, intensity, size, 1)
        try:
            cases.append(cached_case(cache_key, lambda: _read_case(key, image_path, mask_paths, target,
                                                                   intensity, size), cache_dir))
        except DatasetError as error:
            handle_bad(str(error), on_error)
    options = dict(size=size, target=target, intensity=intensity)
    return SegmentationDataset(cases, name="covid-ct", class_names=TARGETS[target], dims=dims, split=split_dict,
                               split_name=split, options=options)
