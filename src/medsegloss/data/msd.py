"""``msd``: a Medical Segmentation Decathlon task (Antonelli et al., Nature Communications 2022),
read as distributed.

Layout (``root`` is the ``TaskXX_Name`` folder)::

    root/dataset.json
    root/imagesTr/BRATS_001.nii.gz    3-D (x, y, z) or 4-D (x, y, z, modality) image
    root/labelsTr/BRATS_001.nii.gz    3-D (x, y, z) labels
    root/imagesTs/BRATS_485.nii.gz    unlabelled: listed in ``test_images``

``dataset.json``: ``modality`` (``{"0": "FLAIR", "1": "T1w", ...}``; ``"CT"`` selects the CT
normalization, see :mod:`medsegloss.data.multichannel`), ``labels`` (``{"0": "background",
"1": "edema", ...}``, consecutive from 0), ``training`` (``[{"image": "./imagesTr/x.nii.gz",
"label": "./labelsTr/x.nii.gz"}, ...]``; the cases, named by the image file) and ``test``.
The archive's macOS ``._*`` files are never read: only the listed files are. The modalities of a
4-D image are its last axis, served as channels ``(C, D, H, W)``.

``regions={"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}`` turns the
integer labels into overlapping regions (BraTS), making the dataset multi-label.
"""

from __future__ import annotations

from pathlib import Path

from medsegloss.data.base import DatasetError, handle_bad

REQUIRED = ("modality", "labels", "training")


def read_dataset_json(root) -> dict:
    """``root/dataset.json`` checked for the Decathlon's keys; errors name the file."""
    from medsegloss.data.multichannel import read_dataset_json as read_json

    path, content = read_json(root, "MSD task", "dataset.json, imagesTr/ and labelsTr/")
    if "modality" not in content and "channel_names" in content:
        raise DatasetError(f"{path} has 'channel_names' but no 'modality': an nnU-Net v2 dataset.json? load it "
                           "with get_dataset('nnunet', ...)")
    missing = [key for key in REQUIRED if key not in content]
    if missing:
        raise DatasetError(f"{path} lacks the key(s) {missing} (the Decathlon's dataset.json has modality, "
                           "labels, training)")
    if not isinstance(content["training"], list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("image"), str) and isinstance(entry.get("label"), str)
            for entry in content["training"]):
        raise DatasetError(f"{path}: 'training' must be a list of {{\"image\": path, \"label\": path}} objects")
    return content


def label_spec_of(labels, regions, source):
    """The :class:`~medsegloss.data.multichannel.LabelSpec` of MSD ``labels`` (value -> name),
    turned into regions when ``regions`` (name -> values) is given."""
    from medsegloss.data.multichannel import LabelSpec, label_spec

    if not isinstance(labels, dict) or not all(str(key).isdigit() for key in labels):
        raise DatasetError(f"{source}: 'labels' must map label values to names ({{\"0\": \"background\", ...}}), "
                           f"got {labels!r}")
    spec = label_spec({str(name): int(value) for value, name in labels.items()}, source)
    if regions is None:
        return spec
    if not isinstance(regions, dict) or not regions:
        raise ValueError(f"regions must be a non-empty dict name -> list of label values, got {regions!r}")
    regional = label_spec({"background": 0, **{str(n): list(v) if isinstance(v, (list, tuple)) else [v]
                                              for n, v in regions.items()}}, "regions=")
    undeclared = sorted({v for values in regional.regions for v in values} - spec.values)
    if undeclared:
        raise ValueError(f"regions use label values {undeclared} that {source} does not declare "
                         f"({sorted(spec.values)})")
    return LabelSpec(regional.class_names, regional.regions, None, spec.values)


def case_files(root, content, on_error: str = "raise"):
    """The labelled cases of ``training`` and the unlabelled ``test`` images (case -> files)."""
    from medsegloss.data.multichannel import CaseFiles
    from medsegloss.data.nifti import strip_suffix

    root = Path(root)
    files, seen, labels = [], {}, {}
    for entry in content["training"]:
        image, label = root / entry["image"], root / entry["label"]
        case = strip_suffix(image.name)
        if case in seen:
            raise DatasetError(f"{root / 'dataset.json'}: case {case!r} is listed twice ({seen[case]} and {image})")
        seen[case] = image
        other = labels.setdefault(label.resolve(), case)  # './labelsTr/a' and 'labelsTr/a' are one file
        if other != case:
            raise DatasetError(f"{root / 'dataset.json'}: cases {other!r} and {case!r} share the label file {label}: "
                               f"one of them would train on the other's label")
        missing = [path for path in (image, label) if not path.is_file()]
        if missing:
            handle_bad(f"case {case!r}: {missing[0]} (listed in {root / 'dataset.json'}) does not exist", on_error)
            continue
        files.append(CaseFiles(case, (image,), label))
    if not files:
        raise DatasetError(f"no labelled case found under {root} from dataset.json's 'training' list")
    tests, listed = {}, content.get("test", []) or []
    if not isinstance(listed, list) or not all(isinstance(entry, str) or (isinstance(entry, dict) and isinstance(
            entry.get("image"), str)) for entry in listed):
        raise DatasetError(f"{root / 'dataset.json'}: 'test' must be a list of image paths (or {{\"image\": path}} "
                           f"objects), got {listed!r}"[:300])
    for entry in listed:
        path = root / (entry if isinstance(entry, str) else entry["image"])
        tests[strip_suffix(path.name)] = (path,)
    return files, tests


def options_class_names(*, regions=None, **_) -> list[str] | None:
    """The region names when ``regions`` is given; otherwise only ``dataset.json`` tells."""
    return list(regions) if regions else None


def load(root=None, split: str = "train", *, size: int | None = 256, spacing=None, regions=None, seed: int = 0,
         dims: int = 2, split_file=None, val_fraction: float = 0.1, test_fraction: float = 0.2,
         on_error: str = "raise", cache_dir=None):
    """A Decathlon task (see the module docstring) as slices or volumes.

    Args:
        size: square in-plane side after resampling (``None`` keeps the native size).
        spacing: ``(sz, sy, sx)`` in mm to resample every case to (images trilinear, labels
            nearest neighbour), or ``None`` to keep each case's own spacing.
        regions: name -> label values, for overlapping regions (multi-label); ``None`` keeps
            the integer classes.
        on_error: ``"raise"`` or ``"skip"`` (log and leave the case out).
    """
    from medsegloss.data.multichannel import load_cases
    from medsegloss.data.nnunet import channel_list

    content = read_dataset_json(root)
    source = Path(root) / "dataset.json"
    channel_names = channel_list(content["modality"], source)
    spec = label_spec_of(content["labels"], regions, source)
    files, tests = case_files(root, content, on_error)
    return load_cases("msd", files, spec, channel_names, split=split, size=size, spacing=spacing, seed=seed,
                      dims=dims, split_file=split_file, val_fraction=val_fraction, test_fraction=test_fraction,
                      on_error=on_error, cache_dir=cache_dir, channels_last_axis=True, test_images=tests)
