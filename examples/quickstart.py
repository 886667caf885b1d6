import torch

from cinn import bits_per_dim, build_glow, dequantize, quantize

glow = build_glow((1, 28, 28), n_levels=2, steps_per_level=4, hidden_channels=64)
x = dequantize(quantize(torch.rand(16, 1, 28, 28), n_bits=8), n_bits=8)  # images in [0, 1]
print("bits/dim:", bits_per_dim(-glow.log_prob(x), num_dims=784).mean().item())  # 1st call inits ActNorm
z = glow.encode(x)  # standard-normal latents, one tensor per scale
print("round-trip error:", (glow.decode(z) - x).abs().max().item())
samples = glow.sample(8, temperature=0.7)  # (8, 1, 28, 28)
