"""Bridges to other training frameworks; each needs its own optional extra (``nnunet``: nnU-Net v2)."""
