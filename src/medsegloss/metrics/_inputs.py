"""Input checks shared by the metrics: binary mask pairs, integer label maps, the empty policy.

Errors name the actual shape, dtype and values, as everywhere in the package.
"""

from __future__ import annotations

import numpy as np
import torch

EMPTY_POLICIES = ("nan", "worst")


def check_empty(empty: str) -> str:
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
    return empty


def to_numpy(array, name: str) -> np.ndarray:
    """A NumPy view of a tensor or array-like (no copy for CPU tensors and arrays)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    elif not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be a NumPy array or torch tensor, got {type(array).__name__}") from error
    if array.dtype == object or not (array.dtype == bool or np.issubdtype(array.dtype, np.number)):
        raise TypeError(f"{name} must hold numbers or booleans, got dtype {array.dtype}")
    return array


def binary_pair(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    """Two binary masks of the same 2-D or 3-D shape as contiguous bool arrays.

    Accepted: bool, or numbers that are all 0 or 1 (``1.0`` and ``True`` alike); anything else
    (a probability map, a label map with several classes) is an error, not a silent threshold.
    """
    pred, ref = to_numpy(pred, "pred"), to_numpy(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, got {pred.shape} and {ref.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be 2-D (H, W) or 3-D (D, H, W), got shape {pred.shape}")
    if pred.size == 0:
        raise ValueError(f"masks must not be empty arrays, got shape {pred.shape}")
    return _as_bool(pred, "pred"), _as_bool(ref, "ref")


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    if mask.dtype != bool:
        not_binary = (mask != 0) & (mask != 1)
        if not_binary.any():
            values = np.unique(mask[not_binary])[:5].tolist()
            raise ValueError(
                f"{name} must be a binary mask (bool or 0/1), got dtype {mask.dtype} with values such as "
                f"{values}; threshold probabilities or select one class (labels == c) first"
            )
        mask = mask != 0
    return np.ascontiguousarray(mask)


def empty_state(pred_any: bool, ref_any: bool) -> str:
    """Which masks are empty: ``"none"``, ``"both"``, ``"pred"`` (missed) or ``"ref"`` (spurious)."""
    if pred_any and ref_any:
        return "none"
    if not pred_any and not ref_any:
        return "both"
    return "pred" if not pred_any else "ref"


def label_map(labels, name: str, num_classes: int) -> np.ndarray:
    """One case's integer label map (2-D or 3-D) with values in ``[0, num_classes)``."""
    labels = to_numpy(labels, name)
    if labels.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2-D (H, W) or 3-D (D, H, W) label map, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {labels.shape}")
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    elif np.issubdtype(labels.dtype, np.floating):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError(
                f"{name} must hold integer class labels, got dtype {labels.dtype} with fractional values "
                "(for logits or probabilities take argmax over the class axis first)"
            )
        labels = labels.astype(np.intp)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name} labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
            f"got values in [{low}, {high}]"
        )
    return labels
