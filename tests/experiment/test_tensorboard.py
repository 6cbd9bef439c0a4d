"""``--log tensorboard``: a tiny run's event files, read back with tensorboard's own reader,
hold exactly the values of its ``metrics.jsonl`` (loss, terms, lr, scheduled weights, validation
metrics per class) and its config as hyperparameters; a resumed session hides what an
interrupted one logged past its checkpoint; without the package the run fails before any work."""

from medsegloss.experiment import components
from medsegloss.experiment import train_cli
import importlib.util
import json

import numpy as np
import pytest

from medsegloss.experiment import tensorboard, trainer
from medsegloss.experiment.config import Config

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(dataset="phantom-lesion", dataset_options={"num_cases": 6}, image_size=16, base_width=4, depth=1,
            steps=4, val_every=2, batch_size=4, device="cpu", loss="ce + 0.5*dice",
            loss_schedule="dice=linear(0.1, 1.0)", log=("tensorboard",))


def read_events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return events


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "run"
    config = Config.preset("default", **TINY)
    trainer.fit(config, out, quiet=True)
    return config, out


def test_scalars_equal_metrics_jsonl(run):
    config, out = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = read_events(out / "tb")
    class_names = components.make_dataset(config, "val").class_names
    expected = {}
    for record in records:
        for tag, value in tensorboard.scalars(record, class_names).items():
            expected.setdefault(tag, []).append((record["step"], value))
    assert {"loss/total", "loss/ce", "loss/dice", "lr", "term_weights/dice", "val/mean_dice",
            "val/dice/lesion", "val/iou/lesion"} <= set(expected)
    assert sorted(events.Tags()["scalars"]) == sorted(expected)
    for tag, values in expected.items():
        read = [(event.step, event.value) for event in events.Scalars(tag)]
        assert read == [(step, float(np.float32(value))) for step, value in values], tag
    weights = [record["term_weights"]["dice"] for record in records]
    assert weights[0] < weights[-1]  # the schedule's rising weight is what the events show


def test_hyperparameters_are_the_config(run):
    config, out = run
    content = read_events(out / "tb").PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
              for name, value in start.hparams.items()}
    expected = tensorboard.hyperparameters(config.to_dict())
    assert values == expected
    assert values["loss"] == "ce + 0.5*dice" and values["steps"] == 4 and values["log"] == "tensorboard"
    assert values["dataset_options"] == '{"num_cases": 6}' and values["init_weights"] == "none"
    assert values["deterministic"] == "true" and values["lr"] == config.lr


class FakeRun:  # what log_validation reads of a trainer.Run
    def __init__(self, out):
        self.out, self.class_names = out, ["background", "lesion"]
        self.config = Config(log=("tensorboard",))


def record(step, steps, loss):
    return {"step": step, "steps": steps, "train_loss": loss, "terms": {}, "lr": 0.01, "val_dice": 0.5, "val": []}


def test_a_resumed_session_hides_what_the_interrupted_one_logged_past_its_checkpoint(tmp_path):
    first = FakeRun(tmp_path)
    for step in (2, 4, 6):  # logged; then it crashed before the checkpoint of step 6
        tensorboard.log_validation(first, record(step, 2, float(step)))
    resumed = FakeRun(tmp_path)  # resumed from step 4: its first interval is steps 5-6
    tensorboard.log_validation(resumed, record(6, 2, 60.0))
    tensorboard.log_validation(resumed, record(8, 2, 80.0))
    losses = [(event.step, event.value) for event in read_events(tmp_path / "tb").Scalars("loss/total")]
    assert losses == [(2, 2.0), (4, 4.0), (6, 60.0), (8, 80.0)]


def test_without_the_package_it_fails_before_any_work(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "tensorboard" else real(name, *rest))
    out = tmp_path / "run"
    assert train_cli.main(["--log", "tensorboard", "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "--log tensorboard needs the tensorboard package" in error and "pip install" in error
    assert not out.exists()


def test_unknown_logger_is_refused():
    with pytest.raises(ValueError, match="log: unknown logger"):
        Config(log=("wandb",))


def test_tensorboard_logdir_of_a_sweep_shows_every_run_by_its_folder(tmp_path):
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    from medsegloss.experiment import bench

    out = tmp_path / "bench"
    assert bench.main(["--losses", "ce", "dice", "--datasets", "phantom-lesion", "--seeds", "0", "--folds", "2",
                       "--dataset-options", '{"num_cases": 6}', "--steps", "2", "--val-every", "2", "--image-size",
                       "16", "--base-width", "4", "--depth", "1", "--patch", "0", "--device", "cpu",
                       "--log", "tensorboard", "--out", str(out), "--quiet", "--no-report"]) == 0
    runs = EventMultiplexer().AddRunsFromDirectory(str(out))
    runs.Reload()
    assert sorted(runs.Runs()) == [f"phantom-lesion/{loss}/seed0/fold{fold}/tb" for loss in ("ce", "dice")
                                   for fold in (0, 1)]
    scalars = runs.PluginRunToTagToContent("scalars")  # what the Scalars dashboard lists per run
    assert set(scalars) == set(runs.Runs()) and all("val/mean_dice" in tags for tags in scalars.values())


def test_logging_is_not_part_of_a_runs_identity(run):
    config, out = run
    lines = (out / "metrics.jsonl").read_text()
    result = trainer.fit(config.replace(log=()), out, quiet=True)  # the finished run, not "another config"
    assert result["steps"] == 4 and (out / "metrics.jsonl").read_text() == lines
