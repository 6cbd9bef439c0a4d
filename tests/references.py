"""Float64 NumPy references written directly from the papers' formulas.

Independent of the package: no ``soft_counts``, no fused CE; the paper's ``1 − p`` terms are
written out as printed. Every function takes NumPy arrays (``logits (N, C, *spatial)``, integer
``labels (N, *spatial)`` or float ``target (N, C, *spatial)``) and returns the per-sample values
``(N,)`` (or ``(1,)`` pooled over the batch where a ``batch`` flag says so).
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- shared: probabilities, one-hot


def probabilities(logits):
    """Softmax over axis 1, or the sigmoid for one channel; float64."""
    x = np.asarray(logits, np.float64)
    if x.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def one_hot(labels, num_classes):
    """``(N, *spatial)`` labels -> ``(N, C, *spatial)``; ``num_classes == 1``: the foreground."""
    labels = np.asarray(labels)
    if num_classes == 1:
        return (labels == 1)[:, None].astype(np.float64)
    return np.stack([(labels == c) for c in range(num_classes)], axis=1).astype(np.float64)


def _flat(x):
    x = np.asarray(x, np.float64)
    return x.reshape(x.shape[0], x.shape[1], -1)


def _valid(labels, ignore_index):
    labels = np.asarray(labels)
    return np.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index


# ---------------------------------------------------------------- distribution-based (helper A)


def true_class_probability(logits, labels):
    """``p_t`` per voxel ``(N, *spatial)`` for integer labels (binary: p or 1 − p)."""
    p = probabilities(logits)
    labels = np.asarray(labels)
    if p.shape[1] == 1:
        return np.where(labels == 1, p[:, 0], 1.0 - p[:, 0])
    safe = np.where((labels >= 0) & (labels < p.shape[1]), labels, 0)
    return np.take_along_axis(p, safe[:, None], axis=1)[:, 0]


def _voxel_mean(values, valid):
    n = values.shape[0]
    values, valid = values.reshape(n, -1), valid.reshape(n, -1)
    return (values * valid).sum(1) / np.maximum(valid.sum(1), 1)


def cross_entropy(logits, labels, ignore_index=None):
    """``−(1/V) Σ_v log p_t``."""
    return _voxel_mean(-np.log(true_class_probability(logits, labels)), _valid(labels, ignore_index))


def soft_cross_entropy(logits, target):
    """``−(1/V) Σ_v Σ_c g_c log p_c`` for soft labels (C >= 2) or ``−[y log p + (1−y) log(1−p)]``."""
    p = probabilities(logits)
    target = np.asarray(target, np.float64)
    if p.shape[1] == 1:
        values = -(target * np.log(p) + (1 - target) * np.log(1 - p))[:, 0]
    else:
        values = -(target * np.log(p)).sum(1)
    return values.reshape(values.shape[0], -1).mean(1)


def label_smoothed_cross_entropy(logits, target, epsilon, ignore_index=None):
    """``−(1/V) Σ_v Σ_k [(1 − ε) g_k + ε/K] log p_k`` over the counted voxels, the ``K`` labels
    written out (``K = C``; binary: background ``1 − p`` and foreground ``p``, ``K = 2``).
    ``target``: integer labels ``(N, *spatial)`` or floats ``(N, C, *spatial)``."""
    p = probabilities(logits)
    target = np.asarray(target)
    if p.shape[1] == 1:
        p = np.concatenate([1 - p, p], 1)
        if np.issubdtype(target.dtype, np.floating):
            target = np.concatenate([1 - target, target], 1)
    k = p.shape[1]
    if np.issubdtype(target.dtype, np.floating):
        g, valid = target.astype(np.float64), np.ones((p.shape[0], *p.shape[2:]), bool)
    else:
        valid = _valid(target, ignore_index)
        g = one_hot(np.where(valid, target, 0), k)
    mixed = (1 - epsilon) * g + epsilon / k
    return _voxel_mean(-(mixed * np.log(p)).sum(1), valid)


def inverse_frequency(labels, num_labels, ignore_index=None):
    """Balanced weights ``V / (K n_c)`` over the batch; 0 for absent labels."""
    labels = np.asarray(labels)[_valid(labels, ignore_index)]
    counts = np.array([(labels == c).sum() for c in range(num_labels)], np.float64)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, counts.sum() / (num_labels * counts), 0.0)


def weighted_cross_entropy(logits, labels, weight, ignore_index=None):
    """``−(1/V) Σ_v w_{g_v} log p_t`` (labels; binary: w[0] background, w[1] foreground)."""
    weight = np.asarray(weight, np.float64)
    labels = np.asarray(labels)
    w = weight[np.where(_valid(labels, ignore_index), labels, 0)]
    return _voxel_mean(-w * np.log(true_class_probability(logits, labels)), _valid(labels, ignore_index))


def binary_cross_entropy(logits, target, weight=None):
    """One-vs-rest: ``−(1/CV) Σ_{v,c} w_c [g log σ(x) + (1 − g) log(1 − σ(x))]``."""
    s = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    g = np.asarray(target, np.float64)
    values = -(g * np.log(s) + (1 - g) * np.log(1 - s))
    if weight is not None:
        values = values * np.asarray(weight, np.float64).reshape(1, -1, *([1] * (values.ndim - 2)))
    return _flat(values).mean(axis=(1, 2))


def topk(logits, labels, k, ignore_index=None):
    """Mean CE of the ceil(k·V/100) largest CE values of each sample (V: counted voxels)."""
    ce = -np.log(true_class_probability(logits, labels))
    valid = _valid(labels, ignore_index)
    out = []
    for values, keep in zip(ce.reshape(len(ce), -1), valid.reshape(len(ce), -1)):
        values = np.sort(values[keep])[::-1]
        count = int(np.ceil(k * len(values) / 100))
        out.append(values[:count].mean() if count else 0.0)
    return np.array(out)


def topk_threshold(logits, labels, t, ignore_index=None):
    """Mean CE over the voxels with ``p_t < t``; 0 for a sample with none."""
    p_t = true_class_probability(logits, labels)
    hard = (p_t < t) & _valid(labels, ignore_index)
    return _voxel_mean(-np.log(p_t), hard)


def focal(logits, labels, gamma, alpha=None, ignore_index=None):
    """``−(1/V) Σ_v α_t (1 − p_t)^γ log p_t`` (Lin et al.)."""
    p_t = true_class_probability(logits, labels)
    values = -((1 - p_t) ** gamma) * np.log(p_t)
    if alpha is not None:
        labels = np.asarray(labels)
        values = values * np.asarray(alpha, np.float64)[np.where(_valid(labels, ignore_index), labels, 0)]
    return _voxel_mean(values, _valid(labels, ignore_index))


def soft_focal(logits, target, gamma, alpha=None):
    """``−(1/V) Σ_v Σ_c α_c g_c (1 − p_c)^γ log p_c`` (C >= 2)."""
    p = probabilities(logits)
    values = np.asarray(target, np.float64) * (1 - p) ** gamma * np.log(p)
    if alpha is not None:
        values = values * np.asarray(alpha, np.float64).reshape(1, -1, *([1] * (values.ndim - 2)))
    return -_flat(values).sum(1).mean(1)


def distance_penalized_cross_entropy(logits, labels, dist):
    """``(1/V) Σ_v (1 + D_v)(−log p_t)`` with ``D = 1 − d/max d``, ``d = |φ_{g_v}(v)|``; ``dist``:
    symmetric signed distances (``|φ|`` is the distance to the boundary)."""
    dist = np.asarray(dist, np.float64)
    labels = np.asarray(labels)
    if dist.shape[1] == 1:
        d = np.abs(dist[:, 0])
    else:
        d = np.abs(np.take_along_axis(dist, labels[:, None], axis=1)[:, 0])
    out = []
    for ce_sample, d_sample in zip(-np.log(true_class_probability(logits, labels)), d):
        penalty = 1 - d_sample / d_sample.max() if d_sample.max() > 0 else np.zeros_like(d_sample)
        out.append(((1 + penalty) * ce_sample).mean())
    return np.array(out)


# ---------------------------------------------------------------- region-based (helper A)


def region_statistics(logits, target, ignore_index=None, batch=False):
    """``p, g`` as ``(N, C, V)`` float64 (ignored voxels removed by zeroing both) and the counted
    voxels ``(N, 1)``; summed over the batch when ``batch`` (then ``(1, C, V·N)``)."""
    p = _flat(probabilities(logits))
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.floating):
        g, valid = _flat(target), np.ones((p.shape[0], 1, p.shape[2]))
    else:
        valid = _valid(target, ignore_index).reshape(p.shape[0], 1, -1).astype(np.float64)
        g = _flat(one_hot(np.where(valid[:, 0].reshape(target.shape) > 0, target, 0), p.shape[1]))
    p, g = p * valid, g * valid
    if batch:
        p = p.transpose(1, 0, 2).reshape(1, p.shape[1], -1)
        g = g.transpose(1, 0, 2).reshape(1, g.shape[1], -1)
        valid = valid.transpose(1, 0, 2).reshape(1, 1, -1)
    return p, g, valid.sum(-1)


def counts(p, g):
    """``TP = Σ p g``, ``FP = Σ p (1 − g)``, ``FN = Σ (1 − p) g`` over voxels, as printed."""
    return (p * g).sum(-1), (p * (1 - g)).sum(-1), ((1 - p) * g).sum(-1)


def class_mean(per_class, weight=None, include_background=True):
    """Mean over classes (weighted: ``Σ w l / Σ w``); class 0 dropped unless kept (C > 1)."""
    if not include_background and per_class.shape[1] > 1:
        per_class = per_class[:, 1:]
        weight = None if weight is None else np.asarray(weight, np.float64)[1:]
    if weight is None:
        return per_class.mean(1)
    weight = np.asarray(weight, np.float64)
    return (per_class * weight).sum(1) / weight.sum()


def sensitivity_specificity(p, g, voxels, r=0.05, smooth=1e-5):
    """Per class: ``r Σ(g−p)²g/(Σg + s) + (1−r) Σ(g−p)²(1−g)/(Σ(1−g) + s)`` (Brosch et al.);
    ``Σ(1−g)`` runs over the counted voxels."""
    error = (g - p) ** 2
    sensitivity = (error * g).sum(-1) / (g.sum(-1) + smooth)
    specificity = (error * (1 - g)).sum(-1) / ((voxels - g.sum(-1)) + smooth)
    return r * sensitivity + (1 - r) * specificity


def dice(p, g, smooth=1e-5, squared=False):
    """Per-class Dice loss ``1 − (2Σpg + s)/(Σp + Σg + s)`` (squared: ``Σp² + Σg²``)."""
    denominator = (p**2).sum(-1) + (g**2).sum(-1) if squared else p.sum(-1) + g.sum(-1)
    return 1 - (2 * (p * g).sum(-1) + smooth) / (denominator + smooth)


def iou(p, g, smooth=1e-5):
    """Per-class ``1 − (Σpg + s)/(Σp + Σg − Σpg + s)``."""
    intersection = (p * g).sum(-1)
    return 1 - (intersection + smooth) / (p.sum(-1) + g.sum(-1) - intersection + smooth)


def tversky(p, g, alpha=0.3, beta=0.7, smooth=1e-5):
    """Per-class ``1 − (TP + s)/(TP + α FP + β FN + s)`` (Salehi et al.)."""
    tp, fp, fn = counts(p, g)
    return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def focal_tversky(p, g, alpha=0.3, beta=0.7, gamma=4 / 3, smooth=1e-5):
    """Per-class ``(1 − TI)^{1/γ}`` (Abraham & Khan)."""
    return tversky(p, g, alpha, beta, smooth) ** (1 / gamma)


def f_beta(p, g, beta=1.5, smooth=1e-5):
    """Per-class ``1 − F_β``, ``F_β = ((1+β²)Σpg + s)/((1+β²)Σpg + β²Σ(1−p)g + Σp(1−g) + s)``
    (Hashemi et al., eq. as in the paper: β² on the false negatives)."""
    tp, fp, fn = counts(p, g)
    b2 = beta**2
    return 1 - ((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth)


def generalized_dice_score(p, g, smooth=1e-5, include_background=True):
    """Sudre et al.'s ``G`` per sample with ``w_c = 1/(Σg_c)²``; absent classes take the largest
    present weight (all absent: equal weights); weights normalised to sum 1."""
    if not include_background and p.shape[1] > 1:
        p, g = p[:, 1:], g[:, 1:]
    scores = []
    for p_sample, g_sample in zip(p, g):
        volume = g_sample.sum(-1)
        present = volume > 0
        weight = np.zeros_like(volume)
        weight[present] = 1 / volume[present] ** 2
        weight[~present] = weight[present].max() if present.any() else 1.0
        weight = weight / weight.sum()
        numerator = 2 * (weight * (p_sample * g_sample).sum(-1)).sum() + smooth
        denominator = (weight * (p_sample.sum(-1) + g_sample.sum(-1))).sum() + smooth
        scores.append(numerator / denominator)
    return np.array(scores)


def penalty_generalized_dice(p, g, k=2.5, smooth=1e-5, include_background=True):
    """``1 − G/(1 + k(1 − G))`` per sample (Yang et al.)."""
    score = generalized_dice_score(p, g, smooth, include_background)
    return 1 - score / (1 + k * (1 - score))


def focal_dice(p, g, beta=2.0, smooth=1e-5):
    """Per-class ``1 − D_c^{1/β}`` (Wang & Chung)."""
    return 1 - (1 - dice(p, g, smooth)) ** (1 / beta)


# ---------------------------------------------------------------- boundary / compound (helper B)
# Distances by scipy.ndimage, independent of the `edt` package the library uses.


def _b_kept(x, include_background):
    return x if include_background or x.shape[1] == 1 else x[:, 1:]


def signed_distance_ref(mask, spacing):
    """-distance to the outside inside the mask, +distance to the mask outside; 0 if empty/full
    (the symmetric convention, whose absolute value is the unsigned distance to the boundary)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if not mask.any() or mask.all():
        return np.zeros(mask.shape)
    return ndimage.distance_transform_edt(~mask, sampling=spacing) - ndimage.distance_transform_edt(mask, sampling=spacing)


def kervadec_level_set_ref(mask, spacing):
    """The boundary-loss paper's level set, transcribed from its reference code (``one_hot2dist``):
    ``d_out·(1 − g) − (d_in − 1)·g``; 0 if empty/full (no interface, as MONAI's BoundaryLoss)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if not mask.any() or mask.all():
        return np.zeros(mask.shape)
    outside, inside = ~mask, mask
    return (ndimage.distance_transform_edt(outside, sampling=spacing) * outside
            - (ndimage.distance_transform_edt(inside, sampling=spacing) - 1) * inside)


def signed_distance_maps_ref(onehot, spacing=None, level_set=signed_distance_ref):
    spacing = spacing or (1.0,) * (onehot.ndim - 2)
    out = np.zeros(onehot.shape)
    for index in np.ndindex(*onehot.shape[:2]):
        out[index] = level_set(onehot[index] > 0.5, spacing)
    return out


def boundary_ref(logits, labels, include_background=False, spacing=None):
    """Kervadec et al. 2019: mean over kept classes and voxels of p_c · φ_c, per sample, with the
    paper's level set φ (:func:`kervadec_level_set_ref`)."""
    p = probabilities(logits)
    g = one_hot(labels, p.shape[1])
    value = _b_kept(p * signed_distance_maps_ref(g, spacing, kervadec_level_set_ref), include_background)
    return value.reshape(len(value), -1).mean(-1)


def hd_ref(logits, labels, alpha=2.0, include_background=False, spacing=None):
    """Karimi & Salcudean 2019: mean((p - g)^2 (d_g^a + d_p^a)), d the unsigned boundary distance."""
    p = probabilities(logits)
    g = one_hot(labels, p.shape[1])
    d_g = np.abs(signed_distance_maps_ref(g, spacing))
    d_p = np.abs(signed_distance_maps_ref((p > 0.5).astype(np.float64), spacing))
    value = _b_kept((p - g) ** 2 * (d_g**alpha + d_p**alpha), include_background)
    return value.reshape(len(value), -1).mean(-1)


def _b_cross_entropy_map(logits, labels):
    p = probabilities(logits)
    if p.shape[1] == 1:
        g = (np.asarray(labels) == 1)
        return -np.where(g, np.log(p[:, 0]), np.log(1 - p[:, 0]))
    return -np.log(np.take_along_axis(p, np.asarray(labels)[:, None], 1)[:, 0])


def boundary_weighted_ref(logits, labels, band_width=2.0, p1=0.75, p2=0.25, spacing=None):
    """p1 · mean CE on the band 0 < |φ| <= w (any class) + p2 · mean CE elsewhere, per sample."""
    p = probabilities(logits)
    phi = signed_distance_maps_ref(one_hot(labels, p.shape[1]), spacing)
    band = ((phi != 0) & (np.abs(phi) <= band_width)).any(1)
    ce = _b_cross_entropy_map(logits, labels)
    out = []
    for n in range(len(ce)):
        inside = ce[n][band[n]].mean() if band[n].any() else 0.0
        outside = ce[n][~band[n]].mean() if (~band[n]).any() else 0.0
        out.append(p1 * inside + p2 * outside)
    return np.array(out)


def _b_dice_per_class(p, g, smooth):
    axes = tuple(range(2, p.ndim))
    return (2 * (p * g).sum(axes) + smooth) / (p.sum(axes) + g.sum(axes) + smooth)


def combo_ref(logits, labels, alpha=0.5, beta=0.5, smooth=1e-5, include_background=True):
    """Taghanaki et al. 2019, shifted by 1 - alpha: alpha·wCE + (1 - alpha)·(1 - mean Dice)."""
    p = probabilities(logits)
    g = one_hot(labels, p.shape[1])
    wce = -(beta * g * np.log(p) + (1 - beta) * (1 - g) * np.log(1 - p))
    wce = _b_kept(wce, include_background)
    dice = _b_kept(_b_dice_per_class(p, g, smooth), include_background).mean(1)
    return alpha * wce.reshape(len(wce), -1).mean(-1) + (1 - alpha) * (1 - dice)


def ell_ref(logits, labels, w_dice=0.8, w_cross=0.2, gamma_dice=0.3, gamma_cross=0.3, smooth=1.0):
    """Wong et al. 2018; one-channel logits scored as two classes [1 - p, p]."""
    logits = np.asarray(logits, np.float64)
    if logits.shape[1] == 1:
        logits = np.concatenate([np.zeros_like(logits), logits], 1)
    p = probabilities(logits)
    labels = np.asarray(labels)
    g = one_hot(labels, p.shape[1])
    dice_term = ((-np.log(_b_dice_per_class(p, g, smooth))) ** gamma_dice).mean(1)
    counts = np.array([(labels == c).sum() for c in range(p.shape[1])], np.float64)
    weight = np.sqrt(counts.sum() / counts[labels])  # w_l of each voxel's label
    p_label = np.take_along_axis(p, labels[:, None], 1)[:, 0]
    cross = weight * (-np.log(p_label)) ** gamma_cross
    return w_dice * dice_term + w_cross * cross.reshape(len(cross), -1).mean(-1)


def ssim_ref(a, b, window_size=11, sigma=1.5):
    """Mean SSIM per sample; full (non-separable) Gaussian window, zero padding, by scipy."""
    from scipy import ndimage

    x = np.arange(window_size) - (window_size - 1) / 2
    g1 = np.exp(-x**2 / (2 * sigma**2))
    g1 /= g1.sum()
    out = []
    for n in range(a.shape[0]):
        u, v = a[n, 0], b[n, 0]
        window = g1
        for _ in range(u.ndim - 1):
            window = np.multiply.outer(window, g1)

        def blur(z):
            return ndimage.correlate(z, window, mode="constant", cval=0.0)

        mu_u, mu_v = blur(u), blur(v)
        var_u, var_v, cov = blur(u * u) - mu_u**2, blur(v * v) - mu_v**2, blur(u * v) - mu_u * mu_v
        c1, c2 = 0.01**2, 0.03**2
        index = (2 * mu_u * mu_v + c1) * (2 * cov + c2) / ((mu_u**2 + mu_v**2 + c1) * (var_u + var_v + c2))
        out.append(index.mean())
    return np.array(out)


def bce_iou_ssim_ref(logits, labels, smooth=1e-5):
    """Qin et al. 2019 (BASNet): BCE + (1 - IoU) + (1 - SSIM), one-channel logits."""
    p = probabilities(logits)
    g = one_hot(labels, 1)
    n = len(p)
    bce = _b_cross_entropy_map(logits, labels).reshape(n, -1).mean(-1)
    inter = (p * g).reshape(n, -1).sum(-1)
    iou = (inter + smooth) / (p.reshape(n, -1).sum(-1) + g.reshape(n, -1).sum(-1) - inter + smooth)
    return bce + (1 - iou) + (1 - ssim_ref(p, g))


def lesion_ref(logits, labels, alpha=0.5, gamma=2.0):
    """Zhu et al.: alpha · mean over target components (all foreground classes) of the mean focal
    loss on the component + (1 - alpha) · mean focal loss over the image."""
    from scipy import ndimage

    logits = np.asarray(logits, np.float64)
    if logits.shape[1] == 1:
        logits = np.concatenate([np.zeros_like(logits), logits], 1)
    p = probabilities(logits)
    labels = np.asarray(labels)
    p_true = np.take_along_axis(p, labels[:, None], 1)[:, 0]
    focal = -((1 - p_true) ** gamma) * np.log(p_true)
    out = []
    for n in range(len(labels)):
        component_means = []
        for c in range(1, p.shape[1]):
            components, count = ndimage.label(labels[n] == c)
            component_means += [focal[n][components == k].mean() for k in range(1, count + 1)]
        lesion = np.mean(component_means) if component_means else 0.0
        out.append(alpha * lesion + (1 - alpha) * focal[n].mean())
    return np.array(out)
