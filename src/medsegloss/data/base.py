"""The dataset every loader returns: whole cases held in memory, already normalized and resized,
served as 2-D slices or 3-D volumes.

Loaders (phantom, mni152, acdc, covid, folder) only turn files into :class:`Case` objects; this
module owns the item format (the dict of :meth:`SegmentationDataset.__getitem__`), so every
dataset yields the same dicts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger("medsegloss.data")

ON_ERROR = ("raise", "skip")


class DatasetError(ValueError):
    """Bad data on disk (missing root, corrupt file, shape mismatch, label out of range, missing
    mask). The message names the file."""


@dataclass(frozen=True)
class Case:
    """One volume of a dataset, ready to serve.

    Attributes:
        id: case id, unique in the dataset (e.g. ``"patient001_ED"``).
        image: ``(D, H, W)`` normalized intensities (float32, or float16 where memory matters).
        label: ``(D, H, W)`` uint8 class indices in ``[0, num_classes)``.
        spacing: ``(sz, sy, sx)`` voxel size of ``image`` (after resizing), array-axis order.
        single: a single 2-D image (no volume): its items have ``"slice": -1``.
    """

    id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    single: bool = False


def handle_bad(message: str, on_error: str) -> None:
    """Raise :class:`DatasetError` (``on_error="raise"``), or log a warning and let the caller skip
    the case (``on_error="skip"``): bad data is never dropped silently."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if on_error == "raise":
        raise DatasetError(message)
    log.warning("skipped: %s", message)


def check_labels(label: np.ndarray, num_classes: int, path) -> None:
    """Every label value must be a class index; the error names the file and the values found."""
    if label.size and (label.min() < 0 or label.max() >= num_classes):
        values = np.unique(label)
        bad = values[(values < 0) | (values >= num_classes)]
        raise DatasetError(
            f"{path}: label values {bad.tolist()} lie outside the {num_classes} declared classes "
            f"[0, {num_classes - 1}] (values found: {values.tolist()[:20]})"
        )


def check_finite_image(array: np.ndarray, path) -> np.ndarray:
    """Refuse an image holding NaN or infinite values, naming the file and what was found.

    One NaN would turn the whole volume into NaN at the percentile normalisation (and a network's
    output into garbage) without any error; integer arrays cannot hold either and pass for free.
    Returns ``array`` unchanged, so a reader can write ``return check_finite_image(array, path)``.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.inexact):
        return array
    finite = np.isfinite(array)
    if finite.all():
        return array
    bad = array[~finite]
    counts = {"NaN": int(np.isnan(bad).sum()), "+inf": int((bad == np.inf).sum()), "-inf": int((bad == -np.inf).sum())}
    found = ", ".join(f"{count} {kind}" for kind, count in counts.items() if count)
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise DatasetError(
        f"image {path} holds non-finite values ({found} of {array.size} voxels; first at index {first} of "
        f"shape {array.shape}): fix or mask them before segmenting (NaN would spread to the whole volume)"
    )


def mask_without_alpha(bands: np.ndarray, path, mode: str) -> np.ndarray:
    """The label of a mask picture with an alpha band (``(H, W, B)``, alpha last: LA, PA, RGBA),
    so that no label is lost in the alpha: the grey (or palette) values when the alpha is
    constant or only marks where they are non-zero; the alpha when they are constant (classes
    saved as transparency); else an error naming the file. Colour bands that differ come back
    as they are (the caller's colour-mask error)."""
    values, alpha = bands[..., :-1], bands[..., -1]
    if not (values == values[..., :1]).all():
        return values
    values = values[..., 0]
    if (alpha == alpha.flat[0]).all() or np.array_equal(alpha == 0, values == 0):
        return values
    if (values == values.flat[0]).all():
        return alpha
    raise DatasetError(f"mask {path} (mode {mode}) holds different labels in its grey/colour and alpha bands: save "
                       "the class values as a single-channel (grey or palette) image without alpha")


def check_parts(parts: dict) -> None:
    """Refuse a split that cannot give a verdict, before anything is trained: a part without a
    case (the run would be validated or tested on nothing) or a training part whose masks hold
    no foreground (only 0 or the ignore label: nothing to learn, metrics of empty masks).
    ``parts``: part name -> dataset (``train``, ``val``, ``test``, or the parts of a fold)."""
    sizes = {name: len(part.cases) for name, part in parts.items()}
    name = parts["train"].name
    empty = [part for part, size in sizes.items() if size == 0]
    if empty:
        total = len({case for part in parts.values() for case in part.cases})
        raise DatasetError(
            f"{name}: " + " and ".join(f"the {part} part holds no case" for part in empty)
            + f" ({total} case{'s' if total != 1 else ''} in all: "
            + ", ".join(f"{part} {size}" for part, size in sizes.items())
            + "): a run would be evaluated on nothing; add cases or change val_fraction / test_fraction")
    train = parts["train"]
    ignore = train.ignore_index
    if not any(np.any((label != 0) & (label != ignore)) if ignore is not None else np.any(label)
               for label in (train.case(case).label for case in train.cases)):
        raise DatasetError(
            f"{name}: the {sizes['train']} training case(s) hold no foreground (every mask is background, label 0"
            + (f", or the ignore label {ignore}" if ignore is not None else "")
            + "): the model would learn nothing and the metrics would score empty masks; check the masks")


class SegmentationDataset(torch.utils.data.Dataset):
    """Cases of one split, served as slices (``dims=2``) or volumes (``dims=3``).

    Items: ``{"image": float32 (1, H, W) | (1, D, H, W), "label": int64 (H, W) | (D, H, W),
    "case": str, "slice": int (-1 for volumes and single images), "spacing": tuple}`` with the
    in-plane ``(sy, sx)`` spacing for slices and ``(sz, sy, sx)`` for volumes.
    """

    # The interface the trainer, evaluation and predict read; datasets of channels and regions
    # (data/multichannel.py) set their own values.
    multilabel: bool = False  # overlapping regions: multi-hot labels (R, *spatial), one sigmoid each
    ignore_index: int | None = None  # a label value no loss or metric counts (nnU-Net's ignore label)
    channel_names: list[str] | None = None  # the image channels' names (None: one unnamed channel)
    region_names: list[str] | None = None  # multilabel: each region's name
    region_values: list[list[int]] | None = None  # multilabel: the label values each region holds

    def __init__(self, cases: list[Case], *, name: str, class_names: list[str], dims: int,
                 split: dict[str, list[str]], split_name: str, options: dict | None = None):
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 (slices) or 3 (volumes), got {dims!r}")
        self.name = name
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.dims = dims
        # the parts' case lists, plus the "units"/"groups" records (dicts) of data/splits.py
        self.split = {key: dict(value) if isinstance(value, dict) else list(value) for key, value in split.items()}
        self.split_name = split_name
        self.options = dict(options or {})
        self._cases = list(cases)
        self._by_id = {case.id: case for case in self._cases}
        if dims == 2:
            # slices run along the third axis from the end: (D, H, W), or (C, D, H, W) with channels
            self._index = [(c, z) for c, case in enumerate(self._cases) for z in range(case.image.shape[-3])]
        else:
            self._index = [(c, -1) for c in range(len(self._cases))]

    @property
    def cases(self) -> list[str]:
        """The ids of this split's cases, in order."""
        return [case.id for case in self._cases]

    def case(self, case_id: str) -> Case:
        """The whole :class:`Case` (normalized image and label volumes, spacing)."""
        try:
            return self._by_id[case_id]
        except KeyError:
            raise KeyError(f"case {case_id!r} is not in the {self.split_name!r} split of {self.name}") from None

    def volume_spacing(self, case_id: str) -> tuple[float, float, float]:
        """The case's 3-D voxel size ``(sz, sy, sx)`` of the served (resized) arrays."""
        return self.case(case_id).spacing

    def save_split(self, path) -> None:
        """Write the split (every split's case ids) as JSON, atomically."""
        from medsegloss.data.splits import save_split

        save_split(self.split, path, dataset=self.name)

    def __len__(self) -> int:
        return len(self._index)

    def item_arrays(self, index: int) -> tuple:
        """``(case, image, label, spacing, slice)`` of item ``index``: the whole volume (dims 3,
        slice -1) or slice ``z`` along the third axis from the end (a channel axis stays)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        case_index, z = self._index[index]
        case = self._cases[case_index]
        if self.dims == 3:
            return case, case.image, case.label, case.spacing, -1
        return case, case.image[..., z, :, :], case.label[z], case.spacing[1:], (-1 if case.single else z)

    def __getitem__(self, index: int) -> dict:
        case, image, label, spacing, slice_ = self.item_arrays(index)
        return {
            "image": torch.from_numpy(np.array(image, dtype=np.float32)[None]),  # a copy, never a view
            "label": torch.from_numpy(np.asarray(label, dtype=np.int64)),
            "case": case.id,
            "slice": slice_,
            "spacing": tuple(float(s) for s in spacing),
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split_name!r}, cases={len(self._cases)}, "
                f"items={len(self)}, dims={self.dims}, classes={self.class_names})")
