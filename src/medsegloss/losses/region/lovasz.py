"""The Lovász-softmax loss (Berman et al., 2018): the tight convex surrogate of the Jaccard loss,
optimising the IoU directly (the Lovász hinge for one channel)."""

from __future__ import annotations

import torch

from medsegloss._checks import check_reduction, check_target
from medsegloss._ops import at_least_float32, flatten_spatial, reduce, select_classes, target_probabilities
from medsegloss.losses._registry import exports, loss_class


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


LovaszLoss = loss_class(
    "LovaszLoss", lovasz_loss, "lovasz", family="region", paper="Berman et al., 2018",
    formula="Lovász-softmax (Lovász hinge for one channel): the convex extension of 1 − IoU per class",
    peers={"smp": "LovaszLoss"})


__all__ = exports(__name__, ["lovasz_extension"])
