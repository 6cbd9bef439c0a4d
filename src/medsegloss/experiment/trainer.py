"""Training: a UNet, one loss, one dataset, reproducible and resumable.

``fit(config, out_dir)`` writes a run directory (``config.json``, ``split.json``,
``metrics.jsonl``, ``last.pt``, ``best.pt``, and ``metrics.json`` once finished), resumes an
unfinished one and returns the stored result of a finished one. Every write is atomic
(``medsegloss._io``), so Ctrl-C or a crash leaves a run that ``medsegloss train --resume RUN_DIR``
continues to the same weights and metrics an uninterrupted run reaches. Under ``torchrun``
(``WORLD_SIZE`` set) it trains with DistributedDataParallel.

The module reads top to bottom, built from the pieces of :mod:`~medsegloss.experiment.components`
(loss, checks, datasets and folds, model, optimizer, device):

1. the run: :class:`RunState` (the part that changes: step, best step), :class:`Run`
   (everything a run holds, built once by :func:`prepare_run`), checkpoints (save / resume; the
   files of the run directory, their checks and its lock live in :mod:`~medsegloss.experiment.rundir`);
2. the loop over a budget of optimizer steps: :func:`train_interval` (the steps up to the next
   validation), :func:`validate` (best.pt, the log line, last.pt), :func:`finish_run`
   (test the selected model, the verdict's run rules, metrics.json), :func:`fit`.

Beside it: :mod:`~medsegloss.experiment.train_cli` (the ``medsegloss train`` command),
:mod:`~medsegloss.experiment.evaluation` (per-case scoring), :mod:`~medsegloss.experiment.verdict`
(the run rules), :mod:`~medsegloss.experiment.distributed` (DDP plumbing, no-ops on one process),
:mod:`~medsegloss.experiment.reproducibility` (seeds, RNG states), :mod:`~medsegloss.experiment.cost`
(peak memory, step time), :mod:`~medsegloss.experiment.lr_schedule` (learning rates).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medsegloss import _io
from medsegloss.experiment.config import Config
from medsegloss.experiment.rundir import (PREVIOUS_CHECKPOINT, check_same_config, continuable, drop_unsaved_epochs,
                                          finished_result, read_metrics_log, read_run_json, run_lock,
                                          save_last_checkpoint)
from medsegloss.experiment.cost import peak_memory_mb, reset_peak_memory
from medsegloss.experiment.distributed import (barrier, broadcast_buffers, distributed_env, process_group,
                                               reduce_mean)
from medsegloss.experiment.evaluation import evaluate_model, mean_dice
from medsegloss.experiment.inference import CheckpointError, UnsafeCheckpointError, data_metadata, read_checkpoint
from medsegloss.experiment.components import (check_binary_only, check_config, make_datasets, make_loss, make_model,
                                              make_optimizer, make_term_schedule, output_channels, resolve_device,
                                              scheduled_loss, with_deep_supervision)
from medsegloss.experiment.reproducibility import rng_states, set_deterministic, set_rng_states

LOG_EVERY = 10  # steps between progress-bar updates (and the non-finite-loss check's sync)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


# ================================================================ 1. the run, its state and checkpoints
@dataclass
class RunState:
    """What changes while a run trains; saved in ``last.pt`` (as top-level keys) and restored on
    resume. ``best_dice`` is ``-inf`` until a validation has a defined Dice. ``epoch`` and
    ``best_epoch`` are ``step / steps_per_epoch`` (passes over the training split; an int at an
    epoch boundary), kept for epoch-based runs and readers of older runs."""

    epoch: float = 0  # passes over the training split at `step`
    step: int = 0  # optimizer steps made
    best_epoch: float = 0  # epoch of best.pt (0: none yet)
    best_dice: float = -math.inf  # its mean validation Dice
    best_step: int = 0  # step of best.pt (0: none yet)

    def to_checkpoint(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> RunState:
        """The state in a ``last.pt`` (its other keys are ignored; ``best_step``, absent from
        checkpoints of older versions, defaults to 0)."""
        optional = {"best_step"}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in checkpoint and f.name not in optional]
        if missing:
            raise ValueError(f"checkpoint lacks the training state {', '.join(missing)} (is it a best.pt?)")
        return cls(**{f.name: checkpoint[f.name] for f in dataclasses.fields(cls) if f.name in checkpoint})


@dataclass
class Run:
    """Everything one training run holds, built once by :func:`prepare_run`. Only ``state``
    changes (and the weights, optimizer and RNG states inside the torch objects)."""

    config: Config
    out: Path
    device: torch.device
    rank: int
    world_size: int
    quiet: bool
    amp_dtype: torch.dtype | None  # autocast dtype; None: float32
    channels_last: bool  # channels-last memory format (2-D only)
    parts: dict  # "train" / "val" / "test" datasets
    num_classes: int  # the dataset's classes
    class_names: list[str]
    loss_fn: nn.Module
    term_schedule: object  # the loss's term-weight Schedule (losses.Schedule), or None
    model_args: dict  # UNet(**model_args) rebuilds the model (saved in checkpoints)
    model: nn.Module
    train_model: nn.Module  # the model, wrapped in DDP when world_size > 1
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: object  # the PatchSampler: training sample i as a function of (seed, i)
    train_items: int  # items of the training split
    total_steps: int  # the budget in optimizer steps
    val_every: int  # steps between validations
    steps_per_epoch: int  # steps that read as many samples as the training split holds
    state: RunState = field(default_factory=RunState)
    history: list = field(default_factory=list)  # (step, validation mean Dice) of every validation so far

    @property
    def writer(self) -> bool:
        """Only rank 0 writes the run directory."""
        return self.rank == 0

    def log(self, message: str) -> None:
        if self.writer and not self.quiet:
            print(message, flush=True)

    def epoch_at(self, step: int) -> float:
        """Passes over the training split after ``step`` steps (an int at an epoch boundary)."""
        return epoch_at(step, self.steps_per_epoch)


def epoch_at(step: int, steps_per_epoch: int) -> float:
    """``step / steps_per_epoch``: an int at an epoch boundary, else rounded to 3 decimals."""
    return step // steps_per_epoch if step % steps_per_epoch == 0 else round(step / steps_per_epoch, 3)


def prepare_run(config: Config, out: Path, loss_fn: nn.Module, device: torch.device, rank: int = 0,
                world_size: int = 1, quiet: bool = False) -> Run:
    """Datasets, model, optimizer, scaler and the training sample stream of a run of ``config``
    (``loss_fn``: from :func:`check_config`).

    Training samples come from a :class:`~medsegloss.data.sampling.PatchSampler`: sample ``i``
    is a function of ``(seed, i)`` (patch, foreground oversampling, augmentation), so every loss
    of a seed sees the same samples and a resumed or continued run reads on where it stopped.
    """
    from medsegloss.data.sampling import PatchSampler
    from medsegloss.experiment.capacity import check_fits

    parts = make_datasets(config, out / "split.json", write_split=False)  # written by write_run_files
    train_set = parts["train"]
    multilabel = train_set.multilabel  # regions: one sigmoid each, the loss per region
    ignore = None if multilabel else train_set.ignore_index  # nnU-Net's ignore label: no loss counts it
    if multilabel:
        loss_fn = make_loss(config, multilabel=True)
        if train_set.ignore_index is not None and rank == 0:  # multi-label losses take no voxel mask
            print(f"medsegloss train: warning: dataset {config.dataset_name or config.dataset!r} has regions and an "
                  f"ignore label (value {train_set.ignore_index}): its voxels train as background of every region "
                  f"(validation and test do not score them)", file=sys.stderr, flush=True)
    elif ignore is not None:
        loss_fn = make_loss(config, ignore_index=ignore)
    out_channels = output_channels(config, train_set.num_classes, multilabel)
    if not multilabel:  # every region is a binary problem: binary-only losses apply to each
        check_binary_only(config, out_channels)
    note = check_fits(config, train_set, int(train_set[0]["image"].shape[0]), out_channels, device)  # patch, memory
    if note and rank == 0 and not quiet:
        print(f"medsegloss train: {note}", file=sys.stderr, flush=True)
    loss_fn = loss_fn.to(device)
    distance_classes = None
    if getattr(loss_fn, "needs_distance", False):
        if config.patch is None:  # whole items: signed distance maps computed once per item, cached
            from medsegloss.data import WithDistanceMaps

            train_set = WithDistanceMaps(train_set, out_channels)
        else:  # a crop changes distances near its border: maps of each patch
            distance_classes = out_channels
    sampler = PatchSampler(train_set, config.patch, foreground_fraction=config.foreground_fraction,
                           augment=config.augment, seed=config.seed, distance_classes=distance_classes,
                           ignore_index=ignore)
    model_args = {"in_channels": int(train_set[0]["image"].shape[0]), "num_classes": out_channels,
                  "base": config.base_width, "depth": config.depth, "dims": config.dims}
    if config.deep_supervision:  # (only then: checkpoints of plain runs keep their model_args)
        model_args["deep_supervision"] = True
    if config.model != "unet":  # (only then: checkpoints of UNet runs keep their model_args)
        model_args["model"] = config.model
    model = make_model(config, model_args["in_channels"], out_channels)
    term_schedule = make_term_schedule(config, loss_fn)  # on the loss's own terms, before any wrapping
    if config.deep_supervision:
        loss_fn = with_deep_supervision(loss_fn)
    if config.init_weights is not None:
        load_init_weights(config.init_weights, model)
    channels_last = config.channels_last and config.dims == 2
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if config.amp else None
    train_items = len(train_set)
    train_model = model
    if world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return Run(config=config, out=out, device=device, rank=rank, world_size=world_size, quiet=quiet,
               amp_dtype=amp_dtype, channels_last=channels_last, parts=parts, num_classes=train_set.num_classes,
               class_names=list(parts["train"].class_names), loss_fn=loss_fn,
               term_schedule=term_schedule, model_args=model_args, model=model,
               train_model=train_model, optimizer=make_optimizer(config, model),
               scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
               sampler=sampler, train_items=train_items, total_steps=config.total_steps(train_items, world_size),
               val_every=config.validation_interval(train_items, world_size),
               steps_per_epoch=config.steps_per_epoch(train_items, world_size))


def checkpoint_content(run: Run, full: bool) -> dict:
    """``best.pt`` content of ``run`` (weights and what inference needs, at the state's epoch and
    step); ``full`` adds what ``last.pt`` needs to resume: optimizer, scaler, RNG states and the
    whole :class:`RunState`."""
    checkpoint = {"model": run.model.state_dict(), "model_args": run.model_args, "config": run.config.to_dict(),
                  "num_classes": run.num_classes, "class_names": run.class_names, "epoch": run.state.epoch,
                  "step": run.state.step}
    metadata = data_metadata(run.parts["train"])  # channels, CT statistics, regions: what predict needs
    if metadata is not None:
        checkpoint["data"] = metadata
    if full:
        checkpoint.update(optimizer=run.optimizer.state_dict(), scaler=run.scaler.state_dict(),
                          rng=rng_states(), **run.state.to_checkpoint())
    return checkpoint


TRAINING_KEYS = ("model", "optimizer", "scaler", "rng")  # what last.pt holds besides the RunState


def load_training_state(path, run: Run) -> RunState:
    """Load the weights, optimizer, scaler and every RNG state of the ``last.pt`` at ``path``
    into ``run``'s objects; returns the checkpoint's :class:`RunState` (the caller adopts it).

    The file is read with ``weights_only=True`` (:func:`read_checkpoint`); one lacking a part is
    a :class:`CheckpointError` naming it, raised before anything is loaded."""
    checkpoint = read_checkpoint(path, run.device)
    missing = [key for key in TRAINING_KEYS + tuple(f.name for f in dataclasses.fields(RunState))
               if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: not the last.pt of a run "
                              f"(is it a best.pt?)")
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_states(checkpoint["rng"])
    return RunState.from_checkpoint(checkpoint)


def resume_state(run: Run) -> RunState | None:
    """The :class:`RunState` of the run's checkpoint, loaded into ``run``; None for a new run.

    ``last.pt`` first; when it is truncated or corrupt (not when it is refused as unsafe), the
    previous epoch's ``last.prev.pt``, saying so on stderr; rank 0 moves the corrupt file
    aside to ``last.pt.corrupt`` so the next rotation cannot replace the good copy with it."""
    last, previous = run.out / "last.pt", run.out / PREVIOUS_CHECKPOINT
    if not last.exists():
        return load_training_state(previous, run) if previous.exists() else None
    try:
        return load_training_state(last, run)
    except UnsafeCheckpointError:
        raise
    except CheckpointError as error:
        if not previous.exists():
            raise
        state = load_training_state(previous, run)
        if run.writer:
            os.replace(last, last.with_name(last.name + ".corrupt"))
            print(f"medsegloss train: {error}; resuming from {previous} (epoch {state.epoch}) instead "
                  f"(the corrupt file is kept as {last.name}.corrupt)", file=sys.stderr, flush=True)
        return state


def load_init_weights(path, model: nn.Module) -> None:
    """Load the ``init_weights`` state dict at ``path`` into ``model``; fails naming the file
    when it is not a state dict of tensors (read with ``weights_only=True``) or when its keys or
    shapes differ from the model's."""
    state = read_checkpoint(path, "cpu")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"init_weights {path} is not a state_dict (a dict of tensors, as initial_state writes)")
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [f"{key} {tuple(state[key].shape)} there, {tuple(value.shape)} in the model"
              for key, value in expected.items() if key in state and state[key].shape != value.shape]
    if missing or unexpected or shapes:
        details = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "") if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else "") if unexpected else "",
            "; ".join(shapes[:3])) if part)
        raise ValueError(f"init_weights {path} does not fit the model of this config ({details}); it must "
                         f"come from initial_state of the same dataset, base_width, depth and dims")
    model.load_state_dict(state)


# ================================================================ 2. the loop
def term_tensors(loss_fn: nn.Module, loss: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """Each term's value of this step, still on the device (no sync): a WeightedSum keeps them."""
    from medsegloss.losses import WeightedSum

    if isinstance(loss_fn, WeightedSum):
        return {key: value.float().mean() for key, value in loss_fn.last_tensors.items()}
    return {name: loss.detach()}


def train_step(model: nn.Module, batch: dict, loss_fn: nn.Module, optimizer, scaler, device: torch.device,
               amp_dtype, channels_last: bool) -> torch.Tensor:
    """One optimizer step on ``batch``; returns the loss, detached and still on the device."""
    image = batch["image"].to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    target = batch["label"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(image)
    # losses in float32, whatever the network ran in (a list: the deep-supervision outputs)
    logits = [output.float() for output in logits] if isinstance(logits, (list, tuple)) else logits.float()
    if getattr(loss_fn, "needs_distance", False):
        loss = loss_fn(logits, target, dist=batch["dist"].to(device, non_blocking=True))
    else:
        loss = loss_fn(logits, target)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def check_finite(first_bad: torch.Tensor, saved_step: int, saved: bool = True) -> None:
    """Raise :class:`NonFiniteLossError` when ``first_bad`` holds the step of a non-finite loss;
    ``saved``: whether last.pt (of ``saved_step``) exists, so the message names only what does."""
    bad = int(first_bad)
    if bad >= 0:
        kept = (f"kept its last good checkpoint (last.pt of step {saved_step})" if saved
                else "no checkpoint was saved before it")
        raise NonFiniteLossError(
            f"the training loss is not finite (NaN or inf) at step {bad}; the run stopped ({kept}). Lower the "
            "learning rate or check the loss and its options.")


def make_loader(run: Run):
    """The DataLoader of the steps ``run.state.step ... total_steps - 1``: step ``s`` reads the
    samples :func:`~medsegloss.data.sampling.sample_indices` ``(s, batch_size, rank, world_size)``."""
    from torch.utils.data import DataLoader

    from medsegloss.data.sampling import StepBatchSampler

    batches = StepBatchSampler(run.config.batch_size, run.total_steps, start_step=run.state.step, rank=run.rank,
                               world_size=run.world_size)
    workers = min(run.config.workers, usable_cores())  # 100000 processes would hang; the samples do not change
    if workers < run.config.workers:
        run.log(f"workers: {run.config.workers} asked, {workers} used (the usable CPU cores)")
    return DataLoader(run.sampler, batch_sampler=batches, num_workers=workers, pin_memory=run.device.type == "cuda")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the platform tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def train_interval(run: Run, batches, stop: int, progress=None) -> dict:
    """Train steps ``run.state.step ... stop - 1`` on the next batches of the iterator
    ``batches``, each with the schedule's learning rate (set before the step); advances
    ``run.state.step`` and returns the interval's mean loss and terms (still on the device),
    steps, images, seconds and ``step_seconds``: the mean step time of each window of
    ``LOG_EVERY`` steps (their median is the run's cost, robust to a busy machine).

    Sums stay on the device; the host syncs every ``LOG_EVERY`` steps (progress and the check
    that the loss is finite, which names the first bad step). Raises :class:`NonFiniteLossError`.
    """
    from medsegloss.experiment.lr_schedule import apply_learning_rate

    config, model = run.config, run.train_model
    model.train()
    total, terms = torch.zeros((), device=run.device), {}
    first_bad = torch.full((), -1, dtype=torch.long, device=run.device)
    saved_step, count, images, step_seconds, window = run.state.step, 0, 0, [], 0
    saved = (run.out / "last.pt").exists()  # the checkpoint of saved_step, if one was written
    started = window_started = time.perf_counter()
    for step in range(run.state.step, stop):
        batch = next(batches)
        apply_learning_rate(run.optimizer, step, run.total_steps, config.schedule, config.warmup_steps)
        if run.term_schedule is not None:
            run.term_schedule.apply(scheduled_loss(run.loss_fn), step, run.total_steps)
        value = train_step(model, batch, run.loss_fn, run.optimizer, run.scaler, run.device, run.amp_dtype,
                           run.channels_last)
        first_bad = torch.where(torch.isfinite(value) | (first_bad >= 0), first_bad, step + 1)
        total += value
        for key, term in term_tensors(run.loss_fn, value, config.loss.strip()).items():
            terms[key] = terms.get(key, 0.0) + term
        count, images, window = count + 1, images + len(batch["image"]), window + 1
        if (step + 1) % LOG_EVERY == 0 or step + 1 == stop:
            check_finite(first_bad, saved_step, saved)
            now = time.perf_counter()
            step_seconds.append((now - window_started) / window)
            window_started, window = now, 0
            if progress is not None:
                progress.set_postfix(loss=f"{float(total) / count:.4f}", refresh=False)
        if progress is not None:
            progress.update(1)
    check_finite(first_bad, saved_step, saved)
    if count == 0:
        raise ValueError("no training steps between validations")
    run.state.step = stop
    run.state.epoch = run.epoch_at(stop)
    return {"train_loss": total / count, "terms": {key: value / count for key, value in terms.items()},
            "steps": count, "images": images, "train_seconds": time.perf_counter() - started,
            "step_seconds": step_seconds}


def validate(run: Run, stats: dict, started: float) -> None:
    """Validate at ``run.state.step``, then write best.pt (if better), the log line and last.pt."""
    from medsegloss.metrics import summarize

    config, step = run.config, run.state.step
    train_loss, *terms = reduce_mean([stats["train_loss"], *stats["terms"].values()], run.world_size)
    broadcast_buffers(run.model, run.world_size)
    rows = evaluate_model(run.model, run.parts["val"], metrics=config.metrics, batch_size=config.batch_size,
                          amp_dtype=run.amp_dtype, rank=run.rank, world_size=run.world_size, patch_size=config.patch)
    if not run.writer:
        return
    dice = mean_dice(rows)
    run.history.append((step, dice))
    if run.state.best_step == 0 or not rows or (not math.isnan(dice) and dice > run.state.best_dice):
        run.state.best_epoch, run.state.best_step = run.state.epoch, step
        run.state.best_dice = dice if not math.isnan(dice) else -math.inf
        _io.save_torch(run.out / "best.pt", checkpoint_content(run, full=False))
    seconds = time.perf_counter() - started
    record = {"epoch": run.state.epoch, "step": step, "train_loss": train_loss,
              "terms": dict(zip(stats["terms"], terms)), "val": summarize(rows) if rows else [],
              "val_dice": dice, "lr": run.optimizer.param_groups[0]["lr"], "steps": stats["steps"],
              "images": stats["images"] * run.world_size, "seconds": seconds,
              "train_seconds": stats["train_seconds"], "images_per_second": stats["images"] / stats["train_seconds"],
              "step_seconds": stats["step_seconds"]}
    if run.term_schedule is not None:  # the scheduled term weights of the interval's last step
        record["term_weights"] = dict(scheduled_loss(run.loss_fn).weights)
    _io.append_jsonl(run.out / "metrics.jsonl", record)
    from medsegloss.experiment.tensorboard import log_validation

    log_validation(run, record)  # --log tensorboard: the same record as event files in RUN/tb/
    save_last_checkpoint(run.out, checkpoint_content(run, full=True))
    term_text = ", ".join(f"{key} {value:.4f}" for key, value in record["terms"].items())
    run.log(f"step {step}/{run.total_steps} (epoch {run.state.epoch:g})  loss {train_loss:.4f} ({term_text})  "
            f"val dice {dice:.4f}  lr {record['lr']:.3g}  {seconds:.1f} s ({record['images_per_second']:.1f} img/s)")


def patience_steps(run: Run) -> int:
    """Early-stopping patience: ``config.patience``, else a quarter of the budget."""
    return run.config.patience or max(1, run.total_steps // 4)


def stop_early(run: Run) -> bool:
    """``--until-converged``: no validation improved the best in the last ``patience`` steps
    (decided on rank 0, shared with every rank)."""
    from medsegloss.experiment.verdict import should_stop_early

    if not run.config.until_converged:
        return False
    decision = [should_stop_early(run.history, patience_steps(run)) if run.writer else False]
    if run.world_size > 1:
        torch.distributed.broadcast_object_list(decision, src=0)
    return bool(decision[0])


def train_steps(run: Run) -> bool:
    """Train from ``run.state.step`` to the budget, validating every ``val_every`` steps (and at
    the end); returns whether ``--until-converged`` stopped it early."""
    from tqdm import tqdm

    if run.state.step >= run.total_steps or stop_early(run):
        return run.state.step < run.total_steps
    batches = iter(make_loader(run))
    with tqdm(total=run.total_steps, initial=run.state.step, unit="step", desc="train", leave=False,
              disable=run.quiet or not run.writer, dynamic_ncols=True) as progress:
        while run.state.step < run.total_steps:
            started = time.perf_counter()
            stop = min((run.state.step // run.val_every + 1) * run.val_every, run.total_steps)
            stats = train_interval(run, batches, stop, progress)
            validate(run, stats, started)
            if stop_early(run):
                run.log(f"early stop at step {run.state.step}: no improvement in {patience_steps(run)} steps")
                return run.state.step < run.total_steps
    return False


def finish_run(run: Run, stopped_early: bool = False) -> dict:
    """Test best.pt on the test split, diagnose the run (convergence of the validation history,
    collapse of best.pt's validation predictions) and write ``metrics.json`` (the run is then
    finished); returns it on rank 0, ``{}`` on the other ranks."""
    from medsegloss.experiment.cost import median_seconds_per_step
    from medsegloss.experiment.verdict import diagnose
    from medsegloss.metrics import summarize

    barrier(run.world_size)  # best.pt is complete on disk before every rank reads it
    best = read_checkpoint(run.out / "best.pt", run.device)
    if run.config.select == "best":  # else the final weights, already in the model (as nnU-Net)
        run.model.load_state_dict(best["model"])
    evaluate = dict(metrics=run.config.metrics, batch_size=run.config.batch_size, amp_dtype=run.amp_dtype,
                    rank=run.rank, world_size=run.world_size, patch_size=run.config.patch)
    _, per_case = evaluate_model(run.model, run.parts["val"], volumes=True, **{**evaluate, "metrics": ("dice",)})
    test_rows = evaluate_model(run.model, run.parts["test"], **evaluate)
    if not run.writer:
        return {}
    lines = read_metrics_log(run.out / "metrics.jsonl")
    steps = run.state.step
    train_seconds = sum(line["train_seconds"] for line in lines)
    step_times = [t for line in lines for t in line.get("step_seconds", [])]
    best_line = next(line for line in lines if line["step"] == best["step"])
    diagnostics = diagnose([(line["step"], line["val_dice"]) for line in lines], steps, per_case)
    diagnostics["stopped_early"] = stopped_early
    config = run.config
    budget = {"steps": steps, "planned_steps": run.total_steps, "val_every": run.val_every,
              "images_seen": steps * config.batch_size * run.world_size, "batch_size": config.batch_size,
              "world_size": run.world_size, "train_items": run.train_items, "epochs": run.epoch_at(steps),
              "schedule": config.schedule, "warmup_steps": config.warmup_steps, "lr": config.lr,
              "patch": config.patch, "foreground_fraction": config.foreground_fraction, "augment": config.augment,
              "until_converged": config.until_converged}
    tested_step = best["step"] if config.select == "best" else steps
    result = {"config": config.to_dict(), "epochs": run.epoch_at(steps), "steps": steps,
              "best_epoch": best["epoch"], "best_step": best["step"], "budget": budget,
              "selection": {"select": config.select, "step": tested_step},
              "val": (best_line if config.select == "best" else lines[-1])["val"], "test_rows": test_rows, "test": summarize(test_rows) if test_rows else [],
              "diagnostics": diagnostics,
              "cost": {"seconds_per_step": median_seconds_per_step(step_times) if step_times else train_seconds / steps,
                       "peak_memory_mb": peak_memory_mb(run.device), "train_seconds": train_seconds}}
    _io.write_json(run.out / "metrics.json", result)
    run.log(f"finished {run.out}: tested the {config.select} model (step {tested_step}; best validation at step "
            f"{best['step']}, val dice {best_line['val_dice']:.4f}), test dice {mean_dice(test_rows):.4f}, "
            f"{diagnostics['status']}")
    return result


def write_run_files(run: Run) -> None:
    """Rank 0 writes ``config.json`` and (for a new run) ``split.json``: only once the run is
    prepared, so a config that fails (e.g. init weights of another model) leaves nothing that
    would block a corrected retry."""
    if run.writer:
        _io.write_json(run.out / "config.json", run.config.to_dict())
        if not (run.out / "split.json").exists():
            run.parts["train"].save_split(run.out / "split.json")


def fit(config: Config, out_dir=None, *, quiet: bool = False) -> dict:
    """Train ``config`` into ``out_dir`` (default ``config.run_dir``) and return ``metrics.json``.

    A finished run (a ``metrics.json`` of this config) returns its stored result; an unfinished
    one (``last.pt`` exists) resumes. A run of the same config with fewer ``steps`` and a constant
    learning rate trains on to ``config.steps`` (:func:`continuable`); with a schedule tied to the
    budget it must be rerun (another ``out``). One process at a time trains in a run directory
    (its ``.lock``, :func:`run_lock`). Under torchrun every rank calls ``fit``; rank 0 writes.
    """
    out = Path(out_dir if out_dir is not None else config.run_dir)
    continued = continuable(out, config)
    if not continued:
        check_same_config(out, config)
        result = finished_result(out, config)
        if result is not None:
            return result
    loss_fn = check_config(config)
    rank, world_size, local_rank = distributed_env()
    device = resolve_device(config, local_rank)
    reset_peak_memory(device)  # this run's own peak, also after earlier runs in this process
    deterministic_before, threads_before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with process_group(device, world_size), run_lock(out, enabled=rank == 0):
        try:
            if not continued:  # again, now that no other process can write here
                check_same_config(out, config)
                result = finished_result(out, config)
                if result is not None:
                    return result
            set_deterministic(config.deterministic, device)
            if config.threads:
                torch.set_num_threads(config.threads)
            if rank == 0 and continued and (out / "metrics.json").exists():
                os.remove(out / "metrics.json")  # first: the run is unfinished again
            run = prepare_run(config, out, loss_fn, device, rank, world_size, quiet)
            write_run_files(run)
            barrier(world_size)
            state = resume_state(run)
            if state is not None:
                run.state = state
                run.log(f"{'continued' if continued else 'resumed'} {out} after step {run.state.step} "
                        f"of {run.total_steps}")
            if run.writer:
                drop_unsaved_epochs(out, run.state.step)
                if (out / "metrics.jsonl").exists():
                    run.history = [(line["step"], line["val_dice"]) for line in read_metrics_log(out / "metrics.jsonl")]
            stopped_early = train_steps(run)
            result = finish_run(run, stopped_early)
            barrier(world_size)
            return result or read_run_json(out / "metrics.json")
        finally:
            torch.use_deterministic_algorithms(deterministic_before)
            torch.set_num_threads(threads_before)
