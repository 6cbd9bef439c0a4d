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

import numpy as np

from medsegloss.experiment import stats
from medsegloss.experiment._io import read_json, read_jsonl, write_json, write_text

DEFAULT_METRICS = ("dice", "iou", "pixel_error", "hd95", "assd")
MAIN_METRICS = ("dice", "iou", "pixel_error")  # the seed paper's table
METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "pixel_error": "pixel error (%)", "hd95": "HD95",
                 "assd": "ASSD", "hd": "HD", "nsd": "NSD"}
PERCENT_METRICS = ("pixel_error",)  # shown ×100 in the tables (raw fractions in results.*)
DISTANCE_METRICS = ("hd", "hd95", "assd", "masd")  # in mm (or pixels): 2 decimals are plenty
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


# ---------------------------------------------------------------- formatting
def _number(value, metric: str | None = None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if metric in PERCENT_METRICS:
        value = 100 * value
        digits = 2
    elif metric in DISTANCE_METRICS:
        digits = 2
    return f"{value:.{digits}f}"


def _mean_std(row: dict | None, metric: str) -> str:
    """``mean ± std`` over seeds, and ``(k failed)`` when k (seed, case) values are undefined because
    a structure was missed or predicted where there is none."""
    if row is None or row["mean"] is None:
        return "–"
    text = _number(row["mean"], metric)
    text = text if row["std_seeds"] is None else f"{text} ± {_number(row['std_seeds'], metric)}"
    if row.get("n_failed"):
        text += f" ({row['n_failed']} failed)"
    return text


def _best(results: dict, dataset: str, metric: str) -> str | None:
    """The loss with the best mean for (dataset, metric), in the metric's direction, among the
    losses with the fewest failed cases (a mean over the few cases where a loss found the
    structure at all is not comparable)."""
    rows = [r for r in results["summary"] if r["dataset"] == dataset and r["metric"] == metric
            and r["mean"] is not None]
    if not rows:
        return None
    fewest = min(r.get("n_failed", 0) for r in rows)
    sign = 1 if results["higher_is_better"][metric] else -1
    return max((r for r in rows if r.get("n_failed", 0) == fewest), key=lambda r: sign * r["mean"])["loss"]


def metric_table(results: dict, metrics) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a loss × (dataset, metric) table of mean ± std over seeds; the best
    mean of each column in bold (``**``)."""
    metrics = [m for m in metrics if m in results["metrics"]]
    lookup = {(r["dataset"], r["loss"], r["metric"]): r for r in results["summary"]}
    header = ["loss"] + [(d, METRIC_LABELS.get(m, m)) for d in results["datasets"] for m in metrics]
    rows = []
    for loss in results["losses"]:
        cells = [loss]
        for dataset in results["datasets"]:
            for metric in metrics:
                text = _mean_std(lookup.get((dataset, loss, metric)), metric)
                cells.append(f"**{text}**" if loss == _best(results, dataset, metric) else text)
        rows.append(cells)
    return header, rows


def significance_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Per dataset and loss: median paired difference to the baseline, Holm-adjusted p and the
    verdict, for every metric."""
    header = ["dataset", "loss"] + [f"{METRIC_LABELS.get(m, m)} Δ (p Holm)" for m in results["metrics"]]
    lookup = {(r["dataset"], r["loss"], r["metric"]): r for r in results["tests"]}
    rows = []
    for dataset in results["datasets"]:
        for loss in results["losses"][1:]:
            cells = [dataset, loss]
            for metric in results["metrics"]:
                row = lookup.get((dataset, loss, metric))
                if row is None or row["p_holm"] is None:
                    cells.append("–")
                    continue
                difference = _number(row["median_difference"], metric)
                mark = {"better": " better", "worse": " worse"}.get(row["verdict"], " n.s.")
                p_text = "p<0.001" if row["p_holm"] < 0.001 else f"p={row['p_holm']:.3f}"
                cells.append(f"{'+' if row['median_difference'] > 0 else ''}{difference} ({p_text}){mark}")
            rows.append(cells)
    return header, rows


def rank_table(results: dict) -> tuple[list[str], list[list[str]]]:
    columns = [f"{d}/{m}" for d in results["datasets"] for m in results["metrics"]]
    header = ["loss", "mean rank"] + [(d, METRIC_LABELS.get(m, m)) for d in results["datasets"]
                                      for m in results["metrics"]]
    rows = [[row["loss"], f"{row['mean_rank']:.2f}"]
            + [f"{row['ranks'][c]:g}" if c in row["ranks"] else "–" for c in columns]
            for row in results["ranks"]]
    return header, rows


def cost_table(results: dict) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "loss", "ms / step", "peak memory (MB)", "train time (s)"]
    rows = [[row["dataset"], row["loss"],
             _number(None if row["seconds_per_step"] is None else 1000 * row["seconds_per_step"], digits=1),
             _number(row["peak_memory_mb"], digits=0), _number(row["train_seconds"], digits=1)]
            for row in results["cost"]]
    return header, rows


def _numeric(text: str) -> bool:
    """A table cell holding a number (right-aligned), rather than a name."""
    import re

    return re.match(r"^(\*\*)?[-+]?[0-9–]", text) is not None


def markdown_table(header, rows) -> str:
    """A Markdown table; a ``(group, label)`` header cell is written ``group label``."""
    header = [" ".join(cell) if isinstance(cell, tuple) else cell for cell in header]
    align = ["---:" if rows and all(_numeric(row[i]) for row in rows) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _settings(results: dict) -> str:
    cases = {}
    for row in results["cases"]:
        cases.setdefault(row["dataset"], {}).setdefault(row["seed"], set()).add(row["case"])
    per_seed = ", ".join(f"{dataset} {'/'.join(sorted({str(len(c)) for c in seeds.values()}))}"
                         for dataset, seeds in cases.items())
    return (f"{len(results['runs'])} runs: {len(results['losses'])} losses × {len(results['datasets'])} "
            f"datasets × seeds {', '.join(map(str, results['seeds']))}; test cases per seed: {per_seed}. "
            f"Mean ± std over seeds (each seed's mean over its test cases); best mean in bold.")


# ---------------------------------------------------------------- figures
def _validation_value(record: dict, metric: str = "dice") -> float:
    """The foreground mean of ``metric`` in one metrics.jsonl line's ``"val"`` summary.

    Accepts the summary as rows (``[{"class", "metric", "mean", ...}]``), as ``{metric: {"mean":
    ...}}`` / ``{metric: value}``, or as rows ``[{"class", metric: {"mean": ...}}]``.
    """
    val = record.get("val")
    values = []
    if isinstance(val, dict):
        item = val.get(metric)
        values = [item.get("mean") if isinstance(item, dict) else item]
    elif isinstance(val, list):
        for row in val:
            if row.get("metric") == metric:
                values.append(row.get("mean"))
            elif isinstance(row.get(metric), dict):
                values.append(row[metric].get("mean"))
            elif isinstance(row.get(metric), (int, float)):
                values.append(row[metric])
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(values) / len(values) if values else math.nan


def _curves(runs: list[Run]) -> dict:
    curves: dict[tuple, list] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        records = read_jsonl(run.path / "metrics.jsonl")
        if records:
            epochs = [record.get("epoch", i + 1) for i, record in enumerate(records)]
            values = [record["val_dice"] if record.get("val_dice") is not None else _validation_value(record)
                      for record in records]
            curves.setdefault((run.dataset, run.loss), []).append((epochs, values))
    return curves


def _overlay_panels(runs: list[Run], losses, count: int = 4) -> tuple[list[dict], dict, list[str]]:
    """The ``count`` test slices where the losses' predictions disagree most (largest spread of
    per-slice Dice across losses; then most pixels on which they differ), one seed's runs."""
    import torch

    from medsegloss import metrics
    from medsegloss.experiment.config import Config
    from medsegloss.experiment.train import labels_from_logits, load_checkpoint, make_dataset, predict_logits

    seed = min(run.seed for run in runs)
    by_loss = {run.loss: run for run in runs if run.seed == seed and (run.path / "best.pt").exists()}
    losses = [loss for loss in losses if loss in by_loss]
    if not losses:
        return [], {}, []
    first = by_loss[losses[0]]
    dataset = make_dataset(Config.from_dict(first.config), "test", split_file=first.path / "split.json")
    items = [dataset[i] for i in range(len(dataset))]
    if not items or items[0]["image"].ndim != 3:  # overlays of 2-D slices only
        return [], {}, []
    images = torch.stack([item["image"] for item in items])
    labels = [item["label"].numpy() for item in items]
    present = [set(np.unique(label).tolist()) - {0} for label in labels]
    predictions, dice = {}, {}
    for loss in losses:
        model, _ = load_checkpoint(by_loss[loss].path / "best.pt")
        predicted = torch.cat([labels_from_logits(predict_logits(model, images[i:i + 32]))
                               for i in range(0, len(items), 32)]).cpu().numpy()
        predictions[loss] = predicted
        rows = metrics.evaluate(list(predicted), labels, dataset.num_classes, metrics=("dice",),
                                case_ids=[str(i) for i in range(len(items))])
        # Dice of the classes present in the ground truth: on a class absent from it, Dice jumps
        # between 0 and 1 with a single pixel, which says little about the loss
        per_item = np.full(len(items), np.nan)
        for i in range(len(items)):
            values = [r["dice"] for r in rows if r["case"] == str(i) and r["class"] in present[i]
                      and r["dice"] is not None and math.isfinite(r["dice"])]
            per_item[i] = np.mean(values) if values else np.nan
        dice[loss] = per_item
    chosen = _most_disagreeing(items, [predictions[loss] for loss in losses], [dice[loss] for loss in losses], count)
    panels = [{"image": items[i]["image"][0].numpy(), "label": labels[i],
               "predictions": {loss: predictions[loss][i] for loss in losses},
               "dice": {loss: float(dice[loss][i]) for loss in losses},
               "name": f"{items[i]['case']}" + (f" slice {items[i]['slice']}" if items[i].get("slice", -1) >= 0 else "")}
              for i in chosen]
    return panels, {"seed": seed}, list(getattr(dataset, "class_names", []))


def _most_disagreeing(items, predictions, dice, count: int) -> list[int]:
    """Indices of the ``count`` items with the largest spread (max - min) of Dice across losses,
    ties broken by the share of pixels where the predictions differ; items where the ground truth
    shows a structure, and one item per case, first."""
    import warnings

    stacked = np.stack(predictions)  # (losses, items, H, W)
    differing = (stacked != stacked[:1]).any(0).reshape(len(items), -1).mean(1)
    with warnings.catch_warnings():  # an item with no defined Dice (all empty) has spread 0
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nan_to_num(np.nanmax(np.stack(dice), 0) - np.nanmin(np.stack(dice), 0))
    has_dice = ~np.all(np.isnan(np.stack(dice)), 0)  # slices showing some ground truth first
    order = sorted(range(len(items)), key=lambda i: (not has_dice[i], -spread[i], -differing[i]))
    chosen, cases = [], set()
    for i in order:  # the best item of each case first, so the rows show different cases
        if items[i]["case"] not in cases:
            chosen.append(i)
            cases.add(items[i]["case"])
    chosen = chosen[:count]
    chosen += [i for i in order if i not in chosen][:count - len(chosen)]
    return sorted(chosen, key=order.index)


def write_figures(results: dict, runs: list[Run], dest: Path, overlays: bool = True) -> dict[str, Path]:
    """Write the PNG figures into ``dest/figures``; returns {title: path}. Overlays need the runs'
    ``best.pt`` and the data; when those fail the reason is printed and the rest is kept."""
    from medsegloss.experiment import plots

    datasets, losses = results["datasets"], results["losses"]
    figures = {}
    curves = _curves(runs)
    if curves:
        figures["Validation Dice per epoch"] = plots.validation_curves(
            curves, datasets, losses, dest / "figures" / "validation_curves.png")
    if "dice" in results["metrics"]:
        values: dict[tuple, list] = {}
        for row in results["cases"]:
            values.setdefault((row["dataset"], row["loss"]), []).append(
                math.nan if row["dice"] is None else row["dice"])
        figures["Test Dice per case"] = plots.dice_boxes(values, datasets, losses, dest / "figures" / "dice_boxes.png")
    for dataset in datasets if overlays else []:
        try:
            panels, info, class_names = _overlay_panels([r for r in runs if r.dataset == dataset], losses)
        except Exception as error:  # a figure must not cost the whole report; say why it is missing
            print(f"report: no overlays for {dataset}: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        if panels:
            figures[f"Predictions on {dataset}"] = plots.overlays(
                panels, [loss for loss in losses if loss in panels[0]["predictions"]],
                dest / "figures" / f"overlays_{dataset}.png", class_names=class_names,
                title=f"{dataset}, seed {info['seed']}: test slices where the losses disagree most")
    return figures


# ---------------------------------------------------------------- documents
def _sections(results: dict) -> list[tuple[str, str, tuple]]:
    """(title, explanation, (header, rows)) of every table, in report order."""
    alpha, baseline = results["alpha"], results["baseline"]
    sections = [("Results", _settings(results), metric_table(results, MAIN_METRICS))]
    surface = [m for m in results["metrics"] if m not in MAIN_METRICS]
    if surface:
        sections.append(("Surface distances", "Mean ± std over seeds, in the units of the voxel spacing (mm for scans and phantoms); "
                         "lower is better. Where a distance is undefined (a class missing from the prediction or "
                         "the ground truth) it is left out of the mean; \"(k failed)\" counts the (seed, case) values "
                         "where a structure was missed or predicted where there is none (a structure absent from "
                         "both masks is right, not a failure). Bold marks the best among the losses with the "
                         "fewest failures, and the mean rank puts more failures below fewer.", metric_table(results, surface)))
    sections.append((f"Paired tests against {baseline}",
                     f"Median over (seed, case) pairs of loss − {baseline}, two-sided Wilcoxon signed-rank test "
                     f"on those pairs, p-values Holm-adjusted over the {len(results['losses']) - 1} losses of "
                     f"each dataset and metric. *better* / *worse*: significant at α = {alpha} in the "
                     f"metric's direction; *n.s.*: not significant — these data show no difference to "
                     f"{baseline}, which is not proof that there is none.", significance_table(results)))
    sections.append(("Mean rank", "Rank of each loss's mean per dataset and metric (1 = best, in the metric's "
                     "direction; ties share the average rank; more failed cases rank lower), averaged over datasets and metrics.",
                     rank_table(results)))
    sections.append(("Cost", "Mean over seeds of each run's training cost (metrics.json). Peak memory is "
                     "torch.cuda.max_memory_allocated on a GPU; on a CPU it is the training process's peak "
                     "resident memory, which only grows while one process (like `medsegloss bench`) trains run "
                     "after run, so compare it across losses on a GPU.", cost_table(results)))
    return sections


def render_markdown(results: dict, figures: dict[str, Path], dest: Path, sources) -> str:
    lines = ["# Loss benchmark", "", f"Runs read from: {', '.join(f'`{s}`' for s in sources)}.", ""]
    for title, text, (header, rows) in _sections(results):
        lines += [f"## {title}", "", text, "", markdown_table(header, rows), ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{title}]({path.relative_to(dest).as_posix()})\n" for title, path in figures.items()]
    if results["unfinished"]:
        lines += ["## Unfinished runs", "", "Not in the tables (no metrics.json yet):", ""]
        lines += [f"- `{path}`" for path in results["unfinished"]] + [""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1500px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.2em;
margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}p.note{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:.3em .6em;white-space:nowrap}
th{background:#f4f6f8;text-align:center}th.group{border-bottom:2px solid #bbb}
td.better{color:#1a7f37}td.worse{color:#cf222e}td.num{text-align:right}td.text{text-align:left}tr:nth-child(even) td{background:#fafbfc}
.scroll{overflow-x:auto}figure{margin:1.5em 0}figcaption{font-size:.9em;color:#555}img{max-width:100%}
code{background:#f4f6f8;padding:0 .2em}"""


def _html_header(header) -> str:
    """Header rows; ``(group, label)`` cells get a spanning group row above their labels."""
    import html
    from itertools import groupby

    if not any(isinstance(cell, tuple) for cell in header):
        return "<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in header) + "</tr>"
    top, bottom = [], []
    for group, cells in groupby(header, key=lambda cell: cell[0] if isinstance(cell, tuple) else None):
        cells = list(cells)
        if group is None:
            top += [f"<th rowspan='2'>{html.escape(cell)}</th>" for cell in cells]
        else:
            top.append(f"<th colspan='{len(cells)}' class='group'>{html.escape(group)}</th>")
            bottom += [f"<th>{html.escape(cell[1])}</th>" for cell in cells]
    return f"<tr>{''.join(top)}</tr><tr>{''.join(bottom)}</tr>"


def render_html(results: dict, figures: dict[str, Path], sources) -> str:
    import base64
    import html
    import re

    def cell(text: str, tag: str) -> str:
        escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
        kind = "num" if _numeric(text) else "text"
        kind += " better" if text.endswith(" better") else " worse" if text.endswith(" worse") else ""
        return f"<{tag} class='{kind}'>{escaped}</{tag}>"

    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>Loss benchmark</title>", f"<style>{_CSS}</style></head><body>", "<h1>Loss benchmark</h1>",
             f"<p class='note'>Runs read from: {', '.join('<code>' + html.escape(str(s)) + '</code>' for s in sources)}</p>"]
    for title, text, (header, rows) in _sections(results):
        text = re.sub(r"\*(.+?)\*", r"<i>\1</i>", html.escape(text))
        text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
        parts += [f"<h2>{html.escape(title)}</h2>", f"<p class='note'>{text}</p>", "<div class='scroll'><table>",
                  _html_header(header)]
        parts += ["<tr>" + "".join(cell(c, "td") for c in cells) + "</tr>" for cells in rows]
        parts.append("</table></div>")
    if figures:
        parts.append("<h2>Figures</h2>")
    for title, path in figures.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(title)}</figcaption></figure>")
    if results["unfinished"]:
        parts.append("<h2>Unfinished runs</h2><ul>"
                     + "".join(f"<li><code>{html.escape(p)}</code></li>" for p in results["unfinished"]) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_csv(results: dict) -> str:
    """One row per dataset and loss: each metric's mean, std over seeds and cases, Holm p and
    verdict against the baseline, and the cost."""
    import csv
    import io

    summary = {(r["dataset"], r["loss"], r["metric"]): r for r in results["summary"]}
    tests = {(r["dataset"], r["loss"], r["metric"]): r for r in results["tests"]}
    costs = {(r["dataset"], r["loss"]): r for r in results["cost"]}
    header = ["dataset", "loss", "n_seeds", "n_cases"]
    for metric in results["metrics"]:
        header += [f"{metric}_mean", f"{metric}_std_seeds", f"{metric}_std_cases", f"{metric}_p_holm",
                   f"{metric}_verdict"]
    header += list(stats.COST_FIELDS)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for dataset in results["datasets"]:
        for loss in results["losses"]:
            first = summary.get((dataset, loss, results["metrics"][0])) if results["metrics"] else None
            if first is None:
                continue
            row = [dataset, loss, first["n_seeds"], first["n_cases"]]
            for metric in results["metrics"]:
                s, t = summary[(dataset, loss, metric)], tests.get((dataset, loss, metric), {})
                row += [s["mean"], s["std_seeds"], s["std_cases"], t.get("p_holm"),
                        t.get("verdict", "baseline" if loss == results["baseline"] else "")]
            row += [costs.get((dataset, loss), {}).get(name) for name in stats.COST_FIELDS]
            writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


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
