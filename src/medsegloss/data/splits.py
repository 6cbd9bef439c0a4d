"""Train / val / test splits by case (never by slice), deterministic from a seed, saved as JSON;
and k-fold cross-validation over the same units (:func:`make_folds`).

A split assigns *units* to parts: a unit is a patient (ACDC: its ED and ES volumes go together),
a slab (mni152) or simply a case. With groups (ACDC's pathology), each part takes its share of
every group (largest-remainder rounding, so the totals match the fractions as closely as the
counts allow). Saving the split with a run and reloading it (``split_file=``) makes every loss of
a benchmark see exactly the same cases.

A split records its units (``"units"``: case -> unit, when a case is not its own unit) and strata
(``"groups"``: unit -> group) beside the parts, so a benchmark can build cross-validation folds
over the same units (:func:`folds_of`) and the report can name the unit of its statistics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medsegloss._io import write_json

PARTS = ("train", "val", "test")


def _largest_remainder(total: int, sizes: list[int]) -> list[int]:
    """Share ``total`` among groups proportionally to ``sizes``, in integers summing to ``total``."""
    whole = sum(sizes)
    if whole == 0:
        return [0] * len(sizes)
    quotas = [total * size / whole for size in sizes]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _part_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Numbers of val and test units: rounded fractions, at least one each when asked for and there
    are enough units, and always at least one training unit."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    if n >= 3:
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    while n_test + n_val >= n and n_test + n_val > 0:  # keep a training unit
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def make_split(case_ids: Sequence[str], *, seed: int = 0, val_fraction: float = 0.1,
               test_fraction: float = 0.2, unit_of: Callable[[str], str] | None = None,
               group_of: Callable[[str], str] | None = None) -> dict[str, list[str]]:
    """Deterministic split of ``case_ids`` into ``{"train", "val", "test"}`` lists.

    Args:
        unit_of: case id -> unit id; cases of one unit always land in the same part.
        group_of: unit id -> stratum (e.g. pathology group); each part takes its share of each.

    >>> split = make_split([f"c{i}" for i in range(10)], seed=1)
    >>> [len(split[part]) for part in PARTS]
    [7, 1, 2]
    >>> split == make_split([f"c{i}" for i in reversed(range(10))], seed=1)  # order-independent
    True
    """
    unit_of = unit_of or (lambda case: case)
    group_of = group_of or (lambda unit: "")
    units = sorted({unit_of(case) for case in case_ids})
    n_val, n_test = _part_sizes(len(units), val_fraction, test_fraction)
    by_group: dict[str, list[str]] = {}
    for unit in units:
        by_group.setdefault(str(group_of(unit)), []).append(unit)
    names = sorted(by_group)
    rng = np.random.default_rng(seed)
    shuffled = {name: [by_group[name][i] for i in rng.permutation(len(by_group[name]))] for name in names}
    sizes = [len(shuffled[name]) for name in names]
    tests = _largest_remainder(n_test, sizes)
    vals = _largest_remainder(n_val, [size - t for size, t in zip(sizes, tests)])
    part_of = {}
    for name, n_t, n_v in zip(names, tests, vals):
        for position, unit in enumerate(shuffled[name]):
            part_of[unit] = "test" if position < n_t else "val" if position < n_t + n_v else "train"
    split = {part: [] for part in PARTS}
    for case in sorted(case_ids):
        split[part_of[unit_of(case)]].append(case)
    split.update(_structure(case_ids, unit_of, group_of))
    return split


def _structure(case_ids, unit_of, group_of) -> dict:
    """The ``"units"`` (only cases that are not their own unit) and ``"groups"`` (only when there
    is more than one) records of a split."""
    units = {str(case): str(unit_of(case)) for case in sorted(case_ids) if str(unit_of(case)) != str(case)}
    groups = {unit: str(group_of(unit)) for unit in sorted({unit_of(case) for case in case_ids})}
    return {"units": units, "groups": groups if len(set(groups.values())) > 1 else {}}


MIN_VALIDATION_UNITS = 8  # validation cases for the convergence rule: fewer make its curve mostly noise


def make_folds(case_ids: Sequence[str], folds: int, *, seed: int = 0, units: dict[str, str] | None = None,
               groups: dict[str, str] | None = None, val_fraction: float = 0.2,
               min_val_units: int = MIN_VALIDATION_UNITS) -> list[dict[str, list[str]]]:
    """K-fold cross-validation over units: ``folds`` splits ``{"train", "val", "test"}`` whose test
    parts are disjoint and cover every case exactly once; the cases of one unit (``units``: case ->
    unit, default each case its own) always share a part, and each fold takes its share of every
    stratum (``groups``: unit -> group). The validation part (for the convergence rule, never the
    model tested) comes from the training units of the fold: ``max(val_fraction`` of them, ``min(
    min_val_units``, half of them``))``, at least one training unit kept.

    >>> folds = make_folds([f"c{i}" for i in range(10)], 5, seed=0)
    >>> sorted(case for fold in folds for case in fold["test"]) == sorted(f"c{i}" for i in range(10))
    True
    >>> [(len(f["train"]), len(f["val"]), len(f["test"])) for f in folds][0]
    (4, 4, 2)
    """
    units, groups = dict(units or {}), dict(groups or {})
    unit_of = lambda case: units.get(case, case)  # noqa: E731
    all_units = sorted({unit_of(case) for case in case_ids})
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    if folds > len(all_units):
        raise ValueError(f"{folds} folds need at least {folds} units, but the data have {len(all_units)} "
                         f"(a unit is a case, or the group of cases that must stay together); use fewer folds")
    rng = np.random.default_rng([seed, folds])
    fold_of, dealt = {}, 0
    for group in sorted({groups.get(unit, "") for unit in all_units}):
        members = [unit for unit in all_units if groups.get(unit, "") == group]
        for position in rng.permutation(len(members)):  # dealt round-robin: every fold gets its share
            fold_of[members[position]] = dealt % folds
            dealt += 1
    result = []
    for fold in range(folds):
        rest = [unit for unit in all_units if fold_of[unit] != fold]
        n_val = max(round(val_fraction * len(rest)), min(min_val_units, len(rest) // 2)) if val_fraction > 0 else 0
        n_val = min(n_val, len(rest) - 1)
        inner = make_split(rest, seed=seed * 1000 + fold, val_fraction=n_val / len(rest) if rest else 0.0,
                           test_fraction=0.0, group_of=lambda unit: groups.get(unit, ""))
        part_of = {unit: "test" for unit in all_units if fold_of[unit] == fold}
        part_of.update({unit: part for part in ("train", "val") for unit in inner[part]})
        split = {part: [] for part in PARTS}
        for case in sorted(case_ids):
            split[part_of[unit_of(case)]].append(case)
        result.append(split)
    return result


def folds_of(split: dict, folds: int, seed: int = 0, val_fraction: float = 0.2) -> list[dict]:
    """:func:`make_folds` over the cases, units and groups a dataset's split records."""
    cases = [case for part in PARTS for case in split.get(part, [])]
    return make_folds(cases, folds, seed=seed, units=split.get("units"), groups=split.get("groups"),
                      val_fraction=val_fraction)


def count_units(split: dict) -> int:
    """The number of independent units (patients, slabs, cases) of a dataset's split."""
    units = split.get("units") or {}
    return len({units.get(case, case) for part in PARTS for case in split.get(part, [])})


def save_split(split: dict[str, list[str]], path, **meta) -> None:
    """Write ``split`` (plus ``meta`` such as the dataset name) as JSON, atomically."""
    path = Path(path)
    content = {**meta, **{part: list(split.get(part, [])) for part in PARTS}}
    for key in ("units", "groups"):
        if split.get(key):
            content[key] = dict(split[key])
    write_json(path, content, indent=1)


def _read_json(path: Path, what: str):
    """The JSON content of ``path``; a missing or unreadable file is a DatasetError naming it."""
    from medsegloss.data.base import DatasetError

    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise DatasetError(f"{what} {path} is not readable JSON: {error}") from None


def load_split(path, case_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Read a split JSON; with ``case_ids``, every listed case must exist in the dataset."""
    from medsegloss.data.base import DatasetError

    path = Path(path)
    content = _read_json(path, "split file")
    if not isinstance(content, dict) or not all(isinstance(content.get(p, []), list) for p in PARTS):
        raise DatasetError(f"split file {path} must hold a JSON object with lists 'train', 'val', 'test'")
    split = {part: [str(case) for case in content.get(part, [])] for part in PARTS}
    for key in ("units", "groups"):
        records = content.get(key) if isinstance(content.get(key), dict) else {}
        split[key] = {str(k): str(v) for k, v in records.items()}
    seen: dict[str, str] = {}
    for part in PARTS:
        for case in split[part]:
            if case in seen:
                raise DatasetError(f"split file {path}: case {case!r} is in both {seen[case]!r} and {part!r}")
            seen[case] = part
    if case_ids is not None:
        missing = sorted(set(seen) - set(case_ids))
        if missing:
            raise DatasetError(
                f"split file {path} names {len(missing)} case(s) the dataset does not have: {missing[:10]}"
            )
    return split


def resolve_split(case_ids: Sequence[str], *, split_file=None, seed: int = 0, val_fraction: float = 0.1,
                  test_fraction: float = 0.2, unit_of=None, group_of=None) -> dict[str, list[str]]:
    """The split a dataset uses: the saved one when ``split_file`` is given, else a new one."""
    if split_file is not None:
        return load_split(split_file, case_ids)
    return make_split(case_ids, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                      unit_of=unit_of, group_of=group_of)


def select(split: dict[str, list[str]], split_name: str, case_ids: Sequence[str]) -> list[str]:
    """The case ids of one part (``"all"`` = every case of the dataset)."""
    if split_name == "all":
        return list(case_ids)
    if split_name not in PARTS:
        raise ValueError(f"split must be one of {PARTS + ('all',)}, got {split_name!r}")
    return list(split[split_name])


def read_folds_file(path, case_ids: Sequence[str], *, seed: int = 0, val_fraction: float = 0.2,
                    units: dict[str, str] | None = None) -> list[dict[str, list[str]]]:
    """Folds from a file: nnU-Net's ``splits_final.json`` (a list of ``{"train": [...], "val":
    [...]}``, ``val`` being the fold held out, which is what a fold here tests) or a sweep's own
    ``folds/seed<k>.json`` (``{"splits": [{"train", "val", "test"}, ...]}``). For nnU-Net's, the
    validation part is drawn from each fold's training cases (as :func:`make_folds` does). Every
    case must exist in the dataset, and the held-out folds must cover it exactly once."""
    from medsegloss.data.base import DatasetError

    path = Path(path)
    content = _read_json(path, "folds file")
    entries = content.get("splits") if isinstance(content, dict) else content
    if not isinstance(entries, list) or len(entries) < 2 or not all(isinstance(e, dict) for e in entries):
        raise DatasetError(f"folds file {path} must hold a list of at least 2 folds ({{'train': [...], 'val': [...]}} "
                           f"as nnU-Net's splits_final.json)")
    known, units = set(case_ids), dict(units or {})
    folds = []
    for number, entry in enumerate(entries):
        if "test" in entry:  # our own format: the parts as written
            split = {part: [str(c) for c in entry.get(part, [])] for part in PARTS}
        else:
            held_out, rest = [str(c) for c in entry.get("val", [])], [str(c) for c in entry.get("train", [])]
            rest_units = sorted({units.get(c, c) for c in rest})
            n_val = min(len(rest_units) - 1, max(round(val_fraction * len(rest_units)),
                                                 min(MIN_VALIDATION_UNITS, len(rest_units) // 2)))
            inner = make_split(rest_units, seed=seed * 1000 + number, test_fraction=0.0,
                               val_fraction=n_val / len(rest_units) if rest_units else 0.0)
            val_units = set(inner["val"])
            split = {"train": [c for c in rest if units.get(c, c) not in val_units],
                     "val": [c for c in rest if units.get(c, c) in val_units], "test": held_out}
        unknown = sorted(set(sum(split.values(), [])) - known)
        if unknown:
            raise DatasetError(f"folds file {path}, fold {number}: {len(unknown)} case(s) the dataset does not have, "
                               f"e.g. {unknown[:3]}")
        folds.append(split)
    tested = sorted(case for split in folds for case in split["test"])
    if tested != sorted(known):
        missing = sorted(known - set(tested))
        raise DatasetError(f"folds file {path}: the held-out folds must cover every case exactly once "
                           f"({len(missing)} never held out, e.g. {missing[:3]}; {len(tested) - len(set(tested))} twice)")
    return folds
