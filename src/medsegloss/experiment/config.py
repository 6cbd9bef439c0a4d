"""Every variable of a training experiment, in one frozen dataclass.

The defaults are a small run that fits a CPU; ``Config.preset("paper")`` gives the reference
experiment's settings (UNet base 64, 256x256, Adam lr 0.01, 100 epochs, CE). The command-line
flags of ``medsegloss train`` are generated from the fields (``--base-width 16``), and each
field's comment below is its ``--help`` text.

>>> config = Config.preset("paper", loss="ce + 1.0*dice")
>>> config.base_width, config.image_size, config.lr, config.epochs
(64, 256, 0.01, 100)
>>> Config.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

OPTIMIZERS = ("adam", "adamw", "sgd")
SELECTIONS = ("last", "best")
LOGGERS = ("tensorboard",)  # where runs can also log their curves (metrics.jsonl is always written)


@dataclass(frozen=True)
class Config:
    dataset: str = "phantom-lesion"  # dataset kind (`medsegloss datasets` lists them); on the command line also NAME=KIND:ROOT, as in bench
    dataset_name: str | None = None  # the dataset's own name in run folders and reports (bench --dataset NAME=KIND:ROOT); None: the dataset
    data_root: str | None = None  # folder holding the dataset's files; None for the synthetic phantoms
    dataset_options: dict = field(default_factory=dict)  # extra get_dataset options as JSON, e.g. '{"num_cases": 20}'
    image_size: int = 128  # images (or slices) are resized to image_size x image_size
    dims: int = 2  # 2: slices and a 2-D UNet; 3: whole volumes and a 3-D UNet
    val_fraction: float = 0.2  # share of the cases held out for validation (model selection)
    test_fraction: float = 0.2  # share of the cases held out for the final test (without folds)
    folds: int | None = None  # k-fold cross-validation over the units (cases, patients, slabs): None for one random split
    folds_file: str | None = None  # folds from a file: nnU-Net's splits_final.json or a sweep's folds/seed<k>.json (sets folds)
    fold: int | None = None  # the fold a training run tests (0 .. folds-1; bench runs every fold); its validation part comes from the other folds
    select: str = "last"  # the model tested: last (the final weights, as nnU-Net) or best (best validation Dice)
    loss: str = "ce"  # a registered loss name or a build() string such as "ce + 1.0*dice"
    loss_options: dict = field(default_factory=dict)  # the loss's options as JSON, e.g. '{"alpha": 0.3}'
    loss_schedule: str | None = None  # term weights over the steps, e.g. 'boundary=linear(0.01, 1.0)' or 'boundary=step(0@0, 1@2000)'
    binary_as_one_channel: bool = True  # binary datasets: one output channel + sigmoid (prediction = logit > 0)
    model: str = "unet"  # network spec: unet, smp:<Arch>(...), monai:<Net>(...) or module:pkg.mod:factory(...) (docs/models.md)
    base_width: int = 16  # UNet channels at the first level (64 in the paper)
    depth: int = 4  # UNet down-sampling steps (4 in the paper)
    deep_supervision: bool = False  # UNet heads on the decoder levels; the loss over all outputs, weights 1, 1/2, 1/4 ... (nnU-Net)
    optimizer: str = "adam"  # adam, adamw or sgd (momentum 0.9)
    lr: float = 1e-3  # base learning rate (the schedule's peak)
    schedule: str = "constant"  # learning-rate schedule over the steps: constant, poly (nnU-Net) or cosine
    warmup_steps: int = 0  # linear warm-up steps before the schedule
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw)
    epochs: int = 20  # budget in passes over the training split (used when steps is None)
    steps: int | None = None  # budget in optimizer steps (total updates); None: epochs x steps per epoch
    val_every: int | None = None  # validate every this many steps; None: once per epoch (epochs) or steps // 20
    patch: int | None = None  # training patch size per axis (crops); None or 0: whole images/slices
    foreground_fraction: float = 1 / 3  # share of training samples centred on foreground
    augment: bool = False  # seeded flips, 90-degree rotations and intensity jitter of training samples
    until_converged: bool = False  # stop early when val Dice has not improved for `patience` steps (up to max_steps)
    patience: int | None = None  # early-stopping patience in steps; None: a quarter of max_steps
    max_steps: int | None = None  # step budget of an --until-converged run; None: steps (or the epochs' steps)
    batch_size: int = 8  # images per step (per process under torchrun)
    seed: int = 0  # seeds the data split, the weights and the shuffling
    init_weights: str | None = None  # state_dict file loaded into the fresh model (same start for every loss)
    metrics: tuple[str, ...] = ("dice", "iou", "pixel_error")  # validation/test metrics, e.g. dice,iou,hd95,assd
    device: str = "auto"  # auto (cuda if available), cpu, cuda or cuda:N
    amp: bool = False  # mixed precision (float16 + grad scaling on CUDA, bfloat16 on CPU)
    channels_last: bool = True  # channels-last memory format for 2-D (faster convolutions on CPU)
    deterministic: bool = True  # deterministic algorithms: same config and seed give the same weights
    workers: int = 0  # DataLoader worker processes
    threads: int = 0  # CPU threads of torch (0: torch's default); 1 is faster on a busy machine
    out: str | None = None  # run directory; None: runs/<dataset>/<loss>/seed<seed>
    log: tuple[str, ...] = ()  # also log the curves to: tensorboard (RUN/tb/, view with tensorboard --logdir OUT); metrics.jsonl stays the record

    def __post_init__(self):
        for name in ("dataset_options", "loss_options"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise TypeError(f"{name} must be a dict (JSON object), got {type(value).__name__}: {value!r}")
            object.__setattr__(self, name, dict(value))
        if self.dataset_name is not None:
            check_dataset_name(self.dataset_name, "dataset_name")
        metrics = (self.metrics,) if isinstance(self.metrics, str) else self.metrics
        object.__setattr__(self, "metrics", tuple(metrics))
        log = (self.log,) if isinstance(self.log, str) else self.log
        object.__setattr__(self, "log", tuple(log or ()))
        unknown = [name for name in self.log if name not in LOGGERS]
        if unknown:
            raise ValueError(f"log: unknown logger(s) {', '.join(map(repr, unknown))}; available: {', '.join(LOGGERS)}")
        for name in ("image_size", "epochs", "batch_size", "base_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.patch == 0:
            object.__setattr__(self, "patch", None)  # --patch 0: whole images
        for name in ("steps", "val_every", "patch", "patience", "max_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")
        if self.steps is not None and self.val_every is not None and self.val_every > self.steps:
            raise ValueError(f"val_every {self.val_every} is larger than the budget of {self.steps} steps (no validation "
                             f"inside it, so the run is not assessable): give --val-every {max(1, self.steps // 20)} "
                             f"or leave it out (derived: steps // 20)")
        from medsegloss.experiment.lr_schedule import SCHEDULES

        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not isinstance(self.warmup_steps, int) or isinstance(self.warmup_steps, bool) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.steps is not None and self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps must be < steps, got {self.warmup_steps} of {self.steps}")
        if isinstance(self.foreground_fraction, bool) or not isinstance(self.foreground_fraction, (int, float)) \
                or not 0 <= self.foreground_fraction <= 1:
            raise ValueError(f"foreground_fraction must be a number in [0, 1], got {self.foreground_fraction!r}")
        if (self.patience is not None or self.max_steps is not None) and not self.until_converged:
            raise ValueError("patience and max_steps apply to --until-converged runs only")
        if not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"depth must be an int >= 0, got {self.depth!r}")
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims!r}")
        from medsegloss.models.zoo import parse_model_spec

        parse_model_spec(self.model)  # a malformed spec fails here, before any data is read
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        check_seed(self.seed)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1 \
                or self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction and test_fraction must be in [0, 1) with a sum < 1, "
                             f"got {self.val_fraction!r} and {self.test_fraction!r}")
        if self.folds == 0:
            object.__setattr__(self, "folds", None)  # --folds 0: one train/val/test split
        if self.fold is not None and self.folds is None:
            raise ValueError(f"fold={self.fold!r} needs folds (the number of cross-validation folds)")
        if self.folds is not None:
            if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
                raise ValueError(f"folds must be an int >= 2 (0: no cross-validation), got {self.folds!r}")
            if self.fold is not None and (isinstance(self.fold, bool) or not isinstance(self.fold, int)
                                          or not 0 <= self.fold < self.folds):
                raise ValueError(f"fold must be an int in [0, {self.folds}), got {self.fold!r}")
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", str(self.device)):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")

    @classmethod
    def preset(cls, name: str = "default", **changes) -> Config:
        """A named preset, with ``changes`` on top: ``default`` (the field defaults) or ``paper``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **changes})

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        """Build from a dict (e.g. a run's ``config.json``); unknown keys fail, naming the closest."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in names]
        if unknown:
            from medsegloss._checks import did_you_mean

            raise ValueError(f"unknown config field(s) {', '.join(map(repr, unknown))}."
                             f"{did_you_mean(unknown[0], names)} Fields: {', '.join(names)}")
        return cls(**data)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        data = dataclasses.asdict(self)
        data["metrics"] = list(self.metrics)
        data["log"] = list(self.log)
        return data

    def replace(self, **changes) -> Config:
        """A copy with ``changes`` applied (validated like a new config)."""
        return self.from_dict({**self.to_dict(), **changes})

    def dataset_arguments(self, split_file=None) -> dict:
        """The keyword arguments of ``medsegloss.data.get_dataset(self.dataset, split=...)`` for
        this config's data (``split_file``: a run's ``split.json`` to reuse its cases)."""
        arguments = dict(root=self.data_root, size=self.image_size, seed=self.seed, dims=self.dims,
                         val_fraction=self.val_fraction, test_fraction=self.test_fraction)
        arguments.update(self.dataset_options)
        if split_file is not None:
            arguments["split_file"] = str(split_file)
        return arguments

    def total_steps(self, train_items: int, world_size: int = 1) -> int:
        """The run's budget in optimizer steps: ``max_steps`` (an ``until_converged`` run, else
        ``steps``), ``steps``, or ``epochs * steps_per_epoch``."""
        if self.until_converged and self.max_steps is not None:
            return self.max_steps
        if self.steps is not None:
            return self.steps
        return self.epochs * self.steps_per_epoch(train_items, world_size)

    def steps_per_epoch(self, train_items: int, world_size: int = 1) -> int:
        """Steps that read ``train_items`` samples: ``ceil(items / (batch_size * world_size))``."""
        return max(1, -(-train_items // (self.batch_size * world_size)))

    def validation_interval(self, train_items: int, world_size: int = 1) -> int:
        """Steps between validations: ``val_every``, one epoch for an epoch budget, else
        ``max(1, total // 20)`` (5 validations in the last quarter for the convergence rule)."""
        if self.val_every is not None:
            return self.val_every
        if self.steps is None and not (self.until_converged and self.max_steps is not None):
            return self.steps_per_epoch(train_items, world_size)
        return max(1, self.total_steps(train_items, world_size) // 20)

    @property
    def run_dir(self) -> str:
        """``out``, or ``runs/<dataset>/<loss slug>/seed<seed>`` when ``out`` is None."""
        name = self.dataset_name or self.dataset
        fold = f"/fold{self.fold}" if self.folds is not None else ""
        return self.out if self.out is not None else f"runs/{name}/{loss_slug(self.loss)}/seed{self.seed}{fold}"


# ---------------------------------------------------------------- named datasets of a sweep
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # a folder name on every system, never . or ..


def check_dataset_name(name, argument: str = "--dataset") -> str:
    """A dataset's own name: 1-64 letters, digits, ``_ . + -``, starting with a letter or digit
    (it names run folders ``OUT/NAME/...`` and report columns); else a ValueError naming it."""
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise ValueError(f"{argument}: dataset name {name!r} must be 1-64 letters, digits, '_', '.', '+' or '-', "
                         "starting with a letter or digit (it names the run folders)")
    return name


@dataclass(frozen=True)
class NamedDataset:
    """One dataset of a sweep under its own name: ``--dataset NAME=KIND:ROOT``."""

    name: str
    kind: str  # a registered dataset (`medsegloss datasets`)
    root: str | None
    options: dict = field(default_factory=dict)


def parse_named_dataset(text: str) -> NamedDataset:
    """``"liver=nnunet:/data/Dataset003_Liver"`` (or ``"NAME=KIND"`` for a dataset without files)
    -> :class:`NamedDataset`, checked: a folder-safe name, a registered kind (an unknown one
    names the closest), an existing root folder, a root where the kind needs one."""
    from medsegloss import data

    name, separator, rest = str(text).partition("=")
    if not separator or not rest:
        raise ValueError(f"--dataset {text!r}: expected NAME=KIND:ROOT, e.g. liver=nnunet:/data/Dataset003_Liver")
    check_dataset_name(name.strip())
    kind, _, root = rest.partition(":")
    try:
        info = data.info(kind.strip())
    except ValueError as error:
        raise ValueError(f"--dataset {text!r}: {error}") from None
    root = root.strip() or None
    if root is None and info.needs_root:
        raise ValueError(f"--dataset {text!r}: dataset kind {info.name!r} needs its folder: {name}={info.name}:ROOT")
    if root is not None and not Path(root).is_dir():
        raise FileNotFoundError(f"--dataset {text!r}: folder {root} does not exist (or is not a folder)")
    return NamedDataset(name.strip(), info.name, root)


def parse_dataset_options(items, names) -> tuple[dict, dict[str, dict]]:
    """``--dataset-options`` values -> (options for every dataset, options per named dataset).

    Each item is a JSON object (every dataset), ``NAME={json}``, ``NAME=FILE.json``, or a JSON
    file holding ``{NAME: {...}, ...}``; a NAME not among ``names`` is an error naming them."""
    import json

    common, per_name = {}, {}

    def add(name, value, source):
        if name not in names:
            raise ValueError(f"--dataset-options {source!r}: {name!r} is not a dataset of this sweep ({', '.join(names)})")
        if not isinstance(value, dict):
            raise ValueError(f"--dataset-options {source!r}: the options of {name!r} must be a JSON object")
        per_name.setdefault(name, {}).update(value)

    def load(text, source):
        path = Path(text)
        try:
            return json.loads(path.read_text() if not text.lstrip().startswith("{") and path.is_file() else text)
        except (ValueError, OSError, RecursionError) as error:
            if isinstance(error, RecursionError):
                error, source = "nested too deeply for the JSON reader", source[:40] + "..."
            raise ValueError(f"--dataset-options {source!r}: not a JSON object or a readable JSON file ({error})") from None

    for item in items or []:
        item = str(item)
        name, separator, value = item.partition("=")
        if separator and not item.lstrip().startswith("{") and DATASET_NAME.fullmatch(name.strip()):
            add(name.strip(), load(value, item), item)
            continue
        content = load(item, item)
        if not isinstance(content, dict):
            raise ValueError(f"--dataset-options {item!r}: expected a JSON object")
        if item.lstrip().startswith("{"):
            common.update(content)
        else:  # a file: {NAME: {...}}
            for name, value in content.items():
                add(name, value, item)
    return common, per_name


def check_named_datasets(named: list[NamedDataset]) -> None:
    """Names given twice fail, naming them."""
    names = [spec.name for spec in named]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"--dataset: name(s) given twice: {', '.join(duplicates)} (each dataset of a sweep needs "
                         "its own name)")


SEED_LIMIT = 2**32  # NumPy's seeds are < 2**32; torch's would overflow far above


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` when it is an int in [0, 2**32); else a ValueError naming ``name``."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be an int in [0, 2**32), got {seed!r}")
    return seed


def parse_seed(text: str) -> int:
    """argparse type of a seed: an int in [0, 2**32)."""
    try:
        return check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int in [0, 2**32), got {text!r}") from None


PRESETS = {
    "default": {},
    # the reference experiment: classic UNet, 256x256 inputs, Adam with lr 0.01, 100 epochs
    "paper": {"base_width": 64, "depth": 4, "image_size": 256, "optimizer": "adam", "lr": 0.01,
              "epochs": 100, "loss": "ce"},
}


def loss_slug(loss: str) -> str:
    """A folder-safe name for a loss string: ``"ce + 1.0*dice"`` -> ``"ce+1.0xdice"``."""
    slug = loss.replace(" ", "").replace("*", "x")
    return re.sub(r"[^A-Za-z0-9_.+=,-]", "_", slug)


def field_help() -> dict[str, str]:
    """Each field's comment in the class source: the one documentation of a field (CLI help,
    docs table)."""
    help_ = {}
    for line in inspect.getsource(Config).splitlines():
        match = re.match(r"\s+(\w+): [^=]+= .*?  # (.*)$", line)
        if match:
            help_[match[1]] = match[2]
    return help_


# ---------------------------------------------------------------- command-line flags from the fields
def _parse_json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    except RecursionError:
        raise argparse.ArgumentTypeError(f"not valid JSON (nested too deeply for the JSON reader): {text[:40]!r}...") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"alpha\": 0.3}}', got {text!r}")
    return value


def _parse_optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def argument_for(annotation, name: str = "") -> dict:
    """argparse keyword arguments for a config field's type."""
    import typing

    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation is int and name == "seed":
        return {"type": parse_seed, "metavar": "INT"}
    if annotation is dict:
        return {"type": _parse_json_object, "metavar": "JSON"}
    if typing.get_origin(annotation) is tuple:
        return {"type": lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
                "metavar": "A,B,..."}
    arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if arguments:  # Optional[X]
        return {"type": _parse_optional(arguments[0]), "metavar": arguments[0].__name__.upper()}
    return {"type": annotation, "metavar": annotation.__name__.upper()}


def add_config_arguments(parser, exclude=(), show_defaults: bool = True, defaults=None) -> None:
    """One ``--field-name`` flag per field not in ``exclude``, typed from its annotation, its
    comment as help (with the field's default when ``show_defaults``; ``defaults``: the command's
    own defaults shown instead where they set the field). Defaults are left out of
    the namespace (``SUPPRESS``), so only the flags given appear: the caller applies them on top
    of a preset."""
    import typing

    hints, helps = typing.get_type_hints(Config), field_help()
    for field in dataclasses.fields(Config):
        if field.name in exclude:
            continue
        help_ = helps.get(field.name, "")
        if show_defaults:
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            default = (defaults or {}).get(field.name, default)
            help_ = f"{help_} (default: {default!r})"
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=argparse.SUPPRESS,
                            help=help_, **argument_for(hints[field.name], field.name))
