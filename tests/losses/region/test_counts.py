"""What every region loss is computed from (``losses.region._counts``): the fused count pass
equals the one-hot counts, the one overlap ratio (Dice is the Tversky index at ½, ½ to the last
bit), and gradcheck of every region loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_labels, random_logits
from medsegloss import losses
from medsegloss.losses.region._counts import dice_score, region_counts, tversky_index

# the tests of formulas with a fused kernel run on it and on the plain path (conftest.fused_path)
KERNEL_PATHS = pytest.mark.usefixtures("fused_path")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("with_ce", [False, True])
@KERNEL_PATHS
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


@KERNEL_PATHS
def test_region_counts_fused_path_matches_reference_and_range_errors_survive():
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dice_score_is_the_tversky_index_at_one_half_to_the_last_bit(dtype):
    """(2TP + s)/(2TP + FP + FN + s) = TI(½, ½, s/2): the ratio halved, which floating point does exactly."""
    generator = torch.Generator().manual_seed(3)
    tp, fp, fn = (torch.rand(64, 5, generator=generator, dtype=torch.float64).mul(10 ** k).to(dtype) for k in (0, 2, 4))
    for smooth in (1e-5, 1.0, 0.0):
        written_out = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
        assert torch.equal(dice_score(tp, fp, fn, smooth), written_out)
    torch.testing.assert_close(tversky_index(tp, fp, fn, 1.0, 1.0, 0.0), tp / (tp + fp + fn))  # IoU


# ------------------------------------------------------------------ gradcheck


@pytest.mark.parametrize("name", losses.available("region"))
@KERNEL_PATHS
def test_gradcheck(name):
    logits = random_logits((2, 3, 3, 4), seed=11, dtype=torch.float64)
    labels = random_labels((2, 3, 4), 3, seed=12)
    function = losses.info(name).function
    assert torch.autograd.gradcheck(lambda x: function(x, labels), (logits,))
