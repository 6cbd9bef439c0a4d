"""Reproducibility: the same config and seed give the same weights. Seeds, the global RNG states
a checkpoint carries (as plain data, so ``last.pt`` loads with ``weights_only=True``), and
deterministic algorithms."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict:
    """The global RNG states (the training samples depend on none: they are a function of the
    seed and the sample index; kept so any random op in a model or loss resumes exactly), as
    tensors and plain data only (NumPy's key array as a list of ints), so ``last.pt`` loads with
    ``torch.load(weights_only=True)``."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    states = {"python": random.getstate(),
              "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)],
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore the states :func:`rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Deterministic algorithms on (same config and seed give the same weights) or off (faster)."""
    if enabled and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    # warn_only: an op without a deterministic kernel (some CUDA backward passes) warns, not fails
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
