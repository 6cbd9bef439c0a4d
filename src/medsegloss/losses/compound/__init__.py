"""Compound losses, one module per concept:

* :mod:`.language`: the loss string (terms, weights, options, the ``|`` schedule, lists):
  :func:`parse` -> :class:`LossSpec`, :func:`build`, :func:`split_list`;
* :mod:`.weighted_sum`: :class:`WeightedSum`, the one composition mechanism;
* :mod:`.named_sums`: ``dice_ce``, ``dice_bce``, ``dice_focal``, ``dice_topk``, ``gdl_boundary``,
  ``dice_cldice``, ``gdl_focal`` (registered factories returning a WeightedSum);
* :mod:`.formulas`: ``combo``, ``ell``, ``bce_iou_ssim``, ``lesion``, ``unified_focal`` (not plain sums);
* :mod:`.schedule`: :class:`Schedule`, the term weights over the optimizer steps.
"""

from medsegloss.losses.compound import formulas, named_sums
from medsegloss.losses.compound.formulas import *  # noqa: F401,F403
from medsegloss.losses.compound.language import LossSpec, build, parse, split_list
from medsegloss.losses.compound.named_sums import *  # noqa: F401,F403
from medsegloss.losses.compound.schedule import Schedule
from medsegloss.losses.compound.weighted_sum import WeightedSum

__all__ = (named_sums.__all__ + formulas.__all__
           + ["LossSpec", "Schedule", "WeightedSum", "build", "parse", "split_list"])
