"""The report's answer in words: per dataset, what the verdicts on the primary metric say, and
the design behind them (cross-validation, units, seeds, model selection). Plain text with
Markdown emphasis; user-chosen names pass through ``name`` (literal in the output format)."""

from __future__ import annotations

import math

from medsegloss.experiment.report.readiness import cell_statuses


def _signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}"


def _unit_label(metric: str) -> str:
    from medsegloss.experiment.report import METRIC_LABELS

    return METRIC_LABELS.get(metric, metric)


def _scale(metric: str) -> float:
    from medsegloss.experiment.report import PERCENT_METRICS

    return 100.0 if metric in PERCENT_METRICS else 1.0


def _amount(value: float, metric: str) -> str:
    """A difference in the metric's unit (pixel error in percentage points)."""
    scale = _scale(metric)
    digits = 2 if scale != 1.0 or metric in ("hd", "hd95", "assd", "masd") else 3
    unit = " pp" if scale != 1.0 else ""
    return f"{abs(value) * scale:.{digits}f}{unit}"


def dataset_answer(results: dict, dataset: str, name=str) -> str:
    """One paragraph: the primary metric's verdicts of every loss against the baseline on ``dataset``."""
    metric, baseline = results["primary_metric"], results["baseline"]
    label = _unit_label(metric)
    not_ready = [loss for (d, loss) in cell_statuses(results) if d == dataset]
    if not_ready:
        return (f"On {name(dataset)}: no answer yet — {len(not_ready)} of {len(results['losses'])} losses have runs "
                f"that are not ready ({', '.join(name(loss) for loss in not_ready)}; the banner says why).")
    tests = [t for t in results["tests"] if t["dataset"] == dataset and t["metric"] == metric]
    if not tests:
        return f"On {name(dataset)}: nothing to compare ({name(baseline)} is the only loss)."
    margin = results["margins"][metric]
    by_word: dict[str, list[dict]] = {}
    for test in tests:
        by_word.setdefault(test["verdict"], []).append(test)
    sentences = []
    if set(by_word) == {"equivalent"}:
        return (f"On {name(dataset)}: no loss differs from {name(baseline)} by more than {_amount(margin, metric)} "
                f"{label} (all *equivalent*).")
    for word in ("better", "worse"):
        for test in by_word.get(word, []):
            sentences.append(f"{name(test['loss'])} is *{word}* than {name(baseline)} by {_amount(test['mean_difference'], metric)} "
                             f"{label} (95 % CI {_signed(test['ci_low'] * _scale(metric))} to "
                             f"{_signed(test['ci_high'] * _scale(metric))}, p Holm {test['p_holm']:.3g})")
    if by_word.get("equivalent"):
        losses = ", ".join(name(t["loss"]) for t in by_word["equivalent"])
        sentences.append(f"{losses} {'is' if len(by_word['equivalent']) == 1 else 'are'} *equivalent* to "
                         f"{name(baseline)} (within ±{_amount(margin, metric)})")
    if by_word.get("inconclusive"):
        undecided = by_word["inconclusive"]
        detectable = [t["detectable"] for t in undecided if t.get("detectable") is not None
                      and not math.isnan(t["detectable"])]
        design = results.get("design", {}).get(dataset, {})
        size = f"{design.get('units', '?')} units and {design.get('runs_per_loss', '?')} runs per loss"
        tail = (f"; differences below {_amount(max(detectable), metric)} {label} are undetectable here"
                if detectable else "; one run per loss cannot tell training noise from a difference")
        sentences.append(f"*inconclusive* for {', '.join(name(t['loss']) for t in undecided)} — {size} cannot "
                         f"separate {'it' if len(undecided) == 1 else 'them'} from {name(baseline)} at a margin of "
                         f"{_amount(margin, metric)}{tail}")
    return f"On {name(dataset)} ({label}, the primary metric): " + "; ".join(sentences) + "."


def design_text(results: dict, name=str) -> str:
    """How the numbers were made: folds or split, units, seeds, the model tested, the test."""
    parts = []
    for dataset in results["datasets"]:
        design = results.get("design", {}).get(dataset)
        if not design:
            continue
        seeds = design.get("seeds") or []
        unit = "groups of cases (declared units)" if design.get("grouped") else "cases"
        how = (f"{design['folds']}-fold cross-validation (every case tested once per seed, by the model that did "
               f"not train on it)" if design.get("folds") else "one random train/validation/test split per seed")
        select = {"last": "the final weights", "best": "the best-validation checkpoint"}.get(design.get("select"),
                                                                                          "the best-validation checkpoint")
        parts.append(f"{name(dataset)}: {how}, {design.get('units')} independent {unit}, "
                     f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}, {design.get('runs_per_loss')} runs per loss; "
                     f"tested: {select}.")
    alpha = results["alpha"]
    return (" ".join(parts) + f" Differences are loss − {name(results['baseline'])}, averaged over cases and seeds, "
            f"with a 95 % interval that treats the cases of one model (a fold) and the repeats of one case (seeds) as "
            f"dependent (two-way cluster-robust t; docs/benchmark.md); p-values Holm-adjusted over the losses. "
            f"*better* / *worse*: p Holm < {alpha} and a difference beyond the metric's margin; *equivalent*: the "
            f"whole interval within ± the margin; *inconclusive*: neither. Margins: "
            + ", ".join(f"{_unit_label(m)} {_amount(v, m)}" for m, v in results.get("margins", {}).items()) + ".")


def answer_lines(results: dict, name=str) -> list[str]:
    """The report's first paragraphs: one answer per dataset, then the across-dataset line."""
    lines = [dataset_answer(results, dataset, name) for dataset in results["datasets"]]
    friedman = results.get("friedman") or {}
    if len(results["datasets"]) > 1 and friedman:
        if friedman.get("enough"):
            lines.append(f"Across the {friedman['datasets']} datasets (Friedman test on the mean "
                         f"{_unit_label(friedman['metric'])} ranks): p = {friedman['p_value']:.3g}; two losses differ "
                         f"only when their mean ranks differ by more than the critical difference "
                         f"{friedman['critical_difference']:.2f} (Nemenyi, Demšar 2006).")
        else:
            count, total = friedman["datasets"], len(results["datasets"])
            ready = f"{count} datasets are" if count == total else f"only {count} of the {total} datasets {'is' if count == 1 else 'are'} ready,"
            lines.append(f"Across datasets: {ready} too few for a test over datasets (Friedman needs at least 3): "
                         f"read the datasets one by one.")
    return lines
