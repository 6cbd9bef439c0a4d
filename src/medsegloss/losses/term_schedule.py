"""Term-weight schedules: a compound loss's term weights as functions of the optimizer step.

The boundary-loss paper (Kervadec et al., 2019) trains ``gdl + α·boundary`` with α raised during
training ("rebalancing"); Ma et al. train with Dice first and fine-tune with a boundary term. A
schedule string says this for any :class:`~medsegloss.losses.WeightedSum`::

    boundary=linear(0.01, 1.0)            # 0.01 at the first step, rising linearly to 1.0 at the last
    boundary=step(0@0, 1@2000)            # 0 from step 0, 1 from step 2000 on (piecewise constant)
    boundary=linear(0.01, 1.0); dice=step(1@0, 0.5@1000)   # several terms, separated by ';'

``linear(a, b)`` spans the whole budget (``total_steps``); ``linear(a, b, s0, s1)`` ramps between
steps ``s0`` and ``s1`` and holds ``a`` before and ``b`` after. Steps are the 0-based index of
the update about to be made, as for the learning rate. Terms not named keep their weight.

>>> schedule = parse_schedule("boundary=linear(0.0, 1.0); dice=step(1@0, 0.5@50)")
>>> [round(schedule.weights(step, total_steps=101)["boundary"], 2) for step in (0, 50, 100)]
[0.0, 0.5, 1.0]
>>> [schedule.weights(step, total_steps=101)["dice"] for step in (49, 50)]
[1.0, 0.5]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUMBER = r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_ENTRY = re.compile(r"^\s*(?P<term>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<kind>linear|step)\s*\((?P<args>[^()]*)\)\s*$")


@dataclass(frozen=True)
class TermSchedule:
    """One term's weight over the steps: ``kind`` "linear" with ``points = ((s0, a), (s1, b))``
    (``s1 = None``: the last step of the budget), or "step" with ``points = ((s_i, w_i), ...)``."""

    term: str
    kind: str
    points: tuple[tuple[float | None, float], ...]

    def weight(self, step: int, total_steps: int) -> float:
        if self.kind == "step":
            value = self.points[0][1]
            for start, weight in self.points:
                if step >= start:
                    value = weight
            return value
        (start, low), (end, high) = self.points
        end = max(total_steps - 1, 0) if end is None else end
        if step <= start or end <= start:
            return low if step <= start else high
        if step >= end:
            return high
        return low + (high - low) * (step - start) / (end - start)


@dataclass(frozen=True)
class Schedule:
    """Every scheduled term; :meth:`weights` gives ``{term: weight}`` at a step."""

    text: str
    terms: tuple[TermSchedule, ...]

    def weights(self, step: int, total_steps: int) -> dict[str, float]:
        return {entry.term: entry.weight(step, total_steps) for entry in self.terms}

    def apply(self, loss, step: int, total_steps: int) -> dict[str, float]:
        """Set the scheduled weights of ``loss`` (a WeightedSum) for this step; returns them."""
        values = self.weights(step, total_steps)
        loss.weights.update(values)
        return values

    def check_terms(self, loss) -> None:
        """Fail naming the term when the schedule names one that ``loss`` lacks."""
        names = getattr(loss, "names", None)
        if names is None:
            raise ValueError(f"a schedule ({self.text!r}) needs a compound loss (e.g. 'gdl + boundary'); "
                             f"{type(loss).__name__} has no term weights")
        unknown = [entry.term for entry in self.terms if entry.term not in names]
        if unknown:
            raise ValueError(f"the schedule names term(s) {unknown} that the loss does not have; its terms are "
                             f"{names}")


def _numbers(text: str, entry: str) -> list[float]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not re.fullmatch(_NUMBER, part):
            raise ValueError(f"schedule entry {entry!r}: {part!r} is not a number")
        value = float(part)
        if not math.isfinite(value):
            raise ValueError(f"schedule entry {entry!r}: {part!r} is not finite")
        values.append(value)
    return values


def _parse_entry(entry: str) -> TermSchedule:
    match = _ENTRY.match(entry)
    if match is None:
        raise ValueError(f"schedule entry {entry.strip()!r} must look like 'term=linear(a, b)', "
                         "'term=linear(a, b, start_step, end_step)' or 'term=step(w0@0, w1@step1, ...)'")
    term, kind, args = match["term"], match["kind"], match["args"]
    if kind == "linear":
        values = _numbers(args, entry)
        if len(values) == 2:
            return TermSchedule(term, kind, ((0, values[0]), (None, values[1])))
        if len(values) == 4:
            low, high, start, end = values
            if not 0 <= start < end:
                raise ValueError(f"schedule entry {entry.strip()!r}: needs 0 <= start_step < end_step")
            return TermSchedule(term, kind, ((start, low), (end, high)))
        raise ValueError(f"schedule entry {entry.strip()!r}: linear takes (a, b) or (a, b, start_step, end_step)")
    points = []
    for part in args.split(","):
        weight, _, start = part.partition("@")
        if not start:
            raise ValueError(f"schedule entry {entry.strip()!r}: each step point is weight@step, got {part.strip()!r}")
        (weight_value,), (start_value,) = _numbers(weight, entry), _numbers(start, entry)
        points.append((start_value, weight_value))
    starts = [start for start, _ in points]
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise ValueError(f"schedule entry {entry.strip()!r}: step points must start at @0 and rise, got steps {starts}")
    return TermSchedule(term, kind, tuple(points))


def _checked(entry: TermSchedule, text: str) -> TermSchedule:
    """A term weight is a finite number >= 0: a negative one maximises its term."""
    from medsegloss._checks import check_non_negative

    for _, weight in entry.points:
        check_non_negative(f"schedule entry {text.strip()!r}: the weight of {entry.term}", weight)
    return entry


def parse_schedule(text: str | None) -> Schedule | None:
    """``"term=linear(a, b); other=step(w@s, ...)"`` -> :class:`Schedule` (None for an empty text).
    Errors name the entry that is wrong."""
    if text is None or not text.strip():
        return None
    entries = [_checked(_parse_entry(entry), entry) for entry in text.split(";") if entry.strip()]
    terms = [entry.term for entry in entries]
    if len(set(terms)) != len(terms):
        raise ValueError(f"schedule {text!r} names a term twice: {terms}")
    return Schedule(text.strip(), tuple(entries))
