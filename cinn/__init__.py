"""cinn: conditional invertible neural networks and Glow, with verified invertibility and exact bits/dim."""

__version__ = "0.3.0"

from cinn.engine.checkpoint import load, load_trained
from cinn.likelihood import bits_per_dim, dequantize, quantize
from cinn.models import Flow, build_cinn, build_cinn_fc, build_glow

__all__ = ["Flow", "bits_per_dim", "build_cinn", "build_cinn_fc", "build_glow", "dequantize", "load",
           "load_trained", "quantize"]
