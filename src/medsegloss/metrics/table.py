"""Multi-class evaluation as a table: one row per case and class, then explicit aggregation.

Overlap metrics come from one confusion matrix per case (``np.bincount`` of ``C·target + pred``),
surface metrics from one pair of surface-distance sets per case and class, however many metrics
reduce them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medsegloss._checks import check_spacing
from medsegloss import _io
from medsegloss.distance import surface_distances
from medsegloss.metrics._inputs import check_empty, empty_state, label_map
from medsegloss.metrics._registry import lookup
from medsegloss.metrics.overlap import Counts
from medsegloss.metrics.surface import SurfaceDistances, image_diagonal

__all__ = ["evaluate", "summarize", "write_csv", "write_json"]

_KEYS = ("case", "class", "empty")  # row keys that are not metric values


def evaluate(pred_labels, target_labels, num_classes: int, spacing=None,
             metrics: Sequence[str] = ("dice", "iou", "pixel_error"), include_background: bool = False,
             case_ids: Sequence[str] | None = None, empty: str = "nan",
             metric_options: dict[str, dict] | None = None, multilabel: bool = False) -> list[dict]:
    """Every requested metric for every case and class of integer label maps (or, with
    ``multilabel=True``, every case and region of multi-hot masks).

    Args:
        pred_labels, target_labels: a batch ``(N, H, W)`` / ``(N, D, H, W)`` (tensor or array),
            or a list of per-case label maps (sizes may differ), values in ``[0, num_classes)``.
        num_classes: ``C``, background (label 0) included.
        spacing: voxel size per spatial axis for all cases, or a list with one per case
            (surface metrics only; default 1).
        metrics: registry names (:func:`medsegloss.metrics.available`).
        include_background: also score class 0.
        case_ids: one name per case (default ``"0"``, ``"1"``, ...).
        empty: the empty-mask policy, ``"nan"`` or ``"worst"`` (table in :mod:`medsegloss.metrics`).
        metric_options: options per metric, e.g. ``{"nsd": {"tolerance": 2.0}}``.
        multilabel: overlapping regions: ``pred_labels`` and ``target_labels`` are multi-hot
            ``(N, R, *spatial)`` (or lists of ``(R, *spatial)``), ``num_classes`` is ``R``; each
            region is scored as its own binary mask (``class`` = the region's channel, every
            region kept, ``include_background`` unused). Predictions may be probabilities (one
            sigmoid per channel): thresholded at ``> 0.5``; the target must be 0/1 or bool.

    Returns:
        ``[{"case": str, "class": int, <metric>: float, ..., "empty": str}, ...]`` in case order,
        then class order. ``empty`` is ``"none"``, ``"both"`` (class absent from both),
        ``"pred"`` (missed: absent from the prediction only) or ``"ref"`` (spurious).

    >>> target = np.array([[[0, 1, 1, 2]]])  # one case, (1, 1, 4)
    >>> pred = np.array([[[0, 1, 2, 2]]])
    >>> [(row["class"], row["dice"]) for row in evaluate(pred, target, 3, metrics=["dice"])]
    [(1, 0.6666666666666666), (2, 0.6666666666666666)]
    """
    check_empty(empty)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (background included), got {num_classes!r}")
    preds = _cases(pred_labels, "pred_labels", multilabel)
    targets = _cases(target_labels, "target_labels", multilabel)
    if len(preds) != len(targets):
        raise ValueError(f"pred_labels has {len(preds)} cases but target_labels has {len(targets)}")
    if isinstance(metrics, str):
        metrics = (metrics,)
    infos = [lookup(name) for name in metrics]
    options = _metric_options(infos, metric_options or {})
    if multilabel:
        return _evaluate_multilabel(preds, targets, int(num_classes), spacing, infos, options, empty, case_ids)
    classes = list(range(0 if include_background else 1, int(num_classes)))
    if not classes:
        raise ValueError(f"no class to score: num_classes={num_classes}, include_background={include_background}")
    ids, spacings = _case_ids_and_spacings(case_ids, spacing, len(preds))
    rows = []
    for index, (pred, target) in enumerate(zip(preds, targets)):
        pred = label_map(pred, f"pred_labels[{index}]", num_classes)
        target = label_map(target, f"target_labels[{index}]", num_classes)
        if pred.shape != target.shape:
            raise ValueError(f"case {ids[index]!r}: prediction shape {pred.shape} != target shape {target.shape}")
        rows += _evaluate_case(pred, target, num_classes, classes, spacings[index], infos, options, empty,
                               ids[index])
    return rows


def _case_ids_and_spacings(case_ids, spacing, count: int) -> tuple[list[str], list]:
    """The cases' names (their positions by default) and per-case spacings, checked."""
    ids = [str(i) for i in range(count)] if case_ids is None else [str(c) for c in case_ids]
    if len(ids) != count:
        raise ValueError(f"case_ids has {len(ids)} names for {count} cases")
    return ids, _spacings(spacing, count)


def _evaluate_multilabel(preds, targets, regions, spacing, infos, options, empty, case_ids) -> list[dict]:
    """Per case and region: the region's predicted mask (``> 0.5``) against its target mask,
    scored as a binary label map (class 1 of 2), the row labelled with the region's channel."""
    from medsegloss.metrics._inputs import to_numpy

    ids, spacings = _case_ids_and_spacings(case_ids, spacing, len(preds))
    rows = []
    for index, (pred, target) in enumerate(zip(preds, targets)):
        pred, target = to_numpy(pred, f"pred_labels[{index}]"), to_numpy(target, f"target_labels[{index}]")
        if pred.ndim not in (3, 4) or pred.shape[0] != regions:
            raise ValueError(f"multilabel pred_labels[{index}] must be multi-hot (R, *spatial) with R = num_classes "
                             f"= {regions} regions and 2 or 3 spatial axes, got shape {pred.shape}")
        if pred.shape != target.shape:
            raise ValueError(f"case {ids[index]!r}: prediction shape {pred.shape} != target shape {target.shape}")
        not_binary = (target != 0) & (target != 1)
        if not_binary.any():
            raise ValueError(f"multilabel target_labels[{index}] must be 0/1 or bool masks, got values such as "
                             f"{np.unique(target[not_binary])[:5].tolist()}")
        for region in range(regions):
            case_rows = _evaluate_case((pred[region] > 0.5).astype(np.uint8), (target[region] != 0).astype(np.uint8),
                                       2, [1], spacings[index], infos, options, empty, ids[index])
            for row in case_rows:
                row["class"] = region
            rows += case_rows
    return rows


def _evaluate_case(pred, target, num_classes, classes, spacing, infos, options, empty, case_id) -> list[dict]:
    # confusion[r, p] = voxels with reference label r and predicted label p
    confusion = np.bincount((target.astype(np.intp) * num_classes + pred).ravel(),
                            minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    surface_infos = [info for info in infos if info.kind == "surface"]
    if surface_infos:
        spacing = check_spacing(spacing, pred.ndim)
        diagonal = image_diagonal(pred.shape, spacing)
        # only the surface Dice asked for: distances beyond its tolerance need not be exact
        only_nsd = all(info.name == "nsd" for info in surface_infos)
        max_distance = options["nsd"].get("tolerance", lookup("nsd").options["tolerance"]) if only_nsd else None
    rows = []
    for c in classes:
        tp = int(confusion[c, c])
        fp, fn = int(confusion[:, c].sum()) - tp, int(confusion[c, :].sum()) - tp
        counts = Counts(tp, fp, fn, pred.size - tp - fp - fn)
        state = empty_state(not counts.pred_empty, not counts.ref_empty)
        if surface_infos:
            pair = surface_distances(pred == c, target == c, spacing, max_distance) if state == "none" else (None, None)
            distances = SurfaceDistances(*pair, state, diagonal)
        row = {"case": case_id, "class": c}
        for info in infos:
            parts = counts if info.kind == "overlap" else distances
            row[info.name] = float(info.from_parts(parts, empty, **options[info.name]))
        row["empty"] = state
        rows.append(row)
    return rows


def _cases(labels, name: str, multilabel: bool = False) -> list:
    """A batch ``(N, *spatial)`` (multi-hot ``(N, R, *spatial)``) or a list of per-case maps ->
    a list of per-case maps."""
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        if multilabel:
            if labels.ndim not in (4, 5):
                raise ValueError(f"multilabel {name} must be a multi-hot batch (N, R, H, W) or (N, R, D, H, W), "
                                 f"or a list of per-case (R, *spatial) masks; got shape {tuple(labels.shape)}")
            return list(labels)
        if labels.ndim not in (3, 4):
            raise ValueError(
                f"{name} must be a batch (N, H, W) or (N, D, H, W), or a list of per-case label maps; "
                f"got shape {tuple(labels.shape)} (wrap a single case in a list)"
            )
        return list(labels)
    if isinstance(labels, (list, tuple)):
        return list(labels)
    raise TypeError(f"{name} must be a tensor, an array or a list of them, got {type(labels).__name__}")


def _spacings(spacing, n: int) -> list:
    """One spacing for every case, or one per case (a list of tuples or an ``(N, ndim)`` array).
    A DataLoader collates per-item tuples axis-first; pass ``list(zip(*batch["spacing"]))``."""
    if isinstance(spacing, (np.ndarray, torch.Tensor)) and spacing.ndim == 2:  # (N, ndim)
        spacing = [tuple(float(s) for s in row) for row in spacing.tolist()]
    per_case = isinstance(spacing, (list, tuple)) and len(spacing) > 0 and all(
        isinstance(s, (list, tuple, np.ndarray, torch.Tensor)) for s in spacing)
    if not per_case:
        return [spacing] * n
    if len(spacing) != n:
        raise ValueError(f"spacing has {len(spacing)} per-case entries for {n} cases")
    return list(spacing)


def _metric_options(infos, metric_options: dict) -> dict[str, dict]:
    names = {info.name for info in infos}
    unknown = sorted(set(metric_options) - names)
    if unknown:
        raise ValueError(f"metric_options for metrics not requested: {unknown} (requested: {sorted(names)})")
    options = {}
    for info in infos:
        given = dict(metric_options.get(info.name, {}))
        allowed = set(info.options) - {"empty", "spacing"}
        if set(given) - allowed:
            raise TypeError(f"metric {info.name!r} has no option(s) {sorted(set(given) - allowed)}; "
                            f"its options are {sorted(allowed)}")
        options[info.name] = given
    return options


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Aggregate :func:`evaluate` rows per class and metric, plus ``class = "all"`` pooling
    every row of a metric.

    Each summary row: ``{"class", "metric", "mean", "std", "median", "n", "n_nan",
    "n_empty_both", "n_empty_pred", "n_empty_ref"}``. ``mean``/``std`` (population, ddof 0) and
    ``median`` are over the ``n - n_nan`` defined values (NaN when none); ``n`` counts rows,
    ``n_nan`` the NaN values left out, and the ``n_empty_*`` the rows whose class was absent
    from both masks, from the prediction only (missed) or from the reference only (spurious),
    so nothing is dropped silently.
    """
    metrics = [key for key in dict.fromkeys(key for row in rows for key in row) if key not in _KEYS]
    groups: dict = {}
    for row in rows:
        groups.setdefault(row["class"], []).append(row)
    if len(groups) > 1:
        groups["all"] = list(rows)
    summary = []
    for cls, group in groups.items():
        for metric in metrics:
            values = np.array([row[metric] for row in group if metric in row], dtype=np.float64)
            defined = values[~np.isnan(values)]
            states = [row.get("empty", "none") for row in group if metric in row]
            summary.append({
                "class": cls, "metric": metric,
                "mean": float(defined.mean()) if defined.size else math.nan,
                "std": float(defined.std()) if defined.size else math.nan,
                "median": float(np.median(defined)) if defined.size else math.nan,
                "n": int(values.size), "n_nan": int(values.size - defined.size),
                "n_empty_both": states.count("both"), "n_empty_pred": states.count("pred"),
                "n_empty_ref": states.count("ref"),
            })
    return summary


def write_csv(rows: Sequence[dict], path) -> Path:
    """Write rows (from :func:`evaluate` or :func:`summarize`) as CSV, atomically. NaN -> ``nan``."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return _io.write_text(path, buffer.getvalue())


def write_json(rows: Sequence[dict], path) -> Path:
    """Write rows as a JSON list, atomically. NaN (not valid JSON) is written as ``null``."""
    clean = [{key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}
             for row in rows]
    return _io.write_json(path, clean, indent=1, allow_nan=False)
