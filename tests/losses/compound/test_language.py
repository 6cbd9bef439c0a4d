"""The loss language (``losses.compound.language``): loss strings -> LossSpec (terms, weights,
options, the schedule after ``|``) -> the loss module, lists of loss strings, and clear errors."""

from __future__ import annotations

import pytest
import torch

from medsegloss import losses
from medsegloss.losses import WeightedSum, build, parse, split_list
from medsegloss.losses.compound import language
from medsegloss.losses.compound.language import parse_schedule


# ------------------------------------------------------------------ terms, weights, options


def make(channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, channels, 8, 7, generator=generator, requires_grad=True)
    return logits, torch.randint(0, max(channels, 2), (2, 8, 7), generator=generator)


def test_weights_options_and_whitespace():
    loss = build("  0.5 *ce+dice*2 + tversky( alpha = 0.2 , beta=0.8 )*0.1 ")
    assert isinstance(loss, WeightedSum)
    assert loss.names == ["ce", "dice", "tversky"]
    assert loss.weights == {"ce": 0.5, "dice": 2.0, "tversky": pytest.approx(0.1)}
    assert loss.terms[2].options == {"alpha": 0.2, "beta": 0.8}
    logits, labels = make()
    expected = (0.5 * losses.cross_entropy_loss(logits, labels) + 2 * losses.dice_loss(logits, labels)
                + 0.1 * losses.tversky_loss(logits, labels, alpha=0.2, beta=0.8))
    torch.testing.assert_close(loss(logits, labels), expected)


@pytest.mark.parametrize("spec, weight", [("1e-2*dice + ce", 0.01), ("2.5E+1 * dice + ce", 25.0),
                                          (".5*dice+ce", 0.5), ("dice*1.e1 + ce", 10.0)])
def test_scientific_notation(spec, weight):
    assert build(spec).weights["dice"] == pytest.approx(weight)


def test_single_unweighted_term_is_the_loss_itself():
    loss = build("tversky(alpha=0.4)")
    assert type(loss).__name__ == "TverskyLoss" and loss.options == {"alpha": 0.4}
    assert isinstance(build("2*dice"), WeightedSum)


def test_duplicates_get_numbered_labels():
    loss = build("dice + dice(smooth=1.0) + 0.5*dice")
    assert loss.names == ["dice", "dice_2", "dice_3"]
    logits, labels = make()
    value = loss(logits, labels)
    assert loss.last_values["dice"] == pytest.approx(loss.last_values["dice_3"])
    assert loss.last_values["dice"] != pytest.approx(loss.last_values["dice_2"])
    values = loss.last_values
    assert float(value.detach()) == pytest.approx(values["dice"] + values["dice_2"] + 0.5 * values["dice_3"])


@pytest.mark.parametrize("spec, message", [
    ("ce +", "empty term"),
    ("+ dice", "empty term"),
    ("0.5**dice", r"cannot parse term '0.5\*\*dice'"),
    ("dice(", "unbalanced parentheses"),
    ("dice)", "unbalanced parentheses"),
    ("ce - dice", "cannot parse term 'ce - dice'"),
    ("dice(0.3)", "key=value"),
    ("dice(smooth=)", "key=value"),
    ("dice(**{'smooth': 1})", "key=value"),
    ("dice(smooth=1, smooth=2)", "key=value"),
    ("", "at least one loss"),
    ("   ", "at least one loss"),
])
def test_malformed_strings_raise(spec, message):
    with pytest.raises(ValueError, match=message):
        build(spec)


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown loss 'dcie'.*Did you mean: .*dice"):
        build("ce + 0.5*dcie")
    with pytest.raises(ValueError, match=r"'tverksy'.*tversky"):
        build("tverksy")


def test_unknown_option_names_the_options():
    with pytest.raises(TypeError, match=r"no option\(s\) gamma.*alpha=0.3"):
        build("ce + tversky(gamma=2)")


def test_common_options_go_to_terms_that_take_them_and_none_reduction_flows_through():
    loss = build("ce + 0.5*dice(smooth=1.0)", reduction="none", include_background=False)
    assert loss.terms[0].options == {"reduction": "none"}  # ce takes no include_background
    assert loss.terms[1].options == {"reduction": "none", "include_background": False, "smooth": 1.0}
    logits, labels = make()
    value = loss(logits, labels)
    assert value.shape == (2,)
    expected = losses.cross_entropy_loss(logits, labels, reduction="none") + 0.5 * losses.dice_loss(
        logits, labels, reduction="none", include_background=False, smooth=1.0)
    torch.testing.assert_close(value, expected)
    assert loss.last_values["ce"] == pytest.approx(float(losses.cross_entropy_loss(logits, labels).detach()))
    assert loss.last_tensors["dice"].shape == (2,) and not loss.last_tensors["dice"].requires_grad


def test_named_compound_inside_a_string():
    logits, labels = make()
    loss = build("dice_ce(weight_dice=0.5) + 0.1*boundary")
    expected = losses.dice_ce_loss(logits, labels, weight_dice=0.5) + 0.1 * losses.boundary_loss(logits, labels)
    torch.testing.assert_close(loss(logits, labels), expected)


def test_ce_plus_dice_string_takes_the_fused_pass_and_equals_its_terms():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    fused = losses.build("0.7*ce + 1.5*dice(smooth=1e-3)")
    assert fused.joint is not None
    value = fused(logits, target)
    (grad_fused,) = torch.autograd.grad(value, logits)
    expected = 0.7 * losses.cross_entropy_loss(logits, target) + 1.5 * losses.dice_loss(logits, target, smooth=1e-3)
    (grad_expected,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(grad_fused, grad_expected)
    # options the fused pass does not have keep the terms apart
    assert losses.build("ce + dice(squared=True)").joint is None
    assert losses.build("ce(label_smoothing=0.1) + dice").joint is None
    assert losses.build("ce + dice(reduction='none')").joint is None  # the terms disagree on reduction
    # batch and class weights are the Dice term's, and the pass has them (equal: compound/test_named_sums.py)
    assert losses.build("ce + dice(batch=True, weight=[1, 2, 3])").joint is not None
    assert losses.build("ce + tversky").joint is None


def test_parse_reads_the_whole_string_and_builds_nothing(monkeypatch):
    monkeypatch.setattr(language, "get", lambda *args, **kwargs: pytest.fail("parse built a loss"))
    spec = parse("0.5*ce + dice(smooth=1.0) + dice | dice_2=linear(0.0, 2.0)")
    assert spec.names == ("ce", "dice") and spec.labels == ("ce", "dice", "dice_2")
    assert [term.weight for term in spec.terms] == [0.5, 1.0, 1.0] and spec.terms[1].options == {"smooth": 1.0}
    assert spec.schedule.weights(step=5, total_steps=11) == {"dice_2": 1.0}
    assert not spec.single and parse("tversky(alpha=0.4)").single and not parse("2*dice").single


def test_option_values_are_not_loss_names():
    """A string option naming a loss (gwdl's weighting="gdl") is a value, not a term."""
    assert parse('gwdl(weighting="gdl")').names == ("gwdl",)
    assert parse('gwdl(weighting="gdl") + ce').names == ("gwdl", "ce")


def test_an_option_no_term_takes_is_an_error():
    with pytest.raises(TypeError, match=r"no term of loss 'ce \+ dice' takes option\(s\) alpah\..* Options of its terms: .*smooth"):
        build("ce + dice", alpah=0.3)
    with pytest.raises(TypeError, match=r"loss 'tversky' has no option\(s\) alpah\. Did you mean: alpha.* Its options are: alpha=0.3"):
        build("tversky", alpah=0.3)
    with pytest.raises(TypeError, match=r"loss 'tversky' has no option\(s\) gamma"):
        parse("ce + tversky(gamma=2)")  # options in parentheses are checked when read
    assert parse("ce + dice").options == sorted(set(losses.info("ce").options) | set(losses.info("dice").options))


def test_a_deprecated_common_option_reaches_the_term_that_had_it():
    with pytest.warns(DeprecationWarning, match="alpha= is renamed weight_dice="):
        loss = build("dice_ce + 0.5*boundary", alpha=0.3)
    assert loss.terms[0].weights == {"ce": 1.0, "dice": 0.3} and "alpha" not in loss.terms[1].options


# ------------------------------------------------------------------ the schedule after '|'


@pytest.mark.parametrize("text, words", [
    ("boundary", "must look like"),
    ("boundary=cubic(1, 2)", "must look like"),
    ("boundary=linear(1)", "linear takes"),
    ("boundary=linear(1, x)", "'x' is not a number"),
    ("boundary=linear(1, inf)", "is not a number"),
    ("b=linear(1, 2, 5, 5)", "start_step < end_step"),
    ("b=step(1@5, 2@10)", "start at @0"),
    ("b=step(1@0, 2@10, 3@10)", "start at @0 and rise"),
    ("b=step(1, 2@10)", "weight@step"),
    ("b=linear(0, 1); b=step(1@0)", "names a term twice"),
])
def test_malformed_schedules_name_the_entry(text, words):
    with pytest.raises(ValueError, match="schedule") as error:
        parse_schedule(text)
    assert words in str(error.value)


def test_empty_text_means_no_schedule():
    assert parse_schedule(None) is None and parse_schedule("  ") is None


def test_the_schedule_after_the_bar_is_the_built_sums():
    loss = build("gdl + 0.01*boundary | boundary=linear(0.01, 1.0)")
    assert isinstance(loss, WeightedSum) and loss.weights == {"gdl": 1.0, "boundary": 0.01}
    assert loss.schedule.text == "boundary=linear(0.01, 1.0)"
    assert loss.schedule.apply(loss, step=10, total_steps=11) == {"boundary": 1.0} and loss.weights["boundary"] == 1.0
    assert build("gdl + 0.01*boundary").schedule is None
    # a single named sum: its terms are known once built
    assert build("gdl_boundary | boundary=step(0@0, 1@5)").schedule.weights(5, 10) == {"boundary": 1.0}


@pytest.mark.parametrize("text, words", [
    ("gdl + boundary | hd=linear(0, 1)", r"term\(s\) \['hd'\] that the loss does not have; its terms are \['gdl', 'boundary'\]"),
    ("dice | dice=linear(0, 1)", "needs a compound loss"),
    ("combo | combo=linear(0, 1)", "needs a compound loss"),  # a formula of its own has no term weights
    ("gdl + boundary | boundary=linear(1)", "linear takes"),
    ("gdl + boundary | boundary=linear(0, 1) | dice=linear(0, 1)", "has 2 '|'"),
])
def test_a_bad_schedule_fails_when_read(text, words):
    with pytest.raises(ValueError, match=words):
        parse(text)


def test_a_named_sums_schedule_is_checked_against_its_terms_when_built():
    spec = parse("gdl_boundary | hd=linear(0, 1)")
    with pytest.raises(ValueError, match=r"term\(s\) \['hd'\] that the loss does not have"):
        spec.build()


def test_a_schedule_given_apart_joins_a_string_without_one():
    spec = parse("gdl + boundary").with_schedule("boundary=step(0@0, 1@3)")
    assert spec.schedule.weights(3, 10) == {"boundary": 1.0}
    assert parse("gdl + boundary").with_schedule(None).schedule is None
    assert parse("gdl + boundary | boundary=linear(0, 1)").with_schedule(None).schedule.text == "boundary=linear(0, 1)"
    with pytest.raises(ValueError, match="keep one"):
        parse("gdl + boundary | boundary=linear(0, 1)").with_schedule("boundary=linear(0, 1)")


def test_lists_split_at_commas_outside_parentheses():
    assert split_list("ce,dice, tversky(alpha=0.3, beta=0.7) ,") == ["ce", "dice", "tversky(alpha=0.3, beta=0.7)"]
    assert split_list("gdl + boundary | boundary=step(0@0, 1@5); gdl=linear(1, 0.5), dice") == \
        ["gdl + boundary | boundary=step(0@0, 1@5); gdl=linear(1, 0.5)", "dice"]
    with pytest.raises(ValueError, match="unbalanced parentheses in loss list"):
        split_list("ce, dice(smooth=1.0")
