"""Is a run's result a finding? Stated rules for "not converged", "degrading", "not learned" and
"collapsed", early stopping, and a step time robust to a busy machine. Pure functions of what a
run records.

A ranking of losses is only a finding when the runs behind it finished learning and produced
real segmentations; these rules let a run say so in ``metrics.json`` and the report say so
instead of "better" or "worse". The rules (their false-alarm rate and power, measured by
simulation, are in ``docs/benchmark.md``; ``benchmarks/convergence.py`` reproduces them):

- **trend of the last quarter**: the validation scores at steps ``> 3/4 * total_steps`` are fitted
  by least squares against the step; with ``b`` the slope, ``se`` its standard error (from the
  curve's own residuals: its measured noise) and ``t`` the one-sided 95 % quantile of Student's t
  with ``m - 2`` degrees of freedom (``m`` validations), the change over the quarter is bounded
  by ``(b ± t·se) · total_steps / 4``. **not converged**: its lower bound exceeds ``tolerance``
  (0.01 Dice): the run was still rising when the budget ended. **degrading**: its upper bound is
  below ``-tolerance``: the score fell. Else converged. Not assessable (``None``) with fewer than
  4 validations in the last quarter (validate at least every ``total_steps / 16`` steps).
  Unlike a comparison of two maxima, noise alone rarely fires it (a max of noisy values rises
  with the number of validations; a slope's bound does not).
- **not learned**: the model predicts no foreground on more than half of the validation cases
  that have some (a run that predicts nothing scores 1 on empty cases and 0 on every structure:
  no learning, whatever its mean), or its best validation score stays at most 0.05.
- **collapsed**: on more than half of the validation cases the prediction is degenerate: one
  class everywhere (where the truth is not that same single class), or a foreground volume more
  than 10 times the true one (with a floor of 1 % of the case's voxels under the true volume);
  or foreground on more than half of the cases whose reference has none (at least 2 such cases).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["trend", "not_converged", "case_volumes", "collapse_reason", "degenerate_counts", "not_learned",
           "collapsed", "should_stop_early",
           "diagnose", "STATUSES"]

STATUSES = ("converged", "not converged", "degrading", "not assessable", "not learned", "collapsed")
# a run whose best validation score stays at or below this (mean Dice) has learned nothing usable,
# plateau or not: a flat curve at Dice 0 is no convergence
NOT_LEARNED_SCORE = 0.05


def _history(history) -> list[tuple[int, float]]:
    """``(step, score)`` pairs sorted by step; NaN scores (e.g. no foreground to score) dropped."""
    pairs = []
    for entry in history:
        try:
            step, score = entry
        except (TypeError, ValueError):
            raise ValueError(f"history entries must be (step, score) pairs, got {entry!r}") from None
        if score is not None and not math.isnan(float(score)):
            pairs.append((int(step), float(score)))
    return sorted(pairs)


MIN_LATE_VALIDATIONS = 4  # a slope and its noise need at least 2 residual degrees of freedom


def trend(history, total_steps: int) -> dict:
    """Least-squares trend of the validation scores in the last quarter of the budget (steps
    ``> 0.75 * total_steps``): ``{"validations_last_quarter": m, "boundary_step",
    "change": slope * total_steps / 4, "change_low", "change_high"}`` (the one-sided 95 % bounds
    of that change, Student's t with ``m - 2`` df); the change fields are None with fewer than
    :data:`MIN_LATE_VALIDATIONS` validations there."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}")
    boundary = 0.75 * total_steps
    late = [(step, score) for step, score in _history(history) if step > boundary]
    result = {"validations_last_quarter": len(late), "boundary_step": boundary, "change": None,
              "change_low": None, "change_high": None}
    steps = np.array([step for step, _ in late], dtype=np.float64)
    if len(late) < MIN_LATE_VALIDATIONS or np.ptp(steps) == 0:
        return result
    from scipy.stats import t as student_t

    scores = np.array([score for _, score in late], dtype=np.float64)
    centred = steps - steps.mean()
    slope = float((centred * (scores - scores.mean())).sum() / (centred ** 2).sum())
    residuals = scores - scores.mean() - slope * centred
    se = math.sqrt(float((residuals ** 2).sum()) / (len(late) - 2) / float((centred ** 2).sum()))
    quarter, bound = total_steps / 4, float(student_t.ppf(0.95, len(late) - 2))
    result.update(change=slope * quarter, change_low=(slope - bound * se) * quarter,
                  change_high=(slope + bound * se) * quarter)
    return result


def convergence_summary(history, total_steps: int, tolerance: float = 0.01) -> dict:
    """The numbers behind :func:`not_converged`: :func:`trend`'s fields, ``best_before`` and
    ``best_last_quarter`` (context for readers) and ``not_converged`` / ``degrading`` (True,
    False or None when not assessable)."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    summary = trend(history, total_steps)
    pairs = _history(history)
    before = [score for step, score in pairs if step <= summary["boundary_step"]]
    late = [score for step, score in pairs if step > summary["boundary_step"]]
    rising = falling = None
    if summary["change_low"] is not None:
        rising = summary["change_low"] > tolerance
        falling = summary["change_high"] < -tolerance
    return {**summary, "best_before": max(before) if before else None,
            "best_last_quarter": max(late) if late else None, "not_converged": rising, "degrading": falling}


def not_converged(history, total_steps: int, tolerance: float = 0.01) -> bool | None:
    """Whether the run was still rising when its budget ended: the lower 95 % bound of the
    last quarter's least-squares change (:func:`trend`) exceeds ``tolerance``. ``None`` (not
    assessable) with fewer than 4 validations in the last quarter. ``history``: ``(step,
    validation score)`` pairs, higher is better, NaN ignored; ``total_steps``: the steps the run
    made.

    >>> rising = [(s, s / 1000) for s in range(100, 1001, 50)]
    >>> not_converged(rising, 1000), not_converged([(s, 0.8) for s in range(100, 1001, 50)], 1000)
    (True, False)
    >>> not_converged([(500, 0.5), (1000, 0.9)], 1000) is None
    True
    """
    return convergence_summary(history, total_steps, tolerance)["not_converged"]


def case_volumes(prediction, target, num_classes: int | None = None, multilabel: bool = False) -> dict:
    """The per-case inputs of :func:`collapsed`: voxel counts per class, by one ``bincount``.

    Args:
        prediction, target: integer label maps ``(*spatial)`` of one case (NumPy or torch), or
            with ``multilabel=True`` multi-hot ``(R, *spatial)`` (non-zero = inside).
        num_classes: ``C`` for label maps (default: ``max label + 1`` of both).

    Returns ``{"voxels": int, "predicted": [count per class], "true": [count per class],
    "multilabel": bool}``; for label maps class 0 is the background, for multi-hot the counts are
    the voxels inside each region.
    """
    prediction, target = _array(prediction, "prediction"), _array(target, "target")
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target must have the same shape, got {prediction.shape} and {target.shape}")
    if multilabel:
        if prediction.ndim < 2:
            raise ValueError(f"multi-hot maps must be (R, *spatial), got shape {prediction.shape}")
        axes = tuple(range(1, prediction.ndim))
        return {"voxels": int(np.prod(prediction.shape[1:])), "multilabel": True,
                "predicted": (prediction != 0).sum(axes).astype(int).tolist(),
                "true": (target != 0).sum(axes).astype(int).tolist()}
    for name, array in (("prediction", prediction), ("target", target)):
        if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
            raise ValueError(f"{name} must hold integer labels, got dtype {array.dtype}")
        if array.size and array.min() < 0:
            raise ValueError(f"{name} has negative label {array.min()}")
    top = max(int(prediction.max(initial=0)), int(target.max(initial=0))) + 1
    if num_classes is None:
        num_classes = top
    elif top > num_classes:
        raise ValueError(f"labels up to {top - 1} found, but num_classes is {num_classes}")
    return {"voxels": int(prediction.size), "multilabel": False,
            "predicted": np.bincount(prediction.ravel().astype(np.int64), minlength=num_classes).tolist(),
            "true": np.bincount(target.ravel().astype(np.int64), minlength=num_classes).tolist()}


def _array(value, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim == 0:
        raise ValueError(f"{name} must be a label map, got a scalar")
    return array


def _foreground(counts: list[int], multilabel: bool) -> int:
    return int(sum(counts)) if multilabel else int(sum(counts[1:]))


def _one_class_everywhere(counts: list[int], voxels: int, multilabel: bool) -> bool:
    if multilabel:  # every region is empty or fills the case
        return all(count in (0, voxels) for count in counts)
    return sum(1 for count in counts if count > 0) <= 1


def collapse_reason(case: dict, volume_ratio: float = 10.0, min_reference_fraction: float = 0.01) -> str | None:
    """Why one validation case's prediction is degenerate, or None when it is not.

    With ``P`` and ``T`` its predicted and true foreground volumes (voxels of classes >= 1; for
    multi-hot the sum over regions) and ``V`` its voxels, the case is degenerate when

    - the prediction is **one class everywhere** (multi-hot: every region empty or full) and the
      truth is not the same (an empty case predicted empty is right, not collapsed); or
    - ``P > volume_ratio * max(T, min_reference_fraction * V)``: the floor keeps an empty or tiny
      true structure from making every small false positive a collapse.
    """
    predicted, true, voxels = list(case["predicted"]), list(case["true"]), int(case["voxels"])
    multilabel = bool(case.get("multilabel", False))
    if _one_class_everywhere(predicted, voxels, multilabel) and predicted != true:
        if multilabel:
            return "one class everywhere (every region empty or full)"
        label = next((c for c, count in enumerate(predicted) if count > 0), 0)
        return f"one class everywhere (class {label})"
    volume, reference = _foreground(predicted, multilabel), _foreground(true, multilabel)
    floor = min_reference_fraction * voxels
    if volume > volume_ratio * max(reference, floor):
        return (f"oversized foreground ({volume} voxels > {volume_ratio:g} x max(true {reference}, "
                f"floor {floor:g}))")
    return None


def degenerate_counts(per_case: list[dict], volume_ratio: float = 10.0,
                      min_reference_fraction: float = 0.01) -> dict:
    """The counts behind the degenerate-run rules, over validation cases (:func:`case_volumes`):
    ``cases``, ``degenerate`` (:func:`collapse_reason`), ``with_foreground`` and ``missed`` (of
    those, the ones predicted without any foreground), ``empty_reference`` and
    ``false_positive`` (of those, the ones predicted with foreground)."""
    counts = {"cases": len(per_case), "degenerate": 0, "with_foreground": 0, "missed": 0,
              "empty_reference": 0, "false_positive": 0}
    for case in per_case:
        multilabel = bool(case.get("multilabel", False))
        predicted, true = _foreground(case["predicted"], multilabel), _foreground(case["true"], multilabel)
        counts["degenerate"] += collapse_reason(case, volume_ratio, min_reference_fraction) is not None
        if true > 0:
            counts["with_foreground"] += 1
            counts["missed"] += predicted == 0
        else:
            counts["empty_reference"] += 1
            counts["false_positive"] += predicted > 0
    return counts


def not_learned(per_case: list[dict]) -> bool | None:
    """Whether the model predicts no foreground on more than half of the cases that have some
    (None without such a case).

    >>> nothing = case_volumes(np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1]))
    >>> empty_right = case_volumes(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0]))
    >>> not_learned([nothing, empty_right, empty_right, empty_right])  # right on empty cases only
    True
    """
    counts = degenerate_counts(per_case)
    return counts["missed"] > counts["with_foreground"] / 2 if counts["with_foreground"] else None


def collapsed(per_case: list[dict], majority: float = 0.5, volume_ratio: float = 10.0,
              min_reference_fraction: float = 0.01) -> bool | None:
    """Whether the model collapsed: more than ``majority`` (half) of the validation cases have a
    degenerate prediction (:func:`collapse_reason`), or foreground is predicted on more than half
    of the (at least 2) cases whose reference has none. ``None`` for no cases.

    >>> healthy = case_volumes(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]))
    >>> all_background = case_volumes(np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1]))
    >>> collapsed([healthy, all_background, all_background]), collapsed([healthy, healthy, all_background])
    (True, False)
    """
    if not per_case:
        return None
    counts = degenerate_counts(per_case, volume_ratio, min_reference_fraction)
    spurious = counts["empty_reference"] >= 2 and counts["false_positive"] > counts["empty_reference"] / 2
    return counts["degenerate"] > majority * len(per_case) or spurious


def should_stop_early(history, patience_steps: int, min_delta: float = 0.0) -> bool:
    """Early stopping with patience (``--until-converged``): True when no validation improved the
    best score by more than ``min_delta`` within the last ``patience_steps`` steps.

    Rule: walk the ``(step, score)`` pairs in step order (NaN scores never improve); the first
    score is an improvement, later ones when ``score > best + min_delta`` (then ``best = score``).
    Stop when ``last step - step of the last improvement >= patience_steps``. An empty history
    never stops; without any finite score the first validation's step is the reference.
    """
    if isinstance(patience_steps, bool) or not isinstance(patience_steps, int) or patience_steps < 1:
        raise ValueError(f"patience_steps must be an int >= 1, got {patience_steps!r}")
    if not min_delta >= 0:
        raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
    steps = sorted(int(step) for step, _ in history)
    if not steps:
        return False
    best, improved_at = -math.inf, steps[0]
    for step, score in _history(history):
        if best == -math.inf or score > best + min_delta:
            best, improved_at = score, step
    return steps[-1] - improved_at >= patience_steps


def diagnose(history, total_steps: int, per_case: list[dict], tolerance: float = 0.01,
             not_learned_score: float = NOT_LEARNED_SCORE) -> dict:
    """The ``"diagnostics"`` record of a run's ``metrics.json``: the convergence numbers, the
    degenerate-case counts and one ``status`` of :data:`STATUSES` — ``not learned`` first (no
    foreground found on most cases that have some, or a best validation score of at most
    ``not_learned_score``), then ``collapsed`` (another degenerate segmentation), then ``not assessable``, ``not
    converged``, ``degrading``, ``converged``."""
    convergence = convergence_summary(history, total_steps, tolerance)
    reasons = [collapse_reason(case) for case in per_case]
    kinds = [reason.split(" (")[0] for reason in reasons if reason is not None]
    is_collapsed = collapsed(per_case)
    counts = degenerate_counts(per_case)
    scores = [score for _, score in _history(history)]
    if not_learned(per_case) or (scores and max(scores) <= not_learned_score):
        status = "not learned"  # first: background everywhere is also a "one class everywhere" collapse
    elif is_collapsed:
        status = "collapsed"
    elif convergence["not_converged"] is None:
        status = "not assessable"
    elif convergence["not_converged"]:
        status = "not converged"
    else:
        status = "degrading" if convergence["degrading"] else "converged"
    return {"status": status, "total_steps": total_steps, "tolerance": tolerance, **convergence,
            "collapsed": is_collapsed, "collapsed_cases": sum(r is not None for r in reasons),
            "validation_cases": len(per_case), "missed_cases": counts["missed"],
            "cases_with_foreground": counts["with_foreground"], "empty_reference_cases": counts["empty_reference"],
            "false_positive_cases": counts["false_positive"],
            "collapse_kinds": {kind: kinds.count(kind) for kind in sorted(set(kinds))}}
