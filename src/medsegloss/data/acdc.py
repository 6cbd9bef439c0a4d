"""``acdc``: the Automated Cardiac Diagnosis Challenge cine-MRI dataset (Bernard et al., IEEE TMI
2018), end-diastolic (ED) and end-systolic (ES) frames with their ground truth.

Layout (as distributed)::

    ROOT/training/patient001/Info.cfg                  "ED: 1", "ES: 12", "Group: DCM", ...
    ROOT/training/patient001/patient001_frame01.nii.gz  (x, y, z) image of the ED frame
    ROOT/training/patient001/patient001_frame01_gt.nii.gz
    ROOT/testing/patient101/...

``root`` may be the parent of ``training/`` and ``testing/`` or either folder. Every patient
with ground truth is used; each frame is a case (``patient001_ED``), and a patient's frames stay
in the same split part (split by patient, stratified by the pathology group of ``Info.cfg``).
Arrays are transposed from NIfTI's ``(x, y, z)`` to ``(z, y, x)`` with the header spacing in the
same order; intensities are clipped to the 1st-99th percentile and z-scored per volume.
Labels: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity.
"""

from __future__ import annotations

import re
from pathlib import Path

from medsegloss.data.base import DatasetError, handle_bad

CLASS_NAMES = ["background", "RV", "MYO", "LV"]
FRAMES = ("ED", "ES")
_PATIENT = re.compile(r"^patient\d+$")


def read_info(path) -> dict[str, str]:
    """Parse an ``Info.cfg`` (``key: value`` lines) into a dict of strings."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist (every ACDC patient folder has an Info.cfg)")
    info = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise DatasetError(f"{path}, line {number}: expected 'key: value', got {line!r}")
        info[key.strip()] = value.strip()
    for key in FRAMES:
        if not info.get(key, "").isdigit():
            raise DatasetError(f"{path}: missing or non-integer {key!r} frame number (got {info.get(key)!r})")
    return info


def patient_folders(root) -> list[Path]:
    """Patient folders under ``root`` (the parent of training/testing, or either folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"ACDC root {root} does not exist or is not a folder")
    parts = [root / name for name in ("training", "testing") if (root / name).is_dir()] or [root]
    folders = sorted((p for part in parts for p in part.iterdir() if p.is_dir() and _PATIENT.match(p.name)),
                     key=lambda p: p.name)
    if not folders:
        raise DatasetError(f"no ACDC patient folders (patientXXX/) found in {root} "
                           "(expected ROOT/training/patient001/, ROOT/patient001/ or similar)")
    return folders


def _frame_file(folder: Path, frame: int, suffix: str = "") -> Path:
    stem = f"{folder.name}_frame{frame:02d}{suffix}"
    for extension in (".nii.gz", ".nii"):
        if (folder / f"{stem}{extension}").is_file():
            return folder / f"{stem}{extension}"
    return folder / f"{stem}.nii.gz"


def _read_case(case_id: str, image_path: Path, label_path: Path, size):
    from medsegloss.data.base import check_labels
    from medsegloss.data.nifti import read_nifti
    from medsegloss.data.transforms import normalize_percentile, resize_case

    image, spacing, _ = read_nifti(image_path)
    label, _, _ = read_nifti(label_path, label=True)
    if image.shape != label.shape:
        raise DatasetError(f"image {image_path} has shape {image.shape} (z, y, x) but its label "
                           f"{label_path} has {label.shape}")
    check_labels(label, len(CLASS_NAMES), label_path)
    if image.ndim == 2:
        image, label, spacing = image[None], label[None], (1.0, *spacing)
    return resize_case(case_id, normalize_percentile(image, 1, 99), label, spacing, size)


def load(root=None, split: str = "train", *, size: int = 256, frames=FRAMES, seed: int = 0, dims: int = 2,
         split_file=None, val_fraction: float = 0.1, test_fraction: float = 0.2, on_error: str = "raise",
         cache_dir=None):
    """``acdc`` ED/ES frames as slices (or volumes with ``dims=3``).

    Args:
        frames: which of ``("ED", "ES")`` to use.
        on_error: ``"raise"`` (default) or ``"skip"``: log a warning and leave the case out
            (missing Info.cfg, image or ground truth; corrupt file; bad shape or labels).
        cache_dir: folder for the on-disk ``.npy`` cache of decoded volumes.
    """
    from medsegloss.data.base import SegmentationDataset
    from medsegloss.data.cache import cached_case, file_key
    from medsegloss.data.splits import resolve_split, select

    frames = tuple(frames)
    if not frames or any(frame not in FRAMES for frame in frames):
        raise ValueError(f"frames must be a non-empty subset of {FRAMES}, got {frames!r}")
    files, groups = {}, {}
    for folder in patient_folders(root):
        try:
            info = read_info(folder / "Info.cfg")
        except DatasetError as error:
            handle_bad(str(error), on_error)
            continue
        groups[folder.name] = info.get("Group", "")
        for frame in frames:
            image_path = _frame_file(folder, int(info[frame]))
            label_path = _frame_file(folder, int(info[frame]), "_gt")
            if not image_path.is_file():
                handle_bad(f"{image_path} ({frame} frame of {folder / 'Info.cfg'}) does not exist", on_error)
            elif not label_path.is_file():
                handle_bad(f"{image_path} has no ground truth: {label_path} does not exist (an old release "
                           "without test labels? on_error='skip' leaves such frames out)", on_error)
            else:
                files[f"{folder.name}_{frame}"] = (image_path, label_path)
    ids = sorted(files)
    split_dict = resolve_split(ids, split_file=split_file, seed=seed, val_fraction=val_fraction,
                               test_fraction=test_fraction, unit_of=lambda case: case.rsplit("_", 1)[0],
                               group_of=groups.get)
    cases = []
    for case_id in select(split_dict, split, ids):
        image_path, label_path = files[case_id]
        key = ("acdc", case_id, file_key(image_path), file_key(label_path), size, 1)
        try:
            cases.append(cached_case(key, lambda: _read_case(case_id, image_path, label_path, size), cache_dir))
        except DatasetError as error:
            handle_bad(str(error), on_error)
    options = dict(size=size, frames=list(frames))
    return SegmentationDataset(cases, name="acdc", class_names=CLASS_NAMES, dims=dims, split=split_dict,
                               split_name=split, options=options)
