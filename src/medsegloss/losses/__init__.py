"""The loss catalogue: every loss of the survey literature behind one input contract.

>>> import torch
>>> from medsegloss import losses
>>> loss = losses.get("tversky", alpha=0.3, beta=0.7)
>>> logits = torch.randn(2, 3, 16, 16, requires_grad=True)   # (N, C, H, W) raw outputs
>>> target = torch.randint(0, 3, (2, 16, 16))                # (N, H, W) integer labels
>>> value = loss(logits, target); value.backward()
>>> combined = losses.build("ce + 0.5*dice")
>>> float(combined(logits, target).detach()) > 0
True
>>> sorted(combined.last_values)
['ce', 'dice']

The contract: ``loss(logits, target)`` with raw ``logits (N, C, *spatial)`` (softmax for
``C >= 2``, sigmoid for ``C == 1``), ``target`` integer labels ``(N, *spatial)`` or float one-hot /
soft labels ``(N, C, *spatial)``; a scalar by default, ``(N,)`` with ``reduction="none"``.
"""

from medsegloss.losses._registry import (
    FAMILIES, LossInfo, available, catalogue_markdown, get, loss_class, lookup as info, register,
)

# importing the family packages registers their losses
from medsegloss.losses import distribution, region, boundary, compound  # noqa: E402,F401  isort:skip
from medsegloss.losses.distribution import *  # noqa: E402,F401,F403
from medsegloss.losses.region import *  # noqa: E402,F401,F403
from medsegloss.losses.boundary import *  # noqa: E402,F401,F403
from medsegloss.losses.compound import *  # noqa: E402,F401,F403

# wrappers: a region-of-interest mask and deep supervision around any loss
from medsegloss.losses.wrappers import DeepSupervisionLoss, MaskedLoss, deep_supervision, masked  # noqa: E402

__all__ = ["FAMILIES", "LossInfo", "available", "catalogue_markdown", "get", "info", "loss_class", "register",
           "DeepSupervisionLoss", "MaskedLoss", "deep_supervision", "masked"]
__all__ += distribution.__all__ + region.__all__ + boundary.__all__ + compound.__all__
