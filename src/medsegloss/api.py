"""medsegloss from Python: the benchmark, a training run and a report, with the results as tables.

``medsegloss.bench.run(...)`` is ``medsegloss bench`` (the same defaults and checks: its keyword
arguments become the command's options, parsed by the same parser), ``medsegloss.train(...)`` is
``medsegloss train`` and ``medsegloss.report(OUT)`` is ``medsegloss report OUT``; the first and
last return :class:`Results`, the report read back as tables (docs/python.md)::

    import medsegloss

    results = medsegloss.bench.run(losses=["ce", "dice_ce"], datasets=["phantom-lesion"], out="runs/mine")
    results.verdict.ready, results.verdict.answer   # is it a finding, and what it says
    results.table()                                 # one row per (dataset, loss, seed, fold, case, metric)
    results.paired()                                # every loss against the baseline
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

TABLE_COLUMNS = ("dataset", "loss", "seed", "fold", "case", "unit", "metric", "value")
# medsegloss bench options that bench.run does not take: a sweep split over machines is a job for the command line
NOT_IN_RUN = ("shard", "no_report")


def _frame(rows: list[dict], columns=None):
    """A pandas DataFrame of ``rows`` when pandas is installed (the ``pandas`` extra), else the rows."""
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows, columns=list(columns) if columns else None)


def _number(value):
    return math.nan if value is None else value  # results.json writes NaN as null


@dataclass(frozen=True)
class Verdict:
    """Whether the benchmark's comparison is a finding, and what it says."""

    ready: bool  # every (dataset, loss) cell converged and none is degenerate
    answer: list[str]  # the report's answer, a paragraph per dataset (Markdown emphasis)
    not_ready: list[dict] = field(default_factory=list)  # the cells that are not: dataset, loss, status, ...
    more_budget: dict = field(default_factory=dict)  # the command that gives every run more steps

    def __str__(self) -> str:
        head = "verdict ready" if self.ready else (
            f"verdict NOT READY ({len(self.not_ready)} cells); more budget: {self.more_budget.get('command')}")
        return "\n".join([head, *self.answer])


class Results:
    """A benchmark's report (``results.json``) as tables; pandas DataFrames when pandas is
    installed, else lists of dicts. ``data`` is the whole ``results.json``; ``failed``: the runs
    that failed (run folder, error)."""

    def __init__(self, data: dict, out, failed=()):
        self.data, self.out, self.failed = data, Path(out), list(failed)

    @classmethod
    def read(cls, out, failed=()) -> Results:
        """The report in ``out`` (its ``results.json``, written by ``medsegloss bench`` or ``report``)."""
        from medsegloss import _io

        path = Path(out) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: write the report first (medsegloss.report({str(out)!r}))")
        return cls(_io.read_json(path), out, failed)

    def table(self):
        """Tidy: one row per dataset, loss, seed, fold, test case and metric, with the case's
        ``unit`` (the independent unit it belongs to) and its ``value`` (averaged over the classes
        present in its reference; NaN where undefined)."""
        rows = [{**{key: case[key] for key in TABLE_COLUMNS[:6]}, "metric": metric, "value": _number(case.get(metric))}
                for case in self.data["cases"] for metric in self.data["metrics"]]
        return _frame(rows, TABLE_COLUMNS)

    def summary(self):
        """Per dataset, loss and metric: mean, std over seeds and over cases, counts (the main table's numbers)."""
        return _frame([{key: _number(value) for key, value in row.items()} for row in self.data["summary"]])

    def paired(self):
        """Every loss against the baseline, per dataset and metric: the mean paired difference, its
        95 % interval, p (Holm-adjusted), the margin and the verdict word."""
        return _frame([{key: _number(value) for key, value in row.items()} for row in self.data["tests"]])

    def ranks(self):
        """The descriptive mean rank of each loss (best first) and its rank per dataset/metric."""
        return _frame([{"loss": row["loss"], "mean_rank": row["mean_rank"], **row["ranks"]}
                       for row in self.data["ranks"]])

    @property
    def verdict(self) -> Verdict:
        from medsegloss.experiment.report.answer import answer_lines
        from medsegloss.experiment.report.readiness import readiness

        state = readiness(self.data, str(self.out))
        return Verdict(state["ready"], answer_lines(self.data), state["cells"], state["more_budget"])

    def __repr__(self) -> str:
        from medsegloss.experiment.report import MAIN_METRICS, markdown_table, metric_table

        failed = f"\n{len(self.failed)} runs failed: " + "; ".join(f"{d}: {e}" for d, e in self.failed) if self.failed else ""
        return (f"Results of {self.out}: {self.verdict}\n\n"
                + markdown_table(*metric_table(self.data, MAIN_METRICS)) + failed)

    def _repr_html_(self) -> str:
        """In a notebook: the readiness banner, the answer and the main table."""
        import html
        import re

        from medsegloss.experiment.report import (MAIN_METRICS, Strong, _html_banner, _html_header, metric_table,
                                                  numeric_cell)
        from medsegloss.experiment.report.answer import answer_lines

        names: list[str] = []  # user-chosen names: placeholders through the markup, then escaped

        def name(value) -> str:
            names.append(str(value))
            return f"\x00{len(names) - 1}\x00"

        parts = [f"<div class='medsegloss-results'><p><b>{html.escape(str(self.out))}</b></p>",
                 _html_banner(self.data, [str(self.out)])]
        for line in answer_lines(self.data, name):
            text = re.sub(r"[*](.+?)[*]", r"<em>\1</em>", html.escape(line))
            parts.append("<p>" + re.sub(r"\x00(\d+)\x00", lambda m: html.escape(names[int(m[1])]), text) + "</p>")
        header, rows = metric_table(self.data, MAIN_METRICS)
        parts += ["<table>", _html_header(header)]
        for cells in rows:
            parts.append("<tr>" + "".join(
                f"<td style='text-align:{'right' if numeric_cell(c) else 'left'}'>"
                + (f"<b>{html.escape(c)}</b>" if isinstance(c, Strong) else html.escape(c)) + "</td>"
                for c in cells) + "</tr>")
        parts.append("</table>")
        if self.failed:
            parts.append(f"<p>{len(self.failed)} runs failed: "
                         + "; ".join(html.escape(f"{d}: {e}") for d, e in self.failed) + "</p>")
        return "\n".join(parts) + "</div>"


# ---------------------------------------------------------------- the benchmark
def run(losses=None, datasets=None, seeds=None, out="runs/bench", *, preset: str = "default", baseline=None,
        margins=None, jobs=None, dataset_options=None, quiet: bool = False, figures: bool = True,
        **settings) -> Results:
    """Run ``medsegloss bench`` and return its report as :class:`Results`.

    ``losses``: registry names or ``build()`` strings, or ``{"name": ..., **options}`` dicts;
    ``datasets``: registry names, or a dict ``{name: {"kind": ..., "root": ..., **options}}``
    (``kind`` defaults to the name); ``seeds``: ints; ``margins``: ``{metric: margin}``;
    ``settings``: experiment settings (config fields, e.g. ``steps=1000, folds=5``). Omitted ones
    take ``medsegloss bench``'s defaults (``preset``); every value is checked before any work, a
    bad one is a ValueError naming it. ``jobs > 1`` (default: as the command, the cores) trains
    in spawned worker processes, also from a script without an ``if __name__ == "__main__":``
    guard (see :func:`_workers_without_script`). ``figures=False`` skips the report's figures.
    Finished runs in ``out`` are skipped; ``out/sweep.toml`` records the resolved sweep.
    """
    from medsegloss.experiment import bench, sweepfile
    from medsegloss.experiment.report import write_report

    values = {key: value for key, value in {
        "preset": preset, "out": str(out), "losses": losses, "datasets": datasets, "seeds": seeds,
        "baseline": baseline, "margins": margins, "jobs": jobs, "dataset_options": dataset_options}.items()
        if value is not None}
    values.update({"quiet": True} if quiet else {}, **settings)
    allowed = [key for key in [*sweepfile.SWEEP_KEYS, *sweepfile.config_types()] if key not in NOT_IN_RUN]
    sweepfile.check(values, sweepfile.Source("medsegloss.bench.run"), allowed=allowed)
    argv = sweepfile.arguments(values)
    args = _parse(bench.build_parser(), argv)
    base, datasets, losses, seeds, roots = bench.sweep_from_args(args)
    jobs = args.jobs if args.jobs is not None else bench.default_jobs(base.threads)
    out = Path(args.out)
    with _workers_without_script(jobs):
        outcome = bench.run_sweep(base, datasets, losses, seeds, out, roots=roots, quiet=args.quiet, jobs=jobs,
                                  named=args.named_datasets, command=argv)
    sweepfile.write_resolved(out, args, base, datasets, losses, seeds, roots)
    write_report([out], out, baseline=args.baseline, margins=dict(args.margin or []), figures=figures,
                 overlays=figures)
    return Results.read(out, failed=[(str(job.run_dir(out)), error) for job, error in outcome["failed"]])


def _parse(parser, argv):
    """``argv`` parsed by ``parser``; a bad value is a ValueError (argparse would exit)."""
    def error(message):
        raise ValueError(f"medsegloss.bench.run: {message}")

    parser.error = error
    return parser.parse_args(argv)


@contextlib.contextmanager
def _workers_without_script(jobs: int):
    """Start the sweep's worker processes without the caller's script.

    Workers are spawned (torch is not fork-safe), and a spawned process first re-runs the
    parent's ``__main__`` script: in a script without an ``if __name__ == "__main__":`` guard that
    is this very call again, which multiprocessing refuses in every worker. The workers need only
    medsegloss, so while they start, ``__main__`` shows no file to re-run. Unless the script
    registered losses of its own: the workers need those, so they re-run it (then it needs the
    guard, as every multiprocessing script does; docs/python.md).
    """
    main = sys.modules.get("__main__")
    if jobs <= 1 or main is None or _registers_losses(main):
        yield
        return
    saved = {key: main.__dict__[key] for key in ("__file__", "__spec__") if key in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _registers_losses(module) -> bool:
    from medsegloss import losses

    return any(getattr(losses.info(name).factory, "__module__", None) == module.__name__
               for name in losses.available())


# ---------------------------------------------------------------- one run, a report
def train(loss=None, dataset=None, *, preset: str = "default", quiet: bool = False, **settings) -> dict:
    """Train one run (``medsegloss train``: the same defaults, from ``preset``) and return its
    ``metrics.json`` (test rows and summary, diagnostics, budget, cost) with ``"out"``, its run
    folder. ``settings``: config fields (``steps=200, out="runs/x"``); a finished run returns
    its stored result, an unfinished one resumes."""
    from medsegloss.experiment.config import Config
    from medsegloss.experiment.trainer import fit

    given = {key: value for key, value in (("loss", loss), ("dataset", dataset)) if value is not None}
    config = Config.preset(preset, **given, **settings)
    return {**fit(config, config.run_dir, quiet=quiet), "out": config.run_dir}


def report(*out_dirs, dest=None, baseline=None, metrics=None, alpha: float = 0.05, margins=None,
           figures: bool = True) -> Results:
    """Write the report of the runs under ``out_dirs`` (``medsegloss report``: shards are merged)
    into ``dest`` (default: the first) and return it as :class:`Results`."""
    from medsegloss.experiment.report import DEFAULT_METRICS, write_report

    if not out_dirs:
        raise ValueError("medsegloss.report needs at least one benchmark folder")
    path = write_report(list(out_dirs), dest, baseline=baseline, metrics=metrics or DEFAULT_METRICS, alpha=alpha,
                        figures=figures, overlays=figures, margins=margins)
    return Results.read(path.parent)
