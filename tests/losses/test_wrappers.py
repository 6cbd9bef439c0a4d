"""MaskedLoss and DeepSupervisionLoss.

The mask is checked, for every registered loss it accepts, against the loss computed in float64
on only the voxels inside the mask (gathered per sample into an ``(1, C, V_n, 1)`` image); losses
it refuses are exactly those without ``ignore_index`` or with distance maps. Deep supervision is
checked against the weighted sum of the plain loss on strided (nearest) targets.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from conftest import random_labels, random_logits
from medsegloss import losses
from medsegloss.losses.wrappers import deep_supervision_weights, downsample_nearest


def _accepts_mask(name: str) -> bool:
    try:
        losses.masked(losses.get(name))
    except ValueError:
        return False
    return True


MASKABLE = [name for name in losses.available() if _accepts_mask(name)]
REFUSED = [name for name in losses.available() if name not in MASKABLE]
# wce's default weight="auto" is a statistic of the whole batch, so the per-sample reference
# below needs given weights; the batch statistic is checked on a batch of one
OPTIONS = {"wce": {"weight": [0.2, 1.0, 2.0]}}


def _random_mask(shape, seed=3, fraction=0.6):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=generator) < fraction
    mask[0].view(-1)[:3] = True  # every sample keeps a few voxels
    return mask


def _reference_on_masked_voxels(loss, logits, target, mask):
    """The plain loss, per sample, on the voxels inside the mask only (float64), then the mean."""
    values = []
    for sample in range(logits.shape[0]):
        inside = mask[sample]
        sample_logits = logits[sample][:, inside].double().reshape(1, logits.shape[1], -1, 1)
        if target.is_floating_point():
            sample_target = target[sample][:, inside].reshape(1, target.shape[1], -1, 1)
        else:
            sample_target = target[sample][inside].reshape(1, -1, 1)
        values.append(loss(sample_logits, sample_target).reshape(()))
    return torch.stack(values).mean()


def test_the_mask_refuses_exactly_the_losses_without_ignore_index_or_with_distance_maps():
    for name in losses.available():
        loss = losses.get(name)
        terms = list(loss.terms) if isinstance(loss, losses.WeightedSum) else [loss]
        exact = not losses.info(name).needs_distance and all(
            "ignore_index" in inspect.signature(type(term)).parameters for term in terms)
        assert (name in MASKABLE) == exact, name
    assert {"ce", "dice", "tversky", "topk", "dice_ce", "dice_focal"} <= set(MASKABLE)
    assert {"boundary", "hd", "dpce", "gdl_boundary", "combo", "ell", "lesion"} <= set(REFUSED)


@pytest.mark.parametrize("name", MASKABLE)
def test_masked_loss_equals_the_loss_on_the_masked_voxels_only(name):
    channels = 1 if losses.info(name).binary_only else 3
    logits = random_logits((2, channels, 6, 7), seed=0, scale=2.0)
    labels = random_labels((2, 6, 7), channels, seed=1)
    mask = _random_mask((2, 6, 7))
    loss = losses.get(name, **OPTIONS.get(name, {}))
    value = losses.masked(loss)(logits, labels, mask)
    expected = _reference_on_masked_voxels(loss, logits, labels, mask)
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    value.backward()
    assert logits.grad.movedim(1, -1)[~mask].abs().max() == 0  # masked-out voxels get no gradient
    assert logits.grad.abs().sum() > 0


def test_batch_statistics_are_taken_over_the_masked_voxels():
    logits, labels = random_logits((1, 3, 6, 7)), random_labels((1, 6, 7), 3)
    mask = _random_mask((1, 6, 7))
    loss = losses.get("wce")  # inverse class frequency of the (masked) batch
    torch.testing.assert_close(losses.masked(loss)(logits, labels, mask).double(),
                               _reference_on_masked_voxels(loss, logits, labels, mask), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ce", "dice", "tversky", "dice_ce"])
def test_masked_loss_with_one_hot_float_targets_and_3d(name):
    logits = random_logits((2, 3, 3, 4, 5), seed=4)
    labels = random_labels((2, 3, 4, 5), 3, seed=5)
    one_hot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    mask = _random_mask((2, 1, 3, 4, 5))[:, 0].unsqueeze(1)  # (N, 1, *spatial), as 0/1 floats below
    loss = losses.get(name)
    value = losses.masked(loss)(logits, one_hot, mask.float())
    torch.testing.assert_close(value.double(), _reference_on_masked_voxels(loss, logits, one_hot, mask[:, 0]),
                               rtol=1e-5, atol=1e-6)


def test_a_full_mask_is_the_plain_loss_and_own_ignore_labels_stay_ignored():
    logits = random_logits((2, 3, 8, 8))
    labels = random_labels((2, 8, 8), 3)
    loss = losses.build("ce + 0.5*dice")
    full = torch.ones(2, 8, 8, dtype=torch.bool)
    torch.testing.assert_close(losses.masked(loss)(logits, labels, full), loss(logits, labels))
    # a loss with its own ignore_index: its ignored voxels and the masked-out ones both drop out
    with_ignore = labels.clone()
    with_ignore[:, :2] = 255
    mask = _random_mask((2, 8, 8))
    ignoring = losses.get("dice", ignore_index=255)
    expected = ignoring(logits, torch.where(mask, with_ignore, torch.full_like(labels, 255)))
    torch.testing.assert_close(losses.masked(ignoring)(logits, with_ignore, mask), expected)


def test_masked_sum_shares_its_weights_and_reports_term_values():
    loss = losses.build("ce + 0.5*dice")
    wrapped = losses.masked(loss)
    loss.weights["dice"] = 2.0  # a schedule on the original reaches the masked copy
    logits, labels = random_logits((2, 3, 8, 8)), random_labels((2, 8, 8), 3)
    mask = _random_mask((2, 8, 8))
    total = wrapped(logits, labels, mask)
    values = wrapped.last_values
    assert total.item() == pytest.approx(values["ce"] + 2.0 * values["dice"], rel=1e-6)


@pytest.mark.parametrize("name", ["boundary", "combo", "gdl_boundary"])
def test_losses_the_mask_cannot_handle_exactly_are_refused(name):
    with pytest.raises(ValueError, match="masked\\(\\)"):
        losses.masked(losses.get(name))


def test_mask_input_errors():
    wrapped = losses.masked(losses.get("ce"))
    logits, labels = random_logits((2, 3, 8, 8)), random_labels((2, 8, 8), 3)
    with pytest.raises(ValueError, match="mask must have shape"):
        wrapped(logits, labels, torch.ones(2, 8, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="only 0 and 1"):
        wrapped(logits, labels, torch.full((2, 8, 8), 2))
    mask = _random_mask((2, 8, 8))
    torch.testing.assert_close(wrapped(logits, labels.to(torch.uint8), mask), wrapped(logits, labels, mask))
    soft = torch.softmax(torch.randn(2, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="hard one-hot"):
        wrapped(logits, soft, torch.ones(2, 8, 8))


# ---------------------------------------------------------------------------------------------
# Deep supervision


def test_weights_follow_nnunet():
    assert deep_supervision_weights(4) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    assert deep_supervision_weights(4, zero_lowest=True) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0])
    assert deep_supervision_weights(1) == [1.0]
    with pytest.raises(ValueError):
        deep_supervision_weights(1, zero_lowest=True)


def test_downsample_nearest_takes_the_first_voxel_of_each_cell():
    labels = torch.arange(6 * 10).reshape(1, 6, 10)
    assert torch.equal(downsample_nearest(labels, (3, 5)), labels[:, ::2, ::2])
    assert torch.equal(downsample_nearest(labels, (2, 3)), labels[:, ::3, ::4])  # ceil(10/4) = 3: cropped output
    # sizes that are no pooling grid: F.interpolate's nearest index floor(j * L / size)
    values = torch.arange(7.0).reshape(1, 1, 7)
    torch.testing.assert_close(downsample_nearest(values, (5,)),
                               torch.nn.functional.interpolate(values, size=5, mode="nearest"))
    with pytest.raises(ValueError, match="down-sample"):
        downsample_nearest(labels, (12, 5))


def test_a_single_output_is_the_plain_loss():
    loss = losses.get("dice_ce")
    logits, labels = random_logits((2, 3, 8, 8)), random_labels((2, 8, 8), 3)
    expected = loss(logits, labels)
    torch.testing.assert_close(losses.deep_supervision(loss)(logits, labels), expected)
    torch.testing.assert_close(losses.deep_supervision(loss)([logits], labels), expected)


@pytest.mark.parametrize("spatial", [(16, 12), (8, 8, 4)])
def test_weighted_sum_over_nearest_targets_and_gradients_reach_every_output(spatial):
    loss = losses.get("dice_ce")
    labels = random_labels((2, *spatial), 3)
    outputs = [random_logits((2, 3, *(s // 2**i for s in spatial)), seed=i) for i in range(3)]
    value = losses.deep_supervision(loss, weights=[4, 2, 1])(outputs, labels)
    strided = [labels, labels[(..., *[slice(None, None, 2)] * len(spatial))],
               labels[(..., *[slice(None, None, 4)] * len(spatial))]]
    expected = sum(w * loss(o.detach().double(), t) for w, o, t in zip([4 / 7, 2 / 7, 1 / 7], outputs, strided))
    torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-7)
    value.backward()
    assert all(output.grad is not None and output.grad.abs().sum() > 0 for output in outputs)


def test_one_hot_targets_give_the_same_value_as_labels_and_zero_weights_are_skipped():
    loss = losses.get("dice_ce")
    labels = random_labels((2, 16, 16), 3)
    one_hot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    outputs = [random_logits((2, 3, 16 // 2**i, 16 // 2**i), seed=i) for i in range(3)]
    wrapped = losses.deep_supervision(loss, deep_supervision_weights(3, zero_lowest=True))
    torch.testing.assert_close(wrapped(outputs, one_hot), wrapped(outputs, labels))
    assert sorted(wrapped.last_values) == ["output0", "output1"]


def test_masked_loss_under_deep_supervision_downsamples_the_mask():
    inner = losses.masked(losses.get("ce"))
    labels = random_labels((2, 8, 8), 3)
    mask = _random_mask((2, 8, 8))
    outputs = [random_logits((2, 3, 8, 8)), random_logits((2, 3, 4, 4), seed=1)]
    value = losses.deep_supervision(inner, [1, 1])(outputs, labels, mask)
    expected = 0.5 * inner(outputs[0], labels, mask) + 0.5 * inner(outputs[1], labels[:, ::2, ::2], mask[:, ::2, ::2])
    torch.testing.assert_close(value, expected)


def test_deep_supervision_errors():
    with pytest.raises(ValueError, match="distance maps"):
        losses.deep_supervision(losses.get("boundary"))
    with pytest.raises(ValueError, match="non-negative"):
        losses.deep_supervision(losses.get("ce"), weights=[1, -1])
    wrapped = losses.deep_supervision(losses.get("ce"), weights=[1, 1])
    labels = random_labels((2, 8, 8), 3)
    with pytest.raises(ValueError, match="2 weights but the network gave 3"):
        wrapped([random_logits((2, 3, 8 // 2**i, 8 // 2**i)) for i in range(3)], labels)
    with pytest.raises(ValueError, match="target's resolution"):
        wrapped([random_logits((2, 3, 4, 4)), random_logits((2, 3, 2, 2))], labels)
    with pytest.raises(TypeError, match="outputs must be"):
        wrapped([], labels)
