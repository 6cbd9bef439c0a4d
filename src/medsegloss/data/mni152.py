"""``mni152-tissue``: the ICBM 2009a nonlinear symmetric MNI152 T1 template (1 mm, 197x233x189)
with background / grey matter / white matter labels from its tissue probability maps.

The three files ship inside the ``nilearn`` wheel (``nilearn/datasets/data/``); they are read
from the installed package without importing nilearn (its own dependencies are not needed:
``pip install --no-deps nilearn``), or from ``root=`` if you keep copies elsewhere.

This is **one averaged brain**, not a cohort: slices of it are strongly correlated. To keep
train and test apart, the brain is cut along the slicing axis into contiguous slabs (the
"cases") separated by ``gap`` discarded slices, and slabs (never slices) are split.

Labels: with ``gm``, ``wm`` the maps (0-255) and ``bg = clip(255 - gm - wm, 0)`` the rest
(CSF, skull, air), each voxel takes ``argmax(bg, gm, wm)`` (ties go to the lower label).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from medsegloss.data.base import Case, DatasetError

CLASS_NAMES = ["background", "GM", "WM"]
FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


def template_files(root=None) -> dict[str, Path]:
    """Paths of the T1 template and the GM / WM maps: in ``root`` if given, else in nilearn's
    installed data folder (found without importing nilearn)."""
    if root is not None:
        folder = Path(root)
    else:
        spec = importlib.util.find_spec("nilearn")
        if spec is None or not spec.submodule_search_locations:
            raise DatasetError("mni152-tissue reads the MNI152 template shipped with nilearn, which is not "
                               "installed: pip install --no-deps nilearn")
        folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    paths = {key: folder / name for key, name in FILES.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise DatasetError(f"MNI152 template file(s) not found: {missing} (pip install --no-deps nilearn, "
                           "or pass root= a folder holding them)")
    return paths


def tissue_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """``argmax(bg, gm, wm)`` with ``bg = clip(255 - gm - wm, 0)``, as uint8 (0 bg, 1 GM, 2 WM).

    >>> tissue_labels(np.array([200, 60, 10, 100]), np.array([10, 150, 20, 100])).tolist()
    [1, 2, 0, 1]
    """
    gm, wm = np.asarray(gm, np.float32), np.asarray(wm, np.float32)
    background = np.clip(255.0 - gm - wm, 0, None)
    return np.argmax(np.stack([background, gm, wm]), axis=0).astype(np.uint8)


def _volume(paths: dict[str, Path], axis: int, size: int | None) -> Case:
    """The whole template, reoriented so ``axis`` comes first, normalized and resized."""
    from medsegloss.data.nifti import read_nifti
    from medsegloss.data.transforms import normalize_percentile, resize_case

    t1, spacing, _ = read_nifti(paths["t1"])
    gm, _, _ = read_nifti(paths["gm"])
    wm, _, _ = read_nifti(paths["wm"])
    if not t1.shape == gm.shape == wm.shape:
        raise DatasetError(f"MNI152 files differ in shape: {paths['t1']} {t1.shape}, {paths['gm']} {gm.shape}, "
                           f"{paths['wm']} {wm.shape}")
    label = tissue_labels(gm, wm)
    # read_nifti gives (z, y, x) of RAS+ data: flip z and y so superior and anterior come first
    # (rows of axial slices run anterior -> posterior, of coronal/sagittal superior -> inferior)
    t1, label = t1[::-1, ::-1], label[::-1, ::-1]
    order = (axis,) + tuple(a for a in range(3) if a != axis)
    t1, label = t1.transpose(order), label.transpose(order)
    spacing = tuple(spacing[a] for a in order)
    image = normalize_percentile(t1, 1, 99, mask=t1 > 0)
    return resize_case("mni152", image, label, spacing, size)


def _slabs(brain_slices: np.ndarray, num_slabs: int, gap: int) -> list[np.ndarray]:
    """Cut the run of brain slices into ``num_slabs`` contiguous slabs, ``gap`` slices apart."""
    usable = len(brain_slices) - gap * (num_slabs - 1)
    if num_slabs < 1 or usable < num_slabs:
        raise ValueError(f"cannot cut {len(brain_slices)} brain slices into {num_slabs} slabs with gap {gap}")
    bounds = np.linspace(0, usable, num_slabs + 1).round().astype(int)
    return [brain_slices[bounds[k] + k * gap: bounds[k + 1] + k * gap] for k in range(num_slabs)]


def load(root=None, split: str = "train", *, size: int = 256, axis="axial", num_slabs: int = 10, gap: int = 3,
         min_brain_fraction: float = 0.01, seed: int = 0, dims: int = 2, split_file=None,
         val_fraction: float = 0.1, test_fraction: float = 0.2):
    """``mni152-tissue`` slices (or slab volumes with ``dims=3``).

    Args:
        axis: ``"axial"``, ``"coronal"``, ``"sagittal"`` (or 0, 1, 2 in that order).
        num_slabs: number of cases (contiguous slabs of slices).
        gap: slices dropped between neighbouring slabs, so no train slice touches a test slice.
        min_brain_fraction: slices whose GM + WM cover less of the slice are skipped.
    """
    from medsegloss.data.base import SegmentationDataset
    from medsegloss.data.cache import cached_case, file_key
    from medsegloss.data.splits import resolve_split, select

    axis_index = AXES.get(axis, axis)
    if axis_index not in (0, 1, 2):
        raise ValueError(f"axis must be one of {list(AXES)} or 0, 1, 2, got {axis!r}")
    paths = template_files(root)
    key = ("mni152", tuple(file_key(p) for p in paths.values()), axis_index, size, 1)
    volume = cached_case(key, lambda: _volume(paths, axis_index, size))
    brain_fraction = (volume.label > 0).mean(axis=(1, 2))
    brain_slices = np.flatnonzero(brain_fraction >= min_brain_fraction)
    brain_slices = np.arange(brain_slices.min(), brain_slices.max() + 1) if brain_slices.size else brain_slices
    slabs = _slabs(brain_slices, int(num_slabs), int(gap))
    ids = [f"slab{k:02d}" for k in range(len(slabs))]
    split_dict = resolve_split(ids, split_file=split_file, seed=seed, val_fraction=val_fraction,
                               test_fraction=test_fraction)
    by_id = {case: slice(int(slab[0]), int(slab[-1]) + 1) for case, slab in zip(ids, slabs)}  # views, no copies
    cases = [Case(case_id, volume.image[by_id[case_id]], volume.label[by_id[case_id]], volume.spacing)
             for case_id in select(split_dict, split, ids)]
    options = dict(size=size, axis=axis, num_slabs=num_slabs, gap=gap, min_brain_fraction=min_brain_fraction)
    return SegmentationDataset(cases, name="mni152-tissue", class_names=CLASS_NAMES, dims=dims, split=split_dict,
                               split_name=split, options=options)
