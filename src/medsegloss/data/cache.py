"""Decode each volume once: an in-memory cache, plus an optional on-disk ``.npy`` cache.

Keys hold each source file's absolute path, modification time and size, plus every option that
changes the result (size, normalization, target...), so an edited file or a new option is
decoded afresh and nothing stale is served. The memory cache keeps the most recently used
results up to ``MEDSEGLOSS_CACHE_MB`` (default 4096) MiB; the disk cache (``cache_dir=`` or the
``MEDSEGLOSS_CACHE_DIR`` environment variable) stores ``<hash>.image.npy``, ``<hash>.label.npy``
and ``<hash>.json`` (written last, atomically: its presence marks a complete entry) and maps the
arrays back read-only, so even large CT collections cost page cache rather than process memory.
A truncated or corrupt disk entry is decoded afresh and rewritten, never an error; a cache folder
that cannot be written (read-only, a file, no space) is skipped with one warning: the cache saves
time, it never fails a run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medsegloss._io import open_atomic, write_text
from medsegloss.data.base import Case, log

_MEMORY: OrderedDict[str, Case] = OrderedDict()
_UNUSABLE: set[str] = set()  # cache folders and settings already reported unusable (one warning each)


def file_key(path) -> tuple[str, int, int]:
    """``(absolute path, mtime in ns, size)``: changes whenever the file does."""
    path = Path(path).resolve()
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


DEFAULT_CACHE_MB = 4096


def _limit_bytes() -> int:
    """``MEDSEGLOSS_CACHE_MB`` in bytes; a value that is not a number >= 0 means the default."""
    text = os.environ.get("MEDSEGLOSS_CACHE_MB", "")
    try:
        megabytes = float(text) if text.strip() else DEFAULT_CACHE_MB
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0 or megabytes == float("inf"):  # NaN fails the comparison
        if text not in _UNUSABLE:
            _UNUSABLE.add(text)
            log.warning("MEDSEGLOSS_CACHE_MB=%r is not a number of MiB >= 0; using %d", text, DEFAULT_CACHE_MB)
        megabytes = DEFAULT_CACHE_MB
    return int(megabytes * 2**20)


def _remember(key: str, case: Case) -> None:
    _MEMORY[key] = case
    _MEMORY.move_to_end(key)
    total = sum(c.image.nbytes + c.label.nbytes for c in _MEMORY.values() if not isinstance(c.image, np.memmap))
    while total > _limit_bytes() and len(_MEMORY) > 1:
        _, old = _MEMORY.popitem(last=False)
        if not isinstance(old.image, np.memmap):
            total -= old.image.nbytes + old.label.nbytes


def _disk_dir(cache_dir) -> Path | None:
    cache_dir = cache_dir if cache_dir is not None else os.environ.get("MEDSEGLOSS_CACHE_DIR")
    return Path(cache_dir) if cache_dir else None


def cached_case(key: tuple, compute: Callable[[], Case], cache_dir=None) -> Case:
    """The :class:`Case` for ``key``, computed by ``compute()`` on a miss.

    ``key`` must hold everything the result depends on: :func:`file_key` of each file read and
    the options used.
    """
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:24]
    if digest in _MEMORY:
        _MEMORY.move_to_end(digest)
        return _MEMORY[digest]
    folder = _disk_dir(cache_dir)
    case = _read_disk_entry(folder, digest) if folder is not None else None
    if case is None:
        case = compute()
        if folder is not None:
            _write_disk_entry(folder, digest, case, key)
    _remember(digest, case)
    return case


def _write_disk_entry(folder: Path, digest: str, case: Case, key: tuple) -> None:
    """Store ``case`` in the disk cache; a folder that cannot be written (read-only, a file, no
    space) is reported once on the ``medsegloss.data`` logger and skipped: the cache saves time,
    it never fails a run."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for part, array in (("image", case.image), ("label", case.label)):
            with open_atomic(folder / f"{digest}.{part}.npy") as file:
                np.save(file, array)
        meta = {"id": case.id, "spacing": list(case.spacing), "single": case.single, "key": repr(key)}
        write_text(folder / f"{digest}.json", json.dumps(meta))
    except OSError as error:
        if str(folder) not in _UNUSABLE:
            _UNUSABLE.add(str(folder))
            log.warning("disk cache %s is not usable (%s: %s); going on without it", folder,
                        type(error).__name__, error)


def _read_disk_entry(folder: Path, digest: str) -> Case | None:
    """The cached case of ``digest``, or None when it is absent or its files are truncated or
    corrupt (a full disk, a copy cut short, another tool): the caller decodes the source again and
    rewrites the entry, so a damaged cache costs time, never a failed run."""
    try:  # a missing entry or an unreadable folder: OSError too
        meta = json.loads((folder / f"{digest}.json").read_text(encoding="utf-8"))
        return Case(meta["id"], np.load(folder / f"{digest}.image.npy", mmap_mode="r"),
                    np.load(folder / f"{digest}.label.npy", mmap_mode="r"), tuple(meta["spacing"]),
                    meta["single"])
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def clear() -> None:
    """Forget every in-memory entry (the disk cache is left alone)."""
    _MEMORY.clear()
