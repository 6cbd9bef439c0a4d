"""The primitives every loss is written in: probabilities, one-hot targets, soft counts, reduction,
the per-voxel cross-entropy, and :class:`FunctionalLoss`, the thin module every registered loss is.

Conventions (the package's one input contract):
  * ``logits (N, C, *spatial)``; ``C >= 2`` -> softmax over dim 1, ``C == 1`` -> sigmoid (binary).
  * ``target``: integer labels ``(N, *spatial)`` or float ``(N, C, *spatial)``; see
    :func:`medsegloss._checks.check_target`.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from medsegloss._checks import check_distance_map, check_multilabel_target, check_reduction, check_weight


def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (bf16 / fp16 autocast) upcast to float32, so a loss keeps its
    precision: sums over a whole volume and ``log`` of small probabilities need it."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class dimension, or sigmoid for one-channel (binary) logits. Computed in
    float32 at least, so bf16 / fp16 autocast does not cost the loss its precision."""
    logits = at_least_float32(logits)
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def one_hot(labels: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    """``(N, *spatial)`` integer labels -> ``(N, C, *spatial)`` one-hot. ``num_classes == 1`` means
    binary: the single channel is the foreground (label 1). Labels must be in range (no ignore)."""
    if num_classes == 1:
        return labels.unsqueeze(1).to(dtype)
    out = torch.zeros((labels.shape[0], num_classes, *labels.shape[1:]), dtype=dtype, device=labels.device)
    return out.scatter_(1, labels.unsqueeze(1), 1.0)


def target_probabilities(
    target: torch.Tensor, num_classes: int, ignore_index: int | None = None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A checked target as ``(N, C, *spatial)`` probabilities plus the ``(N, 1, *spatial)`` mask of
    voxels that count (``None`` when every voxel counts)."""
    if target.is_floating_point():
        return target.to(dtype), None
    if ignore_index is None:
        return one_hot(target, num_classes, dtype), None
    valid = target != ignore_index
    labels = torch.where(valid, target, torch.zeros_like(target))
    return one_hot(labels, num_classes, dtype), valid.unsqueeze(1).to(dtype)


def flatten_spatial(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, *spatial)`` -> ``(N, C, V)``, so every formula works for 2-D and 3-D alike."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def soft_counts(
    probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false positives and false negatives per sample and class.

    ``tp = Σ p·g``, ``fp = Σ p·(1−g) = Σp − tp``, ``fn = Σ (1−p)·g = Σg − tp`` over the voxels
    (only the ``valid`` ones when given). Three reductions, no ``1 − p`` temporaries.

    Shape:
        probs, target: ``(N, C, *spatial)``; valid: ``(N, 1, *spatial)`` or None.
        Returns tp, fp, fn: each ``(N, C)``.
    """
    if valid is not None:
        probs = probs * valid
        target = target * valid
    p, g = flatten_spatial(probs), flatten_spatial(target)
    tp = (p * g).sum(-1)
    fp = p.sum(-1) - tp
    fn = g.sum(-1) - tp
    return tp, fp, fn


_LANES = 8  # accumulators per class (see _class_bins)


def _class_bins(labels: torch.Tensor) -> torch.Tensor:
    """``(N, V)`` labels -> bin ``label·8 + v mod 8`` of every voxel, for :func:`_class_sums`.

    Neighbouring voxels mostly share a label; summing them into one accumulator per class makes
    every addition wait for the previous one (1.5x slower on segmentation-like labels than on
    random ones). Eight interleaved accumulators per class break that chain."""
    voxels = labels.shape[-1]
    lanes = torch.arange(_LANES, device=labels.device).repeat(-(-voxels // _LANES))[:voxels]  # v mod 8
    return torch.add(lanes, labels, alpha=_LANES)


def _class_sums(values: torch.Tensor, bins: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``Σ_{v: y_v = c} values_v`` per sample and class ``(N, C)`` from ``(N, V)`` values."""
    sums = values.new_zeros(values.shape[0], num_classes * _LANES).scatter_add_(1, bins, values)
    return sums.view(-1, num_classes, _LANES).sum(-1)


class _SoftmaxLabelCounts(torch.autograd.Function):
    """Per sample, from logits ``(N, C, *spatial)`` and integer labels, in few passes over memory:
    ``Σ_v −log p_{y_v}`` ``(N,)`` (zeros unless ``with_nll``), ``TP_c = Σ_{v: y_v = c} p_c`` and
    ``Σ_v p_c`` ``(N, C)``.

    The backward pass is written out, so no one-hot tensor or autograd chain through softmax is
    ever built: with ``G_c = ∂L/∂p_c = g^{Σp}_c + [c = y](g^{TP}_c − g^{nll}/p_y)``, the chain
    rule through the softmax gives ``∂L/∂x_c = p_c (g^{Σp}_c − s) + [c = y](p_y g^{TP}_y − g^{nll})``
    with ``s = Σ_c p_c G_c``. Labels in range (no ``ignore_index``).
    """

    @staticmethod
    def forward(ctx, logits, labels, bins, with_nll):
        n, c = logits.shape[:2]
        y = labels.reshape(n, 1, -1)
        flat = logits.reshape(n, c, -1)
        probs = torch.softmax(flat, 1)
        p_true = probs.gather(1, y)
        if with_nll:
            log_p_true = p_true.log()
            # where p underflows (logit gaps beyond ~87 in float32) take log p = x − logsumexp(x)
            threshold = torch.finfo(p_true.dtype).tiny * 2**24
            if p_true.min() < threshold:  # rare: build the mask only then
                tiny = p_true < threshold
                exact = flat.gather(1, y) - torch.logsumexp(flat, 1, keepdim=True)
                log_p_true = torch.where(tiny, exact, log_p_true)
            nll = -log_p_true.sum((1, 2))
        else:
            nll = probs.new_zeros(n)
        tp = _class_sums(p_true[:, 0], bins, c)
        ctx.save_for_backward(probs, y, p_true)
        ctx.shape = logits.shape
        return nll, tp, probs.sum(-1)

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
        return grad.view(ctx.shape), None, None, None


class _SigmoidCounts(torch.autograd.Function):
    """The binary counterpart of :class:`_SoftmaxLabelCounts`: from one-channel logits ``x`` and
    a float foreground target ``t`` ``(N, V)``, per sample ``Σ BCE = Σ softplus(x) − x·t`` (zeros
    unless ``with_bce``), ``TP = Σ σ(x)·t`` and ``Σ σ(x)``; backward written out:
    ``∂L/∂x = g^{BCE}(p − t) + p(1 − p)(g^{Σp} + g^{TP} t)``."""

    @staticmethod
    def forward(ctx, logits, target, with_bce):
        probs = torch.sigmoid(logits)
        if with_bce:
            bce = F.softplus(logits).sum(-1) - (logits * target).sum(-1)
        else:
            bce = probs.new_zeros(probs.shape[0])
        ctx.save_for_backward(probs, target)
        ctx.with_bce = with_bce
        return bce, (probs * target).sum(-1), probs.sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_bce, grad_tp, grad_sum_p):
        probs, target = ctx.saved_tensors
        grad = torch.addcmul(grad_sum_p.unsqueeze(-1), target, grad_tp.unsqueeze(-1))
        grad = torch.ops.aten.sigmoid_backward(grad, probs)  # grad·p(1 − p) in one pass
        if ctx.with_bce:
            grad.addcmul_(probs - target, grad_bce.unsqueeze(-1))
        return grad, None, None


def fused_soft_counts(logits: torch.Tensor, labels: torch.Tensor, with_ce: bool = False):
    """Soft ``tp, fp, fn`` ``(N, C)`` straight from logits and checked, in-range integer labels
    (no ``ignore_index``), or for one-channel logits the soft foreground ``(N, *spatial)``, in
    one fused pass: no one-hot tensor, no autograd chain through the softmax
    (:class:`_SoftmaxLabelCounts`, :class:`_SigmoidCounts`). Equal to
    ``soft_counts(probabilities(logits), one_hot(labels, C))``. Callers ask :func:`use_fused`.

    ``with_ce=True`` also returns the per-sample mean cross-entropy ``(N,)`` first (softmax CE,
    or BCE with logits for one channel), from the same pass: ``(ce, tp, fp, fn)``.

    Shape:
        logits ``(N, C, *spatial)``, labels ``(N, *spatial)``; returns ``(N, C)`` counts.

    >>> logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    >>> fused = fused_soft_counts(logits, labels)
    >>> plain = soft_counts(probabilities(logits), one_hot(labels, 3))
    >>> all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fused, plain))
    True
    """
    logits = at_least_float32(logits)
    n, c = logits.shape[:2]
    voxels = labels[0].numel()
    if c == 1:
        foreground = labels.reshape(n, -1).to(logits.dtype)  # labels are 0 / 1, or soft
        bce, tp, sum_p = _SigmoidCounts.apply(logits.reshape(n, -1), foreground, with_ce)
        tp, sum_g = tp.unsqueeze(1), foreground.sum(-1, keepdim=True)
        counts = (tp, sum_p.unsqueeze(1) - tp, sum_g - tp)
        return (bce / voxels, *counts) if with_ce else counts
    bins = _class_bins(labels.reshape(n, -1))
    nll, tp, sum_p = _SoftmaxLabelCounts.apply(logits, labels, bins, with_ce)
    sum_g = _class_sums(tp.new_ones(1).expand(bins.shape), bins, c)
    counts = (tp, sum_p - tp, sum_g - tp)
    return (nll / voxels, *counts) if with_ce else counts


# ---------------------------------------------------------------------------------------------
# Fused or plain: the one place that decides.

_FUSED: bool | None = None  # None: the rule of use_fused; True / False: forced (fused_paths)


def use_fused(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None, *,
              label_counts: bool = False) -> bool:
    """Whether a loss takes its fused kernel (one pass, backward written out) or the plain path
    (probabilities, one-hot, autograd). Both give the same values and gradients (tested on both
    paths); the fused one is faster. The one rule, for every loss:

    1. no ``ignore_index`` (the kernels count every voxel), and
    2. integer labels, or soft labels with one-channel logits (their foreground probability
       stands in for the 0/1 labels), and
    3. for the softmax label counts (``label_counts=True``, ``C >= 2``: :class:`_SoftmaxLabelCounts`)
       the CPU: they ``scatter_add_`` with colliding indices, nondeterministic on CUDA, where
       the one-hot path is fast anyway.

    A loss whose kernel covers less (the binary focal kernel: labels, no α, γ ≥ 1) adds its own
    conditions on top. :func:`fused_paths` overrides the rule (tests run every loss both ways).
    """
    if _FUSED is False or ignore_index is not None:
        return False
    channels = logits.shape[1]
    if target.is_floating_point() and channels != 1:
        return False
    if label_counts and channels != 1 and logits.device.type != "cpu":
        return _FUSED is True
    return True


@contextlib.contextmanager
def fused_paths(enabled: bool | None):
    """Force the fused kernels (``True``, wherever their inputs allow, any device), the plain
    paths (``False``), or restore the rule of :func:`use_fused` (``None``) inside a ``with``.

    >>> with fused_paths(False):   # e.g. the path a CUDA run takes, exercised on the CPU
    ...     pass
    """
    global _FUSED
    if enabled not in (None, True, False):
        raise ValueError(f"enabled must be True, False or None, got {enabled!r}")
    previous, _FUSED = _FUSED, enabled
    try:
        yield
    finally:
        _FUSED = previous


def select_classes(values: torch.Tensor, include_background: bool) -> torch.Tensor:
    """Drop class 0 from ``(N, C, ...)`` values unless asked to keep it. One-channel (binary)
    logits have no background channel, so nothing is dropped there."""
    if include_background or values.shape[1] == 1:
        return values
    return values[:, 1:]


def reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """``(N,)`` per-sample values -> scalar (``mean``/``sum``) or ``(N,)`` (``none``)."""
    check_reduction(reduction)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def per_voxel_reduce(values: torch.Tensor, valid: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Per-voxel losses ``(N, *spatial)`` -> per-sample means over the counted voxels, reduced."""
    flat = values.reshape(values.shape[0], -1)
    if valid is None:
        per_sample = flat.mean(-1)
    else:
        valid = valid.reshape(values.shape[0], -1).to(flat.dtype)
        per_sample = (flat * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)
    return reduce(per_sample, reduction)


def cross_entropy_map(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-voxel cross-entropy ``(N, *spatial)`` under the contract: softmax CE for ``C >= 2``
    (labels or soft labels), binary CE with logits for ``C == 1``. Ignored voxels get 0.

    It is ``−log p_t``, the log-probability of the true class, so ``exp(−ce)`` is ``p_t`` (focal,
    TopK-threshold build on that). Computed in float32 at least."""
    logits = at_least_float32(logits)
    if logits.shape[1] == 1:
        if target.is_floating_point():
            target_fg = target[:, 0]
        else:
            target_fg = (target == 1).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits[:, 0], target_fg.to(logits.dtype), reduction="none")
        if weight is not None:  # one weight for the single (foreground) channel
            bce = bce * weight[0]
        if ignore_index is not None and not target.is_floating_point():
            bce = bce * (target != ignore_index)
        return bce
    if target.is_floating_point():
        log_p = torch.log_softmax(logits, dim=1)
        if weight is not None:
            log_p = log_p * weight.view(1, -1, *([1] * (logits.ndim - 2)))
        return -(target * log_p).sum(1)
    return F.cross_entropy(
        logits, target, weight=weight, reduction="none", ignore_index=-100 if ignore_index is None else ignore_index
    )


class _BinaryFocal(torch.autograd.Function):
    """Per-sample sums ``Σ_v (1 − p_t)^γ · (−log p_t)`` ``(N,)`` from one-channel logits ``(N, V)``
    and 0/1 labels as floats, with the gradient computed in the same pass (few full-size
    temporaries; they page-fault on the CPU). With ``q = 1 − p_t = σ(−z)``, ``z = (2t − 1)·x``:
    ``ce = softplus(−z)``, ``∂L/∂x = (1 − 2t)·q^γ·(γ(1 − q)·ce + q)`` (finite for every γ ≥ 0)."""

    @staticmethod
    def forward(ctx, logits, foreground, gamma):
        sign = foreground.mul(-2.0).add_(1.0)  # 1 − 2t: the sign of −z
        minus_z = sign * logits
        ce = F.softplus(minus_z)
        q = minus_z.sigmoid_()
        q_gamma = q.square() if gamma == 2 else q.pow(gamma)
        loss = torch.bmm(q_gamma.unsqueeze(1), ce.unsqueeze(2)).view(-1)
        if ctx.needs_input_grad[0]:  # the gradient, in place in ce's buffer
            grad = ce.mul_(gamma).addcmul_(q, ce, value=-1.0).add_(q).mul_(q_gamma).mul_(sign)
            ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.unsqueeze(-1), None, None


def binary_focal_sums(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """The focal loss ``(1 − p_t)^γ · (−log p_t)`` of one-channel logits summed per sample ``(N,)``,
    for checked 0/1 labels ``(N, *spatial)`` (no ``ignore_index``, no α); one fused pass."""
    logits = at_least_float32(logits)
    n = logits.shape[0]
    return _BinaryFocal.apply(logits.reshape(n, -1), labels.reshape(n, -1).to(logits.dtype), float(gamma))


def label_count(num_channels: int) -> int:
    """How many labels a target may hold: ``C`` for softmax logits, 2 (background and
    foreground) for one-channel sigmoid logits."""
    return 2 if num_channels == 1 else num_channels


def voxel_label_weight(labels: torch.Tensor, weight: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """The weight of each voxel's label, ``weight[label]``: ``(N, *spatial)``. Ignored voxels get
    the weight of label 0 (they are masked out by the caller)."""
    if ignore_index is not None:
        labels = torch.where(labels == ignore_index, torch.zeros_like(labels), labels)
    return weight[labels]


def region_weighted_option(function) -> bool:
    """Whether ``function``'s ``weight`` option is one value per channel (default ``None``): in
    multi-label mode it then weighs the regions. A per-label ``weight`` (``wce``: background and
    foreground, default ``"auto"``) applies inside every region instead."""
    parameter = inspect.signature(function).parameters.get("weight")
    return parameter is not None and parameter.kind is parameter.KEYWORD_ONLY and parameter.default is None


def multilabel_loss(function, logits: torch.Tensor, target: torch.Tensor, dist: torch.Tensor | None = None,
                    **options) -> torch.Tensor:
    r"""A loss for overlapping regions (multi-label): ``function``'s own binary (one-channel,
    sigmoid) form on each region, then the mean over the regions.

    .. math:: L_n = \frac{\sum_r w_r\, \ell(x_{n,r}, g_{n,r})}{\sum_r w_r}

    Each region ``r`` is its own binary problem: logits ``(N, 1, *spatial)``, target the region's
    0/1 (or soft) mask, ``dist`` its distance map; ``function`` runs once per region with
    ``reduction="none"``, so every batch-level statistic stays within the region: ``batch=True``
    pools the region's ``N`` samples (never other regions), as do ``wce``'s automatic weights.
    ``weight`` (one value per region; plain mean without) is taken by this wrapper when the
    loss's own ``weight`` is per channel (:func:`region_weighted_option`); otherwise it goes to
    the loss.

    Shape:
        logits ``(N, R, *spatial)``, target multi-hot ``(N, R, *spatial)`` (bool, 0/1 or floats in
        ``[0, 1]``), dist ``(N, R, *spatial)`` or None; returns a scalar, or ``(N,)`` for
        ``reduction="none"``.
    """
    target = check_multilabel_target(target, logits)
    reduction = check_reduction(options.pop("reduction", "mean"))
    regions = logits.shape[1]
    region_weight = None
    if region_weighted_option(function):
        region_weight = check_weight(options.pop("weight", None), regions, logits.device, target.dtype)
    if dist is not None:
        dist = check_distance_map(dist, logits)
    per_region = []
    for r in range(regions):
        extra = {} if dist is None else {"dist": dist[:, r:r + 1]}
        per_region.append(function(logits[:, r:r + 1], target[:, r:r + 1], reduction="none", **extra, **options))
    per_region = torch.stack(per_region, 1)  # (N, R)
    if region_weight is None:
        per_sample = per_region.mean(1)
    else:
        per_sample = (per_region * region_weight).sum(1) / region_weight.sum().clamp_min(1e-12)
    return reduce(per_sample, reduction)


class FunctionalLoss(nn.Module):
    """The thin module over a functional loss: stores its options, calls the function.

    A subclass sets ``function = staticmethod(some_loss)``; its accepted options and defaults are
    the function's keyword-only parameters (one source of truth, so ``losses.info(name).options``,
    the class and the function always agree). Losses with ``needs_distance = True`` also take
    ``dist=`` in ``forward`` and pass it on.

    ``multilabel=True`` (not an option of the function: a mode of the module) scores overlapping
    regions, multi-hot targets ``(N, R, *spatial)`` with one sigmoid per channel, by the loss's
    binary form per region (:func:`multilabel_loss`). A loss that cannot sets
    ``multilabel_refusal`` to the reason, and refuses.
    """

    function = None
    needs_distance = False
    multilabel_refusal = ""  # why multilabel=True is refused; "" when supported

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.function is not None:
            parameters = [
                parameter for parameter in inspect.signature(cls.function).parameters.values()
                if parameter.kind is parameter.KEYWORD_ONLY and parameter.name != "dist"
            ]
            cls.__signature__ = inspect.Signature(parameters)

    def __init__(self, multilabel: bool = False, **options):
        super().__init__()
        accepted = inspect.signature(type(self)).parameters
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no option(s) {', '.join(unknown)}; its options are: "
                + ", ".join(f"{name}={parameter.default!r}" for name, parameter in accepted.items())
            )
        if "reduction" in options:
            check_reduction(options["reduction"])
        self.options = options
        self.multilabel = False
        if multilabel:
            self.set_multilabel()

    def set_multilabel(self) -> None:
        """Switch to multi-label mode, or raise ``ValueError`` saying why this loss cannot."""
        if type(self).multilabel_refusal:
            raise ValueError(f"{type(self).__name__} does not support multilabel=True: {type(self).multilabel_refusal}")
        self.multilabel = True

    def forward(self, logits: torch.Tensor, target: torch.Tensor, dist: torch.Tensor | None = None) -> torch.Tensor:
        if dist is not None and not self.needs_distance:
            raise TypeError(f"{type(self).__name__} does not use distance maps; call it without dist=")
        if self.multilabel:
            return multilabel_loss(type(self).function, logits, target, dist, **self.options)
        if self.needs_distance:
            return type(self).function(logits, target, dist=dist, **self.options)
        return type(self).function(logits, target, **self.options)

    def extra_repr(self) -> str:
        options = dict(self.options, multilabel=True) if self.multilabel else self.options
        return ", ".join(f"{name}={value!r}" for name, value in options.items())
