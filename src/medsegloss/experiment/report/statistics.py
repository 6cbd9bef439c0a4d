"""The statistics of a verdict: a paired difference with the right unit, practical equivalence,
multiplicity, and rankings with their uncertainty. Pure functions of plain arrays; the design is
documented (with its simulated false-positive rate and power) in ``docs/benchmark.md``.

**The paired difference** (:func:`paired_difference`). Each observation is one test case scored
by one pair of runs (the loss and the baseline trained on the same seed and fold, so on the same
cases), ``d = loss - baseline``. Observations are not independent twice over: a case (or a
patient, a slab: the *unit*) recurs across seeds, and the cases of one fold share one trained
model, whose luck moves all of them. The mean difference gets a **two-way cluster-robust
standard error** (Cameron, Gelbach & Miller 2011) over units and runs:
``V = V_units + V_runs - V_units∩runs``, each ``V_g = G/(G-1) · Σ_g (Σ_i∈g e_i)² / N²`` with
``e = d - mean``, and Student's t with ``min(units, runs) - 1`` degrees of freedom for the
interval and the p-value. With one seed it is the t-test on the folds' means; with a
random split per seed it is the t-test on the seeds' means; every case counted once per seed.
A plain Wilcoxon over (seed, case) pairs treats them as independent and says "significant" far
more often than its level when there is no difference (docs/benchmark.md: 18 % at 5 %).

**The verdict word** (:func:`verdict_word`), with ``δ`` the metric's practical margin and the
difference oriented so that positive is better: *better* / *worse* when the Holm-adjusted p is
below α **and** the estimate exceeds ``δ``; *equivalent* when the whole (1 - α) interval lies
inside ``±δ``; else *inconclusive*, with the smallest difference these data could detect
(:func:`detectable_difference`: 80 % power at α).

**Rankings** (:func:`bootstrap_ranks`): a hierarchical bootstrap (units with replacement, then
seeds with replacement) of the per-loss means, ranked in each draw: the share of draws at each
rank, a 95 % rank interval and Kendall's τ to the full-data ranking (challengeR, Wiesenfarth et
al. 2021). Across datasets, :func:`friedman` gives the Friedman test and the Nemenyi critical
difference of mean ranks (Demšar 2006).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

VERDICTS = ("better", "worse", "equivalent", "inconclusive")
POWER = 0.8  # the power at which the detectable difference is stated


def _cluster_sum_squares(residuals: np.ndarray, labels: Sequence) -> tuple[float, int]:
    """``Σ_g (Σ_{i in g} e_i)²`` over the clusters ``labels`` name, and their number."""
    _, index = np.unique(np.asarray([str(label) for label in labels]), return_inverse=True)
    sums = np.bincount(index, weights=residuals)
    return float((sums ** 2).sum()), len(sums)


def paired_difference(differences, units: Sequence, runs: Sequence, alpha: float = 0.05) -> dict:
    """Mean of paired ``differences`` (one per test case and run pair) with a two-way
    cluster-robust interval over ``units`` (the independent case, patient or slab of each
    observation) and ``runs`` (the run pair that scored it: seed and fold).

    Returns ``{"n": observations, "n_units", "n_runs", "mean", "se", "df", "ci_low", "ci_high",
    "p_value"}``; ``se``/``ci``/``p`` are NaN when the data cannot estimate them (one run or one
    unit: nothing tells training noise from a real difference). NaN differences are dropped.

    >>> result = paired_difference([0.1, 0.3, 0.2, 0.4], units=["a", "b", "a", "b"], runs=[0, 0, 1, 1])
    >>> round(result["mean"], 3), result["n_units"], result["n_runs"], result["df"]
    (0.25, 2, 2, 1)
    """
    values = np.asarray(differences, dtype=np.float64)
    if values.ndim != 1 or len(units) != len(values) or len(runs) != len(values):
        raise ValueError(f"differences, units and runs must be 1-D of one length, got {values.shape}, "
                         f"{len(units)} and {len(runs)}")
    keep = ~np.isnan(values)
    values = values[keep]
    units = [str(u) for u, k in zip(units, keep) if k]
    runs = [str(r) for r, k in zip(runs, keep) if k]
    result = {"n": int(values.size), "n_units": len(set(units)), "n_runs": len(set(runs)), "mean": math.nan,
              "se": math.nan, "df": 0, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    if values.size == 0:
        return result
    mean = float(values.mean())
    result["mean"] = mean
    g_units, g_runs = result["n_units"], result["n_runs"]
    if g_units < 2 or g_runs < 2:
        return result
    residuals = values - mean
    n2 = float(values.size) ** 2
    ss_units, _ = _cluster_sum_squares(residuals, units)
    ss_runs, _ = _cluster_sum_squares(residuals, runs)
    ss_cells, g_cells = _cluster_sum_squares(residuals, [f"{u}\t{r}" for u, r in zip(units, runs)])
    v_units = g_units / (g_units - 1) * ss_units / n2
    v_runs = g_runs / (g_runs - 1) * ss_runs / n2
    v_cells = (g_cells / (g_cells - 1) * ss_cells / n2) if g_cells > 1 else 0.0
    variance = v_units + v_runs - v_cells
    if not variance > 0:  # the difference of estimates can fall below zero: keep the larger one-way part
        variance = max(v_units, v_runs)
    df = min(g_units, g_runs) - 1
    result["df"] = df
    if not variance > 0:  # every difference equal: no spread, the difference is exact
        result.update(se=0.0, ci_low=mean, ci_high=mean, p_value=1.0 if mean == 0 else 0.0)
        return result
    from scipy.stats import t as student_t

    se = math.sqrt(variance)
    quantile = float(student_t.ppf(1 - alpha / 2, df))
    result.update(se=se, ci_low=mean - quantile * se, ci_high=mean + quantile * se,
                  p_value=float(2 * student_t.sf(abs(mean) / se, df)))
    return result


def detectable_difference(se: float, df: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true difference a two-sided t-test at ``alpha`` detects with ``power``:
    ``(t_{1-α/2} + t_{power}) · se`` (NaN when ``se`` is NaN or ``df < 1``)."""
    if not (df >= 1 and math.isfinite(se)):
        return math.nan
    from scipy.stats import t as student_t

    return float((student_t.ppf(1 - alpha / 2, df) + student_t.ppf(power, df)) * se)


def verdict_word(gain: float, ci_low: float, ci_high: float, p_holm: float, margin: float,
                 alpha: float = 0.05) -> str:
    """``better`` / ``worse`` / ``equivalent`` / ``inconclusive`` for a difference oriented so that
    positive is better (``gain`` and its interval ``[ci_low, ci_high]``), its Holm-adjusted p and
    the metric's practical ``margin``.

    >>> verdict_word(0.05, 0.02, 0.08, 0.01, 0.01), verdict_word(0.002, -0.004, 0.008, 0.5, 0.01)
    ('better', 'equivalent')
    >>> verdict_word(0.005, 0.001, 0.009, 0.01, 0.01), verdict_word(-0.03, -0.09, 0.03, 0.3, 0.01)
    ('equivalent', 'inconclusive')
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin!r}")
    if math.isnan(gain):
        return "inconclusive"
    if not math.isnan(p_holm) and p_holm < alpha and abs(gain) > margin:
        return "better" if gain > 0 else "worse"
    if not (math.isnan(ci_low) or math.isnan(ci_high)) and -margin < ci_low and ci_high < margin:
        return "equivalent"
    return "inconclusive"


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values (Holm, 1979), in the input order.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``:
    ``adjusted_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))``. Rejecting where the adjusted
    value is below ``alpha`` controls the family-wise error rate at ``alpha``. NaN entries (no
    test possible) stay NaN and do not count in ``m``.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    values = [float(p) for p in p_values]
    for p in values:
        if not math.isnan(p) and not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    order = sorted((i for i, p in enumerate(values) if not math.isnan(p)), key=lambda i: values[i])
    adjusted = [math.nan] * len(values)
    running_max = 0.0
    for rank, index in enumerate(order):
        running_max = max(running_max, min(1.0, (len(order) - rank) * values[index]))
        adjusted[index] = round(running_max, 15)  # keep 3 * 0.01 == 0.03 readable
    return adjusted


def wilcoxon_p(differences) -> float:
    """Two-sided Wilcoxon signed-rank p of unit-level differences (NaN dropped; 1 when all are
    zero; NaN with none): a distribution-free companion of the cluster t, valid only when the
    units are independent (one model per unit), reported for reference."""
    values = np.asarray([d for d in differences if not math.isnan(d)], dtype=np.float64)
    if values.size == 0:
        return math.nan
    if not np.any(values != 0):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(values).pvalue)


# ---------------------------------------------------------------- rankings
def _ranks(means: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Ranks (1 = best, ties averaged) of each row of ``means`` (draws x losses); NaN ranks last."""
    from scipy.stats import rankdata

    signed = np.where(np.isnan(means), np.inf, -means if higher_is_better else means)
    return rankdata(signed, axis=-1, method="average")


def bootstrap_ranks(values: np.ndarray, higher_is_better: bool, draws: int = 1000, seed: int = 0) -> dict:
    """The ranking of the losses under a hierarchical bootstrap.

    Args:
        values: ``(losses, units, seeds)`` scores (NaN where missing), e.g. the mean Dice of
            every test unit under every seed.
        higher_is_better: the metric's direction.

    Each draw resamples the units with replacement, then the seeds with replacement, and ranks the
    losses by their mean over the drawn (unit, seed) values. Returns ``{"rank": full-data rank
    per loss, "shares": (losses, losses) share of draws at each rank 1..L, "low", "high": the
    2.5 % / 97.5 % rank quantiles per loss, "kendall_tau": the median τ of a draw's ranking to
    the full one, "draws"}``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3 or values.shape[1] < 1 or values.shape[2] < 1:
        raise ValueError(f"values must be (losses, units, seeds) with units and seeds >= 1, got {values.shape}")
    losses, units, seeds = values.shape
    rng = np.random.default_rng(seed)
    full = _ranks(np.nanmean(values, axis=(1, 2))[None], higher_is_better)[0]
    unit_draws = rng.integers(0, units, (draws, units))
    seed_draws = rng.integers(0, seeds, (draws, seeds))
    means = np.empty((draws, losses))
    for b in range(draws):
        sample = values[:, unit_draws[b]][:, :, seed_draws[b]]
        with np.errstate(invalid="ignore"), _quiet():
            means[b] = np.nanmean(sample, axis=(1, 2))
    ranks = _ranks(means, higher_is_better)
    positions = np.clip(np.ceil(ranks).astype(int), 1, losses)  # a tie at 1.5 counts at rank 2
    shares = np.stack([(positions == r).mean(0) for r in range(1, losses + 1)], axis=1)
    from scipy.stats import kendalltau

    taus = np.asarray([kendalltau(full, row).statistic if losses > 1 else 1.0 for row in ranks[: min(draws, 500)]],
                      dtype=np.float64)
    tau = float(np.median(taus[~np.isnan(taus)])) if (~np.isnan(taus)).any() else math.nan  # NaN: all tied
    return {"rank": full.tolist(), "shares": shares.tolist(), "low": np.quantile(ranks, 0.025, axis=0).tolist(),
            "high": np.quantile(ranks, 0.975, axis=0).tolist(),
            "kendall_tau": tau, "draws": draws}


class _quiet:
    """Silence NumPy's "mean of empty slice" warning (a loss without values in a draw is NaN)."""

    def __enter__(self):
        import warnings

        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        self._catcher.__exit__(*exc)


def friedman(means: np.ndarray, higher_is_better: bool, alpha: float = 0.05) -> dict:
    """Friedman's test over datasets and the Nemenyi critical difference (Demšar 2006).

    ``means``: ``(datasets, losses)`` scores (one metric). Returns ``{"datasets": N, "losses": k,
    "mean_ranks", "statistic": χ²_F, "p_value", "critical_difference": q_α·sqrt(k(k+1)/(6N)),
    "enough": N >= 3}``; with fewer than 3 datasets (or 2 losses) the test is not run (NaN) — too
    few datasets to tell methods apart.
    """
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2:
        raise ValueError(f"means must be (datasets, losses), got shape {means.shape}")
    n, k = means.shape
    ranks = _ranks(means, higher_is_better) if n else np.zeros((0, k))
    result = {"datasets": n, "losses": k, "mean_ranks": ranks.mean(0).tolist() if n else [math.nan] * k,
              "statistic": math.nan, "p_value": math.nan, "critical_difference": math.nan,
              "enough": n >= 3 and k >= 2}
    if not result["enough"]:
        return result
    from scipy.stats import chi2, studentized_range

    mean_ranks = ranks.mean(0)
    statistic = 12 * n / (k * (k + 1)) * (np.sum(mean_ranks ** 2) - k * (k + 1) ** 2 / 4)
    q_alpha = float(studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    result.update(statistic=float(statistic), p_value=float(chi2.sf(statistic, k - 1)),
                  critical_difference=q_alpha * math.sqrt(k * (k + 1) / (6 * n)))
    return result
