"""configs/glow/fashion_mnist_modern.yaml is the run its BENCHMARKS.md figures come from."""

from __future__ import annotations

from pathlib import Path

from cinn.config import load_config
from tasks import glow

ROOT = Path(__file__).resolve().parents[1]


def test_the_modern_config_is_the_ablations_mixture_run():
    """The ablation trained fashion_mnist.yaml with these overrides (BENCHMARKS.md); the shipped config is that
    run with fp32 kept as its precision."""
    ablation = load_config(glow.GlowConfig, ROOT / "configs/glow/fashion_mnist.yaml", [
        "--train.precision=bf16", "--train.steps=3370", "--train.max_minutes=null", "--train.lr_decay=cosine",
        "--model.coupling={map: logistic_mixture_cdf}"])
    modern = load_config(glow.GlowConfig, ROOT / "configs/glow/fashion_mnist_modern.yaml", [
        "--train.precision=bf16"])
    assert modern.model == ablation.model and modern.data == ablation.data
    assert modern.train == ablation.train
