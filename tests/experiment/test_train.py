"""The trainer end to end on tiny phantoms: run directory format, determinism, resume after an
interruption equal to an uninterrupted run, per-case volume evaluation, cached distance maps,
non-finite losses and clear errors before any work."""

from medsegloss.experiment import components
from medsegloss.experiment import train_cli
import json
import re

import numpy as np
import pytest
import torch

from medsegloss.experiment import cost, evaluation, trainer
from medsegloss.experiment.inference import load_checkpoint
from medsegloss.experiment.config import Config

TIMING = {"seconds", "train_seconds", "images_per_second", "step_seconds"}  # the only fields allowed to differ


def tiny(**changes) -> Config:
    """5 cardiac cases x 3 slices of 32x32 (3 train cases = 3 steps of 3 slices), a 4-wide UNet."""
    settings = dict(dataset="phantom-cardiac", image_size=32, base_width=4, depth=2, epochs=2, batch_size=3,
                    dataset_options={"num_cases": 5, "slices_per_case": 3}, loss="ce + 1.0*dice",
                    val_fraction=0.2, test_fraction=0.2, lr=0.01)
    return Config(**{**settings, **changes})


def trip_loss(monkeypatch, at_call: int, action: str):
    """Make the trainer's loss raise KeyboardInterrupt (Ctrl-C) or return NaN at call ``at_call``."""
    make_loss = components.make_loss

    def patched(config):
        loss = make_loss(config)
        forward, calls = loss.forward, [0]

        def tripping(logits, target, **options):
            calls[0] += 1
            if calls[0] == at_call:
                if action == "interrupt":
                    raise KeyboardInterrupt
                return forward(logits, target, **options) * float("nan")
            return forward(logits, target, **options)

        loss.forward = tripping
        return loss

    for module in (trainer, components):
        monkeypatch.setattr(module, "make_loss", patched)


def weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def lines_without_timing(run_dir) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in line.items() if key not in TIMING} for line in lines]


def result_without_cost(run_dir) -> dict:
    result = json.loads((run_dir / "metrics.json").read_text())
    result.pop("cost")
    return result


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted 3-epoch run, shared by the determinism and resume tests."""
    out = tmp_path_factory.mktemp("reference")
    result = trainer.fit(tiny(epochs=3), out, quiet=True)
    return out, result


def test_run_directory_holds_the_documented_files(reference_run):
    out, result = reference_run
    assert {p.name for p in out.iterdir()} >= {"config.json", "split.json", "metrics.jsonl", "last.pt",
                                               "best.pt", "metrics.json"}
    assert Config.from_dict(json.loads((out / "config.json").read_text())) == tiny(epochs=3)
    split = json.loads((out / "split.json").read_text())
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (3, 1, 1)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3] and [line["step"] for line in lines] == [3, 6, 9]
    for line in lines:
        assert {"epoch", "step", "train_loss", "terms", "val", "lr", "seconds"} <= set(line)
        assert set(line["terms"]) == {"ce", "dice"} and line["lr"] == 0.01
        # the total is the weighted sum of the epoch-averaged terms
        assert line["train_loss"] == pytest.approx(line["terms"]["ce"] + line["terms"]["dice"], rel=1e-5)
        assert {row["class"] for row in line["val"]} >= {1, 2, 3}
    assert set(result) == {"config", "epochs", "steps", "best_epoch", "best_step", "budget", "val", "test_rows",
                           "test", "diagnostics", "cost", "selection"}
    assert result["steps"] == 9 and result["budget"]["images_seen"] == 27 and result["budget"]["val_every"] == 3
    assert result["epochs"] == 3
    best = max(lines, key=lambda line: line["val_dice"])
    assert result["best_epoch"] == best["epoch"] and result["val"] == best["val"]
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == result["best_epoch"]
    assert set(result["cost"]) == {"seconds_per_step", "peak_memory_mb", "train_seconds"}
    assert result["cost"]["seconds_per_step"] > 0 and result["cost"]["peak_memory_mb"] > 10
    # the test rows: one per test case (a whole volume) and foreground class
    assert [(row["case"], row["class"]) for row in result["test_rows"]] == [(split["test"][0], c) for c in (1, 2, 3)]
    assert trainer.fit(tiny(epochs=3), out) == result  # finished: the stored result, no training


def test_run_directory_files_share_the_mode_of_a_plainly_created_file(reference_run, tmp_path):
    """Every file of a run directory (split.json written by the data package, checkpoints and logs
    by the trainer) gets the mode ``open(path, "w")`` gives under the current umask."""
    import os
    import stat

    out, _ = reference_run
    with open(tmp_path / "plain", "w"):
        pass
    plain = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in out.iterdir()}
    assert len(modes) >= 6 and modes == dict.fromkeys(modes, plain)


def test_run_state_round_trips_through_the_checkpoint(reference_run, tmp_path):
    out, result = reference_run
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best_line = next(line for line in lines if line["epoch"] == result["best_epoch"])
    state = trainer.RunState.from_checkpoint(torch.load(out / "last.pt", weights_only=False))
    assert state == trainer.RunState(epoch=3, step=9, best_epoch=result["best_epoch"], best_dice=best_line["val_dice"],
                                     best_step=result["best_step"])
    assert result["best_step"] == 3 * result["best_epoch"]  # 3 steps per epoch
    fresh = trainer.RunState()  # best_dice -inf: no epoch validated yet
    for original in (state, fresh, trainer.RunState(epoch=2, step=6, best_epoch=1, best_dice=0.25)):
        torch.save(original.to_checkpoint(), tmp_path / "state.pt")
        assert trainer.RunState.from_checkpoint(torch.load(tmp_path / "state.pt", weights_only=True)) == original
    with pytest.raises(ValueError, match="best_epoch, best_dice"):  # best.pt holds no training state
        trainer.RunState.from_checkpoint(torch.load(out / "best.pt", weights_only=True))


def test_a_run_builds_its_loss_once(tmp_path, monkeypatch):
    calls = []
    make_loss = components.make_loss
    for module in (trainer, components):
        monkeypatch.setattr(module, "make_loss", lambda config: calls.append(config.loss) or make_loss(config))
    trainer.fit(tiny(epochs=1), tmp_path, quiet=True)
    assert calls == ["ce + 1.0*dice"]


def test_same_config_and_seed_give_the_same_weights(reference_run, tmp_path):
    out, _ = reference_run
    trainer.fit(tiny(epochs=3), tmp_path, quiet=True)
    assert_same_weights(weights(out / "last.pt"), weights(tmp_path / "last.pt"))
    assert lines_without_timing(out) == lines_without_timing(tmp_path)
    assert result_without_cost(out) == result_without_cost(tmp_path)


def test_interrupted_run_resumes_to_the_uninterrupted_result(reference_run, tmp_path, monkeypatch, capsys):
    out, _ = reference_run
    trip_loss(monkeypatch, at_call=5, action="interrupt")  # Ctrl-C at step 5, in epoch 2
    code = train_cli.main(["--dataset", "phantom-cardiac", "--image-size", "32", "--base-width", "4", "--depth", "2",
                       "--epochs", "3", "--batch-size", "3", "--dataset-options", '{"num_cases": 5, "slices_per_case": 3}',
                       "--loss", "ce + 1.0*dice", "--lr", "0.01", "--out", str(tmp_path), "--quiet",
                       # the Config() field defaults where the command's (the benchmark's) differ
                       "--schedule", "constant", "--no-augment", "--metrics", "dice,iou,pixel_error"])
    assert code == 130 and f"--resume {tmp_path}" in capsys.readouterr().err
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1
    assert not (tmp_path / "metrics.json").exists()
    monkeypatch.undo()
    with open(tmp_path / "metrics.jsonl", "a") as log:  # as if it crashed between the log and last.pt
        log.write(json.dumps({"epoch": 2, "step": 6, "train_loss": 0.0}) + "\n")
    assert train_cli.main(["--resume", str(tmp_path), "--quiet"]) == 0
    assert_same_weights(weights(out / "last.pt"), weights(tmp_path / "last.pt"))
    assert_same_weights(weights(out / "best.pt"), weights(tmp_path / "best.pt"))
    assert lines_without_timing(out) == lines_without_timing(tmp_path)
    reference, resumed = result_without_cost(out), result_without_cost(tmp_path)
    assert resumed.pop("config")["out"] == str(tmp_path) and reference.pop("config")["out"] is None
    assert resumed == reference


def test_initial_state_is_the_fit_starting_point(reference_run, tmp_path):
    out, _ = reference_run
    state = components.initial_state(tiny(epochs=3))
    assert not all(torch.equal(state[k], v) for k, v in components.initial_state(tiny(seed=1)).items())
    torch.save(state, tmp_path / "init.pt")
    config = tiny(epochs=3, init_weights=str(tmp_path / "init.pt"))
    trainer.fit(config, tmp_path / "run", quiet=True)
    assert_same_weights(weights(out / "last.pt"), weights(tmp_path / "run" / "last.pt"))


def test_validation_scores_whole_volumes_with_their_spacing(reference_run, monkeypatch):
    """Rows are per case: the case's slices stacked in order, scored with its 3-D spacing;
    recomputed here from best.pt with a plain NumPy Dice."""
    from medsegloss import data, metrics

    out, result = reference_run
    model, config = load_checkpoint(out / "best.pt")
    test = data.get_dataset("phantom-cardiac", split="test", size=32, split_file=str(out / "split.json"),
                            **config.dataset_options)
    (case,) = test.cases
    items = sorted((test[i] for i in range(len(test))), key=lambda item: item["slice"])
    with torch.no_grad():
        predicted = model(torch.stack([item["image"] for item in items])).argmax(1).numpy()
    label = np.stack([item["label"].numpy() for item in items])
    for row in result["test_rows"]:
        p, t = predicted == row["class"], label == row["class"]
        expected = 2 * (p & t).sum() / (p.sum() + t.sum()) if p.sum() + t.sum() else float("nan")
        assert row["dice"] == pytest.approx(expected, abs=1e-12, nan_ok=True)
    seen = {}
    real = metrics.evaluate

    def spy(predictions, labels, num_classes, spacing=None, **options):
        seen.update(shapes=[p.shape for p in predictions], spacing=spacing, cases=options["case_ids"])
        return real(predictions, labels, num_classes, spacing=spacing, **options)

    monkeypatch.setattr(metrics, "evaluate", spy)
    rows = evaluation.evaluate_model(model, test, metrics=("dice", "hd95"))
    assert seen == {"shapes": [(3, 32, 32)], "spacing": [test.volume_spacing(case)], "cases": [case]}
    assert [row["dice"] for row in rows] == pytest.approx([row["dice"] for row in result["test_rows"]], nan_ok=True)
    assert all("hd95" in row for row in rows)


def test_distance_maps_come_cached_from_the_pipeline(tmp_path, monkeypatch):
    """A boundary loss gets ``dist`` from the data pipeline: the signed distance map of the
    batch's target (one channel for a one-channel binary model), computed once per item."""
    from medsegloss import distance

    calls, received = [0], []
    real_map = distance.signed_distance_map

    def counting_map(*args, **kwargs):
        calls[0] += 1
        return real_map(*args, **kwargs)

    monkeypatch.setattr(distance, "signed_distance_map", counting_map)
    make_loss = components.make_loss

    def spying_make_loss(config):
        loss = make_loss(config)
        forward = loss.forward

        def spy(logits, target, dist=None):
            received.append((logits.shape, target.clone(), dist))
            return forward(logits, target, dist=dist)

        loss.forward = spy
        return loss

    for module in (trainer, components):
        monkeypatch.setattr(module, "make_loss", spying_make_loss)
    config = tiny(dataset="phantom-lesion", loss="dice + 0.5*boundary", epochs=2)
    result = trainer.fit(config, tmp_path, quiet=True)
    train_items = 3 * 3
    assert calls[0] == train_items  # once per item over two epochs: cached
    assert len(received) == 6
    for shape, target, dist in received:
        assert shape[1] == 1 and dist is not None and dist.shape == (shape[0], 1, 32, 32)
        torch.testing.assert_close(dist, real_map(target, num_classes=1), rtol=0, atol=0)
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line["terms"]) == {"dice", "boundary"}
    assert {row["class"] for row in result["test_rows"]} == {1}


def test_non_finite_loss_stops_naming_the_step(tmp_path, monkeypatch, capsys):
    trip_loss(monkeypatch, at_call=5, action="nan")
    with pytest.raises(trainer.NonFiniteLossError, match=r"at step 5; .*last.pt of step 3"):
        trainer.fit(tiny(epochs=3), tmp_path, quiet=True)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1  # the last good checkpoint
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (tmp_path / "metrics.json").exists()
    assert train_cli.main(["--resume", str(tmp_path), "--quiet"]) == 1  # the loss still trips at its 5th call
    assert "at step 8;" in capsys.readouterr().err  # resumed after step 3: call 5 = step 8


def test_non_finite_loss_before_the_first_checkpoint_names_no_checkpoint(tmp_path, monkeypatch):
    trip_loss(monkeypatch, at_call=2, action="nan")  # step 2 of the first epoch: nothing saved yet
    with pytest.raises(trainer.NonFiniteLossError, match="at step 2") as caught:
        trainer.fit(tiny(epochs=3), tmp_path, quiet=True)
    assert not (tmp_path / "last.pt").exists()
    assert "last.pt" not in str(caught.value) and "no checkpoint was saved" in str(caught.value)


@pytest.mark.parametrize("flags,message", [
    (["--loss", "dcie"], r"unknown loss 'dcie'\. Did you mean: .*dice"),
    (["--dataset", "phantom-lesoin"], r"unknown dataset 'phantom-lesoin'\. Did you mean: phantom-lesion"),
    (["--loss", "tversky", "--loss-options", '{"alpah": 0.3}'], r"has no option\(s\) alpah"),
    (["--loss", "ce + tversky", "--loss-options", '{"alpah": 0.3}'], r"takes option\(s\) alpah"),
    (["--dataset-options", '{"num_case": 3}'], r"has no option\(s\) num_case"),
    (["--dataset", "acdc"], "needs --data-root"),
    (["--data-root", "/nonexistent/acdc", "--dataset", "acdc"], "data root /nonexistent/acdc"),
    (["--dataset", "phantom-cardiac", "--loss", "bce_iou_ssim"], r"binary \(one-channel\) outputs only"),
    (["--epochs", "0"], "epochs must be a positive int"),
    (["--resume", "/nonexistent/run"], "/nonexistent/run/config.json does not exist"),
])
def test_clear_errors_before_any_work(flags, message, tmp_path, capsys):
    out = tmp_path / "run"
    if "--resume" not in flags:
        flags = flags + ["--out", str(out)]
    assert train_cli.main(flags + ["--quiet"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()  # nothing was written


def test_a_run_directory_refuses_another_config(reference_run):
    out, _ = reference_run
    with pytest.raises(ValueError, match=r"holds a run with another config \(epochs: 3 there, 4 here\)"):
        trainer.fit(tiny(epochs=4), out)


def test_progress_bar_and_epoch_line_unless_quiet(tmp_path, capsys, monkeypatch):
    import tqdm

    bars = []

    class RecordingBar(tqdm.tqdm):  # what the bar was told: images done, unit (-> img/s), loss
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.record = {"total": kwargs["total"], "unit": kwargs["unit"], "done": 0, "postfix": {},
                           "disable": kwargs["disable"]}
            bars.append(self.record)

        def update(self, n=1):
            self.record["done"] += n
            return super().update(n)

        def set_postfix(self, **kwargs):
            self.record["postfix"].update(kwargs)
            return super().set_postfix(**kwargs)

    monkeypatch.setattr(tqdm, "tqdm", RecordingBar)
    trainer.fit(tiny(epochs=1), tmp_path / "loud")
    captured = capsys.readouterr()
    assert re.search(r"step 3/3 \(epoch 1\)  loss \d+\.\d+ \(ce \d+\.\d+, dice \d+\.\d+\)  val dice \d\.\d+  "
                     r"lr 0\.01  \d+\.\d s \(\d+\.\d img/s\)", captured.out)
    assert "train: " in captured.err  # the bar itself
    (bar,) = bars
    assert (bar["total"], bar["unit"], bar["done"], bar["disable"]) == (3, "step", 3, False)
    assert float(bar["postfix"]["loss"]) > 0
    trainer.fit(tiny(epochs=1), tmp_path / "quiet", quiet=True)
    assert capsys.readouterr() == ("", "") and bars[1]["disable"]


def test_mixed_precision_on_cpu_runs_in_bfloat16(tmp_path, monkeypatch):
    dtypes = []
    make_loss = components.make_loss

    def spying_make_loss(config):
        loss = make_loss(config)
        forward = loss.forward
        loss.forward = lambda logits, target, **options: dtypes.append(logits.dtype) or forward(logits, target, **options)
        return loss

    for module in (trainer, components):
        monkeypatch.setattr(module, "make_loss", spying_make_loss)
    result = trainer.fit(tiny(epochs=1, amp=True, device="cpu"), tmp_path, quiet=True)
    assert dtypes == [torch.float32] * 3  # the network ran in bfloat16, the loss gets float32 logits
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert np.isfinite(line["train_loss"]) and result["test_rows"]


def _touch_and_free(megabytes: int) -> None:
    """Raise this process's peak resident memory by ``megabytes`` (a large NumPy array is its own
    mmap, returned to the system when freed)."""
    block = np.ones(megabytes * 2**20 // 8)
    assert block.sum() > 0
    del block


def test_peak_memory_reset_measures_from_the_reset():
    
    cpu = torch.device("cpu")
    if not cost.reset_peak_memory(cpu):
        pytest.skip("the peak resident memory cannot be reset on this system (no /proc/self/clear_refs)")
    _touch_and_free(300)
    before = cost.peak_memory_mb(cpu)
    assert cost.reset_peak_memory(cpu)
    assert cost.peak_memory_mb(cpu) < before - 250  # the 300 MB block no longer counts


def test_each_fit_in_one_process_reports_its_own_peak_memory(tmp_path):
    """A benchmark runs many fits in one process: a small run after a large allocation reports
    its own peak, not the process's (on CPU via the reset of VmHWM at the start of fit)."""
    
    cpu = torch.device("cpu")
    if not cost.reset_peak_memory(cpu):
        pytest.skip("the peak resident memory cannot be reset on this system (no /proc/self/clear_refs)")
    _touch_and_free(600)  # stands for an earlier, larger run
    before = cost.peak_memory_mb(cpu)
    result = trainer.fit(tiny(epochs=1, device="cpu"), tmp_path / "small", quiet=True)
    # without the reset the run would report at least `before`; the tiny run itself (its data, first
    # imports of the metrics) adds ~100 MB to what the process holds, far less than 300
    assert result["cost"]["peak_memory_mb"] < before - 300


def test_deep_supervision_trains_every_head_and_predicts_full_resolution(tmp_path):
    from medsegloss.experiment.inference import load_checkpoint
    from medsegloss.losses import DeepSupervisionLoss

    config = tiny(epochs=1, deep_supervision=True, depth=2, loss="dice_ce")
    out = tmp_path / "ds"
    trainer.fit(config, out, quiet=True)
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    heads = [key for key in checkpoint["model"] if "head" in key]
    assert checkpoint["model_args"]["deep_supervision"] is True and heads
    run = trainer.prepare_run(config, out, components.check_config(config), torch.device("cpu"), quiet=True)
    assert isinstance(run.loss_fn, DeepSupervisionLoss)
    model, _ = load_checkpoint(out / "best.pt")
    image = run.parts["val"][0]["image"][None]
    model.eval()
    assert model(image).shape[-2:] == image.shape[-2:]  # eval: the full-resolution logits only
    with pytest.raises(ValueError, match="distance"):
        components.check_config(tiny(deep_supervision=True, loss="gdl_boundary"))
