"""Statistics of a loss benchmark: summaries over seeds and cases, paired tests, ranks, cost.

Everything here works on plain rows, so it is testable without training anything:

- a *case table*: one dict per (dataset, loss, seed, case) with one float per metric, built from
  each run's ``metrics.json["test_rows"]`` by :func:`case_table` (classes averaged per case);
- a *run list*: one dict per run with ``dataset, loss, seed`` and the run's ``cost``.

Conventions (stated once, used by the report):

- **over seeds**: each seed's mean over its test cases, then the mean and (sample, ``ddof=1``)
  standard deviation of those per-seed means;
- **over cases**: the mean and standard deviation of all (seed, case) values pooled — the spread
  a user sees case by case;
- **paired test**: loss and baseline are paired on (seed, case) — the same seed gives the same
  split, so the same test cases — and compared with the two-sided Wilcoxon signed-rank test
  (Wilcoxon, 1945; ``scipy.stats.wilcoxon``); the p-values of one dataset and metric (one per
  loss) form a family adjusted with Holm's step-down method (Holm, 1979).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

__all__ = [
    "HIGHER_IS_BETTER", "higher_is_better", "holm", "wilcoxon_paired", "case_table", "summarize",
    "compare_to_baseline", "mean_ranks", "cost_table",
]

# The direction of the metrics the report uses; `higher_is_better` asks the metric registry first.
HIGHER_IS_BETTER = {
    "dice": True, "iou": True, "nsd": True, "precision": True, "recall": True, "specificity": True,
    "volume_similarity": True, "pixel_error": False, "hd": False, "hd95": False, "assd": False,
}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (the metric registry's word where it has one)."""
    try:
        from medsegloss import metrics

        return bool(metrics.info(metric).higher_is_better)
    except (ImportError, AttributeError, ValueError, KeyError):
        if metric not in HIGHER_IS_BETTER:
            raise ValueError(f"unknown metric {metric!r}: its direction (higher or lower is better) "
                             f"is not known; known: {', '.join(sorted(HIGHER_IS_BETTER))}") from None
        return HIGHER_IS_BETTER[metric]


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values (Holm, 1979), in the input order.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``:
    ``adjusted_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))``. Rejecting where the adjusted
    value is below ``alpha`` controls the family-wise error rate at ``alpha``. NaN entries (no
    test possible) stay NaN and do not count in ``m``.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    values = [float(p) for p in p_values]
    for p in values:
        if not math.isnan(p) and not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    order = sorted((i for i, p in enumerate(values) if not math.isnan(p)), key=lambda i: values[i])
    adjusted = [math.nan] * len(values)
    running_max = 0.0
    for rank, index in enumerate(order):
        running_max = max(running_max, min(1.0, (len(order) - rank) * values[index]))
        adjusted[index] = round(running_max, 15)  # keep 3 * 0.01 == 0.03 readable
    return adjusted


def wilcoxon_paired(values, baseline_values) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired samples (``scipy.stats.wilcoxon``).

    Pairs where either value is NaN are dropped. Zero differences are discarded (the test's
    ``"wilcox"`` convention); when every difference is zero the samples are identical and
    ``p_value`` is 1. With no pair left, ``p_value`` is NaN.

    Returns ``{"n": pairs used, "statistic": W, "p_value": p, "median_difference": median of
    values - baseline_values, "mean_difference": ...}``.

    >>> wilcoxon_paired([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])["p_value"]  # exact: 2 / 2**5
    0.0625
    """
    values = np.asarray(values, dtype=np.float64)
    baseline_values = np.asarray(baseline_values, dtype=np.float64)
    if values.shape != baseline_values.shape or values.ndim != 1:
        raise ValueError(f"paired samples must be 1-D of equal length, got shapes {values.shape} and "
                         f"{baseline_values.shape}")
    keep = ~(np.isnan(values) | np.isnan(baseline_values))
    differences = values[keep] - baseline_values[keep]
    result = {"n": int(differences.size), "statistic": math.nan, "p_value": math.nan,
              "median_difference": math.nan, "mean_difference": math.nan}
    if differences.size == 0:
        return result
    result["median_difference"] = float(np.median(differences))
    result["mean_difference"] = float(np.mean(differences))
    if not np.any(differences != 0):
        result.update(statistic=0.0, p_value=1.0)
        return result
    from scipy.stats import wilcoxon

    test = wilcoxon(differences)
    result.update(statistic=float(test.statistic), p_value=float(test.pvalue))
    return result


def case_table(dataset: str, loss: str, seed: int, test_rows: list[dict], metrics) -> list[dict]:
    """One row per case from ``evaluate`` rows (one per case and class): each metric averaged over
    the case's classes, ignoring NaN, and ``"failed"``: the metrics left undefined (NaN) for a
    class that is not empty in both masks — a structure missed, or one predicted where there is
    none. A class empty in both masks (``"empty": "both"``) is right, not failed."""
    by_case: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    failed: dict[str, set] = defaultdict(set)
    for row in test_rows:
        for metric in metrics:
            value = row.get(metric)
            value = math.nan if value is None else float(value)
            by_case[str(row["case"])][metric].append(value)
            if math.isnan(value) and row.get("empty") != "both":
                failed[str(row["case"])].add(metric)
    rows = []
    for case, values in by_case.items():
        row = {"dataset": dataset, "loss": loss, "seed": int(seed), "case": case}
        for metric in metrics:
            finite = [v for v in values[metric] if not math.isnan(v)]
            row[metric] = sum(finite) / len(finite) if finite else math.nan
        row["failed"] = sorted(failed[case])
        rows.append(row)
    return rows


def _mean_std(values) -> tuple[float, float]:
    """NaN-ignoring mean and sample standard deviation (NaN std for fewer than two values)."""
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if finite.size == 0:
        return math.nan, math.nan
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan
    return float(np.mean(finite)), std


def _groups(table: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in table:
        groups[(row["dataset"], row["loss"])].append(row)
    return groups


def summarize(table: list[dict], metrics) -> list[dict]:
    """Per dataset, loss and metric: the mean, its std over seeds and its std over cases.

    Returns rows ``{"dataset", "loss", "metric", "mean", "std_seeds", "std_cases", "median",
    "n_seeds", "n_cases", "n_nan", "n_failed"}``; ``mean`` is the mean of the per-seed means
    (equal to the pooled mean when every seed has the same cases), ``n_cases`` counts the defined
    (seed, case) values, ``n_failed`` the cases where the metric is undefined because of a
    segmentation error (see :func:`case_table`).
    """
    summary = []
    for (dataset, loss), rows in _groups(table).items():
        seeds = sorted({row["seed"] for row in rows})
        for metric in metrics:
            per_seed = [_mean_std([r[metric] for r in rows if r["seed"] == seed])[0] for seed in seeds]
            mean, std_seeds = _mean_std(per_seed)
            pooled = [row[metric] for row in rows]
            finite = [v for v in pooled if not math.isnan(v)]
            summary.append({
                "dataset": dataset, "loss": loss, "metric": metric, "mean": mean,
                "std_seeds": std_seeds, "std_cases": _mean_std(pooled)[1],
                "median": float(np.median(finite)) if finite else math.nan,
                "n_seeds": len(seeds), "n_cases": len(finite), "n_nan": len(pooled) - len(finite),
                "n_failed": sum(metric in row.get("failed", ()) for row in rows),
            })
    return summary


def compare_to_baseline(table: list[dict], metrics, baseline: str, alpha: float = 0.05) -> list[dict]:
    """Paired Wilcoxon tests of every loss against ``baseline`` per dataset and metric, Holm-adjusted
    over the losses of each (dataset, metric).

    Returns rows ``{"dataset", "loss", "baseline", "metric", "n", "statistic", "p_value",
    "p_holm", "median_difference", "mean_difference", "significant", "verdict"}`` where the
    differences are loss − baseline and ``verdict`` is ``"better"``, ``"worse"`` (significant at
    ``alpha`` after Holm, in the metric's direction) or ``"not significant"``.
    """
    groups = _groups(table)
    results = []
    for dataset in sorted({dataset for dataset, _ in groups}):
        if (dataset, baseline) not in groups:
            continue
        reference = {(r["seed"], r["case"]): r for r in groups[(dataset, baseline)]}
        losses = [loss for d, loss in groups if d == dataset and loss != baseline]
        for metric in metrics:
            family = []
            for loss in losses:
                pairs = [(row[metric], reference[(row["seed"], row["case"])][metric])
                         for row in groups[(dataset, loss)] if (row["seed"], row["case"]) in reference]
                test = wilcoxon_paired([a for a, _ in pairs], [b for _, b in pairs])
                family.append({"dataset": dataset, "loss": loss, "baseline": baseline,
                               "metric": metric, **test})
            for row, adjusted in zip(family, holm([row["p_value"] for row in family])):
                row["p_holm"] = adjusted
                row["significant"] = bool(not math.isnan(adjusted) and adjusted < alpha)
                row["verdict"] = _verdict(row, higher_is_better(metric))
            results += family
    return results


def _verdict(row: dict, larger_is_better: bool) -> str:
    if not row["significant"]:
        return "not significant"
    difference = row["median_difference"] if row["median_difference"] != 0 else row["mean_difference"]
    return "better" if (difference > 0) == larger_is_better else "worse"


def mean_ranks(summary: list[dict], metrics=None) -> list[dict]:
    """Rank the losses per (dataset, metric) by their mean (1 = best, in the metric's direction;
    ties share the average rank), then average each loss's ranks over datasets and metrics.

    A loss with more failed cases (``n_failed``: e.g. no HD95 because it found nothing) ranks
    below the losses with fewer, whatever its mean over the cases it has: such an undefined value
    is a failure, not a missing observation. Returns one row per loss, best first: ``{"loss",
    "mean_rank", "ranks": {"dataset/metric": rank}}``. A loss missing a (dataset, metric) (or with
    a NaN mean there) is ranked on the rest.
    """
    columns: dict[tuple[str, str], dict[str, tuple]] = defaultdict(dict)
    for row in summary:
        if (metrics is None or row["metric"] in metrics) and not math.isnan(row["mean"]):
            sign = -1.0 if higher_is_better(row["metric"]) else 1.0
            columns[(row["dataset"], row["metric"])][row["loss"]] = (row.get("n_failed", 0), sign * row["mean"])
    ranks: dict[str, dict[str, float]] = defaultdict(dict)
    for (dataset, metric), keys in sorted(columns.items()):
        ordered = sorted(keys.values())
        for loss, key in keys.items():  # average rank of the tied block (1-based)
            first = ordered.index(key)
            ranks[loss][f"{dataset}/{metric}"] = first + (ordered.count(key) + 1) / 2
    rows = [{"loss": loss, "mean_rank": float(np.mean(list(by_column.values()))), "ranks": by_column}
            for loss, by_column in ranks.items()]
    return sorted(rows, key=lambda row: (row["mean_rank"], row["loss"]))


COST_FIELDS = ("seconds_per_step", "peak_memory_mb", "train_seconds")


def cost_table(runs: list[dict]) -> list[dict]:
    """Per dataset and loss, the mean over seeds of each run's ``cost`` fields (``COST_FIELDS``).

    ``runs``: dicts with ``dataset, loss, seed`` and ``cost`` (``metrics.json["cost"]``).
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["dataset"], run["loss"])].append(run.get("cost") or {})
    rows = []
    for (dataset, loss), costs in groups.items():
        row = {"dataset": dataset, "loss": loss, "n_runs": len(costs)}
        for field in COST_FIELDS:
            values = [float(cost[field]) for cost in costs if cost.get(field) is not None]
            row[field] = float(np.mean(values)) if values else math.nan
        rows.append(row)
    return rows
