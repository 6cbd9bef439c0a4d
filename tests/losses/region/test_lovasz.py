"""The Lovász-softmax loss (``losses.region.lovasz``) against the float64 reference of Berman et
al.'s algorithm, its identities, gradcheck and SMP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import references_peers as ref
from conftest import float64_case, gradcheck_on_crop, one_hot64, peer_losses
from medsegloss import losses


class TestLovasz:
    @pytest.mark.parametrize("shape", [(2, 3, 5, 5), (2, 1, 5, 5), (2, 3, 2, 3, 3)])
    @pytest.mark.parametrize("batch", [False, True])
    def test_reference(self, shape, batch):
        logits, labels = float64_case(shape, scale=2.0)
        if shape[1] == 3:
            labels[0][labels[0] == 2] = 1  # class 2 absent from the first image: "present" matters
        ours = losses.lovasz_loss(logits, labels, batch=batch, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(), ref.lovasz(logits.detach().numpy(), labels.numpy(), batch=batch),
                                   rtol=1e-10, atol=1e-12)
        all_classes = losses.lovasz_loss(logits, labels, batch=batch, classes="all", reduction="none")
        np.testing.assert_allclose(all_classes.detach().numpy(),
                                   ref.lovasz(logits.detach().numpy(), labels.numpy(), batch=batch, classes="all"), rtol=1e-10)

    @pytest.mark.parametrize("channels", [1, 3])
    def testgradcheck_on_crop(self, channels):
        gradcheck_on_crop(losses.lovasz_loss, *float64_case((2, channels, 6, 6), scale=3.0))  # no ties in the sort

    def test_identities(self):
        """The extension equals the Jaccard loss at 0/1 errors: a hard prediction scores 1 − IoU."""
        logits, labels = float64_case((1, 1, 6, 6))
        hard = torch.where(logits > 0, 1.0, 0.0)
        errors = (hard - (labels == 1).to(torch.float64)).abs().reshape(1, -1)
        union = ((hard[:, 0] > 0) | (labels == 1)).sum()
        iou = ((hard[:, 0] > 0) & (labels == 1)).sum() / union
        torch.testing.assert_close(losses.lovasz_extension(errors, (labels == 1).reshape(1, -1)),
                                   (1 - iou).to(torch.float64).reshape(1))
        perfect = 20.0 * one_hot64(labels, 2)
        assert float(losses.lovasz_loss(perfect, labels)) < 1e-6

    def test_ignore_index_drops_voxels(self):
        logits, labels = float64_case((2, 3, 6, 6))
        masked = labels.clone()
        masked[:, :2] = -1
        torch.testing.assert_close(losses.lovasz_loss(logits, masked, ignore_index=-1),
                                   losses.lovasz_loss(logits[:, :, 2:], labels[:, 2:]))

    @pytest.mark.parametrize("channels", [1, 3])
    @pytest.mark.parametrize("per_image", [False, True])
    def test_equals_smp(self, channels, per_image):
        """SMP's LovaszLoss casts its Jaccard steps to float32, so it runs on float32 logits here."""
        smp = peer_losses("smp")
        logits, labels = float64_case((3, channels, 6, 6), scale=2.0)
        logits = logits.float()
        peer = smp.LovaszLoss("binary" if channels == 1 else "multiclass", per_image=per_image)
        expected = peer(logits, labels.unsqueeze(1) if channels == 1 else labels)
        torch.testing.assert_close(losses.lovasz_loss(logits, labels, batch=not per_image), expected,
                                   rtol=1e-5, atol=1e-5)
