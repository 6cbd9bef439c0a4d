"""Region losses: formulas over the soft counts of each class, one module per concept.

* :mod:`._counts`: the checked input, the soft counts ``tp, fp, fn``, the one overlap ratio
  (:func:`tversky_index`; :func:`dice_score` is its α = β = ½) and the class reduction;
* :mod:`.overlap`: ``ss``, ``dice``, ``iou``, ``tversky``, ``focal_tversky``, ``asym``,
  ``focal_dice``, ``mcc``;
* :mod:`.generalized_dice`: ``gdl``, ``pgdl``, ``gwdl`` (one score over all classes);
* :mod:`.lovasz`: ``lovasz`` (the convex extension of the Jaccard loss);
* :mod:`.topology`: ``cldice``, ``skeleton_recall`` (soft skeletons).

Every loss computes a score per class first and averages afterwards; ``batch=True`` pools the
counts over the batch, and ``reduction="none"`` gives one value per sample.
"""

from medsegloss.losses.region import generalized_dice, lovasz, overlap, topology
from medsegloss.losses.region._counts import dice_score, tversky_index
from medsegloss.losses.region.generalized_dice import *  # noqa: F401,F403
from medsegloss.losses.region.lovasz import *  # noqa: F401,F403
from medsegloss.losses.region.overlap import *  # noqa: F401,F403
from medsegloss.losses.region.topology import *  # noqa: F401,F403

__all__ = (overlap.__all__ + generalized_dice.__all__ + lovasz.__all__ + topology.__all__
           + ["tversky_index", "dice_score"])
