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


# ---------------------------------------------------------------------------------------------
# The compounds take their terms' options


def _monai():
    return pytest.importorskip("monai.losses")


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_dice_ce_equals_monai(batch, include_background):
    """Softmax, labels: MONAI's DiceCELoss(lambda_dice = weight_dice, lambda_ce = 1), smoothing
    1e-5 on both sides as ours; label smoothing passed to both CEs."""
    monai = _monai()
    logits = random_logits((2, 3, 6, 7), seed=12, dtype=torch.float64, scale=2.0)
    labels = random_labels((2, 6, 7), 3, seed=13)
    for label_smoothing in (0.0, 0.1):
        ours = losses.get("dice_ce", weight_dice=0.7, batch=batch, include_background=include_background,
                          label_smoothing=label_smoothing)(logits, labels)
        peer = monai.DiceCELoss(softmax=True, to_onehot_y=True, batch=batch, include_background=include_background,
                                lambda_dice=0.7, label_smoothing=label_smoothing)
        torch.testing.assert_close(ours, peer(logits, labels.unsqueeze(1)).to(torch.float64), rtol=1e-5, atol=1e-5)
    # binary: MONAI's BCE for one channel
    binary_logits = random_logits((2, 1, 6, 7), seed=14, dtype=torch.float64)
    binary = random_labels((2, 6, 7), 1, seed=15)
    peer = monai.DiceCELoss(sigmoid=True, batch=batch)(binary_logits, binary.unsqueeze(1).to(torch.float64))
    torch.testing.assert_close(losses.get("dice_ce", batch=batch)(binary_logits, binary), peer.to(torch.float64),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [False, True])
def test_dice_focal_equals_monai(batch):
    """MONAI's DiceFocalLoss has a sigmoid focal term per channel: equal for one channel, and for
    overlapping regions (multilabel) with R channels; its lambda_focal is our weight_focal."""
    monai = _monai()
    for channels, multilabel in ((1, False), (3, True)):
        logits = random_logits((2, channels, 6, 7), seed=16, dtype=torch.float64, scale=2.0)
        target = (torch.rand((2, channels, 6, 7), generator=torch.Generator().manual_seed(17)) > 0.5).double()
        ours = losses.get("dice_focal", weight_focal=0.5, gamma=2.0, batch=batch, multilabel=multilabel)
        peer = monai.DiceFocalLoss(sigmoid=True, gamma=2.0, lambda_focal=0.5, batch=batch)
        torch.testing.assert_close(ours(logits, target if multilabel else target[:, 0].long()),
                                   peer(logits, target).to(torch.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["dice_ce", "dice_bce", "dice_focal", "dice_topk", "gdl_focal"])
def test_compound_options_reach_their_terms(name):
    """Each option goes to the terms that take it: the sum equals its terms built with them.
    Class weights ``weight``: Dice (and BCE, whose weight is per channel) only."""
    logits = random_logits((3, 3, 6, 5), seed=18, dtype=torch.float64)
    labels = random_labels((3, 6, 5), 3, seed=19)
    labels[0, 0, :3] = 255
    options = dict(batch=True, include_background=False, ignore_index=255, reduction="none", smooth=0.5)
    if name != "gdl_focal":
        options.update(weight=[0.2, 1.0, 3.0], squared=True)
    loss = losses.get(name, **options)
    total = 0
    for term_name, term in zip(loss.names, loss.terms):
        accepted = losses.info(term_name).options
        expected_options = {key: value for key, value in options.items() if key in accepted}
        assert {key: value for key, value in term.options.items() if key in options} == expected_options, term_name
        assert all(value == accepted[key] for key, value in term.options.items() if key not in options), term_name
        total = total + loss.weights[term_name] * losses.get(term_name, **expected_options)(logits, labels)
    torch.testing.assert_close(loss(logits, labels), total)
    torch.testing.assert_close(losses.info(name).function(logits, labels, **options), total)
    assert "weight" in loss.terms[loss.names.index("dice" if name != "gdl_focal" else "gdl")].options \
        or name == "gdl_focal"


@pytest.mark.parametrize("batch", [False, True])
def test_dice_ce_one_pass_covers_weight_and_batch(batch):
    """The joint pass (named dice_ce, and build's "ce + dice") equals the terms apart with the new
    Dice options; squared or label smoothing fall back to the terms."""
    logits = random_logits((2, 3, 6, 5), seed=20, dtype=torch.float64)
    labels = random_labels((2, 6, 5), 3, seed=21)
    options = dict(batch=batch, weight=[0.5, 1.0, 2.0], reduction="none")
    named = losses.get("dice_ce", **options)
    built = losses.build("ce + 0.5*dice(weight=[0.5, 1.0, 2.0])", batch=batch, reduction="none")
    assert named.joint is not None and built.joint is not None
    ce = losses.get("ce", reduction="none")(logits, labels)
    dice = losses.get("dice", **options)(logits, labels)
    torch.testing.assert_close(named(logits, labels), ce + dice)
    torch.testing.assert_close(built(logits, labels), ce + 0.5 * dice)
    assert losses.get("dice_ce", squared=True).joint is None
    assert losses.get("dice_ce", label_smoothing=0.1).joint is None
    assert losses.build("ce(label_smoothing=0.1) + dice").joint is None
