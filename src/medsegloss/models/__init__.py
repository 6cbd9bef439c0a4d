"""Segmentation networks trained by the benchmark: the classic UNet (2-D, or 3-D by a flag)."""

from medsegloss.models.unet import DoubleConv, UNet

__all__ = ["DoubleConv", "UNet"]
