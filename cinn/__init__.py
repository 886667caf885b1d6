"""cinn: conditional invertible neural networks and Glow, with verified invertibility and exact bits/dim."""

from cinn.likelihood import bits_per_dim, dequantize, quantize
from cinn.models import Flow, build_cinn, build_cinn_fc, build_glow

__all__ = ["Flow", "bits_per_dim", "build_cinn", "build_cinn_fc", "build_glow", "dequantize", "quantize"]
__version__ = "0.1.0"
