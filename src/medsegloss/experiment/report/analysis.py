"""The analysis of a loss benchmark: its finished runs, read once (:func:`find_runs`), and the
statistics the report shows (:func:`analyse`): summaries over seeds and cases, paired tests,
ranks, cost.

The statistics work on plain rows, so they are testable without training anything:

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
  loss) form a family adjusted with Holm's step-down method (Holm, 1979);
- **ranks**: per (dataset, metric), ties share their average rank (``scipy.stats.rankdata``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsegloss import _io

DEFAULT_METRICS = ("dice", "iou", "pixel_error", "hd95", "assd")
BENCH_FILE = "bench.json"  # written by `medsegloss bench`: the sweep's losses, datasets and seeds
COST_FIELDS = ("seconds_per_step", "peak_memory_mb", "train_seconds")


# ---------------------------------------------------------------- the runs, read once
@dataclass
class Run:
    """One finished training run, as the report sees it."""

    dataset: str
    loss: str  # the label: the loss string, with its options when it has any
    seed: int
    run_id: str  # "<dataset>/<loss slug>/seed<k>": the same in every shard
    path: Path
    result: dict = field(repr=False)  # metrics.json

    @property
    def config(self) -> dict:
        return self.result.get("config", {})


@dataclass
class Benchmark:
    """The runs under some benchmark folders: the finished ones, the unfinished ones' folders,
    and the datasets and losses in the sweep's own order (its bench.json, else sorted)."""

    out_dirs: list[Path]
    runs: list[Run]
    unfinished: list[Path]
    datasets: list[str]
    losses: list[str]


def loss_label(config: dict) -> str:
    """How a run's loss is named in the report: ``"ce + 1.0*dice"``, ``"tversky(alpha=0.3)"``."""
    options = config.get("loss_options") or {}
    if not options:
        return str(config["loss"])
    return f"{config['loss']}(" + ", ".join(f"{k}={v!r}" for k, v in sorted(options.items())) + ")"


def find_runs(out_dirs) -> Benchmark:
    """The finished runs under ``out_dirs`` (each a folder searched recursively) and the
    unfinished ones (``config.json`` without ``metrics.json``). The same run found twice (e.g. a
    shard folder and the merged folder) is an error naming both paths."""
    from medsegloss.experiment.config import loss_slug

    out_dirs = [Path(d) for d in ([out_dirs] if isinstance(out_dirs, (str, Path)) else out_dirs)]
    runs: dict[tuple, Run] = {}
    unfinished: list[Path] = []
    for out_dir in out_dirs:
        if not out_dir.is_dir():
            raise FileNotFoundError(f"benchmark folder {out_dir} does not exist (or is not a folder)")
        for config_path in sorted(out_dir.rglob("config.json")):
            run_dir = config_path.parent
            if not (run_dir / "metrics.json").exists():
                unfinished.append(run_dir)
                continue
            result = _io.read_json(run_dir / "metrics.json")
            config = result.get("config") or _io.read_json(config_path)
            label = loss_label(config)
            dataset = config.get("dataset_name") or config["dataset"]  # a sweep's own name (bench --dataset)
            key = (dataset, label, int(config["seed"]))
            run = Run(dataset, label, int(config["seed"]), f"{dataset}/{loss_slug(label)}/seed{config['seed']}",
                      run_dir, result)
            if key in runs:
                raise ValueError(f"the run {run.run_id} was found twice: {runs[key].path} and {run_dir}; "
                                 f"pass each shard's folder once (or only the merged folder)")
            runs[key] = run
    found = list(runs.values())
    datasets, losses = sweep_order(out_dirs, found)
    return Benchmark(out_dirs, found, unfinished, datasets, losses)


def sweep_order(out_dirs, runs: list[Run]) -> tuple[list[str], list[str]]:
    """Datasets and losses in the benchmark's own order (its bench.json), else sorted."""
    datasets, losses = [], []
    for out_dir in map(Path, out_dirs):
        if (out_dir / BENCH_FILE).exists():
            sweep = _io.read_json(out_dir / BENCH_FILE)
            datasets += [d for d in sweep.get("datasets", []) if d not in datasets]
            losses += [loss for loss in sweep.get("losses", []) if loss not in losses]
    found_datasets = {run.dataset for run in runs}
    found_losses = {run.loss for run in runs}
    datasets = [d for d in datasets if d in found_datasets] + sorted(found_datasets - set(datasets))
    losses = [loss for loss in losses if loss in found_losses] + sorted(found_losses - set(losses))
    return datasets, losses


def json_safe(value):
    """NaN and infinities become None (standard JSON has no NaN), in nested dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def check_report_arguments(losses, baseline, metrics, alpha) -> None:
    """Fail naming the argument: a ``baseline`` that is not one of ``losses``, a metric that is
    not registered, an ``alpha`` outside (0, 1)."""
    from medsegloss.metrics import check_names

    if baseline is not None and baseline not in losses:
        raise ValueError(f"baseline {baseline!r} is not a loss of these runs; their losses: "
                         f"{', '.join(map(repr, losses))}")
    check_names(list(metrics), "metrics")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def analyse(benchmark: Benchmark, baseline: str | None = None, metrics=DEFAULT_METRICS,
            alpha: float = 0.05) -> dict:
    """Everything the report shows, as one JSON-ready dict (the content of ``results.json``).

    ``baseline``: the loss the others are tested against (``None``: ``ce`` when the runs have
    it, else the first loss); one the runs lack is an error, as are unregistered ``metrics`` and
    an ``alpha`` outside (0, 1). Registered metrics missing from every run's test rows are left out.
    """
    runs, unfinished = benchmark.runs, benchmark.unfinished
    if not runs:
        raise ValueError(f"no finished run (no metrics.json) under {', '.join(map(str, benchmark.out_dirs))}"
                         + (f"; {len(unfinished)} unfinished" if unfinished else ""))
    datasets, losses = benchmark.datasets, list(benchmark.losses)
    present = {key for run in runs for row in run.result.get("test_rows", []) for key in row}
    metrics = [metric for metric in metrics if metric in present]
    check_report_arguments(losses, baseline, metrics, alpha)
    if baseline is None:
        baseline = "ce" if "ce" in losses else losses[0]
    losses = [baseline] + [loss for loss in losses if loss != baseline]
    table = []
    for run in runs:
        table += case_table(run.dataset, run.loss, run.seed, run.result.get("test_rows", []), metrics)
    run_records = sorted(
        ({"dataset": run.dataset, "loss": run.loss, "seed": run.seed, "run": run.run_id,
          "epochs": run.result.get("epochs"), "best_epoch": run.result.get("best_epoch"),
          "steps": run.result.get("steps"), "step_budget": run.config.get("steps") is not None,
          "budget": run.result.get("budget"), "diagnostics": run.result.get("diagnostics"),
          "cost": run.result.get("cost", {})} for run in runs),
        key=lambda r: (datasets.index(r["dataset"]), losses.index(r["loss"]), r["seed"]))
    summary = summarize_per_loss(table, metrics)
    order = {(d, loss): (datasets.index(d), losses.index(loss)) for d in datasets for loss in losses}
    summary.sort(key=lambda row: (order[(row["dataset"], row["loss"])], metrics.index(row["metric"])))
    tests = compare_to_baseline(table, metrics, baseline, alpha=alpha)
    tests.sort(key=lambda row: (order[(row["dataset"], row["loss"])], metrics.index(row["metric"])))
    costs = mean_costs(run_records)
    costs.sort(key=lambda row: order[(row["dataset"], row["loss"])])
    return json_safe({
        "datasets": datasets, "losses": losses, "seeds": sorted({run.seed for run in runs}),
        "metrics": metrics, "higher_is_better": {m: higher_is_better(m) for m in metrics},
        "baseline": baseline, "alpha": alpha, "runs": run_records, "summary": summary,
        "tests": tests, "ranks": mean_ranks(summary), "cost": costs,
        "cases": sorted(table, key=lambda r: (order[(r["dataset"], r["loss"])], r["seed"], r["case"])),
        "unfinished": sorted(str(path) for path in unfinished),
    })


# ---------------------------------------------------------------- statistics
def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better: the metric registry's word
    (``medsegloss.metrics.info``); an unknown metric is a ValueError naming the closest."""
    from medsegloss import metrics

    return bool(metrics.info(metric).higher_is_better)


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


def summarize_per_loss(table: list[dict], metrics) -> list[dict]:
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
    from scipy.stats import rankdata

    ranks: dict[str, dict[str, float]] = defaultdict(dict)
    for (dataset, metric), keys in sorted(columns.items()):
        distinct = sorted(set(keys.values()))  # (n_failed, signed mean) as one orderable number
        ranked = rankdata([distinct.index(key) for key in keys.values()], method="average")
        for loss, rank in zip(keys, ranked):
            ranks[loss][f"{dataset}/{metric}"] = float(rank)
    rows = [{"loss": loss, "mean_rank": float(np.mean(list(by_column.values()))), "ranks": by_column}
            for loss, by_column in ranks.items()]
    return sorted(rows, key=lambda row: (row["mean_rank"], row["loss"]))


def mean_costs(runs: list[dict]) -> list[dict]:
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
