"""The verdict's statistics (experiment/report/statistics.py and analysis.py): the cluster-robust
paired difference against independent references, its false-positive rate by simulation with a
known zero difference (and the former design failing the same test), the verdict words against
the margin, the case policy for empty references, bootstrap ranks and Friedman/Nemenyi."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medsegloss.experiment.report import analysis
from medsegloss.experiment.report.simulate import (cluster_t_rejects, pooled_wilcoxon_rejects, rejection_rate,
                                                   simulate_sweep, unit_wilcoxon_rejects)
from medsegloss.experiment.report.statistics import (bootstrap_ranks, detectable_difference, friedman, holm,
                                                     paired_difference, verdict_word, wilcoxon_p)


# ---------------------------------------------------------------- Holm
def test_holm_matches_the_step_down_definition():
    assert holm([0.01, 0.04, 0.03, 0.02, 0.05]) == pytest.approx([0.05, 0.09, 0.09, 0.08, 0.09])
    assert holm([0.3, math.nan, 0.8]) == pytest.approx([0.6, math.nan, 0.8], nan_ok=True)
    assert holm([0.7, 0.9]) == [1.0, 1.0] and holm([0.04]) == [0.04] and holm([]) == []
    with pytest.raises(ValueError, match="1.5"):
        holm([0.5, 1.5])


# ---------------------------------------------------------------- the paired difference
def test_one_seed_of_folds_is_the_t_test_on_the_fold_means():
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(5), 4)  # 20 cases, 4 per fold
    differences = 0.01 + rng.normal(0, 0.03, 20) + rng.normal(0, 0.02, 5)[folds]
    result = paired_difference(differences, units=[f"c{i}" for i in range(20)], runs=folds)
    fold_means = [differences[folds == k].mean() for k in range(5)]
    reference = stats.ttest_1samp(fold_means, 0.0)
    assert result["mean"] == pytest.approx(np.mean(differences))
    assert result["df"] == 4 and result["p_value"] == pytest.approx(reference.pvalue)
    low, high = reference.confidence_interval(0.95)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high))


def test_a_split_per_seed_is_the_t_test_on_the_seed_means():
    """Each seed tests its own 4 cases with one model: the seed is the run."""
    rng = np.random.default_rng(1)
    units = [f"c{i}" for i in range(12)]  # 3 seeds x 4 distinct cases
    runs = np.repeat(np.arange(3), 4)
    differences = rng.normal(0.02, 0.03, 12)
    result = paired_difference(differences, units, runs)
    reference = stats.ttest_1samp([differences[runs == s].mean() for s in range(3)], 0.0)
    assert result["df"] == 2 and result["p_value"] == pytest.approx(reference.pvalue)


def test_the_two_way_variance_is_the_sum_of_the_one_way_parts_minus_their_overlap():
    """Hand-computed on 2 units x 2 runs: V = Vu + Vr - Vcells, each G/(G-1) sum of squared cluster sums / N^2."""
    d = np.array([0.1, 0.3, 0.2, 0.4])
    units, runs = ["a", "b", "a", "b"], [0, 0, 1, 1]
    e = d - d.mean()
    v_units = 2 * ((e[0] + e[2]) ** 2 + (e[1] + e[3]) ** 2) / 16
    v_runs = 2 * ((e[0] + e[1]) ** 2 + (e[2] + e[3]) ** 2) / 16
    v_cells = 4 / 3 * (e ** 2).sum() / 16
    expected = v_units + v_runs - v_cells
    if expected <= 0:
        expected = max(v_units, v_runs)
    assert paired_difference(d, units, runs)["se"] == pytest.approx(math.sqrt(expected))


def test_one_run_per_loss_gives_no_interval_and_nan_is_dropped():
    result = paired_difference([0.1, 0.2, math.nan], ["a", "b", "c"], [0, 0, 0])
    assert result["n"] == 2 and result["n_runs"] == 1 and math.isnan(result["p_value"]) and math.isnan(result["ci_low"])
    with pytest.raises(ValueError, match="one length"):
        paired_difference([0.1, 0.2], ["a"], [0, 0])


def test_false_positive_rate_under_correlated_cases_new_design_and_the_old_one():
    """No true difference; 20 cases, per-case SD 0.032 with t3 tails, 24 % of it persistent per
    case, 30 % shared by the cases one model scored (ICC 0.3: the structure measured on the
    default sweep). The report's test stays at its level; the former pooled Wilcoxon does not."""
    settings = dict(delta=0.0, run_share=0.3, case_share=0.24, trials=1000)
    cv3 = rejection_rate(cluster_t_rejects, design="cv", seeds=3, seed=11, **settings)
    cv1 = rejection_rate(cluster_t_rejects, design="cv", seeds=1, seed=12, **settings)
    old = rejection_rate(pooled_wilcoxon_rejects, design="split", seeds=3, seed=13, **settings)
    unit_wilcoxon = rejection_rate(unit_wilcoxon_rejects, design="cv", seeds=3, seed=14, **settings)
    assert cv3 <= 0.06 and cv1 <= 0.06
    assert old >= 0.10 and unit_wilcoxon >= 0.09  # pseudo-replication: far above the nominal 5 %


def test_the_design_detects_a_real_difference():
    power = rejection_rate(cluster_t_rejects, design="cv", seeds=3, trials=300, seed=5, delta=0.03,
                           run_share=0.3, case_share=0.24)
    assert power >= 0.8


def test_simulated_sweeps_have_the_declared_structure():
    sweep = simulate_sweep(np.random.default_rng(0), design="cv", units=10, folds=5, seeds=2)
    assert len(sweep["differences"]) == 20 and sorted(set(sweep["units"])) == sorted(f"c{i}" for i in range(10))
    assert len(set(sweep["runs"])) == 10  # 2 seeds x 5 folds
    split = simulate_sweep(np.random.default_rng(0), design="split", units=10, seeds=3, test_units=4)
    assert len(split["differences"]) == 12 and len(set(split["runs"])) == 3


# ---------------------------------------------------------------- verdict words
@pytest.mark.parametrize("gain, low, high, p, word", [
    (0.05, 0.02, 0.08, 0.001, "better"),        # significant and beyond the margin
    (-0.05, -0.08, -0.02, 0.001, "worse"),
    (0.003, -0.006, 0.009, 0.4, "equivalent"),  # the whole interval inside +-0.01
    (0.006, 0.002, 0.009, 0.01, "equivalent"),  # significant but negligible
    (-0.004, -0.037, 0.004, 0.2, "inconclusive"),  # the review's focal row: undecided, not "worse"
    (0.008, 0.001, 0.015, 0.02, "inconclusive"),   # significant, below the margin, interval past it
])
def test_verdict_words(gain, low, high, p, word):
    assert verdict_word(gain, low, high, p, margin=0.01) == word


def test_detectable_difference_is_the_t_power_formula():
    assert detectable_difference(0.01, 10) == pytest.approx((stats.t.ppf(0.975, 10) + stats.t.ppf(0.8, 10)) * 0.01)
    assert math.isnan(detectable_difference(math.nan, 4)) and math.isnan(detectable_difference(0.01, 0))


# ---------------------------------------------------------------- the analysis on case tables
def _cv_table(loss, values, folds=5, seeds=1, dataset="d"):
    """values[seed][case]: Dice of each case; case i is in fold (i + seed) % folds."""
    rows = []
    for seed in range(seeds):
        for case, value in enumerate(values[seed]):
            rows.append({"dataset": dataset, "loss": loss, "seed": seed, "fold": (case + seed) % folds,
                         "case": f"c{case}", "unit": f"c{case}", "dice": value, "pixel_error": (1 - value) / 10})
    return rows


def test_losses_within_a_hundredth_are_equivalent_or_inconclusive_never_better_or_worse():
    """A nuclei-like set: 20 cases, every loss 0.918-0.928, differences of a few thousandths."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.90, 0.95, (3, 20))
    table = _cv_table("ce", base, seeds=3)
    for index, shift in enumerate((-0.004, -0.007, 0.002)):
        table += _cv_table(f"loss{index}", base + shift + rng.normal(0, 0.002, base.shape), seeds=3)
    rows = analysis.compare_to_baseline(table, ["dice"], "ce")
    assert {row["verdict"] for row in rows} <= {"equivalent", "inconclusive"}
    assert "equivalent" in {row["verdict"] for row in rows}


def test_a_large_difference_is_better_or_worse_with_its_interval():
    rng = np.random.default_rng(4)
    base = rng.uniform(0.0, 0.2, (3, 20))  # ce has not found the small lesions
    table = _cv_table("ce", base, seeds=3) + _cv_table("dice", base + 0.4 + rng.normal(0, 0.05, base.shape), seeds=3)
    rows = {(r["loss"], r["metric"]): r for r in analysis.compare_to_baseline(table, ["dice", "pixel_error"], "ce")}
    dice = rows[("dice", "dice")]
    assert dice["verdict"] == "better" and dice["ci_low"] > 0.3 and dice["n_units"] == 20 and dice["n_runs"] == 15
    assert rows[("dice", "pixel_error")]["verdict"] == "better"  # lower pixel error, read in its direction


def test_the_direction_follows_the_printed_mean_not_the_median():
    """Most cases slightly better, a few much worse: median > 0 > mean. The verdict reads the mean."""
    base = np.full((1, 20), 0.8)
    changes = np.array([0.01] * 16 + [-0.30] * 4)
    table = _cv_table("ce", base) + _cv_table("x", base + changes[None])
    row = analysis.compare_to_baseline(table, ["dice"], "ce")[0]
    assert np.median(changes) > 0 > row["mean_difference"]
    assert row["verdict"] in ("worse", "inconclusive")


def test_case_table_scores_empty_references_apart():
    test_rows = [
        {"case": "a", "class": 1, "dice": 0.6, "hd95": 2.0, "pixel_error": 0.1, "empty": "none"},
        {"case": "a", "class": 2, "dice": 1.0, "hd95": math.nan, "pixel_error": 0.0, "empty": "both"},  # absent: apart
        {"case": "b", "class": 1, "dice": 0.0, "hd95": None, "pixel_error": 0.2, "empty": "pred"},  # missed: failed
        {"case": "b", "class": 2, "dice": 0.7, "hd95": 3.0, "pixel_error": 0.1, "empty": "none"},
        {"case": "e", "class": 1, "dice": 1.0, "hd95": math.nan, "pixel_error": 0.0, "empty": "both"},  # empty case
        {"case": "e", "class": 2, "dice": 0.0, "hd95": math.nan, "pixel_error": 0.01, "empty": "ref"},  # FP on it
    ]
    rows = {row["case"]: row for row in analysis.case_table("d", "ce", 1, test_rows, ["dice", "hd95", "pixel_error"],
                                                            fold=2, units={"a": "p1", "b": "p1"})}
    assert rows["a"]["dice"] == pytest.approx(0.6)  # the both-empty class does not lift it to 0.8
    assert rows["b"]["dice"] == pytest.approx(0.35) and rows["b"]["failed"] == ["hd95"]
    assert math.isnan(rows["e"]["dice"]) and rows["e"]["empty_reference"] and rows["e"]["false_positive"]
    assert rows["e"]["pixel_error"] == pytest.approx(0.005)  # defined over every class
    assert (rows["a"]["unit"], rows["e"]["unit"], rows["a"]["fold"]) == ("p1", "e", 2)
    summary = {r["metric"]: r for r in analysis.summarize_per_loss(list(rows.values()), ["dice"])}
    assert (summary["dice"]["n_empty_reference"], summary["dice"]["n_false_positive"]) == (1, 1)


def test_summarize_over_seeds_and_cases():
    table = _cv_table("ce", [[0.6, 0.8], [0.5, 0.7], [0.8, 1.0]], seeds=3, folds=2)
    row = next(r for r in analysis.summarize_per_loss(table, ["dice"]) if r["metric"] == "dice")
    assert row["mean"] == pytest.approx((0.7 + 0.6 + 0.9) / 3)
    assert row["std_seeds"] == pytest.approx(math.sqrt(0.07 / 3))
    assert row["std_cases"] == pytest.approx(np.std([0.6, 0.8, 0.5, 0.7, 0.8, 1.0], ddof=1))
    assert (row["n_seeds"], row["n_cases"], row["n_nan"]) == (3, 6, 0)


# ---------------------------------------------------------------- ranks
def test_a_method_that_is_always_best_ranks_first_in_every_draw():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.7, (20, 3))
    values = np.stack([base + 0.2, base, base - 0.2])  # (losses, units, seeds)
    ranks = bootstrap_ranks(values, higher_is_better=True, draws=300)
    assert ranks["rank"] == [1.0, 2.0, 3.0] and ranks["shares"][0][0] == 1.0
    assert ranks["kendall_tau"] == pytest.approx(1.0) and ranks["low"][0] == ranks["high"][0] == 1.0


def test_close_methods_get_wide_rank_intervals():
    rng = np.random.default_rng(1)
    values = rng.normal(0.8, 0.05, (3, 12, 2))  # no true difference
    ranks = bootstrap_ranks(values, higher_is_better=True, draws=500)
    assert max(ranks["shares"][i][0] for i in range(3)) < 0.9 and ranks["kendall_tau"] < 1
    assert any(high - low >= 1 for low, high in zip(ranks["low"], ranks["high"]))


def test_friedman_and_nemenyi_reproduce_demsar():
    """Mean ranks 1, 3.33, 3.33, 4, 4.33, 5 over 3 datasets (6 losses): chi2 = 8.14, CD = 4.35
    (the values of the statistical review of the former default sweep)."""
    target = np.array([1, 10 / 3, 10 / 3, 4, 13 / 3, 5])
    rows = [(1, 2, 3, 4, 5, 6), (1, 2, 3, 5, 6, 4), (1, 6, 4, 3, 2, 5)]  # ranks per dataset, no ties
    result = friedman(np.array(rows, float), higher_is_better=False)
    assert result["mean_ranks"] == pytest.approx(target.tolist())
    assert result["statistic"] == pytest.approx(8.14, abs=0.005) and result["critical_difference"] == pytest.approx(4.35, abs=0.005)
    assert result["p_value"] == pytest.approx(stats.chi2.sf(result["statistic"], 5))
    assert not friedman(np.zeros((2, 4)), True)["enough"]


def test_wilcoxon_p_of_unit_means():
    assert wilcoxon_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2 / 32)
    assert wilcoxon_p([0.0, 0.0]) == 1.0 and math.isnan(wilcoxon_p([math.nan]))


def test_unknown_metric_direction_is_a_clear_error():
    with pytest.raises(ValueError, match="'sharpness'"):
        analysis.higher_is_better("sharpness")
