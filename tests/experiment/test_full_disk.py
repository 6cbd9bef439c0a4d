"""A full disk (ENOSPC) during ``train``, ``bench`` and ``predict``: one line naming the file that
could not be written and the cause, no traceback, no temp file left behind. The disk is made full
by failing ``os.fsync`` of the files written (where a real full disk reports it with delayed
allocation), and by writing into ``/dev/full`` (where every write fails for real)."""

from medsegloss.experiment import train_cli
import builtins
import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from medsegloss import _io
from medsegloss.experiment import bench, predict, trainer

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name a descriptor's file")]
TINY = ["--dataset", "phantom-lesion", "--image-size", "16", "--base-width", "2", "--depth", "1", "--steps", "4",
        "--val-every", "2", "--batch-size", "4", "--dataset-options", '{"num_cases": 5, "slices_per_case": 2}',
        "--metrics", "dice", "--threads", "1", "--device", "cpu", "--patch", "0", "--quiet", "--folds", "0"]


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(".pt")``: from now on every file written whose name contains the text fails
    with ENOSPC ("" = every file)."""
    real = os.fsync

    def fill(match: str = ""):
        def fsync(handle):
            if stat.S_ISREG(os.fstat(handle).st_mode) and match in os.readlink(f"/proc/self/fd/{handle}"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(handle)

        monkeypatch.setattr(os, "fsync", fsync)

    return fill


def _one_line(error: str, path) -> None:
    assert f"cannot write {path}: No space left on device" in error, error
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error


def _temp_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob(".*.tmp*")]


def test_a_write_into_a_full_device_names_the_file(tmp_path, monkeypatch):
    real_open = builtins.open
    monkeypatch.setattr(_io, "open", lambda handle, mode, **options: real_open(
        "/dev/full", mode, **{**options, "closefd": True}), raising=False)
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    for write in (lambda path: _io.save_torch(path, {"weights": torch.zeros(100_000)}),
                  lambda path: _io.write_json(path, {"a": 1})):
        with pytest.raises(_io.WriteError, match=f"cannot write {tmp_path / 'file'}: No space left on device") as caught:
            write(tmp_path / "file")
        assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_train_on_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, full_disk):
    full_disk()
    assert train_cli.main([*TINY, "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys.readouterr().err, tmp_path / "run" / "config.json")


def test_train_whose_checkpoint_meets_a_full_disk_names_the_checkpoint(tmp_path, capsys, full_disk):
    full_disk("last.pt")
    assert train_cli.main([*TINY, "--out", str(tmp_path / "run")]) == 2
    _one_line(capsys.readouterr().err, tmp_path / "run" / "last.pt")
    assert _temp_files(tmp_path) == []


def test_bench_on_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, full_disk):
    full_disk()
    flags = [flag for flag in TINY if flag not in ("--dataset", "phantom-lesion")]
    assert bench.main(["--datasets", "phantom-lesion", "--losses", "ce", "--seeds", "0", *flags,
                       "--out", str(tmp_path / "bench")]) == 2
    _one_line(capsys.readouterr().err, tmp_path / "bench" / "bench.json")


def test_bench_runs_meeting_a_full_disk_fail_naming_the_file(tmp_path, capsys, full_disk):
    full_disk("config.json")  # bench.json and the initial weights are written; the runs fail
    flags = [flag for flag in TINY if flag not in ("--dataset", "phantom-lesion")]
    assert bench.main(["--datasets", "phantom-lesion", "--losses", "ce", "--seeds", "0", *flags, "--jobs", "1",
                       "--out", str(tmp_path / "bench")]) == 1
    run = tmp_path / "bench" / "phantom-lesion" / "ce" / "seed0"
    error = capsys.readouterr().err
    assert f"failed: {run}: WriteError: cannot write {run / 'config.json'}: No space left on device" in error
    assert "Traceback" not in error


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train_cli.main([*TINY, "--out", str(out)]) == 0
    return out / "best.pt"


def test_predict_on_a_full_disk_names_the_mask(checkpoint, tmp_path, capsys, full_disk):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "a.png")
    full_disk()
    assert predict.main(["--checkpoint", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys.readouterr().err, tmp_path / "out" / "a.png")
    assert _temp_files(tmp_path) == []
