"""cinn: conditional invertible neural networks and Glow, with verified invertibility and exact bits/dim."""

from cinn.engine.checkpoint import load, load_trained
from cinn.likelihood import bits_per_dim, dequantize, quantize
from cinn.models import Flow, build_cinn, build_cinn_fc, build_glow, build_tarflow
from cinn.version import __version__

__all__ = ["Flow", "__version__", "bits_per_dim", "build_cinn", "build_cinn_fc", "build_glow", "build_tarflow",
           "dequantize", "load", "load_trained", "quantize"]
