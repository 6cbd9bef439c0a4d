"""Region-based losses against float64 references, the papers' identities, MONAI and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import references as ref
from conftest import random_labels, random_logits, random_soft_labels
from medsegloss import losses
from medsegloss.losses import region as R

# every test here runs on the fused kernels and on the plain path (conftest.fused_path)
pytestmark = pytest.mark.usefixtures("fused_path")

SHAPE_2D, SHAPE_3D, SHAPE_BINARY = (2, 3, 5, 6), (2, 3, 3, 4, 5), (3, 1, 5, 6)

# name -> (function, per-class or per-sample reference, options); each reference takes (p, g, **options)
PER_CLASS = {
    "ss": (R.sensitivity_specificity_loss, {"r": 0.2}),
    "dice": (R.dice_loss, {}),
    "iou": (R.iou_loss, {}),
    "tversky": (R.tversky_loss, {"alpha": 0.2, "beta": 0.9}),
    "focal_tversky": (R.focal_tversky_loss, {"alpha": 0.4, "beta": 0.6, "gamma": 1.5}),
    "asym": (R.asymmetric_loss, {"beta": 1.5}),
    "focal_dice": (R.focal_dice_loss, {"beta": 2.0}),
}


def _reference_per_class(name, p, g, voxels, options):
    options = dict(options, smooth=1e-5)
    if name == "ss":
        return ref.sensitivity_specificity(p, g, voxels, **options)
    if name == "asym":
        return ref.f_beta(p, g, **options)
    return getattr(ref, name)(p, g, **options)


def _case(shape=SHAPE_2D, seed=0, ignore=None, absent=None):
    logits = random_logits(shape, seed=seed, dtype=torch.float64, scale=2.0)
    labels = random_labels((shape[0], *shape[2:]), shape[1], seed=seed + 1)
    if absent is not None:
        labels[labels == absent] = 0
    if ignore is not None:
        labels.view(-1)[::4] = ignore
    return logits, labels


def _close(value, expected):
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ references


@pytest.mark.parametrize("name", PER_CLASS)
@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D, SHAPE_BINARY])
def test_per_class_losses_match_references(name, shape):
    function, options = PER_CLASS[name]
    logits, labels = _case(shape)
    p, g, voxels = ref.region_statistics(logits.detach(), labels)
    expected = ref.class_mean(_reference_per_class(name, p, g, voxels, options))
    _close(function(logits, labels, reduction="none", **options), expected)


@pytest.mark.parametrize("name", PER_CLASS)
def test_per_class_losses_with_ignore_weight_background_and_batch(name):
    function, options = PER_CLASS[name]
    logits, labels = _case(ignore=255)
    weight = [0.5, 1.0, 3.0]
    p, g, voxels = ref.region_statistics(logits.detach(), labels, ignore_index=255)
    per_class = _reference_per_class(name, p, g, voxels, options)
    _close(function(logits, labels, ignore_index=255, weight=weight, include_background=False,
                    reduction="none", **options), ref.class_mean(per_class, weight, include_background=False))
    p, g, voxels = ref.region_statistics(logits.detach(), labels, ignore_index=255, batch=True)
    expected = ref.class_mean(_reference_per_class(name, p, g, voxels, options))
    _close(function(logits, labels, ignore_index=255, batch=True, reduction="none", **options), expected.repeat(2))


@pytest.mark.parametrize("name", PER_CLASS)
def test_per_class_losses_with_soft_labels(name):
    function, options = PER_CLASS[name]
    logits, _ = _case()
    soft = random_soft_labels(SHAPE_2D)
    p, g, voxels = ref.region_statistics(logits.detach(), soft.numpy())
    _close(function(logits, soft, reduction="none", **options),
           ref.class_mean(_reference_per_class(name, p, g, voxels, options)))


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_BINARY])
def test_squared_dice_matches_reference(shape):
    logits, labels = _case(shape)
    p, g, _ = ref.region_statistics(logits.detach(), labels)
    _close(R.dice_loss(logits, labels, squared=True, reduction="none"), ref.class_mean(ref.dice(p, g, squared=True)))
    soft = random_soft_labels(SHAPE_2D)
    logits = random_logits(SHAPE_2D, dtype=torch.float64)
    p, g, _ = ref.region_statistics(logits.detach(), soft.numpy())
    _close(R.dice_loss(logits, soft, squared=True, batch=True), ref.dice(*ref.region_statistics(
        logits.detach(), soft.numpy(), batch=True)[:2], squared=True).mean())


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D, SHAPE_BINARY])
@pytest.mark.parametrize("include_background", [True, False])
def test_gdl_and_pgdl_match_references(shape, include_background):
    logits, labels = _case(shape, absent=2 if shape[1] == 3 else None)
    p, g, _ = ref.region_statistics(logits.detach(), labels)
    expected = 1 - ref.generalized_dice_score(p, g, 1e-5, include_background)
    _close(R.generalized_dice_loss(logits, labels, include_background=include_background, reduction="none"), expected)
    _close(R.penalty_generalized_dice_loss(logits, labels, k=2.5, include_background=include_background,
                                           reduction="none"),
           ref.penalty_generalized_dice(p, g, 2.5, 1e-5, include_background))


def test_gdl_batch_pools_counts_before_weighting():
    logits, labels = _case(ignore=-1)
    p, g, _ = ref.region_statistics(logits.detach(), labels, ignore_index=-1, batch=True)
    expected = 1 - ref.generalized_dice_score(p, g)
    _close(R.generalized_dice_loss(logits, labels, ignore_index=-1, batch=True, reduction="none"), expected.repeat(2))


# ------------------------------------------------------------------ identities


def test_overlap_identities():
    logits, labels = _case(SHAPE_3D)
    dice = R.dice_loss(logits, labels, reduction="none")
    tversky = R.tversky_loss(logits, labels, alpha=0.3, beta=0.7, reduction="none")
    # Dice is Tversky at ½, ½ (the ratio multiplied through by 2, smoothing included)
    torch.testing.assert_close(R.tversky_loss(logits, labels, alpha=0.5, beta=0.5, smooth=0.5e-5), dice.mean())
    torch.testing.assert_close(R.focal_tversky_loss(logits, labels, alpha=0.3, beta=0.7, gamma=1.0,
                                                    reduction="none"), tversky)
    torch.testing.assert_close(R.asymmetric_loss(logits, labels, beta=1.0, reduction="none"), dice)
    torch.testing.assert_close(R.focal_dice_loss(logits, labels, beta=1.0, reduction="none"), dice)
    torch.testing.assert_close(R.penalty_generalized_dice_loss(logits, labels, k=0.0),
                               R.generalized_dice_loss(logits, labels))
    torch.testing.assert_close(R.tversky_loss(logits, labels, alpha=1.0, beta=1.0), R.iou_loss(logits, labels))


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


def test_gdl_absent_class_is_finite_and_penalised():
    labels = torch.zeros((2, 4, 4), dtype=torch.long)
    labels[:, 1:3, 1:3] = 1  # class 2 absent everywhere
    logits = random_logits((2, 3, 4, 4), seed=3)
    for loss in (R.generalized_dice_loss, R.penalty_generalized_dice_loss):
        value = loss(logits, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
        logits.grad = None
    clean = 12.0 * torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    wrong = clean.clone()
    wrong[:, 2, 0, 0], wrong[:, 0, 0, 0] = 12.0, 0.0  # predict the absent class at one voxel
    assert R.generalized_dice_loss(wrong, labels) > R.generalized_dice_loss(clean, labels) + 1e-3


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
    logits, labels = _case()
    with pytest.raises(ValueError, match="alpha must lie in"):
        R.tversky_loss(logits, labels, alpha=-0.1)
    with pytest.raises(ValueError, match="r must lie in"):
        R.sensitivity_specificity_loss(logits, labels, r=2)
    with pytest.raises(ValueError, match=r"weight must have one value per class \(C=3\)"):
        R.dice_loss(logits, labels, weight=[1, 2])
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.get("iou", reduction="avg")


# ------------------------------------------------------------------ peers


def test_agrees_with_monai():
    monai_losses = pytest.importorskip("monai.losses")
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
    # MONAI's GDL has no weight normalisation; without smoothing the score is the same
    torch.testing.assert_close(R.generalized_dice_loss(logits, labels, smooth=0.0),
                               monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, smooth_nr=0.0,
                                                                smooth_dr=0.0)(logits, target))


# ------------------------------------------------------------------ gradcheck


@pytest.mark.parametrize("name", losses.available("region"))
def test_gradcheck(name):
    logits = random_logits((2, 3, 3, 4), seed=11, dtype=torch.float64)
    labels = random_labels((2, 3, 4), 3, seed=12)
    function = losses.info(name).function
    assert torch.autograd.gradcheck(lambda x: function(x, labels), (logits,))


def test_gradcheck_squared_dice_soft_and_binary():
    soft = random_soft_labels((2, 3, 3, 4))
    logits = random_logits((2, 3, 3, 4), seed=13, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: R.dice_loss(x, soft, squared=True, batch=True), (logits,))
    binary = random_logits((2, 1, 3, 4), seed=14, dtype=torch.float64)
    labels = random_labels((2, 3, 4), 1, seed=15)
    assert torch.autograd.gradcheck(lambda x: R.sensitivity_specificity_loss(x, labels), (binary,))


# ------------------------------------------------- the fused count pass equals the one-hot counts


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("with_ce", [False, True])
def test_fused_soft_counts_equals_one_hot_counts(channels, with_ce):
    from medsegloss._ops import one_hot, probabilities, soft_counts, fused_soft_counts

    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(2, channels, 4, 3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, max(channels, 2), (2, 4, 3, 5), generator=generator)
    expected = soft_counts(probabilities(logits), one_hot(labels, channels, torch.float64))
    result = fused_soft_counts(logits, labels, with_ce=with_ce)
    if with_ce:
        ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none") if channels > 1 else \
            torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.double(), reduction="none")
        torch.testing.assert_close(result[0], ce.reshape(2, -1).mean(-1))
        result = result[1:]
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want)
    weights = torch.rand(3, 2, channels, generator=generator, dtype=torch.float64)

    def weighted(x):
        out = fused_soft_counts(x, labels, with_ce=with_ce)
        total = sum((w * v).sum() for w, v in zip(weights, out[-3:]))
        return total + (out[0].sum() if with_ce else 0)

    assert torch.autograd.gradcheck(weighted, (logits,))


def test_region_counts_fused_path_matches_reference_and_range_errors_survive():
    from medsegloss.losses.region import region_counts

    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 6, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 6, 5), generator=generator)
    probs = torch.softmax(logits, 1).numpy()
    onehot = np.eye(3)[labels.numpy()].transpose(0, 3, 1, 2)
    tp = (probs * onehot).reshape(2, 3, -1).sum(-1)
    torch.testing.assert_close(region_counts(logits, labels)[0], torch.from_numpy(tp))
    with pytest.raises(ValueError, match=r"got values in \[0, 3\]"):
        region_counts(logits, torch.where(labels == 2, 3, labels))
    with pytest.raises(ValueError, match=r"got values in \[-1, 2\]"):
        region_counts(logits, torch.where(labels == 1, -1, labels))


def test_bool_labels_are_accepted_for_binary_and_two_classes():
    logits = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    labels = torch.rand(2, 4, 4) > 0.5
    torch.testing.assert_close(losses.dice_loss(logits, labels), losses.dice_loss(logits, labels.long()))
    two = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(losses.dice_loss(two, labels), losses.dice_loss(two, labels.long()))
