"""What bad input gets on the experiment side (issue #11): checkpoints cannot run code, a run
directory has one trainer at a time and survives corrupt files, `predict` never overwrites an
input or another output, every CLI argument is checked up front, and user-chosen names cannot
break the report. Each test failed on the code before the fix."""

from medsegloss.experiment import components
from medsegloss.experiment import train_cli
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medsegloss.experiment import predict, reproducibility, trainer
from medsegloss.experiment.config import Config

SRC = str(Path(__file__).resolve().parents[2] / "src")


def tiny(**changes) -> Config:
    settings = dict(dataset="phantom-lesion", image_size=16, base_width=2, depth=1, epochs=2, batch_size=4,
                    dataset_options={"num_cases": 5, "slices_per_case": 2}, metrics=("dice",), threads=1)
    return Config(**{**settings, **changes})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch run (so it holds last.pt and last.prev.pt)."""
    out = tmp_path_factory.mktemp("finished")
    trainer.fit(tiny(), out, quiet=True)
    return out


@pytest.fixture
def unfinished_run(finished_run, tmp_path):
    """A copy of the finished run with metrics.json removed: `train --resume` has work to do
    (the test split's evaluation), and reads last.pt."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "metrics.json").unlink()
    (out / ".lock").unlink(missing_ok=True)
    return out


class Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious(path, marker) -> None:
    torch.save({"model": Payload(marker), "model_args": {}, "epoch": 1}, path)


# ---------------------------------------------------------------- 1. checkpoints cannot run code
def test_every_checkpoint_the_trainer_writes_loads_with_weights_only(finished_run):
    for name in ("last.pt", "last.prev.pt", "best.pt"):
        checkpoint = torch.load(finished_run / name, map_location="cpu", weights_only=True)
        assert checkpoint["config"] == tiny().to_dict()


def test_rng_states_round_trip_as_plain_data():
    random.seed(1), np.random.seed(2), torch.manual_seed(4)
    states = reproducibility.rng_states()
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(2).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    buffer = __import__("io").BytesIO()
    torch.save(states, buffer)
    buffer.seek(0)
    reproducibility.set_rng_states(torch.load(buffer, weights_only=True))
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(2).tolist())
    assert again == expected


def test_resume_refuses_a_pickled_payload_in_last_pt(unfinished_run, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    (unfinished_run / "last.prev.pt").unlink()
    write_malicious(unfinished_run / "last.pt", marker)
    assert train_cli.main(["--resume", str(unfinished_run), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert not marker.exists()
    assert f"refused checkpoint {unfinished_run / 'last.pt'}" in error and "could run code" in error
    assert len(error.strip().splitlines()) == 1


def test_an_unsafe_last_pt_is_refused_even_with_a_good_previous_one(unfinished_run, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    write_malicious(unfinished_run / "last.pt", marker)
    assert train_cli.main(["--resume", str(unfinished_run), "--quiet"]) == 2
    assert not marker.exists() and "refused checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_predict_refuses_a_pickled_payload_whatever_the_file_name(name, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    write_malicious(tmp_path / name, marker)
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert predict.main(["--checkpoint", str(tmp_path / name), str(image), "--out", str(tmp_path / "masks")]) == 2
    assert not marker.exists()
    assert f"refused checkpoint {tmp_path / name}" in capsys.readouterr().err
    assert not (tmp_path / "masks").exists()


def test_init_weights_with_a_payload_are_refused_before_anything_is_written(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    write_malicious(tmp_path / "init.pt", marker)
    out = tmp_path / "run"
    assert train_cli.main(["--dataset", "phantom-lesion", "--init-weights", str(tmp_path / "init.pt"),
                         "--out", str(out), "--quiet"]) == 2
    assert not marker.exists() and "refused checkpoint" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- 3. one trainer per run directory; corrupt files
def train(out, *flags):
    return train_cli.main(["--dataset", "phantom-lesion", "--image-size", "16", "--base-width", "2", "--depth", "1",
                         "--epochs", "2", "--batch-size", "4", "--dataset-options", '{"num_cases": 5, "slices_per_case": 2}',
                         "--metrics", "dice", "--threads", "1", "--out", str(out), "--quiet",
                         "--schedule", "constant", "--no-augment", *flags])  # as the Config() defaults


def test_a_second_process_on_a_locked_run_directory_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from medsegloss.experiment.rundir import run_lock\n"
         f"with run_lock({str(out)!r}):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert train(out) == 2
        error = capsys.readouterr().err
        assert f"run directory {out} is in use: pid {holder.pid} on " in error and len(error.splitlines()) == 1
        assert not (out / "config.json").exists()
    finally:
        holder.communicate("")
    assert train(out) == 0  # the holder exited: its lock went with it
    assert (out / "metrics.json").exists()


def test_an_unrelated_metrics_json_is_not_a_finished_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"accuracy": 0.9}\n')
    assert train(out) == 2
    assert f"{out / 'metrics.json'} is not the result of a medsegloss run" in capsys.readouterr().err
    (out / "metrics.json").write_text("NaN\n")
    assert train(out) == 2
    assert f"{out / 'metrics.json'} is not the result" in capsys.readouterr().err


def test_a_metrics_json_of_another_config_is_refused(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(finished_run / "metrics.json", out / "metrics.json")
    assert train(out, "--lr", "0.5") == 2
    error = capsys.readouterr().err
    assert f"{out / 'metrics.json'} is the result of another config (lr: 0.001 there, 0.5 here)" in error


def test_a_truncated_last_pt_falls_back_to_the_previous_checkpoint(finished_run, unfinished_run, capsys):
    data = (unfinished_run / "last.pt").read_bytes()
    (unfinished_run / "last.pt").write_bytes(data[: len(data) // 2])
    assert train_cli.main(["--resume", str(unfinished_run), "--quiet"]) == 0
    error = capsys.readouterr().err
    assert f"checkpoint {unfinished_run / 'last.pt'} is truncated or corrupt" in error
    assert f"resuming from {unfinished_run / 'last.prev.pt'} (epoch 1)" in error
    assert (unfinished_run / "last.pt.corrupt").read_bytes() == data[: len(data) // 2]
    for name in ("last.pt", "best.pt"):  # epoch 2 trained again: the same weights as the first time
        again, first = (torch.load(run / name, weights_only=True)["model"] for run in (unfinished_run, finished_run))
        assert all(torch.equal(again[key], first[key]) for key in first)


def test_corrupt_files_without_a_fallback_are_named(unfinished_run, capsys):
    (unfinished_run / "last.prev.pt").unlink()
    (unfinished_run / "last.pt").write_bytes(b"")
    assert train_cli.main(["--resume", str(unfinished_run), "--quiet"]) == 2
    assert f"checkpoint {unfinished_run / 'last.pt'} is empty" in capsys.readouterr().err
    config = (unfinished_run / "config.json").read_text()
    (unfinished_run / "config.json").write_text(config[: len(config) // 2])
    assert train_cli.main(["--resume", str(unfinished_run), "--quiet"]) == 2
    assert f"{unfinished_run / 'config.json'} is corrupt (not valid JSON" in capsys.readouterr().err


def test_a_truncated_last_metrics_line_is_dropped_with_a_warning(finished_run, unfinished_run, capsys):
    log = (unfinished_run / "metrics.jsonl").read_text()
    (unfinished_run / "metrics.jsonl").write_text(log[:-40])  # the epoch-2 line cut mid-write
    (unfinished_run / "last.pt").unlink()  # the crash came before last.pt of epoch 2
    os.replace(unfinished_run / "last.prev.pt", unfinished_run / "last.pt")
    assert train_cli.main(["--resume", str(unfinished_run), "--quiet"]) == 0
    assert f"dropped the unreadable last line of {unfinished_run / 'metrics.jsonl'}" in capsys.readouterr().err
    timing = {"seconds", "train_seconds", "images_per_second", "step_seconds"}
    lines = [[{k: v for k, v in json.loads(line).items() if k not in timing}
              for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (unfinished_run, finished_run)]
    assert lines[0] == lines[1]
    middle = (unfinished_run / "metrics.jsonl").read_text().splitlines()
    (unfinished_run / "metrics.jsonl").write_text("{broken\n" + middle[1] + "\n")
    (unfinished_run / "metrics.json").unlink()
    assert train_cli.main(["--resume", str(unfinished_run), "--quiet"]) == 2
    assert f"{unfinished_run / 'metrics.jsonl'} line 1 is corrupt" in capsys.readouterr().err


def test_failed_init_weights_leave_nothing_that_blocks_a_corrected_retry(tmp_path, capsys):
    wrong = {"encoder.weight": torch.zeros(3, 3)}
    torch.save(wrong, tmp_path / "wrong.pt")
    out = tmp_path / "run"
    assert train(out, "--init-weights", str(tmp_path / "wrong.pt")) == 2
    assert f"init_weights {tmp_path / 'wrong.pt'} does not fit the model" in capsys.readouterr().err
    assert not {"config.json", "split.json"} & {p.name for p in out.glob("*")}
    torch.save(components.initial_state(tiny()), tmp_path / "right.pt")
    assert train(out, "--init-weights", str(tmp_path / "right.pt")) == 0


def test_a_corrupt_disk_cache_entry_is_rebuilt(tmp_path):
    from medsegloss.data import cache
    from medsegloss.data.base import Case

    calls = []

    def compute():
        calls.append(1)
        return Case("c1", np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.ones((2, 3, 4), np.uint8), (1.0, 1.0, 1.0), False)

    cache.clear()
    first = cache.cached_case(("k", 1), compute, cache_dir=tmp_path)
    for damage in ("image.npy", "json"):
        path = next(tmp_path.glob(f"*.{damage}"))
        path.write_bytes(path.read_bytes()[:20])
        cache.clear()
        again = cache.cached_case(("k", 1), compute, cache_dir=tmp_path)
        np.testing.assert_array_equal(again.image, first.image)
    assert len(calls) == 3
    cache.clear()
    cache.cached_case(("k", 1), compute, cache_dir=tmp_path)  # rewritten: served from disk now
    assert len(calls) == 3
    cache.clear()


# ---------------------------------------------------------------- 4. arguments checked up front, naming the argument
@pytest.mark.parametrize("flags, message", [
    (["--seed", "100000000000000000000000"], "argument --seed: expected an int in [0, 2**32)"),
    (["--seed", "-1"], "argument --seed: expected an int in [0, 2**32)"),
    (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
    (["--weight-decay", "nan"], "weight_decay must be a finite number >= 0"),
    (["--metrics", "dice,bogus"], "metrics: unknown metric(s) 'bogus'"),
])
def test_train_arguments_name_themselves(flags, message, tmp_path, capsys):
    try:
        code = train_cli.main(["--out", str(tmp_path / "run"), "--quiet", *flags])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not (tmp_path / "run").exists()


def test_config_seed_outside_numpy_and_torch_range_is_refused():
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32\), got 100000000000000000000000"):
        Config(seed=10**23)
    with pytest.raises(ValueError, match="seed must be an int"):
        Config(seed=1.5)


@pytest.mark.parametrize("flags, message", [
    (["--baseline", "nosuch"], "--baseline 'nosuch' is not one of the sweep's losses ('ce', 'dice')"),
    (["--seeds", "0", "1e23"], "argument --seeds: expected an int in [0, 2**32)"),
    (["--metrics", "bogus"], "metrics: unknown metric(s) 'bogus'"),
])
def test_bench_arguments_fail_before_any_training(flags, message, tmp_path, capsys):
    from medsegloss.experiment import bench

    try:
        code = bench.main(["--losses", "ce", "dice", "--datasets", "phantom-lesion", "--out", str(tmp_path / "b"),
                           "--quiet", *flags])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
