"""Inference with a trained checkpoint: the model of a ``best.pt`` (:func:`load_checkpoint`), its
logits and labels (:func:`predict_logits`, :func:`labels_from_logits`, also used by the trainer's
evaluation and the report's overlays) and the data description a checkpoint carries
(:func:`data_metadata`). The ``medsegloss predict`` command is :mod:`medsegloss.experiment.predict`.

A 3-D model whose input is larger than its training patch (``config.patch``) is run by
overlapping windows (:func:`~medsegloss.experiment.sliding_window.sliding_window_logits`,
overlap 0.5, Gaussian weights): :func:`model_logits`, also used by the trainer's evaluation.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from medsegloss.experiment.config import Config


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


