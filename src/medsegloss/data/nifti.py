"""Reading NIfTI files: arrays in ``(z, y, x)`` order with the matching spacing, and errors that
name the file.

NIfTI stores voxels as ``(x, y, z)`` (the first index runs fastest on disk) with zooms in the
same order. Everything in medsegloss uses array order ``(D, H, W)`` = ``(z, y, x)``, so the
reader reverses the axes and the spacing together, once, here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsegloss.data.base import DatasetError, check_finite_image

MAX_ZOOM = 1e6  # a voxel over a kilometre wide: a corrupt header, not a scan

SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path) -> bool:
    return str(path).lower().endswith(SUFFIXES)


def strip_suffix(name: str) -> str:
    """File name without ``.nii.gz`` / ``.nii`` (or any last suffix)."""
    lower = name.lower()
    for suffix in SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def read_nifti(path, *, label: bool = False) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """Decode a 2-D or 3-D NIfTI file.

    Returns ``(array, spacing, affine)``: ``array`` in reversed axis order (``(z, y, x)``;
    float32, or int64 when ``label``), ``spacing`` the header's zooms in the same order, and the
    header's affine (still in NIfTI ``(x, y, z)`` convention).

    Raises:
        DatasetError naming the file when it is missing, corrupt or truncated, not 2-D/3-D, holds
        non-finite values, or (``label=True``) non-integer label values.
    """
    import nibabel

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"NIfTI file {path} does not exist")
    try:
        image = nibabel.load(str(path))
        array = np.asarray(image.dataobj)
        zooms = tuple(float(z) for z in image.header.get_zooms())
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as error:  # nibabel raises many types (EOFError, zlib.error, ImageFileError...)
        raise DatasetError(f"cannot read NIfTI file {path} (corrupt or truncated?): "
                           f"{type(error).__name__}: {error}") from error
    if array.ndim == 4 and array.shape[3] == 1:
        array, zooms = array[..., 0], zooms[:3]
    if array.ndim not in (2, 3):
        raise DatasetError(f"{path}: expected a 2-D or 3-D volume, got shape {array.shape}")
    spacing = tuple(reversed(zooms[: array.ndim]))
    if any(not np.isfinite(s) or s > MAX_ZOOM for s in spacing):
        raise DatasetError(f"{path}: the header's voxel size {tuple(zooms[: array.ndim])} is not a finite size "
                           f"(at most {MAX_ZOOM:g}); fix the header's pixdim")
    if any(not s > 0 for s in spacing):
        spacing = (1.0,) * array.ndim  # a header without zooms: say nothing rather than divide by 0
    array = np.ascontiguousarray(array.transpose(tuple(reversed(range(array.ndim)))))
    if label:
        return integer_labels(array, path), spacing, affine
    return check_finite_image(array.astype(np.float32, copy=False), path), spacing, affine


LARGEST_LABEL = 2**53  # float64 holds every integer up to here exactly; int64 holds them all


def integer_labels(array: np.ndarray, path) -> np.ndarray:
    """A mask's values as int64, refusing what the conversion would change silently: fractional
    values (0.7 would become 0), NaN / inf, and values too large for int64 (they would wrap).
    Errors name the file and show the offending values."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise DatasetError(f"mask {path} holds non-finite values ({int((~finite).sum())} of {array.size} "
                               f"voxels are NaN or inf): a mask holds integer class values")
        fractional = array != np.round(array)
        if fractional.any():
            examples = ", ".join(f"{v:.6g}" for v in np.unique(array[fractional])[:5].tolist())
            raise DatasetError(f"mask {path} holds non-integer values (e.g. [{examples}]; {int(fractional.sum())} "
                               "voxels): a mask holds integer class values, not probabilities or an image")
        if array.size and float(np.abs(array).max()) > LARGEST_LABEL:
            raise DatasetError(f"mask {path} holds values up to {float(np.abs(array).max()):g}, beyond any "
                               "class value (a mask holds small integers)")
    elif not np.issubdtype(array.dtype, np.integer):
        raise DatasetError(f"mask {path} has data type {array.dtype}, not integer class values")
    elif array.dtype == np.uint64 and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise DatasetError(f"mask {path} holds values up to {int(array.max())}, beyond any class value")
    return array.astype(np.int64, copy=False)


def as_volume(array: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 2-D ``(H, W)`` image as a one-slice volume ``(1, H, W)`` with slice spacing 1."""
    if array.ndim == 2:
        return array[None], (1.0, *spacing)
    return array, tuple(spacing)
