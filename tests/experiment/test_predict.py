"""`medsegloss predict`: NIfTI masks keep the input's affine and header, PNG masks its size;
labels equal the model applied to the normalized input (2-D slice by slice, and 3-D)."""

import nibabel
import numpy as np
import pytest
import torch
from PIL import Image

from medsegloss.data.transforms import normalize_percentile
from medsegloss.experiment import inference, predict, trainer
from medsegloss.experiment.config import Config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """best.pt of three one-epoch runs: binary one-channel 2-D, 4-class 2-D, binary 3-D."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: see tests/test_train.py
    common = dict(image_size=32, base_width=4, depth=2, epochs=1, batch_size=3,
                  dataset_options={"num_cases": 4, "slices_per_case": 3})
    runs = {"binary": Config(dataset="phantom-lesion", **common),
            "cardiac": Config(dataset="phantom-cardiac", **common),
            "volume": Config(dataset="phantom-lesion", dims=3, **{**common, "base_width": 2})}
    paths = {}
    for name, config in runs.items():
        out = tmp_path_factory.mktemp(name)
        trainer.fit(config, out, quiet=True)
        paths[name] = out / "best.pt"
    yield paths
    torch.set_num_threads(threads)


def reference_labels(checkpoint, volume_zyx: np.ndarray) -> np.ndarray:
    """The model on the percentile-normalized volume, no resizing (in-plane size = training size)."""
    model, _ = inference.load_checkpoint(checkpoint)
    image = torch.from_numpy(normalize_percentile(volume_zyx.astype(np.float32)))
    with torch.no_grad():
        if model.dims == 3:
            logits = model(image[None, None])[0].transpose(0, 1)
        else:
            logits = model(image[:, None])
    return inference.labels_from_logits(logits).numpy().astype(np.uint8)


def write_nifti(path, shape, seed=0):
    rng = np.random.default_rng(seed)
    array = (rng.normal(100, 30, shape)).astype(np.float32)
    affine = np.array([[0.0, -0.8, 0.0, 10.0], [0.7, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 3.0], [0, 0, 0, 1]])
    image = nibabel.Nifti1Image(array, affine)
    image.header["descrip"] = b"medsegloss test"
    image.header.set_xyzt_units("mm", "sec")
    nibabel.save(image, str(path))
    return array, nibabel.load(str(path))  # as stored (the header holds the affine in float32)


@pytest.mark.parametrize("name", ["binary", "volume"])
def test_nifti_mask_keeps_affine_header_and_equals_the_model(name, checkpoints, tmp_path):
    array, image = write_nifti(tmp_path / "case.nii.gz", (32, 32, 4))
    assert predict.main(["--checkpoint", str(checkpoints[name]), str(tmp_path / "case.nii.gz"),
                         "--out", str(tmp_path / "out")]) == 0
    mask = nibabel.load(str(tmp_path / "out" / "case.nii.gz"))
    assert mask.shape == array.shape and mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(mask.affine, image.affine)
    assert mask.header["descrip"] == image.header["descrip"]
    assert mask.header.get_zooms() == image.header.get_zooms()
    assert mask.header.get_xyzt_units() == ("mm", "sec")
    labels = np.asarray(mask.dataobj)
    # NIfTI (x, y, z) <-> medsegloss (z, y, x): the reference is computed in array order
    np.testing.assert_array_equal(labels.T, reference_labels(checkpoints[name], array.T))


def test_nifti_of_another_size_is_resized_and_back(checkpoints, tmp_path):
    array, _ = write_nifti(tmp_path / "odd.nii", (20, 45, 2))
    predict.predict_files(checkpoints["cardiac"], [tmp_path / "odd.nii"], tmp_path / "out")
    labels = np.asarray(nibabel.load(str(tmp_path / "out" / "odd.nii")).dataobj)
    assert labels.shape == (20, 45, 2) and labels.dtype == np.uint8 and labels.max() < 4


def test_png_mask_has_the_input_size_and_equals_the_model(checkpoints, tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "slice.png")
    Image.fromarray(rng.integers(0, 256, (25, 40, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    written = predict.predict_files(checkpoints["cardiac"], [tmp_path / "slice.png", tmp_path / "wide.png"],
                                    tmp_path / "out")
    assert [path.name for path in written] == ["slice.png", "wide.png"]
    with Image.open(tmp_path / "out" / "slice.png") as mask:
        assert mask.mode == "L" and mask.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(mask), reference_labels(checkpoints["cardiac"], pixels[None])[0])
    with Image.open(tmp_path / "out" / "wide.png") as mask:
        assert mask.size == (40, 25) and np.asarray(mask).max() < 4


def test_errors_name_the_path(checkpoints, tmp_path, capsys):
    (tmp_path / "photo.jpg").write_bytes(b"")
    assert predict.main(["--checkpoint", str(checkpoints["binary"]), str(tmp_path / "missing.nii.gz"),
                         "--out", str(tmp_path)]) == 2
    assert f"input {tmp_path / 'missing.nii.gz'} does not exist" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(checkpoints["binary"]), str(tmp_path / "photo.jpg"),
                         "--out", str(tmp_path)]) == 2
    assert "neither NIfTI (.nii, .nii.gz) nor PNG" in capsys.readouterr().err
    write_nifti(tmp_path / "case.nii.gz", (8, 8, 2))
    assert predict.main(["--checkpoint", str(tmp_path / "nope.pt"), str(tmp_path / "case.nii.gz"),
                         "--out", str(tmp_path)]) == 2
    assert f"checkpoint {tmp_path / 'nope.pt'} does not exist" in capsys.readouterr().err
    torch.save({"weights": 1}, tmp_path / "other.pt")
    assert predict.main(["--checkpoint", str(tmp_path / "other.pt"), str(tmp_path / "case.nii.gz"),
                         "--out", str(tmp_path / "masks")]) == 2
    assert "is not a medsegloss checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------- never lose a user's data (issue #11)
def write_png(path, seed=0, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def run_predict(checkpoints, *arguments):
    return predict.main(["--checkpoint", str(checkpoints["cardiac"]), *map(str, arguments)])


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error, error
    return error


def test_out_equal_to_the_inputs_folder_never_replaces_an_input(checkpoints, tmp_path, capsys):
    write_png(tmp_path / "scan.png")
    before = (tmp_path / "scan.png").read_bytes()
    assert run_predict(checkpoints, tmp_path / "scan.png", "--out", tmp_path) == 2
    assert "would overwrite the input" in one_line_error(capsys)
    assert run_predict(checkpoints, tmp_path / "scan.png", "--out", tmp_path, "--overwrite") == 2  # not even so
    assert (tmp_path / "scan.png").read_bytes() == before
    (tmp_path / "link").symlink_to(tmp_path)  # the same folder under another name
    assert run_predict(checkpoints, tmp_path / "scan.png", "--out", tmp_path / "link", "--overwrite") == 2
    assert (tmp_path / "scan.png").read_bytes() == before


def test_inputs_with_one_file_name_from_two_folders_get_two_masks(checkpoints, tmp_path, capsys):
    first, second = write_png(tmp_path / "a" / "x.png", seed=1), write_png(tmp_path / "b" / "x.png", seed=2)
    assert run_predict(checkpoints, tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "--out", tmp_path / "masks") == 0
    for folder, pixels in (("a", first), ("b", second)):
        with Image.open(tmp_path / "masks" / folder / "x.png") as mask:
            expected = predict.segment_volume(inference.load_checkpoint(checkpoints["cardiac"])[0],
                                                pixels.astype(np.float32)[None], 32)[0]
            np.testing.assert_array_equal(np.asarray(mask), expected)
    assert run_predict(checkpoints, tmp_path / "a" / "x.png", tmp_path / "a" / ".." / "a" / "x.png",
                   "--out", tmp_path / "again") == 2
    assert "is given twice" in one_line_error(capsys)


def test_existing_masks_are_kept_unless_overwrite(checkpoints, tmp_path, capsys):
    write_png(tmp_path / "in" / "scan.png")
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "scan.png").write_bytes(b"precious")
    assert run_predict(checkpoints, tmp_path / "in" / "scan.png", "--out", tmp_path / "masks") == 2
    assert "--overwrite" in one_line_error(capsys) and (tmp_path / "masks" / "scan.png").read_bytes() == b"precious"
    assert run_predict(checkpoints, tmp_path / "in" / "scan.png", "--out", tmp_path / "masks", "--overwrite") == 0
    with Image.open(tmp_path / "masks" / "scan.png") as mask:
        assert mask.size == (10, 12)


def test_bad_files_and_arguments_get_one_line_errors(checkpoints, tmp_path, capsys):
    write_png(tmp_path / "scan.png")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "notes.nii.gz").write_bytes(b"\x1f\x8b garbage")
    (tmp_path / "afile").write_text("")
    cases = [([tmp_path / "notes.png", "--out", tmp_path / "m"], f"input {tmp_path / 'notes.png'} is not a readable PNG"),
             ([tmp_path / "notes.nii.gz", "--out", tmp_path / "m"], f"input {tmp_path / 'notes.nii.gz'} is not a readable NIfTI"),
             ([tmp_path / "scan.png", "--out", tmp_path / "afile"], f"--out {tmp_path / 'afile'} is a file, not a folder"),
             ([tmp_path / "scan.png", "--out", tmp_path / "m", "--device", "cuda:7"], "--device cuda:7"),
             ([tmp_path / "scan.png", "--out", tmp_path / "m", "--device", "gpu"], "--device 'gpu'")]
    for arguments, message in cases:
        assert run_predict(checkpoints, *arguments) == 2
        assert message in one_line_error(capsys)
    assert not (tmp_path / "m").exists()


def test_nan_voxels_are_an_error_naming_the_file(checkpoints, tmp_path, capsys):
    array = np.random.default_rng(0).normal(100, 30, (16, 16, 2)).astype(np.float32)
    array[3, 4, 1] = np.nan
    array[5, 5, 0] = np.inf
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    assert run_predict(checkpoints, tmp_path / "nan.nii.gz", "--out", tmp_path / "m") == 2
    error = one_line_error(capsys)
    assert f"image {tmp_path / 'nan.nii.gz'} holds non-finite values" in error
    assert not (tmp_path / "m" / "nan.nii.gz").exists()


def _truncated_nifti(path):
    """A NIfTI whose header reads but whose voxels stop halfway (a copy cut short)."""
    write_nifti(path, (16, 16, 3))
    data = path.read_bytes()
    path.write_bytes(data[: 352 + (len(data) - 352) // 2])


def test_every_input_is_read_before_the_first_mask_is_written(checkpoints, tmp_path, capsys):
    write_png(tmp_path / "in" / "good.png")
    _truncated_nifti(tmp_path / "in" / "cut.nii")
    assert run_predict(checkpoints, tmp_path / "in" / "good.png", tmp_path / "in" / "cut.nii", "--out", tmp_path / "m") == 2
    assert f"input {tmp_path / 'in' / 'cut.nii'} is not a readable NIfTI image" in one_line_error(capsys)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
    write_nifti(tmp_path / "in" / "cut.nii", (16, 16, 3))  # fixed: the rerun needs no --overwrite
    assert run_predict(checkpoints, tmp_path / "in" / "good.png", tmp_path / "in" / "cut.nii", "--out", tmp_path / "m") == 0
    assert sorted(path.name for path in (tmp_path / "m").iterdir()) == ["cut.nii", "good.png"]


def test_a_nifti_of_the_wrong_rank_is_refused_before_any_write(checkpoints, tmp_path, capsys):
    write_png(tmp_path / "in" / "good.png")
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2, 2), np.float32), np.eye(4)), str(tmp_path / "in" / "4d.nii"))
    assert run_predict(checkpoints, tmp_path / "in" / "good.png", tmp_path / "in" / "4d.nii", "--out", tmp_path / "m") == 2
    assert "expected a 2-D or 3-D NIfTI image, got shape (4, 4, 2, 2)" in one_line_error(capsys)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_predict_reads_pictures_as_training_does(tmp_path):
    # an RGB and a 16-bit picture: predict's pixels are exactly the training reader's (one reader)
    from medsegloss.data.folder import read_image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 60000, (5, 7)).astype(np.uint16)).save(tmp_path / "deep.png")
    for name in ("rgb.png", "deep.png"):
        pixels = predict.read_png_input(tmp_path / name)
        assert pixels.shape == (5, 7) and pixels.dtype == np.float32
        np.testing.assert_array_equal(pixels, read_image(tmp_path / name)[0][0])
    assert predict.read_png_input(tmp_path / "deep.png").max() > 255  # 16-bit depth kept, not squeezed to 8


def test_predict_refuses_a_multi_page_picture_naming_it(tmp_path):
    pages = [Image.fromarray(np.full((4, 4), value, np.uint8)) for value in (0, 9)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ValueError, match=r"stack\.tif: expected one picture, got 2 pages"):
        predict.read_png_input(tmp_path / "stack.tif")
