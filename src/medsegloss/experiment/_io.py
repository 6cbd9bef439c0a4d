"""Atomic writes for run directories: a temp file in the same folder, then ``os.replace``, so a
reader (or a resumed run after Ctrl-C or a crash) sees either the old file or the new one, never
half of one. Shared by the trainer and the benchmark/report."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _replace_with(path, write) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, then move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it owner-only; run files are meant to be shared
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, data, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (NaN/inf written as JSON's non-standard ``NaN``/``Infinity``)."""
    text = json.dumps(data, indent=indent, sort_keys=False) + "\n"
    return _replace_with(path, lambda file: file.write(text.encode()))


def write_text(path, text: str) -> Path:
    return _replace_with(path, lambda file: file.write(text.encode()))


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` (e.g. a PNG image) atomically."""
    return _replace_with(path, lambda file: file.write(data))


def append_jsonl(path, record: dict) -> Path:
    """Append one JSON line, atomically (the whole file is rewritten: the logs are small)."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    line = (json.dumps(record) + "\n").encode()
    return _replace_with(path, lambda file: file.write(old + line))


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save_torch(path, obj) -> Path:
    """``torch.save`` atomically."""
    import torch

    return _replace_with(path, lambda file: torch.save(obj, file))
