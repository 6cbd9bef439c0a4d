"""``nnunet`` on tiny datasets written in the real nnU-Net v2 raw layout: NIfTI through nibabel
(affines and zooms in the header), PNG through Pillow, dataset.json as nnU-Net documents it."""

import json
import logging

import numpy as np
import pytest
import torch

nibabel = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

from medsegloss.data import DatasetError, available, class_names, get_dataset  # noqa: E402
from nnunet_fixtures import edit_dataset_json

ZOOMS = (0.8, 0.9, 3.0)  # (x, y, z) in the header -> spacing (z, y, x) = (3.0, 0.9, 0.8)
SHAPE_XYZ = (12, 10, 4)


def write_nifti(path, array_xyz, zooms=ZOOMS, affine=None):
    affine = np.diag([*zooms, 1.0]) if affine is None else affine
    image = nibabel.Nifti1Image(np.asarray(array_xyz), affine)
    image.header.set_zooms(zooms)
    nibabel.save(image, str(path))


def write_dataset(root, *, labels, channels=("CT", "T2"), cases=6, label_values=(0, 1, 2), seed=0,
                  ending=".nii.gz", tests=0, number=None):
    """An nnU-Net v2 raw dataset; returns {case: (images (C, z, y, x), label (z, y, x))}."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    written = {}
    for k in range(cases):
        case = f"case_{k:03d}"
        label = rng.choice(label_values, SHAPE_XYZ).astype(np.uint8)
        write_nifti(root / "labelsTr" / f"{case}{ending}", label)
        images = []
        for c, name in enumerate(channels):
            image = rng.normal(40 if name == "CT" else 300, 25, SHAPE_XYZ).astype(np.float32)
            if name != "CT":
                image[:3] = 0  # an exact-0 background, as skull-stripped MRI
            write_nifti(root / "imagesTr" / f"{case}_{c:04d}{ending}", image)
            images.append(image.transpose(2, 1, 0))
        written[case] = (np.stack(images), label.transpose(2, 1, 0))
    if tests:
        (root / "imagesTs").mkdir()
        for k in range(tests):
            for c in range(len(channels)):
                write_nifti(root / "imagesTs" / f"test_{k:03d}_{c:04d}{ending}", rng.normal(0, 1, SHAPE_XYZ))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): name for c, name in enumerate(channels)}, "labels": labels,
        "numTraining": cases if number is None else number, "file_ending": ending}, indent=1))
    return written


LIVER = {"background": 0, "liver": 1, "tumor": 2}
BRATS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing": 3}


def test_registered_and_read_with_channels_spacing_and_labels(tmp_path):
    written = write_dataset(tmp_path, labels=LIVER)
    assert "nnunet" in available() and class_names("nnunet") is None
    volumes = get_dataset("nnunet", tmp_path, split="all", size=None, dims=3)
    assert volumes.cases == sorted(written) and volumes.class_names == ["background", "liver", "tumor"]
    assert volumes.num_channels == 2 and volumes.channel_names == ["CT", "T2"] and not volumes.multilabel
    item = volumes[2]
    assert item["image"].shape == (2, 4, 10, 12) and item["image"].dtype == torch.float32
    assert item["spacing"] == pytest.approx((3.0, 0.9, 0.8))
    assert torch.equal(item["label"], torch.from_numpy(written["case_002"][1].astype(np.int64)))
    slices = get_dataset("nnunet", tmp_path, split="all", size=None)
    assert len(slices) == 6 * 4
    slice_item = slices[2 * 4 + 1]
    assert slice_item["image"].shape == (2, 10, 12) and slice_item["slice"] == 1
    assert slice_item["spacing"] == pytest.approx((0.9, 0.8))
    torch.testing.assert_close(slice_item["image"], item["image"][:, 1])


def test_split_is_by_case_and_parts_are_disjoint(tmp_path):
    write_dataset(tmp_path, labels=LIVER, cases=10)
    parts = {name: get_dataset("nnunet", tmp_path, split=name, size=16, seed=3) for name in ("train", "val", "test")}
    cases = [set(part.cases) for part in parts.values()]
    assert set().union(*cases) == {f"case_{k:03d}" for k in range(10)} and sum(map(len, cases)) == 10
    for part in parts.values():  # every slice of a case is in the part that holds the case
        assert {part[i]["case"] for i in range(len(part))} == set(part.cases) and len(part) == 4 * len(part.cases)


def test_normalization_ct_global_foreground_and_zscore_of_nonzero(tmp_path):
    written = write_dataset(tmp_path, labels=LIVER)
    train = get_dataset("nnunet", tmp_path, split="train", size=None, dims=3)
    test = get_dataset("nnunet", tmp_path, split="test", size=None, dims=3)
    # reference in float64: pooled foreground of the *training* cases (label > 0), all voxels
    foreground = np.concatenate([written[c][0][0][written[c][1] > 0] for c in train.cases]).astype(np.float64)
    low, high = np.percentile(foreground, [0.5, 99.5])
    mean, std = foreground.mean(), foreground.std()
    for dataset in (train, test):  # the test split uses the training statistics
        case = dataset.cases[0]
        raw = written[case][0]
        item = dataset[0]
        np.testing.assert_allclose(item["image"][0].numpy(), (np.clip(raw[0], low, high) - mean) / std,
                                   rtol=1e-5, atol=1e-5)
        nonzero = raw[1][raw[1] != 0].astype(np.float64)
        np.testing.assert_allclose(item["image"][1].numpy(), (raw[1] - nonzero.mean()) / nonzero.std(),
                                   rtol=1e-5, atol=1e-5)
    assert train.options["ct_statistics"]["CT"] == pytest.approx([low, high, mean, std], rel=1e-6)


def test_regions_are_multi_hot_and_the_ignore_label_a_mask(tmp_path):
    labels = {**BRATS, "ignore": 4}
    written = write_dataset(tmp_path, labels=labels, channels=("FLAIR", "T1", "T1ce", "T2"),
                            label_values=(0, 1, 2, 3, 4))
    data = get_dataset("nnunet", tmp_path, split="all", size=None, dims=3)
    assert data.multilabel and data.region_names == ["whole tumor", "tumor core", "enhancing"]
    assert data.region_values == [[1, 2, 3], [2, 3], [3]] and data.num_classes == 3 and data.ignore_index == 4
    item = data[0]
    label = written[data.cases[0]][1]
    assert item["label"].dtype == torch.float32 and item["label"].shape == (3, 4, 10, 12)
    for r, values in enumerate(data.region_values):
        assert torch.equal(item["label"][r], torch.from_numpy(np.isin(label, values).astype(np.float32)))
    assert torch.equal(item["ignore"], torch.from_numpy(label == 4))
    assert item["image"].shape == (4, 4, 10, 12)
    # whole tumour contains the core, which contains the enhancing part
    assert (item["label"][0] >= item["label"][1]).all() and (item["label"][1] >= item["label"][2]).all()
    slices = get_dataset("nnunet", tmp_path, split="all", size=None)
    assert slices[1]["label"].shape == (3, 10, 12) and torch.equal(slices[1]["label"], item["label"][:, 1])
    batch = next(iter(torch.utils.data.DataLoader(slices, batch_size=4)))
    assert batch["label"].shape == (4, 3, 10, 12) and batch["ignore"].shape == (4, 10, 12)


def test_ignore_label_with_integer_classes_keeps_its_value(tmp_path):
    written = write_dataset(tmp_path, labels={**LIVER, "ignore": 3}, label_values=(0, 1, 2, 3))
    data = get_dataset("nnunet", tmp_path, split="all", size=None, dims=3)
    assert data.ignore_index == 3 and data.num_classes == 3 and not data.multilabel
    assert torch.equal(data[0]["label"], torch.from_numpy(written[data.cases[0]][1].astype(np.int64)))
    assert "ignore" not in data[0]


def test_png_dataset_rgb_in_one_file_and_grey_channels(tmp_path):
    rng = np.random.default_rng(1)
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "rgb" / sub).mkdir(parents=True)
        (tmp_path / "grey" / sub).mkdir(parents=True)
    pictures = {}
    for k in range(4):
        rgb = rng.integers(1, 256, (9, 14, 3), dtype=np.uint8)  # no 0: nonzero z-score = plain
        grey = rng.integers(1, 256, (2, 9, 14), dtype=np.uint8)
        label = rng.integers(0, 2, (9, 14), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / "rgb" / "imagesTr" / f"road_{k}_0000.png")
        for c in range(2):
            Image.fromarray(grey[c]).save(tmp_path / "grey" / "imagesTr" / f"road_{k}_{c:04d}.png")
        for name in ("rgb", "grey"):
            Image.fromarray(label).save(tmp_path / name / "labelsTr" / f"road_{k}.png")
        pictures[f"road_{k}"] = (rgb, grey, label)
    for name, channels in (("rgb", {"0": "R", "1": "G", "2": "B"}), ("grey", {"0": "A", "1": "B"})):
        (tmp_path / name / "dataset.json").write_text(json.dumps(
            {"channel_names": channels, "labels": {"background": 0, "road": 1}, "numTraining": 4, "file_ending": ".png"}))
    rgb_data = get_dataset("nnunet", tmp_path / "rgb", split="all", size=None)
    item = rgb_data[1]
    rgb, _, label = pictures[item["case"]]
    assert item["image"].shape == (3, 9, 14) and item["slice"] == -1 and item["spacing"] == (1.0, 1.0)
    expected = rgb.transpose(2, 0, 1).astype(np.float64)
    expected = (expected - expected.mean(axis=(1, 2), keepdims=True)) / expected.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(item["image"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(item["label"], torch.from_numpy(label.astype(np.int64)))
    grey_item = get_dataset("nnunet", tmp_path / "grey", split="all", size=32)[0]
    assert grey_item["image"].shape == (2, 32, 32) and grey_item["label"].shape == (32, 32)


def test_resampling_to_a_target_spacing(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None] * 5.0, SHAPE_XYZ)  # linear in x
    label = (np.arange(12)[:, None, None] >= 6).repeat(10, 1).repeat(4, 2).astype(np.uint8)
    for k in range(3):
        write_nifti(tmp_path / "imagesTr" / f"c{k}_0000.nii.gz", ramp)
        write_nifti(tmp_path / "labelsTr" / f"c{k}.nii.gz", label)
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "noNorm"}, "labels": {"background": 0, "x": 1},
                                                       "numTraining": 3, "file_ending": ".nii.gz"}))
    data = get_dataset("nnunet", tmp_path, split="all", size=None, dims=3, spacing=(1.5, 0.9, 0.4))
    item = data[0]
    # new voxels per axis: round(old * spacing / target): z 4*3/1.5 = 8, y 10, x 12*0.8/0.4 = 24
    assert item["image"].shape == (1, 8, 10, 24) and item["label"].shape == (8, 10, 24)
    assert item["spacing"] == pytest.approx((1.5, 0.9, 0.4))
    # linear interpolation of a linear ramp is the ramp at the new voxel centres (away from the edges)
    centres = (np.arange(24) + 0.5) * 12 / 24 - 0.5
    np.testing.assert_allclose(item["image"][0, 3, 4, 1:-1].numpy(), 5.0 * centres[1:-1], rtol=1e-5)
    # nearest neighbour keeps the label's values and its edge at x = 6 old voxels = 12 new voxels
    assert torch.equal(item["label"][3, 4], torch.from_numpy((np.arange(24) >= 12).astype(np.int64)))
    with pytest.raises(ValueError, match="spacing must be None or three positive numbers"):
        get_dataset("nnunet", tmp_path, spacing=(1.0, 0.0, 1.0))


def test_images_ts_are_listed_not_loaded(tmp_path):
    write_dataset(tmp_path, labels=LIVER, tests=2)
    data = get_dataset("nnunet", tmp_path, split="all", size=16)
    assert sorted(data.test_images) == ["test_000", "test_001"]
    assert [p.name for p in data.test_images["test_001"]] == ["test_001_0000.nii.gz", "test_001_0001.nii.gz"]
    assert "test_000" not in data.cases


# ------------------------------------------------------------------------------------ errors
def test_missing_channel_file_names_the_case_and_file(tmp_path, caplog):
    write_dataset(tmp_path, labels=LIVER)
    (tmp_path / "imagesTr" / "case_003_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case 'case_003': channel 1 \('T2'\) file .*imagesTr/case_003_0001\.nii\.gz "
                                           "does not exist"):
        get_dataset("nnunet", tmp_path, split="all")
    with caplog.at_level(logging.WARNING, logger="medsegloss.data"):
        data = get_dataset("nnunet", tmp_path, split="all", size=16, on_error="skip")
    assert "case_003" not in data.cases and len(data.cases) == 5 and "case_003_0001" in caplog.text


def test_shape_mismatch_names_both_files(tmp_path):
    write_dataset(tmp_path, labels=LIVER)
    write_nifti(tmp_path / "imagesTr" / "case_001_0001.nii.gz", np.zeros((12, 10, 5), np.float32))
    with pytest.raises(DatasetError, match=r"case 'case_001': image .*case_001_0001\.nii\.gz has shape \(5, 10, 12\) "
                                           r"\(z, y, x\) but its label .*labelsTr/case_001\.nii\.gz has \(4, 10, 12\)"):
        get_dataset("nnunet", tmp_path, split="all")


def test_affine_mismatch_names_both_files(tmp_path):
    write_dataset(tmp_path, labels=LIVER)
    shifted = np.diag([*ZOOMS, 1.0])
    shifted[:3, 3] = (10.0, 0.0, 0.0)
    write_nifti(tmp_path / "imagesTr" / "case_002_0000.nii.gz", np.zeros(SHAPE_XYZ, np.float32), affine=shifted)
    with pytest.raises(DatasetError, match=r"case 'case_002': image .*case_002_0000\.nii\.gz and label "
                                           r".*case_002\.nii\.gz have different affines"):
        get_dataset("nnunet", tmp_path, split="all")


def test_undeclared_label_values_are_an_error(tmp_path):
    write_dataset(tmp_path, labels=LIVER, label_values=(0, 1, 2, 5))
    with pytest.raises(DatasetError, match=r"case 'case_000': label .*case_000\.nii\.gz holds values \[5\] not "
                                           r"declared in dataset.json \(declared: \[0, 1, 2\]\)"):
        get_dataset("nnunet", tmp_path, split="all")


@pytest.mark.parametrize("edit, message", [
    (lambda content: None, r"dataset\.json does not exist"),
    (lambda content: "{not json", r"dataset\.json is not readable JSON"),
    (lambda content: {k: v for k, v in content.items() if k != "file_ending"},
     r"lacks the key\(s\) \['file_ending'\]"),
    (lambda content: {**content, "labels": {"background": 0, "a": 1, "b": 3}},
     r"consecutive from 0 .* got \[0, 1, 3\]"),
    (lambda content: {**content, "labels": {"background": 0, "ignore": 1, "a": 2}},
     r"'ignore' label must have the highest value"),
    (lambda content: {**content, "labels": {"liver": 1}}, r"must map the background to 0"),
    (lambda content: {**content, "channel_names": {"0": "CT", "2": "T2"}}, r"channel keys must be"),
    (lambda content: {**content, "numTraining": 7}, r"numTraining is 7 but .*labelsTr holds 6 label file"),
    (lambda content: {**content, "file_ending": ".jpg"}, r"file_ending '.jpg' is not supported"),
    (lambda content: {"modality": {"0": "CT"}, "labels": {"0": "background"}}, r"load it with get_dataset\('msd'"),
])
def test_bad_dataset_json_is_an_error_naming_it(tmp_path, edit, message):
    write_dataset(tmp_path, labels=LIVER)
    edit_dataset_json(tmp_path, edit)
    with pytest.raises(DatasetError, match=message):
        get_dataset("nnunet", tmp_path, split="all")


def test_missing_root_and_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist or is not a folder"):
        get_dataset("nnunet", tmp_path / "nowhere")
    write_dataset(tmp_path, labels=LIVER)
    for path in (tmp_path / "labelsTr").iterdir():
        path.unlink()
    (tmp_path / "labelsTr").rmdir()
    with pytest.raises(DatasetError, match=r"has no labelsTr/ folder"):
        get_dataset("nnunet", tmp_path)
