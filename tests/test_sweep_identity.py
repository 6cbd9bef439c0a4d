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
