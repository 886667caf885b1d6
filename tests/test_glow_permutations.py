"""``benchmarks/glow_permutations.py`` (Glow's permutation ablation) end to end on a tiny Fashion-MNIST-format
fixture: its outputs, that the runs trained segment by segment equal one run to the budget, that a second call
skips what is done, and its one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_script, one_line_error
from mnist_fixture import write_mnist_fixture
from paused_train import one_thread

from cinn.cli import run_command
from cinn.engine import load_checkpoint
from cinn.experiment import Experiment
from tasks import glow

permutations = load_script("glow_permutations")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_mnist_fixture(tmp_path_factory.mktemp("fashion"), n_train=48, n_test=16, folder="FashionMNIST")


def tiny_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    return ["--setting", "tiny", "--data-root", str(data_root), "--variants", "lu-affine,lu-additive",
            "--seeds", "0", "--steps", "2", "--eval-at", "1", "--test-images", "8", "--jobs", "2",
            "--device", "cpu", "--out", str(out), *extra]


@dataclass
class TinyExperiment:
    out: Path
    """the folder of a finished tiny experiment: 2 variants, 1 seed, trained to step 1, evaluated, resumed to 2"""
    stdout: str
    straight: Path
    """the checkpoint of one of its runs trained straight to step 2"""


@pytest.fixture(scope="module")
def experiment(data_root, tmp_path_factory) -> TinyExperiment:
    # the straight run first: it times the memory layout, and the experiment's run of the same model reads it from
    # the cache (parallel runs of two models may overwrite each other's cache entries, and then time again)
    # (in this process on one thread, as the experiment's runs train in processes of their own)
    run = permutations.Variant("lu", "affine", 0).run([2])
    straight = Experiment("glow", permutations.SETTINGS["tiny"].config, tmp_path_factory.mktemp("straight"),
                          device="cpu", data_root=str(data_root))
    with one_thread():
        assert glow.main(straight.train_command(run, 2, resume=False)[3:]) == 0
    out, printed = tmp_path_factory.mktemp("experiment"), io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
            run_command(permutations.main, tiny_args(data_root, out))  # the script sets one thread
    finally:
        torch.set_num_threads(threads)
    assert exit_info.value.code == 0, printed.getvalue()
    return TinyExperiment(out, printed.getvalue(), straight.run_dir(run) / "checkpoint.pt")


@pytest.fixture
def in_process(data_root):
    """Call the script's main in this process (it sets torch's threads to 1; they are restored after)."""
    threads = torch.get_num_threads()
    yield lambda out, *extra: run_command(permutations.main, tiny_args(data_root, out, *extra))
    torch.set_num_threads(threads)


def test_writes_the_figure_the_table_and_every_evaluation(experiment):
    out, stdout = experiment.out, experiment.stdout
    assert {"nll_vs_steps.png", "results.md", "results.json"} <= {path.name for path in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    assert sorted((run["variant"], run["seed"]) for run in results["runs"]) == [("lu-additive", 0),
                                                                               ("lu-affine", 0)]
    for run in results["runs"]:
        assert [evaluation["step"] for evaluation in run["evaluations"]] == [1, 2]
        assert all(math.isfinite(evaluation["mean"]) and evaluation["count"] == 8
                   for evaluation in run["evaluations"])
    assert [entry["final"]["mean"] for entry in results["summary"]] == sorted(
        run["evaluations"][-1]["mean"] for run in results["runs"])
    assert [entry["comparison"] for entry in results["paper_orderings"]] == ["1x1 conv"]
    table = (out / "results.md").read_text()
    assert "| 1x1 conv, affine |" in table and "| 1x1 conv, additive |" in table
    assert results["paper_orderings"][0]["text"] in table and results["paper_orderings"][0]["text"] in stdout
    assert "python benchmarks/glow_permutations.py --setting tiny" in stdout and "machine: " in stdout


def test_runs_resumed_step_by_step_equal_one_run_to_the_budget(experiment):
    expected = load_checkpoint(experiment.straight)["model"]
    resumed = load_checkpoint(experiment.out / "runs" / "lu-affine-seed0" / "checkpoint.pt")
    assert resumed["step"] == 2
    assert expected.keys() == resumed["model"].keys()
    assert all(torch.equal(expected[key], resumed["model"][key]) for key in expected)


def test_a_second_call_trains_and_evaluates_nothing_again(experiment, in_process, capsys):
    out = experiment.out
    checkpoints = {path: path.stat().st_mtime_ns for path in (out / "runs").glob("*/checkpoint.pt")}
    runs = json.loads((out / "results.json").read_text())["runs"]
    with pytest.raises(SystemExit) as exit_info:
        in_process(out)
    assert exit_info.value.code == 0
    assert "0 of 2 runs to train or evaluate" in capsys.readouterr().out
    assert len(checkpoints) == 2
    assert checkpoints == {path: path.stat().st_mtime_ns for path in checkpoints}
    assert json.loads((out / "results.json").read_text())["runs"] == runs


@pytest.mark.parametrize("extra, message", [
    (["--variants", "lu-affine,lu-sideways"], "unknown variant(s) 'lu-sideways'; choose from "),
    (["--eval-at", "0"], "--eval-at: must be comma-separated integers >= 1, got '0'"),
    (["--eval-at", "1,x"], "--eval-at: must be comma-separated integers >= 1, got '1,x'"),
    (["--eval-at", "5"], "--eval-at: 5 is beyond the budget, --steps 2"),
    (["--test-images", "4"], "holds evaluations with test_images 8, not 4; give --test-images 8"),
])
def test_bad_options_are_one_line_errors(experiment, in_process, capsys, extra, message):
    assert message in one_line_error(lambda: in_process(experiment.out, *extra), capsys)


def final(mean: float, spread: float) -> dict[str, float]:
    return {"mean": mean, "min": mean - spread, "max": mean + spread}


@pytest.mark.parametrize("spread, agrees, apart", [(0.01, True, True), (0.2, True, False)])
def test_the_paper_ordering_is_judged_on_the_means_and_the_seed_ranges(spread, agrees, apart):
    summary = [{"variant": f"{permutation}-{coupling}", "final": final(3.0 + 0.1 * rank + 0.05 * offset, spread)}
               for rank, permutation in enumerate(permutations.PAPER_ORDER)
               for offset, coupling in enumerate(("affine", "additive"))]
    orderings = permutations.paper_orderings(summary)
    assert [entry["comparison"] for entry in orderings] == ["affine coupling", "additive coupling", "1x1 conv",
                                                            "reverse", "shuffle"]
    assert all(entry["agrees"] == agrees and entry["ranges_apart"] == apart for entry in orderings)
    assert orderings[0]["text"].startswith("affine coupling: 1x1 conv 3.0000 < shuffle 3.1000 < reverse 3.2000: "
                                           "as in the paper")
    summary[0]["final"] = final(3.3, spread)  # lu-affine now above reverse-affine
    flipped = permutations.paper_orderings(summary)[0]
    assert not flipped["agrees"]
    assert flipped["text"] == ("affine coupling: 1x1 conv 3.3000 >= shuffle 3.1000 < reverse 3.2000: not as in "
                               "the paper (1x1 conv < shuffle < reverse)")
