"""The one composition mechanism of the compound family: :class:`WeightedSum`, a weighted sum of
loss modules that keeps each term's last value for logging. ``build("ce + 0.5*dice")`` parses a
string into it (:mod:`~medsegloss.losses.compound.language`) and the named sums
(:mod:`~medsegloss.losses.compound.named_sums`) are small factories returning it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _call(loss: nn.Module, logits: torch.Tensor, target: torch.Tensor, dist: torch.Tensor | None) -> torch.Tensor:
    """Call a loss, passing the distance maps only to losses that take them."""
    return loss(logits, target, dist=dist) if getattr(loss, "needs_distance", False) else loss(logits, target)


class WeightedSum(nn.Module):
    """``Σ_i w_i · loss_i(logits, target)``, keeping each term's last value for logging.

    Args:
        terms: ``(name, weight, loss module)`` triples; names label the logged values.
        joint: optional function ``joint(logits, target, dist=None) -> {name: value}`` computing
            every term at once (sharing the softmax); it must equal calling the terms one by one.
            The named sums use it for speed (``dice_ce``), and so does ``build`` for ``ce + dice``.

    ``weights`` is a dict ``{name: weight}`` that may be changed between steps, e.g. raising the
    boundary term of ``gdl_boundary`` on a schedule: ``loss.weights["boundary"] = 0.05``.
    ``schedule``: the term weights over the optimizer steps written after ``|`` in the loss string
    (:class:`~medsegloss.losses.compound.schedule.Schedule`, set by ``build``; None without one):
    ``loss.schedule.apply(loss, step, total_steps)`` sets them.
    ``last_values`` holds each term's last (unweighted, detached) value as a float; the total is
    the weighted sum. Terms that need a distance map (``needs_distance``) receive ``dist=``.

    Shape:
        logits ``(N, C, *spatial)``; target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        floats; returns a scalar, or ``(N,)`` when every term has ``reduction="none"``.
    """

    schedule = None  # the term weights over the steps, when the loss string gave them ('|')

    def __init__(self, terms: list[tuple[str, float, nn.Module]], joint: Callable | None = None):
        super().__init__()
        if not terms:
            raise ValueError("a WeightedSum needs at least one term")
        names = [name for name, _, _ in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"term names must be unique, got {names}")
        self.names = names
        self.weights = {name: float(weight) for name, weight, _ in terms}
        self.terms = nn.ModuleList(module for _, _, module in terms)
        self.joint = joint
        self.needs_distance = any(getattr(module, "needs_distance", False) for module in self.terms)
        self._last: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor, dist: torch.Tensor | None = None) -> torch.Tensor:
        if self.joint is not None:
            values = self.joint(logits, target, dist=dist)
        else:
            values = {name: _call(term, logits, target, dist) for name, term in zip(self.names, self.terms)}
        total = 0.0
        for name in self.names:
            self._last[name] = values[name].detach()
            total = total + self.weights[name] * values[name]
        return total

    @property
    def last_values(self) -> dict[str, float]:
        """Each term's last value (unweighted; the mean when a term returned ``(N,)``)."""
        return {name: float(value.float().mean()) for name, value in self._last.items()}

    @property
    def last_tensors(self) -> dict[str, torch.Tensor]:
        """Each term's last value as a detached tensor on the loss's device: logging that sums
        them over an epoch need not synchronise with the GPU every step."""
        return dict(self._last)

    def extra_repr(self) -> str:
        return " + ".join(f"{self.weights[name]:g}*{name}" for name in self.names)
