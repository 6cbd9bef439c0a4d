"""`medsegloss predict` with a checkpoint of an nnU-Net / Decathlon dataset: the channel files of a
case (nnU-Net names, or one 4-D image) become one label file with the input's geometry, equal to
the model applied to the case as the training dataset prepared it (normalization by channel name
with the stored CT statistics); the checkpoint carries that description as plain JSON."""

import json

import numpy as np
import pytest
import torch

nibabel = pytest.importorskip("nibabel")

from nnunet_fixtures import AFFINE, write_nifti, write_nnunet  # noqa: E402

from medsegloss.data import get_dataset  # noqa: E402
from medsegloss.experiment import evaluation, inference, predict, trainer  # noqa: E402
from medsegloss.experiment.config import Config  # noqa: E402

LABELS = {"background": 0, "liver": 1, "tumor": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch 2-D run on a two-channel (CT, T2) nnU-Net dataset."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data") / "Dataset001_Liver"
    files = write_nnunet(root, labels=LABELS)
    config = Config(dataset="nnunet", data_root=str(root), image_size=16, base_width=4, depth=2, epochs=1,
                    batch_size=4, metrics=("dice",))
    out = tmp_path_factory.mktemp("run")
    trainer.fit(config, out, quiet=True)
    yield root, files, out / "best.pt", config
    torch.set_num_threads(threads)


def reference_labels(checkpoint, config, case) -> np.ndarray:
    """The model on the case as the dataset serves it (normalized channels), array order (z, y, x)."""
    model, _ = inference.load_checkpoint(checkpoint)
    data = get_dataset(config.dataset, split="all", **config.dataset_arguments())
    image = torch.from_numpy(data.case(case).image)  # (C, D, H, W)
    with torch.no_grad():
        logits = model(image.transpose(0, 1))
    return inference.labels_from_logits(logits).numpy().astype(np.uint8)


def test_checkpoint_carries_the_datasets_normalization_as_plain_json(trained):
    root, _, checkpoint, config = trained
    data = inference.read_checkpoint(checkpoint)["data"]
    train = get_dataset(config.dataset, split="train", **config.dataset_arguments())
    assert data["channel_names"] == ["CT", "T2"] and data["size"] == 16 and data["multilabel"] is False
    assert data["ct_statistics"] == {"CT": pytest.approx(train.options["ct_statistics"]["CT"])}
    assert json.loads(json.dumps(data)) == data  # JSON values only: loads with weights_only=True


def test_channel_files_are_grouped_into_one_case_equal_to_the_model(trained, tmp_path):
    root, files, checkpoint, config = trained
    inputs = [files["case_001"][1], files["case_000"][0], files["case_001"][0], files["case_000"][1]]
    written = predict.predict_files(checkpoint, inputs, tmp_path / "out")
    assert sorted(path.name for path in written) == ["case_000.nii.gz", "case_001.nii.gz"]
    for case in ("case_000", "case_001"):
        mask = nibabel.load(str(tmp_path / "out" / f"{case}.nii.gz"))
        source = nibabel.load(str(files[case][0]))
        assert mask.shape == source.shape and mask.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(mask.affine, source.affine)
        assert mask.header["descrip"] == source.header["descrip"]
        # NIfTI (x, y, z) <-> medsegloss (z, y, x)
        np.testing.assert_array_equal(np.asarray(mask.dataobj).T, reference_labels(checkpoint, config, case))


def test_a_decathlon_4d_image_gives_the_same_labels(trained, tmp_path):
    root, files, checkpoint, config = trained
    channels = [np.asarray(nibabel.load(str(path)).dataobj) for path in files["case_002"]]
    write_nifti(tmp_path / "case_002.nii.gz", np.stack(channels, axis=-1))  # (x, y, z, C) as the Decathlon
    predict.predict_files(checkpoint, [tmp_path / "case_002.nii.gz"], tmp_path / "out")
    mask = nibabel.load(str(tmp_path / "out" / "case_002.nii.gz"))
    assert mask.shape == channels[0].shape
    np.testing.assert_array_equal(mask.affine, nibabel.load(str(tmp_path / "case_002.nii.gz")).affine)
    np.testing.assert_array_equal(np.asarray(mask.dataobj).T, reference_labels(checkpoint, config, "case_002"))


def test_wrong_channel_count_names_the_files_and_the_count_expected(trained, tmp_path, capsys):
    root, files, checkpoint, _ = trained
    with pytest.raises(ValueError, match=r"takes 2 channel\(s\) \(CT, T2\) but the files given hold 1: .*case_000_0000"):
        predict.predict_files(checkpoint, [files["case_000"][0]], tmp_path / "out")
    assert predict.main(["--checkpoint", str(checkpoint), str(files["case_000"][0]), "--out",
                           str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "takes 2 channel(s)" in error and str(files["case_000"][0]) in error
    write_nifti(tmp_path / "x_0001.nii.gz", np.zeros((16, 16, 4), np.float32), AFFINE)
    with pytest.raises(ValueError, match=r"channel file .*x_0000\.nii\.gz is missing"):
        predict.predict_files(checkpoint, [tmp_path / "x_0001.nii.gz"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before any write


# ---------------------------------------------------------------- 3-D: sliding windows over the patch
def test_model_logits_of_a_volume_larger_than_the_patch_are_the_sliding_windows():
    from medsegloss.experiment.sliding_window import sliding_window_logits
    from medsegloss.models import UNet

    torch.manual_seed(0)
    model = UNet(2, 3, base=2, depth=2, dims=3).eval()
    volume = torch.randn(1, 2, 8, 20, 12)
    expected = sliding_window_logits(model, volume, (8, 8, 8), overlap=0.5, gaussian=True)
    torch.testing.assert_close(inference.model_logits(model, volume, patch_size=8), expected, rtol=0, atol=0)
    small = torch.randn(1, 2, 8, 8, 8)  # not larger than the patch: the model on the whole volume
    with torch.no_grad():
        torch.testing.assert_close(inference.model_logits(model, small, patch_size=8), model(small))


@pytest.fixture(scope="module")
def trained_3d(tmp_path_factory):
    """A tiny 3-D run (dims=3, one epoch) on a two-channel nnU-Net dataset of 16 x 16 x 8 volumes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data3d") / "Dataset003_Volumes"
    files = write_nnunet(root, labels=LABELS, shape_xyz=(16, 16, 8), cases=5)
    config = Config(dataset="nnunet", data_root=str(root), dims=3, image_size=16, base_width=2, depth=2, epochs=1,
                    batch_size=2, metrics=("dice",))
    out = tmp_path_factory.mktemp("run3d")
    trainer.fit(config, out, quiet=True)
    yield root, files, out / "best.pt", config
    torch.set_num_threads(threads)


def test_3d_evaluation_and_predict_use_windows_over_the_patch(trained_3d, monkeypatch, tmp_path):
    from medsegloss.experiment import sliding_window

    root, files, checkpoint, config = trained_3d
    model, _ = inference.load_checkpoint(checkpoint)
    calls = []
    original = sliding_window.sliding_window_logits

    def spy(model, image, patch_size, **options):
        calls.append((tuple(image.shape), tuple(patch_size), options))
        return original(model, image, patch_size, **options)

    monkeypatch.setattr(sliding_window, "sliding_window_logits", spy)
    val = get_dataset(config.dataset, split="val", **config.dataset_arguments(checkpoint.parent / "split.json"))
    rows = evaluation.evaluate_model(model, val, metrics=("dice",), patch_size=8)
    assert len(calls) == len(val) and all(call[1:] == ((8, 8, 8), {"overlap": 0.5, "gaussian": True}) for call in calls)
    # the rows are those of the windowed labels
    from medsegloss.metrics import evaluate

    predictions = [inference.labels_from_logits(original(model, val[i]["image"][None], (8, 8, 8)))[0].numpy()
                   for i in range(len(val))]
    expected = evaluate(predictions, [val[i]["label"].numpy() for i in range(len(val))], val.num_classes,
                        metrics=("dice",), case_ids=val.cases)
    assert [r["dice"] for r in rows] == pytest.approx([r["dice"] for r in expected], nan_ok=True)
    # predict of a case: the channel files through the windows, equal to the windows on the served case
    model.data = inference.read_checkpoint(checkpoint)["data"]
    image, spacing, single = predict.read_channel_case(predict.ChannelCase(tmp_path / "c", tuple(files["case_000"])))
    labels = predict.segment_channels(model, model.data, image, spacing, single, patch_size=8)
    served = get_dataset(config.dataset, split="all", **config.dataset_arguments()).case("case_000").image
    expected = inference.labels_from_logits(original(model, torch.from_numpy(served)[None], (8, 8, 8)))[0]
    np.testing.assert_array_equal(labels, expected.numpy())
