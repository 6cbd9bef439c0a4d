"""More region-based losses: the Matthews correlation coefficient, the Lovász extension of the
Jaccard loss, and the generalized Wasserstein Dice.

Like :mod:`medsegloss.losses.region`, each scores per sample (``batch=False``) or over the pooled
batch (``batch=True``) and reduces afterwards, so ``reduction="none"`` gives one value per sample.
"""

from __future__ import annotations

import torch

from medsegloss._checks import check_reduction, check_target
from medsegloss._ops import (
    at_least_float32, flatten_spatial, label_count, probabilities, reduce, select_classes,
    soft_counts, target_probabilities,
)
from medsegloss.losses._registry import exports, loss_class
from medsegloss.losses.region import reduce_classes


def _counts_and_voxels(logits, target, ignore_index):
    """Checked input -> soft ``tp, fp, fn`` ``(N, C)`` and the counted voxels per sample ``(N, 1)``."""
    target = check_target(target, logits, ignore_index)
    probs = probabilities(logits)
    onehot, valid = target_probabilities(target, logits.shape[1], ignore_index, probs.dtype)
    tp, fp, fn = soft_counts(probs, onehot, valid)
    if valid is None:
        voxels = torch.full_like(tp[:, :1], float(probs[0, 0].numel()))
    else:
        voxels = flatten_spatial(valid).sum(-1)
    return tp, fp, fn, voxels


def mcc_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1e-5, weight=None,
             ignore_index: int | None = None, include_background: bool = True, batch: bool = False,
             reduction: str = "mean") -> torch.Tensor:
    r"""Matthews correlation coefficient loss (Abhishek & Hamarneh, 2021): ``1 − MCC`` per class
    (one class against the rest), then averaged.

    .. math:: MCC_c = \frac{TP_c\,TN_c - FP_c\,FN_c}
              {\sqrt{(TP_c+FP_c)(TP_c+FN_c)(TN_c+FP_c)(TN_c+FN_c) + s}}

    with the soft counts ``TP = Σpg``, ``FP = Σp(1−g)``, ``FN = Σ(1−p)g`` and
    ``TN = Σ(1−p)(1−g) = V − TP − FP − FN``. Unlike Dice it rewards the true negatives too.
    ``s`` (``smooth``) keeps the root's slope finite. An exact prediction (``FP = FN = 0``)
    scores 0, also for a class absent from both, whose MCC is otherwise 0 (as MONAI's
    ``MCCLoss``, which this equals). The paper is binary; for ``C >= 2`` each softmax channel is
    scored against the rest and the classes averaged (weighted by ``weight``).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> mcc_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    tp, fp, fn, voxels = _counts_and_voxels(logits, target, ignore_index)
    if batch:
        tp, fp, fn, voxels = (x.sum(0, keepdim=True) for x in (tp, fp, fn, voxels))
    tn = voxels - tp - fp - fn
    mcc = (tp * tn - fp * fn) / torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn) + smooth)
    per_class = torch.where((fp == 0) & (fn == 0), torch.zeros_like(mcc), 1.0 - mcc)
    return reduce_classes(per_class, logits.shape[0], weight, include_background, reduction)


def lovasz_extension(errors: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    r"""The Lovász extension of the Jaccard loss at the error vector (Berman et al., 2018, Alg. 1).

    .. math:: \overline{\Delta_J}(m) = \sum_{i} m_{\pi_i}\, g_i(m),\qquad
              g_i = \Delta_J(\{\pi_1..\pi_i\}) - \Delta_J(\{\pi_1..\pi_{i-1}\})

    with ``π`` the errors sorted in decreasing order and ``Δ_J(S) = 1 − |G∖S|/|G ∪ S|`` the
    Jaccard loss when the voxels ``S`` are mispredicted (``G``: the foreground). The weights
    ``g`` depend on the target only (no gradient).

    Shape:
        errors, foreground: ``(..., V)``, errors ``>= 0``; returns ``(...)``.
    """
    errors_sorted, order = torch.sort(errors, dim=-1, descending=True)
    foreground = foreground.to(errors.dtype).gather(-1, order)
    total = foreground.sum(-1, keepdim=True)
    intersection = total - foreground.cumsum(-1)
    union = total + (1.0 - foreground).cumsum(-1)
    jaccard = 1.0 - intersection / union  # union >= 1 wherever total = 0, >= total otherwise
    steps = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], -1)
    return (errors_sorted * steps).sum(-1)


def lovasz_loss(logits: torch.Tensor, target: torch.Tensor, *, classes: str = "present",
                ignore_index: int | None = None, include_background: bool = True, batch: bool = False,
                reduction: str = "mean") -> torch.Tensor:
    r"""Lovász-softmax loss (Berman et al., 2018) for ``C >= 2``; the Lovász hinge for one channel.

    .. math:: L = \frac{1}{|K|}\sum_{c \in K} \overline{\Delta_{J_c}}(m_c),\qquad
              m_c(v) = |g_c(v) - p_c(v)| \;\;(C \ge 2),\qquad m(v) = \max(0,\ 1 - x_v s_v) \;\;(C = 1)

    :func:`lovasz_extension` is the tight convex surrogate of ``1 − IoU``, so the loss optimises
    the Jaccard index directly. For softmax logits the errors are ``|g − p|`` per class; for
    one-channel logits the paper's hinge on the raw logit ``x`` with sign ``s = 2g − 1``.
    ``classes="present"`` (the paper's default) averages over the classes present in the target
    (of the sample, or of the batch with ``batch=True``; a sample with none scores 0);
    ``"all"`` over every kept class. Voxels equal to ``ignore_index`` do not count.
    ``batch=True`` computes one loss over the whole batch (SMP's ``per_image=False``).

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or ``(N, C, *spatial)`` floats;
        returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> lovasz_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    if classes not in ("present", "all"):
        raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
    target = check_target(target, logits, ignore_index)
    logits = at_least_float32(logits)
    n, c = logits.shape[:2]
    onehot, valid = target_probabilities(target, c, ignore_index, logits.dtype)
    if c == 1:
        errors = (1.0 - logits * (2.0 * onehot - 1.0)).relu()
    else:
        errors = (onehot - torch.softmax(logits, 1)).abs()
    if valid is not None:  # error 0 sorts last and adds nothing; foreground 0 keeps |G| right
        errors, onehot = errors * valid, onehot * valid
    errors, onehot = flatten_spatial(errors), flatten_spatial(onehot)
    if batch:  # one long vector per class: (1, C, N·V)
        errors, onehot = (x.transpose(0, 1).reshape(1, c, -1) for x in (errors, onehot))
    per_class = select_classes(lovasz_extension(errors, onehot), include_background)
    if c == 1 or classes == "all":
        per_sample = per_class.mean(1)
    else:
        present = select_classes(onehot.sum(-1) > 0, include_background).to(per_class.dtype)
        per_sample = (per_class * present).sum(1) / present.sum(1).clamp_min(1.0)
    return reduce(per_sample.expand(n), reduction)


def _wasserstein_matrix(dist_matrix, num_labels: int, device, dtype) -> torch.Tensor:
    """The label distance matrix ``M``: ``1 − I`` by default; a given one is checked and scaled
    so that its largest entry is 1 (the GWDS needs ``W <= 1``)."""
    if dist_matrix is None:
        return 1.0 - torch.eye(num_labels, device=device, dtype=dtype)
    matrix = torch.as_tensor(dist_matrix, device=device, dtype=dtype)
    if matrix.shape != (num_labels, num_labels):
        raise ValueError(f"dist_matrix must be ({num_labels}, {num_labels}), one row and column per label, "
                         f"got shape {tuple(matrix.shape)}")
    if not torch.isfinite(matrix).all() or (matrix < 0).any() or matrix.max() <= 0:
        raise ValueError(f"dist_matrix must be finite, non-negative and not all zero, got {matrix.tolist()}")
    if (matrix.diagonal() != 0).any():
        raise ValueError(f"dist_matrix must have zeros on its diagonal (a label is at distance 0 from itself), "
                         f"got diagonal {matrix.diagonal().tolist()}")
    return matrix / matrix.max()


def _labels_of(target: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Integer labels of a checked target; a float target must be one-hot (the Wasserstein
    distance to a soft label is an optimal-transport problem, not this closed form)."""
    if not target.is_floating_point():
        return target
    if not ((target == 0) | (target == 1)).all() or (target.shape[1] > 1 and not (target.sum(1) == 1).all()):
        raise ValueError("gwdl needs integer labels or a one-hot float target; got soft labels")
    return target[:, 0].long() if target.shape[1] == 1 else target.argmax(1)


def generalized_wasserstein_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, dist_matrix=None,
                                      weighting: str = "default", smooth: float = 1e-5,
                                      ignore_index: int | None = None, reduction: str = "mean") -> torch.Tensor:
    r"""Generalized Wasserstein Dice loss (Fidon et al., 2017): ``1 − GWDS``, one score over all
    classes that charges a mistake by how far apart the two labels are.

    .. math:: W_v = \sum_{c} M_{y_v, c}\, p_c(v),\qquad
              TP = \sum_v \alpha_{y_v} (1 - W_v),\qquad
              GWDS = \frac{2\,TP + s}{2\,TP + \sum_v W_v + s}

    ``W_v`` is the Wasserstein distance between the predicted distribution and the one-hot label
    under the label distance matrix ``M`` (``dist_matrix``, ``K × K`` with ``K = C``, or 2 for
    one-channel logits; default ``1 − I``, every mistake costs 1; scaled so its maximum is 1).
    ``weighting="default"`` is the paper's ``α = 0`` for the background (label 0) and 1 for the
    others. ``weighting="gdl"`` uses MONAI's variant ``α_l = 1/(V_l + 1)`` (``V_l``: voxels of
    label ``l`` in the sample) with the denominator ``Σ_v α_{y_v}(2 − W_v)``.

    Shape:
        logits ``(N, C, *spatial)``, target ``(N, *spatial)`` labels or one-hot ``(N, C, *spatial)``
        floats; returns a scalar, or ``(N,)`` for ``reduction="none"``.

    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> generalized_wasserstein_dice_loss(logits, torch.randint(0, 3, (2, 8, 8))).backward()
    """
    check_reduction(reduction)
    if weighting not in ("default", "gdl"):
        raise ValueError(f"weighting must be 'default' or 'gdl', got {weighting!r}")
    target = check_target(target, logits, ignore_index)
    probs = probabilities(logits)
    n, c = probs.shape[:2]
    k = label_count(c)
    if c == 1:
        probs = torch.cat([1.0 - probs, probs], 1)
    matrix = _wasserstein_matrix(dist_matrix, k, probs.device, probs.dtype)
    labels = _labels_of(target, k).reshape(n, -1)
    valid = None if ignore_index is None or target.is_floating_point() else labels != ignore_index
    if valid is not None:
        labels = torch.where(valid, labels, torch.zeros_like(labels))
    probs = flatten_spatial(probs)
    # W_v = Σ_c M[y_v, c]·p_c(v): every label's row against p(v) is one small matmul, then the true
    # label's row is gathered (no (N, V, K) copy of the matrix rows)
    if dist_matrix is None:  # M = 1 − I: W_v = 1 − p_{y_v}(v)
        wasserstein = 1.0 - probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    else:
        wasserstein = torch.matmul(matrix, probs).gather(1, labels.unsqueeze(1)).squeeze(1)  # (N, V)
    if weighting == "default":
        alpha = torch.ones(k, device=probs.device, dtype=probs.dtype)
        alpha[0] = 0.0
        alpha = alpha[labels]
    else:
        counted = labels if valid is None else torch.where(valid, labels, torch.full_like(labels, k))
        volumes = torch.zeros(n, k + 1, device=probs.device, dtype=probs.dtype)
        volumes.scatter_add_(1, counted, torch.ones_like(wasserstein))
        alpha = (1.0 / (volumes[:, :k] + 1.0)).gather(1, labels)
    if valid is not None:
        alpha, wasserstein = alpha * valid, wasserstein * valid
    true_positives = (alpha * (1.0 - wasserstein)).sum(1)
    if weighting == "default":
        denominator = 2.0 * true_positives + wasserstein.sum(1)
    else:
        denominator = (alpha * (2.0 - wasserstein)).sum(1)
    return reduce(1.0 - (2.0 * true_positives + smooth) / (denominator + smooth), reduction)


MCCLoss = loss_class(
    "MCCLoss", mcc_loss, "mcc", family="region", paper="Abhishek & Hamarneh, 2021",
    formula="Matthews correlation coefficient loss, 1 − (TP·TN − FP·FN)/√((TP+FP)(TP+FN)(TN+FP)(TN+FN)) per class",
    peers={"monai": "MCCLoss"})


LovaszLoss = loss_class(
    "LovaszLoss", lovasz_loss, "lovasz", family="region", paper="Berman et al., 2018",
    formula="Lovász-softmax (Lovász hinge for one channel): the convex extension of 1 − IoU per class",
    peers={"smp": "LovaszLoss"})


GeneralizedWassersteinDiceLoss = loss_class(
    "GeneralizedWassersteinDiceLoss", generalized_wasserstein_dice_loss, "gwdl", family="region",
    paper="Fidon et al., 2017",
    formula="Generalized Wasserstein Dice, 1 − 2TP/(2TP + ΣW), W the label-distance-weighted error",
    peers={"monai": "GeneralizedWassersteinDiceLoss"},
    multilabel_refusal="its label distance matrix relates mutually exclusive labels; overlapping regions have none")


__all__ = exports(__name__, ["lovasz_extension"])
