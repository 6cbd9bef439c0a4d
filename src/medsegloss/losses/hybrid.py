"""Moved: the compounds with their own formulas (combo, ell, bce_iou_ssim, lesion) are in
:mod:`medsegloss.losses.compound_formulas`, filed with their family. Kept importable here."""

from medsegloss.losses.compound_formulas import *  # noqa: F401,F403
from medsegloss.losses.compound_formulas import __all__  # noqa: F401
