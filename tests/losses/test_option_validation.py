"""Weights, smoothing terms and indices are validated where a loss is parsed or built (issue
#23): a negative or infinite weight (in a loss string or a schedule) would maximise its term; a
negative smoothing term or a fractional ignore_index trained silently before. Unknown options
are named with the closest valid ones."""

from medsegloss.experiment import train_cli
import pytest

from medsegloss import losses
from medsegloss.experiment import trainer
from medsegloss.losses.compound.language import parse_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("schedule, message", [
    ("dice=linear(-5,-5)", "schedule entry 'dice=linear(-5,-5)' has weight -5: term weights must be >= 0"),
    ("dice=step(-1@0)", "schedule entry 'dice=step(-1@0)' has weight -1"),
    ("dice=linear(0, 1, 0, 10); ce=step(1@0, -0.5@4)", "has weight -0.5: term weights must be >= 0"),
])
def test_negative_schedule_weights_are_refused_at_parse_time(schedule, message):
    with pytest.raises(ValueError) as error:
        parse_schedule(schedule)
    assert message in str(error.value)


def test_zero_and_positive_schedule_weights_still_parse():
    schedule = parse_schedule("dice=step(1@0, 0@5); ce=linear(0, 2)")
    assert schedule.weights(5, total_steps=11) == {"dice": 0.0, "ce": 1.0}


@pytest.mark.parametrize("spec, message", [
    ("dice(smooth=-1)", "loss 'dice': option smooth must be a finite number >= 0, got -1"),
    ("dice(smooth=1e999)", "option smooth must be a finite number >= 0, got inf"),
    ("ce(ignore_index=1.5)", "loss 'ce': option ignore_index must be an integer label or None, got 1.5"),
    ("ce(ignore_index=True)", "option ignore_index must be an integer label or None, got True"),
    ("tversky(alpha=-0.3, beta=0.7)", "loss 'tversky': option alpha must be a finite number >= 0, got -0.3"),
    ("focal(alpha=-1)", "loss 'focal': option alpha must be a finite number >= 0, got -1"),  # default None
    ("dice_ce(weight_dice=1e999)", "option weight_dice must be a finite number >= 0, got inf"),
    ("dice(include_background=2)", "option include_background must be True or False, got 2"),
    ("dice(reduction='avg')", "option reduction must be one of ('mean', 'sum', 'none'), got 'avg'"),
    ("wce(weight=[1.0, -2.0])", "class weights [1.0, -2.0]) must be a finite number >= 0, got -2.0"),
    ("1e999*dice", "term '1e999*dice' of loss string '1e999*dice' has weight inf"),
    ("ce + 1e400*dice", "term '1e400*dice' of loss string 'ce + 1e400*dice' has weight inf"),
])
def test_bad_option_values_are_refused_at_build_time(spec, message):
    with pytest.raises(ValueError) as error:
        losses.build(spec)
    assert message in str(error.value)


def test_valid_options_still_build():
    assert losses.build("ce(ignore_index=-100) + 0.5*dice(smooth=0)").weights == {"ce": 1.0, "dice": 0.5}
    assert losses.get("focal", alpha=None).options.get("alpha") is None
    assert losses.get("topk", k=10).options["k"] == 10


def test_an_unknown_option_is_named_with_the_closest_valid_one():
    with pytest.raises(TypeError) as error:
        losses.get("tversky", alpah=0.3)
    assert "loss 'tversky' has no option(s) alpah. Did you mean: alpha" in str(error.value)


@pytest.mark.parametrize("flags, message", [
    (["--loss", "ce + dice", "--loss-schedule", "dice=linear(-5,-5)"], "has weight -5: term weights must be >= 0"),
    (["--loss", "ce + dice | ce=step(-2@0)"], "schedule entry 'ce=step(-2@0)' has weight -2"),
    (["--loss", "dice(smooth=-1)"], "option smooth must be a finite number >= 0, got -1"),
    (["--loss", "ce", "--loss-options", '{"ignore_index": 1.5}'], "ignore_index must be an integer label or None"),
])
def test_train_refuses_them_before_anything_is_written(flags, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.main(["--out", str(out), "--quiet", "--steps", "2", "--image-size", "16", "--base-width", "2",
                         "--depth", "1", *flags]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not out.exists()
