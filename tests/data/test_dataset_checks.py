"""Datasets that cannot give a verdict are refused before anything is written, naming why: a
split part without any case (a folder of one case trained and "finished" with nothing evaluated),
a training part whose masks are all background; a dataset.json nested too deeply for the JSON
reader; nnU-Net channel files beyond the channels dataset.json declares."""

from medsegloss.experiment import train_cli
import json
import logging

import numpy as np
import pytest
from PIL import Image

from medsegloss.data import DatasetError, get_dataset
from medsegloss.data.base import check_parts
from medsegloss.experiment import trainer
from nnunet_fixtures import write_nnunet

pytestmark = pytest.mark.usefixtures("one_thread")
DEEP = "[" * 100_000 + "]" * 100_000


def _folder(root, masks):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, mask in enumerate(masks):
        Image.fromarray(mask).save(root / "masks" / f"case{k}.png")
        Image.fromarray(rng.integers(0, 256, mask.shape, dtype=np.uint8)).save(root / "images" / f"case{k}.png")
    return root


def _blob(value=255):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:10, 5:12] = value
    return mask


def _train(root, out, *flags):
    return train_cli.main(["--dataset", "folder", "--data-root", str(root), "--image-size", "16", "--base-width", "2",
                         "--depth", "1", "--steps", "2", "--val-every", "2", "--batch-size", "2", "--metrics", "dice",
                         "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out), *flags])


# ---------------------------------------------------------------- a part without cases
def test_a_folder_of_one_case_is_refused_naming_the_empty_parts(tmp_path, capsys):
    root = _folder(tmp_path / "data", [_blob()])
    assert _train(root, tmp_path / "run") == 2
    error = capsys.readouterr().err
    assert "the val part holds no case" in error and "the test part holds no case" in error, error
    assert "1 case in all" in error and "val_fraction" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_check_parts_names_each_empty_part():
    parts = {name: get_dataset("phantom-lesion", split=name, num_cases=5, size=16, val_fraction=0.2,
                               test_fraction=0.2) for name in ("train", "val", "test")}
    check_parts(parts)  # 3 / 1 / 1 cases: fine
    train = parts["train"]
    empty = type(train)([], name=train.name, class_names=train.class_names, dims=train.dims, split=train.split,
                        split_name="val")
    with pytest.raises(DatasetError, match=r"phantom-lesion: the val part holds no case \(4 cases in all: "
                                           r"train 3, val 0, test 1\)"):
        check_parts({**parts, "val": empty})
    check_parts({"train": parts["train"], "val": parts["val"]})  # a split path without a test part


# ---------------------------------------------------------------- no foreground
def test_masks_that_are_all_background_are_refused(tmp_path, capsys):
    root = _folder(tmp_path / "data", [np.zeros((16, 16), np.uint8) for _ in range(5)])
    assert _train(root, tmp_path / "run", "--val-fraction", "0.2", "--test-fraction", "0.2") == 2
    error = capsys.readouterr().err
    assert "no foreground" in error and "the 3 training case(s)" in error and len(error.strip().splitlines()) == 1, error
    assert not (tmp_path / "run" / "config.json").exists()


def test_foreground_only_in_some_training_cases_is_enough(tmp_path):
    masks = [np.zeros((16, 16), np.uint8) for _ in range(4)] + [_blob()]
    data = get_dataset("folder", _folder(tmp_path, masks), split="all", size=16)
    check_parts({"train": data})


def test_an_ignore_label_is_not_foreground(tmp_path):
    root = tmp_path / "nnunet"
    write_nnunet(root, labels={"background": 0, "liver": 1, "ignore": 2}, channels=("T2",), cases=5, values=(2,))
    parts = {"train": get_dataset("nnunet", root, split="all", size=16)}
    with pytest.raises(DatasetError, match="no foreground"):
        check_parts(parts)


# ---------------------------------------------------------------- dataset.json nested too deeply
@pytest.mark.parametrize("kind", ["nnunet", "msd"])
def test_a_dataset_json_nested_too_deeply_is_an_error_naming_it(kind, tmp_path):
    (tmp_path / "dataset.json").write_text(DEEP)
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'dataset.json'} is not readable JSON: nested too deeply"):
        get_dataset(kind, tmp_path, split="all")


def test_options_nested_too_deeply_are_one_line_errors(tmp_path, capsys):
    from medsegloss.experiment import bench

    deep = '{"a": ' + DEEP + "}"
    assert bench.main(["--datasets", "phantom-lesion", "--dataset-options", deep, "--out", str(tmp_path / "b"),
                       "--quiet"]) == 2
    assert "nested too deeply" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.parse_arguments(["--loss-options", deep])
    error = capsys.readouterr().err
    assert "nested too deeply" in error and "Traceback" not in error


# ---------------------------------------------------------------- nnU-Net channel files beyond dataset.json
def test_an_undeclared_channel_file_is_named(tmp_path, caplog):
    root = tmp_path / "nnunet"
    files = write_nnunet(root, labels={"background": 0, "liver": 1}, channels=("CT",), cases=5, values=(1,))
    extra = root / "imagesTr" / "case_001_0001.nii.gz"
    extra.write_bytes(files["case_001"][0].read_bytes())
    with pytest.raises(DatasetError, match=rf"case 'case_001': channel file\(s\) \['{extra}'\] beyond the 1 channel\(s\) "
                                           rf"{root / 'dataset.json'} declares \(CT\)"):
        get_dataset("nnunet", root, split="all", size=16)
    with caplog.at_level(logging.WARNING, logger="medsegloss.data"):
        data = get_dataset("nnunet", root, split="all", size=16, on_error="skip")
    assert "case_001" not in data.cases and "case_001_0001" in caplog.text


def test_an_undeclared_test_channel_file_is_named(tmp_path):
    root = tmp_path / "nnunet"
    files = write_nnunet(root, labels={"background": 0, "liver": 1}, channels=("CT",), cases=5, values=(1,))
    (root / "imagesTs").mkdir()
    for channel in (0, 1):
        (root / "imagesTs" / f"new_{channel:04d}.nii.gz").write_bytes(files["case_000"][0].read_bytes())
    with pytest.raises(DatasetError, match=r"case 'new': channel file\(s\) .*new_0001\.nii\.gz'\] beyond the 1"):
        get_dataset("nnunet", root, split="all", size=16)
    assert json.loads((root / "dataset.json").read_text())["channel_names"] == {"0": "CT"}
