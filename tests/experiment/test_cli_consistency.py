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
