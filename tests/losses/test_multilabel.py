"""Overlapping regions (multi-label): ``losses.get(name, multilabel=True)`` scores multi-hot targets
``(N, R, *spatial)`` with one sigmoid per channel, by each loss's binary form per region.

Every loss that supports it gets the contract (finite, gradients, perfect below random, the mean
of its per-region binary values); ``batch=True`` pools within a region only (float64 NumPy
reference); MONAI's sigmoid losses agree where their definitions match; refusals name the loss.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_logits
from medsegloss import losses
from medsegloss.distance import signed_distance_map

SUPPORTED = [name for name in losses.available() if losses.info(name).multilabel]
REFUSED = [name for name in losses.available() if not losses.info(name).multilabel]


def _multi_hot(shape, seed=7, dtype=torch.float32):
    """Overlapping regions: each channel an independent random 0/1 mask (a voxel may be in
    several or none)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) > 0.5).to(dtype)


def _blob_multi_hot(shape, scale=4.0):
    """Structured regions for losses whose gradient can vanish on noise: region r is a box, the
    prediction the box shifted by a quarter of the last axis (rolled by r more voxels)."""
    n, r, *spatial = shape
    target = torch.zeros(shape)
    target[(slice(None), slice(None), *(slice(s // 4, 3 * s // 4) for s in spatial))] = 1
    predicted = torch.stack([target[:, k].roll(max(spatial[-1] // 4, 1) + k, dims=-1) for k in range(r)], 1)
    return (scale * (2 * predicted - 1)).requires_grad_(), target


def _per_region(name, logits, target, **options):
    """The definition: the loss's binary form on each region, ``(N, R)``."""
    loss = losses.get(name, reduction="none", **options)
    return torch.stack([loss(logits[:, r:r + 1], target[:, r:r + 1]) for r in range(logits.shape[1])], 1)


@pytest.mark.usefixtures("fused_path")  # both paths: the fused kernels and the plain one
@pytest.mark.parametrize("name", SUPPORTED)
def test_contract(name):
    logits = random_logits((2, 3, 8, 8), seed=3)
    target = _multi_hot((2, 3, 8, 8))
    loss = losses.get(name, multilabel=True)
    value = loss(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    assert value.shape == () and torch.isfinite(value) and torch.isfinite(grad).all()
    if losses.info(name).gradient_can_vanish:
        blob_logits, blob_target = _blob_multi_hot((2, 3, 8, 8))
        (grad,) = torch.autograd.grad(loss(blob_logits, blob_target), blob_logits)
    assert grad.abs().sum() > 0
    with torch.no_grad():
        perfect = 20.0 * (2 * target - 1)
        assert float(loss(perfect, target)) < float(value)
        # the definition: the mean over regions of the binary loss, per sample
        expected = _per_region(name, logits, target)
        torch.testing.assert_close(losses.get(name, multilabel=True, reduction="none")(logits, target),
                                   expected.mean(1))
        torch.testing.assert_close(value, expected.mean())


def test_bool_and_integer_multi_hot_targets_equal_floats():
    logits = random_logits((2, 3, 6, 6), seed=1)
    target = _multi_hot((2, 3, 6, 6))
    loss = losses.get("dice_ce", multilabel=True)
    for other in (target.bool(), target.to(torch.uint8), target.long()):
        torch.testing.assert_close(loss(logits, other), loss(logits, target))


def test_bad_targets_and_refusals_are_clear():
    logits = random_logits((2, 3, 6, 6), seed=1)
    loss = losses.get("dice", multilabel=True)
    with pytest.raises(ValueError, match=r"multilabel target must be multi-hot \(N, R, \*spatial\) = \(2, 3, 6, 6\)"):
        loss(logits, torch.zeros(2, 6, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got values in \[0, 2\]"):
        loss(logits, 2 * _multi_hot((2, 3, 6, 6)))
    with pytest.raises(ValueError, match=r"must hold 0 / 1"):
        loss(logits, torch.full((2, 3, 6, 6), 3))
    assert REFUSED == ["gwdl"]
    with pytest.raises(ValueError, match=r"loss 'gwdl' does not support multilabel=True: its label distance"):
        losses.get("gwdl", multilabel=True)
    with pytest.raises(ValueError, match="'gwdl' does not support multilabel=True"):
        losses.build("dice + gwdl", multilabel=True)
    with pytest.raises(ValueError, match="GeneralizedWassersteinDiceLoss does not support multilabel=True"):
        losses.GeneralizedWassersteinDiceLoss(multilabel=True)


def _dice_reference(logits, target, batch, weight=None, smooth=1e-5):
    """Float64 NumPy: sigmoid per channel, soft Dice per (sample, region) or per region pooled
    over the samples (batch), weighted region mean, per sample ``(N,)``."""
    p = 1.0 / (1.0 + np.exp(-logits.reshape(*logits.shape[:2], -1)))
    g = target.reshape(*target.shape[:2], -1)
    axes = (0, 2) if batch else (2,)
    tp, sum_p, sum_g = (p * g).sum(axes), p.sum(axes), g.sum(axes)
    per_region = 1.0 - (2 * tp + smooth) / (sum_p + sum_g + smooth)  # (N, R), or (R,) when batch
    weight = np.ones(logits.shape[1]) if weight is None else np.asarray(weight, np.float64)
    per_sample = (per_region * weight).sum(-1) / weight.sum()
    return np.broadcast_to(per_sample, (logits.shape[0],))


@pytest.mark.parametrize("batch", [False, True])
def test_batch_pools_samples_within_each_region_and_weight_weighs_regions(batch):
    logits = random_logits((3, 4, 5, 6), seed=11, dtype=torch.float64, scale=2.0)
    target = _multi_hot((3, 4, 5, 6), dtype=torch.float64)
    target[0, 1] = 0  # a region empty in one sample: pooling (or not) changes its score
    for weight in (None, [1.0, 2.0, 0.0, 0.5]):
        value = losses.get("dice", multilabel=True, batch=batch, weight=weight, reduction="none")(logits, target)
        expected = _dice_reference(logits.detach().numpy(), target.numpy(), batch, weight)
        np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-10)
    # pooling across regions (the wrong reading of batch=True) gives another value
    wrong = losses.get("dice", batch=True)(logits.detach().reshape(-1, 1, 5, 6), target.reshape(-1, 1, 5, 6))
    assert abs(float(losses.get("dice", multilabel=True, batch=True)(logits.detach(), target)) - float(wrong)) > 1e-4


def test_distance_maps_are_split_per_region():
    logits = random_logits((2, 3, 8, 8), seed=4, dtype=torch.float64)
    target = _multi_hot((2, 3, 8, 8), dtype=torch.float64)
    dist = torch.cat([signed_distance_map(target[:, r:r + 1], num_classes=1) for r in range(3)], 1)
    for name in ("boundary", "hd", "gdl_boundary"):
        loss = losses.get(name, multilabel=True)
        torch.testing.assert_close(loss(logits, target, dist=dist), loss(logits, target))
        shifted = loss(logits, target, dist=dist.roll(1, dims=1))  # the maps of other regions
        assert not torch.allclose(shifted, loss(logits, target))


def test_compounds_and_build_pass_the_mode_to_their_terms():
    logits = random_logits((2, 3, 6, 6), seed=2, dtype=torch.float64)
    target = _multi_hot((2, 3, 6, 6), dtype=torch.float64)
    named = losses.get("dice_ce", multilabel=True)
    built = losses.build("ce + 0.5*dice", multilabel=True)
    assert named.joint is None and built.joint is None and all(term.multilabel for term in built.terms)
    ce = losses.get("ce", multilabel=True)(logits, target)
    dice = losses.get("dice", multilabel=True)(logits, target)
    torch.testing.assert_close(named(logits, target), ce + dice)
    torch.testing.assert_close(built(logits, target), ce + 0.5 * dice)
    assert set(built.last_values) == {"ce", "dice"}
    # per region, ce is the binary CE: the multi-label BCE of torch
    torch.testing.assert_close(ce, torch.nn.functional.binary_cross_entropy_with_logits(logits, target))


def _monai():
    return pytest.importorskip("monai.losses")


@pytest.mark.parametrize("batch", [False, True])
def test_equals_monai_sigmoid_losses(batch):
    monai = _monai()
    logits = random_logits((2, 3, 6, 6), seed=9, dtype=torch.float64, scale=2.0)
    target = _multi_hot((2, 3, 6, 6), dtype=torch.float64)
    pairs = [
        (losses.get("dice", multilabel=True, batch=batch), monai.DiceLoss(sigmoid=True, batch=batch)),
        (losses.get("tversky", multilabel=True, batch=batch, alpha=0.3, beta=0.7),
         monai.TverskyLoss(sigmoid=True, batch=batch, alpha=0.3, beta=0.7)),
        (losses.get("iou", multilabel=True, batch=batch), monai.DiceLoss(sigmoid=True, jaccard=True, batch=batch)),
    ]
    if not batch:
        pairs.append((losses.get("focal", multilabel=True, gamma=2.0), monai.FocalLoss(use_softmax=False, gamma=2.0)))
    for ours, peer in pairs:
        torch.testing.assert_close(ours(logits, target), peer(logits, target).to(torch.float64), rtol=1e-5, atol=1e-6)


def test_dice_ce_against_monai():
    """MONAI's DiceCELoss(sigmoid=True) takes BCE for one channel only: for R >= 2 its CE term is
    the softmax CE over the channels (not multi-label). So: equal for R = 1, and for R = 3 equal
    to MONAI's DiceLoss(sigmoid=True) + torch's multi-label BCE."""
    monai = _monai()
    for regions in (1, 3):
        logits = random_logits((2, regions, 6, 6), seed=5, dtype=torch.float64)
        target = _multi_hot((2, regions, 6, 6), dtype=torch.float64)
        ours = losses.get("dice_ce", multilabel=True)(logits, target)
        if regions == 1:
            expected = monai.DiceCELoss(sigmoid=True)(logits, target)
        else:
            expected = monai.DiceLoss(sigmoid=True)(logits, target) \
                + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        torch.testing.assert_close(ours, expected.to(torch.float64), rtol=1e-5, atol=1e-6)


def test_the_catalogue_shows_the_mode():
    table = losses.catalogue_markdown()
    assert "| multilabel |" in table.splitlines()[0]
    assert [line for line in table.splitlines() if line.startswith("| `gwdl` |")][0].count("| no |") == 1
