"""Generalized Dice losses (``losses.region.generalized_dice``: gdl, pgdl, gwdl) against float64
references, their identities, MONAI and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import references as ref
import references_peers
from conftest import (assert_matches_reference, float64_case, gradcheck_on_crop, one_hot64, peer_losses,
                      random_labels, random_logits)
from medsegloss import losses
from medsegloss.losses.region import generalized_dice as G

SHAPE_2D, SHAPE_3D, SHAPE_BINARY = (2, 3, 5, 6), (2, 3, 3, 4, 5), (3, 1, 5, 6)

# the tests of formulas with a fused kernel run on it and on the plain path (conftest.fused_path)
KERNEL_PATHS = pytest.mark.usefixtures("fused_path")


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D, SHAPE_BINARY])
@pytest.mark.parametrize("include_background", [True, False])
@KERNEL_PATHS
def test_gdl_and_pgdl_match_references(shape, include_background):
    logits, labels = float64_case(shape, scale=2.0, absent=2 if shape[1] == 3 else None)
    p, g, _ = ref.region_statistics(logits.detach(), labels)
    expected = 1 - ref.generalized_dice_score(p, g, 1e-5, include_background)
    assert_matches_reference(G.generalized_dice_loss(logits, labels, include_background=include_background, reduction="none"), expected)
    assert_matches_reference(G.penalty_generalized_dice_loss(logits, labels, k=2.5, include_background=include_background,
                                           reduction="none"),
           ref.penalty_generalized_dice(p, g, 2.5, 1e-5, include_background))


@KERNEL_PATHS
def test_gdl_batch_pools_counts_before_weighting():
    logits, labels = float64_case(SHAPE_2D, scale=2.0, ignore=-1)
    p, g, _ = ref.region_statistics(logits.detach(), labels, ignore_index=-1, batch=True)
    expected = 1 - ref.generalized_dice_score(p, g)
    assert_matches_reference(G.generalized_dice_loss(logits, labels, ignore_index=-1, batch=True, reduction="none"), expected.repeat(2))


@KERNEL_PATHS
def test_gdl_absent_class_is_finite_and_penalised():
    labels = torch.zeros((2, 4, 4), dtype=torch.long)
    labels[:, 1:3, 1:3] = 1  # class 2 absent everywhere
    logits = random_logits((2, 3, 4, 4), seed=3)
    for loss in (G.generalized_dice_loss, G.penalty_generalized_dice_loss):
        value = loss(logits, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
        logits.grad = None
    clean = 12.0 * torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    wrong = clean.clone()
    wrong[:, 2, 0, 0], wrong[:, 0, 0, 0] = 12.0, 0.0  # predict the absent class at one voxel
    assert G.generalized_dice_loss(wrong, labels) > G.generalized_dice_loss(clean, labels) + 1e-3


@KERNEL_PATHS
def test_pgdl_at_k_zero_is_gdl():
    logits, labels = float64_case(SHAPE_3D, scale=2.0)
    torch.testing.assert_close(G.penalty_generalized_dice_loss(logits, labels, k=0.0),
                               G.generalized_dice_loss(logits, labels))


@KERNEL_PATHS
def test_gdl_agrees_with_monai_without_smoothing():
    """MONAI's GDL has no weight normalisation; without smoothing the score is the same."""
    monai_losses = peer_losses("monai")
    logits = random_logits(SHAPE_2D, seed=9)
    labels = random_labels((2, 5, 6), 3, seed=10)
    peer = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, smooth_nr=0.0, smooth_dr=0.0)
    torch.testing.assert_close(G.generalized_dice_loss(logits, labels, smooth=0.0), peer(logits, labels.unsqueeze(1)))


# ------------------------------------------------------------------ gwdl


class TestGeneralizedWassersteinDice:
    @pytest.mark.parametrize("shape", [(2, 3, 5, 5), (2, 1, 5, 5), (2, 3, 2, 3, 3)])
    def test_reference(self, shape):
        logits, labels = float64_case(shape)
        ours = losses.generalized_wasserstein_dice_loss(logits, labels, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(), references_peers.generalized_wasserstein_dice(logits.detach().numpy(), labels.numpy()),
                                   rtol=1e-10)
        matrix = [[0.0, 1.0, 2.0], [1.0, 0.0, 0.5], [2.0, 0.5, 0.0]] if shape[1] == 3 else [[0, 3.0], [3.0, 0]]
        ours = losses.generalized_wasserstein_dice_loss(logits, labels, dist_matrix=matrix, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(),
                                   references_peers.generalized_wasserstein_dice(logits.detach().numpy(), labels.numpy(), dist_matrix=matrix),
                                   rtol=1e-10)

    def testgradcheck_on_crop(self):
        gradcheck_on_crop(losses.generalized_wasserstein_dice_loss, *float64_case((2, 3, 6, 6)),
                   dist_matrix=[[0, 1, 1], [1, 0, 0.3], [1, 0.3, 0]])

    def test_identities(self):
        """With the 0/1 matrix ``W = 1 − p_y``, so the loss is the Dice-like ``1 − 2TP/(2TP + Σ(1 − p_y))``;
        one-hot floats equal labels; a perfect prediction scores 0."""
        logits, labels = float64_case((2, 3, 6, 6))
        p_true = torch.softmax(logits, 1).gather(1, labels.unsqueeze(1))[:, 0].reshape(2, -1)
        tp = ((labels.reshape(2, -1) > 0) * p_true).sum(1)
        expected = 1 - 2 * tp / (2 * tp + (1 - p_true).sum(1))
        torch.testing.assert_close(losses.generalized_wasserstein_dice_loss(logits, labels, smooth=0.0,
                                                                            reduction="none"), expected)
        torch.testing.assert_close(losses.generalized_wasserstein_dice_loss(logits, one_hot64(labels, 3)),
                                   losses.generalized_wasserstein_dice_loss(logits, labels))
        assert float(losses.generalized_wasserstein_dice_loss(50.0 * one_hot64(labels, 3), labels)) < 1e-6

    def test_bad_options(self):
        logits, labels = float64_case((2, 3, 4, 4))
        with pytest.raises(ValueError, match=r"dist_matrix must be \(3, 3\)"):
            losses.generalized_wasserstein_dice_loss(logits, labels, dist_matrix=[[0, 1], [1, 0]])
        with pytest.raises(ValueError, match="zeros on its diagonal"):
            losses.generalized_wasserstein_dice_loss(logits, labels, dist_matrix=torch.ones(3, 3))
        with pytest.raises(ValueError, match="soft labels"):
            losses.generalized_wasserstein_dice_loss(logits, torch.full((2, 3, 4, 4), 1 / 3, dtype=torch.float64))

    @pytest.mark.parametrize("weighting", ["default", "gdl"])
    def test_equals_monai(self, weighting):
        monai = peer_losses("monai")
        logits, labels = float64_case((2, 3, 6, 6))
        matrix = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.5], [2.0, 0.5, 0.0]])
        peer = monai.GeneralizedWassersteinDiceLoss(dist_matrix=matrix, weighting_mode=weighting.upper()
                                                    if weighting == "gdl" else weighting)
        peer.m = peer.m.to(torch.float64)
        ours = losses.generalized_wasserstein_dice_loss(logits, labels, dist_matrix=matrix, weighting=weighting)
        torch.testing.assert_close(ours, peer(logits, labels), rtol=1e-5, atol=1e-5)
