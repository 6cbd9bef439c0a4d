"""Training: a UNet, one loss, one dataset, reproducible and resumable.

Plain functions: :func:`train_one_epoch`, :func:`evaluate`, :func:`fit`. ``fit(config, out_dir)``
writes a run directory (``config.json``, ``split.json``, ``metrics.jsonl``, ``last.pt``,
``best.pt``, and ``metrics.json`` once finished), resumes an unfinished one and returns the
stored result of a finished one. Every write is atomic, so Ctrl-C or a crash leaves a run that
``medsegloss train --resume RUN_DIR`` continues to the same weights and metrics an uninterrupted
run reaches. Under ``torchrun`` (``WORLD_SIZE`` set) it trains with DistributedDataParallel.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

from medsegloss import _io
from medsegloss.experiment import checkpoint, distributed
from medsegloss.experiment.components import (check_binary_only, check_config, initial_state,
                                              make_dataset, make_datasets, make_loss, make_model, make_optimizer,
                                              output_channels, resolve_device)
from medsegloss.experiment.config import PRESETS, Config, add_config_arguments
from medsegloss.experiment.evaluation import evaluate, mean_dice
from medsegloss.experiment.memory import peak_memory_mb, reset_peak_memory
from medsegloss.experiment.predict import labels_from_logits, load_checkpoint, predict_logits

__all__ = ["fit", "train_one_epoch", "evaluate", "load_checkpoint", "initial_state", "main", "check_config",
           "make_loss", "make_dataset", "make_datasets", "make_model", "output_channels", "mean_dice",
           "labels_from_logits", "predict_logits", "NonFiniteLossError"]

LOG_EVERY = 10  # steps between progress-bar updates (and the non-finite-loss check's sync)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


# ---------------------------------------------------------------- one epoch of training
def _term_tensors(loss_fn: nn.Module, loss: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """Each term's value of this step, still on the device (no sync): a WeightedSum keeps them."""
    from medsegloss.losses import WeightedSum

    if isinstance(loss_fn, WeightedSum):
        return {key: value.float().mean() for key, value in loss_fn.last_tensors.items()}
    return {name: loss.detach()}


def _train_step(model: nn.Module, batch: dict, loss_fn: nn.Module, optimizer, scaler, device: torch.device,
                amp_dtype, channels_last: bool) -> torch.Tensor:
    """One optimizer step on ``batch``; returns the loss, detached and still on the device."""
    image = batch["image"].to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    target = batch["label"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(image)
    logits = logits.float()  # losses in float32, whatever the network ran in
    if getattr(loss_fn, "needs_distance", False):
        loss = loss_fn(logits, target, dist=batch["dist"].to(device, non_blocking=True))
    else:
        loss = loss_fn(logits, target)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train_one_epoch(model: nn.Module, loader, loss_fn: nn.Module, optimizer, scaler, *, device: torch.device,
                    epoch: int, step: int, amp_dtype=None, channels_last: bool = False, progress=None,
                    loss_name: str = "loss") -> dict:
    """One pass over ``loader``; returns the epoch's mean loss and terms, steps and seconds.

    Sums stay on the device; the host syncs every ``LOG_EVERY`` steps (progress and the check
    that the loss is finite, which names the first bad step). Raises :class:`NonFiniteLossError`.
    """
    model.train()
    total, terms = torch.zeros((), device=device), {}
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    batches = images = 0
    started = time.perf_counter()
    for index, batch in enumerate(loader):
        step += 1
        value = _train_step(model, batch, loss_fn, optimizer, scaler, device, amp_dtype, channels_last)
        first_bad = torch.where(torch.isfinite(value) | (first_bad >= 0), first_bad, step)
        total += value
        for key, term in _term_tensors(loss_fn, value, loss_name).items():
            terms[key] = terms.get(key, 0.0) + term
        batches, images = batches + 1, images + len(batch["image"])
        if (index + 1) % LOG_EVERY == 0 or index + 1 == len(loader):
            _check_finite(first_bad, epoch, step)
            if progress is not None:
                progress.set_postfix(loss=f"{float(total) / batches:.4f}", refresh=False)
        if progress is not None:
            progress.update(len(batch["image"]))
    _check_finite(first_bad, epoch, step)
    if batches == 0:
        raise ValueError("the training split has no items: nothing to train on")
    return {"train_loss": total / batches, "terms": {key: value / batches for key, value in terms.items()},
            "steps": batches, "images": images, "step": step, "train_seconds": time.perf_counter() - started}


def _check_finite(first_bad: torch.Tensor, epoch: int, step: int) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise NonFiniteLossError(
            f"the training loss is not finite (NaN or inf) at epoch {epoch}, step {bad}; the run "
            "stopped and kept its last good checkpoint (last.pt of the previous epoch). Lower the "
            "learning rate or check the loss and its options.")



# ---------------------------------------------------------------- the run
class _Run:
    """Everything one training run holds, so the functions below take one argument."""

    def __init__(self, config: Config, out: Path, device: torch.device, rank: int, world_size: int, quiet: bool):
        self.config, self.out, self.device = config, out, device
        self.rank, self.world_size, self.quiet = rank, world_size, quiet
        self.writer = rank == 0  # only rank 0 writes the run directory
        self.amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if config.amp else None
        self.state = {"epoch": 0, "step": 0, "best_epoch": 0, "best_dice": -math.inf}

    def log(self, message: str) -> None:
        if self.writer and not self.quiet:
            print(message, flush=True)


def _prepare(run: _Run) -> None:
    """Datasets, loss, model, optimizer, scaler and the seeded train loader of ``run``."""
    from torch.utils.data import DataLoader, DistributedSampler

    config = run.config
    run.parts = make_datasets(config, run.out / "split.json", write_split=run.writer)
    train_set = run.parts["train"]
    run.num_classes, run.class_names = train_set.num_classes, list(train_set.class_names)
    out_channels = output_channels(config, run.num_classes)
    check_binary_only(config, out_channels)
    run.loss_fn = make_loss(config).to(run.device)
    if getattr(run.loss_fn, "needs_distance", False):  # signed distance maps computed once per item
        from medsegloss.data import WithDistanceMaps

        train_set = WithDistanceMaps(train_set, out_channels)
    run.model_args = {"in_channels": int(train_set[0]["image"].shape[0]), "num_classes": out_channels,
                      "base": config.base_width, "depth": config.depth, "dims": config.dims}
    run.model = make_model(config, run.model_args["in_channels"], out_channels)
    if config.init_weights is not None:
        run.model.load_state_dict(torch.load(config.init_weights, map_location="cpu", weights_only=True))
    run.channels_last = config.channels_last and config.dims == 2
    run.model.to(run.device, memory_format=torch.channels_last if run.channels_last else torch.preserve_format)
    run.optimizer = make_optimizer(config, run.model)
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp_dtype == torch.float16)
    run.generator = torch.Generator()
    run.sampler = (DistributedSampler(train_set, run.world_size, run.rank, shuffle=True, seed=config.seed)
                   if run.world_size > 1 else None)
    run.loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=run.sampler is None,
                            sampler=run.sampler, generator=run.generator, num_workers=config.workers,
                            pin_memory=run.device.type == "cuda", persistent_workers=config.workers > 0)
    run.train_model = run.model
    if run.world_size > 1:
        run.train_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)

def _run_epoch(run: _Run, epoch: int) -> None:
    """Train one epoch, validate, then write best.pt (if better), the log line and last.pt."""
    from medsegloss.metrics import summarize
    from tqdm import tqdm

    config, started = run.config, time.perf_counter()
    run.generator.manual_seed(config.seed * 1_000_003 + epoch)  # the shuffle depends on (seed, epoch) only
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    total = len(run.sampler) if run.sampler is not None else len(run.loader.dataset)
    with tqdm(total=total, unit="img", desc=f"epoch {epoch}/{config.epochs}", leave=False,
              disable=run.quiet or not run.writer, dynamic_ncols=True) as progress:
        stats = train_one_epoch(run.train_model, run.loader, run.loss_fn, run.optimizer, run.scaler,
                                device=run.device, epoch=epoch, step=run.state["step"], amp_dtype=run.amp_dtype,
                                channels_last=run.channels_last, progress=progress, loss_name=config.loss.strip())
    train_loss, *terms = distributed.reduce_mean([stats["train_loss"], *stats["terms"].values()], run.world_size)
    distributed.broadcast_buffers(run.model, run.world_size)
    rows = evaluate(run.model, run.parts["val"], metrics=config.metrics, batch_size=config.batch_size,
                    amp_dtype=run.amp_dtype, rank=run.rank, world_size=run.world_size)
    run.state["epoch"], run.state["step"] = epoch, stats["step"]
    if not run.writer:
        return
    dice = mean_dice(rows)
    if run.state["best_epoch"] == 0 or not rows or (not math.isnan(dice) and dice > run.state["best_dice"]):
        run.state["best_epoch"], run.state["best_dice"] = epoch, (dice if not math.isnan(dice) else -math.inf)
        _io.save_torch(run.out / "best.pt", checkpoint.checkpoint_content(run, epoch, stats["step"], full=False))
    seconds = time.perf_counter() - started
    record = {"epoch": epoch, "step": stats["step"], "train_loss": train_loss,
              "terms": dict(zip(stats["terms"], terms)), "val": summarize(rows) if rows else [],
              "val_dice": dice, "lr": run.optimizer.param_groups[0]["lr"], "steps": stats["steps"],
              "seconds": seconds, "train_seconds": stats["train_seconds"],
              "images_per_second": stats["images"] / stats["train_seconds"]}
    _io.append_jsonl(run.out / "metrics.jsonl", record)
    _io.save_torch(run.out / "last.pt", checkpoint.checkpoint_content(run, epoch, stats["step"], full=True))
    term_text = ", ".join(f"{key} {value:.4f}" for key, value in record["terms"].items())
    run.log(f"epoch {epoch}/{config.epochs}  loss {train_loss:.4f} ({term_text})  val dice {dice:.4f}  "
            f"lr {record['lr']:.3g}  {seconds:.1f} s ({record['images_per_second']:.1f} img/s)")

def _finish(run: _Run) -> dict:
    """Test best.pt on the test split and write ``metrics.json`` (the run is then finished)."""
    from medsegloss.metrics import summarize

    distributed.barrier(run.world_size)  # best.pt is complete on disk before every rank reads it
    best = torch.load(run.out / "best.pt", map_location=run.device, weights_only=True)
    run.model.load_state_dict(best["model"])
    test_rows = evaluate(run.model, run.parts["test"], metrics=run.config.metrics, batch_size=run.config.batch_size,
                         amp_dtype=run.amp_dtype, rank=run.rank, world_size=run.world_size)
    if not run.writer:
        return {}
    lines = _io.read_jsonl(run.out / "metrics.jsonl")
    steps = sum(line["steps"] for line in lines)
    train_seconds = sum(line["train_seconds"] for line in lines)
    best_line = next(line for line in lines if line["epoch"] == best["epoch"])
    result = {"config": run.config.to_dict(), "epochs": run.state["epoch"], "best_epoch": best["epoch"],
              "val": best_line["val"], "test_rows": test_rows, "test": summarize(test_rows) if test_rows else [],
              "cost": {"seconds_per_step": train_seconds / steps, "peak_memory_mb": peak_memory_mb(run.device),
                       "train_seconds": train_seconds}}
    _io.write_json(run.out / "metrics.json", result)
    run.log(f"finished {run.out}: best epoch {best['epoch']} (val dice {best_line['val_dice']:.4f}), "
            f"test dice {mean_dice(test_rows):.4f}")
    return result


def fit(config: Config, out_dir=None, *, quiet: bool = False) -> dict:
    """Train ``config`` into ``out_dir`` (default ``config.run_dir``) and return ``metrics.json``.

    A finished run (``metrics.json`` exists) returns its stored result; an unfinished one
    (``last.pt`` exists) resumes. Under torchrun every rank calls ``fit``; rank 0 writes.
    """
    out = Path(out_dir if out_dir is not None else config.run_dir)
    checkpoint.check_same_config(out, config)
    if (out / "metrics.json").exists():
        return _io.read_json(out / "metrics.json")
    check_config(config)
    rank, world_size, local_rank = distributed.distributed_env()
    run = _Run(config, out, resolve_device(config, local_rank), rank, world_size, quiet)
    reset_peak_memory(run.device)  # this run's own peak, also after earlier runs in this process
    deterministic_before, threads_before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with distributed.process_group(run.device, world_size):
        try:
            checkpoint.set_deterministic(config.deterministic, run.device)
            if config.threads:
                torch.set_num_threads(config.threads)
            if run.writer:
                _io.write_json(out / "config.json", config.to_dict())
            _prepare(run)
            if (out / "last.pt").exists():
                checkpoint.resume(run)
            if run.writer:
                checkpoint.drop_unsaved_epochs(out, run.state["epoch"])
            for epoch in range(run.state["epoch"] + 1, config.epochs + 1):
                _run_epoch(run, epoch)
            result = _finish(run)
            distributed.barrier(world_size)
            return result or _io.read_json(out / "metrics.json")
        finally:
            torch.use_deterministic_algorithms(deterministic_before)
            torch.set_num_threads(threads_before)


# ---------------------------------------------------------------- command line
def build_parser():
    """``medsegloss train`` options: one flag per config field, plus --preset, --resume, --quiet."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="medsegloss train", description="Train a UNet with one loss; writes a resumable run directory.",
        epilog='example: medsegloss train --dataset phantom-lesion --loss "ce + 1.0*dice" --epochs 2 --out runs/demo')
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="start from these settings (paper: UNet base 64, 256x256, Adam lr 0.01, 100 epochs)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the unfinished run in RUN_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    add_config_arguments(parser.add_argument_group("experiment (config fields; defaults from --preset)"))
    return parser


def _parse(argv) -> tuple:
    import difflib

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [option for action in parser._actions for option in action.option_strings]
        close = difflib.get_close_matches(unknown[0].split("=")[0], flags, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        parser.error(f"unknown option(s) {' '.join(unknown)}.{hint}")
    given = {key: value for key, value in vars(args).items() if key not in ("preset", "resume", "quiet")}
    if args.resume and given:
        parser.error(f"--resume continues the stored config of {args.resume}; do not pass "
                     f"{', '.join('--' + key.replace('_', '-') for key in given)}")
    return args, given


def main(argv=None) -> int:
    """``medsegloss train [--preset paper] [--<field> value ...] [--resume RUN_DIR] [--quiet]``."""
    args, given = _parse(sys.argv[1:] if argv is None else argv)
    out = args.resume
    try:
        if args.resume:
            config_path = Path(args.resume) / "config.json"
            if not config_path.is_file():
                raise FileNotFoundError(f"cannot resume {args.resume}: {config_path} does not exist")
            config = Config.from_dict(_io.read_json(config_path))
        else:
            config = Config.preset(args.preset, **given)
            out = config.run_dir
        if (Path(out) / "metrics.json").exists() and not args.quiet:
            print(f"{out} is finished (metrics.json exists); nothing to do")
        result = fit(config, out, quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: medsegloss train --resume {out}", file=sys.stderr)
        return 130
    except NonFiniteLossError as error:
        print(f"medsegloss train: {error}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as error:
        print(f"medsegloss train: error: {error}", file=sys.stderr)
        return 2
    if result and not args.quiet:
        print(f"run directory: {out}  (test: {_test_summary(result)})")
    return 0


def _test_summary(result: dict) -> str:
    return f"mean Dice {mean_dice(result.get('test_rows', [])):.4f} over {len({row['case'] for row in result.get('test_rows', [])})} cases"
