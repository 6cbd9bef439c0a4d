"""Boundary losses (``losses.boundary``: boundary, hd, boundary_weighted, log_hd, hd_er) against
float64 references written from the papers (distances by scipy), the papers' identities, MONAI
and kornia where installed, and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import references
import references_peers
from conftest import float64_case, gradcheck_on_crop, one_hot64, peer_losses
from medsegloss import losses
from medsegloss.distance import boundary_distance, signed_distance_map, unsigned_distance_map
from medsegloss.losses.boundary import (
    boundary_loss, boundary_weighted_loss, hausdorff_dt_loss,
)


def blobs(shape, num_classes, seed=0):
    """Labels with a few rectangles per image, so every class has a real boundary."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int64)
    for n in range(shape[0]):
        for c in range(1, max(num_classes, 2)):
            corner = [rng.integers(0, s - 3) for s in shape[1:]]
            size = [rng.integers(2, s // 2 + 2) for s in shape[1:]]
            labels[(n, *[slice(a, a + b) for a, b in zip(corner, size)])] = c
    return torch.from_numpy(labels)


def logits_like(labels, channels, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    shape = (labels.shape[0], channels, *labels.shape[1:])
    return torch.randn(shape, generator=generator, dtype=dtype).requires_grad_(True)


CASES = [  # (shape of labels, channels, spacing)
    ((2, 12, 10), 3, None),
    ((2, 12, 10), 3, (2.0, 0.5)),
    ((2, 12, 10), 1, (1.0, 1.5)),
    ((1, 6, 7, 8), 3, (2.5, 1.0, 0.75)),
]


@pytest.mark.parametrize("shape, channels, spacing", CASES)
@pytest.mark.parametrize("include_background", [False, True])
def test_boundary_matches_reference(shape, channels, spacing, include_background):
    labels = blobs(shape, channels)
    logits = logits_like(labels, channels)
    value = boundary_loss(logits, labels, spacing=spacing, include_background=include_background, reduction="none")
    expected = references.boundary_ref(logits.detach().numpy(), labels.numpy(), include_background, spacing)
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, channels, spacing", CASES)
def test_hd_matches_reference(shape, channels, spacing):
    labels = blobs(shape, channels)
    logits = logits_like(labels, channels, seed=3)
    value = hausdorff_dt_loss(logits, labels, spacing=spacing, reduction="none")
    expected = references.hd_ref(logits.detach().numpy(), labels.numpy(), 2.0, False, spacing)
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    value = hausdorff_dt_loss(logits, labels, alpha=1.0, spacing=spacing, include_background=True)
    expected = references.hd_ref(logits.detach().numpy(), labels.numpy(), 1.0, True, spacing).mean()
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shape, channels, spacing", CASES)
def test_boundary_weighted_matches_reference(shape, channels, spacing):
    labels = blobs(shape, channels)
    logits = logits_like(labels, channels, seed=4)
    value = boundary_weighted_loss(logits, labels, band_width=1.5, p1=0.6, p2=0.3, spacing=spacing,
                                   reduction="none")
    expected = references.boundary_weighted_ref(logits.detach().numpy(), labels.numpy(), 1.5, 0.6, 0.3, spacing)
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-6)


def test_boundary_weighted_without_band_is_cross_entropy():
    # band_width = 0 leaves no voxel in the band: the loss is p2 · CE
    labels = blobs((2, 12, 10), 3)
    logits = logits_like(labels, 3)
    value = boundary_weighted_loss(logits, labels, band_width=0.0, p1=5.0, p2=1.0)
    torch.testing.assert_close(value, losses.cross_entropy_loss(logits, labels))


def test_boundary_of_perfect_prediction_is_mean_inside_distance():
    labels = blobs((2, 12, 10), 3)
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).double()
    logits = 80.0 * onehot  # softmax is one-hot to within e^-80
    dist = signed_distance_map(labels, num_classes=3).double()
    expected = (dist * onehot)[:, 1:].mean()  # only the negative inside distances remain
    assert float(expected) < 0
    assert float(boundary_loss(logits, labels)) == pytest.approx(float(expected), rel=1e-9)
    # and it is the minimum: any other prediction scores higher
    assert float(boundary_loss(logits_like(labels, 3), labels).detach()) > float(expected)


@pytest.mark.parametrize("name", ["boundary", "hd", "boundary_weighted"])
@pytest.mark.parametrize("channels", [1, 3])
def test_precomputed_dist_equals_computed(name, channels):
    labels = blobs((2, 12, 10), channels)
    logits = logits_like(labels, channels, dtype=torch.float32)
    loss = losses.get(name, spacing=(1.5, 1.0))
    dist = signed_distance_map(labels, num_classes=channels, spacing=(1.5, 1.0))
    assert loss.needs_distance and losses.info(name).needs_distance
    torch.testing.assert_close(loss(logits, labels, dist=dist), loss(logits, labels))


def test_soft_one_hot_target_equals_labels():
    labels = blobs((2, 12, 10), 3)
    logits = logits_like(labels, 3)
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).double()
    for function in (boundary_loss, hausdorff_dt_loss, boundary_weighted_loss):
        torch.testing.assert_close(function(logits, onehot), function(logits, labels))


def test_bad_dist_raises():
    labels = blobs((2, 12, 10), 3)
    logits = logits_like(labels, 3)
    with pytest.raises(ValueError, match=r"\(2, 3, 12, 10\).*\(2, 1, 12, 10\)"):
        boundary_loss(logits, labels, dist=torch.zeros(2, 1, 12, 10))
    with pytest.raises(TypeError, match="ndarray"):
        boundary_loss(logits, labels, dist=np.zeros((2, 3, 12, 10)))
    with pytest.raises(ValueError, match="floating"):
        hausdorff_dt_loss(logits, labels, dist=torch.zeros(2, 3, 12, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="band_width"):
        boundary_weighted_loss(logits, labels, band_width=-1)


@pytest.mark.parametrize("name", ["boundary", "hd", "boundary_weighted"])
def test_gradcheck(name):
    labels = blobs((1, 7, 6), 3, seed=2)
    logits = logits_like(labels, 3, seed=5)
    function = losses.info(name).function
    dist = signed_distance_map(labels, num_classes=3).double()  # not recomputed per perturbation
    assert torch.autograd.gradcheck(lambda x: function(x, labels, dist=dist), (logits,))


def test_unsigned_distance_map_is_absolute_signed_distance():
    labels = blobs((2, 9, 8, 7), 3)
    masks = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).bool()
    masks[1, 2] = True  # a full mask: no boundary, zeros
    masks[0, 2] = False  # an empty one
    spacing = (2.0, 1.0, 0.5)
    expected = signed_distance_map(masks.float(), spacing=spacing, convention="symmetric").abs()
    torch.testing.assert_close(unsigned_distance_map(masks, spacing), expected)
    assert unsigned_distance_map(masks, spacing)[1, 2].abs().sum() == 0
    # the same distances, recovered from the paper-convention level sets the losses get as dist=
    level_set = signed_distance_map(masks.float(), spacing=spacing)
    torch.testing.assert_close(boundary_distance(level_set, masks), expected)


def test_level_set_is_the_papers_and_monais():
    """The issue's case: ours 0.2758 with inside −d, the reference code and MONAI 0.3901."""
    monai_losses = peer_losses("monai")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 3, 32, 28, generator=generator, dtype=torch.float64)
    labels = blobs((3, 32, 28), 3, seed=7)
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).double()
    reference = references.signed_distance_maps_ref(onehot.numpy(), None, references.kervadec_level_set_ref)
    np.testing.assert_allclose(signed_distance_map(labels, num_classes=3).double().numpy(), reference, atol=1e-6)
    for include_background in (False, True):
        ours = boundary_loss(logits, labels, include_background=include_background)
        expected = references.boundary_ref(logits.numpy(), labels.numpy(), include_background).mean()
        assert float(ours) == pytest.approx(expected, rel=1e-6)
        peer = monai_losses.BoundaryLoss(softmax=True, include_background=include_background)(logits, onehot)
        assert float(ours) == pytest.approx(float(peer), rel=1e-6)


def test_border_voxels_weigh_zero_and_symmetric_convention_is_an_option():
    mask = np.zeros((1, 7), bool)
    mask[0, 1:6] = True
    assert signed_distance_map(torch.from_numpy(mask)[None].long(), 1)[0, 0].tolist() == [
        [1.0, 0.0, -1.0, -2.0, -1.0, 0.0, 1.0]]
    assert signed_distance_map(torch.from_numpy(mask)[None].long(), 1, convention="symmetric")[0, 0].tolist() == [
        [1.0, -1.0, -2.0, -3.0, -2.0, -1.0, 1.0]]
    with pytest.raises(ValueError, match="convention must be one of"):
        signed_distance_map(torch.from_numpy(mask)[None].long(), 1, convention="inside-negative")


def test_hd_matches_monai():
    monai_losses = peer_losses("monai")
    labels = blobs((2, 16, 14), 3)
    logits = logits_like(labels, 3, dtype=torch.float32)
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    for include_background in (False, True):
        peer = monai_losses.HausdorffDTLoss(softmax=True, include_background=include_background)
        ours = hausdorff_dt_loss(logits, labels, include_background=include_background)
        torch.testing.assert_close(ours, peer(logits, onehot), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ log_hd, hd_er


class TestLogHausdorffDT:
    def test_is_log_of_hd(self):
        logits, labels = float64_case((3, 3, 8, 8))
        hd = losses.hausdorff_dt_loss(logits, labels, reduction="none")
        torch.testing.assert_close(losses.log_hausdorff_dt_loss(logits, labels, reduction="none"), torch.log1p(hd))
        torch.testing.assert_close(losses.log_hausdorff_dt_loss(logits, labels), torch.log1p(hd).mean())

    def testgradcheck_on_crop(self):
        gradcheck_on_crop(losses.log_hausdorff_dt_loss, *float64_case((2, 3, 6, 6)))

    @pytest.mark.parametrize("channels", [1, 3])
    def test_equals_monai(self, channels):
        """One sample: MONAI takes the log after its batch mean, we per sample."""
        monai = peer_losses("monai")
        logits, labels = float64_case((1, channels, 8, 8))
        binary = channels == 1
        peer = monai.LogHausdorffDTLoss(sigmoid=binary, softmax=not binary, include_background=binary)
        target = labels.unsqueeze(1).to(torch.float64) if binary else one_hot64(labels, channels)
        torch.testing.assert_close(losses.log_hausdorff_dt_loss(logits, labels), peer(logits, target).to(torch.float64),
                                   rtol=1e-5, atol=1e-5)


class TestHausdorffErosion:
    @pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 1, 8, 8), (1, 3, 5, 6, 6)])
    def test_reference(self, shape):
        logits, labels = float64_case(shape, scale=4.0)
        ours = losses.hausdorff_erosion_loss(logits, labels, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(), references_peers.hausdorff_erosion(logits.detach().numpy(), labels.numpy()), rtol=1e-10)

    def test_identities(self):
        """A wrong 5×5 block: the paper's eq. 10 counts its centre through the erosions that keep it."""
        labels = torch.zeros(1, 9, 9, dtype=torch.long)
        logits = torch.full((1, 1, 9, 9), -50.0, dtype=torch.float64)
        assert float(losses.hausdorff_erosion_loss(logits, labels)) < 1e-12  # perfect: no error to erode
        logits[..., 2:7, 2:7] = 50.0  # Δ = 1 on the block
        value = losses.hausdorff_erosion_loss(logits, labels, erosions=1, alpha=0.0)
        # one erosion: cross average 1 inside the block (3×3 interior + 12 edge voxels at 0.8), −0.5, rescaled
        eroded = (9 * 0.5 + 12 * 0.3 + 4 * 0.1) / 0.5
        torch.testing.assert_close(value, torch.tensor(eroded / 81, dtype=torch.float64))

    @pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 5, 6, 6)])
    def test_equals_kornia(self, shape):
        kornia = peer_losses("kornia")
        logits, labels = float64_case(shape, scale=4.0)
        peer = kornia.HausdorffERLoss(alpha=2.0, k=10) if len(shape) == 4 else kornia.HausdorffERLoss3D(alpha=2.0, k=10)
        torch.testing.assert_close(losses.hausdorff_erosion_loss(logits, labels, include_background=True),
                                   peer(torch.softmax(logits, 1), labels.unsqueeze(1)), rtol=1e-5, atol=1e-5)
