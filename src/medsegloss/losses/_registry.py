"""Loss registry: name -> factory, with the family and paper on record.

Registry names are the public vocabulary (``get("tversky")``, ``build("ce + 0.5*dice")``, the
benchmark's ``--losses``). Registering a loss is enough to get it listed, built from strings and
run through the contract tests.
"""

from __future__ import annotations

from medsegloss._checks import unknown_name
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

FAMILIES = ("distribution", "region", "boundary", "compound")


@dataclass(frozen=True)
class LossInfo:
    """What the registry knows about a loss."""

    name: str
    family: str  # one of FAMILIES: how the survey (Ma et al., 2021) files it
    paper: str  # "Author et al., year" of the formula implemented
    factory: Callable[..., nn.Module]  # the class (or a small factory) that `get` calls
    function: Callable | None  # the functional form, `fn(logits, target, **options)`
    needs_distance: bool  # takes a precomputed signed distance map as `dist=`
    binary_only: bool  # defined for one-channel (sigmoid) logits only

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.splitlines()[0] if doc else ""

    @property
    def options(self) -> dict[str, object]:
        """The options ``get(name, **options)`` accepts, with their defaults."""
        return {
            name: parameter.default
            for name, parameter in inspect.signature(self.factory).parameters.items()
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        }


_REGISTRY: dict[str, LossInfo] = {}


def register(name: str, *, family: str, paper: str, function: Callable | None = None,
             needs_distance: bool = False, binary_only: bool = False):
    """Class (or factory) decorator adding a loss to the registry under ``name``."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def decorator(factory):
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is already registered")
        _REGISTRY[name] = LossInfo(name, family, paper, factory, function, needs_distance, binary_only)
        return factory

    return decorator


def lookup(name: str) -> LossInfo:
    """The registry entry of ``name``; an unknown name raises ``ValueError`` naming the closest."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("loss", name, available()) from None


def available(family: str | None = None) -> list[str]:
    """Registered loss names, grouped by family in the survey's order, then alphabetical."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    entries = [info for info in _REGISTRY.values() if family in (None, info.family)]
    entries.sort(key=lambda info: (FAMILIES.index(info.family), info.name))
    return [info.name for info in entries]


def get(name: str, **options) -> nn.Module:
    """Build the registered loss ``name`` with the given options (the paper's symbols)."""
    info = lookup(name)
    accepted = info.options
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"loss {name!r} has no option(s) {', '.join(unknown)}; its options are: "
            + ", ".join(f"{key}={value!r}" for key, value in accepted.items())
        )
    return info.factory(**options)
