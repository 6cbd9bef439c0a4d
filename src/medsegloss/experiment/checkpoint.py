"""Reproducibility and resuming: seeds, RNG states, checkpoint content, resuming from ``last.pt``.

A ``last.pt`` holds everything a run needs to continue to the same weights an uninterrupted run
reaches: model, optimizer, scaler, every RNG state, epoch, step and the best epoch so far.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from medsegloss import _io


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states(generator: torch.Generator) -> dict:
    """Every RNG state a run depends on, ``generator`` (the loader's shuffle) included."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "loader": generator.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, generator: torch.Generator) -> None:
    """Restore the states :func:`rng_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    generator.set_state(states["loader"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Deterministic algorithms on (same config and seed give the same weights) or off (faster)."""
    if enabled and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    # warn_only: an op without a deterministic kernel (some CUDA backward passes) warns, not fails
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def checkpoint_content(run, epoch: int, step: int, full: bool) -> dict:
    """``best.pt`` content of ``run`` (weights and what inference needs); ``full`` adds the
    training state of ``last.pt``."""
    checkpoint = {"model": run.model.state_dict(), "model_args": run.model_args, "config": run.config.to_dict(),
                  "num_classes": run.num_classes, "class_names": run.class_names, "epoch": epoch, "step": step}
    if full:
        checkpoint.update(optimizer=run.optimizer.state_dict(), scaler=run.scaler.state_dict(),
                          rng=rng_states(run.generator), best_epoch=run.state["best_epoch"],
                          best_dice=run.state["best_dice"])
    return checkpoint


def resume(run) -> None:
    """Continue ``run`` from its ``last.pt``: weights, optimizer, scaler, every RNG, epoch and step."""
    checkpoint = torch.load(run.out / "last.pt", map_location=run.device, weights_only=False)
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_states(checkpoint["rng"], run.generator)
    run.state = {key: checkpoint[key] for key in ("epoch", "step", "best_epoch", "best_dice")}
    run.log(f"resumed {run.out} after epoch {run.state['epoch']} (step {run.state['step']})")


def drop_unsaved_epochs(out: Path, last_saved_epoch: int) -> None:
    """Drop the lines of ``metrics.jsonl`` of epochs that ended after the last checkpoint was
    written (a crash between the two writes): those epochs run again."""
    path = Path(out) / "metrics.jsonl"
    if path.exists():
        lines = [line for line in _io.read_jsonl(path) if line["epoch"] <= last_saved_epoch]
        _io.write_text(path, "".join(json.dumps(line) + "\n" for line in lines))


def check_same_config(out: Path, config) -> None:
    """Fail when ``out`` holds a run of another config (``out`` itself may differ)."""
    path = Path(out) / "config.json"
    if not path.exists():
        return
    stored, mine = _io.read_json(path), config.to_dict()
    differ = [f"{key}: {stored.get(key)!r} there, {value!r} here" for key, value in mine.items()
              if key != "out" and stored.get(key) != value]
    if differ:
        raise ValueError(f"run directory {out} holds a run with another config ({'; '.join(differ)}); "
                         f"continue it with `medsegloss train --resume {out}` or choose another --out")
