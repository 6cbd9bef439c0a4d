"""Reading NIfTI files: arrays in ``(z, y, x)`` order with the matching spacing, and errors that
name the file.

NIfTI stores voxels as ``(x, y, z)`` (the first index runs fastest on disk) with zooms in the
same order. Everything in medsegloss uses array order ``(D, H, W)`` = ``(z, y, x)``, so the
reader reverses the axes and the spacing together, once, here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsegloss.data.base import DatasetError

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
    if any(not s > 0 for s in spacing):
        spacing = (1.0,) * array.ndim  # a header without zooms: say nothing rather than divide by 0
    array = np.ascontiguousarray(array.transpose(tuple(reversed(range(array.ndim)))))
    if label:
        if np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
                raise DatasetError(f"{path}: label file holds non-integer values "
                                   f"(e.g. {array[array != np.round(array)][:3].tolist()})")
        return array.astype(np.int64), spacing, affine
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise DatasetError(f"{path}: image holds {int((~np.isfinite(array)).sum())} non-finite voxels")
    return array, spacing, affine


def as_volume(array: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 2-D ``(H, W)`` image as a one-slice volume ``(1, H, W)`` with slice spacing 1."""
    if array.ndim == 2:
        return array[None], (1.0, *spacing)
    return array, tuple(spacing)
