"""build(): loss strings -> WeightedSum (or the single loss), with clear errors."""

from __future__ import annotations

import pytest
import torch

from medsegloss import losses
from medsegloss.losses import WeightedSum, build


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


def test_last_values_and_weights_schedule():
    loss = build("gdl + 0.01*boundary")
    assert loss.needs_distance
    logits, labels = make()
    first = loss(logits, labels)
    assert set(loss.last_values) == {"gdl", "boundary"}
    loss.weights["boundary"] = 1.0
    second = loss(logits, labels)
    delta = float((second - first).detach())
    assert delta == pytest.approx(0.99 * loss.last_values["boundary"], rel=1e-5, abs=1e-7)


def test_named_compound_inside_a_string():
    logits, labels = make()
    loss = build("dice_ce(weight_dice=0.5) + 0.1*boundary")
    expected = losses.dice_ce_loss(logits, labels, weight_dice=0.5) + 0.1 * losses.boundary_loss(logits, labels)
    torch.testing.assert_close(loss(logits, labels), expected)


def test_weighted_sum_validates_terms():
    with pytest.raises(ValueError, match="at least one term"):
        WeightedSum([])
    with pytest.raises(ValueError, match="unique"):
        WeightedSum([("a", 1.0, losses.get("ce")), ("a", 1.0, losses.get("dice"))])


def test_ce_plus_dice_string_takes_the_fused_pass_and_equals_its_terms():
    import torch

    from medsegloss import losses

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
    # batch and class weights are the Dice term's, and the pass has them (equal: test_losses_options)
    assert losses.build("ce + dice(batch=True, weight=[1, 2, 3])").joint is not None
    assert losses.build("ce + tversky").joint is None
