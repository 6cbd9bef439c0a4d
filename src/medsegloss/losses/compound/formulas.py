"""Compound losses that are not plain sums: their own formulas, built from the same primitives
as the single losses: Combo (Taghanaki et al., 2019), exponential-logarithmic (Wong et al., 2018),
BASNet's BCE + IoU + SSIM (Qin et al., 2019), the lesion-level focal loss (after Zhu et al.) and
the unified focal loss (Yeung et al., 2022). The plain weighted sums (``dice_ce``, ...) are in
:mod:`~medsegloss.losses.compound.named_sums`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medsegloss._checks import check_in_range, check_reduction, check_target, check_weight
from medsegloss._ops import (
    at_least_float32, cross_entropy_map, probabilities, reduce, select_classes, soft_counts,
    target_probabilities,
)
from medsegloss.losses._registry import exports, loss_class, renamed_options
from medsegloss.losses.region._counts import TINY, dice_score, tversky_index


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
    Dice as :func:`~medsegloss.losses.region.overlap.dice_loss`, both over the kept classes ``K``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> combo_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    check_in_range("alpha", alpha)
    check_in_range("beta", beta)
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
    dice = select_classes(dice_score(tp, fp, fn, smooth), include_background).mean(1)
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
    dice = dice_score(*soft_counts(log_p.exp(), onehot), smooth)
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
    iou = tversky_index(*soft_counts(probs, onehot), 1.0, 1.0, smooth)[:, 0]
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
    check_in_range("alpha", alpha)
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


@renamed_options({"lambda_focal": "weight_focal"})
def unified_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, weight_focal: float = 0.5, delta: float = 0.6,
                       gamma: float = 0.5, variant: str = "asymmetric", smooth: float = 1e-7,
                       reduction: str = "mean") -> torch.Tensor:
    r"""Unified focal loss (Yeung et al., 2022): ``L = λ·L_F + (1 − λ)·L_FT``, ``λ = weight_focal``
    (the paper's and MONAI's λ, ``weight``; ``lambda_focal`` until this release).

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
    check_in_range("weight_focal", weight_focal)
    check_in_range("delta", delta)
    check_in_range("gamma", gamma)
    if variant not in ("asymmetric", "symmetric"):
        raise ValueError(f"variant must be 'asymmetric' or 'symmetric', got {variant!r}")
    target = check_target(target, logits)
    logits, target = _two_channel(at_least_float32(logits), target)
    n, c = logits.shape[:2]
    log_p = torch.log_softmax(logits, 1)
    probs = log_p.exp()
    onehot = target_probabilities(target, c, dtype=probs.dtype)[0]
    class_weight = torch.full((c,), delta, dtype=probs.dtype, device=probs.device)
    class_weight[0] = 1.0 - delta
    focus = (-torch.expm1(log_p)).clamp_min(TINY).pow(gamma)  # (1 − p)^γ, finite slope at p = 1
    if variant == "asymmetric":
        focus = torch.cat([focus[:, :1], torch.ones_like(focus[:, 1:])], 1)
    shape = (1, c) + (1,) * (logits.ndim - 2)
    focal = -(class_weight.view(shape) * focus * onehot * log_p).sum(1).reshape(n, -1).mean(1)
    tp, fp, fn = soft_counts(probs, onehot)
    # the Tversky index with α = 1 − δ on FP, β = δ on FN, summed in the paper's order (FN first,
    # so the value is its code's to the last bit; tversky_index adds FP first)
    tversky = (tp + smooth) / (tp + delta * fn + (1.0 - delta) * fp + smooth)
    focal_tversky = (1.0 - tversky).clamp_min(TINY).pow(1.0 - gamma)
    if variant == "asymmetric":
        focal_tversky = torch.cat([1.0 - tversky[:, :1], focal_tversky[:, 1:]], 1)
    return reduce(weight_focal * focal + (1.0 - weight_focal) * focal_tversky.mean(1), reduction)


ComboLoss = loss_class(
    "ComboLoss", combo_loss, "combo", family="compound", paper="Taghanaki et al., 2019",
    formula="Combo loss, α·weighted CE(β) + (1 − α)·(1 − Dice)")


ExponentialLogarithmicLoss = loss_class(
    "ExponentialLogarithmicLoss", ell_loss, "ell", family="compound", paper="Wong et al., 2018",
    formula="Exponential logarithmic loss, w_dice·E[(−ln Dice)^γ] + w_cross·E[w_l (−ln p_l)^γ]")


BCEIoUSSIMLoss = loss_class(
    "BCEIoUSSIMLoss", bce_iou_ssim_loss, "bce_iou_ssim", family="compound", paper="Qin et al., 2019 (BASNet)", binary_only=True,
    formula="BASNet hybrid loss, W1·BCE + W2·(1 − IoU) + W3·(1 − SSIM), binary")


LesionLoss = loss_class(
    "LesionLoss", lesion_loss, "lesion", family="compound", paper="Zhu et al.",
    formula="Lesion-level focal loss, α·mean over target components + (1 − α)·mean over voxels")


UnifiedFocalLoss = loss_class(
    "UnifiedFocalLoss", unified_focal_loss, "unified_focal", family="compound", paper="Yeung et al., 2022",
    formula="Unified focal loss, λ·(asymmetric) focal + (1 − λ)·(asymmetric) focal Tversky",
    peers={"monai": "AsymmetricUnifiedFocalLoss (binary, λ = 0)"})


__all__ = exports(__name__, ["ssim", "component_weights"])
