"""`train` and `bench` give the same flag the same meaning (issue 21, "One CLI")."""

import pytest

from medsegloss.experiment.config import Config
from medsegloss.experiment.train_cli import parse_arguments


def test_train_dataset_kind_still_works():
    _, given = parse_arguments(["--dataset", "phantom-lesion"])
    assert given["dataset"] == "phantom-lesion" and "dataset_name" not in given


def test_train_dataset_name_kind_root_as_in_bench(tmp_path):
    _, given = parse_arguments(["--dataset", f"mine=folder:{tmp_path}"])
    assert given["dataset"] == "folder"
    assert given["dataset_name"] == "mine"
    assert given["data_root"] == str(tmp_path)
    config = Config.preset("default", **given)
    assert config.run_dir.startswith("runs/mine/")


def test_train_dataset_name_kind_without_root():
    _, given = parse_arguments(["--dataset", "lesions=phantom-lesion"])
    assert (given["dataset"], given["dataset_name"]) == ("phantom-lesion", "lesions")
    assert "data_root" not in given


def test_train_dataset_missing_root_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(["--dataset", f"mine=folder:{tmp_path / 'absent'}"])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_dataset_root_disagreeing_with_data_root(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--dataset", f"mine=folder:{tmp_path}", "--data-root", "/elsewhere"])
    assert "--data-root" in capsys.readouterr().err


def test_train_and_bench_share_their_defaults():
    from medsegloss.experiment import bench, train_cli

    train_config = Config.preset("default", **train_cli.settings("default", {}))
    bench_config, *_ = bench.sweep_from_args(bench.build_parser().parse_args([]))
    for name in ("image_size", "base_width", "depth", "steps", "val_every", "lr", "schedule", "patch", "augment",
                 "batch_size", "metrics"):
        assert getattr(train_config, name) == getattr(bench_config, name), name
    assert (train_config.lr, train_config.schedule) == (0.01, "poly")  # not the old lr 0.001 constant


def test_train_help_shows_the_shared_defaults(capsys):
    from medsegloss.experiment.train_cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "(default: 0.01)" in text and "(default: 64)" in text and "(default: 'poly')" in text


def test_paper_preset_keeps_its_own_settings():
    from medsegloss.experiment import train_cli

    config = Config.preset("paper", **train_cli.settings("paper", {}))
    assert (config.base_width, config.image_size, config.lr, config.epochs) == (64, 256, 0.01, 100)


@pytest.mark.parametrize("flags, expected", [(["--steps", "20"], 1), (["--steps", "400"], 20),
                                             (["--steps", "20", "--val-every", "5"], 5)])
def test_validation_interval_follows_the_budget(flags, expected):
    from medsegloss.experiment import bench, train_cli

    _, given = parse_arguments(flags)
    train_config = Config.preset("default", **train_cli.settings("default", given))
    bench_config, *_ = bench.sweep_from_args(bench.build_parser().parse_args(flags))
    for config in (train_config, bench_config):
        assert config.validation_interval(train_items=12) == expected


def test_val_every_beyond_the_budget_is_an_error_with_a_working_remedy():
    with pytest.raises(ValueError, match="larger than the budget of 20 steps") as error:
        Config(steps=20, val_every=25)
    remedy = int(str(error.value).split("--val-every ")[1].split()[0])
    assert Config(steps=20, val_every=remedy).validation_interval(train_items=12) <= 20


def test_padding_note_names_the_padded_items():
    from medsegloss.experiment.capacity import padding_note

    assert padding_note(None, [(16, 16)]) is None
    assert padding_note(16, [(16, 16), (32, 24)]) is None
    note = padding_note(24, [(16, 20), (32, 32), (20, 40)])
    assert "2 of 3" in note and "16×20" in note and "padded" in note


def test_a_script_without_main_guard_runs_the_sweep_in_process(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import medsegloss

    out = tmp_path / "bench"
    script = tmp_path / "sweep.py"
    flags = ["--losses", "ce", "dice", "--datasets", "phantom-lesion", "--seeds", "0", "--image-size", "16",
             "--base-width", "2", "--depth", "1", "--steps", "2", "--batch-size", "2", "--folds", "none",
             "--dataset-options", '{"num_cases": 5}', "--metrics", "dice", "--no-report", "--jobs", "2",
             "--threads", "1", "--out", str(out)]
    # no `if __name__ == "__main__":`: spawned workers would re-run the sweep
    script.write_text(f"from medsegloss.experiment import bench\nraise SystemExit(bench.main({flags!r}))\n")
    source = str(Path(medsegloss.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "guard" in done.stdout + done.stderr
    assert len(list(out.glob("phantom-lesion/*/seed0/metrics.json"))) == 2


def test_unguarded_main_script_reads_the_guard(tmp_path, monkeypatch):
    import sys
    import types

    from medsegloss.experiment.workers import unguarded_main_script

    for text, unguarded in [("run()\n", True), ('if __name__ == "__main__":\n    run()\n', False),
                            ("if __name__=='__main__':\n    run()\n", False)]:
        path = tmp_path / "script.py"
        path.write_text(text)
        module = types.ModuleType("__main__")
        module.__file__ = str(path)
        monkeypatch.setitem(sys.modules, "__main__", module)
        assert (unguarded_main_script() == str(path)) is unguarded


def test_the_estimate_counts_the_setup_and_is_repeated_after_the_first_run(tmp_path, capsys):
    import re

    from medsegloss.experiment import bench

    code = bench.main(["--losses", "ce", "dice", "--datasets", "phantom-lesion", "--seeds", "0", "--image-size", "16",
                       "--base-width", "2", "--depth", "1", "--steps", "4", "--batch-size", "2", "--folds", "none",
                       "--dataset-options", '{"num_cases": 5}', "--metrics", "dice", "--no-report", "--jobs", "1",
                       "--threads", "1", "--out", str(tmp_path / "bench")])
    assert code == 0
    text = capsys.readouterr().out
    assert re.search(r"[0-9.]+ s setup", text), text  # the setup (data build, loader start) is counted
    first = re.search(r"the first run took ([0-9.]+) s: expected about ([0-9.]+) min for all 2 runs \(measured\)", text)
    assert first is not None, text
    assert float(first.group(2)) == pytest.approx(round(2 * float(first.group(1)) / 60, 1), abs=0.051)
