"""The named sums (``losses.compound.named_sums``): each equals the weighted sum of its terms,
its options reach the terms that take them, the one-pass ``dice_ce``, the term-weight names
(``weight_<term>``; the former ones for one release), MONAI's DiceCE / DiceFocal /
SoftDiceclDice / GeneralizedDiceFocal, and gradcheck."""

from __future__ import annotations

import pytest
import torch

from conftest import float64_case, gradcheck_on_crop, one_hot64, peer_losses, random_labels, random_logits
from medsegloss import losses
from medsegloss.distance import signed_distance_map
from medsegloss.losses import WeightedSum
from medsegloss.losses.compound.named_sums import (
    dice_bce_loss, dice_ce_loss, dice_focal_loss, dice_topk_loss, gdl_boundary_loss,
)

# the tests of formulas with a fused kernel run on it and on the plain path (conftest.fused_path)
KERNEL_PATHS = pytest.mark.usefixtures("fused_path")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("options", [{}, {"weight_dice": 0.3, "include_background": False, "smooth": 1.0}])
@KERNEL_PATHS
def test_dice_ce_is_ce_plus_alpha_dice(channels, options):
    logits, labels = float64_case((2, channels, 6, 5))
    alpha = options.get("weight_dice", 1.0)
    dice_options = {key: value for key, value in options.items() if key != "weight_dice"}
    for target in ([labels, one_hot64(labels, channels)] if channels > 1 else [labels]):
        expected = losses.cross_entropy_loss(logits, target, reduction="none") + alpha * losses.dice_loss(
            logits, target, reduction="none", **dice_options)
        torch.testing.assert_close(dice_ce_loss(logits, target, reduction="none", **options), expected)
        module = losses.get("dice_ce", **options)
        torch.testing.assert_close(module(logits, target), expected.mean())


@KERNEL_PATHS
def test_dice_ce_with_ignore_index():
    logits, labels = float64_case((2, 3, 6, 5))
    labels[0, :2] = 255
    expected = losses.cross_entropy_loss(logits, labels, ignore_index=255) + losses.dice_loss(
        logits, labels, ignore_index=255)
    torch.testing.assert_close(dice_ce_loss(logits, labels, ignore_index=255), expected)


@KERNEL_PATHS
def test_dice_ce_joint_path_equals_separate_terms_and_gradients():
    logits, labels = float64_case((2, 4, 3, 6, 5))
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
@KERNEL_PATHS
def test_dice_bce_focal_topk_are_their_sums(channels):
    logits, labels = float64_case((2, channels, 7, 6))
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
@KERNEL_PATHS
def test_named_sums_are_weighted_sums_that_log_their_terms(name):
    logits, labels = random_logits((2, 3, 8, 8)), random_labels((2, 8, 8), 3)
    loss = losses.get(name, reduction="none")
    assert isinstance(loss, WeightedSum)
    value = loss(logits, labels)
    assert value.shape == (2,)
    assert set(loss.last_values) == set(loss.names) and len(loss.names) == 2
    total = sum(loss.weights[term] * loss.last_values[term] for term in loss.names)
    assert float(value.detach().mean()) == pytest.approx(total, rel=1e-5)
    function = losses.info(name).function
    torch.testing.assert_close(function(logits, labels, reduction="none"), value)


@KERNEL_PATHS
def test_gdl_boundary_alpha_zero_is_gdl_and_alpha_is_settable():
    logits, labels = float64_case((2, 3, 9, 8))
    gdl = losses.generalized_dice_loss(logits, labels)
    torch.testing.assert_close(gdl_boundary_loss(logits, labels, weight_boundary=0.0), gdl)
    loss = losses.get("gdl_boundary")
    assert loss.needs_distance and losses.info("gdl_boundary").needs_distance
    dist = signed_distance_map(labels, num_classes=3)
    loss.weights["boundary"] = 0.25  # a schedule raising α between epochs
    expected = gdl + 0.25 * losses.boundary_loss(logits, labels)
    torch.testing.assert_close(loss(logits, labels, dist=dist), expected)
    torch.testing.assert_close(gdl_boundary_loss(logits, labels, weight_boundary=0.25, dist=dist), expected)


@pytest.mark.parametrize("name", ["dice_ce", "dice_focal", "gdl_boundary"])
@KERNEL_PATHS
def test_gradcheck(name):
    logits, labels = float64_case((1, 3, 5, 4), seed=3)
    function = losses.info(name).function
    assert torch.autograd.gradcheck(lambda x: function(x, labels), (logits,))


@pytest.mark.parametrize("name", ["dice_ce", "dice_focal"])
@KERNEL_PATHS
def test_one_hot_float_target_equals_labels(name):
    logits, labels = float64_case((2, 3, 7, 6))
    function = losses.info(name).function
    torch.testing.assert_close(function(logits, one_hot64(labels, 3)), function(logits, labels))


@KERNEL_PATHS
def test_gradcheck_dice_ce_binary_fused_path():
    logits, labels = float64_case((2, 1, 5, 4), seed=4)
    assert torch.autograd.gradcheck(lambda x: dice_ce_loss(x, labels, weight_dice=0.7), (logits,))
    soft = torch.rand(2, 1, 5, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: dice_ce_loss(x, soft, reduction="none").sum(), (logits,))
    expected = losses.cross_entropy_loss(logits, soft) + 0.7 * losses.dice_loss(logits, soft)
    torch.testing.assert_close(dice_ce_loss(logits, soft, weight_dice=0.7), expected)


@KERNEL_PATHS
def test_dice_ce_fused_path_with_underflowing_probabilities():
    # logit gaps of 200 make softmax underflow to 0 in float32: log p must still be exact
    logits, labels = random_logits((2, 3, 6, 5), requires_grad=False), random_labels((2, 6, 5), 3)
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
                                            ("gdl_boundary", "alpha", "weight_boundary")])
def test_old_term_weight_names_work_for_one_release_with_a_warning(name, old, new):
    with pytest.warns(DeprecationWarning, match=f"{old}= is renamed {new}="):
        loss = losses.get(name, **{old: 0.3})
    term = [term for term in loss.names if term not in ("dice", "gdl")][0] if name != "dice_ce" else "dice"
    assert loss.weights[term] == 0.3 and new in losses.info(name).options and old not in losses.info(name).options
    with pytest.warns(DeprecationWarning, match=new):
        loss = losses.build(f"{name}({old}=0.3)")
    assert loss.weights[term] == 0.3
    function = losses.info(name).function
    logits, labels = float64_case((2, 3, 6, 5))
    with pytest.warns(DeprecationWarning, match=new):
        old_value = function(logits, labels, **{old: 0.3})
    torch.testing.assert_close(old_value, function(logits, labels, **{new: 0.3}))
    with pytest.raises(TypeError, match=f"give {new}= only"):
        losses.get(name, **{old: 0.3, new: 0.3})


# ------------------------------------------------------------------ term options, MONAI


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
@KERNEL_PATHS
def test_dice_ce_equals_monai(batch, include_background):
    """Softmax, labels: MONAI's DiceCELoss(lambda_dice = weight_dice, lambda_ce = 1), smoothing
    1e-5 on both sides as ours; label smoothing passed to both CEs."""
    monai = peer_losses("monai")
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
@KERNEL_PATHS
def test_dice_focal_equals_monai(batch):
    """MONAI's DiceFocalLoss has a sigmoid focal term per channel: equal for one channel, and for
    overlapping regions (multilabel) with R channels; its lambda_focal is our weight_focal."""
    monai = peer_losses("monai")
    for channels, multilabel in ((1, False), (3, True)):
        logits = random_logits((2, channels, 6, 7), seed=16, dtype=torch.float64, scale=2.0)
        target = (torch.rand((2, channels, 6, 7), generator=torch.Generator().manual_seed(17)) > 0.5).double()
        ours = losses.get("dice_focal", weight_focal=0.5, gamma=2.0, batch=batch, multilabel=multilabel)
        peer = monai.DiceFocalLoss(sigmoid=True, gamma=2.0, lambda_focal=0.5, batch=batch)
        torch.testing.assert_close(ours(logits, target if multilabel else target[:, 0].long()),
                                   peer(logits, target).to(torch.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["dice_ce", "dice_bce", "dice_focal", "dice_topk", "gdl_focal"])
@KERNEL_PATHS
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
@KERNEL_PATHS
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


# ------------------------------------------------------------------ dice_cldice, gdl_focal


class TestDiceClDice:
    def test_is_the_weighted_sum(self):
        logits, labels = float64_case((2, 3, 7, 7))
        loss = losses.get("dice_cldice", alpha=0.3)
        value = loss(logits, labels)
        expected = 0.7 * losses.dice_loss(logits, labels, smooth=1.0, include_background=False) \
            + 0.3 * losses.cldice_loss(logits, labels)
        torch.testing.assert_close(value, expected)
        assert sorted(loss.last_values) == ["cldice", "dice"]

    def test_equals_monai(self):
        monai = peer_losses("monai")
        logits, labels = float64_case((2, 1, 7, 7), scale=2.0)
        peer = monai.SoftDiceclDiceLoss(iter_=3, alpha=0.5, smooth=1e-30, sigmoid=True)
        torch.testing.assert_close(losses.dice_cldice_loss(logits, labels),
                                   peer(logits, labels.unsqueeze(1).to(torch.float64)), rtol=1e-5, atol=1e-5)


class TestGeneralizedDiceFocal:
    def test_is_the_weighted_sum(self):
        logits, labels = float64_case((2, 3, 6, 6))
        loss = losses.get("gdl_focal", weight_gdl=0.7, weight_focal=2.0, gamma=1.5)
        expected = 0.7 * losses.generalized_dice_loss(logits, labels) + 2.0 * losses.focal_loss(logits, labels, gamma=1.5)
        torch.testing.assert_close(loss(logits, labels), expected)
        assert sorted(loss.last_values) == ["focal", "gdl"]

    def testgradcheck_on_crop(self):
        gradcheck_on_crop(losses.gdl_focal_loss, *float64_case((2, 3, 6, 6)))

    def test_equals_monai(self):
        """Binary (sigmoid focal on both sides); MONAI's unnormalised GDL weights need a tiny smooth."""
        monai = peer_losses("monai")
        logits, labels = float64_case((2, 1, 6, 6))
        peer = monai.GeneralizedDiceFocalLoss(sigmoid=True, smooth_nr=1e-12, smooth_dr=1e-12, gamma=2.0)
        torch.testing.assert_close(losses.gdl_focal_loss(logits, labels, smooth=1e-12),
                                   peer(logits, labels.unsqueeze(1).to(torch.float64)), rtol=1e-5, atol=1e-5)

    def test_monais_focal_term_is_sigmoid_per_channel_even_with_softmax(self):
        """C >= 2: ``GeneralizedDiceFocalLoss(softmax=True)`` applies the softmax to its GDL only; its
        focal term is ``FocalLoss``'s default, the sigmoid focal loss of each channel against the
        rest, averaged over the channels: our ``gdl`` plus ``focal`` in multi-label mode. Ours is the
        softmax focal loss (the contract: C >= 2 is softmax). MONAI's GDL weights are not normalised,
        so its smoothing weighs more; equal for a tiny ``smooth``."""
        monai = peer_losses("monai")
        logits, labels = float64_case((2, 3, 6, 6), scale=2.0)
        onehot = one_hot64(labels, 3)
        gdl = losses.generalized_dice_loss(logits, labels, smooth=1e-12)
        peer = monai.GeneralizedDiceFocalLoss(softmax=True, smooth_nr=1e-12, smooth_dr=1e-12)(logits, onehot)
        torch.testing.assert_close(peer, gdl + losses.get("focal", multilabel=True)(logits, onehot), rtol=1e-6, atol=1e-8)
        ours = losses.gdl_focal_loss(logits, labels, smooth=1e-12)
        torch.testing.assert_close(ours, gdl + losses.focal_loss(logits, labels), rtol=1e-12, atol=1e-12)
        assert float((ours - peer).detach()) > 0.1  # the softmax focal loss is larger here: two definitions
        default = monai.GeneralizedDiceFocalLoss(softmax=True)(logits, onehot)  # MONAI's smooth 1e-5, unnormalised
        torch.testing.assert_close(default, peer, rtol=1e-3, atol=1e-4)
