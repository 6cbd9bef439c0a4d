"""``msd`` on tiny tasks written as the Medical Segmentation Decathlon distributes them: 4-D
(x, y, z, modality) NIfTI images, 3-D labels, dataset.json with modality / labels / training."""

import json

import numpy as np
import pytest
import torch

nibabel = pytest.importorskip("nibabel")

from medsegloss.data import DatasetError, available, class_names, get_dataset  # noqa: E402
from nnunet_fixtures import edit_dataset_json

ZOOMS = (1.0, 1.2, 2.5)
SHAPE_XYZ = (11, 9, 5)
BRATS_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}


def write_nifti(path, array, zooms=ZOOMS, affine=None):
    image = nibabel.Nifti1Image(np.asarray(array), np.diag([*zooms, 1.0]) if affine is None else affine)
    image.header.set_zooms(zooms + (1.0,) * (np.asarray(array).ndim - 3))
    nibabel.save(image, str(path))


def write_task(root, *, modality=None, labels=None, cases=5, label_values=(0, 1, 2, 3), seed=0, tests=1):
    """A Decathlon task; returns {case: (image (C, z, y, x), label (z, y, x))}."""
    modality = modality or {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    training, written = [], {}
    for k in range(cases):
        case = f"BRATS_{k + 1:03d}"
        channels = len(modality)
        image = rng.normal(500, 80, (*SHAPE_XYZ, channels)).astype(np.float32)
        image[:2] = 0  # background outside the brain
        label = rng.choice(label_values, SHAPE_XYZ).astype(np.uint8)
        write_nifti(root / "imagesTr" / f"{case}.nii.gz", image if channels > 1 else image[..., 0])
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", label)
        (root / "imagesTr" / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
        written[case] = (image.transpose(3, 2, 1, 0), label.transpose(2, 1, 0))
    test = []
    for k in range(tests):
        write_nifti(root / "imagesTs" / f"BRATS_{k + 400}.nii.gz", rng.normal(0, 1, (*SHAPE_XYZ, len(modality))))
        test.append(f"./imagesTs/BRATS_{k + 400}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": "BRATS", "tensorImageSize": "4D", "modality": modality, "labels": labels or BRATS_LABELS,
        "numTraining": cases, "numTest": tests, "training": training, "test": test}, indent=1))
    return written


def test_four_d_modalities_become_channels(tmp_path):
    written = write_task(tmp_path)
    assert "msd" in available() and class_names("msd") is None
    data = get_dataset("msd", tmp_path, split="all", size=None, dims=3)
    assert data.cases == sorted(written) and data.channel_names == ["FLAIR", "T1w", "t1gd", "T2w"]
    assert data.class_names == ["background", "edema", "non-enhancing tumor", "enhancing tumour"]
    item = data[1]
    image, label = written[item["case"]]
    assert item["image"].shape == (4, 5, 9, 11) and item["spacing"] == pytest.approx((2.5, 1.2, 1.0))
    assert torch.equal(item["label"], torch.from_numpy(label.astype(np.int64)))
    for c in range(4):  # each modality z-scored over its nonzero voxels, in the file's order
        nonzero = image[c][image[c] != 0].astype(np.float64)
        np.testing.assert_allclose(item["image"][c].numpy(), (image[c] - nonzero.mean()) / nonzero.std(),
                                   rtol=1e-5, atol=1e-5)
    assert sorted(data.test_images) == ["BRATS_400"]
    slices = get_dataset("msd", tmp_path, split="train", size=32)
    assert slices[0]["image"].shape == (4, 32, 32) and slices[0]["label"].shape == (32, 32)
    assert len(slices) == 5 * len(slices.cases)


def test_regions_option_makes_brats_multilabel(tmp_path):
    written = write_task(tmp_path)
    regions = {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    assert class_names("msd", regions=regions) == list(regions)
    data = get_dataset("msd", tmp_path, split="all", size=None, dims=3, regions=regions)
    assert data.multilabel and data.region_names == list(regions) and data.ignore_index is None
    item = data[0]
    label = written[item["case"]][1]
    assert item["label"].shape == (3, 5, 9, 11) and "ignore" not in item
    for r, values in enumerate(regions.values()):
        assert torch.equal(item["label"][r], torch.from_numpy(np.isin(label, values).astype(np.float32)))
    with pytest.raises(ValueError, match=r"regions use label values \[7\]"):
        get_dataset("msd", tmp_path, regions={"x": [1, 7]})


def test_single_modality_ct_task_uses_training_foreground_statistics(tmp_path):
    written = write_task(tmp_path, modality={"0": "CT"}, labels={"0": "background", "1": "liver"}, label_values=(0, 1))
    train = get_dataset("msd", tmp_path, split="train", size=None, dims=3)
    foreground = np.concatenate([written[c][0][0][written[c][1] > 0] for c in train.cases]).astype(np.float64)
    low, high = np.percentile(foreground, [0.5, 99.5])
    val = get_dataset("msd", tmp_path, split="val", size=None, dims=3)
    raw = written[val.cases[0]][0][0]
    np.testing.assert_allclose(val[0]["image"][0].numpy(),
                               (np.clip(raw, low, high) - foreground.mean()) / foreground.std(), rtol=1e-5, atol=1e-5)


def test_missing_listed_file_names_the_case(tmp_path):
    write_task(tmp_path)
    (tmp_path / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case 'BRATS_002': .*labelsTr/BRATS_002\.nii\.gz \(listed in "
                                           r".*dataset\.json\) does not exist"):
        get_dataset("msd", tmp_path, split="all")
    assert "BRATS_002" not in get_dataset("msd", tmp_path, split="all", size=16, on_error="skip").cases


def test_shape_affine_and_label_errors_name_case_and_files(tmp_path):
    write_task(tmp_path)
    write_nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz", np.zeros((11, 9, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"case 'BRATS_001': image .*imagesTr/BRATS_001\.nii\.gz has shape "
                                           r"\(5, 9, 11\) \(z, y, x\) but its label .*BRATS_001\.nii\.gz has \(4, 9, 11\)"):
        get_dataset("msd", tmp_path, split="all")
    rotated = np.diag([*ZOOMS, 1.0])[[1, 0, 2, 3]]
    write_nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz", np.zeros(SHAPE_XYZ, np.uint8), affine=rotated)
    with pytest.raises(DatasetError, match=r"case 'BRATS_001': .* have different affines"):
        get_dataset("msd", tmp_path, split="all")
    write_nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz", np.full(SHAPE_XYZ, 4, np.uint8))
    with pytest.raises(DatasetError, match=r"case 'BRATS_001': label .* holds values \[4\] not declared"):
        get_dataset("msd", tmp_path, split="all")


@pytest.mark.parametrize("edit, message", [
    (lambda content: None, r"dataset\.json does not exist"),
    (lambda content: "[1, 2", r"not readable JSON"),
    (lambda content: {k: v for k, v in content.items() if k != "training"}, r"lacks the key\(s\) \['training'\]"),
    (lambda content: {**content, "training": ["./imagesTr/BRATS_001.nii.gz"]},
     r"'training' must be a list of \{\"image\": path, \"label\": path\} objects"),
    (lambda content: {**content, "labels": {"background": 0}}, r"'labels' must map label values to names"),
    (lambda content: {**content, "labels": {"0": "background", "2": "tumour"}}, r"consecutive from 0"),
    (lambda content: {"channel_names": {"0": "CT"}, "labels": {"background": 0}}, r"get_dataset\('nnunet'"),
])
def test_bad_dataset_json_is_an_error_naming_it(tmp_path, edit, message):
    write_task(tmp_path)
    edit_dataset_json(tmp_path, edit)
    with pytest.raises(DatasetError, match=message):
        get_dataset("msd", tmp_path, split="all")


def test_too_few_modalities_in_the_image(tmp_path):
    write_task(tmp_path)
    path = tmp_path / "dataset.json"
    content = json.loads(path.read_text())
    path.write_text(json.dumps({**content, "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w", "4": "X"}}))
    with pytest.raises(DatasetError, match=r"case 'BRATS_001': .*BRATS_001\.nii\.gz hold 4 channel\(s\) but "
                                           r"dataset\.json declares 5"):
        get_dataset("msd", tmp_path, split="all")
