"""TarFlow (cinn/blocks/autoregressive.py, cinn/models/tarflow.py): what the generic block and model tests cannot
see — the autoregressive structure, that the cached inverse is the inverse and caches, class-conditional
sampling, and a checkpoint that rebuilds the model."""

from __future__ import annotations

import pytest
import torch
from invertibility import perturb_

import cinn
from cinn.blocks import TransformerAutoregressiveBlock
from cinn.blocks.attention import MultiHeadSelfAttention
from cinn.engine import save_checkpoint
from cinn.engine.checkpoint import model_info
from cinn.models.registry import model_spec

TOKENS, FEATURES = 5, 3


def perturbed_block(reverse_order: bool = False, conditional: bool = False) -> TransformerAutoregressiveBlock:
    torch.manual_seed(0)
    block = TransformerAutoregressiveBlock([(TOKENS, FEATURES)], [(3,)] if conditional else None, width=16,
                                           layers=2, heads=2, reverse_order=reverse_order)
    return perturb_(block.double(), scale=0.3)


def conditions_for(conditional: bool, batch: int) -> list[torch.Tensor]:
    return [torch.eye(3, dtype=torch.float64)[torch.arange(batch) % 3]] if conditional else []


@pytest.mark.parametrize("reverse_order", [False, True], ids=["forward_order", "reverse_order"])
def test_each_token_depends_only_on_the_tokens_before_it_in_the_blocks_order(reverse_order):
    block = perturbed_block(reverse_order)
    x = torch.randn(1, TOKENS, FEATURES, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda x: block([x])[0][0], x)[0, :, :, 0]  # (T, D, T, D)
    by_tokens = jacobian.abs().amax(dim=(1, 3))  # [t, s]: the largest |∂z_t/∂x_s|
    later = torch.ones(TOKENS, TOKENS, dtype=torch.bool).triu(1)
    after, before = (later.T, later) if reverse_order else (later, later.T)
    assert torch.all(by_tokens[after] == 0)  # z_t does not depend on x_s for s after t
    assert torch.all(by_tokens[before] > 1e-6)  # ... but on every x_s before t: the transformer mixes them
    within_token = jacobian.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (T, D, D): ∂z_t/∂x_t
    off_diagonal = ~torch.eye(FEATURES, dtype=torch.bool)
    assert torch.all(within_token[:, off_diagonal] == 0)  # an element-wise scaling of x_t: exp(−α_t)


def naive_inverse(block: TransformerAutoregressiveBlock, z: torch.Tensor, conditions: list[torch.Tensor]
                  ) -> torch.Tensor:
    """The inverse from the forward pass alone, re-running all tokens for each one: ``z_t`` is affine in ``x_t``
    given ``x_{<t}``, so the forward passes at ``x_t = 0`` and ``x_t = 1`` give the ``x_t`` that yields ``z_t``."""
    x = torch.zeros_like(z)
    order = range(TOKENS - 1, -1, -1) if block.reverse_order else range(TOKENS)
    for t in order:
        at_zero, at_one = x.clone(), x.clone()
        at_one[:, t] = 1.0
        (z_at_zero,), _ = block([at_zero], c=conditions)
        (z_at_one,), _ = block([at_one], c=conditions)
        x[:, t] = (z[:, t] - z_at_zero[:, t]) / (z_at_one[:, t] - z_at_zero[:, t])
    return x


@pytest.mark.parametrize("reverse_order, conditional", [(False, False), (True, True)],
                         ids=["forward_order", "reverse_order_conditional"])
def test_the_cached_inverse_is_the_naive_inverse_and_runs_each_layer_once_per_token(reverse_order, conditional):
    block = perturbed_block(reverse_order, conditional)
    conditions = conditions_for(conditional, 4)
    z = torch.randn(4, TOKENS, FEATURES, dtype=torch.float64)
    tokens_seen: dict[MultiHeadSelfAttention, list[int]] = {}
    attentions = [module for module in block.modules() if isinstance(module, MultiHeadSelfAttention)]
    hooks = [attention.register_forward_hook(
        lambda module, inputs, _: tokens_seen.setdefault(module, []).append(inputs[0].shape[1]))
        for attention in attentions]
    (x,), log_det = block([z], c=conditions, rev=True)
    for hook in hooks:
        hook.remove()
    assert len(attentions) == 2 and all(tokens_seen[attention] == [1] * TOKENS for attention in attentions)
    assert (x - naive_inverse(block, z, conditions)).abs().max() <= 1e-10
    (z_back,), forward_log_det = block([x], c=conditions)
    assert (z_back - z).abs().max() <= 1e-10 and (log_det + forward_log_det).abs().max() <= 1e-10
    assert forward_log_det.abs().min() > 1e-3  # the perturbed block scales: not the identity


def test_under_bf16_autocast_the_inverse_settles_on_the_forward_as_computed():
    """16 tokens: here the one-token steps round differently from the batched forward (on x86 CPUs the cached
    inverse alone is off by about 1e-2); the batched passes that settle it make it exact again."""
    torch.manual_seed(0)
    block = perturb_(TransformerAutoregressiveBlock([(16, 4)], width=16, layers=1), scale=0.05)
    x = torch.randn(4, 16, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (z,), log_det = block([x])
        (x_back,), log_det_back = block([z], rev=True)
    assert (x_back - x).abs().max() <= 1e-5 and torch.equal(log_det_back, -log_det)


def tiny_tarflow(n_classes: int = 3) -> cinn.Flow:
    torch.manual_seed(0)
    return perturb_(cinn.build_tarflow((1, 8, 8), patch_size=4, width=8, n_blocks=2, layers_per_block=1,
                                       n_classes=n_classes), scale=0.05)


def test_class_conditional_samples_have_the_image_shape_and_encode_back_to_their_latents():
    model = tiny_tarflow().double()
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    latents = model.sample_latents(6, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert model.latent_shapes == [(4, 16)] and latents[0].shape == (6, 4, 16)
    samples = model.decode(latents, labels)
    assert samples.shape == (6, 1, 8, 8) and torch.isfinite(samples).all()
    assert (model.encode(samples, labels)[0] - latents[0]).abs().max() <= 1e-10
    assert model.sample(6, labels, temperature=0.8).shape == (6, 1, 8, 8)
    assert model.log_prob(samples, labels).shape == (6,)
    assert (model.decode(latents, (labels + 1) % 3) - samples).abs().max() > 1e-6  # the label matters


def test_a_checkpoint_rebuilds_the_same_model(tmp_path):
    model = tiny_tarflow()
    arguments = {"input_shape": (1, 8, 8), "patch_size": 4, "width": 8, "n_blocks": 2, "layers_per_block": 1,
                 "n_classes": 3}
    spec = model_spec(cinn.build_tarflow, **arguments)
    save_checkpoint({**model_info(spec, {"image_shape": [1, 8, 8], "n_classes": 3}), "task": "tarflow",
                     "model": model.state_dict()}, tmp_path / "checkpoint.pt")
    loaded = cinn.load(tmp_path / "checkpoint.pt")
    x, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        expected = model.log_prob(x, labels)
        assert torch.equal(loaded.log_prob(x, labels), expected)
        assert not torch.allclose(cinn.build_tarflow(**arguments).log_prob(x, labels), expected)  # from the file


@pytest.mark.parametrize("arguments, message", [
    ({"input_shape": (1, 28, 28), "patch_size": 3}, "patch size 3 does not divide the image size 28x28"),
    ({"input_shape": (1, 8, 8), "width": 12, "heads": 5}, "width 12 does not split into 5 heads"),
    ({"input_shape": (8, 8)}, r"expected an image shape \(C, H, W\)"),
    ({"input_shape": (1, 8, 8), "layers_per_block": 0}, "layers_per_block must be an integer >= 1"),
    ({"input_shape": (1, 8, 8), "n_classes": -1}, "n_classes must be an integer >= 0"),
    ({"input_shape": (1, 4096, 4096), "patch_size": 1}, "make 16777216 tokens, more than the 4096 allowed"),
    ({"input_shape": (1, 8, 8), "clamp": 0.0}, "clamp must be positive"),
])
def test_impossible_tarflows_are_refused_in_one_line(arguments, message):
    with pytest.raises(ValueError, match=message):
        cinn.build_tarflow(**arguments)


def test_images_of_another_size_are_refused():
    model = tiny_tarflow(n_classes=0)
    with pytest.raises(ValueError, match=r"x must be a batch of shape \(B, 1, 8, 8\), got \(2, 1, 4, 4\)"):
        model.log_prob(torch.rand(2, 1, 4, 4))  # refused at the model's boundary (Patchify fixes the token count)
