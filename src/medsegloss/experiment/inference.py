"""Inference with a trained checkpoint: the model of a ``best.pt`` (:func:`load_checkpoint`), its
logits and labels (:func:`predict_logits`, :func:`labels_from_logits`, also used by the trainer's
evaluation and the report's overlays), and the ``medsegloss predict`` command.

``medsegloss predict --checkpoint RUN/best.pt INPUT... --out DIR`` writes one mask per input,
same file name and format: uint8 class labels, a NIfTI mask keeping the input's affine and
header, a PNG mask of the input's size.

Each input is prepared as the datasets prepare training data: the volume's intensities are
clipped to its 1st-99th percentiles and z-scored (``normalize_percentile``), each slice is padded
to a square and resized to the training size. A 2-D model segments slice by slice, a 3-D model
the whole volume; the logits are resized back (bilinear), the padding cropped, and the labels
taken (``logit > 0`` for a one-channel model, else the argmax).

A checkpoint trained on a standard-layout dataset (``nnunet``, ``msd``) carries its data
description (``checkpoint["data"]``, :func:`data_metadata`): the channel names, the CT statistics
of its training split, the in-plane size, the resampling spacing, the regions. Its inputs are
cases of channel files, prepared as that dataset prepared its cases
(:func:`predict_channel_case`): nnU-Net names ``case_0000.nii.gz case_0001.nii.gz ...`` are
grouped into one case by their ``_XXXX`` suffix (written as ``case.nii.gz``), any other file is
one case whose channels are its last axis (a Decathlon 4-D image). Each channel is normalized by
its name's rule with the stored statistics, resampled and resized as in training; the logits are
brought back to the input's grid. Integer classes are written as one uint8 label file; regions
(a multi-label model) as a uint8 multi-hot NIfTI ``(x, y, z, R)``, channel ``r`` = 1 where
``sigmoid(logit_r) > 0.5``, in the region order of ``checkpoint["data"]["region_names"]``.

A 3-D model whose input is larger than its training patch (``config.patch``) is run by
overlapping windows (:func:`~medsegloss.experiment.sliding_window.sliding_window_logits`,
overlap 0.5, Gaussian weights): :func:`model_logits`, also used by the trainer's evaluation.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsegloss import _io
from medsegloss.experiment.config import Config

PNG_SUFFIXES = (".png",)


# ---------------------------------------------------------------- models from checkpoints
def labels_from_logits(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Class labels ``(N, *spatial)``: ``logit > 0`` for one channel, else the argmax; with
    ``multilabel`` (overlapping regions, one sigmoid per channel) the multi-hot ``(N, R, *spatial)``
    of ``sigmoid(logit) > 0.5``, i.e. ``logit > 0`` per channel."""
    if multilabel:
        return (logits > 0).long()
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, amp_dtype=None) -> torch.Tensor:
    """Raw logits ``(N, C, *spatial)`` of ``images (N, 1, *spatial)``, in eval mode, float32."""
    model.eval()
    device = next(model.parameters()).device
    images = images.to(device)
    if images.ndim == 4 and next(model.parameters()).is_contiguous(memory_format=torch.channels_last):
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        return model(images).float()


WINDOW_OVERLAP = 0.5  # sliding windows share half a patch with their neighbours (nnU-Net's default)


def window_patch(patch_size, spatial_dims: int) -> tuple[int, ...] | None:
    """``patch_size`` (an int, a sequence, or None) as a tuple of ``spatial_dims`` ints, or None."""
    if patch_size is None:
        return None
    if isinstance(patch_size, int) and not isinstance(patch_size, bool):
        return (patch_size,) * spatial_dims
    return tuple(int(p) for p in patch_size)


@torch.no_grad()
def model_logits(model: torch.nn.Module, images: torch.Tensor, amp_dtype=None, patch_size=None) -> torch.Tensor:
    """Logits of ``images`` as :func:`predict_logits`, but a volume larger than ``patch_size``
    along some axis (3-D input, a training patch given) by sliding windows: overlap
    :data:`WINDOW_OVERLAP`, Gaussian importance weights, so a model trained on patches never
    sees a whole large volume at once.

    Shape:
        images ``(N, C, *spatial)``; returns float32 ``(N, K, *spatial)`` on the model's device.
    """
    patch = window_patch(patch_size, images.ndim - 2) if images.ndim == 5 else None
    if patch is None or all(size <= p for size, p in zip(images.shape[2:], patch)):
        return predict_logits(model, images, amp_dtype)
    from medsegloss.experiment.sliding_window import sliding_window_logits

    model.eval()
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        return sliding_window_logits(model, images.to(device), patch, overlap=WINDOW_OVERLAP, gaussian=True).float()


def data_metadata(dataset) -> dict | None:
    """What ``predict`` needs to prepare inputs as ``dataset`` (a standard-layout
    :class:`~medsegloss.data.multichannel.ChannelDataset`) prepared its training data, as plain
    JSON values (checkpoints load with ``weights_only=True``); None for other datasets.

    Keys: ``channel_names``, ``ct_statistics`` (channel name -> ``[low, high, mean, std]`` of the
    training split's foreground), ``size`` (in-plane side or None), ``spacing`` (the resampling
    target ``[sz, sy, sx]`` or None), ``multilabel``, ``region_names``, ``region_values``,
    ``ignore_index``.
    """
    channel_names = dataset.channel_names
    if channel_names is None:
        return None
    options = dataset.options
    spacing = options.get("spacing")
    return {"channel_names": [str(name) for name in channel_names],
            "ct_statistics": {str(name): [float(v) for v in values]
                              for name, values in (options.get("ct_statistics") or {}).items()},
            "size": None if options.get("size") is None else int(options["size"]),
            "spacing": None if spacing is None else [float(s) for s in spacing],
            "multilabel": bool(dataset.multilabel),
            "region_names": dataset.region_names,
            "region_values": dataset.region_values,
            "ignore_index": dataset.ignore_index}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely: missing, truncated, corrupt, or holding
    Python objects (which unpickling would run as code). The message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holding Python objects besides tensors and plain data: refused, not loaded."""


def read_checkpoint(path, device="cpu") -> dict:
    """The content of a checkpoint file, loaded with ``torch.load(weights_only=True)``: tensors
    and plain data (dicts, lists, tuples, str, numbers, None) only, so loading a file cannot run
    code. Every checkpoint medsegloss reads goes through here (``best.pt``, ``last.pt``,
    ``last.prev.pt``, ``init_weights``).

    Raises :class:`CheckpointError` naming ``path`` when it is missing, empty, truncated or
    corrupt, or holds anything else (a pickled object: refused, never executed).
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if found:
            raise UnsafeCheckpointError(
                f"refused checkpoint {path}: it holds a Python object ({found[1]}), not only tensors and "
                f"plain data; loading it could run code, so it is not loaded") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch checkpoint "
                              f"(loaded with weights_only=True: {_first_line(error)})") from None
    except (EOFError, RuntimeError, ValueError, OSError) as error:
        reason = "empty" if path.stat().st_size == 0 else f"truncated or corrupt: {_first_line(error)}"
        raise CheckpointError(f"checkpoint {path} is {reason}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


def load_checkpoint(path, device="cpu") -> tuple[torch.nn.Module, Config]:
    """The model of a ``best.pt`` / ``last.pt`` (eval mode, on ``device``) and its run's config.

    The model also carries ``class_names`` and ``dataset_num_classes`` (the dataset's classes;
    ``model.num_classes`` is its output channels, 1 for a one-channel binary model). The file is
    read by :func:`read_checkpoint`: one holding more than tensors and plain data is refused.
    """
    from medsegloss.models import UNet

    path = Path(path)
    checkpoint = read_checkpoint(path, device)
    if not isinstance(checkpoint, dict) or "model_args" not in checkpoint:
        raise ValueError(f"{path} is not a medsegloss checkpoint (no 'model_args'; expected best.pt or last.pt)")
    model_args = dict(checkpoint["model_args"])
    spec = model_args.pop("model", "unet")
    if spec == "unet":
        model = UNet(**model_args)
    else:  # a zoo network: rebuilt from its spec, then the saved weights
        from medsegloss.models.zoo import build_model

        model = build_model(spec, model_args["in_channels"], model_args["num_classes"], dims=model_args["dims"],
                            base_width=model_args["base"], depth=model_args["depth"],
                            deep_supervision=model_args.get("deep_supervision", False))
        model.num_classes = model_args["num_classes"]
    model.load_state_dict(checkpoint["model"])
    model.class_names = checkpoint["class_names"]
    model.dataset_num_classes = checkpoint["num_classes"]
    model.data = checkpoint.get("data")  # None: a checkpoint of a single-channel loader (or older)
    return model.to(device).eval(), Config.from_dict(checkpoint["config"])


# ---------------------------------------------------------------- segmenting files
@torch.no_grad()
def segment_volume(model, volume: np.ndarray, image_size: int | None, batch_size: int = 16,
                   patch_size=None) -> np.ndarray:
    """Labels of a ``(D, H, W)`` image volume (raw intensities), as uint8 ``(D, H, W)``, resized
    in-plane to ``image_size`` (None: padded to a square only); a 3-D model by sliding windows of
    ``patch_size`` when the volume is larger (:func:`model_logits`).

    Shape:
        volume ``(D, H, W)``; returns uint8 ``(D, H, W)`` class labels.
    """
    from medsegloss.data.transforms import normalize_percentile, resize_image

    depth, height, width = volume.shape
    side = max(height, width)
    resized = torch.from_numpy(resize_image(normalize_percentile(volume.astype(np.float32)), image_size or side))
    if model.dims == 3:
        logits = model_logits(model, resized[None, None], patch_size=patch_size)[0].transpose(0, 1)  # (D, C, S, S)
    else:
        logits = torch.cat([predict_logits(model, resized[start:start + batch_size, None])
                            for start in range(0, depth, batch_size)])
    logits = torch.nn.functional.interpolate(logits.cpu(), size=(side, side), mode="bilinear", align_corners=False)
    top, left = (side - height) // 2, (side - width) // 2  # undo pad_to_square's centred padding
    logits = logits[:, :, top:top + height, left:left + width]
    return labels_from_logits(logits).to(torch.uint8).numpy()


def read_nifti_input(path: Path):
    """(image, float32 array) of a NIfTI input; an unreadable file fails naming it."""
    import nibabel

    try:
        image = nibabel.load(str(path))
        array = np.asarray(image.dataobj, dtype=np.float32)  # applies the header's scaling
    except Exception as error:  # nibabel raises many kinds (ImageFileError, EOFError, zlib.error...)
        raise ValueError(f"input {path} is not a readable NIfTI image ({_first_line(error)})") from None
    from medsegloss.data.base import check_finite_image

    check_finite_image(array, path)
    return image, array


def read_png_input(path: Path) -> np.ndarray:
    """The pixels of a PNG input (grayscale; RGB converted); an unreadable file fails naming it."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            array = np.asarray(picture if picture.mode in ("L", "I", "I;16", "F") else picture.convert("L"))
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
        raise ValueError(f"input {path} is not a readable PNG image ({_first_line(error)})") from None
    array = array.astype(np.float32)
    from medsegloss.data.base import check_finite_image

    check_finite_image(array, path)
    return array


def read_nifti_volume(path: Path):
    """(image, float32 array (x, y[, z])) of a 2-D or 3-D NIfTI input (a trailing axis of 1 dropped)."""
    image, array = read_nifti_input(path)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2-D or 3-D NIfTI image, got shape {array.shape}")
    return image, array


def predict_nifti(model, image_size: int, path: Path, target: Path, patch_size=None) -> Path:
    """Segment one NIfTI file into ``target``; the mask keeps its affine and header (uint8)."""
    import nibabel

    image, array = read_nifti_volume(path)
    # NIfTI holds (x, y, z); medsegloss works in array order (z, y, x)
    volume = array.T if array.ndim == 3 else array.T[None]
    labels = segment_volume(model, volume, image_size, patch_size=patch_size)
    labels = labels.T if array.ndim == 3 else labels[0].T
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    mask = type(image)(labels, image.affine, header)
    mask.header.set_slope_inter(1.0, 0.0)  # labels are stored as they are, never rescaled
    _io.save_atomic(target, lambda temp: nibabel.save(mask, str(temp)))
    return target


def predict_png(model, image_size: int, path: Path, target: Path) -> Path:
    """Segment one PNG image (grayscale, or RGB converted to grayscale) into a uint8 PNG ``target``."""
    from PIL import Image

    labels = segment_volume(model, read_png_input(path)[None], image_size)[0]
    _io.save_atomic(target, lambda temp: Image.fromarray(labels, mode="L").save(temp, format="PNG"))
    return target


# ---------------------------------------------------------------- cases of channel files
CHANNEL_NAME = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<ending>\.nii\.gz|\.nii|\.png)$", re.IGNORECASE)


@dataclass(frozen=True)
class ChannelCase:
    """One input case of a multi-channel model: its channel files in channel order and the path
    its label file would have beside them (``folder/case.nii.gz``; the output is placed like an
    input, see :func:`output_paths`)."""

    name: Path
    files: tuple[Path, ...]


def group_channel_files(paths: list[Path]) -> list[ChannelCase]:
    """nnU-Net channel files (``case_0000.nii.gz``, ``case_0001.nii.gz``...) grouped by folder and
    case, in channel order; any other file is a case of its own (a 4-D image: channels on its last
    axis). A case whose channel numbers are not 0, 1, ... fails naming the files and the missing one."""
    groups: dict[tuple, dict[int, Path]] = {}
    order: list[tuple] = []
    for path in paths:
        match = CHANNEL_NAME.match(path.name)
        key = ((path.parent, match["case"], match["ending"]) if match else (path.parent, path.name, ""))
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key][int(match["channel"]) if match else 0] = path
    cases = []
    for key in order:
        folder, case, ending = key
        channels = groups[key]
        if ending:
            missing = [c for c in range(max(channels) + 1) if c not in channels]
            if missing:
                raise ValueError(f"case {case!r}: channel file {folder / f'{case}_{missing[0]:04d}{ending}'} is "
                                 f"missing (given: {', '.join(str(channels[c]) for c in sorted(channels))})")
        name = folder / (case + ending) if ending else folder / case
        cases.append(ChannelCase(name, tuple(channels[c] for c in sorted(channels))))
    return cases


def file_channels(path: Path) -> int:
    """Channels a file holds, from its header: a 4-D NIfTI's last axis, a picture's colour bands."""
    from medsegloss.data.nifti import is_nifti

    if is_nifti(path):
        import nibabel

        shape = nibabel.load(str(path)).shape
        return int(shape[3]) if len(shape) == 4 else 1
    from PIL import Image

    with Image.open(path) as picture:
        return 1 if picture.mode in ("L", "I", "I;16", "F", "1", "P") else 3


def check_channel_cases(cases: list[ChannelCase], data: dict) -> None:
    """Every case holds as many channels as the model takes (counted from the headers); else a
    ValueError naming the files found and the count expected."""
    names = data["channel_names"]
    for case in cases:
        counts = [file_channels(path) for path in case.files]
        if sum(counts) != len(names):
            found = ", ".join(f"{path} ({count})" for path, count in zip(case.files, counts))
            raise ValueError(
                f"case {case.name.name!r}: the model takes {len(names)} channel(s) ({', '.join(names)}) but the "
                f"files given hold {sum(counts)}: {found}. Give one file per channel named "
                f"<case>_0000, <case>_0001, ... (nnU-Net), or one 4-D image with the channels on its last axis")
        check_channel_grid(case)
        if data.get("multilabel") and not is_nifti_path(case.files[0]):
            raise ValueError(f"case {case.name.name!r}: regions (a multi-label model) are written as a multi-hot "
                             f"NIfTI; {case.files[0]} is a picture")


def check_channel_grid(case: ChannelCase) -> None:
    """The NIfTI channel files of one case share one affine (the check training makes against the
    label, from the headers): channels of different grids would be stacked voxel by voxel."""
    from medsegloss.data.multichannel import check_same_affine

    files = [path for path in case.files if is_nifti_path(path)]
    if len(files) > 1:
        import nibabel

        affines = [np.asarray(nibabel.load(str(path)).affine, dtype=np.float64) for path in files]
        for path, affine in zip(files[1:], affines[1:]):
            check_same_affine(case.name.name, (path, affine, "channel file"), (files[0], affines[0], "channel file"))


def is_nifti_path(path: Path) -> bool:
    from medsegloss.data.nifti import is_nifti

    return is_nifti(path)


def read_channel_case(case: ChannelCase):
    """``(image (C, D, H, W) raw float32, spacing (sz, sy, sx), single)`` of a case's files."""
    from medsegloss.data.multichannel import read_file

    arrays, spacing, single = [], None, False
    for path in case.files:
        array, file_spacing, _, file_single = read_file(path, channels_last_axis=True)
        if arrays and array.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f"case {case.name.name!r}: {path} has shape {array.shape[1:]} (z, y, x) but "
                             f"{case.files[0]} has {arrays[0].shape[1:]}")
        if spacing is None:
            spacing, single = file_spacing, file_single
        arrays.append(array)
    return np.concatenate(arrays) if len(arrays) > 1 else arrays[0], spacing, single


@torch.no_grad()
def segment_channels(model, data: dict, image: np.ndarray, spacing, single: bool, patch_size=None,
                     batch_size: int = 16) -> np.ndarray:
    """Labels of one raw case ``image (C, D, H, W)``, prepared as the training dataset prepared
    its cases (normalization by channel name, resampling to ``data["spacing"]``, in-plane resize
    to ``data["size"]``); the logits are brought back to the input grid before the labels are
    taken.

    Shape:
        image ``(C, D, H, W)``; returns uint8 ``(D, H, W)`` labels, or ``(R, D, H, W)`` multi-hot
        for a multi-label model.
    """
    from medsegloss.data.multichannel import normalize_channel, resample, resize

    names, statistics = data["channel_names"], data.get("ct_statistics") or {}
    for name in names:
        if name.lower() == "ct" and name not in statistics:
            raise ValueError(f"the checkpoint has no CT statistics for channel {name!r}: it cannot normalize "
                             "like its training data")
    image = np.stack([normalize_channel(image[c], name, statistics.get(name)) for c, name in enumerate(names)])
    shape = image.shape[1:]
    blank = np.zeros(shape, np.uint8)
    if data.get("spacing") is not None:
        image, blank, spacing = resample(image, blank, spacing, tuple(data["spacing"]), single)
    resampled = image.shape[1:]
    image = resize("input", image, blank, spacing, data.get("size"), single).image  # (C, D', S, S)
    tensor = torch.from_numpy(np.ascontiguousarray(image, np.float32))
    if model.dims == 3:
        logits = model_logits(model, tensor[None], patch_size=patch_size)[0].transpose(0, 1).cpu()  # (D', K, S, S)
    else:
        slices = tensor.transpose(0, 1)  # (D', C, S, S)
        logits = torch.cat([predict_logits(model, slices[start:start + batch_size]).cpu()
                            for start in range(0, len(slices), batch_size)])
    height, width = resampled[1:]
    side = max(height, width)
    if logits.shape[-1] != side:
        logits = torch.nn.functional.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False)
    top, left = (side - height) // 2, (side - width) // 2  # undo pad_to_square's centred padding
    logits = logits[:, :, top:top + height, left:left + width]
    if tuple(resampled) != tuple(shape):  # back from the training spacing to the input's grid
        volume = logits.transpose(0, 1)[None]  # (1, K, D', H', W')
        logits = torch.nn.functional.interpolate(volume, size=tuple(shape), mode="trilinear",
                                                 align_corners=False)[0].transpose(0, 1)
    multilabel = bool(data.get("multilabel"))
    labels = labels_from_logits(logits, multilabel).to(torch.uint8)  # (D, H, W) or (D, R, H, W)
    return (labels.transpose(0, 1) if multilabel else labels).contiguous().numpy()


def predict_channel_case(model, data: dict, case: ChannelCase, target: Path, patch_size=None) -> Path:
    """Segment one case of channel files into ``target``: a NIfTI label file with the first
    channel file's affine and header (uint8; regions multi-hot ``(x, y, z, R)``), or a PNG."""
    image, spacing, single = read_channel_case(case)
    labels = segment_channels(model, data, image, spacing, single, patch_size)
    first = case.files[0]
    if not is_nifti_path(first):
        from PIL import Image

        _io.save_atomic(target, lambda temp: Image.fromarray(labels[0], mode="L").save(temp, format="PNG"))
        return target
    import nibabel

    source = nibabel.load(str(first))
    # medsegloss works in (z, y, x) order, NIfTI holds (x, y, z); regions go on the last axis
    array = labels.transpose(3, 2, 1, 0) if labels.ndim == 4 else labels.T
    header = source.header.copy()
    header.set_data_dtype(np.uint8)
    mask = type(source)(np.ascontiguousarray(array), source.affine, header)
    mask.header.set_slope_inter(1.0, 0.0)  # labels are stored as they are, never rescaled
    _io.save_atomic(target, lambda temp: nibabel.save(mask, str(temp)))
    return target



def check_device(device: str) -> torch.device:
    """``--device``: cpu, cuda, cuda:N or mps, present on this machine; else a ValueError naming it."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(device)):
        raise ValueError(f"--device {device!r}: expected cpu, cuda, cuda:N or mps")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine (torch.cuda.is_available() is False)")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: no such GPU (this machine has {torch.cuda.device_count()})")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS is not available on this machine")
    return torch.device(device)


def check_inputs(inputs) -> list[Path]:
    """Every input exists, is NIfTI or PNG by name and has a readable header, and none is given
    twice (the same file under two names included); checked before any work."""
    from medsegloss.data.nifti import is_nifti

    paths, seen = [Path(path) for path in inputs], {}
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"input {path} does not exist" if not path.exists() else f"input {path} is not a file")
        if not (is_nifti(path) or path.suffix.lower() in PNG_SUFFIXES):
            raise ValueError(f"input {path} is neither NIfTI (.nii, .nii.gz) nor PNG")
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"input {path} is given twice (also as {seen[real]})")
        seen[real] = path
        check_readable(path, is_nifti(path))
    return paths


def check_readable(path: Path, nifti: bool) -> None:
    """The file's header parses as its format (cheap: the voxels are read later)."""
    try:
        if nifti:
            import nibabel

            nibabel.load(str(path))
        else:
            from PIL import Image

            with Image.open(path) as picture:
                if picture.format != "PNG":
                    raise ValueError(f"its content is {picture.format}, not PNG")
    except Exception as error:  # any parser failure: the user needs the file name, not the parser's trace
        kind = "NIfTI" if nifti else "PNG"
        raise ValueError(f"input {path} is not a readable {kind} image ({_first_line(error)})") from None


def output_paths(inputs: list[Path], out: Path, overwrite: bool = False, sources=None) -> list[Path]:
    """Where each input's mask goes: its path relative to the inputs' deepest common folder,
    under ``out`` (inputs of one folder: ``out/<file name>``; ``a/x.nii`` and ``b/x.nii``:
    ``out/a/x.nii`` and ``out/b/x.nii``), so two masks never share a path.

    Refused: ``out`` that is a file; a mask path that is an input (``--out`` = the inputs' folder,
    even through a link), whatever ``overwrite`` says; a mask path that exists, unless
    ``overwrite``. ``sources``: the files read, when ``inputs`` name cases rather than files
    (channel files of one case); none of them is ever replaced either."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    absolute = [Path(os.path.abspath(path)) for path in inputs]
    common = Path(os.path.commonpath([path.parent for path in absolute]))
    targets = [out / path.relative_to(common) for path in absolute]
    real_inputs = {os.path.realpath(path): path for path in (inputs if sources is None else sources)}
    for source, target in zip(inputs, targets):
        real = os.path.realpath(target)
        if real in real_inputs:
            raise ValueError(f"--out {out}: the mask of {source} would overwrite the input {real_inputs[real]}; "
                             f"choose another --out folder")
    existing = [str(target) for target in targets if target.exists() or target.is_symlink()]
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise ValueError(f"--out {out} already holds {shown}; pass --overwrite to replace them")
    return targets


def predict_files(checkpoint, inputs, out, device: str = "cpu", overwrite: bool = False) -> list[Path]:
    """Segment every input file (NIfTI or PNG) into ``out`` (see :func:`output_paths` for where
    each mask goes); returns the written paths. Everything is checked before the first write:
    the device, the checkpoint, every input (header, then every voxel: a file truncated after its
    header fails before any mask is written) and every output path."""
    from medsegloss.data.nifti import is_nifti

    torch_device = check_device(device)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    paths = check_inputs(inputs)
    model, config = load_checkpoint(checkpoint, torch_device)
    if model.data is not None:  # a standard-layout dataset: cases of channel files
        cases = group_channel_files(paths)
        check_channel_cases(cases, model.data)
        targets = output_paths([case.name for case in cases], Path(out), overwrite, sources=paths)
        for case in cases:  # every voxel read once before the first write: a bad file fails with nothing written
            read_channel_case(case)
        written = []
        for case, target in zip(cases, targets):
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(predict_channel_case(model, model.data, case, target, config.patch))
        return written
    targets = output_paths(paths, Path(out), overwrite)
    for path in paths:  # every voxel read once before the first write (the header check reads no voxels)
        read_nifti_volume(path) if is_nifti(path) else read_png_input(path)
    size = config.dataset_options.get("size", config.image_size)  # the side training resized to (None: native)
    written = []
    for path, target in zip(paths, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_nifti(path):
            written.append(predict_nifti(model, size, path, target, config.patch))
        else:
            written.append(predict_png(model, size, path, target))
    return written


def main(argv=None) -> int:
    """``medsegloss predict --checkpoint RUN/best.pt INPUT... --out DIR [--overwrite]``."""
    parser = argparse.ArgumentParser(prog="medsegloss predict",
                                     description="Segment NIfTI volumes or PNG images with a trained checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="best.pt (or last.pt) of a training run")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="NIfTI (.nii, .nii.gz) or PNG files; for a model trained on an nnunet/msd dataset, "
                             "the channel files of each case (case_0000.nii.gz case_0001.nii.gz ..., written as "
                             "case.nii.gz) or one 4-D image per case")
    parser.add_argument("--out", required=True,
                        help="folder for the masks (same file names; inputs from several folders keep "
                             "their paths relative to their common folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace masks already in --out (never an input)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        written = predict_files(args.checkpoint, args.inputs, args.out, args.device, overwrite=args.overwrite)
    except (ValueError, OSError) as error:  # OSError: FileNotFoundError, a folder we may not write...
        print(f"medsegloss predict: error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
