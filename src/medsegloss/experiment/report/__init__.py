"""The report of a loss benchmark, read from its run directories: ``medsegloss report OUT...``.

Reads every finished run (a ``metrics.json``) under the given folders — one benchmark folder,
or the folders of several shards, merged — and writes into ``--dest`` (default: the first
folder): ``results.json`` (everything, machine-readable), ``results.csv`` (one row per dataset
and loss), ``REPORT.md`` (the tables), the PNG figures and ``report.html`` (one self-contained
page: tables and base64 figures). It only reads what the runs wrote; every write is atomic.

The package: :mod:`~medsegloss.experiment.report.analysis` reads the runs once and computes
the statistics (in); this module formats them as tables and writes the documents (out), and
:mod:`~medsegloss.experiment.report.figures` draws the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medsegloss import _io
from medsegloss.experiment.report.analysis import COST_FIELDS, DEFAULT_METRICS, analyse, find_runs
from medsegloss.experiment.report.answer import answer_lines, design_text
from medsegloss.experiment.report.figures import write_figures
from medsegloss.experiment.report.readiness import (banner_lines, budget_text, cell_status, cell_statuses,
                                                     readiness_line)

__all__ = ["write_report", "main_table", "readiness_line", "main"]


# ---------------------------------------------------------------- tables: numbers formatted per metric,
# one (header, rows) table per view of the results, the explanation of each, Markdown tables
MAIN_METRICS = ("dice", "iou", "pixel_error")  # the seed paper's table
METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "pixel_error": "pixel error (%)", "hd95": "HD95",
                 "assd": "ASSD", "hd": "HD", "nsd": "NSD"}
PERCENT_METRICS = ("pixel_error",)  # shown ×100 in the tables (raw fractions in results.*)
DISTANCE_METRICS = ("hd", "hd95", "assd", "masd")  # in mm (or pixels): 2 decimals are plenty


class Strong(str):
    """A table cell shown in bold (``**...**`` in Markdown, ``<b>`` in HTML): a marker type, so
    bold is never read out of the text, where a user's loss or case name could fake it."""


def markdown_escape(text) -> str:
    """``text`` (a loss, dataset, class, case or file name: anything a user chose) made literal
    in Markdown: backslash-escaped ``\\ ` * _ | [ ] $ ~`` (emphasis, code, table cells, links,
    GitHub's math), and ``<`` / ``&`` that would start an HTML tag or entity as ``&lt;`` /
    ``&amp;``."""
    import re

    text = re.sub(r"([\\`*_|\[\]$~])", r"\\\1", str(text))
    text = re.sub(r"&(?=#?\w+;)", "&amp;", text)
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def markdown_code(text) -> str:
    """``text`` as a Markdown code span, fenced with more backticks than it holds in a row."""
    import re

    text = str(text).replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


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
                cells.append(Strong(text) if loss == _best(results, dataset, metric) else text)
        rows.append(cells)
    return header, rows


def significance_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Per dataset and loss: the mean paired difference to the baseline with its 95 % interval and
    the verdict word, for every metric (the primary one first)."""
    header = ["dataset", "loss"] + [f"{METRIC_LABELS.get(m, m)} Δ [95 % CI]" for m in results["metrics"]]
    lookup = {(r["dataset"], r["loss"], r["metric"]): r for r in results["tests"]}
    not_ready = cell_statuses(results)
    rows = []
    for dataset in results["datasets"]:
        for loss in results["losses"][1:]:
            cells = [dataset, loss]
            status = cell_status(not_ready, results["baseline"], dataset, loss)
            if status is not None:  # no finding: say why instead of a verdict
                rows.append(cells + [status] * len(results["metrics"]))
                continue
            for metric in results["metrics"]:
                row = lookup.get((dataset, loss, metric))
                if row is None or row["mean_difference"] is None:
                    cells.append("–")
                    continue
                interval = ("no interval (one run per loss)" if row["ci_low"] is None else
                            f"[{_signed(row['ci_low'], metric)}, {_signed(row['ci_high'], metric)}]")
                cells.append(f"{_signed(row['mean_difference'], metric)} {interval} {row['verdict']}")
            rows.append(cells)
    return header, rows


def _signed(value: float, metric: str) -> str:
    text = _number(value, metric)
    return text if text.startswith("-") else "+" + text


def rank_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Per loss: the descriptive mean rank on the primary metric, and per dataset the rank with
    its 95 % bootstrap interval (units, then seeds, resampled)."""
    primary = results.get("primary_metric")
    header = ["loss", "mean rank"] + [(d, "rank [95 % interval]") for d in results["datasets"]]
    rows = []
    for row in results["ranks"]:
        cells = [row["loss"], f"{row['mean_rank']:.2f}"]
        for dataset in results["datasets"]:
            ranking = (results.get("ranking") or {}).get(dataset) or {}
            entry = (ranking.get("losses") or {}).get(row["loss"])
            cells.append(f"{entry['rank']:g} [{entry['low']:g}–{entry['high']:g}]" if entry else
                         f"{row['ranks'].get(f'{dataset}/{primary}', '–')}")
        rows.append(cells)
    return header, rows


def friedman_text(results: dict) -> str:
    friedman = results.get("friedman") or {}
    if not friedman:
        return ""
    if not friedman.get("enough"):
        return (f" With {friedman['datasets']} dataset(s) no test over datasets is made (Friedman needs at least 3).")
    return (f" Friedman over the {friedman['datasets']} datasets: χ² = {friedman['statistic']:.2f}, p = "
            f"{friedman['p_value']:.3g}; Nemenyi critical difference of mean ranks {friedman['critical_difference']:.2f} "
            f"(α = {results['alpha']}).")


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


def markdown_cell(cell) -> str:
    """A table cell's Markdown: escaped text, bold for :class:`Strong`."""
    text = markdown_escape(cell)
    return f"**{text}**" if isinstance(cell, Strong) else text


def markdown_table(header, rows) -> str:
    """A Markdown table; a ``(group, label)`` header cell is written ``group label``. Every cell
    is escaped (:func:`markdown_escape`): a ``|`` in a loss name cannot split a row."""
    header = [" ".join(cell) if isinstance(cell, tuple) else cell for cell in header]
    align = ["---:" if rows and all(numeric_cell(row[i]) for row in rows) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(map(markdown_escape, header)) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(map(markdown_cell, cells)) + " |" for cells in rows]
    return "\n".join(lines)


def settings_text(results: dict, name=markdown_escape) -> str:
    cases = {}
    for row in results["cases"]:
        cases.setdefault(row["dataset"], {}).setdefault(row["seed"], set()).add(row["case"])
    per_seed = ", ".join(f"{name(dataset)} {'/'.join(sorted({str(len(c)) for c in seeds.values()}))}"
                         for dataset, seeds in cases.items())
    empty = [row for row in results["summary"] if row["metric"] == results.get("primary_metric")
             and row.get("n_empty_reference")]
    empty_text = ""
    if empty:
        empty_text = (" Cases whose reference is empty are scored apart, not in the overlap means: "
                      + ", ".join(f"{name(r['dataset'])}/{name(r['loss'])} {r['n_false_positive']} of "
                                  f"{r['n_empty_reference']} with false positives" for r in empty) + ".")
    return (f"{len(results['runs'])} runs: {len(results['losses'])} losses × {len(results['datasets'])} "
            f"datasets × seeds {', '.join(map(str, results['seeds']))}; test cases per seed: {per_seed}. "
            + ("Mean ± std over seeds (each seed's mean over its test cases)" if len(results["seeds"]) > 1 else
               "Mean over the test cases (one seed: no spread over seeds; the intervals are in the comparison below)")
            + f"; best mean in bold.{empty_text} "
            f"{budget_text(results)}").strip()


def sections(results: dict, name=markdown_escape) -> list[tuple[str, str, tuple]]:
    """(title, explanation, (header, rows)) of every table, in report order. The titles and
    explanations are Markdown-like text (``*emphasis*``, backticks); the user-chosen names in them
    (the baseline loss) pass through ``name``, which makes them literal in the output format."""
    baseline = name(results["baseline"])
    sections = [("Results", settings_text(results, name), metric_table(results, MAIN_METRICS))]
    surface = [m for m in results["metrics"] if m not in MAIN_METRICS]
    if surface:
        sections.append(("Surface distances", "Mean ± std over seeds, in the units of the voxel spacing (mm for scans and phantoms); "
                         "lower is better. Where a distance is undefined (a class missing from the prediction or "
                         "the ground truth) it is left out of the mean; \"(k failed)\" counts the (seed, case) values "
                         "where a structure was missed or predicted where there is none (a structure absent from "
                         "both masks is right, not a failure). Bold marks the best among the losses with the "
                         "fewest failures, and the mean rank puts more failures below fewer.", metric_table(results, surface)))
    sections.append((f"Against {baseline}",
                     f"{design_text(results, name)} *not converged* / *degrading* / *not learned* / *collapsed* / "
                     f"*not assessable*: the cell (or its baseline) is not ready — no verdict.",
                     significance_table(results)))
    sections.append(("Ranking", f"On {METRIC_LABELS.get(results.get('primary_metric'), results.get('primary_metric'))}: "
                     "the rank of each loss's mean per dataset (1 = best) with its 95 % interval over "
                     "1,000 bootstrap draws of units and seeds (the blob plot shows the shares); the mean rank "
                     "over datasets is descriptive, not a test." + friedman_text(results), rank_table(results)))
    sections.append(("Cost", "Mean over seeds of each run's training cost (metrics.json). Peak memory is "
                     "torch.cuda.max_memory_allocated on a GPU; on a CPU it is the peak resident memory of the "
                     "process during that run (on Linux reset at the start of each run, elsewhere the process's "
                     "peak so far). On a CPU it includes what the process already held (torch, the data, memory "
                     "kept from earlier runs), so only large differences between losses mean something.", cost_table(results)))
    return sections


# ---------------------------------------------------------------- documents: REPORT.md, the
# self-contained report.html (tables and base64 figures) and results.csv
def render_markdown(results: dict, figures: dict[str, Path], dest: Path, sources) -> str:
    from urllib.parse import quote

    lines = ["# Loss benchmark", ""]
    for number, line in enumerate(banner_lines(results, str(sources[0]))):  # the readiness banner, a quote block
        lines += [">"] * (number > 0) + [f"> {line}"]
    lines += ["", "## Answer", ""]
    for line in answer_lines(results, markdown_escape):
        lines += [line, ""]
    lines += [f"Runs read from: {', '.join(markdown_code(s) for s in sources)}.", ""]
    for title, text, (header, rows) in sections(results):
        lines += [f"## {title}", "", text, "", markdown_table(header, rows), ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{markdown_escape(title)}]({quote(path.relative_to(dest).as_posix())})\n"
                  for title, path in figures.items()]
    if results["unfinished"]:
        lines += ["## Unfinished runs", "", "Not in the tables (no metrics.json yet):", ""]
        lines += [f"- {markdown_code(path)}" for path in results["unfinished"]] + [""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1500px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.2em;
margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}p.note{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:.3em .6em;white-space:nowrap}
th{background:#f4f6f8;text-align:center}th.group{border-bottom:2px solid #bbb}
td.better{color:#1a7f37}td.worse{color:#cf222e}td.equivalent{color:#0550ae}p.answer{font-size:1.05em}td.num{text-align:right}td.text{text-align:left}tr:nth-child(even) td{background:#fafbfc}
.scroll{overflow-x:auto}figure{margin:1.5em 0}figcaption{font-size:.9em;color:#555}img{max-width:100%}
code{background:#f4f6f8;padding:0 .2em}
.banner{border:2px solid;border-radius:6px;padding:.2em 1em;margin:1em 0}.banner.ready{border-color:#1a7f37;background:#f0fff4}
.banner.not-ready{border-color:#cf222e;background:#fff5f5}"""


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


def _html_banner(results: dict, sources) -> str:
    """The readiness banner (:func:`banner_lines`) as a coloured box."""
    import html
    import re

    ready = not cell_statuses(results)
    paragraphs = []
    for line in banner_lines(results, str(sources[0])):
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(line))
        paragraphs.append("<p>" + re.sub(r"`(.+?)`", r"<code>\1</code>", text) + "</p>")
    return f"<div class='banner {'ready' if ready else 'not-ready'}'>{''.join(paragraphs)}</div>"


def render_html(results: dict, figures: dict[str, Path], sources) -> str:
    import base64
    import html
    import re

    def cell(text: str, tag: str) -> str:
        escaped = f"<b>{html.escape(text)}</b>" if isinstance(text, Strong) else html.escape(text)
        kind = "num" if numeric_cell(text) else "text"
        kind += (" better" if text.endswith(" better") else " worse" if text.endswith(" worse") else
                 " equivalent" if text.endswith(" equivalent") else "")
        return f"<{tag} class='{kind}'>{escaped}</{tag}>"

    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>Loss benchmark</title>", f"<style>{_CSS}</style></head><body>", "<h1>Loss benchmark</h1>",
             _html_banner(results, sources), "<h2>Answer</h2>"]
    names: list[str] = []  # user-chosen names in the texts: placeholders through the markup, then escaped

    def name(value) -> str:
        names.append(str(value))
        return f"\x00{len(names) - 1}\x00"

    def literal(text: str) -> str:
        return re.sub(r"\x00(\d+)\x00", lambda match: html.escape(names[int(match[1])]), text)

    for line in answer_lines(results, name):
        bold = re.sub(r"[*](.+?)[*]", r"<b>\1</b>", html.escape(line))
        parts.append(f"<p class='answer'>{literal(bold)}</p>")
    parts += [f"<p class='note'>Runs read from: {', '.join('<code>' + html.escape(str(s)) + '</code>' for s in sources)}</p>"]
    for title, text, (header, rows) in sections(results, name):
        text = re.sub(r"\*(.+?)\*", r"<i>\1</i>", html.escape(text))
        text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
        parts += [f"<h2>{literal(html.escape(title))}</h2>", f"<p class='note'>{literal(text)}</p>",
                  "<div class='scroll'><table>", _html_header(header)]
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
        header += [f"{metric}_mean", f"{metric}_std_seeds", f"{metric}_std_cases", f"{metric}_difference",
                   f"{metric}_ci_low", f"{metric}_ci_high", f"{metric}_p_holm", f"{metric}_verdict"]
    header += list(COST_FIELDS)
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
                row += [s["mean"], s["std_seeds"], s["std_cases"], t.get("mean_difference"), t.get("ci_low"),
                        t.get("ci_high"), t.get("p_holm"),
                        t.get("verdict", "baseline" if loss == results["baseline"] else "")]
            row += [costs.get((dataset, loss), {}).get(name) for name in COST_FIELDS]
            writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


# ---------------------------------------------------------------- writing the report
def write_report(out_dirs, dest=None, baseline: str | None = None, metrics=DEFAULT_METRICS,
                 alpha: float = 0.05, figures: bool = True, overlays: bool = True, margins: dict | None = None) -> Path:
    """Analyse the runs under ``out_dirs`` and write results.json, results.csv, REPORT.md, the
    figures and report.html into ``dest`` (default: the first of ``out_dirs``). Returns the
    path of REPORT.md."""
    benchmark = find_runs(out_dirs)
    dest = Path(dest) if dest is not None else benchmark.out_dirs[0]
    results = analyse(benchmark, baseline=baseline, metrics=metrics, alpha=alpha, margins=margins)
    drawn = write_figures(results, benchmark.runs, dest, overlays=overlays) if figures else {}
    _io.write_json(dest / "results.json", results)
    _io.write_text(dest / "results.csv", render_csv(results))
    sources = [str(d) for d in benchmark.out_dirs]
    _io.write_text(dest / "report.html", render_html(results, drawn, sources))
    return _io.write_text(dest / "REPORT.md", render_markdown(results, drawn, dest, sources))


def main_table(dest) -> str:
    """The REPORT.md main table (as printed at the end of ``bench`` and ``report``)."""
    results = _io.read_json(Path(dest) / "results.json")
    return markdown_table(*metric_table(results, MAIN_METRICS))


def parse_alpha(text: str) -> float:
    """argparse type of ``--alpha``: a significance level in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a significance level in (0, 1) such as 0.05, got {text!r}")
    return value


def parse_metric(text: str) -> str:
    """argparse type of ``--metrics``: a registered metric name."""
    from medsegloss import metrics

    if text not in metrics.available():
        raise argparse.ArgumentTypeError(f"unknown metric {text!r}; registered: {', '.join(metrics.available())}")
    return text


def parse_margin(text: str) -> tuple[str, float]:
    """argparse type of ``--margin``: ``METRIC=VALUE`` with a registered metric and a finite value > 0."""
    import math

    from medsegloss import metrics

    name, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"--margin takes METRIC=VALUE (e.g. dice=0.02), got {text!r}")
    if name not in metrics.available():
        raise argparse.ArgumentTypeError(f"--margin {text!r}: unknown metric {name!r}; registered: "
                                         f"{', '.join(metrics.available())}")
    try:
        margin = float(value)
    except ValueError:
        margin = math.nan
    if not (math.isfinite(margin) and margin > 0):
        raise argparse.ArgumentTypeError(f"--margin {text!r}: the margin must be a finite number > 0")
    return name, margin


def check_dest(dest) -> None:
    """``--dest`` must be a folder (it is created when missing), not a file."""
    if dest is not None and Path(dest).exists() and not Path(dest).is_dir():
        raise ValueError(f"--dest {dest} is a file, not a folder")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="medsegloss report", description=__doc__.split("\n\n")[1].replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dirs", nargs="+", metavar="OUT", help="benchmark folder(s); shards are merged")
    parser.add_argument("--dest", help="folder to write the report into (default: the first OUT)")
    parser.add_argument("--baseline", help="the loss the others are tested against, one of the runs' losses "
                                           "(default: ce when the runs have it, else the first loss)")
    parser.add_argument("--metrics", nargs="+", type=parse_metric, default=list(DEFAULT_METRICS),
                        help="registered metrics to report (`medsegloss metrics` lists them)")
    parser.add_argument("--alpha", type=parse_alpha, default=0.05, help="significance level after Holm, in (0, 1) (default 0.05)")
    parser.add_argument("--margin", action="append", type=parse_margin, metavar="METRIC=VALUE",
                        help="practical-equivalence margin of a metric (repeatable), e.g. dice=0.02 or "
                             "pixel_error=0.002 (a fraction); default: the metric registry's (`medsegloss metrics`)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--no-overlays", action="store_true", help="skip the prediction overlays (no checkpoints read)")
    args = parser.parse_args(argv)
    try:
        check_dest(args.dest)
        path = write_report(args.out_dirs, args.dest, baseline=args.baseline, metrics=args.metrics,
                            alpha=args.alpha, figures=not args.no_figures, overlays=not args.no_overlays,
                            margins=dict(args.margin or []))
    except (ValueError, OSError) as error:
        print(f"medsegloss report: error: {error}", file=sys.stderr)
        return 2
    print(main_table(path.parent))
    print(f"\nreport: {path}  (and {path.parent / 'report.html'})")
    return 0
