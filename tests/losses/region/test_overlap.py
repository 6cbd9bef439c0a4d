"""Overlap losses (``losses.region.overlap``: ss, dice, iou, tversky, focal_tversky, asym,
focal_dice, mcc) against float64 references, the papers' identities, MONAI and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import references as ref
import references_peers
from conftest import (assert_matches_reference, float64_case, gradcheck_on_crop, one_hot64, peer_losses,
                      random_labels, random_logits, random_soft_labels)
from medsegloss import losses
from medsegloss.losses.region import overlap as R

SHAPE_2D, SHAPE_3D, SHAPE_BINARY = (2, 3, 5, 6), (2, 3, 3, 4, 5), (3, 1, 5, 6)

# name -> (function, options); each reference takes (p, g, **options)
PER_CLASS = {
    "ss": (R.sensitivity_specificity_loss, {"r": 0.2}),
    "dice": (R.dice_loss, {}),
    "iou": (R.iou_loss, {}),
    "tversky": (R.tversky_loss, {"alpha": 0.2, "beta": 0.9}),
    "focal_tversky": (R.focal_tversky_loss, {"alpha": 0.4, "beta": 0.6, "gamma": 1.5}),
    "asym": (R.asymmetric_loss, {"beta": 1.5}),
    "focal_dice": (R.focal_dice_loss, {"beta": 2.0}),
}


# the tests of formulas with a fused kernel run on it and on the plain path (conftest.fused_path)
KERNEL_PATHS = pytest.mark.usefixtures("fused_path")


def _reference_per_class(name, p, g, voxels, options):
    options = dict(options, smooth=1e-5)
    if name == "ss":
        return ref.sensitivity_specificity(p, g, voxels, **options)
    if name == "asym":
        return ref.f_beta(p, g, **options)
    return getattr(ref, name)(p, g, **options)


@pytest.mark.parametrize("name", PER_CLASS)
@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D, SHAPE_BINARY])
@KERNEL_PATHS
def test_per_class_losses_match_references(name, shape):
    function, options = PER_CLASS[name]
    logits, labels = float64_case(shape, scale=2.0)
    p, g, voxels = ref.region_statistics(logits.detach(), labels)
    expected = ref.class_mean(_reference_per_class(name, p, g, voxels, options))
    assert_matches_reference(function(logits, labels, reduction="none", **options), expected)


@pytest.mark.parametrize("name", PER_CLASS)
@KERNEL_PATHS
def test_per_class_losses_with_ignore_weight_background_and_batch(name):
    function, options = PER_CLASS[name]
    logits, labels = float64_case(SHAPE_2D, scale=2.0, ignore=255)
    weight = [0.5, 1.0, 3.0]
    p, g, voxels = ref.region_statistics(logits.detach(), labels, ignore_index=255)
    per_class = _reference_per_class(name, p, g, voxels, options)
    assert_matches_reference(function(logits, labels, ignore_index=255, weight=weight, include_background=False,
                    reduction="none", **options), ref.class_mean(per_class, weight, include_background=False))
    p, g, voxels = ref.region_statistics(logits.detach(), labels, ignore_index=255, batch=True)
    expected = ref.class_mean(_reference_per_class(name, p, g, voxels, options))
    assert_matches_reference(function(logits, labels, ignore_index=255, batch=True, reduction="none", **options), expected.repeat(2))


@pytest.mark.parametrize("name", PER_CLASS)
@KERNEL_PATHS
def test_per_class_losses_with_soft_labels(name):
    function, options = PER_CLASS[name]
    logits, _ = float64_case(SHAPE_2D, scale=2.0)
    soft = random_soft_labels(SHAPE_2D)
    p, g, voxels = ref.region_statistics(logits.detach(), soft.numpy())
    assert_matches_reference(function(logits, soft, reduction="none", **options),
           ref.class_mean(_reference_per_class(name, p, g, voxels, options)))


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_BINARY])
@KERNEL_PATHS
def test_squared_dice_matches_reference(shape):
    logits, labels = float64_case(shape, scale=2.0)
    p, g, _ = ref.region_statistics(logits.detach(), labels)
    assert_matches_reference(R.dice_loss(logits, labels, squared=True, reduction="none"), ref.class_mean(ref.dice(p, g, squared=True)))
    soft = random_soft_labels(SHAPE_2D)
    logits = random_logits(SHAPE_2D, dtype=torch.float64)
    p, g, _ = ref.region_statistics(logits.detach(), soft.numpy())
    assert_matches_reference(R.dice_loss(logits, soft, squared=True, batch=True), ref.dice(*ref.region_statistics(
        logits.detach(), soft.numpy(), batch=True)[:2], squared=True).mean())


# ------------------------------------------------------------------ identities, errors, peers


@KERNEL_PATHS
def test_overlap_identities():
    logits, labels = float64_case(SHAPE_3D, scale=2.0)
    dice = R.dice_loss(logits, labels, reduction="none")
    tversky = R.tversky_loss(logits, labels, alpha=0.3, beta=0.7, reduction="none")
    # Dice is Tversky at ½, ½ (the ratio multiplied through by 2, smoothing included)
    torch.testing.assert_close(R.tversky_loss(logits, labels, alpha=0.5, beta=0.5, smooth=0.5e-5), dice.mean())
    torch.testing.assert_close(R.focal_tversky_loss(logits, labels, alpha=0.3, beta=0.7, gamma=1.0,
                                                    reduction="none"), tversky)
    torch.testing.assert_close(R.asymmetric_loss(logits, labels, beta=1.0, reduction="none"), dice)
    torch.testing.assert_close(R.focal_dice_loss(logits, labels, beta=1.0, reduction="none"), dice)
    torch.testing.assert_close(R.tversky_loss(logits, labels, alpha=1.0, beta=1.0), R.iou_loss(logits, labels))


@KERNEL_PATHS
def test_tversky_alpha_weighs_false_positives_per_class():
    # class 1 over-predicted (FP = 2), class 2 under-predicted (FN = 1): FP ≠ FN, so swapping
    # α and β must change the value
    labels = torch.tensor([[[0, 0, 1, 1, 2, 2, 2, 2]]])
    prediction = torch.tensor([[[1, 1, 1, 1, 2, 2, 2, 0]]])
    logits = 8.0 * torch.nn.functional.one_hot(prediction, 3).movedim(-1, 1).double()
    recall_heavy = R.tversky_loss(logits, labels, alpha=0.3, beta=0.7, include_background=False)
    precision_heavy = R.tversky_loss(logits, labels, alpha=0.7, beta=0.3, include_background=False)
    assert not torch.isclose(recall_heavy, precision_heavy)
    # class 1 alone (FP only, up to the 8-logit softness): only α, the FP weight, raises it
    per_class_fp = R.tversky_loss(logits, labels, alpha=0.9, beta=0.1, weight=[0, 1, 0])
    per_class_fn = R.tversky_loss(logits, labels, alpha=0.1, beta=0.9, weight=[0, 1, 0])
    assert per_class_fp > per_class_fn


@KERNEL_PATHS
def test_asym_larger_beta_punishes_false_negatives_more():
    # the same two masks as (prediction, target) and swapped: TP = 2 both ways, one FN or one FP
    small = torch.tensor([[[1, 1, 0, 0]]])
    large = torch.tensor([[[1, 1, 1, 0]]])
    as_logits = lambda labels: 30.0 * (2.0 * labels.unsqueeze(1).double() - 1)  # noqa: E731
    fn_loss = R.asymmetric_loss(as_logits(small), large, beta=1.5)
    fp_loss = R.asymmetric_loss(as_logits(large), small, beta=1.5)
    assert fn_loss > fp_loss
    assert torch.isclose(R.asymmetric_loss(as_logits(small), large, beta=1.0),
                         R.asymmetric_loss(as_logits(large), small, beta=1.0))


@KERNEL_PATHS
def test_focal_powers_keep_gradients_finite_at_perfect_prediction():
    labels = random_labels((2, 4, 4), 3, seed=4)
    labels[labels == 2] = 0
    logits = (1000.0 * torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()).requires_grad_()
    for loss in (R.focal_tversky_loss, R.focal_dice_loss):
        value = loss(logits, labels)  # 1 − TI and D are exactly 0 and 1 here
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
        logits.grad = None


def test_bad_options_raise_clear_errors():
    logits, labels = float64_case(SHAPE_2D, scale=2.0)
    with pytest.raises(ValueError, match="alpha must lie in"):
        R.tversky_loss(logits, labels, alpha=-0.1)
    with pytest.raises(ValueError, match="r must lie in"):
        R.sensitivity_specificity_loss(logits, labels, r=2)
    with pytest.raises(ValueError, match=r"weight must have one value per class \(C=3\)"):
        R.dice_loss(logits, labels, weight=[1, 2])
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.get("iou", reduction="avg")


@KERNEL_PATHS
def test_agrees_with_monai():
    monai_losses = peer_losses("monai")
    logits = random_logits(SHAPE_2D, seed=9)
    labels = random_labels((2, 5, 6), 3, seed=10)
    target = labels.unsqueeze(1)
    common = {"softmax": True, "to_onehot_y": True, "smooth_nr": 1e-5, "smooth_dr": 1e-5}
    torch.testing.assert_close(R.dice_loss(logits, labels), monai_losses.DiceLoss(**common)(logits, target))
    torch.testing.assert_close(R.dice_loss(logits, labels, squared=True),
                               monai_losses.DiceLoss(squared_pred=True, **common)(logits, target))
    torch.testing.assert_close(R.iou_loss(logits, labels), monai_losses.DiceLoss(jaccard=True, **common)(logits, target))
    torch.testing.assert_close(R.tversky_loss(logits, labels, alpha=0.3, beta=0.7),
                               monai_losses.TverskyLoss(alpha=0.3, beta=0.7, **common)(logits, target))


@KERNEL_PATHS
def test_gradcheck_squared_dice_soft_and_binary():
    soft = random_soft_labels((2, 3, 3, 4))
    logits = random_logits((2, 3, 3, 4), seed=13, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: R.dice_loss(x, soft, squared=True, batch=True), (logits,))
    binary = random_logits((2, 1, 3, 4), seed=14, dtype=torch.float64)
    labels = random_labels((2, 3, 4), 1, seed=15)
    assert torch.autograd.gradcheck(lambda x: R.sensitivity_specificity_loss(x, labels), (binary,))


@KERNEL_PATHS
def test_bool_labels_are_accepted_for_binary_and_two_classes():
    logits = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    labels = torch.rand(2, 4, 4) > 0.5
    torch.testing.assert_close(losses.dice_loss(logits, labels), losses.dice_loss(logits, labels.long()))
    two = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(losses.dice_loss(two, labels), losses.dice_loss(two, labels.long()))


# ------------------------------------------------------------------ mcc


class TestMCC:
    @pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 1, 6, 6), (2, 4, 3, 4, 4)])
    @pytest.mark.parametrize("include_background", [True, False])
    def test_reference(self, shape, include_background):
        logits, labels = float64_case(shape)
        ours = losses.mcc_loss(logits, labels, include_background=include_background, reduction="none")
        expected = references_peers.mcc(logits.detach().numpy(), labels.numpy(), include_background=include_background)
        np.testing.assert_allclose(ours.detach().numpy(), expected, rtol=1e-10, atol=1e-12)

    def testgradcheck_on_crop(self):
        gradcheck_on_crop(losses.mcc_loss, *float64_case((2, 3, 6, 6)))

    def test_identities(self):
        logits, labels = float64_case((2, 3, 6, 6))
        perfect = 50.0 * one_hot64(labels, 3)
        assert float(losses.mcc_loss(perfect, labels)) < 1e-6
        binary = random_labels((2, 6, 6), 1, seed=5)
        inverted = -50.0 * (2.0 * binary.unsqueeze(1).to(torch.float64) - 1.0)  # p = 1 − g: MCC = −1
        torch.testing.assert_close(losses.mcc_loss(inverted, binary), torch.tensor(2.0, dtype=torch.float64))
        # one-hot float target == integer labels; batch=True pools the counts
        torch.testing.assert_close(losses.mcc_loss(logits, one_hot64(labels, 3)), losses.mcc_loss(logits, labels))
        pooled = losses.mcc_loss(torch.cat([logits, logits]), torch.cat([labels, labels]), batch=True)
        torch.testing.assert_close(pooled, losses.mcc_loss(logits, labels, batch=True), rtol=1e-5, atol=1e-6)

    def test_ignore_index_drops_voxels(self):
        logits, labels = float64_case((2, 3, 6, 6))
        masked = labels.clone()
        masked[:, :, :3] = 255
        ours = losses.mcc_loss(logits, masked, ignore_index=255)
        torch.testing.assert_close(ours, losses.mcc_loss(logits[..., 3:], labels[:, :, 3:]))

    @pytest.mark.parametrize("channels", [1, 3])
    def test_equals_monai(self, channels):
        monai = peer_losses("monai")
        logits, labels = float64_case((2, channels, 6, 6))
        peer = monai.MCCLoss(sigmoid=channels == 1, softmax=channels > 1, to_onehot_y=channels > 1)
        target = labels.unsqueeze(1).to(torch.float64) if channels == 1 else labels.unsqueeze(1)
        torch.testing.assert_close(losses.mcc_loss(logits, labels), peer(logits, target), rtol=1e-5, atol=1e-5)

    def test_smp_differs(self):
        """SMP's MCCLoss pools the batch and adds its eps to every count (and takes probabilities):
        equal to ours only with batch=True and a tiny eps."""
        smp = peer_losses("smp")
        logits, labels = float64_case((2, 1, 6, 6))
        peer = smp.MCCLoss(eps=1e-12)(torch.sigmoid(logits), labels.unsqueeze(1).to(torch.float64))
        torch.testing.assert_close(losses.mcc_loss(logits, labels, batch=True, smooth=0.0), peer,
                                   rtol=1e-5, atol=1e-5)
