"""``medsegloss report OUT...``: the report of a loss benchmark, read from its run directories.

Reads every finished run (a ``metrics.json``) under the given folders — one benchmark folder,
or the folders of several shards, merged — and writes into ``--dest`` (default: the first
folder): ``results.json`` (everything, machine-readable), ``results.csv`` (one row per dataset
and loss), ``REPORT.md`` (the tables), the PNG figures and ``report.html`` (one self-contained
page: tables and base64 figures). It only reads what the runs wrote; every write is atomic.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from medsegloss.experiment import stats
from medsegloss._io import read_json, write_json, write_text
from medsegloss.experiment.report_documents import render_csv, render_html, render_markdown
from medsegloss.experiment.report_figures import write_figures
from medsegloss.experiment.report_tables import (DISTANCE_METRICS, MAIN_METRICS, METRIC_LABELS, PERCENT_METRICS,
                                                 cost_table, markdown_table, metric_table, rank_table,
                                                 significance_table)

__all__ = ["Run", "analyse", "find_runs", "loss_label", "write_report", "main_table", "main", "write_figures",
           "render_markdown", "render_html", "render_csv", "metric_table", "significance_table", "rank_table",
           "cost_table", "markdown_table", "DEFAULT_METRICS", "MAIN_METRICS", "METRIC_LABELS",
           "PERCENT_METRICS", "DISTANCE_METRICS", "BENCH_FILE"]

DEFAULT_METRICS = ("dice", "iou", "pixel_error", "hd95", "assd")
BENCH_FILE = "bench.json"  # written by `medsegloss bench`: the sweep's losses, datasets and seeds


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


def loss_label(config: dict) -> str:
    """How a run's loss is named in the report: ``"ce + 1.0*dice"``, ``"tversky(alpha=0.3)"``."""
    options = config.get("loss_options") or {}
    if not options:
        return str(config["loss"])
    return f"{config['loss']}(" + ", ".join(f"{k}={v!r}" for k, v in sorted(options.items())) + ")"


def find_runs(out_dirs) -> tuple[list[Run], list[Path]]:
    """The finished runs under ``out_dirs`` (each a folder searched recursively) and the
    unfinished ones (``config.json`` without ``metrics.json``). The same run found twice (e.g. a
    shard folder and the merged folder) is an error naming both paths."""
    from medsegloss.experiment.config import loss_slug

    runs: dict[tuple, Run] = {}
    unfinished: list[Path] = []
    for out_dir in map(Path, out_dirs):
        if not out_dir.is_dir():
            raise FileNotFoundError(f"benchmark folder {out_dir} does not exist (or is not a folder)")
        for config_path in sorted(out_dir.rglob("config.json")):
            run_dir = config_path.parent
            if not (run_dir / "metrics.json").exists():
                unfinished.append(run_dir)
                continue
            result = read_json(run_dir / "metrics.json")
            config = result.get("config") or read_json(config_path)
            label = loss_label(config)
            key = (config["dataset"], label, int(config["seed"]))
            run = Run(config["dataset"], label, int(config["seed"]),
                      f"{config['dataset']}/{loss_slug(label)}/seed{config['seed']}", run_dir, result)
            if key in runs:
                raise ValueError(f"the run {run.run_id} was found twice: {runs[key].path} and {run_dir}; "
                                 f"pass each shard's folder once (or only the merged folder)")
            runs[key] = run
    return list(runs.values()), unfinished


def _sweep_order(out_dirs, runs: list[Run]) -> tuple[list[str], list[str]]:
    """Datasets and losses in the benchmark's own order (its bench.json), else sorted."""
    datasets, losses = [], []
    for out_dir in map(Path, out_dirs):
        if (Path(out_dir) / BENCH_FILE).exists():
            sweep = read_json(Path(out_dir) / BENCH_FILE)
            datasets += [d for d in sweep.get("datasets", []) if d not in datasets]
            losses += [loss for loss in sweep.get("losses", []) if loss not in losses]
    found_datasets = {run.dataset for run in runs}
    found_losses = {run.loss for run in runs}
    datasets = [d for d in datasets if d in found_datasets] + sorted(found_datasets - set(datasets))
    losses = [loss for loss in losses if loss in found_losses] + sorted(found_losses - set(losses))
    return datasets, losses


def _clean(value):
    """JSON-safe: NaN and infinities become null (standard JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def analyse(out_dirs, baseline: str | None = "ce", metrics=DEFAULT_METRICS, alpha: float = 0.05) -> dict:
    """Everything the report shows, as one JSON-ready dict (the content of ``results.json``).

    ``baseline``: the loss the others are tested against (``None`` or absent: the first loss).
    Metrics missing from every run's test rows are left out.
    """
    runs, unfinished = find_runs(out_dirs)
    if not runs:
        raise ValueError(f"no finished run (no metrics.json) under {', '.join(map(str, out_dirs))}"
                         + (f"; {len(unfinished)} unfinished" if unfinished else ""))
    datasets, losses = _sweep_order(out_dirs, runs)
    present = {key for run in runs for row in run.result.get("test_rows", []) for key in row}
    metrics = [metric for metric in metrics if metric in present]
    if baseline not in losses:
        baseline = losses[0]
    losses = [baseline] + [loss for loss in losses if loss != baseline]
    table = []
    for run in runs:
        table += stats.case_table(run.dataset, run.loss, run.seed, run.result.get("test_rows", []), metrics)
    run_records = sorted(
        ({"dataset": run.dataset, "loss": run.loss, "seed": run.seed, "run": run.run_id,
          "epochs": run.result.get("epochs"), "best_epoch": run.result.get("best_epoch"),
          "cost": run.result.get("cost", {})} for run in runs),
        key=lambda r: (datasets.index(r["dataset"]), losses.index(r["loss"]), r["seed"]))
    summary = stats.summarize(table, metrics)
    order = {(d, loss): (datasets.index(d), losses.index(loss)) for d in datasets for loss in losses}
    summary.sort(key=lambda row: (order[(row["dataset"], row["loss"])], metrics.index(row["metric"])))
    tests = stats.compare_to_baseline(table, metrics, baseline, alpha=alpha)
    tests.sort(key=lambda row: (order[(row["dataset"], row["loss"])], metrics.index(row["metric"])))
    costs = stats.cost_table(run_records)
    costs.sort(key=lambda row: order[(row["dataset"], row["loss"])])
    return _clean({
        "datasets": datasets, "losses": losses, "seeds": sorted({run.seed for run in runs}),
        "metrics": metrics, "higher_is_better": {m: stats.higher_is_better(m) for m in metrics},
        "baseline": baseline, "alpha": alpha, "runs": run_records, "summary": summary,
        "tests": tests, "ranks": stats.mean_ranks(summary), "cost": costs,
        "cases": sorted(table, key=lambda r: (order[(r["dataset"], r["loss"])], r["seed"], r["case"])),
        "unfinished": sorted(str(path) for path in unfinished),
    })


def write_report(out_dirs, dest=None, baseline: str | None = "ce", metrics=DEFAULT_METRICS,
                 alpha: float = 0.05, figures: bool = True, overlays: bool = True) -> Path:
    """Analyse the runs under ``out_dirs`` and write results.json, results.csv, REPORT.md, the
    figures and report.html into ``dest`` (default: the first of ``out_dirs``). Returns the
    path of REPORT.md."""
    out_dirs = [Path(d) for d in ([out_dirs] if isinstance(out_dirs, (str, Path)) else out_dirs)]
    dest = Path(dest) if dest is not None else out_dirs[0]
    results = analyse(out_dirs, baseline=baseline, metrics=metrics, alpha=alpha)
    runs, _ = find_runs(out_dirs)
    drawn = write_figures(results, runs, dest, overlays=overlays) if figures else {}
    write_json(dest / "results.json", results)
    write_text(dest / "results.csv", render_csv(results))
    sources = [str(d) for d in out_dirs]
    write_text(dest / "report.html", render_html(results, drawn, sources))
    return write_text(dest / "REPORT.md", render_markdown(results, drawn, dest, sources))


def main_table(dest) -> str:
    """The REPORT.md main table (as printed at the end of ``bench`` and ``report``)."""
    results = read_json(Path(dest) / "results.json")
    return markdown_table(*metric_table(results, MAIN_METRICS))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="medsegloss report", description=__doc__.split("\n\n")[1].replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dirs", nargs="+", metavar="OUT", help="benchmark folder(s); shards are merged")
    parser.add_argument("--dest", help="where to write the report (default: the first OUT)")
    parser.add_argument("--baseline", default="ce", help="the loss the others are tested against (default: ce)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metrics to report")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm (default 0.05)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--no-overlays", action="store_true", help="skip the prediction overlays (no checkpoints read)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.out_dirs, args.dest, baseline=args.baseline, metrics=args.metrics,
                            alpha=args.alpha, figures=not args.no_figures, overlays=not args.no_overlays)
    except (ValueError, FileNotFoundError) as error:
        print(f"medsegloss report: {error}", file=sys.stderr)
        return 2
    print(main_table(path.parent))
    print(f"\nreport: {path}  (and {path.parent / 'report.html'})")
    return 0
