"""Compound losses: weighted sums of registered losses, and the named compounds of the survey.

``WeightedSum`` is the one composition mechanism: ``build("ce + 0.5*dice")`` parses a string
into it, and the named sums (``dice_ce``, ``dice_bce``, ``dice_focal``, ``dice_topk``,
``gdl_boundary``) are small factories returning it. Losses that are not plain sums (Combo,
exponential-log, BASNet's BCE+IoU+SSIM, the lesion-level focal loss) are their own functions in
:mod:`medsegloss.losses.compound_formulas`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from medsegloss._checks import check_non_negative, check_reduction, check_target
from medsegloss._ops import (
    at_least_float32, cross_entropy_map, per_voxel_reduce, probabilities, reduce, soft_counts,
    fused_soft_counts, target_probabilities, use_fused,
)
from medsegloss.losses._registry import exports, get, lookup, register, renamed_options



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
    ``last_values`` holds each term's last (unweighted, detached) value as a float; the total is
    the weighted sum. Terms that need a distance map (``needs_distance``) receive ``dist=``.

    Shape:
        logits ``(N, C, *spatial)``; target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        floats; returns a scalar, or ``(N,)`` when every term has ``reduction="none"``.
    """

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


# one term: [number *] name [(key=value, ...)] [* number]
_NUMBER = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_TERM = re.compile(
    rf"^\s*(?:(?P<pre>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*"
    rf"(?:\((?P<args>[^()]*)\))?\s*(?:\*\s*(?P<post>{_NUMBER})\s*)?$"
)


def _split_terms(spec: str) -> list[str]:
    """Split on '+' outside parentheses (not the sign of an exponent, as in ``1e+2*dice``)."""
    terms, depth, current = [], 0, ""
    for char in spec:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            raise ValueError(f"unbalanced parentheses in loss string {spec!r}")
        if char == "+" and depth == 0 and not re.search(r"[0-9.][eE]$", current):
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
        if call.args or any(keyword.arg is None for keyword in call.keywords):
            raise ValueError("positional or ** arguments")
        names = [keyword.arg for keyword in call.keywords]
        if len(set(names)) != len(names):
            raise ValueError("an option given twice")
        return {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
    except (SyntaxError, ValueError) as error:
        raise ValueError(
            f"cannot read the options of term {term.strip()!r} ({error}): write them as key=value "
            f"pairs, each once, e.g. 'tversky(alpha=0.3, beta=0.7)'"
        ) from error


def build(spec: str, multilabel: bool = False, **common) -> nn.Module:
    """A weighted sum of registered losses parsed from a string.

    ``"ce + 0.5*dice"``, ``"dice_ce"``, ``"0.5*ce + 0.5*tversky(alpha=0.3, beta=0.7)"``. Weights
    default to 1; options in parentheses are passed to that term. ``common`` options (e.g.
    ``reduction="none"``, ``ignore_index=255``) go to every term whose signature takes them.
    A single unweighted term returns that loss itself rather than a one-term sum.
    ``multilabel=True`` puts every term in multi-label mode (overlapping regions, multi-hot
    targets ``(N, R, *spatial)``; :func:`~medsegloss.losses.get`); a term that cannot refuses.

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
        if not raw.strip():
            raise ValueError(f"empty term in loss string {spec!r}: a '+' needs a loss on each side")
        match = _TERM.match(raw)
        if not match:
            raise ValueError(
                f"cannot parse term {raw.strip()!r} of loss string {spec!r}: expected "
                "'[weight*]name[(key=value, ...)]', e.g. 'ce + 0.5*dice'"
            )
        name = match["name"]
        info = lookup(name)  # unknown names fail here, with suggestions
        weight = check_non_negative(f"the weight of term {raw.strip()!r}",
                                    float(match["pre"] or 1.0) * float(match["post"] or 1.0))  # 1e999: inf
        options = {key: value for key, value in common.items() if key in info.options}
        options.update(_parse_options(match["args"], raw))
        terms.append((name, weight, get(name, multilabel=multilabel, **options)))
    if len(terms) == 1 and terms[0][1] == 1.0:
        return terms[0][2]
    # the same loss twice with different options gets a numbered label
    seen: dict[str, int] = {}
    labelled = []
    for name, weight, module in terms:
        seen[name] = seen.get(name, 0) + 1
        labelled.append((name if seen[name] == 1 else f"{name}_{seen[name]}", weight, module))
    return WeightedSum(labelled, joint=None if multilabel else _joint_for(labelled))


def _joint_for(terms: list[tuple[str, float, nn.Module]]) -> Callable | None:
    """The one-pass computation of ``terms`` where one exists: ``ce`` + ``dice`` (the reference
    experiment's ``"ce + 1.0*dice"``) is exactly what ``dice_ce`` fuses, whatever the weights,
    as long as the two share ``ignore_index``/``reduction`` and use no option the fused pass lacks."""
    modules = {name: module for name, _, module in terms}
    if set(modules) != {"ce", "dice"}:
        return None
    ce, dice = modules["ce"].options, modules["dice"].options
    shared = ("ignore_index", "reduction")
    fused_dice = {"smooth", "include_background", "weight", "batch", "squared", *shared}
    if set(ce) - {"label_smoothing", *shared} or ce.get("label_smoothing", 0.0) \
            or set(dice) - fused_dice or dice.get("squared", False):
        return None
    if any(ce.get(key, default) != dice.get(key, default) for key, default in zip(shared, (None, "mean"))):
        return None
    return partial(dice_ce_terms, **{key: value for key, value in dice.items() if key != "squared"})


# ---------------------------------------------------------------------------------------------
# Named sums: registered factories returning a WeightedSum, and their functional forms.


def _term(name: str, **options) -> nn.Module:
    """The registered loss ``name`` with those of ``options`` its signature takes (a named sum's
    options are shared by its terms: ``smooth`` goes to Dice, not to CE)."""
    accepted = lookup(name).options
    return get(name, **{key: value for key, value in options.items() if key in accepted})


def dice_ce_terms(logits: torch.Tensor, target: torch.Tensor, *, dist=None, smooth: float = 1e-5, weight=None,
                  include_background: bool = True, ignore_index: int | None = None, batch: bool = False,
                  reduction: str = "mean") -> dict[str, torch.Tensor]:
    """``{"ce": ce_loss, "dice": dice_loss}`` computed together, equal to the two losses computed
    apart (``weight``, ``batch``: the Dice term's). Labels without ``ignore_index`` (softmax
    logits on the CPU, or one-channel logits with labels or soft labels) take one fused pass
    (:func:`~medsegloss._ops.use_fused`, :func:`~medsegloss._ops.fused_soft_counts`); otherwise
    one log-softmax feeds both."""
    from medsegloss.losses.region import _pool, reduce_classes

    check_reduction(reduction)
    target = check_target(target, logits, ignore_index)
    logits = at_least_float32(logits)
    n, c = logits.shape[:2]
    labels = not target.is_floating_point()
    if use_fused(logits, target, ignore_index, label_counts=True):
        ce, tp, fp, fn = fused_soft_counts(logits, target if labels else target[:, 0], with_ce=True)
        ce = reduce(ce, reduction)
    else:
        if c == 1:  # binary: BCE with logits is one fused kernel already
            probs, ce_map = probabilities(logits), cross_entropy_map(logits, target, ignore_index)
        else:
            log_probs = torch.log_softmax(logits, 1)
            probs = log_probs.exp()
            ce_map = (F.nll_loss(log_probs, target, reduction="none",
                                 ignore_index=-100 if ignore_index is None else ignore_index)
                      if labels else -(target * log_probs).sum(1))
        onehot, valid = target_probabilities(target, c, ignore_index, probs.dtype)
        tp, fp, fn = soft_counts(probs, onehot, valid)
        ce = per_voxel_reduce(ce_map, None if valid is None else valid[:, 0], reduction)
    tp, fp, fn = _pool((tp, fp, fn), batch)
    dice = reduce_classes(1.0 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth), n, weight,
                          include_background=include_background, reduction=reduction)
    return {"ce": ce, "dice": dice}


@renamed_options({"alpha": "weight_dice"})
def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, *, weight_dice: float = 1.0, smooth: float = 1e-5,
                 squared: bool = False, weight=None, batch: bool = False, label_smoothing: float = 0.0,
                 include_background: bool = True, ignore_index: int | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    r"""Dice + cross-entropy: ``L = CE + w_dice · (1 − Dice)`` (the reference experiment's loss at
    ``weight_dice = 1``).

    .. math:: L = -\frac{1}{V}\sum_v \log p_{v, y_v} + w_{dice} \Big(1 - \frac{1}{|K|}\sum_{c \in K}
              \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}\Big)

    Softmax CE for ``C >= 2``, sigmoid (binary) CE for one-channel logits; the Dice term is
    :func:`~medsegloss.losses.region.dice_loss`. The terms take their own options: Dice
    ``smooth``, ``squared``, ``weight`` (class weights: the Dice term only), ``batch``,
    ``include_background``; CE ``label_smoothing``; both ``ignore_index``. Equal to MONAI's
    ``DiceCELoss`` (``lambda_ce = 1``, ``lambda_dice = w_dice``; without ``weight``, which MONAI
    also gives its CE). Both terms from one pass where the options allow.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> dice_ce_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    return dice_ce(weight_dice=weight_dice, smooth=smooth, squared=squared, weight=weight, batch=batch,
                   label_smoothing=label_smoothing, include_background=include_background,
                   ignore_index=ignore_index, reduction=reduction)(logits, target)


@register("dice_ce", family="compound", paper="Isensee et al., 2021 (nnU-Net); Ma et al., 2021",
          function=dice_ce_loss, peers={"monai": "DiceCELoss"})
@renamed_options({"alpha": "weight_dice"})
def dice_ce(*, weight_dice: float = 1.0, smooth: float = 1e-5, squared: bool = False, weight=None,
            batch: bool = False, label_smoothing: float = 0.0, include_background: bool = True,
            ignore_index: int | None = None, reduction: str = "mean") -> WeightedSum:
    """Cross-entropy + weight_dice·Dice (1: the reference experiment's loss), as a WeightedSum."""
    options = dict(smooth=smooth, squared=squared, weight=weight, batch=batch, label_smoothing=label_smoothing,
                   include_background=include_background, ignore_index=ignore_index, reduction=reduction)
    terms = [("ce", 1.0, _term("ce", **options)), ("dice", weight_dice, _term("dice", **options))]
    joint = None
    if not squared and not label_smoothing:  # the one-pass computation covers the rest
        joint = partial(dice_ce_terms, smooth=smooth, weight=weight, batch=batch,
                        include_background=include_background, ignore_index=ignore_index, reduction=reduction)
    return WeightedSum(terms, joint=joint)


@renamed_options({"gamma": "weight_bce"})
def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, *, weight_bce: float = 1.0, smooth: float = 1e-5,
                  squared: bool = False, weight=None, batch: bool = False, include_background: bool = True,
                  ignore_index: int | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Dice + binary cross-entropy: ``L = (1 − Dice) + w_bce · BCE``.

    The BCE term is the registered ``bce`` loss (sigmoid per channel); the Dice term ``dice``.
    Term options: Dice ``smooth``, ``squared``, ``batch``, ``include_background``; class
    ``weight`` (one per channel) to both; ``ignore_index`` to both.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    >>> dice_bce_loss(logits, torch.randint(0, 2, (2, 8, 8))).backward()
    """
    return dice_bce(weight_bce=weight_bce, smooth=smooth, squared=squared, weight=weight, batch=batch,
                    include_background=include_background, ignore_index=ignore_index, reduction=reduction)(logits, target)


@register("dice_bce", family="compound", paper="Ma et al., 2021 (survey)", function=dice_bce_loss)
@renamed_options({"gamma": "weight_bce"})
def dice_bce(*, weight_bce: float = 1.0, smooth: float = 1e-5, squared: bool = False, weight=None, batch: bool = False,
             include_background: bool = True, ignore_index: int | None = None, reduction: str = "mean") -> WeightedSum:
    """Dice + weight_bce·binary cross-entropy (sigmoid per channel), as a WeightedSum."""
    options = dict(smooth=smooth, squared=squared, weight=weight, batch=batch, include_background=include_background,
                   ignore_index=ignore_index, reduction=reduction)
    return WeightedSum([("dice", 1.0, _term("dice", **options)), ("bce", weight_bce, _term("bce", **options))])


@renamed_options({"lambda_focal": "weight_focal"})
def dice_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, weight_focal: float = 0.5, gamma: float = 2.0,
                    alpha=None, smooth: float = 1e-5, squared: bool = False, weight=None, batch: bool = False,
                    include_background: bool = True, ignore_index: int | None = None,
                    reduction: str = "mean") -> torch.Tensor:
    r"""Dice + focal (Zhu et al., 2019, AnatomyNet): ``L = (1 − Dice) + w_focal · Focal_γ``.

    Term options: focal ``gamma`` (the exponent) and ``alpha`` (its per-label weights); Dice
    ``smooth``, ``squared``, ``weight`` (class weights: the Dice term only), ``batch``,
    ``include_background``; both ``ignore_index``. MONAI's ``DiceFocalLoss`` uses a sigmoid
    focal term per channel: equal for one-channel logits and multi-label regions (tested).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> dice_focal_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    return dice_focal(weight_focal=weight_focal, gamma=gamma, alpha=alpha, smooth=smooth, squared=squared,
                      weight=weight, batch=batch, include_background=include_background, ignore_index=ignore_index,
                      reduction=reduction)(logits, target)


@register("dice_focal", family="compound", paper="Zhu et al., 2019 (AnatomyNet)", function=dice_focal_loss,
          peers={"monai": "DiceFocalLoss (binary, multilabel)"})
@renamed_options({"lambda_focal": "weight_focal"})
def dice_focal(*, weight_focal: float = 0.5, gamma: float = 2.0, alpha=None, smooth: float = 1e-5,
               squared: bool = False, weight=None, batch: bool = False, include_background: bool = True,
               ignore_index: int | None = None, reduction: str = "mean") -> WeightedSum:
    """Dice + weight_focal·focal (AnatomyNet: 0.5, γ = 2), as a WeightedSum."""
    options = dict(gamma=gamma, alpha=alpha, smooth=smooth, squared=squared, weight=weight, batch=batch,
                   include_background=include_background, ignore_index=ignore_index, reduction=reduction)
    return WeightedSum([("dice", 1.0, _term("dice", **options)), ("focal", weight_focal, _term("focal", **options))])


@renamed_options({"lambda_topk": "weight_topk"})
def dice_topk_loss(logits: torch.Tensor, target: torch.Tensor, *, k: float = 10.0, weight_topk: float = 1.0,
                   smooth: float = 1e-5, squared: bool = False, weight=None, batch: bool = False,
                   include_background: bool = True, ignore_index: int | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    r"""Dice + TopK (nnU-Net's DC+TopK10): ``L = (1 − Dice) + w_topk · TopK_k``.

    Term options: TopK ``k``; Dice ``smooth``, ``squared``, ``weight`` (class weights: the Dice
    term only), ``batch``, ``include_background``; both ``ignore_index``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> dice_topk_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    return dice_topk(k=k, weight_topk=weight_topk, smooth=smooth, squared=squared, weight=weight, batch=batch,
                     include_background=include_background, ignore_index=ignore_index, reduction=reduction)(logits, target)


@register("dice_topk", family="compound", paper="Isensee et al., 2021 (nnU-Net); Ma et al., 2021",
          function=dice_topk_loss)
@renamed_options({"lambda_topk": "weight_topk"})
def dice_topk(*, k: float = 10.0, weight_topk: float = 1.0, smooth: float = 1e-5, squared: bool = False, weight=None,
              batch: bool = False, include_background: bool = True, ignore_index: int | None = None,
              reduction: str = "mean") -> WeightedSum:
    """Dice + weight_topk·TopK cross-entropy (the k % hardest voxels; nnU-Net's DC+TopK10), as a WeightedSum."""
    options = dict(k=k, smooth=smooth, squared=squared, weight=weight, batch=batch,
                   include_background=include_background, ignore_index=ignore_index, reduction=reduction)
    return WeightedSum([("dice", 1.0, _term("dice", **options)), ("topk", weight_topk, _term("topk", **options))])


@renamed_options({"alpha": "weight_boundary"})
def gdl_boundary_loss(logits: torch.Tensor, target: torch.Tensor, *, dist: torch.Tensor | None = None,
                      weight_boundary: float = 0.01, spacing=None, reduction: str = "mean") -> torch.Tensor:
    r"""Generalized Dice + boundary loss (Kervadec et al., 2019): ``L = GDL + w_boundary · L_B``.

    ``L_B`` is :func:`~medsegloss.losses.boundary.boundary_loss` on the target's signed distance
    maps ``dist`` (computed when None). The paper starts at α = 0.01 and raises it by 0.01 per
    epoch; with the registered class, change ``loss.weights["boundary"]``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)``
        floats, dist ``(N, C, *spatial)`` or None; returns a scalar, or ``(N,)`` for
        ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> gdl_boundary_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    return gdl_boundary(weight_boundary=weight_boundary, spacing=spacing, reduction=reduction)(logits, target, dist=dist)



@register("gdl_boundary", family="compound", paper="Kervadec et al., 2019", function=gdl_boundary_loss,
          needs_distance=True)
@renamed_options({"alpha": "weight_boundary"})
def gdl_boundary(*, weight_boundary: float = 0.01, spacing=None, reduction: str = "mean") -> WeightedSum:
    """Generalized Dice + weight_boundary·boundary loss, as a WeightedSum (``loss.weights["boundary"]``).

    Kervadec et al. start at α = 0.01 and raise it by 0.01 per epoch: set
    ``loss.weights["boundary"]`` between epochs."""
    return WeightedSum([("gdl", 1.0, _term("gdl", reduction=reduction)),
                        ("boundary", weight_boundary, _term("boundary", spacing=spacing, reduction=reduction))])


__all__ = exports(__name__, ["WeightedSum", "build"])
