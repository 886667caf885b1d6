"""A run directory is a unit: `train` never mixes two runs in one (it refuses a directory holding a run without
--resume or --overwrite, and a directory another live process trains in), writes its own files only once the
run has started, and cleans up after interrupted checkpoint writes. Commands refuse checkpoints with non-finite
weights, and `colorize` never lets two photos share outputs or overwrites them silently. Driven through the
tasks' real command lines: in this process (as ``python -m tasks.X`` runs them: exit code, stdout, stderr), and in
processes of their own where the boundary matters (a lock another process holds, signals, SIGKILL)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mnist_fixture import write_mnist_fixture
from paused_train import ONE_THREAD, one_thread, start_paused
from PIL import Image

from cinn.cli import run_command
from cinn.engine import load_checkpoint, save_checkpoint, trained_weights
from cinn.engine.run import LOCK_NAME, RunDirectory
from tasks import colorize, glow

ROOT = Path(__file__).resolve().parents[1]
COLORIZE_TINY = str(ROOT / "configs/colorize/tiny.yaml")
GLOW_TINY = str(ROOT / "configs/glow/tiny.yaml")


TASKS = {"tasks.glow": glow, "tasks.colorize": colorize}


def command(task: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"tasks.{task}", *args]


def run(argv: list[str]) -> subprocess.CompletedProcess:
    """``argv`` (a :func:`command`) run in this process as ``python -m tasks.X`` runs it: its exit code and what
    it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        run_command(TASKS[argv[2]].main, argv[3:])
    return subprocess.CompletedProcess(argv, exit_info.value.code, out.getvalue(), err.getvalue())


def colorize_train(run_dir: Path, *extra: str) -> list[str]:
    return command("colorize", "train", "--config", COLORIZE_TINY, "--run_dir", str(run_dir), *extra)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The stderr of a refused command, asserted to be one ``error:`` line with exit code 2."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file below ``folder``: its content hash and modification time."""
    return {str(path.relative_to(folder)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def colorize_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("colorize") / "run"
    assert colorize.main(["train", "--config", COLORIZE_TINY, "--run_dir", str(run_dir)]) == 0
    return run_dir


# ------------------------------------------------------------------------------------ run directories
def test_train_refuses_a_directory_that_holds_a_run_and_changes_nothing(colorize_run):
    before = snapshot(colorize_run)
    err = one_error_line(run(colorize_train(colorize_run)))
    assert "already holds a run" in err and "--resume" in err and "--run_dir" in err and "--overwrite" in err
    assert snapshot(colorize_run) == before


def test_overwrite_replaces_the_old_run(tmp_path):
    run_dir = tmp_path / "run"
    assert colorize.main(["train", "--config", COLORIZE_TINY, "--run_dir", str(run_dir)]) == 0
    old_events = {path.name for path in (run_dir / "tensorboard").iterdir()}
    old_samples = {path.name for path in (run_dir / "samples").iterdir()}
    result = run(colorize_train(run_dir, "--overwrite", "--train.steps=2", "--train.sample_every=0"))
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 2
    assert (run_dir / "metrics.csv").read_text().splitlines()[-1].startswith("2,")
    assert "steps: 2" in (run_dir / "config.yaml").read_text()
    assert not old_events & {path.name for path in (run_dir / "tensorboard").iterdir()}
    assert not old_samples & {path.name for path in (run_dir / "samples").glob("*")}


def test_resume_and_overwrite_exclude_each_other(colorize_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command(colorize.main, ["train", "--run_dir", str(colorize_run), "--resume", "--overwrite"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_second_train_in_a_directory_in_use_fails_at_once_and_the_first_run_is_intact(tmp_path):
    run_dir = tmp_path / "run"
    argv = colorize_train(run_dir, "--train.steps=100000", "--train.log_every=1",
                          "--train.checkpoint_every=100000", "--train.eval_every=0", "--train.keep=last")
    first = start_paused(1, "tasks.colorize", argv[3:])
    try:
        second = run(colorize_train(run_dir, "--overwrite"))
        err = one_error_line(second)
        assert f"run directory {run_dir} is in use by another train process (pid {first.pid})" in err
        assert "training on" not in second.stdout  # refused before reading any data
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)  # closes its stdin: the paused run goes on, sees the signal
    assert first.returncode == 0, err
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 1
    assert (run_dir / "metrics.csv").read_text().count("\n") == 2


def test_the_lock_of_a_killed_process_is_released(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from types import SimpleNamespace; from cinn.engine.run "
         "import RunDirectory; RunDirectory(SimpleNamespace(run_dir=sys.argv[1]), False, False).create(); "
         "print('locked', flush=True); sys.stdin.read()", str(tmp_path)],  # holds the lock until killed
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()  # SIGKILL: no clean-up runs
    holder.communicate(timeout=30)
    with RunDirectory(SimpleNamespace(run_dir=str(tmp_path)), False, False) as run_directory:
        assert run_directory.create() == tmp_path
    assert (tmp_path / LOCK_NAME).exists()


def test_a_run_that_fails_before_it_starts_writes_no_config_or_metrics(tmp_path, colorize_run):
    fresh = tmp_path / "fresh"
    err = one_error_line(run(colorize_train(fresh, "--train.batch_size=1000")))
    assert "train.batch_size is 1000 but the training set has only" in err
    assert not fresh.exists()

    run_files = ("checkpoint.pt", "config.yaml", "metrics.csv")
    before = {name: (colorize_run / name).read_bytes() for name in run_files}
    one_error_line(run(colorize_train(colorize_run, "--overwrite", "--train.batch_size=1000")))
    assert {name: (colorize_run / name).read_bytes() for name in run_files} == before


def test_temporary_files_of_interrupted_checkpoint_writes_are_removed(tmp_path):
    path = tmp_path / "checkpoint.pt"
    stale = tmp_path / ".checkpoint.pt.k1ll3d.tmp"  # what save_checkpoint's mkstemp names a temporary
    other = tmp_path / ".best.pt.k1ll3d.tmp"  # another file's write: not this one's to remove
    stale.write_bytes(b"half a checkpoint")
    other.write_bytes(b"half a checkpoint")
    save_checkpoint({"step": 1}, path)
    assert not stale.exists() and other.exists()
    assert load_checkpoint(path)["step"] == 1


def test_train_start_removes_temporary_files_of_interrupted_checkpoint_writes(colorize_run, tmp_path):
    stale = colorize_run / ".checkpoint.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    result = run(colorize_train(colorize_run, "--resume", "--train.steps=4"))  # nothing left to train
    assert result.returncode == 0, result.stderr
    assert not stale.exists()


# ------------------------------------------------------------------------------------ non-finite checkpoints
def poisoned(checkpoint: Path, out: Path) -> Path:
    """A copy of ``checkpoint`` with one of its trained weights set to NaN."""
    state = torch.load(checkpoint, weights_only=True)
    weights = trained_weights(state)  # the tensors of the checkpoint that the commands use
    name = next(key for key, value in weights.items() if value.is_floating_point())
    weights[name].view(-1)[0] = float("nan")
    torch.save(state, out)
    return out


@pytest.fixture(scope="module")
def glow_run(tiny_glow_run) -> Path:
    return tiny_glow_run


def test_every_command_refuses_a_checkpoint_with_non_finite_weights_with_one_line(glow_run, colorize_run,
                                                                                  tmp_path):
    glow_checkpoint = poisoned(glow_run / "checkpoint.pt", tmp_path / "glow_nan.pt")
    colorize_checkpoint = poisoned(colorize_run / "checkpoint.pt", tmp_path / "colorize_nan.pt")
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (30, 20), (120, 80, 40)).save(tmp_path / "photos" / "photo.jpg")
    glow_lines = {name: one_error_line(run(command("glow", name, "--checkpoint", str(glow_checkpoint), *extra)))
                  for name, extra in (("eval", []), ("check", []), ("sample", ["--out", str(tmp_path / "s")]))}
    colorize_line = one_error_line(run(command("colorize", "colorize", "--checkpoint", str(colorize_checkpoint),
                                               "--input", str(tmp_path / "photos"), "--out", str(tmp_path / "c"))))
    assert len(set(glow_lines.values())) == 1, glow_lines  # the line check prints, for every command
    assert glow_lines["check"].startswith(f"error: {glow_checkpoint} holds non-finite weights")
    assert colorize_line.startswith(f"error: {colorize_checkpoint} holds non-finite weights")
    assert colorize_line.split("): ")[1] == glow_lines["check"].split("): ")[1]  # the same advice
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()


def glow_train(run_dir: Path, data_root: Path, *extra: str) -> list[str]:
    return command("glow", "train", "--config", GLOW_TINY, "--data.dataset", "mnist", "--data.root",
                   str(data_root), "--run_dir", str(run_dir), *extra)


def terminated_mid_run(argv: list[str], step: int) -> subprocess.CompletedProcess:
    """``argv`` (a ``train``) run in a process of its own (one thread) and sent SIGTERM once it has done
    ``step`` steps; its finished process."""
    process = start_paused(step, argv[2], argv[3:], env=ONE_THREAD)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def test_a_run_stopped_by_sigterm_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    data_root = write_mnist_fixture(tmp_path / "mnist", n_train=96, n_test=32)
    steps = "--train.steps=40"
    stopped = terminated_mid_run(glow_train(tmp_path / "stopped", data_root, steps, "--train.log_every=1"), 13)
    assert stopped.returncode == 0, stopped.stderr
    stop_step = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["step"]
    assert stop_step == 13
    with one_thread():
        resumed = run(glow_train(tmp_path / "stopped", data_root, steps, "--train.log_every=1", "--resume"))
        assert resumed.returncode == 0, resumed.stderr
        uninterrupted = run(glow_train(tmp_path / "whole", data_root, steps, "--train.log_every=1"))
        assert uninterrupted.returncode == 0, uninterrupted.stderr
    expected = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    actual = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")
    assert actual["step"] == expected["step"] == 40
    assert expected["model"].keys() == actual["model"].keys()
    differing = [name for name, value in expected["model"].items()
                 if not torch.equal(value, actual["model"][name])]
    assert not differing, f"resumed at step {stop_step}; weights differ: {differing}"


# ------------------------------------------------------------------------------------ colorize outputs
def test_colorize_outputs_never_collide_and_are_never_overwritten_silently(colorize_run, tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for index, name in enumerate(("photo.jpg", "photo.png", "sub/photo.jpg")):
        Image.new("RGB", (30, 20), (40 * index, 80, 40)).save(photos / name)
    out = tmp_path / "out"
    argv = ["colorize", "--checkpoint", str(colorize_run / "checkpoint.pt"), "--input", str(photos), "--samples",
            "2", "--out", str(out)]
    assert colorize.main(argv) == 0
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*.png"))
    assert written == ["photo_jpg_contact.png", "photo_jpg_sample1.png", "photo_jpg_sample2.png",
                       "photo_png_contact.png", "photo_png_sample1.png", "photo_png_sample2.png",
                       "sub/photo_jpg_contact.png", "sub/photo_jpg_sample1.png", "sub/photo_jpg_sample2.png"]

    before = snapshot(out)
    err = one_error_line(run(command("colorize", *argv)))
    assert "already exists" in err and "--overwrite" in err
    assert snapshot(out) == before
    assert colorize.main([*argv, "--overwrite"]) == 0
    assert sorted(str(path.relative_to(out)) for path in out.rglob("*.png")) == written
