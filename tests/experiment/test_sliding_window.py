"""Sliding-window inference against whole-image inference, the Gaussian map against its formula."""

import itertools

import numpy as np
import pytest
import torch

from medsegloss.experiment.sliding_window import gaussian_importance, sliding_window_logits, window_starts
from medsegloss.models import UNet


def pointwise_model(in_channels, out_channels, dims, seed=0):
    """A 1x1 convolution: each output voxel depends on its own input voxel only, so any window
    computes exactly the whole image's logits at the voxels it covers."""
    torch.manual_seed(seed)
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(in_channels, out_channels, 1)
    return conv.double().eval()


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize("shape, patch", [((2, 3, 37, 29), (16, 12)), ((1, 2, 9, 21, 14), (4, 8, 8)),
                                          ((2, 1, 5, 40), (8, 16))])  # the last: H smaller than the patch
def test_pointwise_model_equals_whole_image(shape, patch, gaussian):
    model = pointwise_model(shape[1], 4, len(shape) - 2)
    image = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = sliding_window_logits(model, image, patch, overlap=0.5, gaussian=gaussian, batch_size=3)
    with torch.no_grad():
        expected = model(image)
    assert result.shape == expected.shape and result.dtype == torch.float64
    # sum_w g_w * v / sum_w g_w = v: equal but for the rounding of a weighted mean in float64
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)


def test_batch_size_and_sample_order_do_not_change_the_result():
    model = UNet(2, 3, base=4, depth=2).double().eval()
    image = torch.randn(3, 2, 30, 26, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    one = sliding_window_logits(model, image, (16, 16), batch_size=1)
    many = sliding_window_logits(model, image, (16, 16), batch_size=7)
    torch.testing.assert_close(one, many, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sliding_window_logits(model, image[1:2], (16, 16)), one[1:2], rtol=1e-12, atol=1e-12)


def test_unet_image_of_patch_size_is_one_window():
    """One window covering the image: g * v / g = v, the whole-image logits."""
    model = UNet(1, 3, base=4, depth=2, dims=3).double().eval()
    image = torch.randn(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        expected = model(image)
    torch.testing.assert_close(sliding_window_logits(model, image, (8, 16, 16)), expected, rtol=1e-12, atol=1e-12)


def test_unet_within_the_bound_of_its_windows():
    """A UNet's window sees zero padding where the whole image has neighbours, so windows and
    whole image disagree near window borders. The result is a convex combination of the windows
    covering each voxel, hence per voxel

        |sliding - whole| <= max over windows w covering v of |model(window_w)(v) - whole(v)|,

    and the bound still holds when the max runs over every possible window position (a superset),
    which this test computes independently of the function's window placement."""
    model = UNet(1, 2, base=4, depth=2).double().eval()
    image = torch.randn(1, 1, 24, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    patch = (12, 12)
    with torch.no_grad():
        whole = model(image)[0]
        starts = list(itertools.product(range(24 - 12 + 1), range(20 - 12 + 1)))
        windows = torch.cat([image[..., y:y + 12, x:x + 12] for y, x in starts])
        outputs = model(windows)
    bound = torch.zeros_like(whole)
    for (y, x), out in zip(starts, outputs):
        region = (slice(None), slice(y, y + 12), slice(x, x + 12))
        bound[region] = torch.maximum(bound[region], (out - whole[region]).abs())
    result = sliding_window_logits(model, image, patch, overlap=0.5)[0]
    assert ((result - whole).abs() <= bound + 1e-12).all()
    # and the bound is not vacuous: windows do differ from the whole image somewhere
    assert bound.max() > 1e-3 and (result - whole).abs().max() > 0
    # Gaussian weighting favours window centres, so it is closer than plain averaging
    plain = sliding_window_logits(model, image, patch, overlap=0.5, gaussian=False)[0]
    assert (result - whole).abs().mean() < (plain - whole).abs().mean()


def test_gaussian_importance_matches_its_formula():
    patch = (6, 9, 16)
    weights = gaussian_importance(patch, dtype=torch.float64)
    axes = [np.exp(-((np.arange(p) - (p - 1) / 2) ** 2) / (2 * (p / 8) ** 2)) for p in patch]
    expected = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    expected = np.maximum(expected / expected.max(), (expected / expected.max())[expected > 0].min())
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-12)
    assert weights.max() == 1.0 and weights.min() > 0


@pytest.mark.parametrize("size, patch, overlap", [(10, 4, 0.5), (100, 32, 0.5), (33, 32, 0.25), (7, 8, 0.5),
                                                  (50, 10, 0.0), (64, 16, 0.9)])
def test_window_starts_cover_the_axis_with_the_asked_overlap(size, patch, overlap):
    starts = window_starts(size, patch, overlap)
    assert starts[0] == 0 and starts[-1] == max(size - patch, 0)
    steps = np.diff(starts)
    assert (steps > 0).all() and (steps <= max(patch * (1 - overlap), 1)).all()
    covered = np.zeros(max(size, patch), bool)
    for start in starts:
        covered[start:start + patch] = True
    assert covered.all()


def test_bad_input_is_refused_with_a_clear_message():
    model = pointwise_model(1, 2, 2).float()
    image = torch.randn(1, 1, 16, 16)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, C, D, H, W\), got shape \(16, 16\)"):
        sliding_window_logits(model, image[0, 0], (8, 8))
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.int64"):
        sliding_window_logits(model, image.long(), (8, 8))
    with pytest.raises(ValueError, match="patch_size must be 2 positive ints"):
        sliding_window_logits(model, image, (8, 8, 8))
    with pytest.raises(ValueError, match="patch_size must be 2 positive ints"):
        sliding_window_logits(model, image, (8.5, 8))
    with pytest.raises(ValueError, match="overlap must lie in"):
        sliding_window_logits(model, image, 8, overlap=1.0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        sliding_window_logits(model, image, 8, batch_size=0)
    with pytest.raises(ValueError, match="model must map windows"):
        sliding_window_logits(torch.nn.MaxPool2d(2), image, 8)
    with pytest.raises(TypeError, match="image must be a torch.Tensor"):
        sliding_window_logits(model, image.numpy(), 8)
