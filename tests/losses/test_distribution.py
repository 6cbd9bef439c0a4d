"""Distribution-based losses (``losses.distribution``) against float64 references, the papers'
identities, gradcheck, and ``ce``'s label smoothing against torch and SMP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import references as ref
from conftest import assert_matches_reference, peer_losses, random_labels, random_logits, random_soft_labels
from medsegloss import losses
from medsegloss.distance import signed_distance_map
from medsegloss.losses import distribution as D

# every test here runs on the fused kernels and on the plain path (conftest.fused_path)
pytestmark = pytest.mark.usefixtures("fused_path")

SHAPE_2D, SHAPE_3D = (2, 3, 5, 6), (2, 3, 3, 4, 5)


def _case(shape=SHAPE_2D, seed=0, ignore=None):
    logits = random_logits(shape, seed=seed, dtype=torch.float64, scale=2.0)
    labels = random_labels((shape[0], *shape[2:]), shape[1], seed=seed + 1)
    if ignore is not None:
        labels = labels.clone()
        labels.view(-1)[::5] = ignore
    return logits, labels


# ------------------------------------------------------------------ references


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D, (2, 1, 5, 6)])
def test_ce_and_wce_match_references(shape):
    logits, labels = _case(shape)
    assert_matches_reference(D.cross_entropy_loss(logits, labels, reduction="none"), ref.cross_entropy(logits.detach(), labels))
    k = 2 if shape[1] == 1 else shape[1]
    weight = np.linspace(0.5, 2.0, k)
    assert_matches_reference(D.weighted_cross_entropy_loss(logits, labels, weight=weight, reduction="none"),
           ref.weighted_cross_entropy(logits.detach(), labels, weight))
    auto = ref.inverse_frequency(labels.numpy(), k)
    assert_matches_reference(D.inverse_frequency_weights(labels, shape[1]), auto)
    assert_matches_reference(D.weighted_cross_entropy_loss(logits, labels, reduction="none"),
           ref.weighted_cross_entropy(logits.detach(), labels, auto))


def test_ce_and_wce_with_ignore_index():
    logits, labels = _case(ignore=255)
    assert_matches_reference(D.cross_entropy_loss(logits, labels, ignore_index=255, reduction="none"),
           ref.cross_entropy(logits.detach(), labels, 255))
    auto = ref.inverse_frequency(labels.numpy(), 3, 255)
    assert_matches_reference(D.weighted_cross_entropy_loss(logits, labels, ignore_index=255, reduction="none"),
           ref.weighted_cross_entropy(logits.detach(), labels, auto, 255))


def test_inverse_frequency_gives_absent_class_zero_weight_and_balances_present_ones():
    labels = torch.tensor([[[0, 0, 0, 1]]])  # class 2 absent
    weight = D.inverse_frequency_weights(labels, 3)
    assert weight[2] == 0 and torch.isfinite(weight).all()
    assert float(weight[0] * 3) == pytest.approx(float(weight[1] * 1))  # equal total weight per class


def test_soft_labels_match_references():
    logits, _ = _case()
    soft = random_soft_labels(SHAPE_2D)
    assert_matches_reference(D.cross_entropy_loss(logits, soft, reduction="none"), ref.soft_cross_entropy(logits.detach(), soft))
    assert_matches_reference(D.focal_loss(logits, soft, gamma=2.0, alpha=[0.2, 0.5, 0.3], reduction="none"),
           ref.soft_focal(logits.detach(), soft, 2.0, [0.2, 0.5, 0.3]))


def test_binary_soft_focal_equals_two_class_softmax_of_zero_and_x():
    logits = random_logits((2, 1, 4, 5), dtype=torch.float64)
    y = torch.rand((2, 1, 4, 5), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    two_class = torch.cat([torch.zeros_like(logits), logits], 1).detach()
    assert_matches_reference(D.focal_loss(logits, y, gamma=1.5, alpha=0.25, reduction="none"),
           ref.soft_focal(two_class, torch.cat([1 - y, y], 1), 1.5, [0.75, 0.25]))


@pytest.mark.parametrize("shape", [SHAPE_2D, (2, 1, 5, 6)])
def test_bce_matches_reference(shape):
    logits, labels = _case(shape)
    channels = ref.one_hot(labels.numpy(), shape[1])
    weight = np.linspace(0.5, 1.5, shape[1])
    assert_matches_reference(D.binary_cross_entropy_loss(logits, labels, weight=weight, reduction="none"),
           ref.binary_cross_entropy(logits.detach(), channels, weight))


def test_bce_multilabel_float_target():
    logits, _ = _case()
    multilabel = (torch.rand(SHAPE_2D, generator=torch.Generator().manual_seed(4)) > 0.6).double()
    assert_matches_reference(D.binary_cross_entropy_loss(logits, multilabel, reduction="none"),
           ref.binary_cross_entropy(logits.detach(), multilabel))


@pytest.mark.parametrize("k", [10, 37.5, 100])
def test_topk_matches_reference(k):
    logits, labels = _case(SHAPE_3D)
    assert_matches_reference(D.topk_loss(logits, labels, k=k, reduction="none"), ref.topk(logits.detach(), labels, k))


def test_topk_with_ignore_index_counts_only_valid_voxels():
    logits, labels = _case(ignore=-1)
    assert_matches_reference(D.topk_loss(logits, labels, k=20, ignore_index=-1, reduction="none"),
           ref.topk(logits.detach(), labels, 20, ignore_index=-1))


@pytest.mark.parametrize("t", [0.3, 0.7, 1.0])
def test_topk_threshold_matches_reference(t):
    logits, labels = _case(ignore=4)
    labels[labels == 4] = 7
    assert_matches_reference(D.topk_threshold_loss(logits, labels, t=t, ignore_index=7, reduction="none"),
           ref.topk_threshold(logits.detach(), labels, t, ignore_index=7))


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D, (2, 1, 5, 6)])
def test_focal_matches_reference(shape):
    logits, labels = _case(shape, ignore=9)
    k = 2 if shape[1] == 1 else shape[1]
    alpha = list(np.linspace(0.25, 1.0, k))
    assert_matches_reference(D.focal_loss(logits, labels, gamma=2.0, alpha=alpha, ignore_index=9, reduction="none"),
           ref.focal(logits.detach(), labels, 2.0, alpha, ignore_index=9))
    assert_matches_reference(D.focal_loss(logits, labels, gamma=0.5, ignore_index=9, reduction="none"),
           ref.focal(logits.detach(), labels, 0.5, ignore_index=9))


@pytest.mark.parametrize("shape", [SHAPE_2D, (2, 1, 6, 7)])
def test_dpce_matches_reference_and_computes_its_own_distance(shape):
    logits = random_logits(shape, dtype=torch.float64)
    labels = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
    labels[:, 1:4, 2:5] = 1
    labels[1, 3:, :2] = shape[1] - 1 if shape[1] > 2 else 1
    dist = signed_distance_map(labels, num_classes=shape[1])
    value = D.distance_penalized_cross_entropy_loss(logits, labels, dist=dist, reduction="none")
    symmetric = ref.signed_distance_maps_ref(ref.one_hot(labels.numpy(), shape[1]))
    assert_matches_reference(value, ref.distance_penalized_cross_entropy(logits.detach(), labels, symmetric))
    assert_matches_reference(D.distance_penalized_cross_entropy_loss(logits, labels, reduction="none"), value.detach().numpy())
    assert not torch.allclose(value, D.cross_entropy_loss(logits, labels, reduction="none"))


def test_dpce_weights_boundary_voxels_up_to_twice():
    labels = torch.zeros((1, 1, 9), dtype=torch.long)
    labels[..., 3:6] = 1
    dist = signed_distance_map(labels, num_classes=2)
    penalty = D.boundary_proximity(dist, labels)
    assert penalty.max() <= 1 and penalty.min() >= 0
    assert penalty[0, 0, 2] > penalty[0, 0, 0] and penalty[0, 0, 3] > penalty[0, 0, 4]  # nearer the edge
    assert penalty[0, 0, 8] == 0  # farthest voxel


# ------------------------------------------------------------------ identities


def test_identities_that_reduce_to_cross_entropy():
    logits, labels = _case(SHAPE_3D)
    ce = D.cross_entropy_loss(logits, labels, reduction="none")
    torch.testing.assert_close(D.focal_loss(logits, labels, gamma=0.0, reduction="none"), ce)
    torch.testing.assert_close(D.topk_loss(logits, labels, k=100, reduction="none"), ce)
    torch.testing.assert_close(D.weighted_cross_entropy_loss(logits, labels, weight=[1, 1, 1], reduction="none"), ce)
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).double()
    torch.testing.assert_close(D.weighted_cross_entropy_loss(logits, onehot, weight=[0.3, 1, 2]),
                               D.weighted_cross_entropy_loss(logits, labels, weight=[0.3, 1, 2]))
    torch.testing.assert_close(D.focal_loss(logits, onehot), D.focal_loss(logits, labels))


def test_binary_identities():
    logits, labels = _case((2, 1, 5, 6))
    ce = D.cross_entropy_loss(logits, labels)
    torch.testing.assert_close(D.binary_cross_entropy_loss(logits, labels), ce)
    torch.testing.assert_close(D.weighted_cross_entropy_loss(logits, labels, weight=[1, 1]), ce)
    torch.testing.assert_close(D.focal_loss(logits, labels, gamma=0.0), ce)
    soft = labels.unsqueeze(1).double()
    torch.testing.assert_close(D.focal_loss(logits, soft, alpha=0.25), D.focal_loss(logits, labels, alpha=0.25))
    torch.testing.assert_close(D.weighted_cross_entropy_loss(logits, soft, weight=[0.5, 2]),
                               D.weighted_cross_entropy_loss(logits, labels, weight=[0.5, 2]))


def test_focal_down_weights_confident_voxels():
    labels = torch.zeros((1, 2, 2), dtype=torch.long)
    logits = torch.zeros((1, 3, 2, 2))
    logits[:, 0] = 4.0  # confident and right
    assert D.focal_loss(logits, labels, gamma=2) < 0.01 * D.cross_entropy_loss(logits, labels)


# ------------------------------------------------------------------ errors


def test_bad_options_raise_clear_errors():
    logits, labels = _case()
    with pytest.raises(ValueError, match="weight must be 'auto'"):
        D.weighted_cross_entropy_loss(logits, labels, weight="inverse")
    with pytest.raises(ValueError, match="one value per class"):
        D.weighted_cross_entropy_loss(logits, labels, weight=[1, 2])
    with pytest.raises(ValueError, match=r"k must"):
        D.topk_loss(logits, labels, k=0)
    with pytest.raises(ValueError, match=r"t must lie in"):
        D.topk_threshold_loss(logits, labels, t=1.5)
    with pytest.raises(ValueError, match="single number"):
        D.focal_loss(logits, labels, alpha=0.25)
    with pytest.raises(ValueError, match=r"dist must hold one signed distance map per class.*\(2, 1, 5, 6\)"):
        D.distance_penalized_cross_entropy_loss(logits, labels, dist=torch.zeros(2, 1, 5, 6))
    with pytest.raises(TypeError, match="no option"):
        losses.get("focal", gama=2)


# ------------------------------------------------------------------ gradcheck


@pytest.mark.parametrize("name, options", [
    ("ce", {}), ("wce", {}), ("wce", {"weight": [0.2, 1.0, 3.0]}), ("bce", {}), ("topk", {"k": 30}),
    ("topk_threshold", {"t": 0.6}), ("focal", {"gamma": 2.0, "alpha": [0.5, 1.0, 2.0]}), ("dpce", {}),
])
def test_gradcheck(name, options):
    logits = random_logits((2, 3, 3, 4), seed=5, dtype=torch.float64)
    labels = random_labels((2, 3, 4), 3, seed=6)
    function = losses.info(name).function
    assert torch.autograd.gradcheck(lambda x: function(x, labels, **options), (logits,))


def test_gradcheck_binary_and_soft_focal():
    logits = random_logits((2, 1, 3, 4), seed=7, dtype=torch.float64)
    soft = torch.rand((2, 1, 3, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    assert torch.autograd.gradcheck(lambda x: D.focal_loss(x, soft, alpha=0.25), (logits,))
    assert torch.autograd.gradcheck(lambda x: D.weighted_cross_entropy_loss(x, soft), (logits,))


def test_focal_agrees_with_monai():
    monai_losses = peer_losses("monai")
    logits, labels = random_logits(SHAPE_2D, seed=9), random_labels((2, 5, 6), 3, seed=10)
    monai_focal = monai_losses.FocalLoss(gamma=2.0, use_softmax=True, to_onehot_y=True)(logits, labels.unsqueeze(1))
    # MONAI averages over classes too (its per-class terms are zero off the true class): × C
    torch.testing.assert_close(D.focal_loss(logits, labels, gamma=2.0), 3 * monai_focal)


# ------------------------------------------------- fused binary paths equal the formulas


@pytest.mark.parametrize("gamma", [1.0, 2.0, 3.5])
def test_binary_focal_fused_path_matches_formula_and_gradcheck(gamma):
    generator = torch.Generator().manual_seed(8)
    logits = (4 * torch.randn(2, 1, 5, 4, generator=generator, dtype=torch.float64)).requires_grad_(True)
    labels = torch.randint(0, 2, (2, 5, 4), generator=generator)
    p = torch.sigmoid(logits.detach()[:, 0]).numpy()
    p_true = np.where(labels.numpy() == 1, p, 1 - p)
    expected = (-(1 - p_true) ** gamma * np.log(p_true)).reshape(2, -1).mean(-1)
    result = losses.focal_loss(logits, labels, gamma=gamma, reduction="none")
    torch.testing.assert_close(result, torch.from_numpy(expected))
    assert torch.autograd.gradcheck(lambda x: losses.focal_loss(x, labels, gamma=gamma, reduction="none"), (logits,))
    with torch.no_grad():  # no gradient asked: same value
        torch.testing.assert_close(losses.focal_loss(logits, labels, gamma=gamma, reduction="sum"),
                                   torch.from_numpy(expected).sum())


@pytest.mark.parametrize("channels", [1, 3])
def test_ce_mean_fast_path_equals_mean_of_per_sample_values(channels):
    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(3, channels, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, max(channels, 2), (3, 4, 5), generator=generator)
    per_sample = losses.cross_entropy_loss(logits, labels, reduction="none")
    torch.testing.assert_close(losses.cross_entropy_loss(logits, labels), per_sample.mean())
    assert torch.autograd.gradcheck(lambda x: losses.cross_entropy_loss(x, labels), (logits,))
    with pytest.raises(ValueError, match=r"got values in \[0, 2\]") if channels == 1 else \
            pytest.raises(ValueError, match=r"got values in \[0, 3\]"):
        losses.cross_entropy_loss(logits, torch.where(labels == 1, labels.max() + 1, labels))


# ------------------------------------------------------------------ ce's label smoothing


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
    logits = random_logits((2, 4, 6, 6), seed=5, dtype=torch.float64)
    labels = random_labels((2, 6, 6), 4, seed=6)
    ours = losses.cross_entropy_loss(logits, labels, label_smoothing=0.15)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels, label_smoothing=0.15))
    smp = peer_losses("smp")
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
