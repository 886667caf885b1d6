"""The README's commands and example work as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_quick_start_is_the_example_file_and_runs():
    quick_start = code_blocks("python")[0]
    assert quick_start == (ROOT / "examples" / "quickstart.py").read_text()
    result = subprocess.run([sys.executable, "examples/quickstart.py"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    error = float(re.search(r"round-trip error: (\S+)", result.stdout).group(1))
    assert error < 1e-4


def test_conditional_example_runs():
    namespace: dict = {}
    exec(code_blocks("python")[0], namespace)  # defines torch and the imports the second block relies on
    exec(code_blocks("python")[1], namespace)
    assert tuple(namespace["eights"].shape) == (16, 1, 28, 28)


def test_ci_runs_the_readme_test_command():
    test_command = code_blocks("bash")[-1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()
