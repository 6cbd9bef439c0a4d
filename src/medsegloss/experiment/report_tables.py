"""The report's tables: numbers formatted per metric, one (header, rows) table per view of the
results (``report.analyse``), the explanation of each, and Markdown tables."""

from __future__ import annotations

MAIN_METRICS = ("dice", "iou", "pixel_error")  # the seed paper's table
METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "pixel_error": "pixel error (%)", "hd95": "HD95",
                 "assd": "ASSD", "hd": "HD", "nsd": "NSD"}
PERCENT_METRICS = ("pixel_error",)  # shown ×100 in the tables (raw fractions in results.*)
DISTANCE_METRICS = ("hd", "hd95", "assd", "masd")  # in mm (or pixels): 2 decimals are plenty


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


def numeric_cell(text: str) -> bool:
    """A table cell holding a number (right-aligned), rather than a name."""
    import re

    return re.match(r"^(\*\*)?[-+]?[0-9–]", text) is not None


def markdown_table(header, rows) -> str:
    """A Markdown table; a ``(group, label)`` header cell is written ``group label``."""
    header = [" ".join(cell) if isinstance(cell, tuple) else cell for cell in header]
    align = ["---:" if rows and all(numeric_cell(row[i]) for row in rows) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def settings_text(results: dict) -> str:
    cases = {}
    for row in results["cases"]:
        cases.setdefault(row["dataset"], {}).setdefault(row["seed"], set()).add(row["case"])
    per_seed = ", ".join(f"{dataset} {'/'.join(sorted({str(len(c)) for c in seeds.values()}))}"
                         for dataset, seeds in cases.items())
    return (f"{len(results['runs'])} runs: {len(results['losses'])} losses × {len(results['datasets'])} "
            f"datasets × seeds {', '.join(map(str, results['seeds']))}; test cases per seed: {per_seed}. "
            f"Mean ± std over seeds (each seed's mean over its test cases); best mean in bold.")


def sections(results: dict) -> list[tuple[str, str, tuple]]:
    """(title, explanation, (header, rows)) of every table, in report order."""
    alpha, baseline = results["alpha"], results["baseline"]
    sections = [("Results", settings_text(results), metric_table(results, MAIN_METRICS))]
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
                     "torch.cuda.max_memory_allocated on a GPU; on a CPU it is the peak resident memory of the "
                     "process during that run (on Linux reset at the start of each run, elsewhere the process's "
                     "peak so far). On a CPU it includes what the process already held (torch, the data, memory "
                     "kept from earlier runs), so only large differences between losses mean something.", cost_table(results)))
    return sections
