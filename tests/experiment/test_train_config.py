"""The experiment config: presets, round trips, validation, and the CLI flags generated from it."""

from medsegloss.experiment import components
import dataclasses
import json

import pytest

from medsegloss.experiment import train_cli
from medsegloss.experiment import trainer
from medsegloss.experiment.config import Config, field_help, loss_slug


def test_paper_preset_is_the_reference_experiment():
    config = Config.preset("paper")
    assert (config.base_width, config.depth, config.image_size) == (64, 4, 256)
    assert (config.optimizer, config.lr, config.epochs, config.loss) == ("adam", 0.01, 100, "ce")
    assert Config.preset("paper", loss="ce + 1.0*dice").loss == "ce + 1.0*dice"
    assert Config.preset("default") == Config()


def test_round_trip_through_json():
    config = Config(loss="tversky", loss_options={"alpha": 0.3}, metrics=("dice", "hd95"), seed=3)
    again = Config.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.metrics == ("dice", "hd95")
    assert config.replace(seed=4).seed == 4 and config.seed == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 5


def test_unknown_fields_and_bad_values_fail_clearly():
    with pytest.raises(ValueError, match="unknown config field.*'epoch'.*Did you mean: epochs"):
        Config.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="unknown config field"):
        Config().replace(lerning_rate=0.1)
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        Config(epochs=0)
    with pytest.raises(ValueError, match="optimizer must be one of adam, adamw, sgd, got 'rmsprop'"):
        Config(optimizer="rmsprop")
    with pytest.raises(ValueError, match="sum < 1"):
        Config(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(TypeError, match="loss_options must be a dict"):
        Config(loss_options="alpha=0.3")
    with pytest.raises(ValueError, match="unknown preset 'papre'"):
        Config.preset("papre")


def test_every_field_is_documented_by_its_comment():
    help_ = field_help()
    assert set(help_) == {field.name for field in dataclasses.fields(Config)}
    assert all(len(text) > 10 for text in help_.values())


def test_run_dir_default_and_loss_slug():
    assert Config(loss="ce + 1.0*dice", seed=2).run_dir == "runs/phantom-lesion/ce+1.0xdice/seed2"
    assert Config(out="x/y").run_dir == "x/y"
    assert loss_slug("0.5*tversky(alpha=0.3)") == "0.5xtversky_alpha=0.3_"


def test_cli_flags_are_generated_from_the_fields_with_their_types():
    args, given = train_cli.parse_arguments(["--loss", "ce + 1.0*dice", "--loss-options", '{"alpha": 0.3}', "--epochs", "3",
                                "--lr", "0.01", "--metrics", "dice,hd95", "--no-channels-last",
                                "--init-weights", "none", "--data-root", "data/x", "--preset", "paper"])
    assert given == {"loss": "ce + 1.0*dice", "loss_options": {"alpha": 0.3}, "epochs": 3, "lr": 0.01,
                     "metrics": ("dice", "hd95"), "channels_last": False, "init_weights": None,
                     "data_root": "data/x"}
    config = Config.preset(args.preset, **given)
    assert config.base_width == 64 and config.epochs == 3  # preset, then the flags on top
    parser = train_cli.build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    assert {f"--{field.name.replace('_', '-')}" for field in dataclasses.fields(Config)} <= flags


def test_cli_rejects_unknown_flags_and_bad_values(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_cli.parse_arguments(["--lss", "ce"])
    assert exit_.value.code == 2 and "Did you mean: --loss" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.parse_arguments(["--loss-options", "{alpha: 0.3}"])
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.parse_arguments(["--resume", "runs/x", "--epochs", "3"])
    assert "do not pass --epochs" in capsys.readouterr().err


def test_binary_only_check_uses_the_classes_the_dataset_options_give(tmp_path):
    """covid-ct is binary by default but has 3 classes with target="lungs+infection": the check
    before any work must see the options (the registry's default class names would let it pass)."""
    from medsegloss import data

    assert data.class_names("covid-ct") == ["background", "infection"]
    assert data.class_names("covid-ct", target="lungs+infection") == ["background", "lung", "infection"]
    assert data.class_names("folder") is None  # only the masks tell
    assert data.class_names("folder", num_classes=3) == ["background", "class1", "class2"]
    binary_loss = dict(dataset="covid-ct", data_root=str(tmp_path), loss="bce_iou_ssim")
    components.check_config(Config(**binary_loss))  # one output channel: accepted (no file is read)
    with pytest.raises(ValueError, match=r"binary \(one-channel\) outputs only.*gives 3 output channels"):
        components.check_config(Config(**binary_loss, dataset_options={"target": "lungs+infection"}))
    with pytest.raises(ValueError, match=r"binary \(one-channel\) outputs only.*gives 3 output channels"):
        components.check_config(Config(dataset="folder", data_root=str(tmp_path), loss="bce_iou_ssim",
                                  dataset_options={"num_classes": 3}))
    with pytest.raises(ValueError, match=r"target must be one of"):
        components.check_config(Config(**binary_loss, dataset_options={"target": "lung"}))
