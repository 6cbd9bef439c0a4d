"""The model zoo: spec parsing, seeded construction (same weights for every loss of a seed),
clear errors, deep supervision of DynUNet, and tiny sweeps with smp, monai and module: networks."""

import importlib
import json

import pytest
import torch
from torch import nn

from medsegloss.experiment.config import Config
from medsegloss.models.zoo import build_model, check_model_input, parse_model_spec

def _importable(name):
    try:
        importlib.import_module(name)
    except Exception:  # missing, or installed against another torch (torchvision operators)
        return False
    return True


HAS_SMP = _importable("segmentation_models_pytorch")
HAS_MONAI = _importable("monai.networks.nets")
SMP_TINY = 'smp:Unet(encoder_name="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))'
DYNUNET = "monai:DynUNet(filters=[4, 8, 16])"


def tiny_network(in_channels, out_channels, dims, width=4):
    """A module: factory for the tests: conv, ReLU, 1x1 conv."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return nn.Sequential(conv(in_channels, width, 3, padding=1), nn.ReLU(), conv(width, out_channels, 1))


MODULE_SPEC = f"module:{__name__}:tiny_network(width=3)"


def test_spec_parsing():
    assert parse_model_spec("unet") == ("", "unet", {})
    assert parse_model_spec('smp:Unet(encoder_name="resnet18", decoder_channels=(8, 4))') == \
        ("smp", "Unet", {"encoder_name": "resnet18", "decoder_channels": (8, 4)})
    assert parse_model_spec("module:pkg.mod:make(width=2)") == ("module", "pkg.mod:make", {"width": 2})


@pytest.mark.parametrize("spec, words", [
    ("resnet", "unknown model 'resnet'"), ("timm:Unet", "unknown prefix 'timm'"),
    ("smp:Unet(encoder_name=resnet18)", "not a Python literal"), ("smp:Unet(3)", "key=value"),
    ("smp:Unet(depth=3", "close with ')'"), ("", "spec string")])
def test_malformed_specs_name_the_problem(spec, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_model_spec(spec)
    with pytest.raises(ValueError):
        Config(model=spec)


def _state(spec, seed, **kwargs):
    from medsegloss.experiment.components import make_model

    return make_model(Config(model=spec, seed=seed, depth=2, **kwargs), 1, 3).state_dict()


def _equal(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("spec", [
    pytest.param(SMP_TINY, marks=pytest.mark.skipif(not HAS_SMP, reason="segmentation_models_pytorch missing or not importable (torchvision built for another torch)")),
    pytest.param(DYNUNET, marks=pytest.mark.skipif(not HAS_MONAI, reason="monai missing")),
    pytest.param("monai:BasicUNet(features=(4, 4, 8, 8, 16, 4))",
                 marks=pytest.mark.skipif(not HAS_MONAI, reason="monai missing")),
    MODULE_SPEC])
def test_one_seed_builds_identical_weights_and_seeds_differ(spec):
    assert _equal(_state(spec, 0), _state(spec, 0))
    assert not _equal(_state(spec, 0), _state(spec, 1))


def test_module_factory_gets_channels_dims_and_options():
    model = build_model(MODULE_SPEC, 2, 5, dims=2)
    assert model[0].in_channels == 2 and model[0].out_channels == 3 and model[2].out_channels == 5
    with pytest.raises(ValueError, match="no callable 'missing'"):
        build_model(f"module:{__name__}:missing", 1, 2)


@pytest.mark.skipif(not HAS_SMP, reason="segmentation_models_pytorch missing or not importable (torchvision built for another torch)")
def test_smp_refuses_3d_and_sizes_it_cannot_take():
    with pytest.raises(ValueError, match="2-D only"):
        build_model(SMP_TINY, 1, 2, dims=3)
    model = build_model(SMP_TINY, 1, 2)
    check_model_input(model, SMP_TINY, 1, (32, 32))  # 32 is a multiple of 2**3
    with pytest.raises(ValueError, match=r"\(20, 20\).*multiples of 8"):
        check_model_input(model, SMP_TINY, 1, (20, 20))


@pytest.mark.skipif(not HAS_MONAI, reason="monai missing")
def test_dynunet_deep_supervision_gives_the_list_the_loss_wrapper_takes():
    model = build_model(DYNUNET, 1, 3, dims=2, depth=2, deep_supervision=True)
    x = torch.randn(2, 1, 16, 16)
    outputs = model.train()(x)
    assert isinstance(outputs, list) and len(outputs) == 2
    assert all(output.shape == (2, 3, 16, 16) for output in outputs)
    assert model.eval()(x).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="deep supervision"):
        build_model("monai:BasicUNet", 1, 3, deep_supervision=True)


TINY = {"image_size": 32, "depth": 2, "steps": 2, "batch_size": 4, "device": "cpu", "val_every": 2,
        "dataset_options": {"num_cases": 4, "slices_per_case": 2}, "val_fraction": 0.25, "test_fraction": 0.25}


@pytest.mark.parametrize("spec", [
    pytest.param(SMP_TINY, marks=pytest.mark.skipif(not HAS_SMP, reason="segmentation_models_pytorch missing or not importable (torchvision built for another torch)")),
    pytest.param(DYNUNET, marks=pytest.mark.skipif(not HAS_MONAI, reason="monai missing")),
    MODULE_SPEC])
def test_tiny_sweep_records_the_model_and_predict_rebuilds_it(spec, tmp_path):
    from medsegloss.experiment import bench
    from medsegloss.experiment.inference import load_checkpoint

    config = Config.preset("default", model=spec, **TINY)
    outcome = bench.run_sweep(config, ["phantom-lesion"], ["ce", "dice"], [0], tmp_path, quiet=True)
    assert outcome["trained"] == 2 and not outcome["failed"]
    run = tmp_path / "phantom-lesion" / "ce" / "seed0"
    assert json.loads((run / "config.json").read_text())["model"] == spec
    model, loaded = load_checkpoint(run / "best.pt")
    assert loaded.model == spec
    saved = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["model"]
    assert _equal(model.state_dict(), saved)


def test_a_missing_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"medsegloss\[smp\]"):
        build_model(SMP_TINY, 1, 2)
