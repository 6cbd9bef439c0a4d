"""Whether a run fits, checked once its data is loaded and before the model or a batch is
allocated: the training patch against the items, and the memory of a UNet training step against
the device's. Without these a ``--patch 10000`` on 13×11×7 volumes or a ``--base-width 1000000``
failed deep inside NumPy or the torch allocator (asking for TiBs), with a traceback that names
no flag.

The memory of a step is estimated from the architecture of :class:`~medsegloss.models.UNet`:
its parameters exactly (:func:`parameter_count`), each held with its gradient and the
optimizer's states; its activations (the tensors autograd saves for the backward pass) by
:func:`activation_bytes`, within ~20 % of the saved tensors measured in ``tests/experiment/test_capacity.py``.
A run is refused only when the estimate exceeds the device's whole memory: it could never run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

FLOAT_BYTES = 4  # float32 weights and activations
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1}  # tensors the optimizer keeps per parameter


def check_patch(patch: int | None, shapes: list[tuple[int, ...]], dims: int) -> None:
    """Refuse a patch larger than every item along every axis: it would be padding around
    whole items (the UNet pads to its own multiple anyway), and a huge one is allocated per sample."""
    largest = max(max(shape) for shape in shapes)
    if patch is not None and patch > largest:
        biggest = max(shapes, key=math.prod)
        kind = "volume" if dims == 3 else "image"
        raise ValueError(f"--patch {patch} is larger than every training {kind} along every axis (the largest "
                         f"is {'×'.join(map(str, biggest))}): its patches would be padding; use --patch {largest} "
                         f"or less, or --patch 0 for whole {kind}s")


def padding_note(patch: int | None, shapes: list[tuple[int, ...]]) -> str | None:
    """One line when ``patch`` exceeds some training items along some axis (``shapes``: their
    spatial shapes): their patches are padded (image 0, label background); None when none is."""
    if patch is None:
        return None
    padded = [shape for shape in shapes if min(shape) < patch]
    if not padded:
        return None
    smallest = min(padded, key=min)
    return (f"note: --patch {patch} is larger than {len(padded)} of {len(shapes)} training items along an axis "
            f"(the smallest is {'×'.join(map(str, smallest))}): their patches are padded")


def parameter_count(in_channels: int, num_classes: int, base: int, depth: int, dims: int,
                    deep_supervision: bool = False) -> int:
    """The number of parameters of ``UNet(in_channels, num_classes, base, depth, dims)``, exactly
    (two 3^dims convolutions without bias and two batch norms per block, 2^dims transposed
    convolutions with bias, 1x1 heads with bias), computed without building it."""
    kernel, widths = 3**dims, [base * 2**level for level in range(depth + 1)]

    def block(inputs: int, outputs: int) -> int:
        return kernel * inputs * outputs + kernel * outputs * outputs + 4 * outputs

    count = block(in_channels, widths[0]) + widths[0] * num_classes + num_classes
    for level in range(1, depth + 1):
        below, above = widths[level], widths[level - 1]
        count += block(above, below) + 2**dims * below * above + above + block(2 * above, above)
    if deep_supervision:
        count += sum(widths[level] * num_classes + num_classes for level in range(1, depth))
    return count


def activation_bytes(in_channels: int, num_classes: int, base: int, depth: int, dims: int, batch: int,
                     spatial: tuple[int, ...]) -> int:
    """The tensors a UNet training step saves for the backward pass, for a batch of ``batch``
    items of ``spatial`` size: per block its input and four outputs (convolutions, norms), the
    decoder's concatenations, max-pool indices (int64) and the loss's few tensors of logits."""
    multiple = 2**depth  # the UNet pads every axis up to a multiple of 2**depth
    padded = math.prod(-(-size // multiple) * multiple for size in spatial)
    voxels = [batch * padded // 2 ** (dims * level) for level in range(depth + 1)]
    widths = [base * 2**level for level in range(depth + 1)]
    floats = (in_channels + 4 * widths[0]) * voxels[0] + 4 * num_classes * voxels[0]
    indices = 0
    for level in range(1, depth + 1):
        floats += (widths[level - 1] + 4 * widths[level]) * voxels[level] + 6 * widths[level - 1] * voxels[level - 1]
        indices += widths[level - 1] * voxels[level]
    return FLOAT_BYTES * floats + 8 * indices


def device_memory(device) -> int | None:
    """The device's whole memory in bytes (CPU: the machine's, or its cgroup's limit when lower);
    None where it cannot be told."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    return min(total, int(limit)) if limit.isdigit() else total


def human(size: float) -> str:
    """``3.6e12`` -> ``"3.3 TiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.3g} PiB"


def check_fits(config, train_set, in_channels: int, out_channels: int, device) -> str | None:
    """Refuse ``config`` on ``train_set`` before anything is allocated when its patch is larger
    than every item, or its training step needs more memory than ``device`` has, naming the
    flags that decide it. Returns the :func:`padding_note` of the patch (None: nothing padded)."""
    shapes = [tuple(train_set.case(case).image.shape[-config.dims:]) for case in train_set.cases]
    check_patch(config.patch, shapes, config.dims)
    note = padding_note(config.patch, shapes)
    spatial = (config.patch,) * config.dims if config.patch else tuple(max(axis) for axis in zip(*shapes))
    if config.model != "unet":  # a zoo network: no size formula, so one dummy forward of the patch
        from medsegloss.experiment.components import make_model
        from medsegloss.models.zoo import check_model_input

        check_model_input(make_model(config, in_channels, out_channels), config.model, in_channels, spatial)
        return note
    parameters = parameter_count(in_channels, out_channels, config.base_width, config.depth, config.dims,
                                 config.deep_supervision)
    weights = FLOAT_BYTES * parameters * (2 + OPTIMIZER_STATES.get(config.optimizer, 2))  # + gradient + states
    activations = activation_bytes(in_channels, out_channels, config.base_width, config.depth, config.dims,
                                   config.batch_size, spatial)
    available = device_memory(device)
    if available is None or weights + activations <= available:
        return note
    flags = ([f"--base-width ({config.base_width})", f"--depth ({config.depth})"] if weights >= activations else
             [f"--batch-size ({config.batch_size})", f"--patch ({config.patch})" if config.patch
              else f"--image-size ({config.image_size}) or set --patch", f"--base-width ({config.base_width})"])
    raise ValueError(
        f"a training step needs about {human(weights + activations)} (the UNet's {parameters:.3g} parameters "
        f"with gradients and optimizer states: {human(weights)}; activations of {config.batch_size} × "
        f"{'×'.join(map(str, spatial))}: {human(activations)}), more than the {human(available)} of {device}: "
        f"lower {' or '.join(flags)}")
