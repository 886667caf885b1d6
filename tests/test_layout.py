"""The memory layout a flow trains in: chosen by timing on the machine (cinn.engine.layout), both outcomes of the
choice, the cache, resume, and that the layout changes no result."""

from __future__ import annotations

import pytest
import torch

from cinn import build_cinn, build_glow
from cinn.data import TensorImageDataset
from cinn.engine import DequantizedImages, TrainConfig, Trainer
from cinn.engine import layout as layout_module
from cinn.engine.layout import LayoutChoice, choose_layout, faster_layout, layout_key, time_layouts


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def tiny_glow(channels_last=None):
    return build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8, channels_last=channels_last)


def trainer_for(model, run_dir, steps=2):
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    config = TrainConfig(steps=steps, batch_size=8, init_batch_size=16, warmup_steps=1, log_every=1,
                         checkpoint_every=1)
    return Trainer(model, config, run_dir, TensorImageDataset(images, torch.zeros(32, dtype=torch.int64)),
                   DequantizedImages(n_bits=5), task="demo", task_config={}, progress=False)


def test_builders_leave_the_layout_to_training_unless_told():
    assert not tiny_glow().layout_settled and tiny_glow().layout == "channels_last"
    assert tiny_glow(False).layout_settled and tiny_glow(False).layout == "nchw"
    assert tiny_glow(True).layout_settled and tiny_glow(True).layout == "channels_last"
    assert not build_cinn((2, 8, 8), (1, 8, 8), n_levels=1, blocks_per_level=1, hidden_channels=4).layout_settled


@pytest.mark.parametrize("timed, expected", [({"channels_last": 0.69, "nchw": 0.505}, "nchw"),
                                             ({"channels_last": 0.508, "nchw": 0.535}, "channels_last"),
                                             ({"channels_last": 0.500, "nchw": 0.495}, "channels_last")])
def test_training_keeps_the_layout_that_timed_faster(tmp_path, monkeypatch, capsys, timed, expected):
    monkeypatch.setattr(layout_module, "time_layouts", lambda model, step, rounds=3: timed)
    model = tiny_glow()
    trainer_for(model, tmp_path).fit()
    assert model.layout == expected and model.layout_settled
    weights = [p for p in model.parameters() if p.dim() == 4]
    memory_format = torch.channels_last if expected == "channels_last" else torch.contiguous_format
    assert weights and all(p.is_contiguous(memory_format=memory_format) for p in weights)
    assert f"layout {expected} (timed" in capsys.readouterr().out
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["layout"] == expected


def test_the_choice_is_cached_per_machine_and_model(tmp_path, monkeypatch):
    calls = []

    def timed(model, step, rounds=3):
        calls.append(model)
        return {"channels_last": 1.0, "nchw": 0.5}

    monkeypatch.setattr(layout_module, "time_layouts", timed)
    model = tiny_glow()
    key = layout_key(model, (8, 1, 8, 8), "fp32", "standard")
    assert choose_layout(model, lambda flow: None, key).layout == "nchw"
    again = choose_layout(model, lambda flow: None, key)
    assert (again.layout, again.seconds, len(calls)) == ("nchw", {}, 1) and again.source.startswith("cached")
    other = layout_key(build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=16), (8, 1, 8, 8),
                       "fp32", "standard")
    assert other != key and key != layout_key(model, (8, 1, 8, 8), "bf16", "standard")
    choose_layout(model, lambda flow: None, other)
    assert len(calls) == 2


def test_an_unwritable_cache_only_means_timing_again(tmp_path, monkeypatch):
    monkeypatch.setattr(layout_module, "time_layouts", lambda model, step, rounds=3: {"channels_last": 1.0,
                                                                                        "nchw": 2.0})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    choice = choose_layout(tiny_glow(), lambda flow: None, "key", cache=blocker / "layouts.json")
    assert choice == LayoutChoice("channels_last", "timed", {"channels_last": 1.0, "nchw": 2.0})


def test_timing_leaves_the_model_and_the_random_state_alone():
    model = tiny_glow()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 1, 8, 8)
    rng = torch.random.get_rng_state()

    def step(flow):
        flow.log_prob(x + torch.rand_like(x) * 0.01).mean().backward()

    seconds = time_layouts(model, step, rounds=1)
    assert set(seconds) == {"channels_last", "nchw"} and all(s > 0 for s in seconds.values())
    assert torch.equal(torch.random.get_rng_state(), rng) and model.layout == "channels_last"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_real_timing_settles_a_real_training_run(tmp_path):
    model = tiny_glow()
    trainer_for(model, tmp_path, steps=1).fit()
    assert model.layout_settled and model.layout in ("channels_last", "nchw")


def test_a_settled_layout_is_not_timed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(layout_module, "time_layouts", lambda *args, **kwargs: pytest.fail("timed"))
    model = tiny_glow(False)
    trainer_for(model, tmp_path).fit()
    assert model.layout == "nchw" and "layout" not in capsys.readouterr().out


def test_resume_keeps_the_layout_the_run_chose(tmp_path, monkeypatch):
    monkeypatch.setattr(layout_module, "time_layouts", lambda model, step, rounds=3: {"channels_last": 1.0,
                                                                                        "nchw": 0.5})
    trainer_for(tiny_glow(), tmp_path, steps=2).fit()
    monkeypatch.setattr(layout_module, "time_layouts", lambda *args, **kwargs: pytest.fail("timed on resume"))
    resumed_model = tiny_glow()
    trainer = trainer_for(resumed_model, tmp_path, steps=3)
    trainer.fit(resume=True)
    assert resumed_model.layout == "nchw" and trainer.step == 3


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
@pytest.mark.parametrize("kind", ["glow", "cinn"])
def test_the_layout_changes_no_result(kind, dtype, tolerance):
    """log p(x | c), latents and inverses agree in both layouts (relative tolerance)."""
    torch.manual_seed(0)
    if kind == "glow":
        model = build_glow((2, 8, 8), n_levels=2, steps_per_level=2, hidden_channels=8, channels_last=False)
        x, c = torch.rand(3, 2, 8, 8), None
    else:
        model = build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=2, hidden_channels=8,
                           channels_last=False)
        x, c = torch.randn(3, 2, 8, 8), torch.randn(3, 1, 8, 8)
    model = model.to(dtype)
    x = x.to(dtype)
    c = c.to(dtype) if c is not None else None
    with torch.no_grad():
        model.log_prob(x, c)  # data-dependent init
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        nchw_log_p = model.log_prob(x, c)
        nchw_z = model.transform(x, c)[0]
        model.use_memory_format(torch.channels_last)
        last_log_p = model.log_prob(x, c)
        last_z = model.transform(x, c)[0]
    assert torch.allclose(last_log_p, nchw_log_p, rtol=tolerance, atol=0)
    for a, b in zip(last_z, nchw_z, strict=True):
        assert torch.allclose(a, b, rtol=tolerance, atol=tolerance)


def test_faster_layout_needs_a_clear_margin_for_nchw():
    assert faster_layout({"channels_last": 1.0, "nchw": 0.96}) == "nchw"
    assert faster_layout({"channels_last": 1.0, "nchw": 0.98}) == "channels_last"
    assert faster_layout({"channels_last": 0.5, "nchw": 1.0}) == "channels_last"
