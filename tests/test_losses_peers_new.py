"""The losses of issue #14 (mcc, lovasz, gwdl, cldice, skeleton_recall, log_hd, hd_er,
dice_cldice, unified_focal, gdl_focal): against float64 references written from the papers
(``references_peers.py``), their identities, ``gradcheck``, and the peer libraries (MONAI, SMP,
kornia) in float64 where the definitions match. The registry-wide contract is in
``test_losses_contract.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import references_peers as ref
from conftest import random_labels, random_logits
from medsegloss import losses


def _double(shape, seed=0, scale=1.0, labels_seed=None):
    logits = random_logits(shape, seed=seed, dtype=torch.float64, scale=scale)
    labels = random_labels((shape[0], *shape[2:]), shape[1], seed=seed + 1 if labels_seed is None else labels_seed)
    return logits, labels


def _numpy(*tensors):
    return [t.detach().numpy() for t in tensors]


def _gradcheck(function, logits, labels, **options):
    small = logits.detach()[..., :4, :4].clone().requires_grad_()
    target = labels[..., :4, :4]
    assert torch.autograd.gradcheck(lambda x: function(x, target, **options), (small,), eps=1e-6, atol=1e-5,
                                    fast_mode=True)


def _smp_losses():
    """``segmentation_models_pytorch.losses`` without the package ``__init__`` (it imports timm /
    torchvision models, which fail here); the losses import only torch."""
    if "segmentation_models_pytorch.losses" in sys.modules:
        return sys.modules["segmentation_models_pytorch.losses"]
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("segmentation_models_pytorch is not installed")
    if "segmentation_models_pytorch" not in sys.modules:
        package = types.ModuleType("segmentation_models_pytorch")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["segmentation_models_pytorch"] = package
    return importlib.import_module("segmentation_models_pytorch.losses")


def _onehot(labels, channels):
    return F.one_hot(labels, channels).movedim(-1, 1).to(torch.float64)


# ---------------------------------------------------------------------------------------------


class TestMCC:
    @pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 1, 6, 6), (2, 4, 3, 4, 4)])
    @pytest.mark.parametrize("include_background", [True, False])
    def test_reference(self, shape, include_background):
        logits, labels = _double(shape)
        ours = losses.mcc_loss(logits, labels, include_background=include_background, reduction="none")
        expected = ref.mcc(*_numpy(logits, labels), include_background=include_background)
        np.testing.assert_allclose(ours.detach().numpy(), expected, rtol=1e-10, atol=1e-12)

    def test_gradcheck(self):
        _gradcheck(losses.mcc_loss, *_double((2, 3, 6, 6)))

    def test_identities(self):
        logits, labels = _double((2, 3, 6, 6))
        perfect = 50.0 * _onehot(labels, 3)
        assert float(losses.mcc_loss(perfect, labels)) < 1e-6
        binary = random_labels((2, 6, 6), 1, seed=5)
        inverted = -50.0 * (2.0 * binary.unsqueeze(1).to(torch.float64) - 1.0)  # p = 1 − g: MCC = −1
        torch.testing.assert_close(losses.mcc_loss(inverted, binary), torch.tensor(2.0, dtype=torch.float64))
        # one-hot float target == integer labels; batch=True pools the counts
        torch.testing.assert_close(losses.mcc_loss(logits, _onehot(labels, 3)), losses.mcc_loss(logits, labels))
        pooled = losses.mcc_loss(torch.cat([logits, logits]), torch.cat([labels, labels]), batch=True)
        torch.testing.assert_close(pooled, losses.mcc_loss(logits, labels, batch=True), rtol=1e-5, atol=1e-6)

    def test_ignore_index_drops_voxels(self):
        logits, labels = _double((2, 3, 6, 6))
        masked = labels.clone()
        masked[:, :, :3] = 255
        ours = losses.mcc_loss(logits, masked, ignore_index=255)
        torch.testing.assert_close(ours, losses.mcc_loss(logits[..., 3:], labels[:, :, 3:]))

    @pytest.mark.parametrize("channels", [1, 3])
    def test_equals_monai(self, channels):
        monai = pytest.importorskip("monai.losses")
        logits, labels = _double((2, channels, 6, 6))
        peer = monai.MCCLoss(sigmoid=channels == 1, softmax=channels > 1, to_onehot_y=channels > 1)
        target = labels.unsqueeze(1).to(torch.float64) if channels == 1 else labels.unsqueeze(1)
        torch.testing.assert_close(losses.mcc_loss(logits, labels), peer(logits, target), rtol=1e-5, atol=1e-5)

    def test_smp_differs(self):
        """SMP's MCCLoss pools the batch and adds its eps to every count (and takes probabilities):
        equal to ours only with batch=True and a tiny eps."""
        smp = _smp_losses()
        logits, labels = _double((2, 1, 6, 6))
        peer = smp.MCCLoss(eps=1e-12)(torch.sigmoid(logits), labels.unsqueeze(1).to(torch.float64))
        torch.testing.assert_close(losses.mcc_loss(logits, labels, batch=True, smooth=0.0), peer,
                                   rtol=1e-5, atol=1e-5)


class TestLovasz:
    @pytest.mark.parametrize("shape", [(2, 3, 5, 5), (2, 1, 5, 5), (2, 3, 2, 3, 3)])
    @pytest.mark.parametrize("batch", [False, True])
    def test_reference(self, shape, batch):
        logits, labels = _double(shape, scale=2.0)
        if shape[1] == 3:
            labels[0][labels[0] == 2] = 1  # class 2 absent from the first image: "present" matters
        ours = losses.lovasz_loss(logits, labels, batch=batch, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(), ref.lovasz(*_numpy(logits, labels), batch=batch),
                                   rtol=1e-10, atol=1e-12)
        all_classes = losses.lovasz_loss(logits, labels, batch=batch, classes="all", reduction="none")
        np.testing.assert_allclose(all_classes.detach().numpy(),
                                   ref.lovasz(*_numpy(logits, labels), batch=batch, classes="all"), rtol=1e-10)

    @pytest.mark.parametrize("channels", [1, 3])
    def test_gradcheck(self, channels):
        _gradcheck(losses.lovasz_loss, *_double((2, channels, 6, 6), scale=3.0))  # no ties in the sort

    def test_identities(self):
        """The extension equals the Jaccard loss at 0/1 errors: a hard prediction scores 1 − IoU."""
        logits, labels = _double((1, 1, 6, 6))
        hard = torch.where(logits > 0, 1.0, 0.0)
        errors = (hard - (labels == 1).to(torch.float64)).abs().reshape(1, -1)
        union = ((hard[:, 0] > 0) | (labels == 1)).sum()
        iou = ((hard[:, 0] > 0) & (labels == 1)).sum() / union
        torch.testing.assert_close(losses.lovasz_extension(errors, (labels == 1).reshape(1, -1)),
                                   (1 - iou).to(torch.float64).reshape(1))
        perfect = 20.0 * _onehot(labels, 2)
        assert float(losses.lovasz_loss(perfect, labels)) < 1e-6

    def test_ignore_index_drops_voxels(self):
        logits, labels = _double((2, 3, 6, 6))
        masked = labels.clone()
        masked[:, :2] = -1
        torch.testing.assert_close(losses.lovasz_loss(logits, masked, ignore_index=-1),
                                   losses.lovasz_loss(logits[:, :, 2:], labels[:, 2:]))

    @pytest.mark.parametrize("channels", [1, 3])
    @pytest.mark.parametrize("per_image", [False, True])
    def test_equals_smp(self, channels, per_image):
        """SMP's LovaszLoss casts its Jaccard steps to float32, so it runs on float32 logits here."""
        smp = _smp_losses()
        logits, labels = _double((3, channels, 6, 6), scale=2.0)
        logits = logits.float()
        peer = smp.LovaszLoss("binary" if channels == 1 else "multiclass", per_image=per_image)
        expected = peer(logits, labels.unsqueeze(1) if channels == 1 else labels)
        torch.testing.assert_close(losses.lovasz_loss(logits, labels, batch=not per_image), expected,
                                   rtol=1e-5, atol=1e-5)


class TestGeneralizedWassersteinDice:
    @pytest.mark.parametrize("shape", [(2, 3, 5, 5), (2, 1, 5, 5), (2, 3, 2, 3, 3)])
    def test_reference(self, shape):
        logits, labels = _double(shape)
        ours = losses.generalized_wasserstein_dice_loss(logits, labels, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(), ref.generalized_wasserstein_dice(*_numpy(logits, labels)),
                                   rtol=1e-10)
        matrix = [[0.0, 1.0, 2.0], [1.0, 0.0, 0.5], [2.0, 0.5, 0.0]] if shape[1] == 3 else [[0, 3.0], [3.0, 0]]
        ours = losses.generalized_wasserstein_dice_loss(logits, labels, dist_matrix=matrix, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(),
                                   ref.generalized_wasserstein_dice(*_numpy(logits, labels), dist_matrix=matrix),
                                   rtol=1e-10)

    def test_gradcheck(self):
        _gradcheck(losses.generalized_wasserstein_dice_loss, *_double((2, 3, 6, 6)),
                   dist_matrix=[[0, 1, 1], [1, 0, 0.3], [1, 0.3, 0]])

    def test_identities(self):
        """With the 0/1 matrix ``W = 1 − p_y``, so the loss is the Dice-like ``1 − 2TP/(2TP + Σ(1 − p_y))``;
        one-hot floats equal labels; a perfect prediction scores 0."""
        logits, labels = _double((2, 3, 6, 6))
        p_true = torch.softmax(logits, 1).gather(1, labels.unsqueeze(1))[:, 0].reshape(2, -1)
        tp = ((labels.reshape(2, -1) > 0) * p_true).sum(1)
        expected = 1 - 2 * tp / (2 * tp + (1 - p_true).sum(1))
        torch.testing.assert_close(losses.generalized_wasserstein_dice_loss(logits, labels, smooth=0.0,
                                                                            reduction="none"), expected)
        torch.testing.assert_close(losses.generalized_wasserstein_dice_loss(logits, _onehot(labels, 3)),
                                   losses.generalized_wasserstein_dice_loss(logits, labels))
        assert float(losses.generalized_wasserstein_dice_loss(50.0 * _onehot(labels, 3), labels)) < 1e-6

    def test_bad_options(self):
        logits, labels = _double((2, 3, 4, 4))
        with pytest.raises(ValueError, match=r"dist_matrix must be \(3, 3\)"):
            losses.generalized_wasserstein_dice_loss(logits, labels, dist_matrix=[[0, 1], [1, 0]])
        with pytest.raises(ValueError, match="zeros on its diagonal"):
            losses.generalized_wasserstein_dice_loss(logits, labels, dist_matrix=torch.ones(3, 3))
        with pytest.raises(ValueError, match="soft labels"):
            losses.generalized_wasserstein_dice_loss(logits, torch.full((2, 3, 4, 4), 1 / 3, dtype=torch.float64))

    @pytest.mark.parametrize("weighting", ["default", "gdl"])
    def test_equals_monai(self, weighting):
        monai = pytest.importorskip("monai.losses")
        logits, labels = _double((2, 3, 6, 6))
        matrix = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.5], [2.0, 0.5, 0.0]])
        peer = monai.GeneralizedWassersteinDiceLoss(dist_matrix=matrix, weighting_mode=weighting.upper()
                                                    if weighting == "gdl" else weighting)
        peer.m = peer.m.to(torch.float64)
        ours = losses.generalized_wasserstein_dice_loss(logits, labels, dist_matrix=matrix, weighting=weighting)
        torch.testing.assert_close(ours, peer(logits, labels), rtol=1e-5, atol=1e-5)


def _monai():
    return pytest.importorskip("monai.losses")


class TestClDice:
    @pytest.mark.parametrize("shape", [(2, 3, 7, 7), (2, 1, 7, 7), (2, 3, 4, 5, 5)])
    @pytest.mark.parametrize("include_background", [False, True])
    def test_reference(self, shape, include_background):
        logits, labels = _double(shape, scale=2.0)
        ours = losses.cldice_loss(logits, labels, include_background=include_background, reduction="none")
        expected = ref.cldice(*_numpy(logits, labels), include_background=include_background)
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

    def test_gradcheck(self):
        _gradcheck(losses.cldice_loss, *_double((1, 3, 6, 6), scale=2.0))

    def test_identities(self):
        logits, labels = _double((2, 3, 7, 7))
        assert float(losses.cldice_loss(50.0 * _onehot(labels, 3), labels)) < 1e-9
        torch.testing.assert_close(losses.cldice_loss(logits, _onehot(labels, 3)), losses.cldice_loss(logits, labels))

    @pytest.mark.parametrize("channels", [1, 2])
    def test_equals_monai(self, channels):
        """One kept class (binary, or C = 2 without background): MONAI's pooled score is ours; its
        harmonic-mean epsilon (smooth) made negligible."""
        monai = _monai()
        logits, labels = _double((2, channels, 7, 7), scale=2.0)
        binary = channels == 1
        peer = monai.SoftclDiceLoss(iter_=3, smooth=1e-30, sigmoid=binary, softmax=not binary,
                                    to_onehot_y=not binary, include_background=binary)
        target = labels.unsqueeze(1).to(torch.float64) if binary else labels.unsqueeze(1)
        torch.testing.assert_close(losses.cldice_loss(logits, labels), peer(logits, target), rtol=1e-5, atol=1e-5)


class TestDiceClDice:
    def test_is_the_weighted_sum(self):
        logits, labels = _double((2, 3, 7, 7))
        loss = losses.get("dice_cldice", alpha=0.3)
        value = loss(logits, labels)
        expected = 0.7 * losses.dice_loss(logits, labels, smooth=1.0, include_background=False) \
            + 0.3 * losses.cldice_loss(logits, labels)
        torch.testing.assert_close(value, expected)
        assert sorted(loss.last_values) == ["cldice", "dice"]

    def test_equals_monai(self):
        monai = _monai()
        logits, labels = _double((2, 1, 7, 7), scale=2.0)
        peer = monai.SoftDiceclDiceLoss(iter_=3, alpha=0.5, smooth=1e-30, sigmoid=True)
        torch.testing.assert_close(losses.dice_cldice_loss(logits, labels),
                                   peer(logits, labels.unsqueeze(1).to(torch.float64)), rtol=1e-5, atol=1e-5)


class TestSkeletonRecall:
    @pytest.mark.parametrize("shape", [(2, 3, 9, 9), (2, 1, 9, 9), (1, 3, 5, 6, 6)])
    def test_reference(self, shape):
        logits, labels = _double(shape)
        ours = losses.skeleton_recall_loss(logits, labels, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(), ref.skeleton_recall(*_numpy(logits, labels)), rtol=1e-10)

    def test_gradcheck(self):
        _gradcheck(losses.skeleton_recall_loss, *_double((1, 3, 6, 6)), iterations=2)

    def test_identities(self):
        """A thin line: its tube is the line dilated, kept inside the line for the loss; covering it
        scores 0, missing it 1, covering 3 of its 7 voxels 1 − 3/7."""
        labels = torch.zeros(1, 9, 9, dtype=torch.long)
        labels[0, 4, 1:8] = 1
        tube = losses.tubed_skeleton(_onehot(labels, 2)[:, 1:])
        assert tube[0, 0, 3:6, :].sum() == 3 * 9 and tube.sum() == 27
        perfect = 50.0 * (2.0 * labels.unsqueeze(1).to(torch.float64) - 1.0)
        assert float(losses.skeleton_recall_loss(perfect, labels, smooth=0.0)) < 1e-9
        assert float(losses.skeleton_recall_loss(-perfect, labels, smooth=0.0)) > 1 - 1e-9
        half = perfect.clone()
        half[..., :5] = -50.0  # predicts only columns 5..7 of the line
        torch.testing.assert_close(losses.skeleton_recall_loss(half, labels, smooth=0.0),
                                   torch.tensor(1 - 3 / 7, dtype=torch.float64))


class TestLogHausdorffDT:
    def test_is_log_of_hd(self):
        logits, labels = _double((3, 3, 8, 8))
        hd = losses.hausdorff_dt_loss(logits, labels, reduction="none")
        torch.testing.assert_close(losses.log_hausdorff_dt_loss(logits, labels, reduction="none"), torch.log1p(hd))
        torch.testing.assert_close(losses.log_hausdorff_dt_loss(logits, labels), torch.log1p(hd).mean())

    def test_gradcheck(self):
        _gradcheck(losses.log_hausdorff_dt_loss, *_double((2, 3, 6, 6)))

    @pytest.mark.parametrize("channels", [1, 3])
    def test_equals_monai(self, channels):
        """One sample: MONAI takes the log after its batch mean, we per sample."""
        monai = _monai()
        logits, labels = _double((1, channels, 8, 8))
        binary = channels == 1
        peer = monai.LogHausdorffDTLoss(sigmoid=binary, softmax=not binary, include_background=binary)
        target = labels.unsqueeze(1).to(torch.float64) if binary else _onehot(labels, channels)
        torch.testing.assert_close(losses.log_hausdorff_dt_loss(logits, labels), peer(logits, target).to(torch.float64),
                                   rtol=1e-5, atol=1e-5)


class TestHausdorffErosion:
    @pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 1, 8, 8), (1, 3, 5, 6, 6)])
    def test_reference(self, shape):
        logits, labels = _double(shape, scale=4.0)
        ours = losses.hausdorff_erosion_loss(logits, labels, reduction="none")
        np.testing.assert_allclose(ours.detach().numpy(), ref.hausdorff_erosion(*_numpy(logits, labels)), rtol=1e-10)

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
        kornia = pytest.importorskip("kornia.losses")
        logits, labels = _double(shape, scale=4.0)
        peer = kornia.HausdorffERLoss(alpha=2.0, k=10) if len(shape) == 4 else kornia.HausdorffERLoss3D(alpha=2.0, k=10)
        torch.testing.assert_close(losses.hausdorff_erosion_loss(logits, labels, include_background=True),
                                   peer(torch.softmax(logits, 1), labels.unsqueeze(1)), rtol=1e-5, atol=1e-5)


class TestUnifiedFocal:
    @pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 1, 6, 6), (2, 4, 3, 4, 4)])
    @pytest.mark.parametrize("variant", ["asymmetric", "symmetric"])
    def test_reference(self, shape, variant):
        logits, labels = _double(shape)
        ours = losses.unified_focal_loss(logits, labels, variant=variant, reduction="none")
        expected = ref.unified_focal(*_numpy(logits, labels), variant=variant)
        np.testing.assert_allclose(ours.detach().numpy(), expected, rtol=1e-10)

    @pytest.mark.parametrize("variant", ["asymmetric", "symmetric"])
    def test_gradcheck(self, variant):
        _gradcheck(losses.unified_focal_loss, *_double((2, 3, 6, 6)), variant=variant)

    def test_identities(self):
        """Symmetric, δ = ½: λ = 1 is half the focal loss, λ = 0 with γ = 0 the Dice (Tversky ½, ½) loss."""
        logits, labels = _double((2, 3, 6, 6))
        torch.testing.assert_close(
            losses.unified_focal_loss(logits, labels, lambda_focal=1.0, delta=0.5, gamma=0.7, variant="symmetric"),
            0.5 * losses.focal_loss(logits, labels, gamma=0.7))
        torch.testing.assert_close(
            losses.unified_focal_loss(logits, labels, lambda_focal=0.0, delta=0.5, gamma=0.0, variant="symmetric"),
            losses.tversky_loss(logits, labels, alpha=0.5, beta=0.5, smooth=1e-7))

    @pytest.mark.parametrize("lambda_focal, scale", [(0.0, 1.0), (1.0, 2.0)])
    @pytest.mark.parametrize("channels", [1, 2])
    def test_equals_monai(self, lambda_focal, scale, channels):
        """MONAI's AsymmetricUnifiedFocalLoss takes probabilities and averages its focal part over
        the two classes: ours = MONAI for the Tversky part (λ = 0), 2 × MONAI for the focal (λ = 1)."""
        monai = _monai()
        logits, labels = _double((2, channels, 6, 6))
        peer = monai.AsymmetricUnifiedFocalLoss(weight=lambda_focal, gamma=0.5, delta=0.6, to_onehot_y=channels > 1)
        probs = torch.sigmoid(logits) if channels == 1 else torch.softmax(logits, 1)
        target = labels.unsqueeze(1).to(torch.float64) if channels == 1 else labels.unsqueeze(1)
        torch.testing.assert_close(losses.unified_focal_loss(logits, labels, lambda_focal=lambda_focal),
                                   scale * peer(probs, target), rtol=1e-5, atol=1e-5)


class TestGeneralizedDiceFocal:
    def test_is_the_weighted_sum(self):
        logits, labels = _double((2, 3, 6, 6))
        loss = losses.get("gdl_focal", weight_gdl=0.7, weight_focal=2.0, gamma=1.5)
        expected = 0.7 * losses.generalized_dice_loss(logits, labels) + 2.0 * losses.focal_loss(logits, labels, gamma=1.5)
        torch.testing.assert_close(loss(logits, labels), expected)
        assert sorted(loss.last_values) == ["focal", "gdl"]

    def test_gradcheck(self):
        _gradcheck(losses.gdl_focal_loss, *_double((2, 3, 6, 6)))

    def test_equals_monai(self):
        """Binary (sigmoid focal on both sides); MONAI's unnormalised GDL weights need a tiny smooth."""
        monai = _monai()
        logits, labels = _double((2, 1, 6, 6))
        peer = monai.GeneralizedDiceFocalLoss(sigmoid=True, smooth_nr=1e-12, smooth_dr=1e-12, gamma=2.0)
        torch.testing.assert_close(losses.gdl_focal_loss(logits, labels, smooth=1e-12),
                                   peer(logits, labels.unsqueeze(1).to(torch.float64)), rtol=1e-5, atol=1e-5)
