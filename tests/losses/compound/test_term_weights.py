"""Term weights are refused when they are read, not at the first step: a zero weight in a loss
string (``"0*ce"`` trained a zero loss into a "finished" run), and weights or schedule values that
are not finite or overflow float32 training (``1e308*dice``, an integer of 400 digits,
``linear(0, 1e308)`` all died at step 1-2 with "loss not finite")."""

from medsegloss.experiment import train_cli
import re

import pytest

from medsegloss import losses
from medsegloss._checks import MAX_TERM_WEIGHT
from medsegloss.experiment import trainer
from medsegloss.losses.compound.language import parse_schedule

HUGE_INTEGER = "1" + "0" * 400  # float() of it is inf


@pytest.mark.parametrize("spec, term", [("0*ce", "0*ce"), ("ce + 0.0*dice", "0.0*dice"), ("dice*0", "dice*0"),
                                        ("ce + 0e5*dice", "0e5*dice")])
def test_a_zero_weight_is_refused_naming_the_term(spec, term):
    with pytest.raises(ValueError, match=re.escape(f"term {term!r} of loss string {spec!r} has weight 0")):
        losses.build(spec)


@pytest.mark.parametrize("spec, shown", [("ce + 1e308*dice", "1e+308"), (f"ce + {HUGE_INTEGER}*dice", "inf"),
                                         ("ce + 1e7*dice", "1e+07"), ("2*ce*1e300", "2e+300"),
                                         ("ce + 1e200*dice*1e200", "inf")])
def test_a_weight_that_overflows_is_refused_naming_the_term_and_the_limit(spec, shown):
    with pytest.raises(ValueError, match=re.escape(f"has weight {shown}: term weights must be finite and at most 1e+06")):
        losses.build(spec)


def test_weights_up_to_the_limit_are_kept():
    assert MAX_TERM_WEIGHT == 1e6
    assert losses.build("ce + 1e6*dice").weights == {"ce": 1.0, "dice": 1e6}
    assert losses.build("1e-9*ce + dice").weights == {"ce": 1e-9, "dice": 1.0}


@pytest.mark.parametrize("text, weight", [("dice=linear(0, 1e308)", "1e+308"), ("dice=linear(1e7, 1)", "1e+07"),
                                          ("dice=step(1@0, 2e6@10)", "2e+06"), ("dice=linear(2e6, 0, 0, 5)", "2e+06")])
def test_schedule_values_that_overflow_are_refused_naming_the_entry(text, weight):
    with pytest.raises(ValueError, match=re.escape(f"schedule entry {text!r} has weight {weight}: term weights must "
                                                   "be finite and at most 1e+06")):
        parse_schedule(text)
    with pytest.raises(ValueError, match="is not finite"):
        parse_schedule(f"dice=linear(0, {HUGE_INTEGER})")


def test_schedule_weights_in_range_and_zero_are_kept():
    schedule = parse_schedule("dice=linear(0, 1e6); ce=step(1@0, 0@10)")
    assert schedule.weights(0, total_steps=11) == {"dice": 0.0, "ce": 1.0}
    assert schedule.weights(10, total_steps=11) == {"dice": 1e6, "ce": 0.0}


def test_a_schedule_that_zeroes_every_term_is_refused():
    loss = losses.build("ce + dice")
    with pytest.raises(ValueError, match=re.escape("sets every term of the loss (ce, dice) to weight 0 at every step")):
        parse_schedule("ce=linear(0, 0); dice=step(0@0)").check_terms(loss)
    parse_schedule("ce=linear(0, 0)").check_terms(loss)  # dice keeps its weight 1
    parse_schedule("ce=linear(0, 0); dice=step(0@0, 1@5)").check_terms(loss)


@pytest.mark.parametrize("flags, message", [
    (["--loss", "0*ce"], "term '0*ce' of loss string '0*ce' has weight 0"),
    (["--loss", "ce + 1e308*dice"], "has weight 1e+308"),
    (["--loss", "ce + dice", "--loss-schedule", "dice=linear(0, 1e308)"], "weight 1e+308"),
    (["--loss", "ce + dice | dice=linear(0, 1e308)"], "weight 1e+308"),
])
def test_train_refuses_them_before_anything_is_written(flags, message, tmp_path, capsys):
    assert train_cli.main(["--out", str(tmp_path / "run"), "--quiet", "--image-size", "16", *flags]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
