"""The loss language: one grammar for the whole loss string, parsed here and nowhere else.

A loss string names registered losses, their weights and options, and optionally the term
weights over the optimizer steps after a ``|``; a list of them (a benchmark's ``--losses``) is
separated by commas::

    list      := loss { "," loss }                                      commas outside parentheses
    loss      := sum [ "|" schedule ]
    sum       := term { "+" term }
    term      := [number "*"] name ["(" key=value, ... ")"] ["*" number]  values: Python literals
    schedule  := entry { ";" entry }
    entry     := label "=" ( "linear(" a, b [, start_step, end_step] ")" | "step(" w0@0, w1@s1, ... ")" )

``parse(text)`` reads a string into a :class:`LossSpec` (its terms, their registry names, its
schedule), checking the names, the option names and the schedule's terms without building
anything; ``LossSpec.build(**common)`` (and ``build(text)``) makes the loss module: a term that
is one unweighted loss is that loss itself, several terms a
:class:`~medsegloss.losses.compound.weighted_sum.WeightedSum` (the same loss twice is labelled
``dice``, ``dice_2``), which carries the schedule (``loss.schedule``).

>>> spec = parse("gdl + 0.01*boundary | boundary=linear(0.01, 1.0)")
>>> spec.names, spec.labels
(('gdl', 'boundary'), ('gdl', 'boundary'))
>>> loss = spec.build()
>>> loss.schedule.weights(step=0, total_steps=101)
{'boundary': 0.01}
>>> split_list("ce, dice, tversky(alpha=0.3, beta=0.7)")
['ce', 'dice', 'tversky(alpha=0.3, beta=0.7)']
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from torch import nn

from medsegloss._checks import check_term_weight
from medsegloss._literals import keyword_literals
from medsegloss.losses._registry import check_options, get, lookup
from medsegloss.losses.compound.named_sums import fused_pass
from medsegloss.losses.compound.schedule import Schedule, TermSchedule
from medsegloss.losses.compound.weighted_sum import WeightedSum

_UNSIGNED = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_NUMBER = rf"[-+]?{_UNSIGNED}"  # a schedule's numbers
# one term: [number *] name [(key=value, ...)] [* number]
_TERM = re.compile(
    rf"^\s*(?:(?P<pre>{_UNSIGNED})\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*"
    rf"(?:\((?P<args>[^()]*)\))?\s*(?:\*\s*(?P<post>{_UNSIGNED})\s*)?$"
)
_ENTRY = re.compile(r"^\s*(?P<term>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<kind>linear|step)\s*\((?P<args>[^()]*)\)\s*$")


@dataclass(frozen=True)
class Term:
    """One term of a loss string: the registry ``name``, its ``weight``, the ``options`` written in
    its parentheses, and its ``label`` in the sum (``name``, or ``name_2`` for the second of the same)."""

    name: str
    weight: float
    options: dict = field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class LossSpec:
    """A parsed loss string: its ``terms`` and the term-weight ``schedule`` (None without one)."""

    text: str
    terms: tuple[Term, ...]
    schedule: Schedule | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The registry names of the terms, each once, in order."""
        return tuple(dict.fromkeys(term.name for term in self.terms))

    @property
    def labels(self) -> tuple[str, ...]:
        """The terms' labels in the sum (its ``names``, ``last_values`` and schedule keys)."""
        return tuple(term.label for term in self.terms)

    @property
    def single(self) -> bool:
        """One unweighted term: built as that loss itself, not as a one-term sum."""
        return len(self.terms) == 1 and self.terms[0].weight == 1.0

    @property
    def options(self) -> list[str]:
        """The options some term takes: the ``common`` options :meth:`build` accepts (and the
        terms' deprecated names, for one release)."""
        return sorted({option for name in self.names for option in lookup(name).options})

    def with_schedule(self, text: str | None) -> LossSpec:
        """This spec with the schedule ``text`` (a config's ``loss_schedule``; None or empty: this
        spec); a spec with a schedule of its own refuses another."""
        if text is None or not text.strip():
            return self
        if self.schedule is not None:
            raise ValueError(f"loss {self.text!r} carries a schedule after '|' and the schedule {text!r} is "
                             "given too: keep one")
        return dataclasses.replace(self, schedule=_checked_schedule(text, self))

    def check_options(self, common: dict) -> None:
        """``TypeError`` naming the options of ``common`` that no term takes."""
        unknown = sorted(set(common) - {option for name in self.names for option in _accepted(name)})
        if not unknown:
            return
        if len(self.names) == 1:
            check_options(lookup(self.names[0]), common)
        from medsegloss._checks import did_you_mean

        raise TypeError(f"no term of loss {self.text!r} takes option(s) {', '.join(unknown)}."
                        f"{did_you_mean(unknown[0], self.options)} Options of its terms: {', '.join(self.options)}")

    def build(self, multilabel: bool = False, **common) -> nn.Module:
        """The loss module. ``common`` options (e.g. ``reduction="none"``) go to every term whose
        signature takes them, under the term's own options; an option no term takes is a
        ``TypeError``. ``multilabel=True``: every term in multi-label mode
        (:func:`~medsegloss.losses.get`; a term that cannot refuses)."""
        self.check_options(common)
        terms = []
        for term in self.terms:
            accepted = _accepted(term.name)
            options = {**{key: value for key, value in common.items() if key in accepted}, **term.options}
            terms.append((term.label, term.weight, get(term.name, multilabel=multilabel, **options)))
        if self.single:
            module = terms[0][2]
        else:
            module = WeightedSum(terms, joint=None if multilabel else fused_pass(terms))
        if self.schedule is not None:
            self.schedule.check_terms(module)  # a single named sum's terms are known once built
            module.schedule = self.schedule
        return module


def _accepted(name: str) -> set[str]:
    """The options the registered loss ``name`` takes, deprecated names included."""
    info = lookup(name)
    return set(info.options) | set(info.renamed_options)


def _split_outside(text: str, separator: str, what: str) -> list[str]:
    """``text`` split at ``separator`` outside parentheses; a ``+`` after ``1e`` is the sign of an
    exponent (``1e+2*dice``), not a separator."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            raise ValueError(f"unbalanced parentheses in {what} {text!r}")
        if char == separator and depth == 0 and not (separator == "+" and re.search(r"[0-9.][eE]$", current)):
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise ValueError(f"unbalanced parentheses in {what} {text!r}")
    return parts + [current]


def split_list(text: str) -> list[str]:
    """A comma-separated list of loss strings -> the strings (a comma inside parentheses belongs
    to a term's options or a schedule), empty items dropped."""
    return [item.strip() for item in _split_outside(text, ",", "loss list") if item.strip()]


def _parse_options(args: str, term: str) -> dict:
    try:
        return keyword_literals(args)
    except ValueError as error:
        raise ValueError(
            f"cannot read the options of term {term.strip()!r} ({error}): write them as key=value "
            f"pairs, each once, e.g. 'tversky(alpha=0.3, beta=0.7)'"
        ) from error


def _parse_term(raw: str, text: str) -> Term:
    if not raw.strip():
        raise ValueError(f"empty term in loss string {text!r}: a '+' needs a loss on each side")
    match = _TERM.match(raw)
    if not match:
        raise ValueError(f"cannot parse term {raw.strip()!r} of loss string {text!r}: expected "
                         "'[weight*]name[(key=value, ...)]', e.g. 'ce + 0.5*dice'")
    info = lookup(match["name"])  # unknown names fail here, with suggestions
    options = _parse_options(match["args"], raw)
    check_options(info, options)
    weight = check_term_weight(float(match["pre"] or 1.0) * float(match["post"] or 1.0),
                               f"term {raw.strip()!r} of loss string {text!r}")
    return Term(info.name, weight, options)


def parse(text: str) -> LossSpec:
    """A loss string -> :class:`LossSpec`, checked (names, option names, schedule) without building.

    ``"ce + 0.5*dice"``, ``"dice_ce"``, ``"0.5*ce + 0.5*tversky(alpha=0.3, beta=0.7)"``,
    ``"gdl + 0.01*boundary | boundary=linear(0.01, 1.0)"``. Weights default to 1; errors name
    the part that is wrong, an unknown loss the closest registered names.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a loss string must name at least one loss, e.g. 'ce + 0.5*dice'; got {text!r}")
    parts = _split_outside(text, "|", "loss string")
    if len(parts) > 2:
        raise ValueError(f"loss string {text!r} has {len(parts) - 1} '|': the terms come before one '|', "
                         "their schedule after it")
    terms = [_parse_term(raw, text) for raw in _split_outside(parts[0], "+", "loss string")]
    seen: dict[str, int] = {}
    for index, term in enumerate(terms):  # the same loss twice gets a numbered label
        seen[term.name] = seen.get(term.name, 0) + 1
        terms[index] = dataclasses.replace(term, label=term.name if seen[term.name] == 1 else f"{term.name}_{seen[term.name]}")
    spec = LossSpec(text.strip(), tuple(terms))
    return spec.with_schedule(parts[1]) if len(parts) == 2 else spec


def build(text: str, multilabel: bool = False, **common) -> nn.Module:
    """The loss of a loss string: ``parse(text).build(multilabel, **common)``.

    ``"ce + 0.5*dice"``, ``"dice_ce"``, ``"0.5*ce + 0.5*tversky(alpha=0.3, beta=0.7)"``. Weights
    default to 1; options in parentheses are passed to that term. ``common`` options (e.g.
    ``reduction="none"``, ``ignore_index=255``) go to every term whose signature takes them.
    A single unweighted term returns that loss itself rather than a one-term sum; a schedule
    after ``|`` is the returned sum's ``schedule``. ``multilabel=True`` puts every term in
    multi-label mode (overlapping regions, multi-hot targets ``(N, R, *spatial)``;
    :func:`~medsegloss.losses.get`); a term that cannot refuses.

    >>> loss = build("ce + 0.5*dice")
    >>> loss
    WeightedSum(
      1*ce + 0.5*dice
      (terms): ModuleList(
        (0): CrossEntropyLoss()
        (1): DiceLoss()
      )
    )
    """
    return parse(text).build(multilabel, **common)


# ---------------------------------------------------------------------------------------------
# The schedule after '|'


def _checked_schedule(text: str | None, spec: LossSpec) -> Schedule | None:
    """``text`` parsed, its terms checked against ``spec``'s labels (a single named sum's terms
    are known once built: :meth:`LossSpec.build` checks them then)."""
    schedule = parse_schedule(text)
    if schedule is None:
        return None
    if not spec.single:
        schedule.check_names(spec.labels)
    elif not lookup(spec.terms[0].name).is_sum:
        schedule.check_names(None, repr(spec.terms[0].name))
    return schedule


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


def _check_weight(weight: float, entry: str) -> float:
    """A scheduled weight: finite, in [0, MAX_TERM_WEIGHT] (0 switches a term off)."""
    return check_term_weight(weight, f"schedule entry {entry.strip()!r}", allow_zero=True)


def _parse_entry(entry: str) -> TermSchedule:
    match = _ENTRY.match(entry)
    if match is None:
        raise ValueError(f"schedule entry {entry.strip()!r} must look like 'term=linear(a, b)', "
                         "'term=linear(a, b, start_step, end_step)' or 'term=step(w0@0, w1@step1, ...)'")
    term, kind, args = match["term"], match["kind"], match["args"]
    if kind == "linear":
        values = _numbers(args, entry)
        for weight in values[:2]:
            _check_weight(weight, entry)
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
        points.append((start_value, _check_weight(weight_value, entry)))
    starts = [start for start, _ in points]
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise ValueError(f"schedule entry {entry.strip()!r}: step points must start at @0 and rise, got steps {starts}")
    return TermSchedule(term, kind, tuple(points))


def parse_schedule(text: str | None) -> Schedule | None:
    """``"term=linear(a, b); other=step(w@s, ...)"`` -> :class:`Schedule` (None for an empty text).
    Errors name the entry that is wrong."""
    if text is None or not text.strip():
        return None
    entries = [_parse_entry(entry) for entry in text.split(";") if entry.strip()]
    terms = [entry.term for entry in entries]
    if len(set(terms)) != len(terms):
        raise ValueError(f"schedule {text!r} names a term twice: {terms}")
    return Schedule(text.strip(), tuple(entries))
