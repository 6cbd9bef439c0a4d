"""medsegloss losses inside nnU-Net v2: the trainer ``nnUNetTrainerMedsegloss``.

Install the extra (``pip install 'medsegloss[nnunet]'``), make the trainer findable (nnU-Net
looks trainers up by class name among the modules of ``nnunetv2.training.nnUNetTrainer``, or of
the folders in ``nnUNet_extTrainer``), then train as usual::

    python -m medsegloss.integrations.nnunet install       # writes a one-line shim module there
    MEDSEGLOSS_LOSS="ce + 0.5*tversky(alpha=0.3, beta=0.7)" \\
        nnUNetv2_train 1 3d_fullres 0 -tr nnUNetTrainerMedsegloss

The loss is ``MEDSEGLOSS_LOSS`` (a registry name or a :func:`~medsegloss.losses.build` string;
default ``dice_ce``) or the JSON file named by ``MEDSEGLOSS_CONFIG``:
``{"loss": "ce + dice", "options": {"include_background": false}}`` (``options`` go to every term
that takes them, as ``build(loss, **options)``). Everything else is nnU-Net's own trainer.

nnU-Net's target format is translated: label maps come as float ``(N, 1, *spatial)`` and become
integer labels; the dataset's ignore label becomes a :class:`~medsegloss.losses.MaskedLoss` mask
(losses without ``ignore_index`` are refused); region-based training (``has_regions``, one sigmoid
per overlapping region) uses the losses' multi-label mode (``multilabel=True``; with an ignore
label one region only, since a mask needs hard labels). Deep supervision keeps nnU-Net's own
wrapper, weights (``1, 1/2, 1/4, ...``, the lowest output 0, normalised) and down-sampled targets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import torch
from torch import nn

from medsegloss import _io
from medsegloss.losses import build
from medsegloss.losses.wrappers import MaskedLoss, _leaves, deep_supervision_weights

__all__ = ["NNUNetLoss", "nnUNetTrainerMedsegloss", "loss_from_environment", "build_nnunet_loss",
           "install_trainer", "install_trainers", "trainer_class", "trainer_name", "TRAINER_NAME"]

TRAINER_NAME = "nnUNetTrainerMedsegloss"
DEFAULT_LOSS = "dice_ce"


def loss_from_environment(environ=None) -> tuple[str, dict]:
    """``(loss string, common options)`` from ``MEDSEGLOSS_CONFIG`` (a JSON file) or
    ``MEDSEGLOSS_LOSS``; ``("dice_ce", {})`` when neither is set. Both set is an error."""
    environ = os.environ if environ is None else environ
    spec, config = environ.get("MEDSEGLOSS_LOSS"), environ.get("MEDSEGLOSS_CONFIG")
    if spec and config:
        raise ValueError("set MEDSEGLOSS_LOSS or MEDSEGLOSS_CONFIG, not both "
                         f"(MEDSEGLOSS_LOSS={spec!r}, MEDSEGLOSS_CONFIG={config!r})")
    if not config:
        if spec is not None and not spec.strip():
            raise ValueError("MEDSEGLOSS_LOSS is set but empty: give a loss (e.g. 'ce + dice'), or unset it for "
                             f"the default {DEFAULT_LOSS}")
        return check_loss(spec or DEFAULT_LOSS, {}, "MEDSEGLOSS_LOSS")
    path = Path(config)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        raise ValueError(f"MEDSEGLOSS_CONFIG={str(path)!r}: cannot read a JSON loss config "
                         f"({type(error).__name__}: {error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("loss"), str) or set(data) - {"loss", "options"} \
            or not isinstance(data.get("options", {}), dict):
        raise ValueError(f"{path}: a loss config is {{\"loss\": \"ce + dice\", \"options\": {{...}}}}, "
                         f"got {data!r}")
    return check_loss(data["loss"], dict(data.get("options", {})), str(path))


def check_loss(spec: str, options: dict, source: str) -> tuple[str, dict]:
    """``(spec, options)`` once they build a loss, as ``medsegloss train`` checks them: options no
    term takes (a typo) named with the closest, values of the wrong type or range refused, so a bad
    variable fails when the trainer is made rather than inside nnU-Net's first step."""
    from medsegloss.experiment.config import Config
    from medsegloss.experiment.components import make_loss

    if "|" in spec:
        raise ValueError(f"{source}: loss {spec!r} carries a term-weight schedule ('|'), which the nnU-Net "
                         "trainer does not run; give the loss without it")
    try:
        make_loss(Config(loss=spec, loss_options=options))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{source}: {error}") from None
    return spec, options


class NNUNetLoss(nn.Module):
    """A medsegloss loss taking nnU-Net's ``(output, target)`` for one resolution.

    Args:
        loss: the loss (any of the package's contract).
        ignore_label: the dataset's ``ignore`` label, or None: its voxels are masked out
            (:class:`~medsegloss.losses.MaskedLoss`, so the loss needs ``ignore_index``).
        has_regions: region-based training; the target is one-hot per region, plus the ignore
            channel last when there is an ignore label. One region: the loss's binary form;
            several (overlapping, one sigmoid each): ``loss`` must be built with
            ``multilabel=True`` and gets the multi-hot target (an ignore label is then refused:
            a mask needs hard labels).

    Shape:
        output ``(N, C, *spatial)`` logits; target ``(N, 1, *spatial)`` float label map, or with
        regions ``(N, R (+1), *spatial)``; returns what the loss returns.
    """

    def __init__(self, loss: nn.Module, ignore_label: int | None = None, has_regions: bool = False):
        super().__init__()
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.has_regions = bool(has_regions)
        self.loss = loss if self.ignore_label is None else MaskedLoss(loss)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.has_regions and output.shape[1] > 1:  # overlapping regions: the multi-hot target as is
            if self.ignore_label is not None:
                raise ValueError(f"region-based training with {output.shape[1]} regions and an ignore label: a "
                                 "multi-label loss takes no voxel mask; drop the ignore label or train one region")
            return self.loss(output, target[:, :output.shape[1]])
        if self.has_regions:
            if self.ignore_label is not None:  # nnU-Net puts "this voxel is ignored" in the last channel
                mask, target = target[:, -1] == 0, target[:, :-1]
            labels = target[:, 0].long()  # 0 / 1 for the one region
        else:
            labels = target[:, 0].long()  # nnU-Net's label maps are floats (N, 1, *spatial)
            if self.ignore_label is not None:
                mask = labels != self.ignore_label
        return self.loss(output, labels) if mask is None else self.loss(output, labels, mask)

    def extra_repr(self) -> str:
        return f"ignore_label={self.ignore_label}, has_regions={self.has_regions}"


def build_nnunet_loss(spec: str, options: dict | None = None, *, ignore_label: int | None = None,
                      has_regions: bool = False, regions: int = 1, deep_supervision_outputs: int = 0,
                      lowest_weight: float = 0.0) -> nn.Module:
    """The loss an nnU-Net trainer uses: ``build(spec, **options)`` (with ``multilabel=True`` for
    several overlapping ``regions``) in :class:`NNUNetLoss`, in nnU-Net's
    ``DeepSupervisionWrapper`` over ``deep_supervision_outputs`` outputs (0: none) with nnU-Net's
    weights ``1, 1/2, 1/4, ...``, the lowest set to ``lowest_weight``, normalised."""
    multilabel = {"multilabel": True} if has_regions and regions > 1 else {}
    base = build(spec, **multilabel, **(options or {}))
    loss = NNUNetLoss(base, ignore_label, has_regions)
    if deep_supervision_outputs <= 1:
        return loss
    if any(getattr(leaf, "needs_distance", False) for _, leaf in _leaves(base)):
        raise ValueError(f"loss {spec!r} uses signed distance maps, which nnU-Net's deep supervision would compute "
                         "on down-sampled targets in another voxel size; disable deep supervision or pick another loss")
    _require_nnunet()
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    weights = deep_supervision_weights(deep_supervision_outputs)
    weights[-1] = lowest_weight
    weights = [weight / sum(weights) for weight in weights]
    return DeepSupervisionWrapper(loss, weights)


def _require_nnunet():
    try:
        import nnunetv2  # noqa: F401
    except ImportError as error:
        raise ImportError("medsegloss's nnU-Net trainer needs nnU-Net v2: pip install 'medsegloss[nnunet]' "
                          f"(import failed: {error})") from error


def trainer_name(loss: str | None = None, epochs: int | None = None) -> str:
    """The class name (nnU-Net's ``-tr``, and its results folder ``<name>__<plans>__<config>``) of
    the trainer for ``loss`` and ``epochs``: ``nnUNetTrainerMedsegloss``, then ``_<slug>`` for a
    loss (each run of characters other than letters and digits becomes one ``_``, the ends
    stripped: ``"ce + 0.5*dice"`` -> ``ce_0_5_dice``), then ``_<N>epochs`` when epochs are given.
    Never a double underscore: nnU-Net splits its folder names at ``__``."""
    name = TRAINER_NAME
    if loss is not None:
        slug = re.sub(r"[^0-9A-Za-z]+", "_", loss).strip("_")
        if not slug:
            raise ValueError(f"loss {loss!r} has no letters or digits to name a trainer by")
        name += f"_{slug}"
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}")
        name += f"_{epochs}epochs"
    return name


def trainer_class(loss: str | None = None, epochs: int | None = None, *, module: str | None = None) -> type:
    """A subclass of nnU-Net's trainer named :func:`trainer_name` ``(loss, epochs)``, training
    with ``loss`` (stored in the class as ``medsegloss_loss``; None: ``MEDSEGLOSS_LOSS`` /
    ``MEDSEGLOSS_CONFIG``, as ``nnUNetTrainerMedsegloss``) for ``epochs`` epochs (None: nnU-Net's
    1000). ``module`` is the module that holds it by that name (pickling, nnU-Net's finder); the
    shims written by :func:`install_trainer` pass their own ``__name__``. The loss is checked here."""
    _require_nnunet()
    name = trainer_name(loss, epochs)
    if loss is not None:
        check_loss(loss, {}, f"trainer {name}")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class Trainer(nnUNetTrainer):
        def __new__(cls, *args, **kwargs):  # not __init__: nnU-Net records its __init__'s signature
            cls.loss_and_options()  # a bad MEDSEGLOSS_LOSS / MEDSEGLOSS_CONFIG fails before nnU-Net sets up
            return super().__new__(cls)

        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            if self.medsegloss_epochs is not None:
                self.num_epochs = self.medsegloss_epochs
            self.medsegloss_loss_used = self.loss_and_options()[0]  # recorded in nnU-Net's debug.json

        @classmethod
        def loss_and_options(cls) -> tuple[str, dict]:
            return (cls.medsegloss_loss, {}) if cls.medsegloss_loss is not None else loss_from_environment()

        def _build_loss(self):
            spec, options = self.loss_and_options()
            manager = self.label_manager
            outputs = len(self._get_deep_supervision_scales()) if self.enable_deep_supervision else 0
            # nnU-Net gives its lowest output weight 0, or 1e-6 under DDP without compile (unused parameters)
            lowest = 1e-6 if self.is_ddp and not self._do_i_compile() else 0.0
            loss = build_nnunet_loss(spec, options, ignore_label=manager.ignore_label,
                                     has_regions=manager.has_regions, regions=manager.num_segmentation_heads,
                                     deep_supervision_outputs=outputs,
                                     lowest_weight=lowest)
            self.print_to_log_file(f"medsegloss loss: {spec!r} options={options} ignore_label={manager.ignore_label} "
                                   f"deep supervision outputs={outputs}")
            return loss

    Trainer.medsegloss_loss, Trainer.medsegloss_epochs = loss, epochs
    Trainer.__name__ = Trainer.__qualname__ = name
    Trainer.__module__ = module or __name__  # pickled and found by name as that module's attribute
    where = f"loss {loss!r}" if loss is not None else "the loss of MEDSEGLOSS_LOSS or MEDSEGLOSS_CONFIG"
    Trainer.__doc__ = (f"nnU-Net's default trainer with {where} from medsegloss, "
                       f"{epochs or 'nnU-Net`s 1000'} epochs; everything else is nnU-Net's.")
    return Trainer


def __getattr__(name: str):
    if name == TRAINER_NAME:
        trainer = globals()[TRAINER_NAME] = trainer_class()
        return trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _trainer_folder(folder) -> Path:
    if folder is None:
        import nnunetv2

        folder = Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"install_trainer(): folder {str(folder)!r} does not exist")
    return folder


def install_trainer(folder: str | os.PathLike | None = None) -> Path:
    """Write ``nnUNetTrainerMedsegloss.py``, a one-line module importing the trainer, where
    nnU-Net looks for trainers: ``nnunetv2/training/nnUNetTrainer/`` of the installed nnU-Net
    (default), or ``folder`` (then point ``nnUNet_extTrainer`` at it). Returns the file's path."""
    _require_nnunet()
    path = _trainer_folder(folder) / f"{TRAINER_NAME}.py"
    text = ('"""Written by medsegloss.integrations.nnunet.install_trainer(): makes the trainer findable by name."""\n'
            f"from medsegloss.integrations.nnunet import {TRAINER_NAME}  # noqa: F401\n")
    return _io.write_text(path, text)  # atomic, with the permissions of a plain file (nnU-Net imports it)


def install_trainers(losses: list[str | None], epochs: int | None = None,
                     folder: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write one module per loss, ``<trainer_name(loss, epochs)>.py``, defining that named trainer
    class (``None`` in ``losses``: the environment-variable trainer with ``epochs``), where
    :func:`install_trainer` writes. Each class has its own name, so each loss gets its own nnU-Net
    results folder; installing again adds classes. A loss whose name is taken by another loss
    string (the same slug: ``"ce+dice"`` after ``"ce + dice"``) is refused. Returns ``{class name: file}``."""
    _require_nnunet()
    folder = _trainer_folder(folder)
    texts = {}
    for loss in losses:
        name = trainer_name(loss, epochs)
        if loss is not None:
            check_loss(loss, {}, f"trainer {name}")  # before anything is written
        text = ('"""Written by medsegloss.integrations.nnunet.install_trainers(): the trainer of one loss."""\n'
                "from medsegloss.integrations.nnunet import trainer_class\n\n"
                f"{name} = trainer_class({loss!r}, {epochs!r}, module=__name__)\n")
        path = folder / f"{name}.py"
        previous = texts.get(name) or (path.read_text(encoding="utf-8") if path.is_file() else None)
        if previous is not None and previous != text:
            raise ValueError(f"trainer {name} already exists for another loss string ({path}); "
                             f"loss {loss!r} needs a spelling of its own (the name keeps letters and digits only)")
        texts[name] = text
    return {name: _io.write_text(folder / f"{name}.py", text) for name, text in texts.items()}


def main(argv=None) -> int:
    """``python -m medsegloss.integrations.nnunet install [FOLDER] [--loss L ...] [--epochs N]``."""
    parser = argparse.ArgumentParser(prog="python -m medsegloss.integrations.nnunet",
                                     description="make medsegloss trainers findable by nnU-Net v2")
    parser.add_argument("command", choices=["install"])
    parser.add_argument("folder", nargs="?", default=None,
                        help="where to write (default: nnunetv2/training/nnUNetTrainer; else set nnUNet_extTrainer)")
    parser.add_argument("--loss", action="append", default=[],
                        help="a trainer class for this loss (repeat for several); none: nnUNetTrainerMedsegloss")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the classes written (default 1000)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if not args.loss and args.epochs is None:
            written = {TRAINER_NAME: install_trainer(args.folder)}
        else:
            written = install_trainers(args.loss or [None], args.epochs, args.folder)
    except (ValueError, ImportError, OSError) as error:
        print(f"medsegloss nnunet install: error: {error}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"wrote {path}: train with nnUNetv2_train ... -tr {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
