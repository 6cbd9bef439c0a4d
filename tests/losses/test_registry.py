"""The registry (``losses._registry``): every entry is complete, its class is its function's,
each loss lives in its family's package, the catalogue tables are generated from it, peers are
named only where a test checks them, and renamed options keep working for one release."""

from __future__ import annotations

import pytest

from medsegloss import losses

NAMES = losses.available()


@pytest.mark.parametrize("name", NAMES)
def test_class_options_are_the_functions_and_the_registrys(name):
    """The module's options, defaults and docs are its function's (dropping or renaming an option
    in one place fails here), and every option given to get() reaches the function."""
    import inspect

    info = losses.info(name)
    assert info.function is not None, f"{name} has no functional form registered"
    keyword_only = {parameter.name: parameter.default
                    for parameter in inspect.signature(info.function).parameters.values()
                    if parameter.kind is parameter.KEYWORD_ONLY and parameter.name != "dist"}
    assert info.options == keyword_only
    if isinstance(info.factory, type):
        assert inspect.getdoc(info.factory) == inspect.getdoc(info.function)
        assert losses.get(name).options == {}
        assert losses.get(name, reduction="sum").options == {"reduction": "sum"}


@pytest.mark.parametrize("name", NAMES)
def test_each_loss_lives_in_its_familys_module(name):
    info = losses.info(name)
    assert info.factory.__module__.startswith(f"medsegloss.losses.{info.family}"), info.factory.__module__
    assert info.function.__module__.startswith(f"medsegloss.losses.{info.family}"), info.function.__module__


def test_catalogue_tables_in_readme_and_docs_are_generated_from_the_registry():
    from pathlib import Path

    root = Path(__file__).parents[2]
    assert losses.catalogue_markdown("catalogue") in (root / "docs" / "losses.md").read_text(), \
        "docs/losses.md: paste the output of `python -m medsegloss.losses --markdown`"
    assert losses.catalogue_markdown("families") in (root / "README.md").read_text(), \
        "README.md: paste the output of `python -m medsegloss.losses --markdown --table families`"


def test_peers_are_named_only_where_a_test_checks_them():
    tested = {"dice", "iou", "tversky", "gdl", "focal", "hd", "boundary", "dice_ce", "dice_focal", "mcc", "lovasz", "gwdl",
              "cldice", "log_hd", "dice_cldice", "gdl_focal", "unified_focal", "hd_er"}
    assert {name for name in NAMES if losses.info(name).peers} <= tested


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_complete(name):
    info = losses.info(name)
    assert info.family in losses.FAMILIES and info.paper and info.summary
    module = losses.get(name)
    assert getattr(module, "needs_distance", False) == info.needs_distance


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown loss 'tverksy'\. Did you mean: tversky"):
        losses.get("tverksy")
    with pytest.raises(TypeError, match=r"loss 'tversky' has no option\(s\) gamma\..* Its options are: alpha=0.3"):
        losses.get("tversky", gamma=2.0)
    with pytest.raises(TypeError, match=r"loss 'gdl_focal' has no option\(s\) lambda_gdl"):
        losses.get("gdl_focal", lambda_gdl=1.0)  # born with weight_gdl: no deprecated names


def test_named_sums_weigh_their_terms_with_weight_of_the_term():
    """One naming scheme: every term but the first has the option ``weight_<term>``, and no other
    ``weight_`` option exists (``weight`` alone: class weights)."""
    for name in losses.available("compound"):
        info = losses.info(name)
        if not info.is_sum or name == "dice_cldice":  # (1 − α)·Dice + α·clDice: the paper's convex α
            continue
        terms = losses.get(name).names
        weights = {option for option in info.options if option.startswith("weight_")}
        assert {f"weight_{term}" for term in terms[1:]} <= weights <= {f"weight_{term}" for term in terms}, name
    assert "weight_focal" in losses.info("unified_focal").options and not losses.info("unified_focal").is_sum
