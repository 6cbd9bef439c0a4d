"""Several user datasets in one sweep, each under its own name: `medsegloss bench --dataset
NAME=KIND:ROOT` (repeatable) with options per name, checked before any training; the names
name the run folders (OUT/NAME/...), the report's datasets and the merge of shards."""

import json

import pytest
import torch

pytest.importorskip("nibabel")

from nnunet_fixtures import write_nnunet  # noqa: E402

from medsegloss.experiment import bench  # noqa: E402
from medsegloss.experiment.config import parse_dataset_options, parse_named_dataset  # noqa: E402
from medsegloss.experiment.report.analysis import find_runs  # noqa: E402

TINY = ["--losses", "ce", "--seeds", "0", "--epochs", "1", "--image-size", "16", "--base-width", "4", "--depth", "2",
        "--metrics", "dice", "--patch", "0", "--quiet", "--no-report", "--folds", "0"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    write_nnunet(base / "Dataset003_Liver", labels={"background": 0, "liver": 1, "tumor": 2}, cases=5)
    write_nnunet(base / "Dataset005_Prostate", labels={"background": 0, "gland": 1}, channels=("T2",), values=(1,),
                 cases=5, seed=1)
    return base / "Dataset003_Liver", base / "Dataset005_Prostate"


def test_a_named_dataset_is_parsed_and_checked(roots, tmp_path):
    spec = parse_named_dataset(f"liver=nnunet:{roots[0]}")
    assert (spec.name, spec.kind, spec.root) == ("liver", "nnunet", str(roots[0]))
    assert parse_named_dataset("synthetic=phantom-lesion").root is None  # a kind without files
    with pytest.raises(ValueError, match="Did you mean.*nnunet"):
        parse_named_dataset(f"liver=nnunett:{roots[0]}")
    with pytest.raises(FileNotFoundError, match=f"folder {tmp_path / 'missing'} does not exist"):
        parse_named_dataset(f"liver=nnunet:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="needs its folder"):
        parse_named_dataset("liver=nnunet")
    for bad in ("../up", "a/b", ".hidden", "x y", "é"):
        with pytest.raises(ValueError, match="must be 1-64 letters"):
            parse_named_dataset(f"{bad}=nnunet:{roots[0]}")
    with pytest.raises(ValueError, match="expected NAME=KIND:ROOT"):
        parse_named_dataset(f"nnunet:{roots[0]}")


def test_options_per_name_from_json_or_a_file(tmp_path):
    (tmp_path / "liver.json").write_text(json.dumps({"spacing": [2.5, 0.8, 0.8]}))
    (tmp_path / "all.json").write_text(json.dumps({"cells": {"num_classes": 3}}))
    common, per_name = parse_dataset_options(['{"size": 64}', 'liver={"size": 32}', f"liver={tmp_path / 'liver.json'}",
                                              str(tmp_path / "all.json")], ["liver", "cells"])
    assert common == {"size": 64}
    assert per_name == {"liver": {"size": 32, "spacing": [2.5, 0.8, 0.8]}, "cells": {"num_classes": 3}}
    with pytest.raises(ValueError, match=r"'kidney' is not a dataset of this sweep \(liver, cells\)"):
        parse_dataset_options(['kidney={"size": 32}'], ["liver", "cells"])


def test_bad_sweeps_fail_before_any_training(roots, tmp_path, capsys):
    liver, prostate = roots
    cases = [
        ([f"--dataset", f"a=nnunet:{liver}", "--dataset", f"a=nnunet:{prostate}"], "name(s) given twice: a"),
        ([f"--dataset", f"a=nnunt:{liver}"], "Did you mean"),
        ([f"--dataset", f"a=nnunet:{tmp_path / 'nope'}"], "does not exist"),
        ([f"--dataset", f"a/b=nnunet:{liver}"], "must be 1-64 letters"),
        ([f"--dataset", f"a=nnunet:{liver}", "--dataset-options", 'b={"size": 8}'], "'b' is not a dataset"),
    ]
    for arguments, message in cases:
        assert bench.main([*arguments, *TINY, "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_named_datasets_name_run_folders_reports_and_merged_shards(roots, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    liver, prostate = roots
    sweep = ["--dataset", f"liver=nnunet:{liver}", "--dataset", f"prostate=nnunet:{prostate}",
             "--dataset-options", 'prostate={"size": 16}', *TINY]
    try:
        assert bench.main([*sweep, "--out", str(tmp_path / "shard1"), "--shard", "1/2"]) == 0
        assert bench.main([*sweep, "--out", str(tmp_path / "shard2"), "--shard", "2/2"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "shard1" / "liver" / "ce" / "seed0" / "metrics.json").exists()
    assert (tmp_path / "shard2" / "prostate" / "ce" / "seed0" / "metrics.json").exists()
    config = json.loads((tmp_path / "shard2" / "prostate" / "ce" / "seed0" / "config.json").read_text())
    assert (config["dataset"], config["dataset_name"], config["data_root"]) == ("nnunet", "prostate", str(prostate))
    assert config["dataset_options"] == {"size": 16}
    merged = find_runs([tmp_path / "shard1", tmp_path / "shard2"])
    assert merged.datasets == ["liver", "prostate"] and len(merged.runs) == 2 and not merged.unfinished
