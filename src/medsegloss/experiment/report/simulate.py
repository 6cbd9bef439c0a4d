"""Benchmarks with a known truth: simulated per-case differences between two losses, to measure
the false-positive rate and the power of a verdict design (``benchmarks/verdict.py`` prints the
tables of docs/benchmark.md; the tests assert their bounds).

The model of one sweep (the structure measured on the default sweep, ``docs/benchmark.md``): ``n``
units (cases), ``seeds`` repetitions; the per-case difference (loss − baseline) under seed ``s``
is ``Δ + a_case + u_run + e`` where ``a_case`` persists across seeds (some cases favour one loss),
``u_run`` is shared by every case that one trained model (a fold, or a seed's single split)
scored, and ``e`` is the rest; each part has heavy (Student t₃) tails. ``sd`` is the total
standard deviation, ``case_share`` and ``run_share`` (the ICC) the shares of its variance.
"""

from __future__ import annotations

import numpy as np

DESIGNS = ("cv", "split")


def _t3(rng, size) -> np.ndarray:
    """Student t₃ draws scaled to unit variance (t₃'s variance is 3)."""
    return rng.standard_t(3, size) / np.sqrt(3.0)


def simulate_sweep(rng, *, design: str = "cv", units: int = 20, folds: int = 5, seeds: int = 1,
                   test_units: int = 4, delta: float = 0.0, sd: float = 0.032, case_share: float = 0.24,
                   run_share: float = 0.3) -> dict:
    """One simulated sweep's paired differences: ``{"differences", "units", "runs"}`` (one entry
    per test observation, the inputs of ``statistics.paired_difference``).

    ``design="cv"``: every unit tested once per seed, in one of ``folds`` folds (a fresh fold
    assignment per seed); ``"split"``: each seed tests ``test_units`` random units with one model
    (the former 60/20/20 split per seed).
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    if not 0 <= case_share and 0 <= run_share and case_share + run_share <= 1:
        raise ValueError(f"case_share and run_share must be >= 0 with a sum <= 1, got {case_share}, {run_share}")
    rest = 1.0 - case_share - run_share
    case_effect = sd * np.sqrt(case_share) * _t3(rng, units)
    differences, unit_ids, run_ids = [], [], []
    for seed in range(seeds):
        if design == "cv":
            fold_of = rng.permutation(units) % folds
            tested = np.arange(units)
        else:
            tested = rng.choice(units, size=test_units, replace=False)
            fold_of = np.zeros(units, dtype=int)
        run_effect = sd * np.sqrt(run_share) * _t3(rng, folds if design == "cv" else 1)
        noise = sd * np.sqrt(rest) * _t3(rng, len(tested))
        values = delta + case_effect[tested] + run_effect[fold_of[tested]] + noise
        differences += values.tolist()
        unit_ids += [f"c{u}" for u in tested]
        run_ids += [f"s{seed}/f{fold_of[u]}" for u in tested]
    return {"differences": differences, "units": unit_ids, "runs": run_ids}


def rejection_rate(test, trials: int, seed: int = 0, **settings) -> float:
    """The share of ``trials`` simulated sweeps (:func:`simulate_sweep` with ``settings``) in
    which ``test(sweep) -> bool`` rejects (says "different")."""
    rng = np.random.default_rng(seed)
    return float(np.mean([bool(test(simulate_sweep(rng, **settings))) for _ in range(trials)]))


def cluster_t_rejects(sweep: dict, alpha: float = 0.05) -> bool:
    """The report's test: the two-way cluster-robust t over units and runs."""
    from medsegloss.experiment.report.statistics import paired_difference

    p = paired_difference(sweep["differences"], sweep["units"], sweep["runs"], alpha)["p_value"]
    return bool(p < alpha)


def pooled_wilcoxon_rejects(sweep: dict, alpha: float = 0.05) -> bool:
    """The former report's test: Wilcoxon signed-rank over every (seed, case) pair as if independent."""
    from medsegloss.experiment.report.statistics import wilcoxon_p

    return bool(wilcoxon_p(sweep["differences"]) < alpha)


def unit_wilcoxon_rejects(sweep: dict, alpha: float = 0.05) -> bool:
    """Wilcoxon over the units' seed-averaged differences (independent units, but each fold's
    cases share one model)."""
    from collections import defaultdict

    from medsegloss.experiment.report.statistics import wilcoxon_p

    per_unit = defaultdict(list)
    for difference, unit in zip(sweep["differences"], sweep["units"]):
        per_unit[unit].append(difference)
    return bool(wilcoxon_p([float(np.mean(v)) for v in per_unit.values()]) < alpha)
