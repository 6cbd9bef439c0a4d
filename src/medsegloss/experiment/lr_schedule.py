"""Learning-rate schedules over a budget of optimizer steps, as closed-form functions of the step.

``step`` is the 0-based index of the update about to be made (``0 <= step < total_steps``), so
a resumed run needs no scheduler state: the rate is a function of the step alone. With
``W = warmup_steps``, ``T = total_steps - W`` and ``t = step - W``:

- warm-up (``step < W``): ``base_lr * (step + 1) / W`` — linear, from ``base_lr / W`` to
  ``base_lr`` at step ``W - 1`` (torch's ``LinearLR(start_factor=1/W, total_iters=W-1)``);
- ``constant``: ``base_lr``;
- ``poly`` (nnU-Net): ``base_lr * (1 - t / T) ** 0.9``;
- ``cosine`` (to 0): ``base_lr * (1 + cos(pi * t / T)) / 2``.

Poly and cosine reach 0 only at ``t = T``, one step after the last update.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "POLY_EXPONENT", "learning_rate", "apply_learning_rate"]

SCHEDULES = ("constant", "poly", "cosine")
POLY_EXPONENT = 0.9  # nnU-Net's exponent (Isensee et al., 2021)


def _check(step, total_steps, base_lr, schedule, warmup_steps) -> None:
    for name, value, low in (("total_steps", total_steps, 1), ("step", step, 0), ("warmup_steps", warmup_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if step >= total_steps:
        raise ValueError(f"step must be < total_steps (0-based), got step {step} of total_steps {total_steps}")
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps must be < total_steps, got {warmup_steps} of {total_steps}")
    if not (isinstance(base_lr, (int, float)) and base_lr > 0 and math.isfinite(base_lr)):
        raise ValueError(f"base_lr must be a finite number > 0, got {base_lr!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def learning_rate(step: int, total_steps: int, base_lr: float, schedule: str = "constant",
                  warmup_steps: int = 0) -> float:
    """The learning rate of update ``step`` (0-based) of ``total_steps`` (formulas: module doc).

    >>> learning_rate(0, 100, 0.01), learning_rate(50, 100, 0.01, "cosine")
    (0.01, 0.005)
    >>> round(learning_rate(50, 100, 0.01, "poly"), 6), learning_rate(1, 100, 0.01, warmup_steps=4)
    (0.005359, 0.005)
    """
    _check(step, total_steps, base_lr, schedule, warmup_steps)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr  # exactly, so a constant schedule changes nothing
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    if schedule == "poly":
        return base_lr * (1.0 - progress) ** POLY_EXPONENT
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_learning_rate(optimizer, step: int, total_steps: int, schedule: str = "constant",
                        warmup_steps: int = 0) -> float:
    """Set every parameter group's ``lr`` for update ``step``; call it before ``optimizer.step()``.

    Each group's base rate is its ``"initial_lr"`` (stored from its ``lr`` on the first call, as
    torch's schedulers do), so groups keep their ratios and the base survives in
    ``optimizer.state_dict()``: a resumed run sets the same rates. Returns the first group's rate.
    """
    rates = []
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = learning_rate(step, total_steps, group["initial_lr"], schedule, warmup_steps)
        rates.append(group["lr"])
    return rates[0]
