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
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

from medsegloss import _io
from medsegloss.experiment.config import Config

PNG_SUFFIXES = (".png",)


# ---------------------------------------------------------------- models from checkpoints
def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Class labels ``(N, *spatial)``: ``logit > 0`` for one channel, else the argmax."""
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
    model = UNet(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    model.class_names = checkpoint["class_names"]
    model.dataset_num_classes = checkpoint["num_classes"]
    return model.to(device).eval(), Config.from_dict(checkpoint["config"])


# ---------------------------------------------------------------- segmenting files
@torch.no_grad()
def segment_volume(model, volume: np.ndarray, image_size: int, batch_size: int = 16) -> np.ndarray:
    """Labels of a ``(D, H, W)`` image volume (raw intensities), as uint8 ``(D, H, W)``.

    Shape:
        volume ``(D, H, W)``; returns uint8 ``(D, H, W)`` class labels.
    """
    from medsegloss.data.transforms import normalize_percentile, resize_image

    depth, height, width = volume.shape
    side = max(height, width)
    resized = torch.from_numpy(resize_image(normalize_percentile(volume.astype(np.float32)), image_size))
    if model.dims == 3:
        logits = predict_logits(model, resized[None, None])[0].transpose(0, 1)  # (D, C, S, S)
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


def predict_nifti(model, image_size: int, path: Path, target: Path) -> Path:
    """Segment one NIfTI file into ``target``; the mask keeps its affine and header (uint8)."""
    import nibabel

    image, array = read_nifti_input(path)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2-D or 3-D NIfTI image, got shape {array.shape}")
    # NIfTI holds (x, y, z); medsegloss works in array order (z, y, x)
    volume = array.T if array.ndim == 3 else array.T[None]
    labels = segment_volume(model, volume, image_size)
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


def output_paths(inputs: list[Path], out: Path, overwrite: bool = False) -> list[Path]:
    """Where each input's mask goes: its path relative to the inputs' deepest common folder,
    under ``out`` (inputs of one folder: ``out/<file name>``; ``a/x.nii`` and ``b/x.nii``:
    ``out/a/x.nii`` and ``out/b/x.nii``), so two masks never share a path.

    Refused: ``out`` that is a file; a mask path that is an input (``--out`` = the inputs' folder,
    even through a link), whatever ``overwrite`` says; a mask path that exists, unless
    ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    absolute = [Path(os.path.abspath(path)) for path in inputs]
    common = Path(os.path.commonpath([path.parent for path in absolute]))
    targets = [out / path.relative_to(common) for path in absolute]
    real_inputs = {os.path.realpath(path): path for path in inputs}
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
    the device, the checkpoint, every input's header and every output path."""
    from medsegloss.data.nifti import is_nifti

    torch_device = check_device(device)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    paths = check_inputs(inputs)
    targets = output_paths(paths, Path(out), overwrite)
    model, config = load_checkpoint(checkpoint, torch_device)
    written = []
    for path, target in zip(paths, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        predict = predict_nifti if is_nifti(path) else predict_png
        written.append(predict(model, config.image_size, path, target))
    return written


def main(argv=None) -> int:
    """``medsegloss predict --checkpoint RUN/best.pt INPUT... --out DIR [--overwrite]``."""
    parser = argparse.ArgumentParser(prog="medsegloss predict",
                                     description="Segment NIfTI volumes or PNG images with a trained checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="best.pt (or last.pt) of a training run")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI (.nii, .nii.gz) or PNG files")
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
