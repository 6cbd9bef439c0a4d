"""Compound losses: the named sums equal their terms, the own-formula compounds (combo, ell,
bce_iou_ssim, lesion) match float64 references, identities from the papers, gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import references
from medsegloss import losses
from medsegloss.distance import signed_distance_map
from medsegloss.losses import WeightedSum
from medsegloss.losses.compound import (
    dice_bce_loss, dice_ce_loss, dice_focal_loss, dice_topk_loss, gdl_boundary_loss,
)
from medsegloss.losses.compound_formulas import bce_iou_ssim_loss, combo_loss, component_weights, ell_loss, lesion_loss, ssim

# every test here runs on the fused kernels and on the plain path (conftest.fused_path)
pytestmark = pytest.mark.usefixtures("fused_path")


def make(shape, channels, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((shape[0], channels, *shape[1:]), generator=generator, dtype=dtype).requires_grad_(True)
    labels = torch.randint(0, max(channels, 2), shape, generator=generator)
    return logits, labels


def one_hot(labels, channels, dtype=torch.float64):
    if channels == 1:
        return labels.unsqueeze(1).to(dtype)
    return torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).to(dtype)


# ----------------------------------------------------------------- named sums equal their terms


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("options", [{}, {"weight_dice": 0.3, "include_background": False, "smooth": 1.0}])
def test_dice_ce_is_ce_plus_alpha_dice(channels, options):
    logits, labels = make((2, 6, 5), channels)
    alpha = options.get("weight_dice", 1.0)
    dice_options = {key: value for key, value in options.items() if key != "weight_dice"}
    for target in ([labels, one_hot(labels, channels)] if channels > 1 else [labels]):
        expected = losses.cross_entropy_loss(logits, target, reduction="none") + alpha * losses.dice_loss(
            logits, target, reduction="none", **dice_options)
        torch.testing.assert_close(dice_ce_loss(logits, target, reduction="none", **options), expected)
        module = losses.get("dice_ce", **options)
        torch.testing.assert_close(module(logits, target), expected.mean())


def test_dice_ce_with_ignore_index():
    logits, labels = make((2, 6, 5), 3)
    labels[0, :2] = 255
    expected = losses.cross_entropy_loss(logits, labels, ignore_index=255) + losses.dice_loss(
        logits, labels, ignore_index=255)
    torch.testing.assert_close(dice_ce_loss(logits, labels, ignore_index=255), expected)


def test_dice_ce_joint_path_equals_separate_terms_and_gradients():
    logits, labels = make((2, 3, 6, 5), 4)
    joint = losses.get("dice_ce", weight_dice=0.7)
    separate = WeightedSum([(name, joint.weights[name], term) for name, term in zip(joint.names, joint.terms)])
    value = joint(logits, labels)
    (grad_joint,) = torch.autograd.grad(value, logits)
    (grad_separate,) = torch.autograd.grad(separate(logits, labels), logits)
    torch.testing.assert_close(value, separate(logits, labels))
    torch.testing.assert_close(grad_joint, grad_separate)
    assert joint.last_values == pytest.approx(separate.last_values)
    assert joint.last_values["ce"] == pytest.approx(float(losses.cross_entropy_loss(logits, labels).detach()))


@pytest.mark.parametrize("channels", [1, 3])
def test_dice_bce_focal_topk_are_their_sums(channels):
    logits, labels = make((2, 7, 6), channels)
    dice = losses.dice_loss(logits, labels, reduction="none")
    cases = [
        (dice_bce_loss(logits, labels, weight_bce=0.4, reduction="none"),
         dice + 0.4 * losses.binary_cross_entropy_loss(logits, labels, reduction="none")),
        (dice_focal_loss(logits, labels, weight_focal=0.5, gamma=3.0, reduction="none"),
         dice + 0.5 * losses.focal_loss(logits, labels, gamma=3.0, reduction="none")),
        (dice_topk_loss(logits, labels, k=20, weight_topk=2.0, reduction="none"),
         dice + 2.0 * losses.topk_loss(logits, labels, k=20, reduction="none")),
    ]
    for value, expected in cases:
        torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("name", ["dice_ce", "dice_bce", "dice_focal", "dice_topk", "gdl_boundary"])
def test_named_sums_are_weighted_sums_that_log_their_terms(name):
    logits, labels = make((2, 8, 8), 3, dtype=torch.float32)
    loss = losses.get(name, reduction="none")
    assert isinstance(loss, WeightedSum)
    value = loss(logits, labels)
    assert value.shape == (2,)
    assert set(loss.last_values) == set(loss.names) and len(loss.names) == 2
    total = sum(loss.weights[term] * loss.last_values[term] for term in loss.names)
    assert float(value.detach().mean()) == pytest.approx(total, rel=1e-5)
    function = losses.info(name).function
    torch.testing.assert_close(function(logits, labels, reduction="none"), value)


def test_gdl_boundary_alpha_zero_is_gdl_and_alpha_is_settable():
    logits, labels = make((2, 9, 8), 3)
    gdl = losses.generalized_dice_loss(logits, labels)
    torch.testing.assert_close(gdl_boundary_loss(logits, labels, weight_boundary=0.0), gdl)
    loss = losses.get("gdl_boundary")
    assert loss.needs_distance and losses.info("gdl_boundary").needs_distance
    dist = signed_distance_map(labels, num_classes=3)
    loss.weights["boundary"] = 0.25  # a schedule raising α between epochs
    expected = gdl + 0.25 * losses.boundary_loss(logits, labels)
    torch.testing.assert_close(loss(logits, labels, dist=dist), expected)
    torch.testing.assert_close(gdl_boundary_loss(logits, labels, weight_boundary=0.25, dist=dist), expected)


# ----------------------------------------------------------------- own-formula compounds


@pytest.mark.parametrize("shape, channels", [((2, 6, 5), 3), ((2, 6, 5), 1), ((1, 4, 5, 3), 4)])
def test_combo_matches_reference(shape, channels):
    logits, labels = make(shape, channels)
    for options in ({}, {"alpha": 0.3, "beta": 0.8, "include_background": False}):
        value = combo_loss(logits, labels, reduction="none", **options)
        expected = references.combo_ref(logits.detach().numpy(), labels.numpy(), **options)
        np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-7)


def test_combo_alpha_one_is_weighted_ce_and_alpha_zero_is_dice():
    logits, labels = make((2, 6, 5), 3)
    torch.testing.assert_close(combo_loss(logits, labels, alpha=0.0), losses.dice_loss(logits, labels))
    # β = 1 keeps only the g·ln p part: the plain cross-entropy divided by the C classes
    torch.testing.assert_close(combo_loss(logits, labels, alpha=1.0, beta=1.0),
                               losses.cross_entropy_loss(logits, labels) / 3)


@pytest.mark.parametrize("shape, channels", [((2, 6, 5), 3), ((2, 6, 5), 1), ((1, 4, 5, 3), 4)])
def test_ell_matches_reference(shape, channels):
    logits, labels = make(shape, channels)
    for options in ({}, {"w_dice": 0.5, "w_cross": 0.5, "gamma_dice": 1.0, "gamma_cross": 2.0}):
        value = ell_loss(logits, labels, reduction="none", **options)
        expected = references.ell_ref(logits.detach().numpy(), labels.numpy(), **options)
        np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-7)


def test_ell_with_unit_gammas_is_log_dice_plus_weighted_ce():
    # γ = 1, uniform class weights: E[-ln Dice_c] and the plain cross-entropy
    logits, labels = make((2, 6, 5), 3)
    value = ell_loss(logits, labels, gamma_dice=1.0, gamma_cross=1.0, weight=[1.0, 1.0, 1.0], smooth=1e-5,
                     reduction="none")
    probs = torch.softmax(logits, 1)
    onehot = one_hot(labels, 3)
    dice_c = (2 * (probs * onehot).sum((2, 3)) + 1e-5) / (probs.sum((2, 3)) + onehot.sum((2, 3)) + 1e-5)
    log_dice = -torch.log(dice_c).mean(1)
    expected = 0.8 * log_dice + 0.2 * losses.cross_entropy_loss(logits, labels, reduction="none")
    torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("shape", [(2, 16, 13), (1, 12, 11, 10)])
def test_bce_iou_ssim_matches_reference(shape):
    logits, labels = make(shape, 1)
    value = bce_iou_ssim_loss(logits, labels, reduction="none")
    expected = references.bce_iou_ssim_ref(logits.detach().numpy(), labels.numpy())
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-7)


def test_ssim_of_identical_images_is_one_and_bce_iou_ssim_is_binary_only():
    image = torch.rand(2, 1, 20, 20, dtype=torch.float64)
    torch.testing.assert_close(ssim(image, image), torch.ones(2, dtype=torch.float64))
    assert float(ssim(image, 1 - image).max()) < 0.5
    assert losses.info("bce_iou_ssim").binary_only
    logits, labels = make((2, 8, 8), 3)
    with pytest.raises(ValueError, match=r"one channel.*\(2, 3, 8, 8\)"):
        bce_iou_ssim_loss(logits, labels)


@pytest.mark.parametrize("shape, channels", [((3, 9, 8), 3), ((3, 9, 8), 1), ((2, 5, 6, 4), 3)])
def test_lesion_matches_reference(shape, channels):
    logits, labels = make(shape, channels)
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
    logits, _ = make((1, 6, 6), 2)
    focal = -(1 - torch.softmax(logits, 1).gather(1, labels[:, None])[:, 0]) ** 2 * torch.log_softmax(
        logits, 1).gather(1, labels[:, None])[:, 0]
    expected = 0.5 * (0.5 * focal[0, 0, 0] + 0.5 * focal[0, 3:5, 2:5].mean()) + 0.5 * focal.mean()
    torch.testing.assert_close(lesion_loss(logits, labels), expected)


def test_lesion_with_one_component_per_image():
    # a single lesion per image: L = α · (its mean focal loss) + (1 − α) · (the image's mean)
    labels = torch.zeros(2, 7, 7, dtype=torch.long)
    labels[0, 1:4, 1:5] = 1
    labels[1, 5:, :] = 1
    logits, _ = make((2, 7, 7), 1)
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


@pytest.mark.parametrize("name", ["combo", "ell", "lesion", "dice_ce", "dice_focal", "gdl_boundary"])
def test_gradcheck(name):
    logits, labels = make((1, 5, 4), 3, seed=3)
    function = losses.info(name).function
    assert torch.autograd.gradcheck(lambda x: function(x, labels), (logits,))


def test_gradcheck_bce_iou_ssim():
    logits, labels = make((1, 6, 5), 1, seed=3)
    assert torch.autograd.gradcheck(lambda x: bce_iou_ssim_loss(x, labels, window_size=3), (logits,))


@pytest.mark.parametrize("name", ["combo", "ell", "lesion", "dice_ce", "dice_focal"])
def test_one_hot_float_target_equals_labels(name):
    logits, labels = make((2, 7, 6), 3)
    function = losses.info(name).function
    torch.testing.assert_close(function(logits, one_hot(labels, 3)), function(logits, labels))


def test_gradcheck_dice_ce_binary_fused_path():
    logits, labels = make((2, 5, 4), 1, seed=4)
    assert torch.autograd.gradcheck(lambda x: dice_ce_loss(x, labels, weight_dice=0.7), (logits,))
    soft = torch.rand(2, 1, 5, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: dice_ce_loss(x, soft, reduction="none").sum(), (logits,))
    expected = losses.cross_entropy_loss(logits, soft) + 0.7 * losses.dice_loss(logits, soft)
    torch.testing.assert_close(dice_ce_loss(logits, soft, weight_dice=0.7), expected)


def test_dice_ce_fused_path_with_underflowing_probabilities():
    # logit gaps of 200 make softmax underflow to 0 in float32: log p must still be exact
    logits, labels = make((2, 6, 5), 3, dtype=torch.float32)
    logits = logits.detach().clone()
    logits[0, :, 0, 0] = torch.tensor([200.0, -200.0, 0.0])
    labels[0, 0, 0] = 1
    logits.requires_grad_(True)
    value = dice_ce_loss(logits, labels)
    expected = losses.cross_entropy_loss(logits, labels) + losses.dice_loss(logits, labels)
    torch.testing.assert_close(value, expected)
    assert float(value.detach()) > 400 / 30 / 2  # the one voxel's CE of 400, averaged over 30 voxels, 2 samples
    value.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name, old, new", [("dice_ce", "alpha", "weight_dice"), ("dice_bce", "gamma", "weight_bce"),
                                            ("dice_focal", "lambda_focal", "weight_focal"),
                                            ("dice_topk", "lambda_topk", "weight_topk"),
                                            ("gdl_boundary", "alpha", "weight_boundary"),
                                            ("gdl_focal", "lambda_focal", "weight_focal")])
def test_old_term_weight_names_work_for_one_release_with_a_warning(name, old, new):
    with pytest.warns(DeprecationWarning, match=f"{old}= is renamed {new}="):
        loss = losses.get(name, **{old: 0.3})
    term = [term for term in loss.names if term not in ("dice", "gdl")][0] if name != "dice_ce" else "dice"
    assert loss.weights[term] == 0.3 and new in losses.info(name).options and old not in losses.info(name).options
    with pytest.warns(DeprecationWarning, match=new):
        loss = losses.build(f"{name}({old}=0.3)")
    assert loss.weights[term] == 0.3
    function = losses.info(name).function
    logits, labels = make((2, 6, 5), 3)
    with pytest.warns(DeprecationWarning, match=new):
        old_value = function(logits, labels, **{old: 0.3})
    torch.testing.assert_close(old_value, function(logits, labels, **{new: 0.3}))
    with pytest.raises(TypeError, match=f"give {new}= only"):
        losses.get(name, **{old: 0.3, new: 0.3})
