"""Term-weight schedules: a compound loss's term weights as functions of the optimizer step.

The boundary-loss paper (Kervadec et al., 2019) trains ``gdl + α·boundary`` with α raised during
training ("rebalancing"); Ma et al. train with Dice first and fine-tune with a boundary term. A
loss string says this after a ``|`` (the syntax: :mod:`~medsegloss.losses.compound.language`)::

    gdl + 0.01*boundary | boundary=linear(0.01, 1.0)     # 0.01 at the first step, 1.0 at the last
    gdl + boundary | boundary=step(0@0, 1@2000)          # 0 from step 0, 1 from step 2000 on

``linear(a, b)`` spans the whole budget (``total_steps``); ``linear(a, b, s0, s1)`` ramps between
steps ``s0`` and ``s1`` and holds ``a`` before and ``b`` after. Steps are the 0-based index of
the update about to be made, as for the learning rate. Terms not named keep their weight.

>>> from medsegloss.losses import parse
>>> schedule = parse("gdl + boundary + dice | boundary=linear(0.0, 1.0); dice=step(1@0, 0.5@50)").schedule
>>> [round(schedule.weights(step, total_steps=101)["boundary"], 2) for step in (0, 50, 100)]
[0.0, 0.5, 1.0]
>>> [schedule.weights(step, total_steps=101)["dice"] for step in (49, 50)]
[1.0, 0.5]
"""

from __future__ import annotations

from dataclasses import dataclass


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

    def check_names(self, names, owner: str = "the loss") -> None:
        """Fail naming the term when the schedule names one that is not in ``names`` (a sum's term
        labels); ``names`` None: ``owner`` has no term weights."""
        if names is None:
            raise ValueError(f"a schedule ({self.text!r}) needs a compound loss (e.g. 'gdl + boundary'); "
                             f"{owner} has no term weights")
        unknown = [entry.term for entry in self.terms if entry.term not in names]
        if unknown:
            raise ValueError(f"the schedule names term(s) {unknown} that the loss does not have; its terms are "
                             f"{list(names)}")
        off = {entry.term for entry in self.terms if all(weight == 0 for _, weight in entry.points)}
        if off >= set(names):
            raise ValueError(f"the schedule {self.text!r} sets every term of the loss ({', '.join(names)}) to weight 0 "
                             f"at every step: the loss would be zero")

    def check_terms(self, loss) -> None:
        """:meth:`check_names` against a built loss (a WeightedSum's ``names``)."""
        self.check_names(getattr(loss, "names", None), type(loss).__name__)
