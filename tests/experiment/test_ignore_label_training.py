"""`medsegloss train` on an nnU-Net dataset with an ignore label (issue #23): it trains as the
nnU-Net trainer does (every term skips the ignore label; validation and test leave its voxels
out), a loss that cannot skip it is refused before config.json / split.json are written, and
regions with an ignore label say what happens to the ignored voxels."""

from medsegloss.experiment import components
from medsegloss.experiment import train_cli
import numpy as np
import pytest
import torch

pytest.importorskip("nibabel")

from nnunet_fixtures import write_nnunet  # noqa: E402

from medsegloss import losses  # noqa: E402
from medsegloss.experiment import trainer  # noqa: E402
from medsegloss.experiment.config import Config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = {"background": 0, "liver": 1, "tumor": 2, "ignore": 3}
TINY = ["--steps", "4", "--val-every", "2", "--image-size", "16", "--base-width", "2", "--depth", "1",
        "--metrics", "dice", "--batch-size", "4", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def ignore_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "Dataset009_Ignore"
    write_nnunet(root, labels=LABELS, values=(1, 2, 3), cases=5)
    return root


def test_the_loss_skips_the_ignore_label_as_the_nnunet_trainer(ignore_root):
    from medsegloss.integrations.nnunet import NNUNetLoss

    config = Config(dataset="nnunet", data_root=str(ignore_root), loss="ce + dice")
    ours = components.make_loss(config, ignore_index=3)
    nnunet = NNUNetLoss(losses.build("ce + dice"), ignore_label=3)  # the nnU-Net trainer's mask
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 8, 8), generator=generator)
    torch.testing.assert_close(ours(logits, labels), nnunet(logits, labels[:, None].double()))
    logits_changed = logits.clone()
    logits_changed.permute(0, 2, 3, 1)[labels == 3] = 5.0
    torch.testing.assert_close(ours(logits_changed, labels), ours(logits, labels))


def test_train_runs_and_scores_only_the_labelled_voxels(ignore_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.main(["--dataset", "nnunet", "--data-root", str(ignore_root), "--loss", "ce + dice",
                         "--out", str(out), *TINY]) == 0
    import json

    rows = json.loads((out / "metrics.json").read_text())["test_rows"]
    assert rows and {row["class"] for row in rows} <= {1, 2}  # the ignore label is no class


class Everywhere(torch.nn.Module):
    """A 2-D "model" whose logits say class 1 (with regions: every region) on every voxel."""

    dims = 2

    def __init__(self, channels: int):
        super().__init__()
        self.channels, self.bias = channels, torch.nn.Parameter(torch.zeros(()))

    def forward(self, images):
        logits = torch.zeros(images.shape[0], self.channels, *images.shape[2:]) + self.bias
        logits[:, 1 if self.channels > 2 else slice(None)] = 1.0
        return logits


def test_evaluation_leaves_the_ignored_voxels_out(ignore_root):
    from medsegloss.experiment.evaluation import predict_items

    config = Config(dataset="nnunet", data_root=str(ignore_root), image_size=16)
    data = components.make_dataset(config, "all")

    records = predict_items(Everywhere(3), data, range(len(data)), batch_size=4)
    ignored = 0
    for index, (_, _, _, prediction, label) in enumerate(records):
        source = data[index]["label"].numpy()
        np.testing.assert_array_equal(prediction, np.where(source == 3, 0, 1))
        np.testing.assert_array_equal(label, np.where(source == 3, 0, source))
        ignored += int((source == 3).sum())
    assert ignored > 0  # the fixture does hold ignored voxels


def test_a_loss_that_cannot_skip_the_ignore_label_is_refused_before_any_file(ignore_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.main(["--dataset", "nnunet", "--data-root", str(ignore_root), "--loss", "ce + combo",
                         "--out", str(out), *TINY]) == 2
    error = capsys.readouterr().err
    assert "has an ignore label (value 3), which loss term(s) combo cannot skip" in error
    assert not (out / "config.json").exists() and not (out / "split.json").exists()


def test_regions_with_an_ignore_label_warn_at_the_start(tmp_path, capsys):
    root = tmp_path / "Dataset010_Regions"
    write_nnunet(root, labels={"background": 0, "whole": [1, 2], "core": 2, "ignore": 3}, values=(1, 2, 3), cases=5)
    assert train_cli.main(["--dataset", "nnunet", "--data-root", str(root), "--loss", "dice",
                         "--out", str(tmp_path / "run"), *TINY]) == 0
    assert "has regions and an ignore label (value 3): its voxels train as background" in capsys.readouterr().err
    from medsegloss.experiment.evaluation import predict_items

    data = components.make_dataset(Config(dataset="nnunet", data_root=str(root), image_size=16), "all")
    records = predict_items(Everywhere(2), data, range(len(data)), batch_size=4)
    for index, (_, _, _, prediction, _) in enumerate(records):  # ignored voxels: no region predicted, scored
        ignored = data[index]["ignore"].numpy()
        np.testing.assert_array_equal(prediction, np.broadcast_to(~ignored, prediction.shape))
