"""``nnunet``: a dataset in the nnU-Net v2 raw layout, read as it is.

Layout (``root`` is the ``DatasetXXX_Name`` folder)::

    root/dataset.json
    root/imagesTr/<case>_0000<file_ending>   one file per input channel (XXXX = channel index)
    root/imagesTr/<case>_0001<file_ending>
    root/labelsTr/<case><file_ending>
    root/imagesTs/<case>_0000<file_ending>   optional, unlabelled: listed in ``test_images``

``dataset.json``: ``channel_names`` (``{"0": "CT", "1": "T2"}``; the names choose the
normalization, see :mod:`medsegloss.data.multichannel`), ``labels`` (``{"background": 0,
"liver": 1}``; lists of values make overlapping regions, ``{"whole tumor": [1, 2, 3], ...}``,
and the dataset multi-label; an ``"ignore"`` label must have the highest value),
``file_ending`` (``.nii.gz``, ``.nii``, ``.png``, ``.tif``, ``.bmp``) and ``numTraining``.
The cases are the files of ``labelsTr``; an RGB picture may hold all its channels in its one
``_0000`` file (nnU-Net's exception for natural images). Spacing comes from NIfTI headers
(pictures: 1). The split is by case.
"""

from __future__ import annotations

import re
from pathlib import Path

from medsegloss.data.base import DatasetError, handle_bad

PICTURE_ENDINGS = (".png", ".bmp", ".tif", ".tiff")


def read_dataset_json(root) -> dict:
    """``root/dataset.json`` checked for nnU-Net v2's required keys; errors name the file."""
    from medsegloss.data.multichannel import read_dataset_json as read_json

    path, content = read_json(root, "nnU-Net dataset", "dataset.json, imagesTr/ and labelsTr/")
    if "channel_names" not in content and "modality" in content:
        raise DatasetError(f"{path} has 'modality' but no 'channel_names': a Medical Segmentation Decathlon "
                           "dataset.json? load it with get_dataset('msd', ...)")
    missing = [key for key in ("channel_names", "labels", "file_ending", "numTraining") if key not in content]
    if missing:
        raise DatasetError(f"{path} lacks the key(s) {missing} (nnU-Net v2 needs channel_names, labels, "
                           "file_ending, numTraining)")
    return content


def channel_list(channel_names, source) -> list[str]:
    """``{"0": "CT", "1": "T2"}`` -> ``["CT", "T2"]``; the keys must be 0..C-1."""
    if not isinstance(channel_names, dict) or not channel_names:
        raise DatasetError(f"{source}: channel names must be a non-empty object index -> name, got {channel_names!r}")
    keys = sorted(channel_names, key=lambda k: int(k) if str(k).isdigit() else -1)
    if [str(k) for k in keys] != [str(i) for i in range(len(keys))]:
        raise DatasetError(f"{source}: channel keys must be \"0\", \"1\", ... in order, got {list(channel_names)}")
    return [str(channel_names[k]) for k in keys]


def _ending(content, source) -> str:
    ending = content["file_ending"]
    if not isinstance(ending, str) or not ending.startswith("."):
        raise DatasetError(f"{source}: file_ending must be a string like '.nii.gz' or '.png', got {ending!r}")
    if not ending.lower() in (".nii.gz", ".nii") + PICTURE_ENDINGS:
        raise DatasetError(f"{source}: file_ending {ending!r} is not supported (.nii.gz, .nii, .png, .bmp, .tif, .tiff)")
    return ending


def _files_by_case(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    """``<case>_<XXXX><ending>`` files of ``folder``: case -> channel index -> path."""
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    found: dict[str, dict[int, Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            match = pattern.match(path.name)
            if match and path.is_file():
                found.setdefault(match.group(1), {})[int(match.group(2))] = path
    return found


def case_files(root, content, channel_names, on_error: str = "raise"):
    """The labelled cases (``CaseFiles``) and the unlabelled ``imagesTs`` cases (case -> files)."""
    from medsegloss.data.multichannel import CaseFiles

    root = Path(root)
    source = root / "dataset.json"
    ending = _ending(content, source)
    for sub in ("imagesTr", "labelsTr"):
        if not (root / sub).is_dir():
            raise DatasetError(f"nnU-Net dataset root {root} has no {sub}/ folder")
    labels = {path.name[: -len(ending)]: path for path in sorted((root / "labelsTr").iterdir())
              if path.is_file() and path.name.endswith(ending) and not path.name.startswith(".")}
    declared = content["numTraining"]
    if not isinstance(declared, int) or declared != len(labels):
        raise DatasetError(f"{source}: numTraining is {declared!r} but {root / 'labelsTr'} holds {len(labels)} "
                           f"label file(s) ending in {ending!r}")
    images = _files_by_case(root / "imagesTr", ending)
    for case in sorted(set(images) - set(labels)):
        handle_bad(f"case {case!r}: images {[str(p) for p in images[case].values()]} have no label "
                   f"{root / 'labelsTr' / (case + ending)}", on_error)
    picture = ending.lower() in PICTURE_ENDINGS
    files = []
    for case, label in labels.items():
        channels = images.get(case, {})
        if not _declared_channels_only(case, channels, channel_names, source, on_error):
            continue
        if picture and set(channels) == {0} and len(channel_names) > 1:
            paths = (channels[0],)  # an RGB picture: its bands are the channels (checked when read)
        else:
            missing = [c for c in range(len(channel_names)) if c not in channels]
            if missing:
                c = missing[0]
                handle_bad(f"case {case!r}: channel {c} ({channel_names[c]!r}) file "
                           f"{root / 'imagesTr' / f'{case}_{c:04d}{ending}'} does not exist", on_error)
                continue
            paths = tuple(channels[c] for c in range(len(channel_names)))
        files.append(CaseFiles(case, paths, label))
    if not files:
        raise DatasetError(f"no labelled case in {root} (labelsTr/<case>{ending} with imagesTr/<case>_XXXX{ending})")
    tests = {case: tuple(paths[c] for c in sorted(paths))
             for case, paths in _files_by_case(root / "imagesTs", ending).items()
             if _declared_channels_only(case, paths, channel_names, source, on_error)}
    return files, tests


def _declared_channels_only(case: str, channels: dict[int, Path], channel_names, source, on_error: str) -> bool:
    """False (after ``handle_bad``) when ``case`` has channel files beyond those ``source`` declares:
    a dataset.json that forgot a modality would silently train without it."""
    extra = [str(channels[c]) for c in sorted(channels) if c >= len(channel_names)]
    if extra:
        handle_bad(f"case {case!r}: channel file(s) {extra} beyond the {len(channel_names)} channel(s) {source} "
                   f"declares ({', '.join(channel_names)}); declare them in channel_names or remove them", on_error)
    return not extra


def options_class_names(**_) -> None:
    """Only ``dataset.json`` tells the classes."""
    return None


def load(root=None, split: str = "train", *, size: int | None = 256, spacing=None, seed: int = 0, dims: int = 2,
         split_file=None, val_fraction: float = 0.1, test_fraction: float = 0.2, on_error: str = "raise",
         cache_dir=None):
    """An nnU-Net v2 raw dataset (see the module docstring) as slices or volumes.

    Args:
        size: square in-plane side after resampling (``None`` keeps the native size).
        spacing: ``(sz, sy, sx)`` in mm to resample every case to (images trilinear, labels
            nearest neighbour), or ``None`` to keep each case's own spacing.
        on_error: ``"raise"`` or ``"skip"`` (log and leave the case out).

    Returns a :class:`medsegloss.data.multichannel.ChannelDataset` (``multilabel`` when
    ``labels`` has regions).
    """
    from medsegloss.data.multichannel import label_spec, load_cases

    content = read_dataset_json(root)
    source = Path(root) / "dataset.json"
    channel_names = channel_list(content["channel_names"], source)
    spec = label_spec(content["labels"], source)
    files, tests = case_files(root, content, channel_names, on_error)
    return load_cases("nnunet", files, spec, channel_names, split=split, size=size, spacing=spacing, seed=seed,
                      dims=dims, split_file=split_file, val_fraction=val_fraction, test_fraction=test_fraction,
                      on_error=on_error, cache_dir=cache_dir, test_images=tests)
