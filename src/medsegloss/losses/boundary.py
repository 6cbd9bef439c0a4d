"""Boundary-based losses: built on the signed distance maps of :mod:`medsegloss.distance`."""

from __future__ import annotations

__all__: list[str] = []
