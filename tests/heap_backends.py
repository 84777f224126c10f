"""The SysMem backends every heap test runs on, as a plain module (no conftest needed).

A heap test module does::

    from heap_backends import BACKENDS, heap_sm, make_heap  # noqa: F401  (fixtures)

and then takes ``heap_sm`` (a fresh SysMem, once per backend) or ``make_heap`` (a
factory of Heaps, each on its own fresh SysMem of the test's backend). At teardown every
region those SysMems hold is given back, never under a live view.

Backends: ``linux`` (real memory; skipped off Linux), ``simulated-windows`` (decommitted
memory faults until sys_used — proves the heap never touches memory it did not make
Ready; a reservation can only be released whole), ``simulated-linux`` and
``simulated-sbrk``. ``HEAP_BACKENDS=linux,simulated-windows`` narrows the set.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest

from heap.heap import release_sysmem
from sysmem import SysMem

#: name -> SysMem(...) arguments
BACKENDS: dict[str, dict] = {
    "linux": {"backend": "linux"},
    "simulated-windows": {"backend": "simulated", "personality": "windows"},
    "simulated-linux": {"backend": "simulated", "personality": "linux"},
    "simulated-sbrk": {"backend": "simulated", "personality": "sbrk"},
}

_only = os.environ.get("HEAP_BACKENDS")
NAMES = [n for n in BACKENDS if not _only or n in _only.split(",")]


def new_sysmem(name: str, **options) -> SysMem:
    """A fresh SysMem of backend ``name`` (GODEBUG from the environment is ignored)."""
    if name == "linux" and not sys.platform.startswith("linux"):
        pytest.skip("needs the real Linux backend")
    args = dict(BACKENDS[name])
    backend = args.pop("backend")
    args.update(options)
    return SysMem(backend, godebug="", **args)


class _Made:
    def __init__(self) -> None:
        self.sysmems: list[SysMem] = []

    def release(self) -> None:
        gc.collect()  # views held only by finished frames or cycles
        for sm in reversed(self.sysmems):
            release_sysmem(sm)


@pytest.fixture(params=NAMES)
def backend_name(request) -> str:
    """The backend a heap test runs on (one test per name in ``NAMES``)."""
    return request.param


@pytest.fixture
def heap_sm(backend_name):
    """A fresh SysMem of the test's backend, released at teardown."""
    made = _Made()
    sm = new_sysmem(backend_name)
    made.sysmems.append(sm)
    yield sm
    made.release()


@pytest.fixture
def make_heap(backend_name):
    """Factory: ``make_heap(sysmem_options=None, **heap_options) -> Heap`` on a fresh
    SysMem of the test's backend (``sysmem_options``: e.g. ``{"physical_memory": n}``
    for a simulated backend). Everything is released at teardown."""
    from heap import Heap

    made = _Made()

    def make(sysmem_options: dict | None = None, **heap_options) -> Heap:
        sm = new_sysmem(backend_name, **(sysmem_options or {}))
        made.sysmems.append(sm)
        return Heap(sm, **heap_options)

    make.backend = backend_name
    yield make
    made.release()
