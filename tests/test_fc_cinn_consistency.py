"""``benchmarks/fc_cinn_consistency.py`` (the FC cINN's class consistency against training images) end to end on
a tiny MNIST-format fixture: its outputs, a second call that does nothing again, and its one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_script, one_line_error
from mnist_fixture import write_mnist_fixture

from cinn.cli import run_command

consistency = load_script("fc_cinn_consistency")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_mnist_fixture(tmp_path_factory.mktemp("digits"), n_train=48, n_test=16)


def tiny_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "tiny", "--data-root", str(data_root), "--variants", "paper,fc.yaml", "--images", "8,16",
            "--test-images", "8", "--jobs", "2", "--out", str(out), *extra]


@pytest.fixture
def call(data_root):
    """Call the script's main in this process (it sets torch's threads to 1; they are restored after)."""
    threads = torch.get_num_threads()
    yield lambda out, *extra: run_command(consistency.main, tiny_args(data_root, out, *extra))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def experiment(data_root, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("experiment")
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_command(consistency.main, tiny_args(data_root, out))
    finally:
        torch.set_num_threads(threads)
    assert exit_info.value.code == 0
    return out


def test_writes_the_figure_the_table_and_every_evaluation(experiment):
    out = experiment
    assert {"consistency_vs_images.png", "results.md", "results.json", "classifier_mnist.pt"} <= {
        path.name for path in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    assert sorted(run["variant"] for run in results["runs"]) == ["fc.yaml", "paper"]
    for run in results["runs"]:
        evaluations = run["evaluations"]
        assert [evaluation["step"] for evaluation in evaluations] == [1, 2]
        assert [evaluation["images"] for evaluation in evaluations] == [8, 16]  # tiny: batch 8 for every recipe
        for evaluation in evaluations:
            assert evaluation["count"] == 8 and math.isfinite(evaluation["mean"])
            assert evaluation["median"] <= evaluation["worst"]
            assert 0 <= evaluation["consistency"] <= 1 and len(evaluation["per_class"]) == 10
            assert evaluation["consistency"] == pytest.approx(sum(evaluation["per_class"]) / 10)
    final = {entry["variant"]: entry["final"] for entry in results["summary"]}
    run = {run["variant"]: run["evaluations"][-1] for run in results["runs"]}
    assert final["paper"]["consistency"]["mean"] == run["paper"]["consistency"]
    assert final["paper"]["worst_over_median"] == pytest.approx(run["paper"]["worst"] / run["paper"]["median"])
    table = (out / "results.md").read_text()
    assert "| paper | Adam 1e-4, batch 512" in table and "| fc.yaml |" in table


def test_the_runs_train_what_their_recipe_says(experiment):
    """fc.yaml's variant has the learned class prior, the paper's not; both are the tiny model."""
    from cinn.engine import load_checkpoint

    paper = load_checkpoint(experiment / "runs" / "paper-seed0" / "checkpoint.pt")
    shipped = load_checkpoint(experiment / "runs" / "fc.yaml-seed0" / "checkpoint.pt")
    assert paper["config"]["model"]["class_affine"] == "none" and paper["config"]["train"]["lr"] == 1e-4
    assert shipped["config"]["model"]["class_affine"] == "latent" and shipped["config"]["train"]["lr"] == 5e-4
    assert len(shipped["model"]) > len(paper["model"])


def test_a_second_call_trains_and_evaluates_nothing_again(experiment, call, capsys):
    checkpoints = {path: path.stat().st_mtime_ns for path in (experiment / "runs").glob("*/checkpoint.pt")}
    with pytest.raises(SystemExit) as exit_info:
        call(experiment)
    assert exit_info.value.code == 0
    assert "0 of 2 runs to train or evaluate" in capsys.readouterr().out
    assert len(checkpoints) == 2 and checkpoints == {path: path.stat().st_mtime_ns for path in checkpoints}


@pytest.mark.parametrize("extra, message", [
    (["--variants", "paper,sideways"], "unknown variant(s) 'sideways'; choose from paper, fast, class-prior"),
    (["--images", "8,9"], "--images 8,9: two of them are the same step of"),
    (["--test-images", "4"], "holds evaluations with test_images 8, not 4; give --test-images 8"),
])
def test_bad_options_are_one_line_errors(experiment, call, capsys, extra, message):
    assert message in one_line_error(lambda: call(experiment, *extra), capsys)
