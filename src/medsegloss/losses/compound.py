"""Compound losses: weighted sums of registered losses, and the named compounds of the survey.

``WeightedSum`` is the one composition mechanism: ``build("ce + 0.5*dice")`` parses a string
into it, and the named sums (``dice_ce``, ``dice_bce``, ``dice_focal``, ``dice_topk``,
``gdl_boundary``) are small factories returning it. Losses that are not plain sums (Combo,
exponential-log, BASNet's BCE+IoU+SSIM, the lesion-level focal loss) are their own functions built
from the same primitives.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from medsegloss._checks import check_probability, check_reduction, check_target, check_weight
from medsegloss._ops import (
    FunctionalLoss, at_least_float32, cross_entropy_map, per_voxel_reduce, probabilities, reduce, select_classes,
    soft_counts, target_probabilities,
)
from medsegloss.losses._registry import get, lookup, register

__all__ = [
    "WeightedSum", "build",
    "dice_ce_loss", "dice_bce_loss", "dice_focal_loss", "dice_topk_loss", "gdl_boundary_loss",
    "combo_loss", "ell_loss", "bce_iou_ssim_loss", "lesion_loss", "ssim",
    "ComboLoss", "ExponentialLogarithmicLoss", "BCEIoUSSIMLoss", "LesionLoss",
]


def _call(loss: nn.Module, logits: torch.Tensor, target: torch.Tensor, dist: torch.Tensor | None) -> torch.Tensor:
    """Call a loss, passing the distance maps only to losses that take them."""
    return loss(logits, target, dist=dist) if getattr(loss, "needs_distance", False) else loss(logits, target)


class WeightedSum(nn.Module):
    """``Σ_i w_i · loss_i(logits, target)``, keeping each term's last value for logging.

    Args:
        terms: ``(name, weight, loss module)`` triples; names label the logged values.
        joint: optional function ``joint(logits, target, dist=None) -> {name: value}`` computing
            every term at once (sharing the softmax); it must equal calling the terms one by one.
            The named sums use it for speed (``dice_ce``); ``build`` never does.

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


# ---------------------------------------------------------------------------------------------
# Named sums: registered factories returning a WeightedSum, and their functional forms.


def _term(name: str, **options) -> nn.Module:
    """The registered loss ``name`` with those of ``options`` its signature takes (a named sum's
    options are shared by its terms: ``smooth`` goes to Dice, not to CE)."""
    accepted = lookup(name).options
    return get(name, **{key: value for key, value in options.items() if key in accepted})


_LANES = 8  # accumulators per class (see _class_bins)


def _class_bins(labels: torch.Tensor) -> torch.Tensor:
    """``(N, V)`` labels -> bin ``label·8 + v mod 8`` of every voxel, for :func:`_class_sums`.

    Neighbouring voxels mostly share a label; summing them into one accumulator per class makes
    every addition wait for the previous one (1.5x slower on segmentation-like labels than on
    random ones). Eight interleaved accumulators per class break that chain."""
    lanes = torch.arange(labels.shape[-1], device=labels.device) % _LANES
    return labels * _LANES + lanes


def _class_sums(values: torch.Tensor, bins: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``Σ_{v: y_v = c} values_v`` per sample and class ``(N, C)`` from ``(N, V)`` values."""
    sums = values.new_zeros(values.shape[0], num_classes * _LANES).scatter_add_(1, bins, values)
    return sums.view(-1, num_classes, _LANES).sum(-1)


class _SoftmaxLabelCounts(torch.autograd.Function):
    """Per sample, from logits ``(N, C, *spatial)`` and integer labels, in few passes over memory:
    ``Σ_v −log p_{y_v}`` ``(N,)``, ``TP_c = Σ_{v: y_v = c} p_c`` and ``Σ_v p_c`` ``(N, C)``.

    The backward pass is written out, so no one-hot tensor or autograd chain through softmax is
    ever built: with ``G_c = ∂L/∂p_c = g^{Σp}_c + [c = y](g^{TP}_c − g^{nll}/p_y)``, the chain
    rule through the softmax gives ``∂L/∂x_c = p_c (g^{Σp}_c − s) + [c = y](p_y g^{TP}_y − g^{nll})``
    with ``s = Σ_c p_c G_c``. CPU only (``scatter_add_`` with colliding indices is
    nondeterministic on CUDA), labels in range (no ``ignore_index``).
    """

    @staticmethod
    def forward(ctx, logits, labels, bins):
        n, c = logits.shape[:2]
        y = labels.reshape(n, 1, -1)
        flat = logits.reshape(n, c, -1)
        probs = torch.softmax(flat, 1)
        p_true = probs.gather(1, y)
        log_p_true = p_true.log()
        # where p underflows (logit gaps beyond ~87 in float32) take log p = x − logsumexp(x)
        tiny = p_true < torch.finfo(p_true.dtype).tiny * 2**24
        if tiny.any():
            exact = flat.gather(1, y) - torch.logsumexp(flat, 1, keepdim=True)
            log_p_true = torch.where(tiny, exact, log_p_true)
        tp = _class_sums(p_true[:, 0], bins, c)
        ctx.save_for_backward(probs, y, p_true)
        ctx.shape = logits.shape
        return -log_p_true.sum((1, 2)), tp, probs.sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_nll, grad_tp, grad_sum_p):
        probs, y, p_true = ctx.saved_tensors
        n = probs.shape[0]
        grad_nll = grad_nll.view(n, 1, 1)
        grad_tp_true = grad_tp.gather(1, y[:, 0]).unsqueeze(1)
        with torch.autocast(probs.device.type, enabled=False):  # bmm must stay in float32
            s = torch.bmm(grad_sum_p.unsqueeze(1).to(probs.dtype), probs)
        s.addcmul_(p_true, grad_tp_true).sub_(grad_nll)
        grad = (probs * grad_sum_p.unsqueeze(-1)).addcmul_(probs, s, value=-1)
        grad.scatter_add_(1, y, p_true * grad_tp_true - grad_nll)
        return grad.view(ctx.shape), None, None


class _SigmoidCounts(torch.autograd.Function):
    """The binary counterpart of :class:`_SoftmaxLabelCounts`: from one-channel logits ``x`` and
    a float foreground target ``t`` ``(N, V)``, per sample ``Σ BCE = Σ softplus(x) − x·t``,
    ``TP = Σ σ(x)·t`` and ``Σ σ(x)``; backward written out:
    ``∂L/∂x = g^{BCE}(p − t) + p(1 − p)(g^{Σp} + g^{TP} t)``."""

    @staticmethod
    def forward(ctx, logits, target):
        probs = torch.sigmoid(logits)
        bce = F.softplus(logits).sum(-1) - (logits * target).sum(-1)
        ctx.save_for_backward(probs, target)
        return bce, (probs * target).sum(-1), probs.sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_bce, grad_tp, grad_sum_p):
        probs, target = ctx.saved_tensors
        grad = torch.addcmul(grad_sum_p.unsqueeze(-1), target, grad_tp.unsqueeze(-1))
        grad = torch.ops.aten.sigmoid_backward(grad, probs)  # grad·p(1 − p) in one pass
        grad.addcmul_(probs - target, grad_bce.unsqueeze(-1))
        return grad, None


def _fused_dice_ce_counts(logits: torch.Tensor, labels: torch.Tensor):
    """Per-sample CE ``(N,)`` and ``tp, fp, fn`` ``(N, C)`` for softmax logits and in-range labels."""
    n, c = logits.shape[:2]
    bins = _class_bins(labels.reshape(n, -1))
    nll, tp, sum_p = _SoftmaxLabelCounts.apply(logits, labels, bins)
    sum_g = _class_sums(tp.new_ones(1).expand(bins.shape), bins, c)
    return nll / labels[0].numel(), tp, sum_p - tp, sum_g - tp


def dice_ce_terms(logits: torch.Tensor, target: torch.Tensor, *, dist=None, smooth: float = 1e-5,
                  include_background: bool = True, ignore_index: int | None = None,
                  reduction: str = "mean") -> dict[str, torch.Tensor]:
    """``{"ce": ce_loss, "dice": dice_loss}`` computed together, equal to the two losses computed
    apart. Softmax logits with labels on the CPU take one fused pass (:class:`_SoftmaxLabelCounts`,
    ~1.5x CE instead of ~2.2x, benchmarks/losses.py), one-channel logits one sigmoid pass
    (:class:`_SigmoidCounts`); otherwise one log-softmax feeds both."""
    from medsegloss.losses.region import reduce_classes

    check_reduction(reduction)
    target = check_target(target, logits, ignore_index)
    logits = at_least_float32(logits)
    n, c = logits.shape[:2]
    labels = not target.is_floating_point()
    if c > 1 and labels and ignore_index is None and logits.device.type == "cpu":
        ce, tp, fp, fn = _fused_dice_ce_counts(logits, target)
        ce = reduce(ce, reduction)
    elif c == 1 and ignore_index is None:  # binary: one sigmoid pass feeds BCE and the counts
        foreground = (target if labels else target[:, 0]).to(logits.dtype).reshape(n, -1)  # labels: 0/1
        bce, tp, sum_p = _SigmoidCounts.apply(logits.reshape(n, -1), foreground)
        tp, sum_g = tp.unsqueeze(1), foreground.sum(-1, keepdim=True)
        ce, fp, fn = reduce(bce / foreground.shape[1], reduction), sum_p.unsqueeze(1) - tp, sum_g - tp
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
    dice = reduce_classes(1.0 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth), n,
                          include_background=include_background, reduction=reduction)
    return {"ce": ce, "dice": dice}


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0, smooth: float = 1e-5,
                 include_background: bool = True, ignore_index: int | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    r"""Dice + cross-entropy: ``L = CE + α · (1 − Dice)`` (the reference experiment's loss at α = 1).

    .. math:: L = -\frac{1}{V}\sum_v \log p_{v, y_v} + \alpha \Big(1 - \frac{1}{|K|}\sum_{c \in K}
              \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}\Big)

    Softmax CE for ``C >= 2``, sigmoid (binary) CE for one-channel logits; the Dice term is
    :func:`~medsegloss.losses.region.dice_loss`. Both from one log-softmax.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> dice_ce_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    values = dice_ce_terms(logits, target, smooth=smooth, include_background=include_background,
                           ignore_index=ignore_index, reduction=reduction)
    return values["ce"] + alpha * values["dice"]


@register("dice_ce", family="compound", paper="Isensee et al., 2021 (nnU-Net); Ma et al., 2021",
          function=dice_ce_loss)
def dice_ce(*, alpha: float = 1.0, smooth: float = 1e-5, include_background: bool = True,
            ignore_index: int | None = None, reduction: str = "mean") -> WeightedSum:
    """Cross-entropy + α·Dice (α = 1: the reference experiment's loss), as a WeightedSum."""
    options = dict(smooth=smooth, include_background=include_background, ignore_index=ignore_index,
                   reduction=reduction)
    terms = [("ce", 1.0, _term("ce", **options)), ("dice", alpha, _term("dice", **options))]
    return WeightedSum(terms, joint=partial(dice_ce_terms, **options))


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 1.0, smooth: float = 1e-5,
                  include_background: bool = True, reduction: str = "mean") -> torch.Tensor:
    r"""Dice + binary cross-entropy: ``L = (1 − Dice) + γ · BCE``.

    The BCE term is the registered ``bce`` loss (sigmoid per channel); the Dice term ``dice``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    >>> dice_bce_loss(logits, torch.randint(0, 2, (2, 8, 8))).backward()
    """
    return dice_bce(gamma=gamma, smooth=smooth, include_background=include_background,
                    reduction=reduction)(logits, target)


@register("dice_bce", family="compound", paper="Ma et al., 2021 (survey)", function=dice_bce_loss)
def dice_bce(*, gamma: float = 1.0, smooth: float = 1e-5, include_background: bool = True,
             reduction: str = "mean") -> WeightedSum:
    """Dice + γ·binary cross-entropy (sigmoid per channel), as a WeightedSum."""
    options = dict(smooth=smooth, include_background=include_background, reduction=reduction)
    return WeightedSum([("dice", 1.0, _term("dice", **options)), ("bce", gamma, _term("bce", **options))])


def dice_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, lambda_focal: float = 0.5, gamma: float = 2.0,
                    smooth: float = 1e-5, include_background: bool = True, reduction: str = "mean") -> torch.Tensor:
    r"""Dice + focal (Zhu et al., 2019, AnatomyNet): ``L = (1 − Dice) + λ · Focal_γ``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> dice_focal_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    return dice_focal(lambda_focal=lambda_focal, gamma=gamma, smooth=smooth, include_background=include_background,
                      reduction=reduction)(logits, target)


@register("dice_focal", family="compound", paper="Zhu et al., 2019 (AnatomyNet)", function=dice_focal_loss)
def dice_focal(*, lambda_focal: float = 0.5, gamma: float = 2.0, smooth: float = 1e-5,
               include_background: bool = True, reduction: str = "mean") -> WeightedSum:
    """Dice + λ·focal (AnatomyNet: λ = 0.5, γ = 2), as a WeightedSum."""
    options = dict(gamma=gamma, smooth=smooth, include_background=include_background, reduction=reduction)
    return WeightedSum([("dice", 1.0, _term("dice", **options)), ("focal", lambda_focal, _term("focal", **options))])


def dice_topk_loss(logits: torch.Tensor, target: torch.Tensor, *, k: float = 10.0, lambda_topk: float = 1.0,
                   smooth: float = 1e-5, include_background: bool = True, reduction: str = "mean") -> torch.Tensor:
    r"""Dice + TopK (nnU-Net's DC+TopK10): ``L = (1 − Dice) + λ · TopK_k``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> dice_topk_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    return dice_topk(k=k, lambda_topk=lambda_topk, smooth=smooth, include_background=include_background,
                     reduction=reduction)(logits, target)


@register("dice_topk", family="compound", paper="Isensee et al., 2021 (nnU-Net); Ma et al., 2021",
          function=dice_topk_loss)
def dice_topk(*, k: float = 10.0, lambda_topk: float = 1.0, smooth: float = 1e-5, include_background: bool = True,
              reduction: str = "mean") -> WeightedSum:
    """Dice + λ·TopK cross-entropy (the k % hardest voxels; nnU-Net's DC+TopK10), as a WeightedSum."""
    options = dict(k=k, smooth=smooth, include_background=include_background, reduction=reduction)
    return WeightedSum([("dice", 1.0, _term("dice", **options)), ("topk", lambda_topk, _term("topk", **options))])


def gdl_boundary_loss(logits: torch.Tensor, target: torch.Tensor, *, dist: torch.Tensor | None = None,
                      alpha: float = 0.01, spacing=None, reduction: str = "mean") -> torch.Tensor:
    r"""Generalized Dice + boundary loss (Kervadec et al., 2019): ``L = GDL + α · L_B``.

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
    return gdl_boundary(alpha=alpha, spacing=spacing, reduction=reduction)(logits, target, dist=dist)



@register("gdl_boundary", family="compound", paper="Kervadec et al., 2019", function=gdl_boundary_loss,
          needs_distance=True)
def gdl_boundary(*, alpha: float = 0.01, spacing=None, reduction: str = "mean") -> WeightedSum:
    """Generalized Dice + α·boundary loss, as a WeightedSum (α is ``loss.weights["boundary"]``).

    Kervadec et al. start at α = 0.01 and raise it by 0.01 per epoch: set
    ``loss.weights["boundary"]`` between epochs."""
    return WeightedSum([("gdl", 1.0, _term("gdl", reduction=reduction)),
                        ("boundary", alpha, _term("boundary", spacing=spacing, reduction=reduction))])


# ---------------------------------------------------------------------------------------------
# Compounds that are not plain sums: their own functions, from the same primitives.


def _two_channel(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-channel (sigmoid) logits as two-channel softmax logits ``[0, x]`` (softmax gives
    ``[1 − σ(x), σ(x)]`` exactly) with the matching target, for formulas over classes."""
    if logits.shape[1] != 1:
        return logits, target
    logits = torch.cat([torch.zeros_like(logits), logits], 1)
    if target.is_floating_point():
        target = torch.cat([1 - target, target], 1)
    return logits, target


def combo_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.5, beta: float = 0.5,
               smooth: float = 1e-5, include_background: bool = True, reduction: str = "mean") -> torch.Tensor:
    r"""Combo loss (Taghanaki et al., 2019): weighted cross-entropy plus Dice, written so that lower
    is better.

    .. math:: L = \alpha \cdot \Big(-\frac{1}{|K| V}\sum_{c \in K}\sum_v \big[\beta\, g \ln p
              + (1-\beta)(1-g)\ln(1-p)\big]\Big) + (1-\alpha)\,(1 - \overline{Dice})

    The paper writes ``α·L_wce − (1 − α)·Dice``; this adds the constant ``1 − α`` (same gradients,
    0 for a perfect prediction). ``β > 0.5`` penalises false negatives more than false positives.
    Per-class binary terms (sigmoid for one-channel logits, softmax probabilities otherwise);
    Dice as :func:`~medsegloss.losses.region.dice_loss`, both over the kept classes ``K``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> combo_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    check_probability("alpha", alpha)
    check_probability("beta", beta)
    target = check_target(target, logits)
    logits = at_least_float32(logits)
    n, c = logits.shape[:2]
    if c == 1:
        probs, log_p, log_not_p = torch.sigmoid(logits), F.logsigmoid(logits), F.logsigmoid(-logits)
    else:
        log_p = torch.log_softmax(logits, 1)
        probs = log_p.exp()
        log_not_p = torch.log((1 - probs).clamp_min(1e-7))  # p -> 1 would give log 0
    onehot = target_probabilities(target, c, dtype=probs.dtype)[0]
    wce = -(beta * onehot * log_p + (1 - beta) * (1 - onehot) * log_not_p)
    wce = select_classes(wce, include_background).reshape(n, -1).mean(-1)
    tp, fp, fn = soft_counts(probs, onehot)
    dice = select_classes((2 * tp + smooth) / (2 * tp + fp + fn + smooth), include_background).mean(1)
    return reduce(alpha * wce + (1 - alpha) * (1 - dice), reduction)


def ell_loss(logits: torch.Tensor, target: torch.Tensor, *, w_dice: float = 0.8, w_cross: float = 0.2,
             gamma_dice: float = 0.3, gamma_cross: float = 0.3, smooth: float = 1.0, weight=None,
             reduction: str = "mean") -> torch.Tensor:
    r"""Exponential logarithmic loss (Wong et al., 2018).

    .. math:: L = w_{dice}\, \mathbf{E}_c\big[(-\ln Dice_c)^{\gamma_{dice}}\big]
              + w_{cross}\, \mathbf{E}_v\big[w_{l}\,(-\ln p_{l}(v))^{\gamma_{cross}}\big],
              \quad Dice_c = \frac{2\sum p_c g_c + \epsilon}{\sum p_c + \sum g_c + \epsilon},
              \quad w_l = \Big(\frac{\sum_k f_k}{f_l}\Big)^{1/2}

    ``l`` is the voxel's label, ``f_k`` the voxel count of label ``k`` in the batch (or pass
    ``weight``, one ``w_l`` per class); ``ε = 1`` as in the paper. Defaults are the paper's
    (w = 0.8 / 0.2, γ = 0.3). Soft labels weigh each class's term by ``g_c``. One-channel logits
    are scored as two classes (background, foreground). Logs are clamped at ``1e-6`` before the
    fractional power, whose derivative is infinite at 0.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> ell_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    target = check_target(target, logits)
    logits = at_least_float32(logits)
    logits, target = _two_channel(logits, target)
    n, c = logits.shape[:2]
    log_p = torch.log_softmax(logits, 1)
    onehot = target_probabilities(target, c, dtype=log_p.dtype)[0]
    tp, fp, fn = soft_counts(log_p.exp(), onehot)
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    dice_term = (-torch.log(dice)).clamp_min(1e-6).pow(gamma_dice).mean(1)
    weight = check_weight(weight, c, logits.device, log_p.dtype)
    if weight is None:
        counts = onehot.transpose(0, 1).reshape(c, -1).sum(-1)
        weight = torch.where(counts > 0, (counts.sum() / counts.clamp_min(1e-12)).sqrt(), torch.zeros_like(counts))
    if target.is_floating_point():  # soft labels: every class's term, weighted by g_c
        per_voxel = ((-log_p).clamp_min(1e-6).pow(gamma_cross) * onehot
                     * weight.view(1, -1, *[1] * (logits.ndim - 2))).sum(1)
    else:  # labels: only the label's term, gathered (1/C of the work)
        log_p_true = log_p.gather(1, target.unsqueeze(1))[:, 0]
        per_voxel = (-log_p_true).clamp_min(1e-6).pow(gamma_cross) * weight[target]
    cross_term = per_voxel.reshape(n, -1).mean(-1)
    return reduce(w_dice * dice_term + w_cross * cross_term, reduction)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    window = torch.exp(-x.square() / (2 * sigma**2))
    return window / window.sum()


def _gaussian_blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter along every spatial axis of ``(N, K, *spatial)``, zero padding
    (same size). Each axis is one matrix product with the banded ``S × S`` filter matrix: BLAS
    makes that 2-3x faster on the CPU than a depthwise convolution, whose 11 taps it beats despite
    the extra zeros."""
    radius = window.numel() // 2
    for axis in range(2, x.ndim):
        size = x.shape[axis]
        offset = torch.arange(size, device=x.device).view(-1, 1) - torch.arange(size, device=x.device).view(1, -1)
        band = torch.where(offset.abs() <= radius, window[(offset + radius).clamp(0, 2 * radius)], 0.0)
        x = torch.movedim(torch.movedim(x, axis, -1) @ band.to(x.dtype), -1, axis)
    return x


def ssim(a: torch.Tensor, b: torch.Tensor, *, window_size: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    r"""Mean structural similarity (Wang et al., 2004) of each sample, Gaussian window.

    .. math:: SSIM = \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}
              {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)},
              \quad C_1 = (0.01 R)^2,\ C_2 = (0.03 R)^2

    Local statistics from an ``window_size``-wide Gaussian (σ = 1.5), separable, zero padded
    (as BASNet's code); the 3-D analogue uses the same window along each of the three axes.

    Shape:
        a, b: ``(N, K, *spatial)`` with 2 or 3 spatial axes; returns ``(N,)``.
    """
    a, b = at_least_float32(a), at_least_float32(b).to(a.dtype)
    window = _gaussian_window(window_size, sigma, a.dtype, a.device)
    k = a.shape[1]
    with torch.autocast(a.device.type, enabled=False):  # autocast would run the filter in half precision
        stats = _gaussian_blur(torch.cat([a, b, a * a, b * b, a * b], 1), window)
    mu_a, mu_b, aa, bb, ab = stats.split(k, 1)
    var_a, var_b, cov = aa - mu_a.square(), bb - mu_b.square(), ab - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return index.reshape(a.shape[0], -1).mean(-1)


def bce_iou_ssim_loss(logits: torch.Tensor, target: torch.Tensor, *, w_bce: float = 1.0, w_iou: float = 1.0,
                      w_ssim: float = 1.0, window_size: int = 11, smooth: float = 1e-5,
                      reduction: str = "mean") -> torch.Tensor:
    r"""BASNet's hybrid loss (Qin et al., 2019), binary: ``W1·BCE + W2·(1 − IoU) + W3·(1 − SSIM)``.

    .. math:: IoU = \frac{\sum p g + s}{\sum p + \sum g - \sum p g + s}

    BCE with logits averaged over voxels; soft IoU over the image; SSIM (:func:`ssim`) between
    the foreground probability and the target with an 11×11 Gaussian window (11×11×11 in 3-D).
    Weights 1 as in the paper. Binary only: one-channel logits.

    Shape:
        logits ``(N, 1, *spatial)``, target ``(N, *spatial)`` 0/1 labels or ``(N, 1, *spatial)``
        floats; returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    >>> bce_iou_ssim_loss(logits, torch.randint(0, 2, (2, 16, 16))).backward()
    """
    check_reduction(reduction)
    target = check_target(target, logits)
    logits = at_least_float32(logits)
    if logits.shape[1] != 1:
        raise ValueError(
            f"bce_iou_ssim is a binary loss: logits must have one channel (N, 1, *spatial), "
            f"got {tuple(logits.shape)}"
        )
    n = logits.shape[0]
    probs = probabilities(logits)
    onehot = target_probabilities(target, 1, dtype=probs.dtype)[0]
    bce = cross_entropy_map(logits, target).reshape(n, -1).mean(-1)
    tp, fp, fn = soft_counts(probs, onehot)
    iou = ((tp + smooth) / (tp + fp + fn + smooth))[:, 0]
    return reduce(w_bce * bce + w_iou * (1 - iou) + w_ssim * (1 - ssim(probs, onehot, window_size=window_size)),
                  reduction)


@torch.no_grad()
def component_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-voxel weights giving each connected component of the target the same total weight.

    Components are face-connected regions of each foreground class (class ≥ 1; label 1 for
    binary) of each sample, found by ``scipy.ndimage.label``. A voxel of component ``k`` gets
    ``1 / (K · |k|)`` with ``K`` the sample's number of components; other voxels 0. So the weights
    of a sample sum to 1 (0 when it has no component).

    Shape:
        labels ``(N, *spatial)`` integers; returns float32 ``(N, *spatial)`` on their device.
    """
    import numpy as np
    from scipy import ndimage

    labels_np = labels.cpu().numpy()
    n = labels_np.shape[0]
    # face connectivity within each sample, none along the batch axis: one call labels the batch
    structure = np.zeros((3,) * labels_np.ndim, bool)
    structure[1] = ndimage.generate_binary_structure(labels_np.ndim - 1, 1)
    pieces, count_per_sample = [], np.zeros(n)
    for c in [1] if num_classes <= 2 else range(1, num_classes):
        components, count = ndimage.label(labels_np == c, structure)
        if count:
            # the sample of each component: where its bounding box starts along the batch axis
            sample_of = np.array([0] + [box[0].start for box in ndimage.find_objects(components)])
            count_per_sample += np.bincount(sample_of[1:], minlength=n)
            pieces.append((components, np.bincount(components.ravel()), sample_of))
    out = np.zeros(labels_np.shape, np.float32)
    for components, sizes, sample_of in pieces:
        inverse = np.zeros(len(sizes), np.float32)
        inverse[1:] = 1.0 / (count_per_sample[sample_of[1:]] * sizes[1:])
        out += inverse[components]
    return torch.from_numpy(out).to(labels.device)


def lesion_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.5, gamma: float = 2.0,
                reduction: str = "mean") -> torch.Tensor:
    r"""Lesion-level + pixel-level focal loss (after Zhu et al.): every connected component of the
    target weighs the same, however small.

    .. math:: L = \alpha \frac{1}{K}\sum_{k=1}^{K} \frac{1}{|k|}\sum_{v \in k} FL(v)
              + (1 - \alpha)\frac{1}{V}\sum_v FL(v), \qquad FL(v) = -(1 - p_{v,y_v})^\gamma \ln p_{v,y_v}

    The components ``k`` (:func:`component_weights`, no gradient) are those of each foreground
    class; a sample without any has only the pixel term, ``(1 − α)·mean FL``. Float targets are
    hardened (argmax, or ``> 0.5`` for one channel) to find components and labels.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> lesion_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    check_probability("alpha", alpha)
    target = check_target(target, logits)
    logits = at_least_float32(logits)
    if target.is_floating_point():
        target = (target[:, 0] > 0.5).long() if logits.shape[1] == 1 else target.argmax(1)
    num_classes = max(logits.shape[1], 2)
    if logits.shape[1] == 1:  # log σ(x) for the foreground, log σ(−x) for the background
        log_p_true = F.logsigmoid(logits[:, 0] * (2 * target - 1).to(logits.dtype))
    else:
        log_p_true = torch.log_softmax(logits, 1).gather(1, target.unsqueeze(1))[:, 0]
    focal = -(1 - log_p_true.exp()).pow(gamma) * log_p_true
    n = logits.shape[0]
    # both terms as one weighted sum over the voxels: α·w_component + (1 − α)/V
    voxel_weight = component_weights(target, num_classes).to(focal.dtype).mul_(alpha)
    voxel_weight.add_((1 - alpha) / focal[0].numel())
    return reduce((focal * voxel_weight).reshape(n, -1).sum(-1), reduction)


@register("combo", family="compound", paper="Taghanaki et al., 2019", function=combo_loss)
class ComboLoss(FunctionalLoss):
    """Combo loss, α·weighted CE(β) + (1 − α)·(1 − Dice)."""

    function = staticmethod(combo_loss)


@register("ell", family="compound", paper="Wong et al., 2018", function=ell_loss)
class ExponentialLogarithmicLoss(FunctionalLoss):
    """Exponential logarithmic loss, w_dice·E[(−ln Dice)^γ] + w_cross·E[w_l (−ln p_l)^γ]."""

    function = staticmethod(ell_loss)


@register("bce_iou_ssim", family="compound", paper="Qin et al., 2019 (BASNet)", function=bce_iou_ssim_loss,
          binary_only=True)
class BCEIoUSSIMLoss(FunctionalLoss):
    """BASNet hybrid loss, W1·BCE + W2·(1 − IoU) + W3·(1 − SSIM), binary."""

    function = staticmethod(bce_iou_ssim_loss)


@register("lesion", family="compound", paper="Zhu et al.", function=lesion_loss)
class LesionLoss(FunctionalLoss):
    """Lesion-level focal loss, α·mean over target components + (1 − α)·mean over voxels."""

    function = staticmethod(lesion_loss)
