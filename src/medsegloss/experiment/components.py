"""The pieces of a training run, each built from a :class:`Config`: loss, datasets, model,
optimizer, device; and :func:`check_config`, which fails on a bad config before any work."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from medsegloss.experiment.checkpoint import seed_everything
from medsegloss.experiment.config import Config


def output_channels(config: Config, num_classes: int) -> int:
    """1 (sigmoid) for a binary dataset when ``binary_as_one_channel``, else ``num_classes``."""
    return 1 if num_classes == 2 and config.binary_as_one_channel else num_classes


def make_loss(config: Config) -> nn.Module:
    """The loss of ``config.loss`` (registry name or ``build()`` string) with ``loss_options``.

    Options no term of the loss accepts fail here (``build`` alone would drop them silently).
    """
    from medsegloss import losses

    try:
        if config.loss.strip() in losses.available():
            return losses.get(config.loss.strip(), **config.loss_options)
        loss = losses.build(config.loss, **config.loss_options)
    except TypeError as error:  # unknown option of a single loss
        raise ValueError(str(error)) from None
    accepted = {option for name in loss_names(config) for option in losses.info(name).options}
    unknown = sorted(set(config.loss_options) - accepted)
    if unknown:
        raise ValueError(f"no term of loss {config.loss!r} takes option(s) {', '.join(unknown)}; "
                         f"options of its terms: {', '.join(sorted(accepted))}")
    return loss


def loss_names(config: Config) -> list[str]:
    """The registered loss names in ``config.loss`` (for binary-only checks)."""
    from medsegloss import losses

    return [name for name in re.findall(r"[A-Za-z_]\w*", config.loss) if name in losses.available()]


def check_config(config: Config) -> None:
    """Fail before any work on an unknown dataset, loss or option, or a missing data root."""
    import inspect

    from medsegloss import data

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
    make_loss(config)
    class_names = data.class_names(config.dataset, **config.dataset_options)  # e.g. covid-ct's target
    if class_names is not None:  # None: known only once loaded (a folder dataset); fit checks then
        check_binary_only(config, output_channels(config, len(class_names)))
    if config.init_weights is not None and not Path(config.init_weights).is_file():
        raise FileNotFoundError(f"init_weights file {config.init_weights} does not exist")


def make_dataset(config: Config, split: str, split_file=None):
    """One part (``"train"``, ``"val"``, ``"test"``) of the config's dataset."""
    from medsegloss import data

    options = dict(size=config.image_size, seed=config.seed, dims=config.dims,
                   val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    options.update(config.dataset_options)
    if split_file is not None:
        options["split_file"] = str(split_file)
    return data.get_dataset(config.dataset, root=config.data_root, split=split, **options)


def make_datasets(config: Config, split_path, write_split: bool = True) -> dict:
    """The train / val / test parts of one split: the run's ``split.json`` when it exists (a
    resumed run sees the same cases), else the seed's split, saved there."""
    split_path = Path(split_path)
    existing = split_path if split_path.exists() else None
    train = make_dataset(config, "train", existing)
    if existing is None and write_split:
        train.save_split(split_path)
    parts = {name: make_dataset(config, name, existing) for name in ("val", "test")}
    return {"train": train, **parts}


def make_model(config: Config, in_channels: int, out_channels: int) -> nn.Module:
    """A UNet with fresh weights drawn from ``config.seed``."""
    from medsegloss.models import UNet

    seed_everything(config.seed)
    return UNet(in_channels, out_channels, base=config.base_width, depth=config.depth, dims=config.dims)


def initial_state(config: Config) -> dict:
    """The fresh model's ``state_dict`` for ``config`` (its dataset, width and seed): save it and
    pass the file as ``init_weights`` to start every loss of a benchmark from the same weights."""
    train = make_dataset(config, "train")
    model = make_model(config, train[0]["image"].shape[0], output_channels(config, train.num_classes))
    return model.state_dict()


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


def check_binary_only(config: Config, out_channels: int) -> None:
    from medsegloss import losses

    for name in loss_names(config):
        if losses.info(name).binary_only and out_channels != 1:
            raise ValueError(f"loss {name!r} is defined for binary (one-channel) outputs only, but dataset "
                             f"{config.dataset!r} gives {out_channels} output channels")
