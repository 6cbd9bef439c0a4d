"""The named sums of the compound family: registered factories returning a
:class:`~medsegloss.losses.compound.weighted_sum.WeightedSum` of registered losses, each with its
functional form (``dice_ce_loss(logits, target, ...)``).

A named sum's first term has weight 1 and every other term's weight is the option
``weight_<term>``, the term's name in the sum (and in ``last_values``); every other option goes,
under its own name, to each term that takes it (``smooth`` to Dice, ``label_smoothing`` to CE).
``dice_ce`` (and ``build("ce + dice")``) computes both terms in one pass (:func:`dice_ce_terms`).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from medsegloss._checks import check_in_range, check_reduction, check_target
from medsegloss._ops import (
    at_least_float32, cross_entropy_map, fused_soft_counts, per_voxel_reduce, probabilities, reduce, soft_counts,
    target_probabilities, use_fused,
)
from medsegloss.losses._registry import exports, get, lookup, register, renamed_options
from medsegloss.losses.compound.weighted_sum import WeightedSum
from medsegloss.losses.region._counts import dice_score, pool, reduce_classes


def _term(name: str, **options) -> nn.Module:
    """The registered loss ``name`` with those of ``options`` its signature takes (a named sum's
    options are shared by its terms: ``smooth`` goes to Dice, not to CE)."""
    accepted = lookup(name).options
    return get(name, **{key: value for key, value in options.items() if key in accepted})


def fused_pass(terms: list[tuple[str, float, nn.Module]]):
    """The one-pass computation of a sum's ``(label, weight, module)`` terms where one exists (the
    ``joint`` of its WeightedSum), else None: ``ce`` + ``dice`` (the reference experiment's
    ``"ce + 1.0*dice"``) is exactly what ``dice_ce`` fuses, whatever the weights, as long as the two
    share ``ignore_index``/``reduction`` and use no option the fused pass lacks."""
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


def dice_ce_terms(logits: torch.Tensor, target: torch.Tensor, *, dist=None, smooth: float = 1e-5, weight=None,
                  include_background: bool = True, ignore_index: int | None = None, batch: bool = False,
                  reduction: str = "mean") -> dict[str, torch.Tensor]:
    """``{"ce": ce_loss, "dice": dice_loss}`` computed together, equal to the two losses computed
    apart (``weight``, ``batch``: the Dice term's). Labels without ``ignore_index`` (softmax
    logits on the CPU, or one-channel logits with labels or soft labels) take one fused pass
    (:func:`~medsegloss._ops.use_fused`, :func:`~medsegloss._ops.fused_soft_counts`); otherwise
    one log-softmax feeds both."""
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
    dice = reduce_classes(1.0 - dice_score(*pool((tp, fp, fn), batch), smooth), n, weight,
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
    :func:`~medsegloss.losses.region.overlap.dice_loss`. The terms take their own options: Dice
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


def dice_cldice_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.5, iterations: int = 3,
                     smooth: float = 1.0, include_background: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Soft Dice + clDice (Shit et al., 2021): ``L = (1 − α)(1 − Dice) + α(1 − clDice)``.

    The Dice term is :func:`~medsegloss.losses.region.overlap.dice_loss`, the clDice term
    :func:`~medsegloss.losses.region.topology.cldice_loss`; both share ``smooth`` (1, as in the
    paper's code) and ``include_background`` (background excluded by default, as there).
    MONAI's ``SoftDiceclDiceLoss`` is the same sum (its clDice pools the kept classes, see
    ``cldice_loss``).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> dice_cldice_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    return dice_cldice(alpha=alpha, iterations=iterations, smooth=smooth, include_background=include_background,
                       reduction=reduction)(logits, target)


@register("dice_cldice", family="compound", paper="Shit et al., 2021", function=dice_cldice_loss,
          formula="(1 − α)·(1 − Dice) + α·(1 − clDice)", peers={"monai": "SoftDiceclDiceLoss (binary)"})
def dice_cldice(*, alpha: float = 0.5, iterations: int = 3, smooth: float = 1.0, include_background: bool = False,
                reduction: str = "mean") -> WeightedSum:
    """(1 − α)·Dice + α·clDice (Shit et al.: α = 0.5), as a WeightedSum."""
    check_in_range("alpha", alpha)
    options = dict(iterations=iterations, smooth=smooth, include_background=include_background, reduction=reduction)
    return WeightedSum([("dice", 1.0 - alpha, _term("dice", **options)), ("cldice", alpha, _term("cldice", **options))])


def gdl_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, weight_gdl: float = 1.0, weight_focal: float = 1.0,
                   gamma: float = 2.0, alpha=None, smooth: float = 1e-5, batch: bool = False,
                   include_background: bool = True, ignore_index: int | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    r"""Generalized Dice + focal: ``L = w_gdl · GDL + w_focal · Focal_γ`` (Sudre et al., 2017 and
    Lin et al., 2017; MONAI's ``GeneralizedDiceFocalLoss``, whose ``lambda_gdl``, ``lambda_focal``
    are ``weight_gdl``, ``weight_focal``).

    The terms are :func:`~medsegloss.losses.region.generalized_dice.generalized_dice_loss` (with
    ``smooth``, ``batch``, ``include_background``) and
    :func:`~medsegloss.losses.distribution.focal_loss` (with ``gamma``, ``alpha``: for ``C >= 2``
    the softmax focal loss); both ``ignore_index``. MONAI's equals it for one-channel logits. For
    ``C >= 2`` the two differ by definition: MONAI's ``softmax=True`` reaches its GDL only, its
    focal term stays ``FocalLoss``'s sigmoid focal loss of each channel against the rest (equal to
    ``gdl`` + ``focal`` with ``multilabel=True``, tested). MONAI's GDL weights are not normalised,
    so its smoothing weighs more: equal for a tiny ``smooth``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> gdl_focal_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    return gdl_focal(weight_gdl=weight_gdl, weight_focal=weight_focal, gamma=gamma, alpha=alpha, smooth=smooth,
                     batch=batch, include_background=include_background, ignore_index=ignore_index,
                     reduction=reduction)(logits, target)


@register("gdl_focal", family="compound", paper="Sudre et al., 2017; Lin et al., 2017 (MONAI)",
          function=gdl_focal_loss, formula="w_gdl·generalized Dice + w_focal·focal (softmax)",
          peers={"monai": "GeneralizedDiceFocalLoss (binary; C >= 2: its focal is sigmoid)"})
def gdl_focal(*, weight_gdl: float = 1.0, weight_focal: float = 1.0, gamma: float = 2.0, alpha=None,
              smooth: float = 1e-5, batch: bool = False, include_background: bool = True,
              ignore_index: int | None = None, reduction: str = "mean") -> WeightedSum:
    """w_gdl·generalized Dice + w_focal·focal (softmax), as a WeightedSum."""
    check_in_range("weight_gdl", weight_gdl, 0.0, float("inf"))
    check_in_range("weight_focal", weight_focal, 0.0, float("inf"))
    options = dict(gamma=gamma, alpha=alpha, smooth=smooth, batch=batch, include_background=include_background,
                   ignore_index=ignore_index, reduction=reduction)
    return WeightedSum([("gdl", weight_gdl, _term("gdl", **options)), ("focal", weight_focal, _term("focal", **options))])


__all__ = exports(__name__)
