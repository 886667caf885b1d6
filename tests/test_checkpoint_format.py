"""The self-describing checkpoint: ``cinn.load`` rebuilds every task's trained model from the file alone,
files of the earlier format still open and upgrade to the current one, the oldest format is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mnist_fixture import write_mnist_fixture

import cinn
from cinn.engine import CheckpointError, load_checkpoint, trained_weights
from cinn.task import data_facts
from tasks.colorize import ColorizeTask
from tasks.glow import GlowTask
from tasks.mnist import ClassConditionalTask

ROOT = Path(__file__).resolve().parents[1]
FORMAT1 = ROOT / "tests" / "fixtures" / "format1"
FORMAT2 = ROOT / "tests" / "fixtures" / "format2"
TASKS = {"glow": GlowTask(), "mnist": ClassConditionalTask(), "colorize": ColorizeTask()}
# What the reference log-probabilities in the fixtures were computed on (written by the format-1 code, whose
# files cinn 0.2.0 upgraded to format 2).
REFERENCE = torch.load(FORMAT2 / "reference_log_prob.pt", weights_only=True)


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """Each task's tiny config trained for 2 steps with its command line (in this process; the checkpoints are
    then read in fresh ones)."""
    tmp = tmp_path_factory.mktemp("runs")
    data_root = write_mnist_fixture(tmp / "mnist", n_train=64, n_test=16)
    data = {"glow": ["--data.dataset", "mnist", "--data.root", str(data_root)],
            "mnist": ["--data.root", str(data_root)], "colorize": []}
    runs = {}
    for name, extra in data.items():
        run_dir = tmp / name
        assert TASKS[name].main(["train", "--config", str(ROOT / f"configs/{name}/tiny.yaml"), "--run_dir",
                                 str(run_dir), "--train.steps=2", *extra]) == 0
        runs[name] = run_dir / "checkpoint.pt"
    return runs


def log_prob_in_fresh_process(checkpoint: Path, inputs: Path) -> torch.Tensor:
    """``cinn.load(checkpoint).log_prob(x, c)`` in a new interpreter that imports no task code."""
    script = ("import sys, torch, cinn; x, c = torch.load(sys.argv[2], weights_only=True); "
              "model = cinn.load(sys.argv[1]); assert not any(m.startswith('tasks') for m in sys.modules); "
              "torch.save(model.log_prob(x, c).detach(), sys.argv[2] + '.out')")
    result = subprocess.run([sys.executable, "-c", script, str(checkpoint), str(inputs)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env=environment())
    assert result.returncode == 0, result.stderr
    return torch.load(str(inputs) + ".out", weights_only=True)


@pytest.mark.parametrize("name", TASKS)
def test_cinn_load_rebuilds_every_task_model_bit_exactly(trained_runs, name, tmp_path):
    checkpoint, task = trained_runs[name], TASKS[name]
    state = load_checkpoint(checkpoint)
    assert state["format"] == "cinn-checkpoint-3" and state["task"] == name
    assert state["cinn_version"] == cinn.__version__
    json.dumps(state["model_spec"]), json.dumps(state["conventions"])  # plain data

    run = task.open(checkpoint, torch.device("cpu"))
    facts = data_facts(task.train_data(run.config))
    expected_model, _ = task.build_model(run.config, facts)  # the model the task builds from its config
    expected_model.load_state_dict(trained_weights(state))
    expected_model.eval()
    inputs = {name: (REFERENCE[name]["x"], REFERENCE[name]["c"])}[name]
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = expected_model.log_prob(*inputs)
    assert torch.equal(log_prob_in_fresh_process(checkpoint, tmp_path / "inputs.pt"), expected)


def assert_reference_log_prob(log_prob: torch.Tensor, name: str) -> None:
    """``log_prob`` is the format-1 reference of task ``name`` to float32 rounding. The reference was computed
    on another CPU type, whose vector kernels sum in another order: a few float32 ulps apart (2.4e-4 of 1,199
    nats on an AMD Zen 5); another model or lost weights differ by whole nats."""
    torch.testing.assert_close(log_prob, REFERENCE[name]["log_prob"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", TASKS)
def test_a_checkpoint_of_the_earlier_format_opens_in_its_task_and_in_cinn_load_with_the_same_model(name):
    run = TASKS[name].open(FORMAT2 / f"{name}.pt", torch.device("cpu"))
    with torch.no_grad():
        assert_reference_log_prob(run.model.log_prob(REFERENCE[name]["x"], REFERENCE[name]["c"]), name)
        assert_reference_log_prob(cinn.load(FORMAT2 / f"{name}.pt").log_prob(REFERENCE[name]["x"],
                                                                             REFERENCE[name]["c"]), name)
    assert isinstance(run.config.model.coupling, dict)  # the old clamp / min_scale keys read as a map spec


def test_the_oldest_format_is_refused_naming_the_last_version_that_converts_it():
    with pytest.raises(CheckpointError, match=r"convert it with cinn 0\.2\.0: pip install cinn==0\.2\.0, then "
                                              r"python -m tasks\.glow upgrade --checkpoint") as error:
        cinn.load(FORMAT1 / "glow.pt")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", TASKS)
def test_upgrade_writes_a_checkpoint_cinn_load_reads(name, tmp_path):
    out = tmp_path / "upgraded.pt"
    assert TASKS[name].main(["upgrade", "--checkpoint", str(FORMAT2 / f"{name}.pt"), "--out", str(out)]) == 0
    with torch.no_grad():
        log_prob = cinn.load(out).log_prob(REFERENCE[name]["x"], REFERENCE[name]["c"])
    assert_reference_log_prob(log_prob, name)
    upgraded = load_checkpoint(out)
    assert upgraded["step"] == load_checkpoint(FORMAT2 / f"{name}.pt")["step"]
    assert upgraded["format"] == "cinn-checkpoint-3" and "map" in upgraded["model_spec"]["arguments"]["coupling"]


def test_upgrade_refuses_to_overwrite_its_input(capsys):
    with pytest.raises(SystemExit) as exit_info:
        GlowTask().run(["upgrade", "--checkpoint", str(FORMAT2 / "glow.pt"), "--out", str(FORMAT2 / "glow.pt")])
    assert exit_info.value.code == 2 and "another path" in capsys.readouterr().err


def test_load_trained_returns_the_data_conventions(trained_runs):
    trained = cinn.load_trained(trained_runs["glow"])
    assert trained.task == "glow" and trained.conventions["n_bits"] == 5
    assert trained.conventions["image_shape"] == [1, 28, 28]
    colour = cinn.load_trained(trained_runs["colorize"]).conventions
    assert colour["shorter_side"] == 32 and colour["ab_downsample"] == 2 and colour["size_multiple"] == 8


@pytest.mark.parametrize("name", TASKS)
def test_train_help_lists_every_config_key_with_type_and_default(name, capsys):
    with pytest.raises(SystemExit):
        TASKS[name].main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "--train.lr  a float, default" in help_text
    assert "peak learning rate" in help_text
    assert "--model." in help_text and "--data." in help_text


def test_export_writes_the_model_alone_and_cinn_load_reads_it(trained_runs, tmp_path):
    out = tmp_path / "colorizer.pt"
    assert ColorizeTask().main(["export", "--checkpoint", str(trained_runs["colorize"]), "--out", str(out)]) == 0
    exported = load_checkpoint(out)
    assert "optimizer" not in exported and exported["ema"] is None and exported["task"] == "colorize"
    assert out.stat().st_size < trained_runs["colorize"].stat().st_size
    x, c = REFERENCE["colorize"]["x"], REFERENCE["colorize"]["c"]
    with torch.no_grad():
        assert torch.equal(cinn.load(out).log_prob(x, c), cinn.load(trained_runs["colorize"]).log_prob(x, c))
    assert ColorizeTask().main(["check", "--checkpoint", str(out)]) == 0  # the task's commands take it too
