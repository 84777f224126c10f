"""The examples and the README's main job keep working."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script):
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("madvdontneed", [1, 0])
def test_demo_main_job(madvdontneed, capsys):
    from sysmem.demo import main

    assert main(["--size", str(4 << 20), "--madvdontneed", str(madvdontneed)]) == 0
    out = capsys.readouterr().out
    assert "agreed at every step" in out
    assert ("MADV_DONTNEED" if madvdontneed else "MADV_FREE") in out


def test_readme_snippets_run():
    """Every ```python block of the README runs as written."""
    import re

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
