"""Statistics of the benchmark: Holm by hand, Wilcoxon against exact counts and scipy, summaries,
verdicts, ranks and cost on tables whose expected values are worked out in the comments."""

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from medsegloss.experiment.report import analysis


# ---------------------------------------------------------------- Holm
def test_holm_hand_example():
    # sorted: 0.01, 0.02, 0.03, 0.04, 0.05 with m = 5 -> raw products 5*0.01=0.05, 4*0.02=0.08,
    # 3*0.03=0.09, 2*0.04=0.08, 1*0.05=0.05; running maxima 0.05, 0.08, 0.09, 0.09, 0.09
    p = [0.03, 0.01, 0.05, 0.02, 0.04]  # shuffled: results come back in input order
    assert analysis.holm(p) == pytest.approx([0.09, 0.05, 0.09, 0.08, 0.09])


def test_holm_clamps_at_one_and_skips_nan():
    # m = 2 (the NaN does not count): 2*0.3 = 0.6, then max(0.6, 1*0.8) = 0.8; 2*0.7 -> clamp 1
    assert analysis.holm([0.3, math.nan, 0.8]) == pytest.approx([0.6, math.nan, 0.8], nan_ok=True)
    assert analysis.holm([0.7, 0.9]) == [1.0, 1.0]
    assert analysis.holm([0.04]) == [0.04]  # one test: no correction
    assert analysis.holm([]) == []


def test_holm_ties_and_rejections():
    # equal p-values: 3*0.01 = 0.03 for the first, then max(0.03, 2*0.01) = 0.03, max(0.03, 0.01)
    assert analysis.holm([0.01, 0.01, 0.01]) == pytest.approx([0.03, 0.03, 0.03])
    # Holm rejects 0.01 (0.04 < 0.05) but not 0.02 (3*0.02 = 0.06): step-down stops there
    adjusted = analysis.holm([0.01, 0.02, 0.03, 0.04])
    assert [a < 0.05 for a in adjusted] == [True, False, False, False]


def test_holm_rejects_bad_p():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        analysis.holm([0.5, 1.5])


# ---------------------------------------------------------------- Wilcoxon
def test_wilcoxon_exact_by_counting():
    # all 5 differences positive: W- = 0; exactly 1 of the 2^5 sign patterns has W <= 0 on each
    # side -> two-sided p = 2/32
    result = analysis.wilcoxon_paired([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5)
    assert result["p_value"] == pytest.approx(2 / 32)
    assert result["statistic"] == 0.0 and result["n"] == 5
    # 8 differences, the smallest negative: W = 1; sign patterns with W <= 1: {} and {rank 1}
    # -> two-sided p = 2 * 2/256
    differences = np.array([-0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    result = analysis.wilcoxon_paired(differences + 1.0, np.ones(8))
    assert result["statistic"] == pytest.approx(1.0)
    assert result["p_value"] == pytest.approx(4 / 256)
    assert result["median_difference"] == pytest.approx(0.45)


def test_wilcoxon_matches_scipy_with_ties_and_nan():
    generator = np.random.default_rng(3)
    a = np.round(generator.normal(0.8, 0.05, 30), 2)  # rounding creates ties -> normal approximation
    b = np.round(a - generator.normal(0.01, 0.03, 30), 2)
    a_nan = np.append(a, [np.nan, 0.5])
    b_nan = np.append(b, [0.4, np.nan])  # pairs with a NaN are dropped
    result = analysis.wilcoxon_paired(a_nan, b_nan)
    reference = wilcoxon(a, b)
    assert result["n"] == 30
    assert result["p_value"] == pytest.approx(reference.pvalue, rel=1e-12)
    assert result["statistic"] == pytest.approx(reference.statistic)


def test_wilcoxon_identical_and_empty():
    assert analysis.wilcoxon_paired([0.5, 0.7], [0.5, 0.7])["p_value"] == 1.0
    assert math.isnan(analysis.wilcoxon_paired([math.nan], [0.3])["p_value"])
    with pytest.raises(ValueError, match=r"\(3,\) and \(2,\)"):
        analysis.wilcoxon_paired([1, 2, 3], [1, 2])


# ---------------------------------------------------------------- tables
def _table(loss, dice_by_seed, dataset="d", pixel_error=None):
    """Case rows: dice_by_seed[seed] = list of per-case Dice; pixel error defaults to 1 - Dice."""
    rows = []
    for seed, values in enumerate(dice_by_seed):
        for case, value in enumerate(values):
            error = (1 - value) if pixel_error is None else pixel_error
            rows.append({"dataset": dataset, "loss": loss, "seed": seed, "case": f"c{case}",
                         "dice": value, "pixel_error": error})
    return rows


def test_case_table_averages_classes_ignoring_nan():
    test_rows = [
        {"case": "a", "class": 1, "dice": 0.6, "hd95": 2.0, "empty": "none"},
        {"case": "a", "class": 2, "dice": 0.8, "hd95": math.nan, "empty": "both"},  # right: both empty
        {"case": "b", "class": 1, "dice": 0.5, "hd95": None, "empty": "pred"},  # missed: failed
        {"case": "b", "class": 2, "dice": 0.7, "hd95": None, "empty": "none"},
    ]
    rows = analysis.case_table("d", "ce", 1, test_rows, ["dice", "hd95"])
    by_case = {row["case"]: row for row in rows}
    assert by_case["a"]["failed"] == [] and by_case["b"]["failed"] == ["hd95"]
    summary = {row["metric"]: row for row in analysis.summarize_per_loss(rows, ["dice", "hd95"])}
    assert (summary["hd95"]["n_cases"], summary["hd95"]["n_nan"], summary["hd95"]["n_failed"]) == (1, 1, 1)
    assert by_case["a"]["dice"] == pytest.approx(0.7) and by_case["a"]["hd95"] == 2.0
    assert by_case["b"]["dice"] == pytest.approx(0.6) and math.isnan(by_case["b"]["hd95"])
    assert by_case["a"]["seed"] == 1 and by_case["a"]["loss"] == "ce"


def test_summarize_over_seeds_and_cases():
    # seed 0 cases (0.6, 0.8) -> mean 0.7; seed 1 cases (0.5, 0.7) -> 0.6; seed 2 (0.8, 1.0) -> 0.9
    table = _table("ce", [[0.6, 0.8], [0.5, 0.7], [0.8, 1.0]])
    row = next(r for r in analysis.summarize_per_loss(table, ["dice"]) if r["metric"] == "dice")
    assert row["mean"] == pytest.approx((0.7 + 0.6 + 0.9) / 3)
    # std over seeds of (0.7, 0.6, 0.9), ddof 1: sum of squares about the mean 2.2/3 is
    # 0.49 + 0.36 + 0.81 - 2.2^2/3 = 0.14/3, divided by 2 -> sqrt(0.07/3)
    assert row["std_seeds"] == pytest.approx(math.sqrt(0.07 / 3))
    pooled = [0.6, 0.8, 0.5, 0.7, 0.8, 1.0]
    assert row["std_cases"] == pytest.approx(np.std(pooled, ddof=1))
    assert row["median"] == pytest.approx(0.75)
    assert (row["n_seeds"], row["n_cases"], row["n_nan"]) == (3, 6, 0)


def test_summarize_nan_and_single_seed():
    table = _table("ce", [[0.5, math.nan, 0.7]])
    row = analysis.summarize_per_loss(table, ["dice"])[0]
    assert row["mean"] == pytest.approx(0.6) and math.isnan(row["std_seeds"])
    assert row["n_cases"] == 2 and row["n_nan"] == 1


def test_compare_to_baseline_holm_and_verdicts():
    base = [[0.50, 0.52, 0.54, 0.56], [0.60, 0.62, 0.64, 0.66]]  # 2 seeds x 4 cases = 8 pairs
    # 8 distinct positive differences 0.01 ... 0.08
    better = [[v + 0.01 * (4 * s + i + 1) for i, v in enumerate(seed)] for s, seed in enumerate(base)]
    same = [list(seed) for seed in base]
    table = _table("ce", base) + _table("dice", better) + _table("focal", same)
    rows = {(r["loss"], r["metric"]): r for r in analysis.compare_to_baseline(table, ["dice", "pixel_error"], "ce")}
    dice = rows[("dice", "dice")]
    # 8 positive distinct differences: W- = 0, exact two-sided p = 2 / 2^8;
    # Holm over {dice, focal}: 2 * p for the smaller; focal (p = 1) stays 1
    assert dice["n"] == 8
    assert dice["p_value"] == pytest.approx(2 / 256)
    assert dice["p_value"] == pytest.approx(wilcoxon(np.ravel(better), np.ravel(base)).pvalue)
    assert dice["p_holm"] == pytest.approx(4 / 256)
    assert dice["verdict"] == "better" and dice["significant"]
    # pixel error = 1 - Dice: lower for "dice", and lower is better -> also "better"
    assert rows[("dice", "pixel_error")]["verdict"] == "better"
    assert rows[("dice", "pixel_error")]["median_difference"] < 0
    focal = rows[("focal", "dice")]
    assert focal["p_value"] == 1.0 and focal["p_holm"] == 1.0 and focal["verdict"] == "not significant"
    assert ("ce", "dice") not in rows  # the baseline is not tested against itself


def test_compare_to_baseline_worse_and_not_significant():
    base = [[0.5, 0.6, 0.7, 0.8, 0.9, 0.55, 0.65, 0.75]]
    worse = [[v - 0.1 for v in base[0]]]
    few = [[v - 0.1 for v in base[0][:5]]]  # 5 pairs: exact p = 2/32 = 0.0625 > 0.05
    table = _table("ce", base) + _table("tversky", worse, pixel_error=0.0) + _table("dice", few)
    rows = {(r["loss"], r["metric"]): r for r in analysis.compare_to_baseline(table, ["dice"], "ce")}
    assert rows[("tversky", "dice")]["verdict"] == "worse"
    assert rows[("dice", "dice")]["p_value"] == pytest.approx(0.0625)
    assert rows[("dice", "dice")]["p_holm"] == pytest.approx(0.0625)  # max(2*2/256, 0.0625)
    assert rows[("dice", "dice")]["verdict"] == "not significant"


def test_mean_ranks_respect_direction_and_ties():
    summary = [
        {"dataset": "a", "loss": "ce", "metric": "dice", "mean": 0.8},
        {"dataset": "a", "loss": "dice", "metric": "dice", "mean": 0.9},
        {"dataset": "a", "loss": "focal", "metric": "dice", "mean": 0.8},
        {"dataset": "a", "loss": "ce", "metric": "hd95", "mean": 3.0},
        {"dataset": "a", "loss": "dice", "metric": "hd95", "mean": 5.0},
        {"dataset": "a", "loss": "focal", "metric": "hd95", "mean": 4.0},
    ]
    rows = {row["loss"]: row for row in analysis.mean_ranks(summary)}
    # Dice: dice 1, ce and focal tie for 2-3 -> 2.5 each; HD95 (lower better): ce 1, focal 2, dice 3
    assert rows["dice"]["ranks"] == {"a/dice": 1.0, "a/hd95": 3.0}
    assert rows["ce"]["mean_rank"] == pytest.approx((2.5 + 1) / 2)
    assert rows["focal"]["mean_rank"] == pytest.approx((2.5 + 2) / 2)
    assert [row["loss"] for row in analysis.mean_ranks(summary)] == ["ce", "dice", "focal"]  # 1.75, 2, 2.25


def test_mean_ranks_put_fewer_defined_values_last():
    # ce has the best HD95 mean, but over 3 of 12 cases only (it found nothing in 9)
    summary = [
        {"dataset": "a", "loss": "ce", "metric": "hd95", "mean": 1.0, "n_failed": 9},
        {"dataset": "a", "loss": "dice", "metric": "hd95", "mean": 9.0, "n_failed": 0},
        {"dataset": "a", "loss": "tversky", "metric": "hd95", "mean": 5.0, "n_failed": 0},
    ]
    ranks = {row["loss"]: row["ranks"]["a/hd95"] for row in analysis.mean_ranks(summary)}
    assert ranks == {"tversky": 1.0, "dice": 2.0, "ce": 3.0}


def test_mean_costs_average_over_seeds():
    runs = [{"dataset": "d", "loss": "ce", "seed": s, "cost": {"seconds_per_step": t, "peak_memory_mb": 100.0 + s}}
            for s, t in enumerate([0.1, 0.3])]
    row = analysis.mean_costs(runs)[0]
    assert row["seconds_per_step"] == pytest.approx(0.2) and row["peak_memory_mb"] == pytest.approx(100.5)
    assert math.isnan(row["train_seconds"]) and row["n_runs"] == 2


def test_unknown_metric_direction_is_a_clear_error():
    with pytest.raises(ValueError, match="'sharpness'"):
        analysis.higher_is_better("sharpness")
