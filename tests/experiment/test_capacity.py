"""Sizes checked before allocation: a patch larger than every item, and a UNet training step
that needs more memory than the device has, are refused naming the flag (they failed inside the
allocator asking for TiBs). The estimate is checked against the UNet itself: its parameter
count exactly, its activations against the tensors autograd really saves."""

from medsegloss.experiment import train_cli
import pytest
import torch

from medsegloss.experiment import bench, capacity, trainer
from medsegloss.models import UNet

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--dataset", "phantom-lesion", "--image-size", "16", "--base-width", "2", "--depth", "1", "--steps", "2",
        "--val-every", "2", "--batch-size", "2", "--dataset-options", '{"num_cases": 5, "slices_per_case": 2}',
        "--metrics", "dice", "--threads", "1", "--device", "cpu", "--patch", "0", "--quiet"]


def _refused(capsys, out, *flags) -> str:
    assert train_cli.main([*TINY, "--out", str(out), *flags]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error, error
    assert not (out / "config.json").exists()
    return error


@pytest.mark.parametrize("arguments", [(1, 2, 4, 2, 2, False), (3, 5, 6, 3, 2, True), (2, 1, 4, 2, 3, False),
                                       (1, 3, 2, 0, 2, False)])
def test_parameter_count_equals_the_unet(arguments):
    in_channels, classes, base, depth, dims, deep = arguments
    model = UNet(in_channels, classes, base=base, depth=depth, dims=dims, deep_supervision=deep)
    assert capacity.parameter_count(*arguments) == sum(p.numel() for p in model.parameters())


def _saved_bytes(model, image, classes) -> int:
    """The distinct storages autograd saves in a forward pass and the loss."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(image)
        torch.nn.functional.cross_entropy(logits, torch.zeros((image.shape[0], *image.shape[2:]), dtype=torch.long))
    return sum(storages.values())


@pytest.mark.parametrize("in_channels, classes, base, depth, dims, batch, spatial", [
    (1, 2, 4, 2, 2, 2, (32, 32)), (1, 4, 8, 3, 2, 4, (48, 48)), (1, 2, 4, 2, 3, 2, (16, 16, 16)),
    (2, 3, 8, 3, 2, 2, (50, 70)), (1, 2, 8, 1, 3, 1, (13, 11, 7))])
def test_activation_estimate_is_within_25_percent_of_what_autograd_saves(in_channels, classes, base, depth, dims,
                                                                        batch, spatial):
    model = UNet(in_channels, classes, base=base, depth=depth, dims=dims)
    measured = _saved_bytes(model, torch.randn(batch, in_channels, *spatial), classes)
    estimate = capacity.activation_bytes(in_channels, classes, base, depth, dims, batch, spatial)
    assert 0.75 <= estimate / measured <= 1.25


def test_a_3d_patch_larger_than_every_volume_is_refused_naming_the_flag(tmp_path, capsys):
    error = _refused(capsys, tmp_path / "run", "--dims", "3", "--patch", "10000")
    assert "--patch 10000 is larger than every training volume along every axis (the largest is 2×16×16)" in error
    assert "use --patch 16 or less, or --patch 0" in error


def test_a_2d_patch_larger_than_the_images_is_refused_and_one_as_large_accepted(tmp_path, capsys):
    assert "--patch 17 is larger than every training image" in _refused(capsys, tmp_path / "a", "--patch", "17")
    assert train_cli.main([*TINY, "--out", str(tmp_path / "b"), "--patch", "16"]) == 0


@pytest.mark.parametrize("flags, named", [(["--base-width", "1000000"], "lower --base-width (1000000) or --depth (1)"),
                                          (["--depth", "30"], "lower --base-width (2) or --depth (30)"),
                                          (["--batch-size", "100000000000"], "lower --batch-size (100000000000)")])
def test_a_step_larger_than_the_memory_is_refused_naming_the_flags(flags, named, tmp_path, capsys):
    error = _refused(capsys, tmp_path / "run", *flags)
    assert "a training step needs about" in error and "more than the" in error and named in error, error


def test_bench_refuses_it_before_writing_initial_weights(tmp_path, capsys):
    flags = [flag for flag in TINY if flag not in ("--dataset", "phantom-lesion")]
    assert bench.main(["--datasets", "phantom-lesion", "--losses", "ce", "--seeds", "0", *flags,
                       "--base-width", "1000000", "--out", str(tmp_path / "b")]) == 2
    assert "--base-width (1000000)" in capsys.readouterr().err
    assert not (tmp_path / "b" / "phantom-lesion" / "init" / "seed0.pt").exists()


def test_human_sizes():
    assert [capacity.human(n) for n in (512, 2048, 3 * 1024**4, 5 * 1024**6)] == [
        "512.0 B", "2.0 KiB", "3.0 TiB", "5.12e+03 PiB"]
