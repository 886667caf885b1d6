r"""Colourisation with a conditional model of ab given L: the training objective, metrics, and the API.

A model here is anything with ``log_prob(ab_n, L_n)`` and ``sample(n, L_n, temperature, generator,
spatial_size)`` in the network units of :mod:`cinn.color` — a cINN (:func:`~cinn.models.build_cinn`)
or the deterministic :class:`~cinn.models.GaussianRegressor` baseline. Both are fully convolutional,
so they colourise photos of any aspect ratio at the scale they were trained at.

Modules: :mod:`~cinn.colorization.objective` (``LabColorization``), :mod:`~cinn.colorization.metrics`
(best-of-n RMSE, diversity), :mod:`~cinn.colorization.full_resolution` (working size, strip-wise L and
Lab → RGB), :mod:`~cinn.colorization.colorizer` (``Colorizer``, ``ColorModel``),
:mod:`~cinn.colorization.model` (model spec, data conventions, checkpoint loader),
:mod:`~cinn.colorization.inputs` (photos to colourise, colour check of training photos).
"""

from cinn.colorization.colorizer import MAX_SAMPLES, MIN_PHOTO_SIDE, Colorizer, ColorModel
from cinn.colorization.full_resolution import (
    STRIP_PIXELS,
    grey_version,
    join_lightness,
    lightness_of,
    resize_rows,
    working_size,
)
from cinn.colorization.inputs import colour_photos, photo_paths
from cinn.colorization.metrics import (
    SampleMetrics,
    colourfulness,
    paper_best_of_n_error,
    rmse_summary,
    sample_metrics,
    tag_table,
)
from cinn.colorization.model import (
    PRETRAINED_COLORIZER,
    build_colorization_model,
    colorization_model_spec,
    colorizer_for,
    colour_conventions,
    load_colorizer,
    size_multiple,
)
from cinn.colorization.objective import LabColorization, downsample_ab

__all__ = [
    "MAX_SAMPLES",
    "MIN_PHOTO_SIDE",
    "PRETRAINED_COLORIZER",
    "STRIP_PIXELS",
    "ColorModel",
    "Colorizer",
    "LabColorization",
    "SampleMetrics",
    "build_colorization_model",
    "colorization_model_spec",
    "colorizer_for",
    "colour_conventions",
    "colour_photos",
    "colourfulness",
    "downsample_ab",
    "grey_version",
    "join_lightness",
    "lightness_of",
    "load_colorizer",
    "paper_best_of_n_error",
    "photo_paths",
    "resize_rows",
    "rmse_summary",
    "sample_metrics",
    "size_multiple",
    "tag_table",
    "working_size",
]
