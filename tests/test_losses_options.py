"""Options added to existing losses: ``ce``'s label smoothing (float64 reference, torch, SMP),
and the compounds' term options (``dice_ce``, ``dice_focal``, ...: MONAI's DiceCE / DiceFocal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import references as ref
from conftest import random_labels, random_logits, random_soft_labels
from medsegloss import losses

pytestmark = pytest.mark.usefixtures("fused_path")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("ignore_index", [None, 255])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.4])
def test_label_smoothing_equals_the_float64_reference(channels, ignore_index, epsilon):
    logits = random_logits((2, channels, 5, 6), seed=1, dtype=torch.float64, scale=2.0)
    labels = random_labels((2, 5, 6), channels, seed=2)
    if ignore_index is not None:
        labels[0, :2] = ignore_index
    loss = losses.get("ce", label_smoothing=epsilon, ignore_index=ignore_index, reduction="none")
    expected = ref.label_smoothed_cross_entropy(logits.detach().numpy(), labels.numpy(), epsilon, ignore_index)
    np.testing.assert_allclose(loss(logits, labels).detach().numpy(), expected, rtol=1e-10)
    mean = losses.get("ce", label_smoothing=epsilon, ignore_index=ignore_index)(logits, labels)
    np.testing.assert_allclose(float(mean.detach()), expected.mean(), rtol=1e-10)


@pytest.mark.parametrize("channels", [1, 3])
def test_label_smoothing_of_soft_targets(channels):
    logits = random_logits((2, channels, 5, 6), seed=3, dtype=torch.float64)
    if channels == 1:
        target = torch.rand((2, 1, 5, 6), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    else:
        target = random_soft_labels((2, 3, 5, 6), seed=4)
    value = losses.cross_entropy_loss(logits, target, label_smoothing=0.2, reduction="none")
    np.testing.assert_allclose(value.detach().numpy(),
                               ref.label_smoothed_cross_entropy(logits.detach().numpy(), target.numpy(), 0.2),
                               rtol=1e-10)


def test_label_smoothing_equals_torch_and_smp():
    from test_losses_peers_new import _smp_losses

    logits = random_logits((2, 4, 6, 6), seed=5, dtype=torch.float64)
    labels = random_labels((2, 6, 6), 4, seed=6)
    ours = losses.cross_entropy_loss(logits, labels, label_smoothing=0.15)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels, label_smoothing=0.15))
    smp = _smp_losses()
    torch.testing.assert_close(ours, smp.SoftCrossEntropyLoss(smooth_factor=0.15)(logits, labels))
    # SMP's binary smoothing moves the labels to ε and 1 − ε: ours with 2ε (ε/K, K = 2)
    binary_logits = random_logits((2, 1, 6, 6), seed=7, dtype=torch.float64)
    binary = random_labels((2, 6, 6), 1, seed=8)
    peer = smp.SoftBCEWithLogitsLoss(smooth_factor=0.1)(binary_logits, binary.unsqueeze(1).to(torch.float64))
    torch.testing.assert_close(losses.cross_entropy_loss(binary_logits, binary, label_smoothing=0.2), peer)


def test_label_smoothing_gradient_and_bad_value():
    logits = random_logits((1, 3, 4, 4), seed=9, dtype=torch.float64)
    labels = random_labels((1, 4, 4), 3, seed=10)
    assert torch.autograd.gradcheck(lambda x: losses.cross_entropy_loss(x, labels, label_smoothing=0.3), (logits,))
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0.0, 1.0\], got 1.5"):
        losses.cross_entropy_loss(logits, labels, label_smoothing=1.5)
