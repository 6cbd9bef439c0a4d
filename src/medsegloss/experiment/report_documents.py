"""The report's documents: ``REPORT.md``, the self-contained ``report.html`` (tables and base64
figures) and ``results.csv``, each rendered from ``report.analyse``'s results."""

from __future__ import annotations

from pathlib import Path

from medsegloss.experiment import stats
from medsegloss.experiment.report_tables import markdown_table, numeric_cell, sections


def render_markdown(results: dict, figures: dict[str, Path], dest: Path, sources) -> str:
    lines = ["# Loss benchmark", "", f"Runs read from: {', '.join(f'`{s}`' for s in sources)}.", ""]
    for title, text, (header, rows) in sections(results):
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
        kind = "num" if numeric_cell(text) else "text"
        kind += " better" if text.endswith(" better") else " worse" if text.endswith(" worse") else ""
        return f"<{tag} class='{kind}'>{escaped}</{tag}>"

    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>Loss benchmark</title>", f"<style>{_CSS}</style></head><body>", "<h1>Loss benchmark</h1>",
             f"<p class='note'>Runs read from: {', '.join('<code>' + html.escape(str(s)) + '</code>' for s in sources)}</p>"]
    for title, text, (header, rows) in sections(results):
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
