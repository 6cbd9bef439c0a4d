"""What bad input gets on the experiment side (issue #11): checkpoints cannot run code, a run
directory has one trainer at a time and survives corrupt files, `predict` never overwrites an
input or another output, every CLI argument is checked up front, and user-chosen names cannot
break the report. Each test failed on the code before the fix."""

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

from medsegloss.experiment import inference, trainer
from medsegloss.experiment.config import Config

SRC = str(Path(__file__).resolve().parents[1] / "src")


def tiny(**changes) -> Config:
    settings = dict(dataset="phantom-lesion", image_size=16, base_width=2, depth=1, epochs=2, batch_size=4,
                    dataset_options={"num_cases": 5, "slices_per_case": 2}, metrics=("dice",), threads=1)
    return Config(**{**settings, **changes})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    generator = torch.Generator().manual_seed(3)
    random.seed(1), np.random.seed(2), torch.manual_seed(4)
    states = trainer.rng_states(generator)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(2).tolist(), torch.rand(2, generator=generator).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9), generator.manual_seed(9)
    buffer = __import__("io").BytesIO()
    torch.save(states, buffer)
    buffer.seek(0)
    trainer.set_rng_states(torch.load(buffer, weights_only=True), generator)
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(2).tolist(), torch.rand(2, generator=generator).tolist())
    assert again == expected


def test_resume_refuses_a_pickled_payload_in_last_pt(unfinished_run, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    (unfinished_run / "last.prev.pt").unlink()
    write_malicious(unfinished_run / "last.pt", marker)
    assert trainer.main(["--resume", str(unfinished_run), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert not marker.exists()
    assert f"refused checkpoint {unfinished_run / 'last.pt'}" in error and "could run code" in error
    assert len(error.strip().splitlines()) == 1


def test_an_unsafe_last_pt_is_refused_even_with_a_good_previous_one(unfinished_run, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    write_malicious(unfinished_run / "last.pt", marker)
    assert trainer.main(["--resume", str(unfinished_run), "--quiet"]) == 2
    assert not marker.exists() and "refused checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_predict_refuses_a_pickled_payload_whatever_the_file_name(name, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    write_malicious(tmp_path / name, marker)
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert inference.main(["--checkpoint", str(tmp_path / name), str(image), "--out", str(tmp_path / "masks")]) == 2
    assert not marker.exists()
    assert f"refused checkpoint {tmp_path / name}" in capsys.readouterr().err
    assert not (tmp_path / "masks").exists()


def test_init_weights_with_a_payload_are_refused_before_anything_is_written(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    write_malicious(tmp_path / "init.pt", marker)
    out = tmp_path / "run"
    assert trainer.main(["--dataset", "phantom-lesion", "--init-weights", str(tmp_path / "init.pt"),
                         "--out", str(out), "--quiet"]) == 2
    assert not marker.exists() and "refused checkpoint" in capsys.readouterr().err
    assert not out.exists()
