"""``python -m tasks.glow`` end to end on a tiny MNIST-format fixture: the commands, exact resume after
SIGKILL, and two-process distributed training against one process."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mnist_fixture import write_mnist_fixture
from paused_train import ONE_THREAD, one_thread, start_paused

from cinn.bench import BenchReport
from cinn.cli import run_command
from cinn.engine import load_checkpoint
from tasks import glow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_mnist_fixture(tmp_path_factory.mktemp("mnist"), n_train=96, n_test=32)


def glow_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tasks.glow", *args]


def tiny_train_args(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(ROOT / "configs/glow/tiny.yaml"), "--data.dataset", "mnist",
            "--data.root", str(data_root), "--run_dir", str(run_dir), *extra]


def run(args: list[str], timeout: int = 120, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def test_a_class_conditional_glow_reports_its_bayes_rule_accuracy(data_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert glow.main(tiny_train_args(data_root, run_dir, "--model.class_conditional=true")) == 0
    capsys.readouterr()
    assert glow.main(["eval", "--checkpoint", str(run_dir / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "Bayes-rule accuracy, argmax_y log p(x | y) over the 10 classes with equal priors: " in out
    assert "of 32 images" in out.splitlines()[-1]


def model_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as file:
        return list(csv.DictReader(file))


def test_train_eval_sample_interpolate(data_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    result = run(glow_command(*tiny_train_args(data_root, run_dir, "--train.sample_every=3")))
    assert result.returncode == 0, result.stderr
    assert {"checkpoint.pt", "config.yaml", "metrics.csv", "learning_curve.png", "samples"} <= {
        p.name for p in run_dir.iterdir()}
    checkpoint = str(run_dir / "checkpoint.pt")
    capsys.readouterr()

    assert glow.main(["eval", "--checkpoint", checkpoint]) == 0  # the other commands in this process
    out = capsys.readouterr().out
    assert "test bits/dim:" in out and "32 images" in out
    assert "Bayes-rule" not in out  # an unconditional model is no classifier

    assert glow.main(["sample", "--checkpoint", checkpoint, "--n", "4", "--temperatures", "0", "0.7"]) == 0
    assert (run_dir / "samples" / "temperature_0.70.png").exists()

    assert glow.main(["interpolate", "--checkpoint", checkpoint, "--pairs", "2", "--steps", "3"]) == 0
    assert (run_dir / "interpolation.png").exists()


def test_resume_after_sigkill_matches_an_uninterrupted_run(data_root, tmp_path):
    args = ("--train.steps=80", "--train.checkpoint_every=10", "--train.log_every=10")
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    with one_thread():
        assert glow.main(tiny_train_args(data_root, uninterrupted, *args)) == 0

    process = start_paused(61, "tasks.glow", tiny_train_args(data_root, killed, *args), env=ONE_THREAD)
    process.kill()  # SIGKILL after step 61: no clean-up, no checkpoint beyond step 60's
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(killed / "checkpoint.pt")["step"] == 60

    with one_thread():
        assert glow.main(["train", "--resume", "--run_dir", str(killed)]) == 0
    expected, actual = model_state(uninterrupted), model_state(killed)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert [r["train_bpd"] for r in metric_rows(killed)] == [r["train_bpd"] for r in metric_rows(uninterrupted)]


def test_resume_refuses_a_changed_config(data_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert glow.main(tiny_train_args(data_root, run_dir)) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(glow.main, ["train", "--resume", "--run_dir", str(run_dir), "--train.lr=0.5"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "train.lr" in err and "--force" in err
    assert "Traceback" not in err
    assert glow.main(["train", "--resume", "--run_dir", str(run_dir), "--train.steps=8"]) == 0
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 8


def test_two_gloo_processes_match_one_process(data_root, tmp_path):
    args = ("--train.steps=4", "--train.log_every=1", "--train.batch_size=8")
    single = tmp_path / "single"
    result = run(glow_command(*tiny_train_args(data_root, single, *args)))
    assert result.returncode == 0, result.stderr
    double = tmp_path / "double"
    result = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                  "-m", "tasks.glow", *tiny_train_args(data_root, double, *args)], timeout=180)
    assert result.returncode == 0, result.stderr
    single_losses = [float(r["train_bpd"]) for r in metric_rows(single)]
    double_losses = [float(r["train_bpd"]) for r in metric_rows(double)]
    assert len(single_losses) == len(double_losses) == 4
    assert single_losses == pytest.approx(double_losses, abs=1e-5)
    expected, actual = model_state(single), model_state(double)
    assert all(torch.allclose(expected[key].double(), actual[key].double(), atol=1e-5) for key in expected)


def run_in_process(args: list[str], capsys) -> tuple[int, str]:
    """Run ``python -m tasks.glow ARGS`` in this process (for commands that fail before training)."""
    with pytest.raises(SystemExit) as exit_info:
        run_command(glow.main, args)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--train.widht=3"], "unknown key 'train.widht'"),
    (["--train.batch_size=abc"], "train.batch_size must be an int"),
    (["--train.lr=-1"], "train.lr must be positive"),
    (["--model.n_levels=3"], "divisible by 2^n_levels"),
    (["--model.coupling.min_scale=1"], "min_scale must be in [0, 1), got 1"),
])
def test_bad_settings_give_one_clear_line(data_root, tmp_path, args, message, capsys):
    code, stderr = run_in_process(tiny_train_args(data_root, tmp_path / "run", *args), capsys)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr


def test_missing_dataset_names_the_expected_files(tmp_path, capsys):
    code, stderr = run_in_process(tiny_train_args(tmp_path / "empty", tmp_path / "run"), capsys)
    assert code == 2
    assert "train-images-idx3-ubyte" in stderr
    assert "Traceback" not in stderr


def test_bench_prints_throughput_memory_and_flops():
    result = run(glow_command("bench", "--config", "configs/glow/tiny.yaml", "--shape", "1", "8", "8",
                              "--steps", "2", "--sample-batch", "4"))
    assert result.returncode == 0, result.stderr
    for needle in ("img/s", "GFLOP/img", "of fp32 matmul", "bf16 matmul", "peak memory"):
        assert needle in result.stdout


@pytest.mark.parametrize("bf16_gflops, expected", [
    (600.0, "25% of bf16 matmul (600 GFLOP/s)"),
    (1.3, "bf16 matmul 1 GFLOP/s, slower than fp32: no bf16 units")])
def test_bench_report_gives_a_bf16_fraction_only_where_the_machine_has_bf16_units(bf16_gflops, expected):
    report = BenchReport(description="Flow", device="CPU", batch_size=16, train_images_per_s=4.0,
                         sample_images_per_s=8.0, peak_memory_mb=100.0, saved_activations_mb=10.0,
                         train_gflop_per_image=37.5, train_gflops=150.0, matmul_fp32_gflops=180.0,
                         matmul_bf16_gflops=bf16_gflops)
    assert "83% of fp32 matmul (180 GFLOP/s)" in report.format()
    assert expected in report.format()
