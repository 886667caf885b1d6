"""Pages in the browser for trained models: what the ``serve`` command of every task shares.

A task builds its page from Gradio components (:meth:`cinn.task.Task.page`); :func:`serve` puts it on a local web
server. Gradio is an optional extra (``pip install -e ".[demo]"``) that nothing else in cinn imports: it is
imported here, inside functions, by :func:`open_gradio`.

The server is safe by default: it binds 127.0.0.1 unless told otherwise; uploads are bounded in bytes
(:data:`MAX_UPLOAD_BYTES`) and, once read, by the pixel and aspect limits of :func:`~cinn.data.open_image`;
requests wait in one queue of at most :data:`QUEUE_SIZE` and run :data:`CONCURRENCY` at a time, so memory stays
that of one request; uploads and results live in a temporary folder (:class:`Workspace`) that the server removes
when it stops. The page fetches nothing from elsewhere (Gradio's default theme ships its fonts) and sends no
analytics.

Example (what a handler does with an upload that is not an image):
    >>> import tempfile
    >>> fake = Path(tempfile.mkdtemp()) / "photo.png"
    >>> _ = fake.write_text("not an image")
    >>> answered(lambda: (uploaded_image(str(fake)), "read"), outputs=1)()
    (None, "cannot read image photo.png (cannot identify image file 'photo.png'); delete or replace the file")
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.transforms import functional as TF

from cinn.config import ConfigError
from cinn.data import DataError, open_image
from cinn.data.images import fit_square
from cinn.engine.train_config import MAX_SEED
from cinn.viz import save_grid

MAX_UPLOAD_BYTES = 100 * 2**20
"""The largest file a page accepts (a 100-megapixel JPEG is about 30 MB); larger uploads are refused by the
server before they are stored."""
CONCURRENCY = 1
"""Requests computed at once: one model in memory, one request's tensors beside it."""
QUEUE_SIZE = 16
"""Requests that may wait; the page tells a user beyond them that the queue is full."""
PAGE_IMAGE_SIDE = 112
"""Images smaller than this (pixels on the longer side) are shown enlarged on a page."""
CACHE_SECONDS = 3600
"""Uploads and results older than this are deleted from the server's temporary folder (checked as often)."""


class PageError(Exception):
    """What the page shows in its status line instead of a result: one sentence, what is wrong and what to do."""


@dataclass
class PageContext:
    """What a task's page is built with: the ``gradio`` module, the server's :class:`Workspace`, the checkpoint the
    page shows and a line that says what it holds (:meth:`cinn.task.Task.about`), and the seed the page starts
    with."""

    gradio: ModuleType
    workspace: Workspace
    checkpoint: Path
    about: str
    seed: int = 0


class Workspace:
    """The temporary folder of one server: Gradio's uploads and the results of every request; removed by
    :meth:`close` (and by the context manager's exit). The results of requests older than :data:`CACHE_SECONDS`
    are removed whenever a new request asks for a folder.

    Example:
        >>> with Workspace() as workspace:
        ...     first = workspace.request_folder()
        ...     os.utime(first, (0, 0))   # as if made in 1970
        ...     second = workspace.request_folder()
        ...     second.parent == workspace.root, first.exists()
        (True, False)
        >>> workspace.root.exists()
        False
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cinn-serve-"))

    def request_folder(self) -> Path:
        """A new empty folder for one request's results (the folders of requests older than
        :data:`CACHE_SECONDS` are removed first)."""
        cutoff = time.time() - CACHE_SECONDS
        for old in self.root.glob("request-*"):
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="request-", dir=self.root))

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_gradio(workspace: Workspace) -> ModuleType:
    """Gradio, set to keep its files in ``workspace`` and to send no analytics (it reads both settings from the
    environment when first imported), or a one-line :class:`ConfigError` saying how to install it."""
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.root)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise ConfigError('serve needs Gradio, an optional extra: pip install -e ".[demo]" in a checkout of '
                          'cinn') from None
    return gradio


def uploaded_image(path: str | None, channels: int = 3) -> Image.Image:
    """The uploaded file at ``path`` (a file in the server's workspace) as an 8-bit ``"RGB"`` (``channels`` 3) or
    ``"L"`` (1) image, upright; a :class:`PageError` naming the file as the user knows it when there is none, it is
    larger than :data:`MAX_UPLOAD_BYTES`, or :func:`~cinn.data.open_image` refuses it (not an image, damaged, more
    than :data:`~cinn.data.images.MAX_PIXELS` pixels, longer than :data:`~cinn.data.images.MAX_ASPECT_RATIO` times
    its width)."""
    if path is None:
        raise PageError("no photo yet: upload one (or pick an example)")
    file, name = Path(path), Path(path).name
    size = file.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise PageError(f"{name} is {size / 2**20:.0f} MB, more than the {MAX_UPLOAD_BYTES // 2**20} MB a page "
                        "accepts; upload a smaller file")
    try:
        return open_image(file, channels)
    except DataError as error:
        raise PageError(str(error).replace(str(file), name)) from None


def square_upload(path: str | None, shape: tuple[int, ...]) -> Tensor:
    """An uploaded image as a model of ``shape`` ``(C, S, S)`` sees its data: ``uint8 (C, S, S)``, grey (C = 1) or
    RGB (C = 3), resized so its shorter side is ``S`` and centre-cropped (a :class:`PageError` as
    :func:`uploaded_image`)."""
    channels, height, width = shape
    if height != width:
        raise PageError(f"this model takes {height}x{width} images; only square models take uploads")
    return TF.pil_to_tensor(fit_square(uploaded_image(path, channels), height))


def answered(handler: Callable[..., tuple[Any, ...]], outputs: int) -> Callable[..., tuple[Any, ...]]:
    """``handler`` as a page runs it: it returns its ``outputs`` results followed by the page's status line; a
    :class:`PageError` (or cinn's one-line :class:`~cinn.config.ConfigError` or :class:`~cinn.data.DataError`)
    instead leaves the results empty (None) with its message as the status line, and the server goes on serving.

    Example:
        >>> answered(lambda n: (n + 1, "added one"), outputs=1)(2)
        (3, 'added one')
    """

    def run(*inputs: Any) -> tuple[Any, ...]:
        try:
            return handler(*inputs)
        except (PageError, ConfigError, DataError) as error:
            return (*([None] * outputs), str(error))

    return run


def page_seed(value: float | None) -> int:
    """The seed a page's number field holds (a float, or None when cleared), checked: a :class:`PageError` unless
    it is a whole number from 0 to :data:`~cinn.engine.train_config.MAX_SEED`.

    Example:
        >>> page_seed(7.0)
        7
    """
    if value is None or value != int(value) or not 0 <= value <= MAX_SEED:
        raise PageError(f"the seed must be a whole number from 0 to {MAX_SEED}, got {value}")
    return int(value)


def held_out_index(value: float | None, count: int) -> int:
    """The test image a page's number field names (a float, or None when cleared), checked: a :class:`PageError`
    unless it is a whole number from 0 to ``count − 1``.

    Example:
        >>> held_out_index(3.0, count=10)
        3
    """
    if value is None or value != int(value) or not 0 <= value < count:
        raise PageError(f"a test image's number must be a whole number from 0 to {count - 1}")
    return int(value)


def page_grid(images: Tensor, path: Path, nrow: int) -> Path:
    """Images ``(N, C, H, W)`` in ``[0, 1]`` saved as one PNG grid at ``path`` for a page, each enlarged by a whole
    factor (nearest neighbour, so pixels stay sharp) until its longer side is at least :data:`PAGE_IMAGE_SIDE`.

    Example:
        >>> import tempfile, torch
        >>> grid = page_grid(torch.rand(2, 1, 28, 28), Path(tempfile.mkdtemp()) / "grid.png", nrow=2)
        >>> Image.open(grid).size  # two 112x112 images (28 pixels, enlarged 4 times) and 2-pixel borders
        (230, 116)
    """
    factor = max(1, math.ceil(PAGE_IMAGE_SIDE / max(images.shape[-2:])))
    return save_grid(F.interpolate(images.float(), scale_factor=factor, mode="nearest"), path, nrow)


def free_port(host: str) -> int:
    """A TCP port on ``host`` that no process listens on now (for ``serve --port 0``)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def serve(page: Any, host: str, port: int, description: str) -> None:
    """Serve the Gradio ``page`` at ``http://host:port`` (``port`` 0: a free one) until SIGINT (Ctrl-C) or
    SIGTERM, then stop the server. Prints ``serving DESCRIPTION at URL`` once the page answers, and ``stopped``
    at the end."""
    page.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    port = free_port(host) if port == 0 else port
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            _, url, _ = page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                                    max_file_size=MAX_UPLOAD_BYTES, footer_links=[], ssr_mode=False, pwa=False,
                                    mcp_server=False, enable_monitoring=False, show_error=False)
        except OSError as error:
            raise ConfigError(f"cannot serve at {host}:{port} ({str(error).splitlines()[0]}); pass another --port "
                              "(--port 0: any free one) or --host") from None
        print(f"serving {description} at {url.rstrip('/')} ({CONCURRENCY} request at a time, up to {QUEUE_SIZE} "
              "waiting; Ctrl-C stops)", flush=True)
        stop.wait()
    finally:
        page.close(verbose=False)
        for number, handler in previous.items():
            signal.signal(number, handler)
    print("stopped", flush=True)
