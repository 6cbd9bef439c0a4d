"""Peer implementations of our losses (MONAI, segmentation_models_pytorch, kornia), for the
speed benchmark: each wrapped as ``fn(logits, labels) -> loss`` under our input contract.

A peer is listed under a registry name with ``same=True`` only where its definition matches ours
(then the benchmark prints the largest difference of the values, after ``scale``); ``same=False``
peers are timed for reference only, and ``note`` says how they differ. Peers that are not
installed are skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class Peer:
    library: str
    loss: str  # our registry name
    fn: Callable  # fn(logits, labels) -> scalar
    same: bool  # same definition as ours: values must agree
    scale: float = 1.0  # ours == scale * peer (e.g. a mean over classes too)
    note: str = ""


def load_smp_losses():
    """``segmentation_models_pytorch.losses`` without running the package ``__init__`` (it imports
    timm, which is not installed): a stub parent module with the package path is enough, since the
    losses only import torch and each other."""
    if "segmentation_models_pytorch.losses" in sys.modules:
        return sys.modules["segmentation_models_pytorch.losses"]
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    if "segmentation_models_pytorch" not in sys.modules:
        stub = types.ModuleType("segmentation_models_pytorch")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["segmentation_models_pytorch"] = stub
    return importlib.import_module("segmentation_models_pytorch.losses")


def _optional(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # not installed, or broken: the benchmark runs without it
        return None


def _onehot(labels: torch.Tensor, channels: int) -> torch.Tensor:
    return F.one_hot(labels, channels).movedim(-1, 1).float()


def _labels_with_channel(loss):
    """``loss(logits, labels[:, None])``: MONAI / SMP want a channel axis on label maps."""
    return lambda x, y: loss(x, y.unsqueeze(1))


def _float_labels_with_channel(loss):
    """``loss(logits, labels[:, None].float())``: binary peers want a float target like the logits."""
    return lambda x, y: loss(x, y.unsqueeze(1).float())


def _onehot_labels(loss, channels: int):
    return lambda x, y: loss(x, _onehot(y, channels))


def multiclass_peers(channels: int) -> list[Peer]:
    """Peers for softmax logits ``(N, C, *spatial)`` with integer labels ``(N, *spatial)``."""
    peers = []
    monai = _optional("monai.losses")
    if monai is not None:
        dice = monai.DiceLoss(softmax=True, to_onehot_y=True)
        jaccard = monai.DiceLoss(softmax=True, to_onehot_y=True, jaccard=True)
        tversky = monai.TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7)
        gdl = monai.GeneralizedDiceLoss(softmax=True, to_onehot_y=True)
        dice_ce = monai.DiceCELoss(softmax=True, to_onehot_y=True)
        focal = monai.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)
        dice_focal = monai.DiceFocalLoss(softmax=True, to_onehot_y=True, gamma=2.0, lambda_focal=0.5)
        hd = monai.HausdorffDTLoss(softmax=True)
        peers += [
            Peer("MONAI", "dice", _labels_with_channel(dice), True),
            Peer("MONAI", "iou", _labels_with_channel(jaccard), True,
                 note="DiceLoss(jaccard=True): our smoothing halved"),
            Peer("MONAI", "tversky", _labels_with_channel(tversky), True),
            Peer("MONAI", "gdl", _labels_with_channel(gdl), False,
                 note="unnormalised weights 1/(Σg)²: smoothing dominates, absent classes differ"),
            Peer("MONAI", "dice_ce", _labels_with_channel(dice_ce), True),
            Peer("MONAI", "focal", _labels_with_channel(focal), True, scale=channels,
                 note="mean over classes too: ours = C × MONAI"),
            Peer("MONAI", "dice_focal", _labels_with_channel(dice_focal), False,
                 note="its focal term is sigmoid-based"),
            Peer("MONAI", "hd", _onehot_labels(hd, channels), True,
                 note="both distance maps recomputed per call (scipy)"),
        ]
    smp = load_smp_losses()
    if smp is not None:
        note = "batch-pooled counts, classes absent from the batch dropped"
        dice = smp.DiceLoss("multiclass", from_logits=True)
        jaccard = smp.JaccardLoss("multiclass", from_logits=True)
        tversky = smp.TverskyLoss("multiclass", from_logits=True, alpha=0.3, beta=0.7)
        focal = smp.FocalLoss("multiclass")
        peers += [
            Peer("SMP", "dice", dice, False, note=note),
            Peer("SMP", "iou", jaccard, False, note=note),
            Peer("SMP", "tversky", tversky, False, note=note),
            Peer("SMP", "focal", focal, False, note="one-vs-rest sigmoid focal terms"),
        ]
    kornia = _optional("kornia.losses")
    if kornia is not None:
        peers += [
            Peer("kornia", "dice", lambda x, y: kornia.dice_loss(x, y, average="macro", eps=1e-5), False,
                 note="eps only in the denominator"),
            Peer("kornia", "focal", lambda x, y: kornia.focal_loss(x, y, alpha=None, gamma=2.0, reduction="mean"),
                 True, scale=channels, note="mean over classes too: ours = C × kornia"),
            Peer("kornia", "tversky", lambda x, y: kornia.tversky_loss(x, y, alpha=0.3, beta=0.7, eps=1e-5), False,
                 note="counts pooled over classes"),
        ]
    return peers


def binary_peers() -> list[Peer]:
    """Peers for one-channel (sigmoid) logits ``(N, 1, *spatial)`` with 0/1 labels ``(N, *spatial)``."""
    peers = []
    monai = _optional("monai.losses")
    if monai is not None:
        dice = monai.DiceLoss(sigmoid=True)
        jaccard = monai.DiceLoss(sigmoid=True, jaccard=True)
        tversky = monai.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7)
        dice_ce = monai.DiceCELoss(sigmoid=True)
        focal = monai.FocalLoss(gamma=2.0)
        dice_focal = monai.DiceFocalLoss(sigmoid=True, gamma=2.0, lambda_focal=0.5)
        hd = monai.HausdorffDTLoss(sigmoid=True)

        peers += [
            Peer("MONAI", "dice", _float_labels_with_channel(dice), True),
            Peer("MONAI", "iou", _float_labels_with_channel(jaccard), True, note="our smoothing halved"),
            Peer("MONAI", "tversky", _float_labels_with_channel(tversky), True),
            Peer("MONAI", "dice_ce", _float_labels_with_channel(dice_ce), True),
            Peer("MONAI", "focal", _float_labels_with_channel(focal), True),
            Peer("MONAI", "dice_focal", _float_labels_with_channel(dice_focal), True),
            Peer("MONAI", "hd", _float_labels_with_channel(hd), True, note="distance maps recomputed per call"),
        ]
    smp = load_smp_losses()
    if smp is not None:
        note = "batch-pooled counts"
        dice = smp.DiceLoss("binary", from_logits=True)
        jaccard = smp.JaccardLoss("binary", from_logits=True)
        focal = smp.FocalLoss("binary")
        peers += [
            Peer("SMP", "dice", _labels_with_channel(dice), False, note=note),
            Peer("SMP", "iou", _labels_with_channel(jaccard), False, note=note),
            Peer("SMP", "focal", _labels_with_channel(focal), True),
        ]
    kornia = _optional("kornia.losses")
    if kornia is not None:
        peers.append(Peer(
            "kornia", "focal",
            lambda x, y: kornia.binary_focal_loss_with_logits(x, y.unsqueeze(1).float(), alpha=None, gamma=2.0,
                                                              reduction="mean"),
            True))
    return peers
