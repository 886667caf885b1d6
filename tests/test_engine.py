"""The training engine: schedules, checkpoints, exact resume, the non-finite guard, outputs."""

from __future__ import annotations

import csv
import math
import traceback
from pathlib import Path

import pytest
import torch

from cinn import build_glow
from cinn.config import ConfigError
from cinn.data import TensorImageDataset
from cinn.engine import (
    CheckpointError,
    DequantizedImages,
    NonFiniteTrainingError,
    TrainConfig,
    Trainer,
    load_checkpoint,
    save_checkpoint,
    trained_weights,
)
from cinn.engine.hooks import Hook, Samples
from cinn.engine.metrics import MetricsWriter
from cinn.engine.schedule import BatchSchedule, learning_rate_factor


def tiny_dataset(n: int = 48, seed: int = 0) -> TensorImageDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 3, (n,), generator=generator)
    return TensorImageDataset(images, labels, num_classes=3)


def tiny_trainer(run_dir: Path, steps: int = 8, objective=None, **overrides) -> Trainer:
    torch.manual_seed(0)
    model = build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8)
    settings = {"batch_size": 8, "init_batch_size": 16, "warmup_steps": 2, "log_every": 1, "sample_every": 0,
                "checkpoint_every": 4, **overrides}
    config = TrainConfig(steps=steps, **settings)
    return Trainer(model, config, run_dir, tiny_dataset(), objective or DequantizedImages(n_bits=5),
                   task="test", task_config={"note": "tiny"}, progress=False,
                   hooks=[Samples(lambda flow: flow.sample(4, temperature=0.7), config.sample_every)])


def parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_batch_schedule_resumes_mid_epoch_exactly():
    full = list(BatchSchedule(50, batch_size=8, steps=20, seed=3))
    assert list(BatchSchedule(50, batch_size=8, steps=20, seed=3, start_step=9)) == full[9:]
    assert all(len(batch) == 8 for batch in full)
    first_epoch = [i for batch in full[:6] for i in batch]
    assert len(set(first_epoch)) == 48  # an epoch visits distinct items
    assert full[:6] != full[6:12]  # and each epoch has its own order


def test_batch_schedule_rejects_a_dataset_smaller_than_a_batch():
    with pytest.raises(ValueError, match="fewer than one batch"):
        BatchSchedule(5, batch_size=8, steps=1, seed=0)


def test_learning_rate_warmup_and_decay():
    assert learning_rate_factor(0, 10, 100, "none") == pytest.approx(0.1)
    assert learning_rate_factor(9, 10, 100, "none") == pytest.approx(1.0)
    assert learning_rate_factor(50, 10, 100, "none") == 1.0
    assert learning_rate_factor(55, 10, 100, "cosine") == pytest.approx(0.5)
    assert learning_rate_factor(55, 10, 100, "linear") == pytest.approx(0.5)
    assert learning_rate_factor(100, 10, 100, "cosine") == pytest.approx(0.0)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)

    def full_disk(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_loading_a_checkpoint_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    torch.save({"format": "cinn-checkpoint-1", "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="could run code, so it was not loaded"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_truncated_or_foreign_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_training_lowers_the_loss_and_writes_the_run_directory(tmp_path):
    trainer = tiny_trainer(tmp_path, steps=12, checkpoint_every=6)
    trainer.fit()
    with open(tmp_path / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    losses = [float(r["train_bpd"]) for r in rows]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 12 and state["task"] == "test" and state["config"] == {"note": "tiny"}
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    assert list((tmp_path / "samples").glob("*.png"))
    assert list((tmp_path / "tensorboard").iterdir())


def test_resume_in_process_matches_an_uninterrupted_run(tmp_path):
    uninterrupted = tiny_trainer(tmp_path / "a", steps=8)
    uninterrupted.fit()
    first_half = tiny_trainer(tmp_path / "b", steps=4)
    first_half.fit()
    resumed = tiny_trainer(tmp_path / "b", steps=8)
    resumed.fit(resume=True)
    expected, actual = parameters(uninterrupted), parameters(resumed)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_ema_weights_are_kept_and_restored(tmp_path):
    trainer = tiny_trainer(tmp_path, steps=4, ema_decay=0.9)
    trainer.fit()
    ema = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    assert not torch.equal(ema["module.blocks.3.subnet_b.4.conv.weight"],
                           trainer.model.state_dict()["blocks.3.subnet_b.4.conv.weight"])
    restored = tiny_trainer(tmp_path, steps=4, ema_decay=0.9)
    restored.restore(load_checkpoint(tmp_path / "checkpoint.pt"))
    assert all(torch.equal(v, restored.ema.state_dict()[k]) for k, v in ema.items())


class PoisonedImages(DequantizedImages):
    """Returns NaN inputs at the given steps (counted by calls)."""

    def __init__(self, poisoned_calls: set[int]):
        super().__init__(n_bits=5)
        self.calls, self.poisoned_calls = 0, poisoned_calls

    def prepare(self, images, labels, generator):
        x, c = super().prepare(images, labels, generator)
        self.calls += 1
        if self.calls - 1 in self.poisoned_calls:  # call 0 is the ActNorm init batch
            x = x.clone()
            x[0, 0, 0, 0] = float("nan")
        return x, c


def test_non_finite_steps_are_skipped_and_logged(tmp_path, capsys):
    trainer = tiny_trainer(tmp_path, steps=6, objective=PoisonedImages({2, 3}))
    trainer.fit()
    assert "non-finite loss or gradient, step skipped" in capsys.readouterr().out
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    with open(tmp_path / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert int(float(rows[-1]["skipped_steps"])) == 2


def test_too_many_non_finite_steps_stop_with_the_last_good_checkpoint(tmp_path):
    trainer = tiny_trainer(tmp_path, steps=20, objective=PoisonedImages(set(range(6, 30))),
                           max_nonfinite_steps=3)
    with pytest.raises(NonFiniteTrainingError, match="3 consecutive steps"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_metrics_rows_reach_the_disk_before_the_next_checkpoint(tmp_path):
    writer = MetricsWriter(tmp_path, start_step=0)
    writer.write(50, {"train_bpd": 4.5, "lr": 1e-3})
    with open(tmp_path / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    writer.close()
    assert [(row["step"], row["train_bpd"]) for row in rows] == [("50", "4.5")]


def test_training_with_backprop_by_inversion_follows_standard_training(tmp_path):
    standard = tiny_trainer(tmp_path / "standard", steps=6)
    standard.fit()
    inverted = tiny_trainer(tmp_path / "inversion", steps=6, backprop="inversion")
    inverted.fit()
    expected, actual = parameters(standard), parameters(inverted)
    initial = parameters(tiny_trainer(tmp_path / "untrained"))
    assert any(not torch.equal(expected[k], initial[k]) for k in expected), "training should move the parameters"
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


def test_backprop_by_inversion_cannot_be_compiled():
    with pytest.raises(ConfigError, match="compile cannot trace backprop by inversion"):
        TrainConfig(compile=True, backprop="inversion").validate()


def test_bf16_training_with_backprop_by_inversion_follows_bf16_standard_training(tmp_path):
    standard = tiny_trainer(tmp_path / "standard", steps=6, precision="bf16")
    standard.fit()
    inverted = tiny_trainer(tmp_path / "inversion", steps=6, precision="bf16", backprop="inversion")
    inverted.fit()
    float32 = tiny_trainer(tmp_path / "float32", steps=6)
    float32.fit()
    expected, actual, reference = parameters(standard), parameters(inverted), parameters(float32)
    keys = [k for k in expected if expected[k].is_floating_point()]
    bf16_effect = max((expected[k] - reference[k]).abs().max() for k in keys)
    inversion_effect = max((actual[k] - expected[k]).abs().max() for k in keys)
    assert bf16_effect > 0, "bf16 autocast should change the trained parameters"
    assert inversion_effect <= 0.1 * bf16_effect, (inversion_effect, bf16_effect)


def test_keep_best_gives_users_the_weights_of_the_best_evaluation_and_resumes_from_the_last(tmp_path):
    scores = iter([3.0, 1.0, 2.0])  # held-out bits/dim at steps 2, 4, 6: the best is step 4's

    def trainer(run_dir: Path, steps: int) -> Trainer:
        torch.manual_seed(0)
        model = build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8)
        config = TrainConfig(steps=steps, batch_size=8, init_batch_size=16, warmup_steps=2, log_every=2,
                             sample_every=0, checkpoint_every=2, eval_every=2, keep="best")
        return Trainer(model, config, run_dir, tiny_dataset(), DequantizedImages(n_bits=5), task="test",
                       task_config={}, progress=False,
                       evaluate=lambda model: next(scores))

    kept = trainer(tmp_path / "kept", steps=6)
    kept.fit()
    state = load_checkpoint(tmp_path / "kept" / "checkpoint.pt")
    assert state["best"]["step"] == 4 and state["best"]["eval_bpd"] == 1.0 and state["step"] == 6
    at_step_4 = trainer(tmp_path / "four", steps=4)
    scores = iter([3.0, 1.0])
    at_step_4.fit()
    weights = trained_weights(state)
    assert all(torch.equal(weights[key], value) for key, value in at_step_4.model.state_dict().items())
    assert not torch.equal(state["model"]["blocks.3.subnet_b.4.conv.weight"],
                           weights["blocks.3.subnet_b.4.conv.weight"])  # resuming continues from step 6
    assert all(torch.equal(weights[key], value) for key, value in kept.kept_model().state_dict().items())


def test_keep_best_needs_evaluations():
    with pytest.raises(ConfigError, match=r"train\.keep=best needs evaluations"):
        TrainConfig(keep="best", eval_every=0).validate()


def test_no_training_step_waits_for_the_device_between_log_rows(tmp_path, monkeypatch):
    """Reading a tensor on the host (item, tolist, bool, float, int, numpy, cpu) waits for a GPU: the step
    keeps loss, gradient norm and the non-finite decision on the device; rows read them every log_every.
    (With Adam/AdamW, whose fused kernel can skip a step on the device; Adamax reads once per step.)"""
    reads: list[str] = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if not any(frame.filename.endswith("schedule.py") for frame in traceback.extract_stack(limit=4)):
                reads.append(name)  # (the batch order is drawn on the host, once per epoch: not a wait)
            return original(self, *args, **kwargs)

        return read

    class ReadsPerStep(Hook):
        def __init__(self):
            self.per_step: list[int] = []

        def on_step(self, trainer, result):
            self.per_step.append(len(reads))
            reads.clear()

    counter = ReadsPerStep()
    trainer = tiny_trainer(tmp_path, steps=10, log_every=5, checkpoint_every=100, optimizer="adam")
    trainer.hooks.insert(0, counter)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    trainer.fit()
    # Step k's count holds what ran after step k-1's hooks: step 6 follows the row written at step 5.
    assert counter.per_step[1:5] == [0, 0, 0, 0] and counter.per_step[6:10] == [0, 0, 0, 0]
    assert counter.per_step[5] <= 2  # the metrics row and the non-finite counts of step 5


def test_fused_adam_skips_a_non_finite_step_on_the_device_exactly():
    """The engine's device-side skip relies on the fused Adam kernel honouring ``found_inf`` (as GradScaler
    uses it): parameters, moments and the step count stay as they were."""
    parameter = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.Adam([parameter], lr=0.1, fused=True)
    parameter.grad = torch.ones(4)
    optimizer.step()
    before = {key: value.clone() for key, value in optimizer.state[parameter].items()}, parameter.detach().clone()
    parameter.grad = torch.full((4,), float("nan"))
    optimizer.found_inf = torch.tensor(1.0)
    optimizer.step()
    state, value = before
    assert torch.equal(parameter.detach(), value)
    assert all(torch.equal(optimizer.state[parameter][key], state[key]) for key in state)


def test_compile_mode_reaches_torch_compile(tmp_path, monkeypatch):
    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    tiny_trainer(tmp_path, steps=1, compile=True, compile_mode="max-autotune").fit()
    assert modes == ["max-autotune"]


def test_tf32_is_set_both_ways_and_said():
    from cinn.engine.trainer import use_tf32

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        assert "full float32" in use_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert "TF32" in use_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("over, expected", [("steps", 0.5 * (1 + math.cos(math.pi * 1 / 1000))), ("time", 0.5)])
def test_the_learning_rate_decay_follows_the_time_budget_when_asked(tmp_path, monkeypatch, over, expected):
    trainer = tiny_trainer(tmp_path / "run", steps=1000, lr_decay="cosine", lr_decay_over=over, max_minutes=2.0,
                           warmup_steps=0)
    monkeypatch.setattr(Trainer, "elapsed_seconds", property(lambda self: 60.0))  # half the budget spent
    trainer.scheduler.step()  # step 1 of 1000
    assert trainer.learning_rate == pytest.approx(trainer.config.lr * expected)


def test_a_decay_over_time_needs_a_time_budget():
    with pytest.raises(ConfigError, match=r"decays over the time budget; set train\.max_minutes"):
        TrainConfig(lr_decay="cosine", lr_decay_over="time").validate()
