"""Datasets: synthetic phantoms, the MNI152 tissue template, ACDC, COVID-19 CT, image folders and
the nnU-Net / Medical Segmentation Decathlon layouts, all behind one call and one item format.

>>> from medsegloss.data import get_dataset
>>> train = get_dataset("phantom-lesion", size=64, num_cases=4, slices_per_case=4)
>>> item = train[0]
>>> tuple(item["image"].shape), tuple(item["label"].shape), train.num_classes
((1, 64, 64), (64, 64), 2)

Every dataset is a ``torch.utils.data.Dataset`` of dicts ``{"image", "label", "case", "slice",
"spacing"}`` with ``num_classes``, ``class_names``, ``cases``, ``dims``, ``split``,
``volume_spacing(case)`` and ``save_split(path)`` (see :mod:`medsegloss.data.base`).
Loaders are imported on first use: importing this package reads no file.
"""

from __future__ import annotations

from medsegloss._checks import unknown_name
import importlib
import inspect
from dataclasses import dataclass

from medsegloss.data.base import Case, DatasetError, SegmentationDataset
from medsegloss.data.transforms import WithDistanceMaps

__all__ = ["get_dataset", "available", "info", "class_names", "DatasetInfo", "WithDistanceMaps", "DatasetError",
           "SegmentationDataset", "Case"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a dataset before loading it."""

    name: str
    loader: str  # "module:function" called by get_dataset
    description: str
    class_names: tuple[str, ...]  # default target; some datasets change it with an option
    needs_root: bool
    dims: tuple[int, ...]  # 2 = slices, 3 = volumes
    options_class_names: str | None = None  # "module:function" giving the class names from the options


_DATASETS = {
    info.name: info
    for info in (
        DatasetInfo("phantom-lesion", "medsegloss.data.phantom:load_lesion",
                    "synthetic chest CT slices: small, faint, blurred lesions in textured lungs (0.5-3 % fg)",
                    ("background", "lesion"), False, (2, 3)),
        DatasetInfo("phantom-cardiac", "medsegloss.data.phantom:load_cardiac",
                    "synthetic cine-MRI short-axis stacks: RV crescent, LV myocardium ring, LV cavity",
                    ("background", "RV", "MYO", "LV"), False, (2, 3)),
        DatasetInfo("mni152-tissue", "medsegloss.data.mni152:load",
                    "MNI152 2009a T1 template (shipped with nilearn) with grey/white matter labels; "
                    "one averaged brain, split into slabs",
                    ("background", "GM", "WM"), False, (2, 3)),
        DatasetInfo("acdc", "medsegloss.data.acdc:load",
                    "ACDC cine-MRI (MICCAI 2017), ED and ES frames; split stratified by pathology",
                    ("background", "RV", "MYO", "LV"), True, (2, 3)),
        DatasetInfo("covid-ct", "medsegloss.data.covid:load",
                    "COVID-19 CT Lung and Infection Segmentation (20 cases); target infection or "
                    "lungs+infection",
                    ("background", "infection"), True, (2, 3), "medsegloss.data.covid:options_class_names"),
        DatasetInfo("folder", "medsegloss.data.folder:load",
                    "your own images/ and masks/ (PNG, JPEG, TIFF, NIfTI) matched by file stem",
                    (), True, (2, 3), "medsegloss.data.folder:options_class_names"),
        DatasetInfo("nnunet", "medsegloss.data.nnunet:load",
                    "an nnU-Net v2 raw dataset (dataset.json, imagesTr/, labelsTr/): multi-channel, "
                    "NIfTI or pictures, integer classes or overlapping regions, ignore label",
                    (), True, (2, 3), "medsegloss.data.nnunet:options_class_names"),
        DatasetInfo("msd", "medsegloss.data.msd:load",
                    "a Medical Segmentation Decathlon task (dataset.json, 4-D multi-modal NIfTI); "
                    "regions= for BraTS-style overlapping regions",
                    (), True, (2, 3), "medsegloss.data.msd:options_class_names"),
    )
}


def available() -> list[str]:
    """Dataset names accepted by :func:`get_dataset`."""
    return list(_DATASETS)


def info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; an unknown name raises ``ValueError`` naming the closest."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise unknown_name("dataset", name, _DATASETS) from None


def loader(name: str):
    """The function behind ``name`` (its keyword-only parameters are the dataset's options)."""
    module, function = info(name).loader.split(":")
    return getattr(importlib.import_module(module), function)


def class_names(name: str, **options) -> list[str] | None:
    """The class names dataset ``name`` has when built with ``options``, without reading its
    files: ``covid-ct`` with ``target="lungs+infection"`` has 3. None where only the files tell
    (a ``folder`` dataset given neither ``class_names`` nor ``num_classes``).

    >>> class_names("covid-ct", target="lungs+infection")
    ['background', 'lung', 'infection']
    """
    entry = info(name)
    if entry.options_class_names is None:
        return list(entry.class_names)
    module, function = entry.options_class_names.split(":")
    return getattr(importlib.import_module(module), function)(**options)


def get_dataset(name: str, root=None, split: str = "train", **options) -> SegmentationDataset:
    """Load one split of a dataset.

    Args:
        name: one of :func:`available`.
        root: the dataset's folder (``None`` for phantoms and mni152-tissue).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        **options: ``size`` (square output side), ``seed``, ``split_file``, ``dims`` (2 slices,
            3 volumes), ``val_fraction``, ``test_fraction``, and the dataset's own options
            (``medsegloss datasets --options`` lists them).
    """
    function = loader(name)
    accepted = [p.name for p in inspect.signature(function).parameters.values() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"dataset {name!r} has no option(s) {unknown}; its options are: {', '.join(accepted)}")
    if info(name).needs_root and root is None:
        raise ValueError(f"dataset {name!r} needs root= (the folder holding its files)")
    return function(root, split, **options)
