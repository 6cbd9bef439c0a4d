"""The verdict you can trust, end to end on tiny sweeps: a deliberately unconverged sweep (12
steps, Dice still rising) and a deliberately collapsed one (lr 50) are flagged in metrics.json by
the stated rules and said so in the report and by `bench`'s exit status; a constant-rate run
continued to a larger --steps equals one started with it; --jobs 2 equals --jobs 1; early stopping."""

import csv
import io
import json
import statistics

import pytest
import torch

from medsegloss.experiment import bench, report, trainer
from medsegloss.experiment.config import Config
from medsegloss.experiment.verdict import convergence_summary

TINY = {"image_size": 32, "base_width": 4, "depth": 2, "batch_size": 8, "lr": 1e-2, "metrics": ("dice",),
        "device": "cpu", "dataset_options": {"num_cases": 6, "slices_per_case": 4}, "val_fraction": 0.2,
        "test_fraction": 0.34, "threads": 1}
TIMING_COLUMNS = {"seconds_per_step", "peak_memory_mb", "train_seconds"}
TIMING = {"seconds", "train_seconds", "images_per_second", "step_seconds"}


def tiny(**changes) -> Config:
    return Config.preset("default", **{**TINY, **changes})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def unconverged(tmp_path_factory):
    """ce and dice for 16 steps, validated every step: dice's validation Dice still rises."""
    out = tmp_path_factory.mktemp("verdict") / "short"
    bench.run_sweep(tiny(steps=16, val_every=1), ["phantom-lesion"], ["ce", "dice"], [0], out, quiet=True, jobs=1)
    report.write_report([out], figures=False)
    return out


def read_lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_diagnostics_follow_the_rules_on_the_recorded_history(unconverged):
    for loss in ("ce", "dice"):
        run = unconverged / "phantom-lesion" / loss / "seed0"
        result, lines = json.loads((run / "metrics.json").read_text()), read_lines(run)
        assert [line["step"] for line in lines] == list(range(1, 17)) and result["steps"] == 16
        summary = convergence_summary([(line["step"], line["val_dice"]) for line in lines], 16)
        diagnostics = result["diagnostics"]
        assert {key: diagnostics[key] for key in summary} == summary
        assert diagnostics["validation_cases"] == 1 and not diagnostics["stopped_early"]
        # the cost is the median of the per-window step times, not their mean
        times = [t for line in lines for t in line["step_seconds"]]
        assert len(times) == 16 and result["cost"]["seconds_per_step"] == pytest.approx(statistics.median(times))
        budget = result["budget"]
        assert (budget["steps"], budget["images_seen"], budget["schedule"], budget["patch"]) == (16, 128, "constant", None)
    dice = json.loads((unconverged / "phantom-lesion" / "dice" / "seed0" / "metrics.json").read_text())["diagnostics"]
    assert dice["status"] == "not converged" and dice["not_converged"] is True
    assert dice["change_low"] > 0.01  # the rise over the last quarter, at its lower 95 % bound


def test_the_report_says_not_converged_and_how_to_continue(unconverged):
    text = (unconverged / "REPORT.md").read_text()
    banner = text.split("Runs read from")[0]
    assert "**Verdict not ready**" in banner and "`phantom-lesion` / `dice` (not converged: its mean validation" in banner
    assert f"--steps 32 --out {unconverged}`" in banner and "continue from their last step" in banner
    assert "Budget: 16 optimizer steps per run (128 training samples seen, batch 8), constant learning rate" in text
    assert "On phantom-lesion: no answer yet" in text.split("## Answer")[1]
    paired = text.split("## Against")[1].split("## ")[0]
    assert "| phantom-lesion | dice | not converged |" in paired and " better" not in paired and " worse" not in paired
    assert "class='banner not-ready'" in (unconverged / "report.html").read_text()
    assert "NOT READY" in report.readiness_line(unconverged)


def test_a_constant_rate_run_continues_to_a_larger_budget_bit_identically(tmp_path):
    short, fresh = tmp_path / "short", tmp_path / "fresh"
    trainer.fit(tiny(steps=4, val_every=2, patch=16, augment=True), short, quiet=True)
    continued = trainer.fit(tiny(steps=8, val_every=2, patch=16, augment=True), short, quiet=True)
    started = trainer.fit(tiny(steps=8, val_every=2, patch=16, augment=True), fresh, quiet=True)
    a, b = (torch.load(path / "last.pt", weights_only=True) for path in (short, fresh))
    assert a["step"] == b["step"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert str(a["optimizer"]) == str(b["optimizer"])
    strip = lambda lines: [{k: v for k, v in line.items() if k not in TIMING} for line in lines]  # noqa: E731
    assert strip(read_lines(short)) == strip(read_lines(fresh))
    for result in (continued, started):
        result.pop("cost")
        result["config"].pop("out")
    assert continued == started
    # a schedule tied to the budget cannot continue: the run directory refuses the new budget
    trainer.fit(tiny(steps=4, val_every=2, schedule="poly"), tmp_path / "poly", quiet=True)
    with pytest.raises(ValueError, match="another config"):
        trainer.fit(tiny(steps=8, val_every=2, schedule="poly"), tmp_path / "poly", quiet=True)


def test_jobs_2_gives_the_results_of_jobs_1(unconverged, tmp_path):
    out = tmp_path / "parallel"
    outcome = bench.run_sweep(tiny(steps=16, val_every=1), ["phantom-lesion"], ["ce", "dice"], [0], out,
                              quiet=True, jobs=2)
    assert outcome == {"jobs": 2, "trained": 2, "skipped": 0, "failed": []}
    report.write_report([out], figures=False)

    def table(folder):
        rows = list(csv.DictReader(io.StringIO((folder / "results.csv").read_text())))
        return [{key: value for key, value in row.items() if key not in TIMING_COLUMNS} for row in rows]

    assert table(out) == table(unconverged) and len(table(out)) == 2


def test_collapsed_sweep_is_flagged_and_bench_exits_3(tmp_path, capsys):
    out = tmp_path / "collapsed"
    status = bench.main(["--datasets", "phantom-lesion", "--losses", "ce", "dice", "--seeds", "0", "--out", str(out),
                         "--image-size", "32", "--base-width", "4", "--depth", "2", "--steps", "6", "--val-every", "2",
                         "--lr", "50", "--patch", "0", "--metrics", "dice", "--threads", "1", "--jobs", "1",
                         "--dataset-options", '{"num_cases": 6, "slices_per_case": 4}', "--val-fraction", "0.2",
                         "--test-fraction", "0.34", "--quiet", "--no-augment", "--folds", "0"])
    assert status == bench.NOT_READY == 3
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("bench: verdict NOT READY: 2 (dataset, loss)")
    result = json.loads((out / "phantom-lesion" / "dice" / "seed0" / "metrics.json").read_text())
    dice = result["diagnostics"]["status"]
    assert dice in ("collapsed", "not learned")  # lr 50: background everywhere or a flood
    assert result["diagnostics"]["collapsed_cases"] == result["diagnostics"]["validation_cases"] == 1
    assert set(result["diagnostics"]["collapse_kinds"]) <= {"one class everywhere", "oversized foreground"}
    assert result["budget"]["schedule"] == "poly" and result["budget"]["augment"] is False
    text = (out / "REPORT.md").read_text()
    assert f"`phantom-lesion` / `dice` ({dice} in 1 of 1 runs: seed 0)" in text
    ce = json.loads((out / "phantom-lesion" / "ce" / "seed0" / "metrics.json").read_text())["diagnostics"]["status"]
    assert ce in ("collapsed", "not learned")  # lr 50: nothing usable either way
    assert f"`phantom-lesion` / `ce` ({ce} in 1 of 1 runs: seed 0)" in text
    assert f"| phantom-lesion | dice | {dice} |" in text
    assert f"--steps 12 --out {out}-steps12`" in text and "the runs restart" in text


def test_until_converged_stops_when_patience_runs_out(tmp_path):
    # ce's validation Dice stays at 0.0 over these first steps: no improvement after the first validation
    result = trainer.fit(tiny(until_converged=True, max_steps=12, patience=2, val_every=1), tmp_path, quiet=True)
    assert result["steps"] == 3 and result["diagnostics"]["stopped_early"] is True
    assert result["budget"]["planned_steps"] == 12 and len(read_lines(tmp_path)) == 3


def test_the_more_budget_command_is_the_users_own_with_steps_and_out_replaced():
    from medsegloss.experiment.report.readiness import _options_with

    command = ["--datasets", "folder", "--data-root", "folder=/my data/x", "--steps", "500", "--out=runs/a"]
    assert (_options_with(command, steps="1000", out="runs/a-steps1000")
            == "--datasets folder --data-root 'folder=/my data/x' --steps 1000 --out runs/a-steps1000")
    assert _options_with(None, steps="8", out="o") == "<the same options> --steps 8 --out o"


def test_the_more_budget_command_sets_the_validation_interval_when_runs_were_not_assessable(tmp_path):
    from medsegloss.experiment.report.readiness import more_budget

    budget = {"planned_steps": 20, "schedule": "constant", "val_every": 10}
    results = {"runs": [{"dataset": "d", "budget": budget, "step_budget": True}]}
    (tmp_path / "bench.json").write_text(json.dumps({"command": ["--steps", "20", "--val-every", "10"]}))
    continued = more_budget(results, str(tmp_path))
    assert continued["continues"] and "--val-every 10" in continued["command"]
    remedy = more_budget(results, str(tmp_path), assessable=False)
    assert not remedy["continues"] and remedy["command"].endswith(f"--steps 40 --out {tmp_path}-steps40 --val-every 2")
    assert "validation interval" in remedy["how"]
