"""The nnU-Net trainer's loss variables are checked like `medsegloss train`'s flags (issue #23):
a typo in MEDSEGLOSS_CONFIG's options, a value of the wrong type, an empty MEDSEGLOSS_LOSS, a
config that is not UTF-8 fail with one line naming the variable or file, when the trainer is
made; `install` into a missing folder is one line, no traceback."""

import json

import pytest

from medsegloss.integrations import nnunet as integration


def _config(tmp_path, content) -> dict:
    path = tmp_path / "loss.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return {"MEDSEGLOSS_CONFIG": str(path)}


@pytest.mark.parametrize("content, message", [
    ({"loss": "ce + tversky", "options": {"alpah": 0.3}},
     "takes option(s) alpah. Did you mean: alpha"),
    ({"loss": "tversky", "options": {"alpah": 0.3}}, "has no option(s) alpah. Did you mean: alpha"),
    ({"loss": "ce + tversky", "options": {"alpha": "0.3"}}, "option alpha must be a finite number >= 0, got '0.3'"),
    ({"loss": "dice", "options": {"smooth": -1}}, "option smooth must be a finite number >= 0, got -1"),
    ({"loss": ""}, "a loss string must name at least one loss"),
    ({"loss": "ce + dice | dice=linear(0, 1)"}, "term-weight schedule"),
    ("{\"loss\": \"ce\"}".encode("utf-16"), "cannot read a JSON loss config (UnicodeDecodeError"),
])
def test_a_bad_loss_config_fails_naming_the_file(tmp_path, content, message):
    environ = _config(tmp_path, content)
    with pytest.raises(ValueError) as error:
        integration.loss_from_environment(environ)
    assert message in str(error.value) and str(tmp_path / "loss.json") in str(error.value)
    assert "\n" not in str(error.value)


def test_an_empty_or_bad_loss_variable_is_refused():
    with pytest.raises(ValueError, match="MEDSEGLOSS_LOSS is set but empty"):
        integration.loss_from_environment({"MEDSEGLOSS_LOSS": " "})
    with pytest.raises(ValueError, match=r"MEDSEGLOSS_LOSS: unknown loss 'dcie'"):
        integration.loss_from_environment({"MEDSEGLOSS_LOSS": "ce + dcie"})
    assert integration.loss_from_environment({"MEDSEGLOSS_LOSS": "ce + 0.5*dice"}) == ("ce + 0.5*dice", {})


def test_the_trainer_checks_the_variables_when_it_is_made(monkeypatch):
    pytest.importorskip("nnunetv2")
    monkeypatch.setenv("MEDSEGLOSS_LOSS", "dice(smooth=-1)")
    monkeypatch.delenv("MEDSEGLOSS_CONFIG", raising=False)
    with pytest.raises(ValueError, match="option smooth must be a finite number >= 0"):
        integration.nnUNetTrainerMedsegloss({}, "3d_fullres", 0, {})  # before nnU-Net reads its arguments


def test_install_into_a_missing_folder_is_one_line(tmp_path, capsys):
    pytest.importorskip("nnunetv2")
    assert integration.main(["install", str(tmp_path / "nonexistent")]) == 2
    error = capsys.readouterr().err
    assert f"folder '{tmp_path / 'nonexistent'}' does not exist" in error and "Traceback" not in error
