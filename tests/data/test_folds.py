"""Cross-validation folds over units (data/splits.make_folds), a folder's declared groups
(`group=`), and a training run that tests one fold (the trainer's fold split, --select)."""

from __future__ import annotations

from medsegloss.experiment import components
import json

import numpy as np
import pytest
from PIL import Image

from medsegloss import data
from medsegloss.data.splits import PARTS, count_units, folds_of, make_folds

CASES = [f"c{i:02d}" for i in range(23)]


@pytest.mark.parametrize("folds", [2, 5, 23])
def test_every_case_is_tested_exactly_once_and_parts_are_disjoint(folds):
    splits = make_folds(CASES, folds, seed=3)
    tested = [case for split in splits for case in split["test"]]
    assert sorted(tested) == CASES  # each case in exactly one test fold
    for split in splits:
        assert sorted(sum((split[p] for p in PARTS), [])) == CASES  # a partition of the data
        assert split["train"] and not set(split["test"]) & set(split["train"] + split["val"])
    sizes = [len(split["test"]) for split in splits]
    assert max(sizes) - min(sizes) <= 1  # balanced


def test_units_stay_together_and_strata_are_shared():
    units = {case: f"p{int(case[1:]) // 2}" for case in CASES}  # two cases per patient
    groups = {f"p{k}": "A" if k % 3 else "B" for k in range(12)}
    splits = make_folds(CASES, 4, seed=0, units=units, groups=groups)
    for split in splits:
        part_of = {units[case]: part for part in PARTS for case in split[part]}
        for part in PARTS:
            assert all(part_of[units[case]] == part for case in split[part])  # a patient never split
        b_units = {units[c] for c in split["test"] if groups[units[c]] == "B"}
        assert 1 <= len(b_units) <= 2  # 4 B patients dealt over 4 folds


def test_validation_comes_from_the_training_folds_with_at_least_8_units():
    splits = make_folds([f"c{i}" for i in range(25)], 5, seed=1, val_fraction=0.2)
    assert all(len(split["val"]) == 8 and len(split["train"]) == 12 for split in splits)
    small = make_folds([f"c{i}" for i in range(6)], 3, seed=1)
    assert all(len(s["val"]) == 2 and len(s["train"]) == 2 for s in small)  # half of 4 training units


def test_folds_depend_on_the_seed_and_are_deterministic():
    assert make_folds(CASES, 5, seed=1) == make_folds(list(reversed(CASES)), 5, seed=1)
    assert make_folds(CASES, 5, seed=1) != make_folds(CASES, 5, seed=2)


def test_too_many_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 6 units, but the data have 5"):
        make_folds(CASES[:5], 6)
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        make_folds(CASES, 1)


def _folder(root, stems):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        mask = np.zeros((16, 16), np.uint8)
        mask[4:9, 4:9] = 255
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


def test_a_folder_group_regex_keeps_a_patients_slices_in_one_fold(tmp_path):
    stems = [f"patient{p}_slice{z}" for p in range(6) for z in range(3)]
    _folder(tmp_path, stems)
    dataset = data.get_dataset("folder", tmp_path, split="all", size=16, group=r"^(patient\d+)_")
    assert count_units(dataset.split) == 6
    for fold in folds_of(dataset.split, 3, seed=0):
        for part in PARTS:
            patients = {stem.split("_")[0] for stem in fold[part]}
            for other in set(PARTS) - {part}:
                assert not patients & {stem.split("_")[0] for stem in fold[other]}
    split = data.get_dataset("folder", tmp_path, split="train", size=16, group=r"^(patient\d+)_").split
    assert len({stem.split("_")[0] for stem in split["test"]}) * 3 == len(split["test"])


def test_a_folder_group_csv_and_its_errors(tmp_path):
    stems = ["a1", "a2", "b1", "b2"]
    _folder(tmp_path, stems)
    (tmp_path / "groups.csv").write_text("file,group\na1.png,A\na2,A\nb1,B\nb2,B\n")
    dataset = data.get_dataset("folder", tmp_path, split="all", size=16, group="groups.csv")
    assert dataset.split["units"] == {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}
    (tmp_path / "partial.csv").write_text("a1,A\n")
    with pytest.raises(data.DatasetError, match="no group for 3 file"):
        data.get_dataset("folder", tmp_path, split="all", size=16, group="partial.csv")
    with pytest.raises(data.DatasetError, match="does not match the file stem 'b1'"):
        data.get_dataset("folder", tmp_path, split="all", size=16, group=r"^a\d")


def test_a_training_run_tests_its_fold_and_the_last_model(tmp_path):
    from medsegloss.experiment import trainer
    from medsegloss.experiment.config import Config

    config = Config(dataset="phantom-lesion", dataset_options={"num_cases": 6, "slices_per_case": 2},
                    image_size=16, base_width=4, depth=1, steps=4, val_every=1, metrics=("dice",), folds=3, fold=1,
                    device="cpu", threads=1)
    result = trainer.fit(config, tmp_path / "run", quiet=True)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    expected = make_folds([f"lesion{i:03d}" for i in range(6)], 3, seed=0, val_fraction=config.val_fraction)[1]
    assert {part: split[part] for part in PARTS} == expected
    assert sorted({row["case"] for row in result["test_rows"]}) == expected["test"]
    assert result["selection"] == {"select": "last", "step": 4}
    with pytest.raises(ValueError, match="needs fold"):
        components.check_config(config.replace(fold=None))


def test_folds_from_nnunets_splits_final_and_their_errors(tmp_path):
    from medsegloss.data.base import DatasetError
    from medsegloss.data.splits import read_folds_file
    from medsegloss.experiment import trainer
    from medsegloss.experiment.config import Config

    cases = [f"lesion{i:03d}" for i in range(6)]
    splits_final = [{"train": cases[2:], "val": cases[:2]}, {"train": cases[:2] + cases[4:], "val": cases[2:4]},
                    {"train": cases[:4], "val": cases[4:]}]
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps(splits_final))
    folds = read_folds_file(path, cases)
    assert [fold["test"] for fold in folds] == [entry["val"] for entry in splits_final]  # nnU-Net's val is our test
    assert all(sorted(f["train"] + f["val"]) == sorted(e["train"]) for f, e in zip(folds, splits_final))
    config = Config(dataset="phantom-lesion", dataset_options={"num_cases": 6, "slices_per_case": 2}, image_size=16,
                    base_width=4, depth=1, steps=4, val_every=1, metrics=("dice",), folds=3, fold=2,
                    folds_file=str(path), device="cpu", threads=1)
    result = trainer.fit(config, tmp_path / "run", quiet=True)
    assert sorted({row["case"] for row in result["test_rows"]}) == cases[4:]
    path.write_text(json.dumps(splits_final[:2]))
    with pytest.raises(DatasetError, match="cover every case exactly once"):
        read_folds_file(path, cases)
    path.write_text(json.dumps([{"train": ["nope"], "val": cases}, {"train": cases, "val": []}]))
    with pytest.raises(DatasetError, match="does not have"):
        read_folds_file(path, cases)
