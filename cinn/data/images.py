"""Any image file PIL reads → an upright 8-bit RGB or grey PIL image, and the resize-and-crop to a square."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from cinn.data.errors import DataError

# PIL modes that hold more than 8 bits per pixel; PIL's own conversion to "L" clips them at 255.
_WIDE_INTEGER_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def _to_8bit(image: Image.Image, channels: int) -> Image.Image:
    """``image`` as 8-bit ``"RGB"`` (``channels`` 3) or ``"L"`` (1); alpha is dropped. Float pixels (mode ``F``,
    such as a 32-bit TIFF) keep their brightness: values in [0, 1] are scaled by 255, values in [0, 255] kept;
    others are a :class:`ValueError` (their scale cannot be known).

    Example:
        >>> _to_8bit(Image.new("F", (2, 2), 0.5), 1).getpixel((0, 0))
        128
    """
    if image.mode == "F":
        image = Image.fromarray(_float_to_8bit(np.asarray(image, dtype=np.float64)))
    elif image.mode in _WIDE_INTEGER_MODES:
        # 16-bit values scale to 8 bits by v·255/65535, rounded (65535 → 255, 32768 → 128).
        wide = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    elif image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")  # PIL's supported route for palette/keyed transparency
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def _float_to_8bit(values: np.ndarray) -> np.ndarray:
    """Float pixels as ``uint8``: ``[0, 1]`` scaled by 255, ``[0, 255]`` as they are, rounded."""
    if values.size and not np.isfinite(values).all():
        raise ValueError("its float pixels include NaN or infinity")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise ValueError(f"its float pixels run from {low:g} to {high:g}, neither within [0, 1] nor [0, 255]")
    scale = 255.0 if high <= 1 else 1.0
    return np.rint(values * scale).astype(np.uint8)


MAX_ASPECT_RATIO = 10
"""The longer side of an image may be at most this many times its shorter side: the model sees an image at a fixed
shorter side, so a thin strip (1x20000 pixels, a few hundred bytes as a PNG) would otherwise become gigapixels."""
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
"""The most pixels an image may have (~179 Mpx, PIL's decompression-bomb limit)."""


def open_image(path: Path | str, channels: int = 3) -> Image.Image:
    """The image file at ``path``, upright (EXIF orientation applied), as 8-bit ``"RGB"`` (``channels`` 3)
    or ``"L"`` (1), from any mode PIL reads (16-bit scaled, palette and CMYK converted, alpha dropped).

    Raises :class:`DataError` naming the file when it is missing, truncated or not an image, has more than
    :data:`MAX_PIXELS` pixels or is longer than :data:`MAX_ASPECT_RATIO` times its width (checked before decoding).

    Example (a 16-bit grey PNG, scaled rather than clipped):
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "grey16.png"
        >>> Image.new("I;16", (4, 3), 32768).save(path)
        >>> image = open_image(path); image.mode, image.getpixel((0, 0))
        ('RGB', (128, 128, 128))
    """
    path = Path(path)
    try:
        # Photos up to PIL's hard limit (~179 Mpx) are wanted here; beyond it PIL raises, and so do we.
        with warnings.catch_warnings(), Image.open(path) as opened:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            require_plausible_shape(path, *opened.size)
            return _to_8bit(ImageOps.exif_transpose(opened), channels)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist; check the path") from None
    except Image.DecompressionBombError:
        raise DataError(f"image {path} has more than the {MAX_PIXELS} pixels an image may have (PIL's "
                        "decompression-bomb limit); downscale it or remove it") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"cannot read image {path} ({error}); delete or replace the file") from error


def require_plausible_shape(path: Path, width: int, height: int) -> None:
    """An image whose longer side exceeds :data:`MAX_ASPECT_RATIO` times its shorter side is a :class:`DataError`.

    Example:
        >>> require_plausible_shape(Path("strip.png"), 20000, 1)
        Traceback (most recent call last):
        cinn.data.errors.DataError: image strip.png is 20000x1 pixels, its longer side more than 10 times its \
shorter side (the most an image may have); crop it or remove it
    """
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise DataError(f"image {path} is {width}x{height} pixels, its longer side more than {MAX_ASPECT_RATIO} "
                        "times its shorter side (the most an image may have); crop it or remove it")


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """``image`` resized so its shorter side is ``size`` (bicubic, antialiased), then centre-cropped to
    ``size × size``.

    Example:
        >>> fit_square(Image.new("RGB", (60, 40)), 32).size
        (32, 32)
    """
    image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(image, [size, size])
