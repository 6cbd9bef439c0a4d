"""Is the benchmark's verdict ready? The readiness banner, the budget line and the cell status.

A ranking of losses is a finding only where the runs behind it converged and did not collapse
(the rules of :mod:`medsegloss.experiment.verdict`, recorded per run in ``metrics.json``).
This module reads those records from ``results.json``'s runs and says, per (dataset, loss)
cell, whether it is ready, what budget the runs had, and the command that gives them more:
with a constant learning rate a finished run *continues* to a larger ``--steps`` (nothing is
retrained); with a schedule tied to the budget (poly, cosine) or an epoch budget the runs
*restart*, into a new folder.
"""

from __future__ import annotations

# statuses that make a cell's comparison no finding, worst first (verdict.STATUSES)
NOT_READY_STATUSES = ("collapsed", "not learned", "not converged", "degrading", "not assessable")
DEGENERATE = ("collapsed", "not learned")  # a cell is degenerate when most of its runs are


def _run_label(run: dict) -> str:
    return f"seed {run['seed']}" + (f" fold {run['fold']}" if run.get("fold") is not None else "")


def mean_curve(runs: list[dict]) -> list[tuple[int, float]]:
    """The mean validation curve of a cell's runs: at every step all of them validated with a
    defined score, the mean score."""
    import math

    curves = [{int(step): score for step, score in run.get("history") or []
               if score is not None and not math.isnan(score)} for run in runs]
    if not curves:
        return []
    steps = sorted(set.intersection(*(set(curve) for curve in curves)))
    return [(step, sum(curve[step] for curve in curves) / len(curves)) for step in steps]


def cell_readiness(runs: list[dict]) -> dict:
    """The readiness of one (dataset, loss) cell from its runs (results.json ``runs``): ``status``
    None (ready) or one of :data:`NOT_READY_STATUSES`; ``seeds``: ``{status: [run labels]}`` of the
    runs' own statuses that are not converged; ``trend``: the convergence numbers of the cell's
    mean validation curve.

    Rules (docs/benchmark.md): *collapsed* / *not learned* when more than half of the cell's runs
    are (a minority of degenerate runs is a finding about the loss: its metric counts them); else
    the trend rule (``verdict.convergence_summary``) on the **mean** curve of the runs, whose
    noise is the runs' noise over ``sqrt(runs)``: *not converged*, *degrading* or *not assessable*.
    """
    from medsegloss.experiment.verdict import convergence_summary

    labels: dict[str, list[str]] = {}
    for run in runs:
        status = (run.get("diagnostics") or {}).get("status")
        if status in NOT_READY_STATUSES:
            labels.setdefault(status, []).append(_run_label(run))
    status = next((s for s in DEGENERATE if len(labels.get(s, [])) > len(runs) / 2), None)
    totals = [(run.get("diagnostics") or {}).get("total_steps") or run.get("steps") for run in runs]
    totals = [int(t) for t in totals if t]
    tolerance = next(((run.get("diagnostics") or {}).get("tolerance") for run in runs
                      if (run.get("diagnostics") or {}).get("tolerance") is not None), 0.01)
    trend = convergence_summary(mean_curve(runs), min(totals), tolerance) if totals else {}
    if status is None and trend:
        if trend["not_converged"] is None:
            status = "not assessable"
        elif trend["not_converged"]:
            status = "not converged"
        elif trend["degrading"]:
            status = "degrading"
    return {"status": status, "seeds": labels, "runs": len(runs),
            "trend": {key: trend.get(key) for key in ("change", "change_low", "change_high",
                                                      "validations_last_quarter")}}


def cell_statuses(results: dict) -> dict[tuple[str, str], dict]:
    """``{(dataset, loss): cell_readiness(...)}`` for the cells that are not ready."""
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for run in results["runs"]:
        by_cell.setdefault((run["dataset"], run["loss"]), []).append(run)
    cells = {key: cell_readiness(runs) for key, runs in by_cell.items()}
    return {key: cell for key, cell in cells.items() if cell["status"] is not None}


def cell_status(cells: dict, baseline: str, dataset: str, loss: str) -> str | None:
    """What the paired-test cell of (dataset, loss) shows instead of better / worse, given
    ``cells`` (:func:`cell_statuses`): the loss's own status, else its baseline's (``"baseline
    collapsed"``), else None (a finding)."""
    if (dataset, loss) in cells:
        return cells[(dataset, loss)]["status"]
    baseline_cell = cells.get((dataset, baseline))
    return f"baseline {baseline_cell['status']}" if baseline_cell else None


def budgets(results: dict) -> list[dict]:
    """The distinct budgets of the runs (``metrics.json``'s ``"budget"``), with the datasets of each."""
    found: list[dict] = []
    for run in results["runs"]:
        budget = run.get("budget")
        if not budget:
            continue
        key = {k: budget.get(k) for k in ("planned_steps", "batch_size", "world_size", "schedule", "warmup_steps",
                                           "lr", "patch", "foreground_fraction", "augment", "val_every",
                                           "until_converged")}
        match = next((entry for entry in found if entry["budget"] == key), None)
        if match is None:
            found.append({"budget": key, "datasets": [run["dataset"]]})
        elif run["dataset"] not in match["datasets"]:
            match["datasets"].append(run["dataset"])
    return found


def budget_text(results: dict) -> str:
    """One sentence per distinct budget: steps, images seen, schedule, patch and sampling."""
    texts = []
    for entry in budgets(results):
        b = entry["budget"]
        images = b["planned_steps"] * b["batch_size"] * (b["world_size"] or 1)
        schedule = b["schedule"] + (f" after {b['warmup_steps']} warm-up steps" if b["warmup_steps"] else "")
        patch = f"{b['patch']}-pixel patches" if b["patch"] else "whole images"
        fraction = b["foreground_fraction"]
        sampling = (f"{fraction:.2g} of them centred on foreground" if fraction is not None else "")
        where = f" ({', '.join(entry['datasets'])})" if len(budgets(results)) > 1 else ""
        texts.append(f"Budget{where}: {b['planned_steps']} optimizer steps per run "
                     f"({images} training samples seen, batch {b['batch_size']}), {schedule} learning rate from "
                     f"{b['lr']:g}, {patch}, {sampling}, augmentation {'on' if b['augment'] else 'off'}; "
                     f"validated every {b['val_every']} steps"
                     + ("; early stopping (--until-converged)" if b["until_converged"] else "") + ".")
    return " ".join(texts)


def _bench_command(out: str) -> list[str] | None:
    """The arguments ``medsegloss bench`` was given for ``out`` (bench.json), if recorded."""
    from pathlib import Path

    from medsegloss import _io

    try:
        command = _io.read_json(Path(out) / "bench.json").get("command")
    except (OSError, ValueError, AttributeError):
        return None
    return command if isinstance(command, list) and all(isinstance(a, str) for a in command) else None


def _options_with(command: list[str] | None, **options: str) -> str:
    """``command`` (shell-quoted) with each ``--option value`` replaced or appended; without a
    recorded command, ``<the same options>`` stands for the user's flags."""
    import shlex

    if command is None:
        return "<the same options> " + " ".join(f"--{key} {shlex.quote(value)}" for key, value in options.items())
    kept, skip = [], False
    for argument in command:
        name = argument.split("=", 1)[0]
        if skip:
            skip = False
            continue
        if name in {f"--{key}" for key in options}:
            skip = "=" not in argument  # "--steps 500": drop the value too
            continue
        kept.append(argument)
    for key, value in options.items():
        kept += [f"--{key}", value]
    return shlex.join(kept)


def more_budget(results: dict, out: str, assessable: bool = True) -> dict:
    """The command that gives every run twice the steps, and whether the runs continue (constant
    learning rate: finished runs train on in ``out``) or restart (a schedule tied to the budget,
    or an epoch budget: a new folder). Not ``assessable`` (a cell with too few validations in
    the last quarter): the command also sets ``--val-every`` to a twentieth of the new budget,
    so its last quarter holds 5 validations, and the runs restart (a new interval is a new config)."""
    entries = budgets(results)
    steps = max((entry["budget"]["planned_steps"] for entry in entries), default=0) * 2 or None
    constant = bool(entries) and all(entry["budget"]["schedule"] == "constant" for entry in entries)
    stepped = all(run.get("step_budget", False) for run in results["runs"])
    continues = constant and stepped and assessable
    folder = out if continues else f"{out.rstrip('/')}-steps{steps}"
    options = {"steps": str(steps), "out": folder}
    if not assessable and steps:
        options["val-every"] = str(max(1, steps // 20))
    command = "medsegloss bench " + _options_with(_bench_command(out), **options)
    how = ("with the constant learning rate the finished runs continue from their last step to the new budget "
           "(nothing is retrained)" if continues else
           "too few validations in the last quarter to judge the trend, so the validation interval is a "
           "twentieth of the new budget and the runs restart (in a new folder)" if not assessable else
           "the learning-rate schedule is tied to the budget, so the runs restart (in a new folder)"
           if constant is False else "the runs have an epoch budget, so they restart (in a new folder)")
    return {"steps": steps, "continues": continues, "command": command, "how": how}


def readiness(results: dict, out: str) -> dict:
    """``{"ready", "cells": [{"dataset", "loss", "status", "seeds"}], "more_budget"}``."""
    cells = [{"dataset": dataset, "loss": loss, **cell} for (dataset, loss), cell in cell_statuses(results).items()]
    assessable = all(cell["status"] != "not assessable" for cell in cells)
    return {"ready": not cells, "cells": cells, "more_budget": more_budget(results, out, assessable)}


def _cell_text(cell: dict) -> str:
    from medsegloss.experiment.report import markdown_code  # names are user text: code spans

    trend = cell["trend"]
    if cell["status"] in DEGENERATE:
        runs = cell["seeds"][cell["status"]]
        why = f"{cell['status']} in {len(runs)} of {cell['runs']} runs: {', '.join(runs)}"
    elif trend.get("change") is not None:
        why = (f"{cell['status']}: its mean validation Dice moved {trend['change']:+.3f} over the last quarter "
               f"(95 % bounds {trend['change_low']:+.3f} to {trend['change_high']:+.3f})")
    else:
        why = f"{cell['status']}: {trend.get('validations_last_quarter') or 0} validations in the last quarter (4 needed)"
    return f"{markdown_code(cell['dataset'])} / {markdown_code(cell['loss'])} ({why})"


def banner_lines(results: dict, out: str) -> list[str]:
    """The banner at the top of REPORT.md (Markdown paragraphs; report.html renders the same text)."""
    state = readiness(results, out)
    cells, more = state["cells"], state["more_budget"]
    total = len(results["datasets"]) * len(results["losses"])
    if not cells:
        return ["**Verdict ready**: every cell converged (its mean validation curve flat in the last quarter) and "
                "none is degenerate (the rules in docs/benchmark.md).",
                budget_text(results)]
    return [f"**Verdict not ready**: {len(cells)} of {total} (dataset, loss) cells are not converged (their mean "
            "validation curve still rising in the last quarter of the budget), degrading (falling), not learned "
            "or collapsed (most runs predict no foreground, or a degenerate segmentation) or not assessable: "
            + "; ".join(_cell_text(cell) for cell in cells) + ". Their paired tests show that status "
            "instead of better / worse: a ranking of such runs is no finding.",
            f"Give every run more budget (the whole sweep, so the comparison stays fair): `{more['command']}` "
            f"— {more['how']}.",
            budget_text(results)]


def readiness_line(out) -> str | None:
    """The final line of ``medsegloss bench`` when the verdict of ``out``'s report is not ready."""
    from pathlib import Path

    from medsegloss import _io

    results = _io.read_json(Path(out) / "results.json")
    state = readiness(results, str(out))
    if state["ready"]:
        return None
    return (f"bench: verdict NOT READY: {len(state['cells'])} (dataset, loss) cells have unconverged, unlearned or collapsed "
            f"runs (REPORT.md lists them); more budget: {state['more_budget']['command']}")
