"""Metric registry: name -> function, with direction, unit and empty-mask rule on record.

Registry names are the public vocabulary of ``evaluate(..., metrics=("dice", "hd95"))``, the
experiment config's ``metrics`` field and ``medsegloss metrics``.
"""

from __future__ import annotations

from medsegloss._checks import did_you_mean, unknown_name
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("overlap", "surface")


@dataclass(frozen=True)
class MetricInfo:
    """What the registry knows about a metric."""

    name: str
    kind: str  # "overlap": from the confusion counts; "surface": from surface distances
    higher_is_better: bool
    unit: str  # "fraction" (in [0, 1]) or "spacing units" (mm when the spacing is in mm)
    perfect: float  # value of a perfect prediction (also: both masks empty, empty="worst")
    worst: float | None  # worst value; None: the image diagonal (distances)
    empty_rule: str  # one line: what an empty mask gives (the full table is in the docs)
    function: Callable  # the public binary-mask function, fn(pred, ref, ...)
    from_parts: Callable  # fn(counts_or_distances, empty) -> float, used by evaluate
    # the practical-equivalence margin of a benchmark verdict: a difference smaller than this is
    # no finding (Dice/IoU 0.01; pixel error 0.1 percentage point; distances 1 spacing unit)
    margin: float = 0.01

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.function) or ""
        return doc.splitlines()[0] if doc else ""

    @property
    def options(self) -> dict[str, object]:
        """The keyword options of the binary function, with their defaults."""
        return {
            name: parameter.default
            for name, parameter in list(inspect.signature(self.function).parameters.items())[2:]
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        }


_REGISTRY: dict[str, MetricInfo] = {}


def register(name: str, *, kind: str, higher_is_better: bool, unit: str, perfect: float,
             worst: float | None, empty_rule: str, from_parts: Callable, margin: float = 0.01):
    """Function decorator adding a binary-mask metric to the registry under ``name``; ``margin``
    is its practical-equivalence margin (in the metric's unit) for benchmark verdicts."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def decorator(function):
        if name in _REGISTRY:
            raise ValueError(f"metric {name!r} is already registered")
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin!r}")
        _REGISTRY[name] = MetricInfo(name, kind, higher_is_better, unit, perfect, worst, empty_rule,
                                     function, from_parts, float(margin))
        return function

    return decorator


def lookup(name: str) -> MetricInfo:
    """The registry entry of ``name``; an unknown name raises ``ValueError`` naming the closest."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("metric", name, available()) from None


def check_names(names, argument: str = "metrics") -> None:
    """Fail naming ``argument`` (a config field or CLI option), the unknown names and the closest
    registered ones when ``names`` holds a metric that is not registered, or none at all."""
    known = available()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"{argument}: unknown metric(s) {', '.join(map(repr, unknown))}."
                         f"{did_you_mean(unknown[0], known)} Registered: {', '.join(known)}")
    if not names:
        raise ValueError(f"{argument}: give at least one metric (registered: {', '.join(known)})")


def available(kind: str | None = None) -> list[str]:
    """Registered metric names: overlap metrics first, then surface metrics, in registration order."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return [info.name for kind_ in KINDS for info in _REGISTRY.values()
            if info.kind == kind_ and kind in (None, kind_)]


def get(name: str, **options) -> Callable:
    """The binary-mask function of metric ``name``, with ``options`` bound (e.g. ``tolerance``)."""
    info = lookup(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise TypeError(
            f"metric {name!r} has no option(s) {', '.join(unknown)}; its options are: "
            + ", ".join(f"{key}={value!r}" for key, value in info.options.items())
        )
    return functools.partial(info.function, **options) if options else info.function
