"""Shared test helpers: seeded makers of random logits and labels (tiny shapes, fast), imported
as `from conftest import random_logits`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# tests import the float64 reference formulas as `import references` (pytest runs with
# --import-mode=importlib, which does not put tests/ on sys.path by itself)
sys.path.insert(0, str(Path(__file__).parent))


def random_logits(shape, seed: int = 0, dtype=torch.float32, scale: float = 1.0, requires_grad: bool = True):
    """Standard-normal logits ``(N, C, *spatial)`` times ``scale``, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator, dtype=torch.float64).mul_(scale).to(dtype)
    return logits.requires_grad_(requires_grad)


def random_labels(shape, num_classes: int, seed: int = 1) -> torch.Tensor:
    """Integer labels ``(N, *spatial)`` uniform in ``[0, num_classes)`` (``{0, 1}`` for 1)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, max(num_classes, 2), shape, generator=generator)


def random_soft_labels(shape, seed: int = 2, dtype=torch.float64) -> torch.Tensor:
    """Soft labels ``(N, C, *spatial)`` summing to 1 over the classes (C >= 2)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(shape, generator=generator, dtype=torch.float64), dim=1).to(dtype)


@pytest.fixture(params=["fused", "plain"])
def fused_path(request):
    """Run a loss test on both paths: the fused kernels where their inputs allow (any device),
    and the plain probabilities / one-hot path a CUDA run takes for softmax label counts
    (``medsegloss._ops.fused_paths``). Use with ``pytestmark = pytest.mark.usefixtures("fused_path")``."""
    from medsegloss._ops import fused_paths

    with fused_paths(request.param == "fused"):
        yield request.param


@pytest.fixture(scope="module")
def one_thread():
    """Training tests on tiny tensors run with one torch thread: they gain nothing from threads,
    and on a loaded machine OpenMP's thread sync makes each op wait for a descheduled thread (10x
    slower steps). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
