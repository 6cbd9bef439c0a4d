"""Shared test helpers: seeded makers of random logits and labels (tiny shapes, fast), the loss
tests' float64 cases, gradcheck and peer libraries, imported as `from conftest import random_logits`."""

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


def float64_case(shape, seed: int = 0, scale: float = 1.0, *, ignore=None, absent=None):
    """float64 logits ``(N, C, *spatial)`` (:func:`random_logits`, seed ``seed``) and labels
    ``(N, *spatial)`` (seed ``seed + 1``); class ``absent`` relabelled 0, every 4th voxel ``ignore``."""
    logits = random_logits(shape, seed=seed, dtype=torch.float64, scale=scale)
    labels = random_labels((shape[0], *shape[2:]), shape[1], seed=seed + 1)
    if absent is not None:
        labels[labels == absent] = 0
    if ignore is not None:
        labels.view(-1)[::4] = ignore
    return logits, labels


def one_hot64(labels, channels: int) -> torch.Tensor:
    """Labels ``(N, *spatial)`` as a float64 one-hot ``(N, C, *spatial)`` (the foreground for C = 1)."""
    if channels == 1:
        return labels.unsqueeze(1).to(torch.float64)
    return torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).to(torch.float64)


def assert_matches_reference(value, expected, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """A loss value (tensor) against a float64 NumPy reference."""
    import numpy as np

    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=rtol, atol=atol)


def gradcheck_on_crop(function, logits, labels, **options) -> None:
    """``torch.autograd.gradcheck`` of ``function(x, labels[..., :4, :4], **options)`` on the first
    4×4 of float64 ``logits`` (fast mode): small enough for the slow losses."""
    small = logits.detach()[..., :4, :4].clone().requires_grad_()
    target = labels[..., :4, :4]
    assert torch.autograd.gradcheck(lambda x: function(x, target, **options), (small,), eps=1e-6, atol=1e-5,
                                    fast_mode=True)


def peer_losses(library: str):
    """The losses module of a peer library, skipping the test without it: ``"monai"``,
    ``"kornia"`` or ``"smp"`` (segmentation_models_pytorch.losses, loaded without the package's
    ``__init__``, which imports timm / torchvision models; the losses import only torch)."""
    if library != "smp":
        return pytest.importorskip({"monai": "monai.losses", "kornia": "kornia.losses"}[library])
    import importlib
    import importlib.util
    import types

    if "segmentation_models_pytorch.losses" in sys.modules:
        return sys.modules["segmentation_models_pytorch.losses"]
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("segmentation_models_pytorch is not installed")
    if "segmentation_models_pytorch" not in sys.modules:
        package = types.ModuleType("segmentation_models_pytorch")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["segmentation_models_pytorch"] = package
    return importlib.import_module("segmentation_models_pytorch.losses")


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
