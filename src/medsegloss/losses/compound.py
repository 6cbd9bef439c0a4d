"""Compound losses: weighted sums of registered losses, and the named compounds of the survey.

``WeightedSum`` is the one composition mechanism: ``build("ce + 0.5*dice")`` parses a string
into it, and the named sums (``dice_ce`` ...) are small factories returning it. Losses that are
not plain sums (Combo, exponential-log) are their own functions built from the same primitives.
"""

from __future__ import annotations

import ast
import re

import torch
from torch import nn

from medsegloss.losses._registry import get, lookup

__all__ = ["WeightedSum"]


class WeightedSum(nn.Module):
    """``Σ_i w_i · loss_i(logits, target)``, keeping each term's last value for logging.

    Args:
        terms: ``(name, weight, loss module)`` triples; names label the logged values.

    ``last_values`` holds each term's last (unweighted, detached) value as a float; the total is
    the weighted sum. Terms that need a distance map (``needs_distance``) receive ``dist=``.

    Shape:
        logits ``(N, C, *spatial)``; target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        floats; returns a scalar, or ``(N,)`` when every term has ``reduction="none"``.
    """

    def __init__(self, terms: list[tuple[str, float, nn.Module]]):
        super().__init__()
        if not terms:
            raise ValueError("a WeightedSum needs at least one term")
        names = [name for name, _, _ in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"term names must be unique, got {names}")
        self.names = names
        self.weights = [float(weight) for _, weight, _ in terms]
        self.terms = nn.ModuleList(module for _, _, module in terms)
        self.needs_distance = any(getattr(module, "needs_distance", False) for module in self.terms)
        self._last: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor, dist: torch.Tensor | None = None) -> torch.Tensor:
        total = 0.0
        for name, weight, term in zip(self.names, self.weights, self.terms):
            value = term(logits, target, dist=dist) if getattr(term, "needs_distance", False) else term(logits, target)
            self._last[name] = value.detach()
            total = total + weight * value
        return total

    @property
    def last_values(self) -> dict[str, float]:
        """Each term's last value (unweighted; the mean when a term returned ``(N,)``)."""
        return {name: float(value.float().mean()) for name, value in self._last.items()}

    def extra_repr(self) -> str:
        return " + ".join(f"{weight:g}*{name}" for name, weight in zip(self.names, self.weights))


# one term: [number *] name [(key=value, ...)] [* number]
_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_TERM = re.compile(
    rf"^\s*(?:(?P<pre>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*"
    rf"(?:\((?P<args>[^()]*)\))?\s*(?:\*\s*(?P<post>{_NUMBER})\s*)?$"
)


def _split_terms(spec: str) -> list[str]:
    """Split on '+' outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in spec:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            raise ValueError(f"unbalanced parentheses in loss string {spec!r}")
        if char == "+" and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise ValueError(f"unbalanced parentheses in loss string {spec!r}")
    return terms + [current]


def _parse_options(args: str, term: str) -> dict:
    if not args or not args.strip():
        return {}
    try:
        call = ast.parse(f"f({args})", mode="eval").body
        if call.args:
            raise ValueError("positional")
        return {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
    except (SyntaxError, ValueError) as error:
        raise ValueError(
            f"cannot read the options of term {term.strip()!r}: write them as key=value pairs, "
            f"e.g. 'tversky(alpha=0.3, beta=0.7)'"
        ) from error


def build(spec: str, **common) -> nn.Module:
    """A weighted sum of registered losses parsed from a string.

    ``"ce + 0.5*dice"``, ``"dice_ce"``, ``"0.5*ce + 0.5*tversky(alpha=0.3, beta=0.7)"``. Weights
    default to 1; options in parentheses are passed to that term. ``common`` options (e.g.
    ``reduction="none"``, ``ignore_index=255``) go to every term whose signature takes them.
    A single unweighted term returns that loss itself rather than a one-term sum.

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
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a loss string must name at least one loss, e.g. 'ce + 0.5*dice'; got {spec!r}")
    terms = []
    for raw in _split_terms(spec):
        match = _TERM.match(raw)
        if not match:
            raise ValueError(
                f"cannot parse term {raw.strip()!r} of loss string {spec!r}: expected "
                "'[weight*]name[(key=value, ...)]', e.g. 'ce + 0.5*dice'"
            )
        name = match["name"]
        info = lookup(name)  # unknown names fail here, with suggestions
        weight = float(match["pre"] or 1.0) * float(match["post"] or 1.0)
        options = {key: value for key, value in common.items() if key in info.options}
        options.update(_parse_options(match["args"], raw))
        terms.append((name, weight, get(name, **options)))
    if len(terms) == 1 and terms[0][1] == 1.0:
        return terms[0][2]
    # the same loss twice with different options gets a numbered label
    seen: dict[str, int] = {}
    labelled = []
    for name, weight, module in terms:
        seen[name] = seen.get(name, 0) + 1
        labelled.append((name if seen[name] == 1 else f"{name}_{seen[name]}", weight, module))
    return WeightedSum(labelled)

