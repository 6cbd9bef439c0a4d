"""The run directory on disk: what a run writes there, how it is read back and checked, and who
may write. Every write goes through :mod:`medsegloss._io` (atomic, plain-file mode).

``config.json`` (the run's :class:`~medsegloss.experiment.config.Config`), ``split.json``,
``metrics.jsonl`` (one line per validation), ``last.pt`` with the previous one kept as
``last.prev.pt`` (the fallback when ``last.pt`` is corrupt), ``best.pt``, ``metrics.json`` (a
finished run) and ``.lock`` (held while a process trains there). A corrupt file is named in the
error; only a ``metrics.json`` of the same config counts as finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from medsegloss import _io
from medsegloss.experiment.config import Config


PREVIOUS_CHECKPOINT = "last.prev.pt"  # the checkpoint before last.pt: the fallback when last.pt is corrupt


def save_last_checkpoint(out: Path, checkpoint: dict) -> None:
    """Write ``last.pt`` atomically, keeping the one it replaces as ``last.prev.pt``.

    The rotation is itself atomic: the old ``last.pt`` is hard-linked (copied where links are
    not possible) to a temp name that replaces ``last.prev.pt``, so at every moment both names
    hold a complete checkpoint (once two epochs have run)."""
    import shutil

    last, previous = Path(out) / "last.pt", Path(out) / PREVIOUS_CHECKPOINT
    if last.exists():
        temp = previous.with_name(f".{previous.name}.{os.getpid()}.tmp")
        try:
            temp.unlink(missing_ok=True)
            os.link(last, temp)
            os.replace(temp, previous)
        except OSError:  # no hard links here (some network or FAT file systems): copy
            temp.unlink(missing_ok=True)
            _io.save_atomic(previous, lambda path: shutil.copyfile(last, path))
    _io.save_torch(last, checkpoint)


def read_run_json(path):
    """A run's JSON file (``config.json``, ``metrics.json``); a truncated or corrupt one fails
    with a ValueError naming it."""
    try:
        return _io.read_json(path)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is corrupt (not valid JSON: {error}); restore it or choose another "
                         f"run directory") from None


def read_metrics_log(path) -> list[dict]:
    """The validation records of ``metrics.jsonl``. A truncated last line (a crash mid-write by
    another tool) is dropped with a warning on stderr, those steps then run again; any other bad
    line fails naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a validation record")
        except ValueError as error:
            if number == len(lines):
                print(f"medsegloss train: warning: dropped the unreadable last line of {path} ({error}); "
                      f"those steps are trained again", file=sys.stderr, flush=True)
                break
            raise ValueError(f"{path} line {number} is corrupt ({error}); the run's log cannot be read") from None
        records.append(record)
    return records


def drop_unsaved_epochs(out: Path, last_saved_step: int) -> None:
    """Drop the lines of ``metrics.jsonl`` of validations after the last checkpoint was written
    (a crash between the two writes): those steps run again."""
    path = Path(out) / "metrics.jsonl"
    if path.exists():
        lines = [line for line in read_metrics_log(path) if line["step"] <= last_saved_step]
        _io.write_text(path, "".join(json.dumps(line) + "\n" for line in lines))


def config_differences(stored: dict, config: Config) -> list[str]:
    """``"field: X there, Y here"`` for each field (other than ``out`` and ``log``: where a run
    writes and logs changes nothing it computes) where a stored config differs from ``config``;
    a field the stored one lacks (written by an older version) counts only when ``config`` does
    not hold its default."""
    defaults = Config().to_dict()
    differ = []
    for key, value in config.to_dict().items():
        if key in ("out", "log"):
            continue
        there = stored.get(key, defaults[key])
        if there != value:
            differ.append(f"{key}: {there!r} there, {value!r} here")
    return differ


def check_same_config(out: Path, config: Config) -> None:
    """Fail when ``out`` holds a run of another config (``out`` itself may differ)."""
    path = Path(out) / "config.json"
    if not path.exists():
        return
    stored = read_run_json(path)
    if not isinstance(stored, dict):
        raise ValueError(f"{path} is corrupt (not a JSON object); restore it or choose another run directory")
    differ = config_differences(stored, config)
    if differ:
        raise ValueError(f"run directory {out} holds a run with another config ({'; '.join(differ)}); "
                         f"continue it with `medsegloss train --resume {out}` or choose another --out")


def finished_result(out: Path, config: Config) -> dict | None:
    """The stored ``metrics.json`` when ``out`` holds a finished run of ``config``; None when it
    holds none. A ``metrics.json`` that is corrupt, not a run's result, or of another config is
    an error naming it (it never counts as "finished")."""
    path = Path(out) / "metrics.json"
    if not path.exists():
        return None
    result = read_run_json(path)
    if not isinstance(result, dict) or not isinstance(result.get("config"), dict) or "test_rows" not in result:
        raise ValueError(f"{path} is not the result of a medsegloss run (corrupt or another tool's file); "
                         f"move it away or choose another --out")
    differ = config_differences(result["config"], config)
    if differ:
        raise ValueError(f"{path} is the result of another config ({'; '.join(differ)}); "
                         f"choose another --out")
    return result


# ---------------------------------------------------------------- one process per run directory
LOCK_FILE = ".lock"


class RunLockedError(ValueError):
    """Another process trains in the run directory (its ``.lock`` is held)."""


@contextlib.contextmanager
def run_lock(out: Path, enabled: bool = True):
    """Hold ``out/.lock`` (an exclusive ``fcntl.flock``) while a run trains in ``out``; a second
    process fails at once with :class:`RunLockedError` naming the holder (pid, host, start time,
    written into the lock file). The kernel drops the lock when the holder exits, crashed or
    not, so a stale file never blocks. The file is written in place, not atomically: the lock
    belongs to the open file, and replacing it would hand out a second, unlocked one. Where
    ``fcntl`` is missing (Windows) runs are not locked. ``enabled=False``: no lock (DDP ranks
    other than 0, whose rank 0 holds it)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if not enabled or fcntl is None:
        yield
        return
    import socket

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            raise RunLockedError(f"run directory {out} is in use: {holder} is training in it (lock {path}); "
                                 f"wait for it to finish, or stop that process") from None
        os.ftruncate(handle, 0)
        os.write(handle, f"pid {os.getpid()} on {socket.gethostname()} since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        yield
    finally:
        os.close(handle)  # releases the lock


# Fields a finished run may be continued under: with a constant learning rate the rate of a step
# does not depend on the budget, so training a finished run of S steps on to S' > S steps gives
# the weights a run started with S' steps reaches (the samples are a function of the step).
CONTINUABLE_FIELDS = ("steps", "val_every", "out", "log")


def continuable(out: Path, config: Config) -> bool:
    """Whether the run in ``out`` (finished or not) was made with ``config`` but a smaller
    ``steps`` and a constant learning rate, so it can train on to ``config.steps``."""
    path = Path(out) / "config.json"
    if not path.exists() or not (Path(out) / "last.pt").exists():
        return False
    try:
        stored = Config.from_dict(_io.read_json(path))
    except (TypeError, ValueError):
        return False
    return continues(stored, config)


def continues(stored: Config, config: Config) -> bool:
    """Whether ``config`` is ``stored`` with a larger ``steps`` (and maybe ``val_every``, ``out``)
    under a constant learning rate: the settings a finished run may be trained on under."""
    differ = {key for key, value in config.to_dict().items() if stored.to_dict()[key] != value}
    return (bool(differ) and differ <= set(CONTINUABLE_FIELDS) and "steps" in differ
            and config.schedule == "constant" and not config.until_converged
            and stored.steps is not None and config.steps is not None and config.steps > stored.steps)
