"""The pieces of a run, built from a :class:`~medsegloss.experiment.config.Config`: the loss (read
once by the loss language), the checks that fail on a bad config before any work
(:func:`check_config`, :func:`check_settings`), the datasets and cross-validation folds, the model
with its seeded initial weights, the optimizer and the device. The trainer (:mod:`~medsegloss.
experiment.trainer`) assembles them into a run; a sweep (:mod:`~medsegloss.experiment.bench`) checks
every dataset × loss with them first."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medsegloss.experiment.config import Config
from medsegloss.experiment.inference import read_checkpoint
from medsegloss.experiment.reproducibility import seed_everything

def output_channels(config: Config, num_classes: int, multilabel: bool = False) -> int:
    """1 (sigmoid) for a binary dataset when ``binary_as_one_channel``, else ``num_classes``;
    a multi-label dataset (overlapping regions) has one sigmoid channel per region."""
    if multilabel:
        return num_classes
    return 1 if num_classes == 2 and config.binary_as_one_channel else num_classes


def loss_spec(config: Config):
    """``config.loss`` read by the loss language (:func:`medsegloss.losses.parse`: its terms, options
    and the term-weight schedule written after a ``|``, so a sweep can compare scheduled and
    unscheduled variants as two losses), with ``loss_schedule`` as its schedule when given: not both."""
    from medsegloss import losses

    return losses.parse(config.loss).with_schedule(config.loss_schedule)


def loss_names(config: Config) -> list[str]:
    """The registered loss names of ``config.loss``'s terms (for binary-only checks)."""
    return list(loss_spec(config).names)


def make_term_schedule(config: Config, loss: nn.Module):
    """The :class:`~medsegloss.losses.Schedule` of the loss's term weights that :func:`make_loss`
    built into ``loss`` (from ``config``, checked against its terms); None without one."""
    from medsegloss.losses import WeightedSum

    return loss.schedule if isinstance(loss, WeightedSum) else None


def with_deep_supervision(loss: nn.Module) -> nn.Module:
    """``loss`` over the UNet's deep-supervision outputs (nnU-Net's weights 1, 1/2, 1/4, ...,
    normalised; targets down-sampled by nearest neighbour); distance-map losses are refused."""
    from medsegloss.losses import deep_supervision

    return deep_supervision(loss)


def scheduled_loss(loss: nn.Module) -> nn.Module:
    """The loss whose term weights a schedule sets: the wrapped one under deep supervision."""
    from medsegloss.losses import DeepSupervisionLoss

    return loss.loss if isinstance(loss, DeepSupervisionLoss) else loss


def make_loss(config: Config, multilabel: bool = False, ignore_index: int | None = None) -> nn.Module:
    """The loss of ``config.loss`` (registry name or loss string, its schedule built in) with
    ``loss_options``; ``multilabel``: overlapping regions, each scored by the loss's binary
    (sigmoid) form; ``ignore_index``: the dataset's ignore label, given to every term (as the
    nnU-Net trainer masks it), so a term without ``ignore_index`` or with distance maps is refused.
    Options no term of the loss accepts fail here."""
    mode = {"multilabel": multilabel}
    if ignore_index is not None:
        check_ignore_label(config, ignore_index)
        mode["ignore_index"] = ignore_index
    try:
        return loss_spec(config).build(**mode, **{k: v for k, v in config.loss_options.items() if k not in mode})
    except TypeError as error:  # an option no term takes
        raise ValueError(str(error)) from None


def check_ignore_label(config: Config, ignore_index: int) -> None:
    """A dataset with an ignore label trains a loss whose every term skips it (``ignore_index``);
    distance maps cannot (the ignored voxels have no class to measure from)."""
    from medsegloss import losses

    given = config.loss_options.get("ignore_index", ignore_index)
    refused = [name for name in loss_names(config) if "ignore_index" not in losses.info(name).options
               or losses.info(name).needs_distance]
    if refused or given != ignore_index:
        raise ValueError(f"dataset {config.dataset_name or config.dataset!r} has an ignore label (value {ignore_index}), "
                         + (f"which loss term(s) {', '.join(refused)} cannot skip (no ignore_index, or distance maps)"
                            if refused else f"but loss_options set ignore_index={given!r}")
                         + "; pick losses that take ignore_index (ce, dice, dice_ce, focal, tversky, ...)")


def check_binary_only(config: Config, out_channels: int) -> None:
    """Fail when a binary-only loss meets a model with more than one output channel."""
    from medsegloss import losses

    for name in loss_names(config):
        if losses.info(name).binary_only and out_channels != 1:
            raise ValueError(f"loss {name!r} is defined for binary (one-channel) outputs only, but dataset "
                             f"{config.dataset!r} gives {out_channels} output channels")


def check_config(config: Config) -> nn.Module:
    """Fail before any work on an unknown dataset, loss or option, or a missing data root
    (:func:`check_settings`), and build the loss.

    Returns the loss it built, so a run builds its loss once.
    """
    check_settings(config)
    return make_loss(config)


def check_settings(config: Config) -> None:
    """Every check of :func:`check_config` without building the loss: the dataset (name, data
    root, options), the folds, the metrics, the init weights, and the loss string read by the loss
    language (names, options, schedule) against the dataset's output channels and deep supervision.
    A sweep checks each dataset × loss with it before any run builds its loss."""
    if config.folds is not None and config.fold is None:
        raise ValueError(f"folds={config.folds} needs fold (0..{config.folds - 1}): a training run tests one fold "
                         f"(--fold i); `medsegloss bench --folds {config.folds}` runs every fold")
    import inspect

    from medsegloss import data, losses, metrics
    from medsegloss.experiment.tensorboard import check_available

    check_available(config.log)  # --log tensorboard without the package: fail now, not at the first validation
    info = data.info(config.dataset)  # an unknown name fails here, naming the closest
    if config.data_root is not None and not Path(config.data_root).exists():
        raise FileNotFoundError(f"data root {config.data_root} of dataset {config.dataset!r} does not exist")
    if config.data_root is None and info.needs_root:
        raise ValueError(f"dataset {config.dataset!r} needs --data-root (the folder holding its files)")
    parameters = inspect.signature(data.loader(config.dataset)).parameters.values()
    accepted = {p.name for p in parameters if p.kind == p.KEYWORD_ONLY}
    unknown = sorted(set(config.dataset_options) - accepted)
    if unknown:
        raise ValueError(f"dataset {config.dataset!r} has no option(s) {', '.join(unknown)}; "
                         f"its options: {', '.join(sorted(accepted))}")
    check_dataset_option_values(config)
    metrics.check_names(config.metrics, "metrics")
    spec = loss_spec(config)  # a malformed string or schedule, an unknown loss or term fails here
    try:
        spec.check_options(config.loss_options)
    except TypeError as error:
        raise ValueError(str(error)) from None
    distance = [name for name in spec.names if losses.info(name).needs_distance]
    if config.deep_supervision and distance:
        raise ValueError(f"loss {config.loss!r} uses signed distance maps ({', '.join(distance)}), which cannot be "
                         "down-sampled exactly to the lower outputs' resolution; train it without deep supervision")
    class_names = data.class_names(config.dataset, **config.dataset_options)  # e.g. covid-ct's target
    if class_names is not None:  # None: known only once loaded (a folder dataset); prepare_run checks then
        check_binary_only(config, output_channels(config, len(class_names)))
    if config.init_weights is not None:
        check_init_weights_file(config.init_weights)


def check_dataset_option_values(config: Config) -> None:
    """Dataset options the config sets itself (``dims``, ``seed``, ``root``, the fractions) are
    refused, so the model, the split and the checkpoint agree with the data; ``size`` (a dataset's
    own side in a sweep, None: native) is an int >= 1 or None, and ``predict`` uses it too;
    ``on_error`` is ``raise`` or ``skip``. Checked before anything is written."""
    from medsegloss.data.base import ON_ERROR

    options = config.dataset_options
    own = sorted((set(config.replace(dataset_options={}).dataset_arguments()) | {"split_file"}) - {"size"})
    clash = [key for key in own if key in options]
    if clash:
        flags = {"root": "--data-root", "split_file": "the run's split.json"}
        named = [flags.get(key, "--" + key.replace("_", "-")) for key in clash]
        raise ValueError(f"dataset option(s) {', '.join(clash)} are set by the run's config ({', '.join(named)}): "
                         f"give them there, not in dataset_options")
    size = options.get("size", config.image_size)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"dataset option size must be an int >= 1 or null (native size), got {size!r}")
    if options.get("on_error", "raise") not in ON_ERROR:
        raise ValueError(f"dataset option on_error must be one of {', '.join(ON_ERROR)}, got {options['on_error']!r}")


def check_init_weights_file(path) -> None:
    """Fail naming ``path`` when the init_weights file is missing, unreadable, unsafe (read with
    ``weights_only=True``) or not a dict of tensors; :func:`load_init_weights` checks its keys
    and shapes against the model."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"init_weights file {path} does not exist")
    state = read_checkpoint(path, "cpu")
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"init_weights {path} is not a state_dict (a dict of tensors, as initial_state writes)")


def make_dataset(config: Config, split: str, split_file=None):
    """One part (``"train"``, ``"val"``, ``"test"``) of the config's dataset."""
    from medsegloss import data

    return data.get_dataset(config.dataset, split=split, **config.dataset_arguments(split_file))


def make_datasets(config: Config, split_path, write_split: bool = True, split_file=None) -> dict:
    """The train / val / test parts of one split: the run's ``split.json`` when it exists (a
    resumed run sees the same cases), else the config's fold (:func:`fold_split`) or the seed's
    split, saved there. Parts that cannot give a verdict are refused (``data.base.check_parts``)."""
    from medsegloss.data.base import check_parts

    split_path = Path(split_path)
    if not split_path.exists() and config.folds is not None:
        import tempfile

        from medsegloss.data.splits import save_split

        with tempfile.TemporaryDirectory() as folder:  # the fold's split, read by the loaders like a saved one
            fold_path = Path(folder) / "split.json"
            save_split(fold_split(config), fold_path)
            return make_datasets(config.replace(folds=None, fold=None), split_path, write_split, fold_path)
    existing = split_path if split_path.exists() else split_file
    parts = {name: make_dataset(config, name, existing) for name in ("train", "val", "test")}
    check_parts(parts)  # no empty part, some foreground to learn
    if existing is None and write_split:
        parts["train"].save_split(split_path)
    return parts


def fold_split(config: Config) -> dict:
    """The train / val / test parts of cross-validation fold ``config.fold`` of ``config.folds``
    (``data.splits.make_folds`` over the dataset's units, drawn from the seed: the same for every
    loss of a seed)."""
    from medsegloss.data.splits import PARTS, folds_of, read_folds_file

    every = make_dataset(config.replace(folds=None, fold=None), "all")
    if config.folds_file is not None:
        cases = [case for part in PARTS for case in every.split[part]]
        folds = read_folds_file(config.folds_file, cases, seed=config.seed, val_fraction=config.val_fraction,
                                units=every.split.get("units"))
        if len(folds) != config.folds:
            raise ValueError(f"folds file {config.folds_file} holds {len(folds)} folds, but folds={config.folds}")
        split = folds[config.fold]
    else:
        split = folds_of(every.split, config.folds, seed=config.seed, val_fraction=config.val_fraction)[config.fold]
    return {**split, "units": every.split.get("units", {}), "groups": every.split.get("groups", {})}


def make_model(config: Config, in_channels: int, out_channels: int) -> nn.Module:
    """The network of ``config.model`` (the built-in UNet by default) with fresh weights drawn from
    ``config.seed``: every loss of a seed starts from the same weights."""
    from medsegloss.models.zoo import build_model

    seed_everything(config.seed)
    model = build_model(config.model, in_channels, out_channels, dims=config.dims, base_width=config.base_width,
                        depth=config.depth, deep_supervision=config.deep_supervision)
    return model


def initial_state(config: Config) -> dict:
    """The fresh model's ``state_dict`` for ``config`` (its dataset, width and seed): save it and
    pass the file as ``init_weights`` to start every loss of a benchmark from the same weights."""
    from medsegloss.experiment.capacity import check_fits

    train = make_dataset(config, "train")
    out_channels = output_channels(config, train.num_classes, train.multilabel)
    check_fits(config, train, train[0]["image"].shape[0], out_channels, resolve_device(config))
    return make_model(config, train[0]["image"].shape[0], out_channels).state_dict()


def make_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    parameters, lr, decay = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=decay)


def resolve_device(config: Config, local_rank: int = 0) -> torch.device:
    if config.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} asked for, but torch.cuda.is_available() is False")
    if config.device == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(config.device)
