"""Model builders and the model interface (:class:`Flow`)."""

from cinn.models.cinn import build_cinn, build_cinn_fc
from cinn.models.condition import ImageConditionPyramid, LabelMaps, OneHot
from cinn.models.dequantization import (
    VariationalDequantizer,
    VariationallyDequantizedFlow,
    build_variationally_dequantized,
)
from cinn.models.flow import Flow, standard_normal_log_prob
from cinn.models.glow import build_glow
from cinn.models.inverted_backprop import InvertingBackprop, with_backprop
from cinn.models.regressor import GaussianRegressor, UpsamplingHead, build_regressor
from cinn.models.tarflow import build_tarflow

__all__ = [
    "Flow",
    "GaussianRegressor",
    "ImageConditionPyramid",
    "InvertingBackprop",
    "LabelMaps",
    "OneHot",
    "UpsamplingHead",
    "VariationalDequantizer",
    "VariationallyDequantizedFlow",
    "build_cinn",
    "build_cinn_fc",
    "build_glow",
    "build_regressor",
    "build_tarflow",
    "build_variationally_dequantized",
    "standard_normal_log_prob",
    "with_backprop",
]
