"""Loss registry: name -> factory, with the family and paper on record.

Registry names are the public vocabulary (``get("tversky")``, ``build("ce + 0.5*dice")``, the
benchmark's ``--losses``). Registering a loss is enough to get it listed, built from strings and
run through the contract tests.

A loss is declared once: its function holds the math, and :func:`loss_class` makes the thin
module class from it and registers both, with the family, paper, short formula and the peer
libraries with an equal loss (tested). Each module's ``__all__`` comes from the registry
(:func:`exports`), and the catalogue tables of the README and docs/losses.md are generated from
it (:func:`catalogue_markdown`; ``python -m medsegloss.losses --markdown``), a test checking
they are current. The older form, ``@register(name, ..., function=f)`` on a ``FunctionalLoss``
subclass with ``function = staticmethod(f)``, still works.
"""

from __future__ import annotations

from medsegloss._checks import check_loss_options, unknown_name
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

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
    formula: str = ""  # the short formula of the catalogue tables
    peers: dict = field(default_factory=dict)  # {"monai": "DiceLoss", ...}: equal losses, tested
    # the gradient can vanish on unstructured noise (errors too thin for the method to see, as the
    # published erosion Hausdorff loss): the contract checks it on a shifted blob instead
    gradient_can_vanish: bool = False
    # why get(name, multilabel=True) is refused ("" when the loss scores overlapping regions)
    multilabel_refusal: str = ""

    @property
    def multilabel(self) -> bool:
        """Whether ``get(name, multilabel=True)`` works: overlapping regions, multi-hot targets
        ``(N, R, *spatial)``, the loss's binary form per region (:func:`medsegloss._ops.multilabel_loss`)."""
        return not self.multilabel_refusal

    @property
    def summary(self) -> str:
        if self.formula:
            return self.formula
        doc = inspect.getdoc(self.factory) or ""
        return doc.splitlines()[0] if doc else ""

    @property
    def is_sum(self) -> bool:
        """A named sum: a factory returning a WeightedSum, whose terms have weights (a single loss's
        factory is its module class)."""
        return not isinstance(self.factory, type)

    @property
    def renamed_options(self) -> dict[str, str]:
        """Deprecated option names, still accepted for one release: ``{old: new}``."""
        return dict(getattr(self.factory, "__renamed_options__", {}))

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
             needs_distance: bool = False, binary_only: bool = False, formula: str = "",
             peers: dict | None = None, gradient_can_vanish: bool = False, multilabel_refusal: str = ""):
    """Class (or factory) decorator adding a loss to the registry under ``name``. The named
    sums (factories returning a ``WeightedSum``) use it; single losses use :func:`loss_class`."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def decorator(factory):
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is already registered")
        _REGISTRY[name] = LossInfo(name, family, paper, factory, function, needs_distance, binary_only,
                                   formula, dict(peers or {}), gradient_can_vanish, multilabel_refusal)
        return factory

    return decorator


def loss_class(class_name: str, function: Callable, name: str, *, family: str, paper: str, formula: str,
               peers: dict | None = None, needs_distance: bool = False, binary_only: bool = False,
               gradient_can_vanish: bool = False, multilabel_refusal: str = "") -> type:
    """The thin module class of ``function``, registered under ``name``: the one declaration of
    a loss. The class (named ``class_name``, in the function's module, with its docstring)
    stores the options, which are the function's keyword-only parameters, and calls it.

    ``formula``: the short formula of the catalogue tables; ``peers``: the peer libraries' equal
    losses, ``{"monai": "DiceLoss"}``, only where a test checks the equality;
    ``gradient_can_vanish``: the gradient is exactly 0 on unstructured noise by the method's
    design (say why in the docstring); the contract tests its gradient on a shifted blob instead;
    ``multilabel_refusal``: why ``multilabel=True`` (overlapping regions) is refused, when it is.
    """
    from medsegloss._ops import FunctionalLoss

    cls = type(class_name, (FunctionalLoss,), {
        "function": staticmethod(function),
        "needs_distance": needs_distance,
        "multilabel_refusal": multilabel_refusal,
        "__renamed_options__": getattr(function, "__renamed_options__", {}),  # see renamed_options
        "__doc__": function.__doc__,
        "__module__": function.__module__,
        "__qualname__": class_name,
    })
    return register(name, family=family, paper=paper, function=function, needs_distance=needs_distance,
                    binary_only=binary_only, formula=formula, peers=peers,
                    gradient_can_vanish=gradient_can_vanish, multilabel_refusal=multilabel_refusal)(cls)


def exports(module_name: str, helpers: list[str] | tuple[str, ...] = ()) -> list[str]:
    """A family module's ``__all__``: the functions and classes of the losses registered from it
    (in registration order), then its public ``helpers``."""
    names = []
    for info in _REGISTRY.values():
        if getattr(info.factory, "__module__", None) != module_name:
            continue
        if info.function is not None:
            names.append(info.function.__name__)
        if isinstance(info.factory, type):
            names.append(info.factory.__name__)
    return names + list(helpers)


def catalogue_markdown(table: str = "catalogue") -> str:
    """The registry as a Markdown table: ``"catalogue"`` (one row per loss: name, family, paper,
    formula, ``dist``, multilabel, peers; docs/losses.md) or ``"families"`` (family | registry names; README)."""
    if table == "families":
        rows = ["| family | registry names |", "|---|---|"]
        for family in FAMILIES:
            rows.append(f"| {family} | " + ", ".join(f"`{name}`" for name in available(family)) + " |")
        return "\n".join(rows) + "\n"
    if table != "catalogue":
        raise ValueError(f"table must be 'catalogue' or 'families', got {table!r}")
    libraries = {"monai": "MONAI", "smp": "SMP", "kornia": "kornia"}  # one column each: the equal loss, tested
    unknown = sorted({library for info in _REGISTRY.values() for library in info.peers} - set(libraries))
    if unknown:
        raise ValueError(f"peers name libraries without a catalogue column: {unknown}")
    rows = ["| name | family | paper | formula | `dist` | multilabel | " + " | ".join(libraries.values()) + " |",
            "|---|---|---|---|---|---|" + "---|" * len(libraries)]
    for name in available():
        info = _REGISTRY[name]
        peers = " | ".join(f"`{info.peers[library]}`" if library in info.peers else "" for library in libraries)
        formula = info.summary.replace("|", "\\|")
        if info.gradient_can_vanish:
            formula += " (gradient can vanish on unstructured noise: add it to a region loss)"
        rows.append(f"| `{name}` | {info.family} | {info.paper} | {formula} | "
                    f"{'yes' if info.needs_distance else ''} | {'yes' if info.multilabel else 'no'} | {peers} |")
    return "\n".join(rows) + "\n"


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


def renamed_options(renamed: dict[str, str]):
    """Decorator for a loss function or factory whose options were renamed: the old names are
    accepted for one release, with a ``DeprecationWarning`` naming the new one (so old loss
    strings, bench and CLI arguments keep working). ``get`` reads ``__renamed_options__``."""
    import functools
    import warnings

    def decorator(function):
        @functools.wraps(function)
        def wrapper(*args, **options):
            return function(*args, **translate_options(options, renamed, function.__name__, warnings))

        wrapper.__renamed_options__ = dict(renamed)
        return wrapper

    return decorator


def translate_options(options: dict, renamed: dict[str, str], owner: str, warnings=None) -> dict:
    """``options`` with deprecated names replaced by the new ones (a warning each)."""
    import warnings as warnings_module

    out = dict(options)
    for old, new in renamed.items():
        if old in out:
            if new in out:
                raise TypeError(f"{owner}: give {new}= only ({old}= is its deprecated name)")
            warnings_module.warn(f"{owner}: option {old}= is renamed {new}=; the old name goes in the next release",
                                 DeprecationWarning, stacklevel=4)
            out[new] = out.pop(old)
    return out


def as_multilabel(module: nn.Module, name: str | None = None) -> nn.Module:
    """Switch a built loss to multi-label mode in place: a single loss scores each region with
    its binary form; a ``WeightedSum`` switches every term (and drops its one-pass joint
    computation, written for softmax labels). Refusals name the loss."""
    if hasattr(module, "set_multilabel"):
        module.set_multilabel()
    elif hasattr(module, "terms") and hasattr(module, "joint"):
        for term in module.terms:
            as_multilabel(term)
        module.joint = None
    else:
        raise ValueError(f"loss {name or type(module).__name__!r} does not support multilabel=True")
    return module


def check_options(info: LossInfo, options) -> None:
    """``TypeError`` naming the options of ``options`` that the loss does not take (its deprecated
    names count as taken), and listing the ones it does."""
    unknown = sorted(set(options) - set(info.options) - set(info.renamed_options))
    if unknown:  # the one wording (_checks.check_loss_options), which also checks the values
        check_loss_options(info.name, {key: options[key] for key in unknown}, info.options)


def get(name: str, multilabel: bool = False, **options) -> nn.Module:
    """Build the registered loss ``name`` with the given options (the paper's symbols).

    ``multilabel=True``: overlapping regions, logits ``(N, R, *spatial)`` with one sigmoid per
    channel and a multi-hot target of the same shape (docs/losses.md, "Multi-label"); losses
    that cannot (``info(name).multilabel`` is False) raise ``ValueError`` saying why."""
    info = lookup(name)
    if multilabel and not info.multilabel:
        raise ValueError(f"loss {name!r} does not support multilabel=True: {info.multilabel_refusal}")
    options = translate_options(options, info.renamed_options, name)
    numeric = {key for other in _REGISTRY.values() for key, value in other.options.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}  # e.g. focal's alpha=None
    check_loss_options(name, options, info.options, numeric)
    module = info.factory(**options)
    return as_multilabel(module, name) if multilabel else module
