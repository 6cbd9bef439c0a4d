"""File-based loaders (acdc, covid-ct, folder) on tiny files written in the real on-disk formats:
NIfTI through nibabel with real headers and spacing, ACDC's Info.cfg, PNG / TIFF through Pillow."""

import gzip
import logging

import numpy as np
import pytest
import torch

nibabel = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

from medsegloss.data import DatasetError, get_dataset  # noqa: E402
from medsegloss.data.covid import case_id  # noqa: E402


def write_nifti(path, array_xyz, zooms, dtype=None):
    """A NIfTI file as scanners write them: (x, y, z) array, zooms in the header."""
    array_xyz = np.asarray(array_xyz, dtype=dtype or np.asarray(array_xyz).dtype)
    image = nibabel.Nifti1Image(array_xyz, np.diag([*zooms, 1.0][:3] + [1.0]) if len(zooms) == 3 else np.eye(4))
    image.header.set_zooms(zooms)
    nibabel.save(image, str(path))


def acdc_patient(folder, number, group, rng, shape_xyz=(12, 10, 3), zooms=(1.5, 1.25, 8.0), ed=1, es=4):
    patient = folder / f"patient{number:03d}"
    patient.mkdir(parents=True)
    (patient / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: 170.0\nNbFrame: 20\nWeight: 70.0\n")
    labels = {}
    for frame in (ed, es):
        image = rng.normal(100, 20, shape_xyz).astype(np.int16)
        label = rng.integers(0, 4, shape_xyz).astype(np.uint8)
        write_nifti(patient / f"patient{number:03d}_frame{frame:02d}.nii.gz", image, zooms)
        write_nifti(patient / f"patient{number:03d}_frame{frame:02d}_gt.nii.gz", label, zooms)
        labels[frame] = label
    return patient, labels


@pytest.fixture()
def acdc_root(tmp_path):
    rng = np.random.default_rng(0)
    groups = ["NOR", "DCM", "HCM", "MINF", "RV"]
    patients = {}
    for number in range(1, 11):
        part = tmp_path / ("training" if number <= 8 else "testing")
        patients[number] = acdc_patient(part, number, groups[number % 5], rng)
    return tmp_path, patients


def test_acdc_reads_frames_in_zyx_order_with_spacing(acdc_root):
    root, patients = acdc_root
    data = get_dataset("acdc", root, split="all", size=None, dims=3)
    assert len(data.cases) == 20 and data.cases[0] == "patient001_ED"
    item = data[data.cases.index("patient002_ES")]
    # the ES label file holds (x, y, z) = (12, 10, 3); served as (z, y, x) = (3, 10, 12)
    expected = torch.from_numpy(patients[2][1][4].transpose(2, 1, 0).astype(np.int64))
    assert torch.equal(item["label"], expected)
    assert item["image"].shape == (1, 3, 10, 12) and item["spacing"] == (8.0, 1.25, 1.5)
    image = item["image"][0]
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std(unbiased=False)) - 1) < 1e-4  # z-score


def test_acdc_resizes_slices_and_splits_by_patient_stratified(acdc_root, tmp_path):
    root, _ = acdc_root
    for sub in (root, root / "training"):  # root = the parent or a split folder
        assert len(get_dataset("acdc", sub, split="all", size=16).cases) == (20 if sub == root else 16)
    train = get_dataset("acdc", root, split="train", size=16, test_fraction=0.5, val_fraction=0.0)
    test = get_dataset("acdc", root, split="test", size=16, test_fraction=0.5, val_fraction=0.0)
    patients = [{case.split("_")[0] for case in part.cases} for part in (train, test)]
    assert not patients[0] & patients[1] and len(patients[1]) == 5
    groups = {f"patient{n:03d}": ["NOR", "DCM", "HCM", "MINF", "RV"][n % 5] for n in range(1, 11)}
    assert sorted(groups[p] for p in patients[1]) == sorted(set(groups.values()))  # one patient per group
    item = train[0]
    assert item["image"].shape == (1, 16, 16) and item["label"].shape == (16, 16)
    # pad 10x12 -> 12x12, then 12 -> 16: the in-plane spacing shrinks by 12/16
    assert item["spacing"] == pytest.approx((1.25 * 12 / 16, 1.5 * 12 / 16))
    train.save_split(tmp_path / "split.json")
    again = get_dataset("acdc", root, split="test", size=16, split_file=tmp_path / "split.json", seed=99)
    assert again.cases == test.cases


def test_acdc_bad_data_names_the_file(acdc_root, caplog):
    root, _ = acdc_root
    with pytest.raises(DatasetError, match="does not exist"):
        get_dataset("acdc", root / "nowhere")
    gt = root / "training" / "patient003" / "patient003_frame04_gt.nii.gz"
    truncated = gt.read_bytes()[: len(gt.read_bytes()) // 2]
    gt.write_bytes(truncated)
    with pytest.raises(DatasetError, match="patient003_frame04_gt.nii.gz.*corrupt or truncated"):
        get_dataset("acdc", root, split="all", size=16)
    with caplog.at_level(logging.WARNING, logger="medsegloss.data"):
        data = get_dataset("acdc", root, split="all", size=16, on_error="skip")
    assert "patient003_ES" not in data.cases and len(data.cases) == 19
    assert "patient003_frame04_gt.nii.gz" in caplog.text
    gt.unlink()
    with pytest.raises(DatasetError, match="has no ground truth"):
        get_dataset("acdc", root, split="all", size=16)


def test_acdc_shape_mismatch_and_label_range(acdc_root):
    root, _ = acdc_root
    folder = root / "training" / "patient005"
    write_nifti(folder / "patient005_frame01_gt.nii.gz", np.zeros((12, 10, 2), np.uint8), (1.5, 1.25, 8.0))
    with pytest.raises(DatasetError, match=r"patient005_frame01.nii.gz has shape \(3, 10, 12\).*\(2, 10, 12\)"):
        get_dataset("acdc", root, split="all", size=16)
    label = np.zeros((12, 10, 3), np.uint8)
    label[0, 0, 0] = 7
    write_nifti(folder / "patient005_frame01_gt.nii.gz", label, (1.5, 1.25, 8.0))
    with pytest.raises(DatasetError, match=r"patient005_frame01_gt.nii.gz: label values \[7\]"):
        get_dataset("acdc", root, split="all", size=16)
    (folder / "Info.cfg").write_text("ED 1\n")
    with pytest.raises(DatasetError, match="Info.cfg, line 1"):
        get_dataset("acdc", root, split="all", size=16)


def test_covid_case_ids():
    assert case_id("radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm.nii.gz") == "radiopaedia_10_85902_1"
    assert case_id("radiopaedia_10_85902_1.nii") == case_id("radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm.nii")
    assert case_id("coronacases_org_010.nii") == case_id("coronacases_010.nii.gz") == "coronacases_010"


def _covid_volume(rng, hu):
    volume = rng.uniform(-1024, 400, (16, 14, 4)) if hu else rng.uniform(0, 255, (16, 14, 4))
    lung_and_infection = rng.integers(0, 4, (16, 14, 4)).astype(np.uint8)
    return volume.astype(np.int16 if hu else np.float32), lung_and_infection


@pytest.mark.parametrize("layout", ["zenodo", "kaggle"])
def test_covid_layouts_intensities_and_targets(tmp_path, layout):
    rng = np.random.default_rng(1)
    names = {"zenodo": ("COVID-19-CT-Seg_20cases", "Infection_Mask", "Lung_and_Infection_Mask"),
             "kaggle": ("ct_scans", "infection_mask", "lung_and_infection_mask")}[layout]
    for name in names:
        (tmp_path / name).mkdir()
    volumes = {}
    for image_name, mask_name, hu in [
        ("coronacases_001.nii.gz", "coronacases_001.nii.gz", True),
        ("radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii.gz", "radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii.gz", False),
    ] if layout == "zenodo" else [
        ("coronacases_org_001.nii", "coronacases_001.nii", True),
        ("radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii", "radiopaedia_4_85506_1.nii", False),
    ]:
        volume, combined = _covid_volume(rng, hu)
        write_nifti(tmp_path / names[0] / image_name, volume, (0.7, 0.7, 5.0))
        write_nifti(tmp_path / names[1] / mask_name, (combined == 3).astype(np.uint8), (0.7, 0.7, 5.0))
        write_nifti(tmp_path / names[2] / mask_name, combined, (0.7, 0.7, 5.0))
        volumes[case_id(image_name)] = (volume, combined)
    data = get_dataset("covid-ct", tmp_path, split="all", size=None, dims=3)
    assert data.cases == ["coronacases_001", "radiopaedia_4_85506_1"] and data.class_names == ["background", "infection"]
    for item in data:
        volume, combined = volumes[item["case"]]
        expected = np.clip(volume, -1000, 400) if item["case"].startswith("corona") else volume
        low, high = (-1000, 400) if item["case"].startswith("corona") else (0, 255)
        scaled = (expected.astype(np.float64) - low) / (high - low) * 2 - 1
        assert np.allclose(item["image"][0].numpy(), scaled.transpose(2, 1, 0), atol=2e-3)  # float16 storage
        assert torch.equal(item["label"], torch.from_numpy((combined == 3).transpose(2, 1, 0).astype(np.int64)))
        assert item["spacing"] == pytest.approx((5.0, 0.7, 0.7))
    both = get_dataset("covid-ct", tmp_path, split="all", size=8, target="lungs+infection")
    assert both.num_classes == 3 and len(both) == 8 and both[0]["image"].shape == (1, 8, 8)
    volumes_3d = get_dataset("covid-ct", tmp_path, split="all", size=None, dims=3, target="lungs+infection")
    combined = volumes["coronacases_001"][1].transpose(2, 1, 0)
    assert torch.equal(volumes_3d[0]["label"], torch.from_numpy(np.array([0, 1, 1, 2])[combined]))


def test_covid_bad_data(tmp_path, caplog):
    (tmp_path / "ct_scans").mkdir()
    with pytest.raises(DatasetError, match="no infection_mask/ folder"):
        get_dataset("covid-ct", tmp_path)
    (tmp_path / "infection_mask").mkdir()
    rng = np.random.default_rng(2)
    volume, combined = _covid_volume(rng, True)
    write_nifti(tmp_path / "ct_scans" / "coronacases_org_001.nii", volume, (0.7, 0.7, 5.0))
    write_nifti(tmp_path / "ct_scans" / "coronacases_org_002.nii", volume, (0.7, 0.7, 5.0))
    write_nifti(tmp_path / "infection_mask" / "coronacases_001.nii", combined, (0.7, 0.7, 5.0))
    with pytest.raises(DatasetError, match="coronacases_org_002.nii has no mask"):
        get_dataset("covid-ct", tmp_path, split="all", size=8)
    with caplog.at_level(logging.WARNING, logger="medsegloss.data"):
        assert get_dataset("covid-ct", tmp_path, split="all", size=8, on_error="skip").cases == []
    assert "coronacases_001.nii: label values [2, 3] lie outside the 2 declared classes" in caplog.text
    caplog.clear()
    write_nifti(tmp_path / "infection_mask" / "coronacases_001.nii", (combined == 3).astype(np.uint8), (0.7, 0.7, 5.0))
    with caplog.at_level(logging.WARNING, logger="medsegloss.data"):
        data = get_dataset("covid-ct", tmp_path, split="all", size=8, on_error="skip")
    assert data.cases == ["coronacases_001"] and "coronacases_org_002.nii has no mask" in caplog.text
    write_nifti(tmp_path / "ct_scans" / "coronacases_org_001.nii", volume.astype(np.float32) + 3000, (0.7, 0.7, 5.0))
    (tmp_path / "ct_scans" / "coronacases_org_002.nii").unlink()
    with pytest.raises(DatasetError, match="neither Hounsfield units"):
        get_dataset("covid-ct", tmp_path, split="all", size=8)


def _png(path, array):
    Image.fromarray(array).save(path)


@pytest.fixture()
def folder_root(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(5):
        _png(tmp_path / "images" / f"img{k}.png", rng.integers(0, 256, (20, 30), dtype=np.uint8))
        mask = np.zeros((20, 30), np.uint8)
        mask[5:12, 4:20] = 255
        _png(tmp_path / "masks" / f"img{k}.png", mask)
    return tmp_path


def test_folder_binary_masks(folder_root):
    data = get_dataset("folder", folder_root, split="all", size=None)
    assert data.num_classes == 2 and data.cases == [f"img{k}" for k in range(5)]
    item = data[0]
    assert item["slice"] == -1 and item["image"].shape == (1, 20, 30) and item["spacing"] == (1.0, 1.0)
    assert set(item["label"].unique().tolist()) == {0, 1} and int(item["label"].sum()) == 7 * 16
    resized = get_dataset("folder", folder_root, split="all", size=60)
    assert resized[0]["label"].shape == (60, 60) and int(resized[0]["label"].sum()) == 7 * 16 * 4  # 30 -> 60


def test_folder_multi_value_masks_rgb_images_tiff_and_nifti(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 2:4], mask[:, 4:6], mask[:, 6:] = 85, 170, 255
    _png(tmp_path / "images" / "a.jpg", np.full((8, 8, 3), 120, np.uint8))
    _png(tmp_path / "masks" / "a.png", mask)
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "images" / "b.tif")
    _png(tmp_path / "masks" / "b.png", mask[::-1].copy())
    write_nifti(tmp_path / "images" / "c.nii.gz", np.ones((8, 8, 2), np.float32), (0.5, 0.5, 3.0))
    write_nifti(tmp_path / "masks" / "c.nii.gz", np.zeros((8, 8, 2), np.uint8), (0.5, 0.5, 3.0))
    data = get_dataset("folder", tmp_path, split="all", size=None)
    # sorted distinct values {0, 85, 170, 255} -> classes 0..3
    assert data.num_classes == 4 and data.case("a").label[0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert data.case("c").image.shape == (2, 8, 8) and data.case("c").spacing == (3.0, 0.5, 0.5)
    assert [item["slice"] for item in data] == [-1, -1, 0, 1]
    with pytest.raises(DatasetError, match=r"a.png holds values \[85, 170, 255\] outside"):
        get_dataset("folder", tmp_path, split="all", num_classes=3)
    explicit = get_dataset("folder", tmp_path, split="all", mask_values=[0, 255, 170, 85], size=None)
    assert explicit.case("a").label[0, 0].tolist() == [0, 0, 3, 3, 2, 2, 1, 1]


def test_folder_bad_data(folder_root, caplog):
    with pytest.raises(DatasetError, match="no images/ subfolder"):
        get_dataset("folder", folder_root / "masks")
    _png(folder_root / "images" / "extra.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(DatasetError, match="extra.png has no mask"):
        get_dataset("folder", folder_root, split="all")
    with caplog.at_level(logging.WARNING, logger="medsegloss.data"):
        assert len(get_dataset("folder", folder_root, split="all", on_error="skip").cases) == 5
    assert "extra.png has no mask" in caplog.text
    _png(folder_root / "masks" / "extra.png", np.zeros((10, 30), np.uint8))
    with pytest.raises(DatasetError, match=r"extra.png has shape \(1, 20, 30\) but mask .*extra.png has \(1, 10, 30\)"):
        get_dataset("folder", folder_root, split="all")
    _png(folder_root / "masks" / "extra.png", np.stack([np.zeros((20, 30), np.uint8)] * 2 + [np.ones((20, 30), np.uint8)], -1))
    with pytest.raises(DatasetError, match="extra.png is a colour image"):
        get_dataset("folder", folder_root, split="all")
    (folder_root / "masks" / "extra.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DatasetError, match="cannot read image .*extra.png"):
        get_dataset("folder", folder_root, split="all")


def test_corrupt_gzip_nifti_is_named(tmp_path):
    from medsegloss.data.nifti import read_nifti

    path = tmp_path / "broken.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(DatasetError, match="broken.nii.gz"):
        read_nifti(path)
