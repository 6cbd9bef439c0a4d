"""The package's one atomic writer: every file medsegloss writes (run directories, reports,
splits, the disk cache, metric tables, predicted masks) goes through :func:`open_atomic` or
:func:`save_atomic`.

A write goes to a temp file in the target's folder, is flushed and ``fsync``-ed, gets the
permissions a plain ``open(path, "w")`` would give under the current umask (``mkstemp`` makes
files owner-only), and replaces the target with ``os.replace``; the folder is then ``fsync``-ed
where the platform allows it, so the rename itself survives a power cut. A reader — or a run
resumed after Ctrl-C or a crash — sees the old file or the new one, never half of one; a write
that fails midway leaves the old file as it was and no temp file behind, and raises
:class:`WriteError`: one line naming the file and the cause (``cannot write RUN/last.pt: No space
left on device``), which the commands print as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["WriteError", "open_atomic", "save_atomic", "write_bytes", "write_text", "write_json", "append_jsonl",
           "save_torch", "read_json", "read_jsonl", "current_umask"]


class WriteError(OSError):
    """A file could not be written (a full disk, no permission, ...); the message names the file
    and the cause, ``errno`` is the cause's."""

    @classmethod
    def of(cls, path, error: OSError) -> WriteError:
        written = cls(f"cannot write {path}: {error.strerror or error}")
        written.errno = error.errno
        return written


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (``/proc``), else by
    setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as file:
            for line in file:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


TEMP_NAME_CHARS = 48  # of the target's name in its temp file's name: at most 4 * 48 bytes in UTF-8


@contextlib.contextmanager
def _temporary(path, keep_suffixes: bool = False) -> Iterator[tuple[int, Path]]:
    """A temp file ``.<name>.<random>.tmp`` beside ``path`` (open descriptor, path), with the
    suffixes of ``path`` appended if ``keep_suffixes``; on a clean exit it gets plain-file
    permissions, is synced and moved over ``path``; on an error it is removed. The name is cut
    to its first ``TEMP_NAME_CHARS`` characters (and the last two suffixes, the format's), so the
    temp name of a legal long file name is legal too (255 bytes on most file systems)."""
    path = Path(path)
    suffixes = "".join(suffix for suffix in path.suffixes[-2:] if len(suffix) <= 16) if keep_suffixes else ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name[:TEMP_NAME_CHARS]}.", suffix=".tmp" + suffixes,
                                        dir=path.parent)
    except OSError as error:
        raise WriteError.of(path, error) from error
    temp = Path(temp)
    try:
        yield handle, temp
        mode = 0o666 & ~current_umask()  # what open(path, "w") gives; mkstemp's is 0o600
        os.fchmod(handle, mode) if hasattr(os, "fchmod") else os.chmod(temp, mode)
        os.fsync(handle)
        os.close(handle)
        handle = -1
        os.replace(temp, path)
    except BaseException as error:
        if handle >= 0:
            with contextlib.suppress(OSError):
                os.close(handle)
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError.of(path, error) from error
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def open_atomic(path, mode: str = "wb", encoding: str | None = None) -> Iterator:
    """``with open_atomic(path) as file:`` a file object (``mode`` ``"wb"`` or ``"w"``) whose
    content replaces ``path`` atomically when the block ends without an error."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    with _temporary(path) as (handle, _):
        # closefd=False: _temporary syncs and closes the descriptor after the file is flushed
        text = mode == "w"
        with open(handle, mode, closefd=False, encoding=(encoding or "utf-8") if text else None,
                  newline="" if text else None) as file:
            yield file


def save_atomic(path, save: Callable[[Path], object]) -> Path:
    """``save(temp_path)`` for writers that need a file name (e.g. ``nibabel.save``, which
    picks the format from the suffixes: the temp name keeps those of ``path``), then the
    temp file replaces ``path`` atomically."""
    with _temporary(path, keep_suffixes=True) as (_, temp):
        save(temp)
    return Path(path)


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` (e.g. a PNG image) atomically."""
    with open_atomic(path) as file:
        file.write(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    """Write ``text`` as UTF-8, line endings as given, atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, data, indent: int | None = 2, allow_nan: bool = True) -> Path:
    """Write ``data`` as JSON plus a newline (with ``allow_nan``, NaN/inf as JSON's non-standard
    ``NaN``/``Infinity``)."""
    return write_text(path, json.dumps(data, indent=indent, allow_nan=allow_nan) + "\n")


def append_jsonl(path, record: dict) -> Path:
    """Append one JSON line, atomically (the whole file is rewritten: the logs are small)."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    return write_bytes(path, old + (json.dumps(record) + "\n").encode("utf-8"))


def save_torch(path, obj) -> Path:
    """``torch.save`` atomically."""
    import torch

    with open_atomic(path) as file:
        torch.save(obj, file)
    return Path(path)


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def read_jsonl(path) -> list[dict]:
    """The records of a JSON-lines file; ``[]`` when it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
