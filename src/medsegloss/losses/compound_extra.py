"""More compound losses: Dice + clDice and generalized Dice + focal as weighted sums of
registered losses (like :mod:`medsegloss.losses.compound`), and the unified focal loss, whose
two terms are not registered losses of their own.
"""

from __future__ import annotations

import torch

from medsegloss._checks import check_probability, check_reduction, check_target
from medsegloss._ops import at_least_float32, reduce, soft_counts, target_probabilities
from medsegloss.losses._registry import exports, get, loss_class, lookup, register, renamed_options
from medsegloss.losses.compound import WeightedSum


def _term(name: str, **options):
    """The registered loss ``name`` with those of ``options`` its signature takes."""
    accepted = lookup(name).options
    return get(name, **{key: value for key, value in options.items() if key in accepted})


def dice_cldice_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.5, iterations: int = 3,
                     smooth: float = 1.0, include_background: bool = False, reduction: str = "mean") -> torch.Tensor:
    r"""Soft Dice + clDice (Shit et al., 2021): ``L = (1 − α)(1 − Dice) + α(1 − clDice)``.

    The Dice term is :func:`~medsegloss.losses.region.dice_loss`, the clDice term
    :func:`~medsegloss.losses.region_topology.cldice_loss`; both share ``smooth`` (1, as in the
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
    check_probability("alpha", alpha)
    options = dict(iterations=iterations, smooth=smooth, include_background=include_background, reduction=reduction)
    return WeightedSum([("dice", 1.0 - alpha, _term("dice", **options)), ("cldice", alpha, _term("cldice", **options))])


_GDL_FOCAL_RENAMED = {"lambda_gdl": "weight_gdl", "lambda_focal": "weight_focal"}


@renamed_options(_GDL_FOCAL_RENAMED)
def gdl_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, weight_gdl: float = 1.0, weight_focal: float = 1.0,
                   gamma: float = 2.0, alpha=None, smooth: float = 1e-5, batch: bool = False,
                   include_background: bool = True, ignore_index: int | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    r"""Generalized Dice + focal: ``L = w_gdl · GDL + w_focal · Focal_γ`` (MONAI's
    ``GeneralizedDiceFocalLoss``, its ``lambda_gdl``, ``lambda_focal``; Sudre et al., 2017 and
    Lin et al., 2017).

    The terms are :func:`~medsegloss.losses.region.generalized_dice_loss` (with ``smooth``,
    ``batch``, ``include_background``) and :func:`~medsegloss.losses.distribution.focal_loss`
    (with ``gamma``, ``alpha``; softmax focal over all classes); both ``ignore_index``. MONAI's focal term is one-vs-rest sigmoid, so
    the two agree for one-channel logits (and MONAI's GDL weights are not normalised: equal for
    a tiny ``smooth``).

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
          peers={"monai": "GeneralizedDiceFocalLoss (binary)"})
@renamed_options(_GDL_FOCAL_RENAMED)
def gdl_focal(*, weight_gdl: float = 1.0, weight_focal: float = 1.0, gamma: float = 2.0, alpha=None,
              smooth: float = 1e-5, batch: bool = False, include_background: bool = True,
              ignore_index: int | None = None, reduction: str = "mean") -> WeightedSum:
    """w_gdl·generalized Dice + w_focal·focal (softmax), as a WeightedSum."""
    check_probability("weight_gdl", weight_gdl, 0.0, float("inf"))
    check_probability("weight_focal", weight_focal, 0.0, float("inf"))
    options = dict(gamma=gamma, alpha=alpha, smooth=smooth, batch=batch, include_background=include_background,
                   ignore_index=ignore_index, reduction=reduction)
    return WeightedSum([("gdl", weight_gdl, _term("gdl", **options)), ("focal", weight_focal, _term("focal", **options))])


_TINY = 1e-12  # floor under the bases of powers < 1, whose slope is infinite at 0


def unified_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, lambda_focal: float = 0.5, delta: float = 0.6,
                       gamma: float = 0.5, variant: str = "asymmetric", smooth: float = 1e-7,
                       reduction: str = "mean") -> torch.Tensor:
    r"""Unified focal loss (Yeung et al., 2022): ``L = λ·L_F + (1 − λ)·L_FT``.

    .. math:: L_F = \frac{1}{V}\sum_v \Big[(1-\delta)(1-p_0)^{\gamma}\,(-g_0\log p_0)
              + \delta \sum_{c \ge 1} (1-p_c)^{\gamma_c}\,(-g_c\log p_c)\Big],

    .. math:: L_{FT} = \frac{1}{C}\Big[(1 - mTI_0)^{\gamma_0'} + \sum_{c\ge 1} (1 - mTI_c)^{1-\gamma}\Big],\qquad
              mTI_c = \frac{TP_c + s}{TP_c + \delta FN_c + (1-\delta) FP_c + s}

    Class 0 is the background, the others the rare classes (one-channel logits: ``[1 − p, p]``).
    ``variant="asymmetric"`` (the paper's recommendation): the rare classes' focal exponent
    ``γ_c = 0`` (no suppression) and the background's Tversky exponent ``γ'_0 = 1`` (no
    enhancement); ``"symmetric"``: ``γ_c = γ`` and ``γ'_0 = 1 − γ``. ``δ`` weighs the rare classes
    in ``L_F`` and the false negatives in ``mTI``. Exponents as in the paper's code and MONAI
    (``γ`` on the focal factor, ``1 − γ`` on the Tversky term: both 0.5 at the paper's ``γ = 0.5``);
    defaults ``λ = 0.5, δ = 0.6, γ = 0.5`` as there, ``s = 1e-7`` as its epsilon. The focal part
    is summed over classes (the paper's code); MONAI's ``AsymmetricUnifiedFocalLoss`` (two classes)
    averages it over the two, so with λ = 1 MONAI gives half of this, with λ = 0 the same.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> unified_focal_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    check_probability("lambda_focal", lambda_focal)
    check_probability("delta", delta)
    check_probability("gamma", gamma)
    if variant not in ("asymmetric", "symmetric"):
        raise ValueError(f"variant must be 'asymmetric' or 'symmetric', got {variant!r}")
    target = check_target(target, logits)
    logits = at_least_float32(logits)
    n = logits.shape[0]
    if logits.shape[1] == 1:  # softmax of [0, x] is [1 − σ(x), σ(x)]
        logits = torch.cat([torch.zeros_like(logits), logits], 1)
        if target.is_floating_point():
            target = torch.cat([1 - target, target], 1)
    c = logits.shape[1]
    log_p = torch.log_softmax(logits, 1)
    probs = log_p.exp()
    onehot = target_probabilities(target, c, dtype=probs.dtype)[0]
    class_weight = torch.full((c,), delta, dtype=probs.dtype, device=probs.device)
    class_weight[0] = 1.0 - delta
    focus = (-torch.expm1(log_p)).clamp_min(_TINY).pow(gamma)  # (1 − p)^γ, finite slope at p = 1
    if variant == "asymmetric":
        focus = torch.cat([focus[:, :1], torch.ones_like(focus[:, 1:])], 1)
    shape = (1, c) + (1,) * (logits.ndim - 2)
    focal = -(class_weight.view(shape) * focus * onehot * log_p).sum(1).reshape(n, -1).mean(1)
    tp, fp, fn = soft_counts(probs, onehot)
    tversky = (tp + smooth) / (tp + delta * fn + (1.0 - delta) * fp + smooth)
    focal_tversky = (1.0 - tversky).clamp_min(_TINY).pow(1.0 - gamma)
    if variant == "asymmetric":
        focal_tversky = torch.cat([1.0 - tversky[:, :1], focal_tversky[:, 1:]], 1)
    return reduce(lambda_focal * focal + (1.0 - lambda_focal) * focal_tversky.mean(1), reduction)


UnifiedFocalLoss = loss_class(
    "UnifiedFocalLoss", unified_focal_loss, "unified_focal", family="compound", paper="Yeung et al., 2022",
    formula="Unified focal loss, λ·(asymmetric) focal + (1 − λ)·(asymmetric) focal Tversky",
    peers={"monai": "AsymmetricUnifiedFocalLoss (binary, λ = 0)"})


__all__ = exports(__name__)
