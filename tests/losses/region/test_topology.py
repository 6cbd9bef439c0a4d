"""Topology losses (``losses.region.topology``: cldice, skeleton_recall) against float64
references, soft-skeleton identities, gradcheck and MONAI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import references_peers as ref
from conftest import float64_case, gradcheck_on_crop, one_hot64, peer_losses
from medsegloss import losses


class TestClDice:
    @pytest.mark.parametrize("shape", [(2, 3, 7, 7), (2, 1, 7, 7), (2, 3, 4, 5, 5)])
    @pytest.mark.parametrize("include_background", [False, True])
    def test_reference(self, shape, include_background):
        logits, labels = float64_case(shape, scale=2.0)
        ours = losses.cldice_loss(logits, labels, include_background=include_background, reduction="none")
        expected = ref.cldice(logits.detach().numpy(), labels.numpy(), include_background=include_background)
        np.testing.assert_allclose(ours.detach().numpy(), expected, rtol=1e-10)

    def test_soft_skeleton_of_masks(self):
        """On 0/1 masks the soft skeleton is binary morphology: a one-voxel line is its own skeleton,
        and the skeleton of a filled 5×5 square is its centre (and lies inside the square)."""
        line = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
        line[0, 0, 3, 1:6] = 1
        torch.testing.assert_close(losses.soft_skeleton(line, 3), line)
        square = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
        square[0, 0, 2:7, 2:7] = 1
        skeleton = losses.soft_skeleton(square, 3)
        assert skeleton[0, 0, 4, 4] == 1 and (skeleton * (1 - square)).sum() == 0
        np.testing.assert_allclose(skeleton.numpy(), ref.soft_skeleton(square.numpy(), 3))

    def testgradcheck_on_crop(self):
        gradcheck_on_crop(losses.cldice_loss, *float64_case((1, 3, 6, 6), scale=2.0))

    def test_identities(self):
        logits, labels = float64_case((2, 3, 7, 7))
        assert float(losses.cldice_loss(50.0 * one_hot64(labels, 3), labels)) < 1e-9
        torch.testing.assert_close(losses.cldice_loss(logits, one_hot64(labels, 3)), losses.cldice_loss(logits, labels))

    @pytest.mark.parametrize("channels", [1, 2])
    def test_equals_monai(self, channels):
        """One kept class (binary, or C = 2 without background): MONAI's pooled score is ours; its
        harmonic-mean epsilon (smooth) made negligible."""
        monai = peer_losses("monai")
        logits, labels = float64_case((2, channels, 7, 7), scale=2.0)
        binary = channels == 1
        peer = monai.SoftclDiceLoss(iter_=3, smooth=1e-30, sigmoid=binary, softmax=not binary,
                                    to_onehot_y=not binary, include_background=binary)
        target = labels.unsqueeze(1).to(torch.float64) if binary else labels.unsqueeze(1)
        torch.testing.assert_close(losses.cldice_loss(logits, labels), peer(logits, target), rtol=1e-5, atol=1e-5)


    def test_monai_pools_the_kept_classes_and_keeps_the_background(self):
        """C >= 2, MONAI 1.6's defaults: ``SoftclDiceLoss(softmax=True)`` keeps the background and
        pools the kept channels into one score per sample (each sum over channels and voxels: the
        background's large skeleton dominates), with 1e-4 in the harmonic mean's denominator. Ours
        is the mean of per-class scores over the foreground classes. Each side equals its float64
        reference, and ours is the mean of MONAI's one-class scores."""
        monai = peer_losses("monai")
        logits, labels = float64_case((2, 3, 9, 9), scale=2.0)
        onehot = one_hot64(labels, 3)
        peer = monai.SoftclDiceLoss(softmax=True, reduction="none")(logits, onehot).detach()
        ours = losses.cldice_loss(logits, labels, reduction="none")
        np.testing.assert_allclose(peer.numpy(), ref.cldice_pooled(logits.detach().numpy(), labels.numpy()), rtol=1e-10)
        np.testing.assert_allclose(ours.detach().numpy(), ref.cldice(logits.detach().numpy(), labels.numpy()), rtol=1e-10)
        assert float((ours.detach() - peer).abs().min()) > 1e-3  # not a rounding difference: two definitions
        probs = torch.softmax(logits.detach(), 1)
        one_class = monai.SoftclDiceLoss(smooth=1e-30, reduction="none")
        per_class = torch.stack([one_class(probs[:, c:c + 1], onehot[:, c:c + 1]) for c in (1, 2)], 1)
        torch.testing.assert_close(ours.detach(), per_class.mean(1))


class TestSkeletonRecall:
    @pytest.mark.parametrize("shape", [(2, 3, 9, 9), (2, 1, 9, 9), (1, 3, 5, 6, 6)])
    def test_reference(self, shape):
        logits, labels = float64_case(shape)
        ours = losses.skeleton_recall_loss(logits, labels, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(), ref.skeleton_recall(logits.detach().numpy(), labels.numpy()), rtol=1e-10)

    def testgradcheck_on_crop(self):
        gradcheck_on_crop(losses.skeleton_recall_loss, *float64_case((1, 3, 6, 6)), iterations=2)

    def test_identities(self):
        """A thin line: its tube is the line dilated, kept inside the line for the loss; covering it
        scores 0, missing it 1, covering 3 of its 7 voxels 1 − 3/7."""
        labels = torch.zeros(1, 9, 9, dtype=torch.long)
        labels[0, 4, 1:8] = 1
        tube = losses.tubed_skeleton(one_hot64(labels, 2)[:, 1:])
        assert tube[0, 0, 3:6, :].sum() == 3 * 9 and tube.sum() == 27
        perfect = 50.0 * (2.0 * labels.unsqueeze(1).to(torch.float64) - 1.0)
        assert float(losses.skeleton_recall_loss(perfect, labels, smooth=0.0)) < 1e-9
        assert float(losses.skeleton_recall_loss(-perfect, labels, smooth=0.0)) > 1 - 1e-9
        half = perfect.clone()
        half[..., :5] = -50.0  # predicts only columns 5..7 of the line
        torch.testing.assert_close(losses.skeleton_recall_loss(half, labels, smooth=0.0),
                                   torch.tensor(1 - 3 / 7, dtype=torch.float64))
