"""The analysis of a loss benchmark: its finished runs, read once (:func:`find_runs`), and the
statistics the report shows (:func:`analyse`): summaries over seeds and cases, paired tests,
ranks, cost.

The statistics work on plain rows, so they are testable without training anything:

- a *case table*: one dict per (dataset, loss, seed, case) with one float per metric, built from
  each run's ``metrics.json["test_rows"]`` by :func:`case_table` (classes averaged per case);
- a *run list*: one dict per run with ``dataset, loss, seed`` and the run's ``cost``.

Conventions (stated once, used by the report; the statistics are in
:mod:`~medsegloss.experiment.report.statistics` and docs/benchmark.md):

- **cases and units**: a case's value is its metric averaged over the classes present in its
  reference (a class absent from the reference — empty, or predicted where there is none — is
  counted apart as an empty-reference / false-positive case, never averaged in: an empty case
  predicted empty must not lift a mean Dice); pixel error and specificity keep every class. The
  *unit* of the statistics is the independent case: a patient, a slab, a declared group
  (``split.json``'s ``units``), else the case;
- **over seeds**: each seed's mean over its test cases (with cross-validation: all the cases of
  the dataset), then the mean and (sample, ``ddof=1``) standard deviation of those means;
- **paired comparison**: loss and baseline paired on (seed, fold, case); the mean difference
  with a two-way cluster-robust 95 % interval over units and run pairs, its t-test p-value,
  Holm-adjusted over the losses of one (dataset, metric), and the verdict word against the
  metric's practical margin (better / worse / equivalent / inconclusive);
- **ranks**: per dataset on the primary metric (the first one, Dice by default), with a
  hierarchical bootstrap of units and seeds; the mean-rank table is descriptive.
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

    @property
    def fold(self) -> int | None:
        return self.config.get("fold")

    def units(self) -> dict[str, str]:
        """case -> unit of this run's data (its ``split.json``'s ``units``; empty: each case is one)."""
        path = self.path / "split.json"
        try:
            units = _io.read_json(path).get("units") if path.exists() else None
        except (OSError, ValueError, AttributeError):
            units = None
        return dict(units) if isinstance(units, dict) else {}

    def history(self) -> list[list[float]]:
        """``[step, validation mean Dice]`` of every validation (``metrics.jsonl``)."""
        from medsegloss.experiment.rundir import read_metrics_log

        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [[line["step"], line.get("val_dice")] for line in read_metrics_log(path) if "step" in line]


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
    shard folder and the merged folder) is an error naming both paths. A run whose
    ``metrics.json`` (or ``config.json``) is corrupt, not an object, or lacks its seed is skipped
    with a warning naming the file: one bad run must not sink the report."""
    import sys

    from medsegloss.experiment.config import loss_slug

    def read(run_dir: Path, config_path: Path):
        """(metrics.json, its config), or the reason the run cannot be read (a string)."""
        path = run_dir / "metrics.json"
        try:
            result = _io.read_json(path)
            if not isinstance(result, dict) or not isinstance(result.get("test_rows"), list):
                return f"{path} is not a run's result (no test_rows)"
            path = config_path
            config = result.get("config") or _io.read_json(config_path)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            return f"{path} is corrupt ({error})"
        if not isinstance(config, dict) or not {"loss", "dataset", "seed"} <= set(config) \
                or isinstance(config["seed"], bool) or not isinstance(config["seed"], int):
            return f"{run_dir / 'metrics.json'} holds no valid config (loss, dataset and an integer seed)"
        return result, config

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
            read_back = read(run_dir, config_path)
            if isinstance(read_back, str):
                print(f"medsegloss report: warning: skipped the run in {run_dir}: {read_back}", file=sys.stderr)
                continue
            result, config = read_back
            label = loss_label(config)
            dataset = config.get("dataset_name") or config["dataset"]  # a sweep's own name (bench --dataset)
            fold = config.get("fold")
            key = (dataset, label, int(config["seed"]), fold)
            run_id = f"{dataset}/{loss_slug(label)}/seed{config['seed']}" + (f"/fold{fold}" if fold is not None else "")
            run = Run(dataset, label, int(config["seed"]), run_id, run_dir, result)
            if key in runs:
                raise ValueError(f"the run {run.run_id} was found twice: {runs[key].path} and {run_dir}; "
                                 f"pass each shard's folder once (or only the merged folder)")
            runs[key] = run
    found = list(runs.values())
    datasets, losses = sweep_order(out_dirs, found)
    return Benchmark(out_dirs, found, unfinished, datasets, losses)


def sweep_order(out_dirs, runs: list[Run]) -> tuple[list[str], list[str]]:
    """Datasets and losses in the benchmark's own order (its bench.json), else sorted."""
    import sys

    datasets, losses = [], []
    for out_dir in map(Path, out_dirs):
        if (out_dir / BENCH_FILE).exists():
            try:
                sweep = _io.read_json(out_dir / BENCH_FILE)
            except (OSError, ValueError, UnicodeDecodeError) as error:
                sweep = f"corrupt ({error})"
            if not isinstance(sweep, dict) or not all(isinstance(sweep.get(key, []), list)
                                                      for key in ("datasets", "losses")):
                print(f"medsegloss report: warning: ignored {out_dir / BENCH_FILE} ("
                      f"{sweep if isinstance(sweep, str) else 'not a bench record'}): runs in sorted order",
                      file=sys.stderr)
                continue
            datasets += [d for d in sweep.get("datasets", []) if isinstance(d, str) and d not in datasets]
            losses += [loss for loss in sweep.get("losses", []) if isinstance(loss, str) and loss not in losses]
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


def check_report_arguments(losses, baseline, metrics, alpha, margins=None) -> None:
    """Fail naming the argument: a ``baseline`` that is not one of ``losses``, a metric that is
    not registered, an ``alpha`` outside (0, 1), a margin that is not a positive number."""
    from medsegloss.metrics import check_names

    if baseline is not None and baseline not in losses:
        raise ValueError(f"baseline {baseline!r} is not a loss of these runs; their losses: "
                         f"{', '.join(map(repr, losses))}")
    check_names(list(metrics), "metrics")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    for metric, margin in (margins or {}).items():
        check_names([metric], "--margin")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (margin > 0 and math.isfinite(margin)):
            raise ValueError(f"--margin {metric}={margin!r}: a margin must be a finite number > 0")


def margin_of(metric: str, margins=None) -> float:
    """The practical-equivalence margin of ``metric``: ``margins[metric]`` or the registry's."""
    from medsegloss import metrics

    return float((margins or {}).get(metric, metrics.info(metric).margin))


def analyse(benchmark: Benchmark, baseline: str | None = None, metrics=DEFAULT_METRICS,
            alpha: float = 0.05, margins: dict | None = None) -> dict:
    """Everything the report shows, as one JSON-ready dict (the content of ``results.json``).

    ``baseline``: the loss the others are tested against (``None``: ``ce`` when the runs have
    it, else the first loss); one the runs lack is an error, as are unregistered ``metrics``, an
    ``alpha`` outside (0, 1) and a bad ``margins`` entry (metric -> practical margin; default the
    registry's). Registered metrics missing from every run's test rows are left out. The first
    metric is the primary one: its verdicts answer the question, the others are secondary.
    """
    runs, unfinished = benchmark.runs, benchmark.unfinished
    if not runs:
        raise ValueError(f"no finished run (no metrics.json) under {', '.join(map(str, benchmark.out_dirs))}"
                         + (f"; {len(unfinished)} unfinished" if unfinished else ""))
    datasets, losses = benchmark.datasets, list(benchmark.losses)
    present = {key for run in runs for row in run.result.get("test_rows", []) for key in row}
    metrics = [metric for metric in metrics if metric in present]
    check_report_arguments(losses, baseline, metrics, alpha, margins)
    if baseline is None:
        baseline = "ce" if "ce" in losses else losses[0]
    losses = [baseline] + [loss for loss in losses if loss != baseline]
    table, designs = [], {}
    for run in runs:
        units = run.units()
        table += case_table(run.dataset, run.loss, run.seed, run.result.get("test_rows", []), metrics,
                            fold=run.fold, units=units)
        design = designs.setdefault(run.dataset, {"folds": run.config.get("folds"), "grouped": False,
                                                  "select": run.config.get("select", "best")})
        design["grouped"] |= bool(units)
    run_records = sorted(
        ({"dataset": run.dataset, "loss": run.loss, "seed": run.seed, "fold": run.fold, "run": run.run_id,
          "epochs": run.result.get("epochs"), "best_epoch": run.result.get("best_epoch"),
          "steps": run.result.get("steps"), "step_budget": run.config.get("steps") is not None,
          "budget": run.result.get("budget"), "diagnostics": run.result.get("diagnostics"),
          "selection": run.result.get("selection", {"select": "best", "step": run.result.get("best_step")}),
          "history": run.history(), "cost": run.result.get("cost", {})} for run in runs),
        key=lambda r: (datasets.index(r["dataset"]), losses.index(r["loss"]), r["seed"], r["fold"] or 0))
    summary = summarize_per_loss(table, metrics)
    order = {(d, loss): (datasets.index(d), losses.index(loss)) for d in datasets for loss in losses}
    summary.sort(key=lambda row: (order[(row["dataset"], row["loss"])], metrics.index(row["metric"])))
    tests = compare_to_baseline(table, metrics, baseline, alpha=alpha, margins=margins)
    tests.sort(key=lambda row: (order[(row["dataset"], row["loss"])], metrics.index(row["metric"])))
    costs = mean_costs(run_records)
    costs.sort(key=lambda row: order[(row["dataset"], row["loss"])])
    for dataset, design in designs.items():
        rows = [row for row in table if row["dataset"] == dataset]
        design.update(units=len({row["unit"] for row in rows}), cases=len({row["case"] for row in rows}),
                      seeds=sorted({row["seed"] for row in rows}),
                      runs_per_loss=len({(row["seed"], row["fold"]) for row in rows if row["loss"] == baseline}))
    primary = metrics[0] if metrics else None
    ranking = {dataset: ranking_uncertainty(table, dataset, losses, primary) for dataset in datasets} if primary else {}
    return json_safe({
        "datasets": datasets, "losses": losses, "seeds": sorted({run.seed for run in runs}),
        "metrics": metrics, "primary_metric": primary, "higher_is_better": {m: higher_is_better(m) for m in metrics},
        "margins": {m: margin_of(m, margins) for m in metrics}, "design": designs,
        "baseline": baseline, "alpha": alpha, "runs": run_records, "summary": summary,
        "tests": tests, "ranks": mean_ranks(summary, [primary] if primary else None), "ranking": ranking,
        "friedman": friedman_over_datasets(summary, ready_datasets(run_records, datasets), losses, primary)
        if primary else None,
        "cost": costs,
        "cases": sorted(table, key=lambda r: (order[(r["dataset"], r["loss"])], r["seed"], r["fold"] or 0, r["case"])),
        "unfinished": sorted(str(path) for path in unfinished),
    })


# ---------------------------------------------------------------- statistics
def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better: the metric registry's word
    (``medsegloss.metrics.info``); an unknown metric is a ValueError naming the closest."""
    from medsegloss import metrics

    return bool(metrics.info(metric).higher_is_better)


ALL_CLASS_METRICS = ("pixel_error", "specificity")  # defined over the background too: every class counts


def case_table(dataset: str, loss: str, seed: int, test_rows: list[dict], metrics, fold=None,
               units: dict | None = None) -> list[dict]:
    """One row per case from ``evaluate`` rows (one per case and class): each metric averaged over
    the classes present in the case's reference (NaN ignored; every class for
    :data:`ALL_CLASS_METRICS`), the case's ``unit`` (``units``: case -> unit, default the case),
    ``fold``, ``"empty_reference"`` (no class present in the reference: the overlap metrics are
    NaN, the case is counted apart), ``"false_positive"`` (a class predicted where the reference
    has none) and ``"failed"``: the metrics left undefined (NaN) for a class present in the
    reference — a structure missed."""
    by_case: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    failed: dict[str, set] = defaultdict(set)
    present: dict[str, bool] = defaultdict(bool)
    spurious: dict[str, bool] = defaultdict(bool)
    for row in test_rows:
        case, empty = str(row["case"]), row.get("empty", "none")
        in_reference = empty not in ("both", "ref")
        present[case] |= in_reference
        spurious[case] |= empty == "ref"
        for metric in metrics:
            value = row.get(metric)
            value = math.nan if value is None else float(value)
            if in_reference or metric in ALL_CLASS_METRICS:
                by_case[case][metric].append(value)
            if math.isnan(value) and in_reference:
                failed[case].add(metric)
    rows = []
    for case, values in by_case.items():
        row = {"dataset": dataset, "loss": loss, "seed": int(seed), "fold": fold, "case": case,
               "unit": str((units or {}).get(case, case))}
        for metric in metrics:
            finite = [v for v in values.get(metric, []) if not math.isnan(v)]
            row[metric] = sum(finite) / len(finite) if finite else math.nan
        row["failed"] = sorted(failed[case])
        row["empty_reference"] = not present[case]
        row["false_positive"] = spurious[case]
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
    "n_seeds", "n_cases", "n_nan", "n_failed", "n_empty_reference", "n_false_positive"}``;
    ``mean`` is the mean of the per-seed means (equal to the pooled mean when every seed has the
    same cases), ``n_cases`` counts the defined (seed, case) values, ``n_failed`` the cases where
    the metric is undefined because of a segmentation error (see :func:`case_table`),
    ``n_empty_reference`` the (seed, case) values whose reference is empty and
    ``n_false_positive`` those with a class predicted where the reference has none.
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
                "n_empty_reference": sum(bool(row.get("empty_reference")) for row in rows),
                "n_false_positive": sum(bool(row.get("false_positive")) for row in rows),
            })
    return summary


def _run_key(row: dict) -> str:
    return f"seed{row['seed']}" + (f"/fold{row['fold']}" if row.get("fold") is not None else "")


def compare_to_baseline(table: list[dict], metrics, baseline: str, alpha: float = 0.05,
                        margins: dict | None = None) -> list[dict]:
    """Every loss against ``baseline`` per dataset and metric (the design in the module docstring).

    Returns rows ``{"dataset", "loss", "baseline", "metric", "n", "n_units", "n_runs",
    "mean_difference", "se", "df", "ci_low", "ci_high", "p_value", "p_holm", "wilcoxon_p",
    "margin", "detectable", "significant", "verdict"}``: differences are loss − baseline (in the
    metric's unit), ``ci_*`` the (1 − alpha) interval, ``p_holm`` Holm over the losses of the
    (dataset, metric), ``wilcoxon_p`` the signed-rank p of the unit means (reference only: it
    ignores that the cases of a fold share one model), ``detectable`` the smallest difference with
    80 % power, ``verdict`` one of :data:`~medsegloss.experiment.report.statistics.VERDICTS`.
    """
    from medsegloss.experiment.report.statistics import (detectable_difference, holm, paired_difference,
                                                         verdict_word, wilcoxon_p)

    groups = _groups(table)
    results = []
    for dataset in sorted({dataset for dataset, _ in groups}):
        if (dataset, baseline) not in groups:
            continue
        reference = {(r["seed"], r.get("fold"), r["case"]): r for r in groups[(dataset, baseline)]}
        losses = [loss for d, loss in groups if d == dataset and loss != baseline]
        for metric in metrics:
            family, sign, margin = [], 1.0 if higher_is_better(metric) else -1.0, margin_of(metric, margins)
            for loss in losses:
                pairs = [(row[metric] - reference[key][metric], row["unit"], _run_key(row))
                         for row in groups[(dataset, loss)]
                         if (key := (row["seed"], row.get("fold"), row["case"])) in reference]
                test = paired_difference([d for d, _, _ in pairs], [u for _, u, _ in pairs],
                                         [r for _, _, r in pairs], alpha=alpha)
                per_unit: dict[str, list[float]] = defaultdict(list)
                for difference, unit, _ in pairs:
                    if not math.isnan(difference):
                        per_unit[unit].append(difference)
                family.append({"dataset": dataset, "loss": loss, "baseline": baseline, "metric": metric,
                               "n": test["n"], "n_units": test["n_units"], "n_runs": test["n_runs"],
                               "mean_difference": test["mean"], "se": test["se"], "df": test["df"],
                               "ci_low": test["ci_low"], "ci_high": test["ci_high"], "p_value": test["p_value"],
                               "wilcoxon_p": wilcoxon_p([float(np.mean(v)) for v in per_unit.values()]),
                               "margin": margin, "detectable": detectable_difference(test["se"], test["df"], alpha)})
            for row, adjusted in zip(family, holm([row["p_value"] for row in family])):
                row["p_holm"] = adjusted
                row["significant"] = bool(not math.isnan(adjusted) and adjusted < alpha)
                low, high = sorted((sign * row["ci_low"], sign * row["ci_high"]))
                row["verdict"] = verdict_word(sign * row["mean_difference"], low, high, adjusted, margin, alpha)
            results += family
    return results


def unit_values(table: list[dict], dataset: str, losses, metric: str) -> np.ndarray:
    """``(losses, units, seeds)`` array of the mean ``metric`` of every test unit under every seed
    (NaN where a unit was not tested in a seed), the input of the ranking bootstrap."""
    rows = [row for row in table if row["dataset"] == dataset]
    units = sorted({row["unit"] for row in rows})
    seeds = sorted({row["seed"] for row in rows})
    cells: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        if not math.isnan(row[metric]):
            cells[(row["loss"], row["unit"], row["seed"])].append(row[metric])
    values = np.full((len(losses), len(units), len(seeds)), np.nan)
    for (loss, unit, seed), found in cells.items():
        if loss in losses:
            values[losses.index(loss), units.index(unit), seeds.index(seed)] = np.mean(found)
    return values


def ranking_uncertainty(table: list[dict], dataset: str, losses, metric: str, draws: int = 1000) -> dict:
    """The bootstrap ranking of ``losses`` on ``dataset``'s ``metric`` (statistics.bootstrap_ranks),
    keyed by loss: ``{"metric", "kendall_tau", "draws", "losses": {loss: {"rank", "shares",
    "low", "high"}}}``; empty when the dataset has no value."""
    from medsegloss.experiment.report.statistics import bootstrap_ranks

    present = [loss for loss in losses if any(r["dataset"] == dataset and r["loss"] == loss for r in table)]
    values = unit_values(table, dataset, present, metric)
    if values.size == 0 or np.isnan(values).all():
        return {}
    ranks = bootstrap_ranks(values, higher_is_better(metric), draws=draws)
    return {"metric": metric, "kendall_tau": ranks["kendall_tau"], "draws": ranks["draws"],
            "losses": {loss: {"rank": ranks["rank"][i], "shares": ranks["shares"][i], "low": ranks["low"][i],
                              "high": ranks["high"][i]} for i, loss in enumerate(present)}}


def ready_datasets(run_records: list[dict], datasets) -> list[str]:
    """The datasets without a not-ready cell (readiness.cell_statuses): the only ones a test over
    datasets may count."""
    from medsegloss.experiment.report.readiness import cell_statuses

    blocked = {dataset for dataset, _ in cell_statuses({"runs": run_records})}
    return [dataset for dataset in datasets if dataset not in blocked]


def friedman_over_datasets(summary: list[dict], datasets, losses, metric: str) -> dict:
    """Friedman's test and the Nemenyi critical difference over the datasets on ``metric``
    (statistics.friedman), over the losses every dataset has; ``"enough": False`` under 3."""
    from medsegloss.experiment.report.statistics import friedman

    means = {(row["dataset"], row["loss"]): row["mean"] for row in summary if row["metric"] == metric}
    common = [loss for loss in losses if all(not math.isnan(means.get((d, loss), math.nan)) for d in datasets)]
    matrix = np.array([[means[(d, loss)] for loss in common] for d in datasets]) if common else np.zeros((0, 0))
    result = friedman(matrix.reshape(len(datasets), len(common)), higher_is_better(metric))
    return {**result, "metric": metric, "loss_names": common}


def mean_ranks(summary: list[dict], metrics=None) -> list[dict]:
    """Rank the losses per (dataset, metric) by their mean (1 = best, in the metric's direction;
    ties share the average rank), then average each loss's ranks over the columns: descriptive
    only (no uncertainty; ``ranking`` in results.json has the bootstrap).

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
