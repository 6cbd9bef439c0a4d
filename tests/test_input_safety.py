"""Nothing a user hands us silently changes their labels or their numbers (issue #11).

Each case here was reproduced on the code before the fix: a -1 in a mask wrapped around to the
last class, a duplicate or negative ``mask_values`` entry moved 255 to another class, a float
mask's 0.7 became 0, a folder mixing 0/1 and 0/255 masks became three classes, a mask value of
2**40 asked for a 1 TiB lookup table, and a NaN image was normalised to an all-NaN volume (a loss
given a float target of 8 or NaN: tests/losses/test_contract.py, for every loss). Files are
written in their real formats (NIfTI through nibabel, PNG / TIFF through Pillow).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

nibabel = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

from medsegloss import losses  # noqa: E402
from medsegloss.data import DatasetError, get_dataset  # noqa: E402
from medsegloss.data.base import check_finite_image  # noqa: E402
from medsegloss.data.folder import apply_mapping, value_mapping  # noqa: E402
from medsegloss.distance import signed_distance_map  # noqa: E402
from medsegloss.metrics import evaluate  # noqa: E402
from medsegloss.metrics.surface import hd95  # noqa: E402


def _nifti(path, array_zyx, zooms=(1.0, 1.0, 1.0)):
    """A NIfTI file of the (z, y, x) array (stored (x, y, z), as scanners do), in its own dtype."""
    array = np.asarray(array_zyx)
    image = nibabel.Nifti1Image(array.T, np.eye(4), dtype=array.dtype)
    image.header.set_zooms(zooms[: array.ndim])
    nibabel.save(image, str(path))


def _folder(tmp_path, masks: dict[str, np.ndarray]):
    """``tmp_path/images`` (random grey pictures / volumes) and ``tmp_path/masks`` holding ``masks``
    (name -> array; ``.nii.gz`` names as NIfTI volumes, others through Pillow)."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name, mask in masks.items():
        if name.endswith(".nii.gz"):
            _nifti(tmp_path / "masks" / name, mask)
            _nifti(tmp_path / "images" / name, rng.normal(size=mask.shape).astype(np.float32))
        else:
            Image.fromarray(mask).save(tmp_path / "masks" / name)
            stem = name.rsplit(".", 1)[0]
            Image.fromarray(rng.integers(0, 256, mask.shape, dtype=np.uint8)).save(tmp_path / "images" / f"{stem}.png")
    return tmp_path


def _labels(root, **options):
    data = get_dataset("folder", root, split="all", size=None, **options)
    return data, {case: data.case(case).label for case in data.cases}


ROW = np.array([0, 1, -1, 1, 0, -1], np.int16)


# ---------------------------------------------------------------- mask values -> classes
def test_negative_mask_value_is_an_error_naming_file_and_value(tmp_path):
    root = _folder(tmp_path, {"a.nii.gz": np.tile(ROW, (2, 3, 1))})
    with pytest.raises(DatasetError, match=r"mask .*a\.nii\.gz holds negative values \[-1\].*mask_values"):
        get_dataset("folder", root, split="all", size=None)


def test_declared_negative_value_gets_its_own_class(tmp_path):
    root = _folder(tmp_path, {"a.nii.gz": np.tile(ROW, (2, 3, 1))})
    data, labels = _labels(root, mask_values=[0, 1, -1])
    expected = np.select([ROW == 0, ROW == 1, ROW == -1], [0, 1, 2])
    assert data.num_classes == 3
    np.testing.assert_array_equal(labels["a"], np.broadcast_to(expected, (2, 3, 6)))


def test_mask_values_with_a_negative_entry_keep_255_in_its_class(tmp_path):
    mask = np.array([[0, 255, 0, 255]] * 4, np.uint8)
    root = _folder(tmp_path, {"a.png": mask})
    data, labels = _labels(root, mask_values=[0, 255, -1])
    assert data.num_classes == 3
    np.testing.assert_array_equal(labels["a"][0], mask // 255)  # 255 -> 1 (was 2: -1 wrapped to 255)


@pytest.mark.parametrize("mask_values, message", [
    ([0, 255, 255], r"mask_values lists \[255\] more than once"),
    ([0, 0.5], r"mask_values must hold integers.*0\.5"),
    ([0, float("nan")], r"mask_values must hold integers"),
    ([], r"mask_values must list 1 to 256 values"),
])
def test_bad_mask_values_are_refused(tmp_path, mask_values, message):
    root = _folder(tmp_path, {"a.png": np.array([[0, 255]] * 2, np.uint8)})
    with pytest.raises(ValueError, match=message):
        get_dataset("folder", root, split="all", size=None, mask_values=mask_values)


@pytest.mark.parametrize("value", [0.7, 1.5, float("nan")])
def test_float_tiff_mask_with_a_fraction_is_an_error_not_truncated(tmp_path, value):
    mask = np.array([[0, value, 1, 1]] * 4, np.float32)
    root = _folder(tmp_path, {"a.tif": mask})
    fraction = rf"a\.tif holds non-integer values \(e\.g\. \[{str(value)[:3]}"
    match = r"a\.tif holds non-finite" if np.isnan(value) else fraction
    with pytest.raises(DatasetError, match=match):
        get_dataset("folder", root, split="all", size=None)


def test_float_nifti_mask_with_a_fraction_is_an_error(tmp_path):
    root = _folder(tmp_path, {"a.nii.gz": np.array([[[0, 0.7, 1, 1]]], np.float32)})
    with pytest.raises(DatasetError, match=r"a\.nii\.gz holds non-integer values \(e\.g\. \[0\.7"):
        get_dataset("folder", root, split="all", size=None)


def test_integral_float_mask_is_read_exactly(tmp_path):
    root = _folder(tmp_path, {"a.tif": np.array([[0, 2, 1, 2]] * 4, np.float32)})
    data, labels = _labels(root)
    assert data.num_classes == 3 and labels["a"][0, 0].tolist() == [0, 2, 1, 2]


def test_mixed_binary_conventions_name_files_of_both(tmp_path):
    mask = np.array([[0, 255, 0, 255]] * 4, np.uint8)
    root = _folder(tmp_path, {"a.png": mask, "b.png": mask // 255, "c.png": mask})
    with pytest.raises(DatasetError, match=r"0/1 in .*b\.png; 0/255 in .*a\.png, .*c\.png"):
        get_dataset("folder", root, split="all", size=None)
    data, labels = _labels(root, mask_values=[0, 1, 255])  # declared: three classes, as asked
    assert data.num_classes == 3 and labels["b"].max() == 1 and labels["a"].max() == 2


@pytest.mark.parametrize("values, classes", [({0, 1}, [0, 1]), ({0, 255}, [0, 1]), ({0}, [0])])
def test_one_binary_convention_maps_to_0_1(tmp_path, values, classes):
    high = max(values)
    root = _folder(tmp_path, {"a.png": np.array([[0, high]] * 2, np.uint8), "b.png": np.zeros((2, 2), np.uint8)})
    data, labels = _labels(root)
    assert data.num_classes == 2 and sorted(np.unique(labels["a"]).tolist()) == classes


def test_a_mask_with_300_values_is_refused_naming_the_file(tmp_path):
    root = _folder(tmp_path, {"a.nii.gz": np.arange(300, dtype=np.int16).reshape(1, 15, 20)})
    with pytest.raises(DatasetError, match=r"mask .*a\.nii\.gz holds 300 distinct values .*image rather than a mask"):
        get_dataset("folder", root, split="all", size=None)


def test_300_values_over_several_files_are_refused(tmp_path):
    masks = {f"m{k}.nii.gz": (np.arange(150, dtype=np.int16) + 150 * k).reshape(1, 10, 15) for k in range(2)}
    with pytest.raises(DatasetError, match=r"the masks hold 300 distinct values together"):
        get_dataset("folder", _folder(tmp_path, masks), split="all", size=None)


@pytest.mark.parametrize("huge", [2**40, 2**62])
def test_huge_mask_values_map_without_a_value_sized_table(tmp_path, huge):
    mask = np.array([[[0, huge, 0, 3]]], np.int64)
    data, labels = _labels(_folder(tmp_path, {"a.nii.gz": mask}))
    # sorted distinct values {0, 3, huge} -> 0, 1, 2 (before: an allocation of huge + 1 bytes)
    assert data.num_classes == 3 and labels["a"][0, 0].tolist() == [0, 2, 0, 1]


def test_apply_mapping_refuses_an_undeclared_value():
    mapping = {0: 0, 255: 1}
    np.testing.assert_array_equal(apply_mapping(np.array([[0, 255], [255, 0]]), mapping, "m.png"), [[0, 1], [1, 0]])
    with pytest.raises(DatasetError, match=r"mask m\.png holds values \[-1, 7\] outside the declared classes"):
        apply_mapping(np.array([[0, -1], [7, 255]]), mapping, "m.png")


def test_value_mapping_num_classes_range():
    values = {"a.png": np.array([0, 1, 2])}
    assert value_mapping(values, num_classes=3) == {0: 0, 1: 1, 2: 2}
    with pytest.raises(DatasetError, match=r"a\.png holds values \[2\] outside"):
        value_mapping(values, num_classes=2)
    for bad in (0, 300):
        with pytest.raises(ValueError, match=r"num_classes must lie in \[1, 256\]"):
            value_mapping(values, num_classes=bad)
    with pytest.raises(ValueError, match="fewer than the 3 classes"):
        value_mapping(values, num_classes=2, mask_values=[0, 1, 2])


def test_grey_alpha_mask_uses_the_grey_band(tmp_path):
    grey = np.array([[0, 1, 1, 0]] * 4, np.uint8)
    root = _folder(tmp_path, {"a.png": grey})
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), mode="LA").save(root / "masks" / "a.png")
    data, labels = _labels(root)
    np.testing.assert_array_equal(labels["a"][0], grey)


# ---------------------------------------------------------------- image values
def test_nan_in_a_tiff_image_is_an_error_naming_the_file(tmp_path):
    root = _folder(tmp_path, {"a.png": np.zeros((4, 4), np.uint8)})
    (root / "images" / "a.png").unlink()
    image = np.ones((4, 4), np.float32)
    image[1, 2] = np.nan
    Image.fromarray(image).save(root / "images" / "a.tif")
    message = r"image .*a\.tif holds non-finite values \(1 NaN of 16 voxels; first at index \(0, 1, 2\)"
    with pytest.raises(DatasetError, match=message):
        get_dataset("folder", root, split="all", size=None)


def test_inf_in_a_nifti_image_is_an_error_naming_the_file(tmp_path):
    root = _folder(tmp_path, {"a.nii.gz": np.zeros((2, 3, 4), np.uint8)})
    image = np.ones((2, 3, 4), np.float32)
    image[0, 0, :2] = [np.inf, -np.inf]
    _nifti(root / "images" / "a.nii.gz", image)
    with pytest.raises(DatasetError, match=r"image .*a\.nii\.gz holds non-finite values \(1 \+inf, 1 -inf of 24"):
        get_dataset("folder", root, split="all", size=None)


def test_check_finite_image():
    integers = np.arange(6).reshape(2, 3)
    assert check_finite_image(integers, "x.png") is integers
    floats = np.linspace(0, 1, 6, dtype=np.float16)
    assert check_finite_image(floats, "x.png") is floats
    with pytest.raises(DatasetError, match=r"image x\.nii holds non-finite values \(2 NaN of 6 voxels"):
        check_finite_image(np.array([0.0, np.nan, 1, 2, np.nan, 3]), "x.nii")


def test_nifti_header_with_an_infinite_voxel_size_is_an_error(tmp_path):
    root = _folder(tmp_path, {"a.nii.gz": np.zeros((2, 3, 4), np.uint8)})
    _nifti(root / "images" / "a.nii.gz", np.ones((2, 3, 4), np.float32), zooms=(1.0, np.inf, 1.0))
    with pytest.raises(DatasetError, match=r"a\.nii\.gz: the header's voxel size \(1\.0, inf, 1\.0\)"):
        get_dataset("folder", root, split="all", size=None)


@pytest.mark.parametrize("spacing", [(1.0, np.inf), (np.nan, 1.0), (0.0, 1.0), (-1.0, 1.0), (1.0, 2e6)])
def test_folder_spacing_option_is_checked(tmp_path, spacing):
    root = _folder(tmp_path, {"a.png": np.zeros((4, 4), np.uint8)})
    with pytest.raises(ValueError, match=r"spacing values must be finite, positive and at most 1e\+06"):
        get_dataset("folder", root, split="all", size=None, spacing=spacing)


# ---------------------------------------------------------------- spacing
@pytest.mark.parametrize("spacing", [(1.0, np.inf), (np.nan, 1.0), (0.0, 1.0), (1.0, 1e7), float("inf")])
def test_spacing_must_be_finite_positive_and_sane(spacing):
    mask = torch.zeros(1, 6, 6, dtype=torch.long)
    mask[0, 2:4, 2:4] = 1
    with pytest.raises(ValueError, match="spacing values must be finite, positive"):
        signed_distance_map(mask, num_classes=2, spacing=spacing)
    with pytest.raises(ValueError, match="spacing values must be finite, positive"):
        hd95(mask[0].numpy(), mask[0].numpy(), spacing)
    with pytest.raises(ValueError, match="spacing values must be finite, positive"):
        evaluate(mask, mask, 2, spacing=spacing, metrics=["dice", "hd95"])
    with pytest.raises(ValueError, match="spacing values must be finite, positive"):
        losses.get("boundary", spacing=spacing)(torch.randn(1, 3, 6, 6), mask)


@pytest.mark.parametrize("spacing", ["1,1", [1.0, "x"], [[1.0], [1.0]], True])
def test_spacing_of_the_wrong_kind_is_a_type_error(spacing):
    with pytest.raises(TypeError, match="spacing must be a number or a sequence of 2 numbers"):
        signed_distance_map(torch.zeros(1, 4, 4, dtype=torch.long), num_classes=2, spacing=spacing)
