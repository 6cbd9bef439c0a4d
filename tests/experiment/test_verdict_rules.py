"""The verdict's run rules (experiment/verdict.py): not converged, degrading, not learned, collapsed,
early stopping; and the step time of experiment/cost.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsegloss.experiment.cost import median_seconds_per_step

from medsegloss.experiment.verdict import (case_volumes, collapse_reason, collapsed, convergence_summary,
                                               diagnose, not_converged,
                                               should_stop_early)

TOTAL = 1000
STEPS = list(range(50, TOTAL + 1, 50))  # 20 validations, 5 of them in the last quarter (> 750)


def curve(function) -> list[tuple[int, float]]:
    return [(step, function(step)) for step in STEPS]


# ---------------------------------------------------------------- not converged: the last quarter's trend
def test_a_still_rising_curve_is_not_converged():
    rising = curve(lambda step: 0.9 * (1 - math.exp(-step / 2000)))  # far from its asymptote
    summary = convergence_summary(rising, TOTAL)
    assert summary["validations_last_quarter"] == 5
    assert summary["change_low"] > 0.01
    assert not_converged(rising, TOTAL) is True


def test_the_change_is_the_least_squares_slope_over_a_quarter_with_a_t_bound():
    from scipy import stats

    steps = np.array([800, 850, 900, 950, 1000])
    scores = np.array([0.80, 0.83, 0.81, 0.84, 0.845])
    fit = stats.linregress(steps, scores)  # independent reference: SciPy's regression
    summary = convergence_summary(list(zip(steps, scores)), TOTAL)
    quarter, bound = TOTAL / 4, stats.t.ppf(0.95, 3)
    assert summary["change"] == pytest.approx(fit.slope * quarter)
    assert summary["change_low"] == pytest.approx((fit.slope - bound * fit.stderr) * quarter)
    assert summary["change_high"] == pytest.approx((fit.slope + bound * fit.stderr) * quarter)
    tolerance_just_below = summary["change_low"] - 1e-9
    assert not_converged(list(zip(steps, scores)), TOTAL, tolerance=tolerance_just_below) is True
    assert not_converged(list(zip(steps, scores)), TOTAL, tolerance=summary["change_low"] + 1e-9) is False


def test_a_plateau_is_converged_and_a_falling_curve_is_degrading():
    noise = np.random.default_rng(0).uniform(-0.004, 0.004, len(STEPS))
    plateau = [(step, 0.8 * (1 - math.exp(-step / 50)) + n) for step, n in zip(STEPS, noise)]
    assert not_converged(plateau, TOTAL) is False
    assert convergence_summary(plateau, TOTAL)["degrading"] is False
    declining = curve(lambda step: 0.8 - 0.0002 * abs(step - 300))  # overfitting: 0.05 lost in the quarter
    summary = convergence_summary(declining, TOTAL)
    assert summary["not_converged"] is False and summary["degrading"] is True
    healthy = [{"voxels": 100, "predicted": [90, 10], "true": [90, 10], "multilabel": False}] * 3
    assert diagnose(declining, TOTAL, healthy)["status"] == "degrading"


def test_noise_alone_does_not_fire_the_rule_but_a_max_would():
    """The old rule (max of the last quarter vs max before + 0.01) fires on a flat curve with the
    validation noise of 4 cases; the trend rule's false alarms stay near its 5 % one-sided level."""
    rng = np.random.default_rng(1)
    sigma, trials = 0.03, 2000
    flat = 0.8 + sigma * rng.standard_normal((trials, len(STEPS)))
    trend_alarms = np.mean([not_converged(list(zip(STEPS, row)), TOTAL) for row in flat])
    late = np.array(STEPS) > 0.75 * TOTAL
    max_alarms = np.mean(flat[:, late].max(1) > flat[:, ~late].max(1) + 0.01)
    assert trend_alarms <= 0.06
    assert max_alarms > 0.10


def test_short_or_sparse_histories_are_not_assessable():
    assert not_converged([], TOTAL) is None
    assert not_converged([(500, 0.5), (1000, 0.9)], TOTAL) is None  # one validation in the last quarter
    three_late = [(800, 0.5), (900, 0.6), (1000, 0.9)]
    assert not_converged(three_late, TOTAL) is None  # a slope and its noise need 4 points
    assert not_converged([(800, 0.5), (850, float("nan")), (900, 0.6), (1000, 0.9)], TOTAL) is None  # NaN does not count
    assert not_converged([(800, 0.5), (850, 0.6), (900, 0.7), (1000, 0.9)], TOTAL) is True


def test_bad_history_and_budget_are_named():
    with pytest.raises(ValueError, match="total_steps"):
        not_converged([(1, 0.5)], 0)
    with pytest.raises(ValueError, match=r"\(step, score\) pairs"):
        not_converged([0.5, 0.6], 10)


# ---------------------------------------------------------------- collapse
def _labels(shape=(4, 16, 16)) -> np.ndarray:
    """A true label map: class 1 a block of 4*4*4 = 64 voxels, class 2 one of 4*2*4 = 32."""
    label = np.zeros(shape, np.int64)
    label[:, 2:6, 2:6] = 1
    label[:, 8:10, 8:12] = 2
    return label


def test_case_volumes_are_the_bincounts_of_both_maps_and_accept_torch():
    target = _labels()
    prediction = target.copy()
    prediction[0, 0, 0] = 2
    volumes = case_volumes(torch.from_numpy(prediction), target, num_classes=4)
    assert volumes["voxels"] == 1024
    assert volumes["true"] == [1024 - 64 - 32, 64, 32, 0]
    assert volumes["predicted"] == [1024 - 64 - 32 - 1, 64, 33, 0]
    with pytest.raises(ValueError, match="num_classes is 2"):
        case_volumes(prediction, target, num_classes=2)
    with pytest.raises(ValueError, match="same shape"):
        case_volumes(prediction[0], target)


def test_degenerate_predictions_are_named_and_healthy_ones_are_not():
    target = _labels()
    assert collapse_reason(case_volumes(target, target)) is None
    all_background = case_volumes(np.zeros_like(target), target)
    assert collapse_reason(all_background) == "one class everywhere (class 0)"
    all_foreground = case_volumes(np.ones_like(target), target)
    assert collapse_reason(all_foreground) == "one class everywhere (class 1)"
    # 20x the true foreground volume (96 voxels -> 1920 > 10 * 96, over the floor of 10.24)
    big = np.zeros((4, 40, 48), np.int64)
    big[:, :4, :4], big[:, 10:12, 10:14] = 1, 2
    oversized = np.zeros_like(big)
    oversized.reshape(-1)[:20 * 96] = 1
    oversized.reshape(-1)[-1] = 2  # not one class everywhere
    assert collapse_reason(case_volumes(oversized, big)).startswith("oversized foreground (1921 voxels")
    # 5x is a poor segmentation, not a collapse
    fivefold = np.zeros_like(big)
    fivefold.reshape(-1)[:5 * 96] = 1
    assert collapse_reason(case_volumes(fivefold, big)) is None


def test_empty_true_volumes_use_the_floor_and_an_empty_case_predicted_empty_is_right():
    empty = np.zeros((10, 10), np.int64)  # 100 voxels, floor 1 % = 1 voxel
    assert collapse_reason(case_volumes(empty, empty, num_classes=2)) is None  # correct, not collapsed
    few = empty.copy()
    few[0, :10] = 1  # 10 voxels: not > 10 * max(0, 1)
    assert collapse_reason(case_volumes(few, empty)) is None
    few[1, 0] = 1  # 11 voxels > 10
    assert collapse_reason(case_volumes(few, empty)).startswith("oversized foreground")


def test_multilabel_volumes_and_collapse():
    target = np.zeros((2, 8, 8), np.int64)
    target[0, 2:6, 2:6], target[1, 3:5, 3:5] = 1, 1  # nested regions
    volumes = case_volumes(target, target, multilabel=True)
    assert volumes["predicted"] == [16, 4] and volumes["voxels"] == 64
    assert collapse_reason(volumes) is None
    full_and_empty = np.zeros_like(target)
    full_and_empty[0] = 1
    assert collapse_reason(case_volumes(full_and_empty, target, multilabel=True)).startswith("one class everywhere")


def test_collapsed_needs_more_than_half_of_the_cases():
    target = _labels()
    healthy, dead = case_volumes(target, target), case_volumes(np.zeros_like(target), target)
    assert collapsed([dead, dead, healthy]) is True
    assert collapsed([dead, healthy]) is False  # exactly half is not most
    assert collapsed([healthy] * 3) is False
    assert collapsed([]) is None


# ---------------------------------------------------------------- early stopping and step time
def test_should_stop_early_after_patience_without_an_improvement_above_min_delta():
    history = [(100, 0.5), (200, 0.6), (300, 0.605), (400, 0.604), (500, 0.608)]
    # improvements: 100 (first), 200 (+0.1); 300 (+0.005) only when min_delta < 0.005
    assert should_stop_early(history, patience_steps=300, min_delta=0.01) is True   # 500 - 200 >= 300
    assert should_stop_early(history, patience_steps=301, min_delta=0.01) is False
    assert should_stop_early(history, patience_steps=300, min_delta=0.0) is False   # 500 improved on 0.605
    assert should_stop_early(history[:4], patience_steps=100, min_delta=0.0) is True  # 400 - 300 >= 100
    assert should_stop_early([], patience_steps=1) is False
    assert should_stop_early([(100, float("nan")), (300, float("nan"))], patience_steps=200) is True
    with pytest.raises(ValueError, match="patience_steps"):
        should_stop_early(history, patience_steps=0)


def test_median_step_time_ignores_a_slow_first_step_and_pauses():
    times = [2.0, 0.031, 0.030, 0.029, 5.0, 0.030, 0.032]
    assert median_seconds_per_step(times) == 0.031
    assert median_seconds_per_step([0.1, 0.3]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no step times"):
        median_seconds_per_step([])
    with pytest.raises(ValueError, match="finite"):
        median_seconds_per_step([0.1, float("nan")])


def test_diagnose_puts_degenerate_runs_before_convergence():
    target = _labels()
    healthy, dead = case_volumes(target, target), case_volumes(np.zeros_like(target), target)
    flooded = case_volumes(np.ones_like(target), target)  # foreground everywhere
    plateau = curve(lambda step: 0.8)
    rising = curve(lambda step: step / TOTAL)
    assert diagnose(plateau, TOTAL, [healthy, healthy])["status"] == "converged"
    assert diagnose(rising, TOTAL, [healthy, healthy])["status"] == "not converged"
    assert diagnose(rising[:2], TOTAL, [healthy])["status"] == "not assessable"
    record = diagnose(rising, TOTAL, [dead, dead, healthy])  # background everywhere: nothing found
    assert record["status"] == "not learned" and record["collapsed_cases"] == 2 and record["missed_cases"] == 2
    record = diagnose(rising, TOTAL, [flooded, flooded, healthy])
    assert record["status"] == "collapsed" and record["collapse_kinds"] == {"one class everywhere": 2}


def test_a_run_flat_at_dice_zero_is_not_learned_not_converged():
    from medsegloss.experiment.verdict import NOT_LEARNED_SCORE, diagnose

    healthy = [{"voxels": 100, "predicted": [90, 10], "true": [90, 10], "multilabel": False}] * 3
    flat_zero = [(step, 0.0) for step in range(5, 101, 5)]
    assert diagnose(flat_zero, 100, healthy)["status"] == "not learned"
    barely = [(step, NOT_LEARNED_SCORE + 0.01) for step in range(5, 101, 5)]
    assert diagnose(barely, 100, healthy)["status"] == "converged"


def test_a_run_that_predicts_nothing_is_not_learned_whatever_its_dice_on_empty_cases():
    """Half the validation cases are empty (predicted empty: Dice 1), every structure is missed."""
    nothing = case_volumes(np.zeros(8, int), np.array([0, 0, 0, 0, 1, 1, 1, 1]))
    empty_right = case_volumes(np.zeros(8, int), np.zeros(8, int))
    per_case = [nothing] * 3 + [empty_right] * 3
    falling = [(step, 0.6 - step / 10000) for step in STEPS]
    record = diagnose(falling, TOTAL, per_case)
    assert record["status"] == "not learned"
    assert record["missed_cases"] == 3 and record["cases_with_foreground"] == 3
    assert record["empty_reference_cases"] == 3 and record["false_positive_cases"] == 0


def test_foreground_on_most_empty_cases_is_a_collapse():
    healthy = case_volumes(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]))
    spurious = case_volumes(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))
    empty_right = case_volumes(np.zeros(4, int), np.zeros(4, int))
    assert collapsed([healthy] * 4 + [spurious] * 2 + [empty_right]) is True
    assert collapsed([healthy] * 4 + [spurious] + [empty_right] * 2) is False
    assert collapsed([healthy] * 4 + [spurious]) is False  # one empty case is no pattern
