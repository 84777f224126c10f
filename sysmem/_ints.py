"""The one place where public arguments become plain Python ints.

Every address, size, hint, alignment, ``prepared`` count and stat delta that enters
:mod:`sysmem` goes through :func:`as_int`, so numpy integers cannot leak into the
counters (``np.uint64 + np.int64`` is a float), a bool is never taken for 1, and a float
or ``None`` gets a TypeError that names the argument rather than a failure deep inside.
Range and alignment rules stay with the callers (``SysMem._aligned`` for ranges).
"""

from __future__ import annotations

import operator

__all__ = ["U64_LIMIT", "as_int"]

#: One past the largest address or size (Go's uintptr on 64-bit platforms).
U64_LIMIT = 1 << 64


def as_int(value: object, what: str, *, unsigned: bool = False) -> int:
    """``value`` as a plain int (anything with ``__index__``: ints, numpy integers).

    Raises TypeError naming ``what`` for bool (not a size, even though it is an int),
    floats and everything else; with ``unsigned``, ValueError unless 0 <= value < 2**64.
    """
    if value.__class__ is not int:
        if isinstance(value, bool):
            raise TypeError(f"{what} must be an integer, not bool ({value!r})")
        try:
            value = operator.index(value)
        except TypeError:
            kind = type(value).__name__
            raise TypeError(f"{what} must be an integer, not {kind} ({value!r})") from None
    if unsigned and not 0 <= value < U64_LIMIT:
        raise ValueError(f"{what} must be in [0, 2**64), got {value:#x}")
    return value
