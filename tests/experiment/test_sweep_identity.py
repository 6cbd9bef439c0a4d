"""A sweep never claims what it did not run (issue #23): `bench` on a finished OUT with other
settings is refused before any training, naming the fields, and bench.json keeps stating what
the runs used; two loss strings that name one run folder are refused before any training."""

import json

import pytest

from medsegloss.experiment import bench

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--datasets", "phantom-lesion", "--seeds", "0", "--folds", "0", "--steps", "4", "--val-every", "2",
        "--image-size", "16", "--base-width", "4", "--depth", "1", "--patch", "0", "--batch-size", "4",
        "--metrics", "dice", "--dataset-options", '{"num_cases": 6, "slices_per_case": 2}', "--threads", "1",
        "--no-report", "--quiet"]


def _stamps(out):
    return {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("identity") / "bench"
    assert bench.main(["--losses", "ce", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.parametrize("flags, field, there, here", [
    (["--lr", "0.005"], "lr", "0.01", "0.005"),
    (["--optimizer", "sgd"], "optimizer", "'adam'", "'sgd'"),
    (["--steps", "300"], "steps", "4", "300"),
])
def test_other_settings_on_a_finished_out_are_refused_naming_the_field(finished_sweep, flags, field, there, here,
                                                                       capsys):
    record = (finished_sweep / "bench.json").read_text()
    stamps = _stamps(finished_sweep)
    assert bench.main(["--losses", "ce", "--out", str(finished_sweep), *TINY, *flags]) == 2
    error = capsys.readouterr().err
    assert f"{field}: {there} there, {here} here" in error and "another --out" in error
    assert error.count("\n") == 1  # one line
    assert _stamps(finished_sweep) == stamps  # nothing trained, nothing rewritten
    assert (finished_sweep / "bench.json").read_text() == record


def test_another_loss_with_other_settings_is_refused_by_the_sweep_record(finished_sweep, capsys):
    # no run of `dice` exists yet, but bench.json (and the ce run) state lr 0.01: mixing is refused
    stamps = _stamps(finished_sweep)
    assert bench.main(["--losses", "dice", "--out", str(finished_sweep), *TINY, "--lr", "0.005"]) == 2
    error = capsys.readouterr().err
    assert "lr: 0.01 there, 0.005 here" in error and str(finished_sweep / "bench.json") in error
    assert _stamps(finished_sweep) == stamps


def test_the_same_settings_still_skip_and_record_the_runs(finished_sweep):
    assert bench.main(["--losses", "ce", "--out", str(finished_sweep), *TINY]) == 0
    settings = json.loads((finished_sweep / "bench.json").read_text())["settings"]
    stored = json.loads((finished_sweep / "phantom-lesion" / "ce" / "seed0" / "config.json").read_text())
    assert all(settings[key] == stored[key] for key in ("lr", "optimizer", "steps", "image_size"))


def test_two_loss_strings_of_one_run_folder_are_refused_before_training(tmp_path, capsys):
    out = tmp_path / "b"
    assert bench.main(["--losses", "ce+dice", "ce + dice", "--out", str(out), *TINY]) == 2
    error = capsys.readouterr().err
    assert "'ce+dice' and 'ce + dice'" in error and "one run folder" in error
    assert not out.exists()


# ---------------------------------------------------------------- report: one bad run is skipped, named
def _fabricated_run(out, loss, seed):
    """A finished run as `fit` writes it (config, metrics.json with test rows), no training."""
    from medsegloss._io import write_json
    from medsegloss.experiment.config import Config, loss_slug

    config = Config(dataset="phantom-lesion", loss=loss, seed=seed).to_dict()
    run = out / "phantom-lesion" / loss_slug(loss) / f"seed{seed}"
    write_json(run / "config.json", config)
    rows = [{"case": f"case{k}", "class": 1, "dice": 0.5 + 0.05 * k + 0.02 * (loss == "dice"), "empty": "none"}
            for k in range(4)]
    write_json(run / "metrics.json", {"config": config, "test_rows": rows, "test": [], "cost": {}})
    return run


@pytest.mark.parametrize("corruption, named", [
    ("{", "metrics.json is corrupt"),
    ("[1, 2]", "metrics.json is not a run's result"),
    ('{"test_rows": [], "config": {"dataset": "phantom-lesion", "loss": "ce"}}', "no valid config"),
])
def test_report_skips_a_corrupt_run_with_a_warning_naming_its_file(tmp_path, corruption, named, capsys):
    from medsegloss.experiment import report
    from medsegloss.experiment.report.analysis import find_runs

    for seed in (0, 1):
        for loss in ("ce", "dice"):
            _fabricated_run(tmp_path, loss, seed)
    bad = tmp_path / "phantom-lesion" / "dice" / "seed1"
    (bad / "metrics.json").write_text(corruption)
    (tmp_path / "bench.json").write_text('["not", "a", "record"]')
    runs = find_runs([tmp_path])
    assert sorted((run.loss, run.seed) for run in runs.runs) == [("ce", 0), ("ce", 1), ("dice", 0)]
    warning = capsys.readouterr().err
    assert f"skipped the run in {bad}" in warning and named in warning
    assert f"ignored {tmp_path / 'bench.json'} (not a bench record)" in warning
    assert report.main([str(tmp_path), "--no-figures", "--dest", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "REPORT.md").exists()
