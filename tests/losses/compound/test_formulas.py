"""The own-formula compounds (``losses.compound.formulas``: combo, ell, bce_iou_ssim, lesion,
unified_focal) against float64 references, the papers' identities, MONAI and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import references
import references_peers
from conftest import float64_case, gradcheck_on_crop, one_hot64, peer_losses
from medsegloss import losses
from medsegloss.losses.compound.formulas import (
    bce_iou_ssim_loss, combo_loss, component_weights, ell_loss, lesion_loss, ssim,
)



@pytest.mark.parametrize("shape, channels", [((2, 6, 5), 3), ((2, 6, 5), 1), ((1, 4, 5, 3), 4)])
def test_combo_matches_reference(shape, channels):
    logits, labels = float64_case((shape[0], channels, *shape[1:]))
    for options in ({}, {"alpha": 0.3, "beta": 0.8, "include_background": False}):
        value = combo_loss(logits, labels, reduction="none", **options)
        expected = references.combo_ref(logits.detach().numpy(), labels.numpy(), **options)
        np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-7)


def test_combo_alpha_one_is_weighted_ce_and_alpha_zero_is_dice():
    logits, labels = float64_case((2, 3, 6, 5))
    torch.testing.assert_close(combo_loss(logits, labels, alpha=0.0), losses.dice_loss(logits, labels))
    # β = 1 keeps only the g·ln p part: the plain cross-entropy divided by the C classes
    torch.testing.assert_close(combo_loss(logits, labels, alpha=1.0, beta=1.0),
                               losses.cross_entropy_loss(logits, labels) / 3)


@pytest.mark.parametrize("shape, channels", [((2, 6, 5), 3), ((2, 6, 5), 1), ((1, 4, 5, 3), 4)])
def test_ell_matches_reference(shape, channels):
    logits, labels = float64_case((shape[0], channels, *shape[1:]))
    for options in ({}, {"w_dice": 0.5, "w_cross": 0.5, "gamma_dice": 1.0, "gamma_cross": 2.0}):
        value = ell_loss(logits, labels, reduction="none", **options)
        expected = references.ell_ref(logits.detach().numpy(), labels.numpy(), **options)
        np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-7)


def test_ell_with_unit_gammas_is_log_dice_plus_weighted_ce():
    # γ = 1, uniform class weights: E[-ln Dice_c] and the plain cross-entropy
    logits, labels = float64_case((2, 3, 6, 5))
    value = ell_loss(logits, labels, gamma_dice=1.0, gamma_cross=1.0, weight=[1.0, 1.0, 1.0], smooth=1e-5,
                     reduction="none")
    probs = torch.softmax(logits, 1)
    onehot = one_hot64(labels, 3)
    dice_c = (2 * (probs * onehot).sum((2, 3)) + 1e-5) / (probs.sum((2, 3)) + onehot.sum((2, 3)) + 1e-5)
    log_dice = -torch.log(dice_c).mean(1)
    expected = 0.8 * log_dice + 0.2 * losses.cross_entropy_loss(logits, labels, reduction="none")
    torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("shape", [(2, 16, 13), (1, 12, 11, 10)])
def test_bce_iou_ssim_matches_reference(shape):
    logits, labels = float64_case((shape[0], 1, *shape[1:]))
    value = bce_iou_ssim_loss(logits, labels, reduction="none")
    expected = references.bce_iou_ssim_ref(logits.detach().numpy(), labels.numpy())
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-7)


def test_ssim_of_identical_images_is_one_and_bce_iou_ssim_is_binary_only():
    image = torch.rand(2, 1, 20, 20, dtype=torch.float64)
    torch.testing.assert_close(ssim(image, image), torch.ones(2, dtype=torch.float64))
    assert float(ssim(image, 1 - image).max()) < 0.5
    assert losses.info("bce_iou_ssim").binary_only
    logits, labels = float64_case((2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"one channel.*\(2, 3, 8, 8\)"):
        bce_iou_ssim_loss(logits, labels)


@pytest.mark.parametrize("shape, channels", [((3, 9, 8), 3), ((3, 9, 8), 1), ((2, 5, 6, 4), 3)])
def test_lesion_matches_reference(shape, channels):
    logits, labels = float64_case((shape[0], channels, *shape[1:]))
    for options in ({}, {"alpha": 0.8, "gamma": 1.0}):
        value = lesion_loss(logits, labels, reduction="none", **options)
        expected = references.lesion_ref(logits.detach().numpy(), labels.numpy(), **options)
        np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-7)


def test_lesion_components_weigh_equally():
    # one image, two lesions of 1 and 6 voxels: each weighs 1/2 in the lesion term
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, 0, 0] = 1
    labels[0, 3:5, 2:5] = 1
    weights = component_weights(labels, 2)
    assert float(weights[0, 0, 0]) == pytest.approx(0.5)
    assert float(weights[0, 3, 3]) == pytest.approx(0.5 / 6)
    assert float(weights.sum()) == pytest.approx(1.0)
    logits, _ = float64_case((1, 2, 6, 6))
    focal = -(1 - torch.softmax(logits, 1).gather(1, labels[:, None])[:, 0]) ** 2 * torch.log_softmax(
        logits, 1).gather(1, labels[:, None])[:, 0]
    expected = 0.5 * (0.5 * focal[0, 0, 0] + 0.5 * focal[0, 3:5, 2:5].mean()) + 0.5 * focal.mean()
    torch.testing.assert_close(lesion_loss(logits, labels), expected)


def test_lesion_with_one_component_per_image():
    # a single lesion per image: L = α · (its mean focal loss) + (1 − α) · (the image's mean)
    labels = torch.zeros(2, 7, 7, dtype=torch.long)
    labels[0, 1:4, 1:5] = 1
    labels[1, 5:, :] = 1
    logits, _ = float64_case((2, 1, 7, 7))
    focal_map = losses.focal_loss(logits, labels, gamma=2.0, reduction="none")  # image means
    probs = torch.sigmoid(logits[:, 0])
    p_true = torch.where(labels == 1, probs, 1 - probs)
    focal = -(1 - p_true) ** 2 * torch.log(p_true)
    lesion = torch.stack([focal[0, 1:4, 1:5].mean(), focal[1, 5:, :].mean()])
    torch.testing.assert_close(focal.mean((1, 2)), focal_map)  # the pixel term is the focal loss
    torch.testing.assert_close(lesion_loss(logits, labels, alpha=0.3, reduction="none"),
                               0.3 * lesion + 0.7 * focal_map)
    # an image without lesions keeps only the pixel term
    empty = torch.zeros_like(labels)
    torch.testing.assert_close(lesion_loss(logits, empty, alpha=0.3, reduction="none"),
                               0.7 * losses.focal_loss(logits, empty, gamma=2.0, reduction="none"))


def test_gradcheck_bce_iou_ssim():
    logits, labels = float64_case((1, 1, 6, 5), seed=3)
    assert torch.autograd.gradcheck(lambda x: bce_iou_ssim_loss(x, labels, window_size=3), (logits,))


@pytest.mark.parametrize("name", ["combo", "ell", "lesion"])
def test_gradcheck(name):
    logits, labels = float64_case((1, 3, 5, 4), seed=3)
    function = losses.info(name).function
    assert torch.autograd.gradcheck(lambda x: function(x, labels), (logits,))


@pytest.mark.parametrize("name", ["combo", "ell", "lesion"])
def test_one_hot_float_target_equals_labels(name):
    logits, labels = float64_case((2, 3, 7, 6))
    function = losses.info(name).function
    torch.testing.assert_close(function(logits, one_hot64(labels, 3)), function(logits, labels))


# ------------------------------------------------------------------ unified_focal


class TestUnifiedFocal:
    @pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 1, 6, 6), (2, 4, 3, 4, 4)])
    @pytest.mark.parametrize("variant", ["asymmetric", "symmetric"])
    def test_reference(self, shape, variant):
        logits, labels = float64_case(shape)
        ours = losses.unified_focal_loss(logits, labels, variant=variant, reduction="none")
        expected = references_peers.unified_focal(logits.detach().numpy(), labels.numpy(), variant=variant)
        np.testing.assert_allclose(ours.detach().numpy(), expected, rtol=1e-10)

    @pytest.mark.parametrize("variant", ["asymmetric", "symmetric"])
    def testgradcheck_on_crop(self, variant):
        gradcheck_on_crop(losses.unified_focal_loss, *float64_case((2, 3, 6, 6)), variant=variant)

    def test_identities(self):
        """Symmetric, δ = ½: λ = 1 is half the focal loss, λ = 0 with γ = 0 the Dice (Tversky ½, ½) loss."""
        logits, labels = float64_case((2, 3, 6, 6))
        torch.testing.assert_close(
            losses.unified_focal_loss(logits, labels, weight_focal=1.0, delta=0.5, gamma=0.7, variant="symmetric"),
            0.5 * losses.focal_loss(logits, labels, gamma=0.7))
        torch.testing.assert_close(
            losses.unified_focal_loss(logits, labels, weight_focal=0.0, delta=0.5, gamma=0.0, variant="symmetric"),
            losses.tversky_loss(logits, labels, alpha=0.5, beta=0.5, smooth=1e-7))

    @pytest.mark.parametrize("weight_focal, scale", [(0.0, 1.0), (1.0, 2.0)])
    @pytest.mark.parametrize("channels", [1, 2])
    def test_equals_monai(self, weight_focal, scale, channels):
        """MONAI's AsymmetricUnifiedFocalLoss takes probabilities and averages its focal part over
        the two classes: ours = MONAI for the Tversky part (λ = 0), 2 × MONAI for the focal (λ = 1)."""
        monai = peer_losses("monai")
        logits, labels = float64_case((2, channels, 6, 6))
        peer = monai.AsymmetricUnifiedFocalLoss(weight=weight_focal, gamma=0.5, delta=0.6, to_onehot_y=channels > 1)
        probs = torch.sigmoid(logits) if channels == 1 else torch.softmax(logits, 1)
        target = labels.unsqueeze(1).to(torch.float64) if channels == 1 else labels.unsqueeze(1)
        torch.testing.assert_close(losses.unified_focal_loss(logits, labels, weight_focal=weight_focal),
                                   scale * peer(probs, target), rtol=1e-5, atol=1e-5)


def test_unified_focal_weight_was_lambda_focal_for_one_release():
    logits, labels = float64_case((2, 3, 6, 6))
    expected = losses.unified_focal_loss(logits, labels, weight_focal=0.3)
    with pytest.warns(DeprecationWarning, match="lambda_focal= is renamed weight_focal="):
        torch.testing.assert_close(losses.get("unified_focal", lambda_focal=0.3)(logits, labels), expected)
    with pytest.warns(DeprecationWarning, match="weight_focal"):
        torch.testing.assert_close(losses.build("unified_focal(lambda_focal=0.3)")(logits, labels), expected)
    with pytest.warns(DeprecationWarning, match="weight_focal"):
        torch.testing.assert_close(losses.unified_focal_loss(logits, labels, lambda_focal=0.3), expected)
    assert "weight_focal" in losses.info("unified_focal").options and "lambda_focal" not in losses.info("unified_focal").options
