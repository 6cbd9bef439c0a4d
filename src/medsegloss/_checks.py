"""Every input-validation error of the package, worded once.

Errors name the actual shape, dtype, label range or length, and are ``ValueError`` /
``TypeError`` (never ``assert``), so they survive ``python -O`` and tell the user what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

REDUCTIONS = ("mean", "sum", "none")


def check_logits(logits) -> None:
    """Logits must be a floating-point tensor of shape ``(N, C, H, W)`` or ``(N, C, D, H, W)``."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor (raw network outputs), got dtype {logits.dtype}")
    if logits.ndim not in (4, 5):
        raise ValueError(
            f"logits must have shape (N, C, H, W) or (N, C, D, H, W), got shape {tuple(logits.shape)}"
        )


def check_target(target, logits: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Validate ``target`` against ``logits`` and return it in canonical form.

    Accepted:
      * integer (or bool) labels ``(N, *spatial)`` with values in ``[0, C)`` (``{0, 1}`` when
        ``C == 1``), ``ignore_index`` allowed anywhere; ``(N, 1, *spatial)`` is squeezed.
      * float one-hot / soft labels ``(N, C, *spatial)``.

    Float targets must be finite and lie in ``[0, 1]`` (probabilities): one ``aminmax`` pass,
    which propagates NaN, so NaN, ``inf`` and out-of-range values are caught together. An empty
    batch (``N == 0``, or any zero-sized axis) is an error: a mean over no pixels is NaN.

    Returns labels as ``torch.long`` ``(N, *spatial)`` or the float tensor unchanged.
    """
    check_logits(logits)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if logits.numel() == 0:
        raise ValueError(
            f"logits must not be empty: got shape {tuple(logits.shape)} (N = 0 or a zero-sized axis); "
            "a loss over no pixels is undefined, skip empty batches before the loss"
        )
    n, c, *spatial = logits.shape
    expected_labels = (n, *spatial)
    if target.is_floating_point():
        if target.ndim != logits.ndim or target.shape[0] != n or list(target.shape[2:]) != spatial:
            raise ValueError(
                f"float target must be one-hot / soft labels of shape (N, C, *spatial) = "
                f"{(n, c, *spatial)} to match logits {tuple(logits.shape)}, got {tuple(target.shape)}"
                " (integer labels would be (N, *spatial))"
            )
        if target.shape[1] != c:
            raise ValueError(
                f"one-hot target has {target.shape[1]} channels but logits have C={c} "
                f"(target {tuple(target.shape)}, logits {tuple(logits.shape)})"
            )
        check_probabilities(target)
        return target
    if target.is_complex():
        raise ValueError(f"target must hold integer labels or float probabilities, got dtype {target.dtype}")
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target.squeeze(1)  # (N, 1, *spatial) integer labels, as many loaders produce
    if tuple(target.shape) != expected_labels:
        raise ValueError(
            f"integer target must have shape (N, *spatial) = {expected_labels} to match logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    check_label_range(target, 2 if c == 1 else c, ignore_index)
    return target.long()


def check_probabilities(target: torch.Tensor) -> None:
    """A float (one-hot / soft) target must be finite with every value in ``[0, 1]``.

    One ``torch.aminmax`` pass: NaN propagates to both ends, ``±inf`` lands outside ``[0, 1]``,
    so a single comparison catches all three (a NaN target would otherwise give NaN losses, or
    worse a finite but meaningless value, e.g. 0 for ``boundary``).
    """
    if target.numel() == 0:
        return
    low, high = (float(v) for v in torch.aminmax(target.detach()))
    if not (0.0 <= low and high <= 1.0):  # written so that NaN fails it
        nonfinite = "" if math.isfinite(low) and math.isfinite(high) else " (NaN or inf present)"
        raise ValueError(
            f"float target must hold probabilities in [0, 1] (one-hot or soft labels), got values in "
            f"[{low:.6g}, {high:.6g}]{nonfinite}; pass integer class labels (N, *spatial) as a long "
            "tensor, or one-hot / soft labels (N, C, *spatial) in [0, 1]"
        )


def check_label_range(labels: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> None:
    """Labels must lie in ``[0, num_classes)``, apart from ``ignore_index``."""
    if labels.numel() == 0:
        return
    if labels.dtype == torch.bool:  # bool labels are 0 / 1: in range for any num_classes >= 2
        if num_classes >= 2:
            return
        labels = labels.long()
    values = labels if ignore_index is None else labels[labels != ignore_index]
    if values.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(values))  # one pass over the labels, not two
    if low < 0 or high >= num_classes:
        ignore = "" if ignore_index is None else f" (ignore_index={ignore_index} excluded)"
        raise ValueError(
            f"target labels must lie in [0, {num_classes - 1}] for {num_classes} classes, "
            f"got values in [{low}, {high}]{ignore}"
        )


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_weight(weight, num_classes: int, device=None, dtype=torch.float32) -> torch.Tensor | None:
    """Class weights from a sequence or tensor: one finite, non-negative value per class."""
    if weight is None:
        return None
    weight = torch.as_tensor(weight, dtype=dtype, device=device).flatten()
    if weight.numel() != num_classes:
        raise ValueError(f"weight must have one value per class (C={num_classes}), got {weight.numel()} values")
    if not torch.isfinite(weight).all() or (weight < 0).any():
        raise ValueError(f"weight must be finite and non-negative, got {weight.tolist()}")
    return weight


MAX_SPACING = 1e6  # voxel sizes are mm (or pixels): anything above this is a unit mistake or garbage


def check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """Voxel spacing: ``None`` (isotropic 1), one number, or one number per spatial axis, each
    finite, positive and at most ``MAX_SPACING`` (1e6); errors name ``spacing`` and the values."""
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, bool) or (isinstance(spacing, torch.Tensor) and spacing.dtype == torch.bool):
        raise TypeError(f"spacing must be a number or a sequence of {ndim} numbers, got {spacing!r}")
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.tolist()
    if hasattr(spacing, "tolist") and not isinstance(spacing, (int, float)):
        spacing = spacing.tolist()  # NumPy arrays and scalars
    if isinstance(spacing, (int, float)):
        spacing = (float(spacing),) * ndim
    if isinstance(spacing, (str, bytes)) or not isinstance(spacing, Sequence):
        raise TypeError(f"spacing must be a number or a sequence of {ndim} numbers, got {spacing!r}")
    try:
        if any(isinstance(s, bool) for s in spacing):
            raise TypeError
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise TypeError(f"spacing must be a number or a sequence of {ndim} numbers, got {spacing!r}") from None
    if len(values) != ndim:
        raise ValueError(f"spacing must have one value per spatial axis ({ndim}), got {len(values)}: {values}")
    if not all(0.0 < s <= MAX_SPACING for s in values):  # NaN fails every comparison
        raise ValueError(
            f"spacing values must be finite, positive and at most {MAX_SPACING:g}, got {values}"
        )
    return values


# A term weight above this overflows float32 training or drowns every other term: Adam squares
# the gradient (float32 ends at 3e38), SGD steps by it; no paper's compound uses more than ~100.
MAX_TERM_WEIGHT = 1e6


def check_term_weight(weight: float, where: str, allow_zero: bool = False) -> float:
    """A term weight of a loss string or a schedule (``where`` names it): finite, at most
    :data:`MAX_TERM_WEIGHT`, ``> 0`` (``>= 0`` with ``allow_zero``: a schedule may switch a term off)."""
    if not math.isfinite(weight) or weight > MAX_TERM_WEIGHT:
        raise ValueError(f"{where} has weight {weight:g}: term weights must be finite and at most "
                         f"{MAX_TERM_WEIGHT:g} (larger ones overflow float32 training)")
    if weight < 0:
        raise ValueError(f"{where} has weight {weight:g}: term weights must be >= 0 (a negative one maximises the term)")
    if weight == 0 and not allow_zero:
        raise ValueError(f"{where} has weight 0: the term would add nothing to the loss (drop it)")
    return weight


def check_in_range(name: str, value: float, low: float = 0.0, high: float = 1.0) -> float:
    """A scalar option that must lie in ``[low, high]`` (default ``[0, 1]``; e.g. Tversky's
    alpha in ``[0, inf)``, TopK's percentage in ``[0, 100]``, a band width)."""
    value = float(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def check_non_negative(name: str, value, integer: bool = False) -> float:
    """A weight, smoothing term or paper constant: a finite number >= 0 (an int when ``integer``),
    never a bool or a string. Used where a loss is parsed or built, so a weight of -5 (the loss
    maximised) or an inf fails before training, naming the option."""
    kind = "an int" if integer else "a finite number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
            or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be {kind} >= 0, got {value!r}")
    return value


def check_loss_options(loss: str, options: dict, accepted: dict, numeric=()) -> None:
    """The options of loss ``loss`` where it is built (``get``, every term of a loss string, the
    nnU-Net variables): an unknown name fails naming the closest accepted ones (``TypeError``);
    ``ignore_index`` is an int or None; a flag (bool default) is True or False; ``reduction`` is
    known; numbers (a number default, or a name in ``numeric``: a number in another loss) are
    finite and >= 0 (all the papers' weights, smoothing terms and exponents are); class weights
    in a list each are."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"loss {loss!r} has no option(s) {', '.join(unknown)}.{did_you_mean(unknown[0], accepted)} "
                        "Its options are: " + ", ".join(f"{key}={value!r}" for key, value in accepted.items()))
    for key, value in options.items():
        default, where = accepted[key], f"loss {loss!r}: option {key}"
        if key == "ignore_index":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{where} must be an integer label or None, got {value!r}")
        elif key == "reduction":
            if value not in REDUCTIONS:
                raise ValueError(f"{where} must be one of {REDUCTIONS}, got {value!r}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where} must be True or False, got {value!r}")
        elif isinstance(default, (int, float)) or (key in numeric and not (value is None and default is None)):
            check_non_negative(where, value, integer=isinstance(default, int))
        elif key == "weight" and isinstance(value, (list, tuple)):
            for item in value:
                check_non_negative(f"{where} (class weights {list(value)})", item)


def check_distance_map(dist, logits: torch.Tensor) -> torch.Tensor:
    """A precomputed signed distance map must be a float tensor shaped like the logits,
    ``(N, C, *spatial)`` (``C == 1``: the foreground's map). Returned as float32 at least."""
    if not isinstance(dist, torch.Tensor):
        raise TypeError(f"dist must be a torch.Tensor of signed distance maps, got {type(dist).__name__}")
    if tuple(dist.shape) != tuple(logits.shape):
        raise ValueError(
            f"dist must hold one signed distance map per class, shape (N, C, *spatial) = "
            f"{tuple(logits.shape)} like the logits, got {tuple(dist.shape)}"
        )
    if not dist.is_floating_point():
        raise ValueError(f"dist must be a floating-point tensor, got dtype {dist.dtype}")
    return dist.float() if dist.dtype in (torch.float16, torch.bfloat16) else dist


def did_you_mean(name, known) -> str:
    """``" Did you mean: a, b?"`` naming the (up to 3) entries of ``known`` closest to ``name``, or
    ``""`` when none is close: the one wording of "did you mean" in the package (unknown losses,
    metrics, datasets, config fields, commands and flags)."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(entry) for entry in known], n=3, cutoff=0.4)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def unknown_name(kind: str, name, registered) -> ValueError:
    """The error for a name missing from a registry (loss, metric, dataset), naming the closest
    registered ones (:func:`did_you_mean`) and all of them."""
    registered = list(registered)
    return ValueError(f"unknown {kind} {name!r}.{did_you_mean(name, registered)} Registered: {', '.join(registered)}")


def check_multilabel_target(target, logits: torch.Tensor) -> torch.Tensor:
    """A multi-label (overlapping regions) target: multi-hot ``(N, R, *spatial)`` shaped like the
    logits (``R`` = their channels, one sigmoid each), bool, integer 0/1 or float in ``[0, 1]``
    (soft). Returned as a float tensor in the logits' dtype (float32 at least)."""
    check_logits(logits)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(
            f"multilabel target must be multi-hot (N, R, *spatial) = {tuple(logits.shape)}, one channel per "
            f"region like the logits, got {tuple(target.shape)} (integer labels (N, *spatial) cannot hold "
            "overlapping regions)"
        )
    if target.is_complex():
        raise ValueError(f"multilabel target must be bool, 0/1 integers or floats in [0, 1], got dtype {target.dtype}")
    if target.numel():
        low, high = (float(v) for v in torch.aminmax(target.detach().float()))
        if target.is_floating_point():
            if not (0.0 <= low and high <= 1.0):
                raise ValueError(f"multilabel float target must lie in [0, 1], got values in [{low:g}, {high:g}]")
        elif target.dtype != torch.bool and (low < 0 or high > 1):
            raise ValueError(f"multilabel integer target must hold 0 / 1, got values in [{low:g}, {high:g}]")
    dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    return target.to(dtype)
