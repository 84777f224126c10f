"""Go's GODEBUG knobs that change how the OS memory layer behaves.

Mirrors the ``dbgvars`` entries ``madvdontneed``, ``harddecommit``, ``disablethp`` and
``decoratemappings`` of Go's ``runtime1.go``. Values are read from the ``GODEBUG``
environment variable (``"madvdontneed=0,harddecommit=1"``) and can be set from code::

    sm.debug.disablethp = 1

A running SysMem freezes ``madvdontneed`` and ``harddecommit`` (Go reads GODEBUG once at
start-up): changing them then raises :class:`~sysmem.errors.FrozenSettingError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from .errors import FrozenSettingError

__all__ = ["DebugSettings"]


@dataclass
class DebugSettings:
    """The memory-layer GODEBUG settings (Go's ``debug.madvdontneed`` and friends).

    ``madvdontneed`` defaults to 1, Go's Linux default (``MADV_DONTNEED`` for
    ``sys_unused``); 0 selects ``MADV_FREE``. ``harddecommit=1`` also drops the
    permissions of released memory. ``disablethp=1`` advises ``MADV_NOHUGEPAGE`` on every
    ``sys_map``. ``decoratemappings=0`` stops naming mappings.
    """

    madvdontneed: int = 1
    harddecommit: int = 0
    disablethp: int = 0
    decoratemappings: int = 1

    def __setattr__(self, name: str, value: int) -> None:
        self._refuse_if_frozen(name, value)
        super().__setattr__(name, value)

    def _refuse_if_frozen(self, name: str, value: int) -> None:
        if name in self.__dict__.get("_frozen", ()) and value != getattr(self, name):
            raise FrozenSettingError(
                f"GODEBUG {name} cannot change while a SysMem uses these settings (Go reads it "
                f"once at start-up); create a new SysMem with {name}={value}"
            )

    def freeze(self, *names: str) -> None:
        """Refuse later changes of ``names`` (settings a running SysMem depends on)."""
        self.__dict__["_frozen"] = frozenset(self.__dict__.get("_frozen", ())) | set(names)

    def apply(self, godebug: str) -> None:
        """Apply a GODEBUG string to these settings, all or nothing.

        Parsed as Go does (unknown keys and malformed values ignored, later entries win).
        A change of a frozen setting raises FrozenSettingError before anything changes.
        """
        if not isinstance(godebug, str):
            raise TypeError(f"godebug must be a GODEBUG string, not {type(godebug).__name__}")
        updates = _parse_godebug(godebug)
        for name, value in updates.items():
            self._refuse_if_frozen(name, value)
        for name, value in updates.items():
            setattr(self, name, value)

    @classmethod
    def from_godebug(cls, godebug: str | None = None, **defaults: int) -> "DebugSettings":
        """Settings from a GODEBUG string (default: the ``GODEBUG`` environment variable).

        As in Go, unknown keys and malformed values are ignored and later entries win;
        ``defaults`` override the built-in defaults before GODEBUG is applied (a backend
        whose OS defaults ``madvdontneed`` to 0 passes ``madvdontneed=0``).
        """
        settings = cls(**defaults)
        settings.apply(os.environ.get("GODEBUG", "") if godebug is None else godebug)
        return settings


_KNOWN = frozenset(f.name for f in fields(DebugSettings))


def _parse_godebug(godebug: str) -> dict[str, int]:
    """The known settings a GODEBUG string sets, the last entry of each winning."""
    out: dict[str, int] = {}
    for item in godebug.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in _KNOWN:
            continue
        try:
            out[key] = int(value)
        except ValueError:
            continue  # Go's parseRuntimeDebugVars ignores a value that is not a number
    return out
