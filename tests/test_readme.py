"""The README's commands and example work as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COLORIZATION = (ROOT / "docs" / "COLORIZATION.md").read_text()  # the README links its Python API there


def code_blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


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
    assert tuple(namespace["sevens"].shape) == (4, 1, 28, 28)


def test_ci_runs_the_readme_test_command():
    test_command = code_blocks("bash")[-1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_first_command_installs_and_trains_the_colourisation_model():
    assert code_blocks("bash")[0].strip() == "pip install -e . && python -m tasks.colorize train"


def test_colourisation_train_with_the_default_config_runs(tmp_path):
    """`python -m tasks.colorize train` exactly as the README gives it, shortened to 2 steps for CI."""
    result = subprocess.run([sys.executable, "-m", "tasks.colorize", "train", "--train.steps=2",
                             "--train.max_minutes=null", "--run_dir", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "heldout.png").is_file() and (tmp_path / "checkpoint.pt").is_file()


def test_colourisation_api_example_runs(tmp_path, monkeypatch):
    from PIL import Image

    from tasks import colorize

    run_dir = tmp_path / "runs" / "colorize"
    assert colorize.main(["train", "--config", str(ROOT / "configs/colorize/tiny.yaml"),
                          "--run_dir", str(run_dir)]) == 0
    Image.new("RGB", (30, 20), (120, 80, 40)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code_blocks("python", COLORIZATION)[0], namespace)
    assert tuple(namespace["colourings"].shape) == (8, 3, 20, 30)


def test_every_figure_the_docs_show_is_in_the_repository():
    docs_pages = [str(page.relative_to(ROOT)) for page in sorted((ROOT / "docs").glob("*.md"))]
    for document in ("README.md", "BENCHMARKS.md", *docs_pages):  # docs/ARCHITECTURE.md and the pages README links
        text = (ROOT / document).read_text()
        figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
        missing = [figure for figure in figures if not (ROOT / document).parent.joinpath(figure).is_file()]
        assert not missing, f"{document} shows figures that are not in the repository: {missing}"
