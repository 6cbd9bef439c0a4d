"""Float64 NumPy references, written from the papers, for mcc, lovasz, gwdl, cldice,
skeleton_recall, hd_er and unified_focal (``references.py`` holds the other losses').

Independent of the package: loops and set definitions where the paper states them so (the
Lovász extension from Jaccard losses of prefix sets, erosions written as neighbour averages).
Inputs are NumPy arrays: ``logits (N, C, *spatial)``, integer ``labels (N, *spatial)``; every
function returns the per-sample values ``(N,)``.
"""

from __future__ import annotations

import numpy as np


from references import _flat, one_hot, probabilities  # noqa: F401  (the shared float64 primitives)


# ---------------------------------------------------------------- MCC (Abhishek & Hamarneh, 2021)


def mcc(logits, labels, smooth=1e-5, include_background=True):
    """``1 − MCC`` per class with the four soft confusion counts written out, class mean."""
    p, g = _flat(probabilities(logits)), _flat(one_hot(labels, logits.shape[1]))
    tp = (p * g).sum(-1)
    tn = ((1 - p) * (1 - g)).sum(-1)
    fp = (p * (1 - g)).sum(-1)
    fn = ((1 - p) * g).sum(-1)
    value = 1 - (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn) + smooth)
    value = np.where((fp == 0) & (fn == 0), 0.0, value)
    if not include_background and value.shape[1] > 1:
        value = value[:, 1:]
    return value.mean(1)


# ---------------------------------------------------------------- Lovász (Berman et al., 2018)


def jaccard_loss_of_set(foreground, mispredicted):
    """``Δ_J(M) = 1 − |G ∖ M| / |G ∪ M|`` for boolean vectors (the paper's eq. 4 as sets)."""
    union = np.logical_or(foreground, mispredicted).sum()
    return 1.0 - np.logical_and(foreground, ~mispredicted).sum() / union if union else 0.0


def lovasz_extension(errors, foreground):
    """``Σ_i m_{π_i} (Δ_J(S_i) − Δ_J(S_{i−1}))``, ``S_i`` the ``i`` largest errors: a loop over prefixes."""
    order = np.argsort(-errors, kind="stable")
    foreground = np.asarray(foreground, bool)
    mispredicted = np.zeros(errors.shape, bool)
    total, previous = 0.0, 0.0
    for index in order:
        mispredicted[index] = True
        current = jaccard_loss_of_set(foreground, mispredicted)
        total += errors[index] * (current - previous)
        previous = current
    return total


def lovasz(logits, labels, batch=False, classes="present"):
    """Lovász-softmax (C >= 2, errors |g − p|) or Lovász hinge (C == 1, errors max(0, 1 − x·s))."""
    logits = np.asarray(logits, np.float64)
    n, c = logits.shape[:2]
    g = one_hot(labels, c)
    if c == 1:
        errors = np.maximum(0.0, 1.0 - logits * (2 * g - 1))
    else:
        errors = np.abs(g - probabilities(logits))
    errors, g = _flat(errors), _flat(g)
    groups = [(errors.transpose(1, 0, 2).reshape(c, -1), g.transpose(1, 0, 2).reshape(c, -1))] if batch else \
        [(errors[i], g[i]) for i in range(n)]
    values = []
    for e, fg in groups:
        kept = [k for k in range(c) if c == 1 or classes == "all" or fg[k].sum() > 0]
        values.append(np.mean([lovasz_extension(e[k], fg[k] > 0.5) for k in kept]) if kept else 0.0)
    return np.repeat(values, n) if batch else np.array(values)


# ---------------------------------------------------------------- GWDL (Fidon et al., 2017)


def generalized_wasserstein_dice(logits, labels, dist_matrix=None, smooth=1e-5):
    """``1 − (2TP + s)/(2TP + ΣW + s)``, ``W_v = Σ_c M[y_v, c] p_c``, ``TP = Σ_v α_{y_v}(1 − W_v)``,
    ``α = (0, 1, ..., 1)``: the paper's eqs. 6-8 with loops over voxels."""
    p = probabilities(logits)
    if p.shape[1] == 1:
        p = np.concatenate([1 - p, p], 1)
    k = p.shape[1]
    m = 1 - np.eye(k) if dist_matrix is None else np.asarray(dist_matrix, np.float64) / np.max(dist_matrix)
    p, labels = _flat(p), np.asarray(labels).reshape(len(labels), -1)
    out = []
    for i in range(len(labels)):
        tp = error = 0.0
        for v, y in enumerate(labels[i]):
            w = sum(m[y, c] * p[i, c, v] for c in range(k))
            tp += (0.0 if y == 0 else 1.0) * (1 - w)
            error += w
        out.append(1 - (2 * tp + smooth) / (2 * tp + error + smooth))
    return np.array(out)


# ---------------------------------------------------------------- morphology on NumPy arrays


def _neighbours(x, fill):
    """Every face-neighbour shift of ``x (N, C, *spatial)`` along each spatial axis, the image edge
    filled with ``fill`` (±inf: the edge takes no part in a min / max)."""
    shifted = []
    for axis in range(2, x.ndim):
        for step in (1, -1):
            moved = np.roll(x, step, axis=axis)
            edge = [slice(None)] * x.ndim
            edge[axis] = 0 if step == 1 else -1
            moved[tuple(edge)] = fill
            shifted.append(moved)
    return shifted


def erode(x):
    """Minimum over the voxel and its face neighbours (the cross)."""
    return np.minimum.reduce([x, *_neighbours(x, np.inf)])


def dilate(x):
    """Maximum over the full 3×3(×3) square: the cross's maximum applied once per axis."""
    for axis in range(2, x.ndim):
        pair = [n for n in _neighbours(x, -np.inf)][2 * (axis - 2): 2 * (axis - 2) + 2]
        x = np.maximum.reduce([x, *pair])
    return x


def soft_skeleton(x, iterations):
    """Shit et al., 2021, Alg. 1: skel = relu(x − open(x)); repeat on eroded x, adding relu(δ − skel·δ)."""
    x = np.asarray(x, np.float64)
    skeleton = np.maximum(x - dilate(erode(x)), 0)
    for _ in range(iterations):
        x = erode(x)
        delta = np.maximum(x - dilate(erode(x)), 0)
        skeleton = skeleton + np.maximum(delta - skeleton * delta, 0)
    return skeleton


def _kept(p, g, include_background):
    if not include_background and p.shape[1] > 1:
        return p[:, 1:], g[:, 1:]
    return p, g


def cldice(logits, labels, iterations=3, smooth=1.0, include_background=False):
    """``1 − 2·Tprec·Tsens/(Tprec + Tsens)`` per class, class mean."""
    p, g = _kept(probabilities(logits), one_hot(labels, logits.shape[1]), include_background)
    sp, sg = _flat(soft_skeleton(p, iterations)), _flat(soft_skeleton(g, iterations))
    p, g = _flat(p), _flat(g)
    precision = ((sp * g).sum(-1) + smooth) / (sp.sum(-1) + smooth)
    sensitivity = ((sg * p).sum(-1) + smooth) / (sg.sum(-1) + smooth)
    return (1 - 2 * precision * sensitivity / (precision + sensitivity)).mean(1)


def cldice_pooled(logits, labels, iterations=3, smooth=1.0, include_background=True, epsilon=1e-4):
    """MONAI 1.6's ``SoftclDiceLoss``: one score per sample, the kept channels pooled into each
    sum (a micro average), and ``epsilon`` added to the harmonic mean's denominator."""
    p, g = _kept(probabilities(logits), one_hot(labels, logits.shape[1]), include_background)
    sp, sg = soft_skeleton(p, iterations), soft_skeleton(g, iterations)
    n = p.shape[0]
    sp, sg, p, g = (x.reshape(n, -1) for x in (sp, sg, p, g))
    precision = ((sp * g).sum(-1) + smooth) / (sp.sum(-1) + smooth)
    sensitivity = ((sg * p).sum(-1) + smooth) / (sg.sum(-1) + smooth)
    return 1 - 2 * precision * sensitivity / (precision + sensitivity + epsilon)


def skeleton_recall(logits, labels, iterations=10, smooth=1.0, include_background=False):
    """``1 − (Σ p·T + s)/(Σ T + s)`` per class, ``T`` = the target skeleton (> 0.5) dilated by the
    square, inside the target mask."""
    p, g = _kept(probabilities(logits), one_hot(labels, logits.shape[1]), include_background)
    tube = _flat(dilate((soft_skeleton(g, iterations) > 0.5).astype(np.float64)) * g)
    return (1 - ((_flat(p) * tube).sum(-1) + smooth) / (tube.sum(-1) + smooth)).mean(1)


# ---------------------------------------------------------------- unified focal (Yeung et al., 2022)


def unified_focal(logits, labels, weight_focal=0.5, delta=0.6, gamma=0.5, variant="asymmetric", smooth=1e-7):
    """λ·L_F + (1 − λ)·L_FT with background = class 0, written class by class."""
    p = probabilities(logits)
    if p.shape[1] == 1:
        p = np.concatenate([1 - p, p], 1)
    c = p.shape[1]
    g = one_hot(labels, c)
    p, g = _flat(p), _flat(g)
    focal = np.zeros(p.shape[0])
    focal_tversky = np.zeros(p.shape[0])
    for k in range(c):
        ce = -g[:, k] * np.log(p[:, k])
        if k == 0:
            focal += ((1 - delta) * (1 - p[:, k]) ** gamma * ce).mean(-1)
        else:
            factor = 1.0 if variant == "asymmetric" else (1 - p[:, k]) ** gamma
            focal += (delta * factor * ce).mean(-1)
        tp = (p[:, k] * g[:, k]).sum(-1)
        fn = ((1 - p[:, k]) * g[:, k]).sum(-1)
        fp = (p[:, k] * (1 - g[:, k])).sum(-1)
        mti = (tp + smooth) / (tp + delta * fn + (1 - delta) * fp + smooth)
        exponent = 1.0 if (k == 0 and variant == "asymmetric") else 1 - gamma
        focal_tversky += (1 - mti) ** exponent / c
    return weight_focal * focal + (1 - weight_focal) * focal_tversky


# ---------------------------------------------------------------- erosion HD (Karimi & Salcudean, 2019)


def hausdorff_erosion(logits, labels, alpha=2.0, erosions=10, include_background=False):
    """Σ_k k^α · mean of Δ eroded k times; erosion = cross average − 0.5, clipped at 0, min-max per image."""
    p, g = _kept(probabilities(logits), one_hot(labels, logits.shape[1]), include_background)
    image = (p - g) ** 2
    total = np.zeros_like(image)
    for k in range(1, erosions + 1):
        neighbours = _neighbours(image, 0.0)
        image = np.maximum((image + sum(neighbours)) / (1 + len(neighbours)) - 0.5, 0)
        for index in np.ndindex(*image.shape[:2]):
            low, high = image[index].min(), image[index].max()
            if high > low:
                image[index] = (image[index] - low) / (high - low)
        total += k ** alpha * image
    return total.reshape(total.shape[0], -1).mean(1)
