"""Overlapping regions end to end: an nnU-Net dataset whose labels list values (regions) trains a
model with one sigmoid channel per region and a loss in multi-label mode, is evaluated per region,
and `medsegloss predict` writes the regions as a multi-hot NIfTI (x, y, z, R)."""

from medsegloss.experiment import predict
from medsegloss.experiment import components
import numpy as np
import pytest
import torch

nibabel = pytest.importorskip("nibabel")

from nnunet_fixtures import write_nnunet  # noqa: E402

from medsegloss.data import get_dataset  # noqa: E402
from medsegloss.experiment import inference, trainer  # noqa: E402
from medsegloss.experiment.config import Config  # noqa: E402
from medsegloss.metrics import evaluate  # noqa: E402

REGIONS = {"background": 0, "whole": [1, 2], "core": 2}  # nested, as BraTS' whole tumour / tumour core


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from medsegloss import losses

    if not hasattr(losses.info("dice"), "multilabel"):
        pytest.skip("the losses' multilabel mode (get/build(multilabel=True)) is not in this tree yet")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data") / "Dataset002_Regions"
    files = write_nnunet(root, labels=REGIONS, channels=("T1", "T2"))
    config = Config(dataset="nnunet", data_root=str(root), image_size=16, base_width=4, depth=2, epochs=1,
                    batch_size=4, loss="dice_ce", metrics=("dice", "iou"))
    out = tmp_path_factory.mktemp("run")
    result = trainer.fit(config, out, quiet=True)
    yield root, files, out, config, result
    torch.set_num_threads(threads)


def test_one_sigmoid_channel_per_region_and_a_multilabel_loss(run, monkeypatch):
    root, _, out, config, _ = run
    checkpoint = inference.read_checkpoint(out / "best.pt")
    assert checkpoint["model_args"]["num_classes"] == 2  # R regions, no background channel
    assert checkpoint["class_names"] == ["whole", "core"]
    assert checkpoint["data"]["multilabel"] is True and checkpoint["data"]["region_values"] == [[1, 2], [2]]
    # the loss the run trains with is the multi-label one: equal to the loss's binary form per region
    from medsegloss import losses

    seen = {}
    original = components.make_loss

    def spy(config, multilabel=False):
        seen["multilabel"] = multilabel
        return original(config, multilabel=multilabel)

    for module in (trainer, components):
        monkeypatch.setattr(module, "make_loss", spy)
    run_ = trainer.prepare_run(config, out, components.check_config(config), torch.device("cpu"), quiet=True)
    assert seen["multilabel"] is True
    logits = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    target = (torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    expected = torch.stack([losses.get("dice_ce")(logits[:, r:r + 1], target[:, r].long()) for r in range(2)]).mean()
    torch.testing.assert_close(run_.loss_fn(logits, target), expected)


def test_evaluation_is_per_region_of_the_sigmoid_predictions(run):
    root, _, out, config, result = run
    rows = result["test_rows"]
    assert sorted({row["class"] for row in rows}) == [0, 1]  # class r = region r (whole, core)
    model, _ = inference.load_checkpoint(out / "best.pt")
    test = get_dataset("nnunet", split="test", **config.dataset_arguments(out / "split.json"))
    predictions, labels = [], []
    for case in test.cases:
        image = torch.from_numpy(test.case(case).image).transpose(0, 1)  # slices (D, C, H, W)
        with torch.no_grad():
            regions = (torch.sigmoid(model(image)) > 0.5).transpose(0, 1).numpy().astype(np.uint8)  # (R, D, H, W)
        predictions.append(regions)
        slices = [test[i]["label"].numpy() for i in range(len(test)) if test[i]["case"] == case]
        labels.append(np.stack(slices, axis=1))
    expected = evaluate(predictions, labels, 2, metrics=("dice", "iou"), case_ids=test.cases, multilabel=True,
                        spacing=[test.volume_spacing(c) for c in test.cases])
    assert [(r["case"], r["class"]) for r in rows] == [(r["case"], r["class"]) for r in expected]
    np.testing.assert_allclose([r["dice"] for r in rows], [r["dice"] for r in expected])


def test_predict_writes_the_regions_multi_hot_on_the_last_axis(run, tmp_path):
    root, files, out, config, _ = run
    predict.predict_files(out / "best.pt", files["case_000"], tmp_path / "masks")
    mask = nibabel.load(str(tmp_path / "masks" / "case_000.nii.gz"))
    source = nibabel.load(str(files["case_000"][0]))
    assert mask.shape == (*source.shape, 2) and mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(mask.affine, source.affine)
    model, _ = inference.load_checkpoint(out / "best.pt")
    data = get_dataset("nnunet", split="all", **config.dataset_arguments())
    with torch.no_grad():
        logits = model(torch.from_numpy(data.case("case_000").image).transpose(0, 1))  # (D, R, H, W)
    expected = (logits > 0).numpy().astype(np.uint8).transpose(3, 2, 0, 1)  # (x, y, z, R)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), expected)
