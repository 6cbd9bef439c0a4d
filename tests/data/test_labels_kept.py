"""Labels are never lost or borrowed (issue #23): classes saved in a mask's alpha band are read
(or refused naming the file), two MSD cases cannot share one label file, and `predict` applies
training's affine check to the channel files of one case."""

import json

import numpy as np
import pytest
from PIL import Image

from medsegloss.experiment import predict
from medsegloss.data import DatasetError, get_dataset
from medsegloss.data.multichannel import read_picture

CLASSES = np.array([[0, 0, 1, 1], [0, 1, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]], np.uint8)


def _folder_with_mask(root, bands, mode):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4, 4), dtype=np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.stack(bands, -1), mode=mode).save(root / "masks" / "a.png")
    return root


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_classes_in_the_alpha_band_are_read(tmp_path, mode):
    grey = np.zeros_like(CLASSES)  # every colour band 0: the classes are only in the alpha
    bands = [grey, CLASSES * 255] if mode == "LA" else [grey, grey, grey, CLASSES * 255]
    root = _folder_with_mask(tmp_path, bands, mode)
    data = get_dataset("folder", root, split="all", size=None)
    np.testing.assert_array_equal(data.case("a").label[0], CLASSES)
    assert data.num_classes == 2


def test_an_alpha_that_marks_the_labelled_pixels_keeps_the_grey_classes(tmp_path):
    labels = CLASSES * 2  # classes 0 and 2 (as saved); alpha 255 exactly where the label is non-zero
    root = _folder_with_mask(tmp_path, [labels, CLASSES * 255], "LA")
    data = get_dataset("folder", root, split="all", size=None, num_classes=3)
    np.testing.assert_array_equal(data.case("a").label[0], labels)


def test_labels_in_both_bands_are_refused_naming_the_file(tmp_path):
    other = np.roll(CLASSES, 1, axis=1) * 255
    root = _folder_with_mask(tmp_path, [CLASSES, other], "LA")
    with pytest.raises(DatasetError, match=r"mask .*a\.png \(mode LA\) holds different labels in its grey/colour "
                                           r"and alpha bands"):
        get_dataset("folder", root, split="all", size=None)


def test_a_picture_label_with_classes_in_the_alpha_is_read(tmp_path):
    path = tmp_path / "label.png"
    Image.fromarray(np.stack([np.zeros_like(CLASSES), CLASSES * 2], -1), mode="LA").save(path)
    np.testing.assert_array_equal(read_picture(path, label=True)[0], CLASSES * 2)


# ---------------------------------------------------------------- MSD: one label file per case
def _edited_task(tmp_path, edit):
    from nnunet_fixtures import edit_dataset_json
    from data.test_msd import write_task  # tests/ is on sys.path (conftest)

    write_task(tmp_path, cases=4)
    edit_dataset_json(tmp_path, edit)
    return tmp_path


def _share_first_label(content):
    training = [dict(entry) for entry in content["training"]]
    training[1]["label"] = training[0]["label"].removeprefix("./")  # the same file, written differently
    return {**content, "training": training}


def test_two_msd_cases_sharing_one_label_file_are_refused(tmp_path):
    root = _edited_task(tmp_path, _share_first_label)
    with pytest.raises(DatasetError, match=r"dataset\.json: cases 'BRATS_001' and 'BRATS_002' share the label "
                                           r"file .*BRATS_001\.nii\.gz"):
        get_dataset("msd", root, split="all", size=None)


@pytest.mark.parametrize("test", ["abc", [1, 2], {"image": "x"}])
def test_an_msd_test_list_that_is_not_a_list_of_paths_is_refused(tmp_path, test):
    root = _edited_task(tmp_path, lambda content: {**content, "test": test})
    with pytest.raises(DatasetError, match=r"dataset\.json: 'test' must be a list of image paths"):
        get_dataset("msd", root, split="all", size=None)


# ---------------------------------------------------------------- predict: the channels of a case on one grid
def test_predict_refuses_channel_files_of_one_case_with_different_affines(tmp_path, capsys, one_thread):
    pytest.importorskip("nibabel")
    import nibabel
    from nnunet_fixtures import AFFINE, write_nifti, write_nnunet

    from medsegloss.experiment import inference, trainer
    from medsegloss.experiment.config import Config

    files = write_nnunet(tmp_path / "Dataset001_Liver", labels={"background": 0, "liver": 1, "tumor": 2}, cases=4)
    config = Config(dataset="nnunet", data_root=str(tmp_path / "Dataset001_Liver"), image_size=16, base_width=2,
                    depth=1, steps=2, batch_size=4, metrics=("dice",), threads=1)
    trainer.fit(config, tmp_path / "run", quiet=True)
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0  # the second channel 5 mm away: not co-registered
    first, second = tmp_path / "in" / "case_000_0000.nii.gz", tmp_path / "in" / "case_000_0001.nii.gz"
    first.parent.mkdir()
    first.write_bytes(files["case_000"][0].read_bytes())
    write_nifti(second, np.asarray(nibabel.load(str(files["case_000"][1])).dataobj), shifted)
    inputs = [str(path) for path in (*files["case_001"], first, second)]
    assert predict.main(["--checkpoint", str(tmp_path / "run" / "best.pt"), *inputs,
                           "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert f"case 'case_000.nii.gz': channel file {second} and channel file {first} have different affines" in error
    assert not (tmp_path / "out").exists()  # refused before any mask is written, as training refuses the case
