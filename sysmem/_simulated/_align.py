"""Rounding to a power-of-two alignment, for the simulated backend's modules."""

from __future__ import annotations


def _up(x: int, a: int) -> int:
    """``x`` rounded up to a multiple of ``a`` (a power of two)."""
    return (x + a - 1) & -a


def _down(x: int, a: int) -> int:
    """``x`` rounded down to a multiple of ``a`` (a power of two)."""
    return x & -a
