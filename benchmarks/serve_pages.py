"""The pages of ``serve`` in a real browser (Debian's Chromium driven by Playwright): screenshots of each task's
page, and the time from an upload to the full gallery on the colourisation page.

    python benchmarks/serve_pages.py --screenshots docs/images                      # the shipped colouriser's page
    python benchmarks/serve_pages.py --screenshots docs/images --glow runs/glow_fashion_mnist/checkpoint.pt \\
        --mnist runs/mnist_conv/checkpoint.pt                                     # and the Glow and cINN pages
    python benchmarks/serve_pages.py --latency PHOTO --repeats 5         # upload to gallery, 8 colourings

Needs the demo extra and the dev extra (Gradio, Playwright) and Chromium (``apt-get install -y chromium``); no
browser is downloaded. The latency is measured in the browser: from the upload of the photo through the choice of
the number of colourings and the click on "Colourise" until every colouring of the gallery has loaded at full
resolution. ``tests/test_serve.py`` drives the pages with the helpers of this file.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START_SECONDS = 180  # the most a server may take to start (importing Gradio, opening the model)
ANSWER_MS = 120_000  # the most a page may take to answer one request
POLL_MS = 100  # how often a wait looks at the page (the default, per animation frame, stalls in background tabs)


def chromium_path() -> str | None:
    """The system's Chromium (Debian's package installs /usr/bin/chromium), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Server:
    """A ``python -m tasks.TASK serve`` process and the address its page is served at."""

    process: subprocess.Popen
    url: str
    output: list[str] = field(default_factory=list)

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C or a service manager stops it; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        self.output.extend(self.process.stdout.read().splitlines())
        return self.process.wait(timeout=60)


@contextmanager
def served(task: str, checkpoint: Path | None, *, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> Iterator[Server]:
    """``python -m tasks.TASK serve --port 0`` (with ``--checkpoint`` unless None) running until the block ends;
    the block gets the :class:`Server` once its page answers."""
    command = [sys.executable, "-m", f"tasks.{task}", "serve", "--port", "0"]
    if checkpoint is not None:
        command += ["--checkpoint", str(checkpoint)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                               env=environment)
    server = Server(process, "")
    try:
        server.url = wait_for_address(server)
        yield server
    finally:
        if process.poll() is None:
            server.stop()


def wait_for_address(server: Server) -> str:
    """The address the server prints once it serves (``serving ... at http://...``); its output so far in the
    error if it exits or stays silent for :data:`START_SECONDS`."""
    deadline = time.monotonic() + START_SECONDS
    with selectors.DefaultSelector() as selector:
        selector.register(server.process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                break
            line = server.process.stdout.readline()
            if not line:
                break
            server.output.append(line.rstrip("\n"))
            found = re.search(r"^serving .* at (http://\S+)", line)
            if found:
                return found.group(1)
    raise RuntimeError("the server did not start:\n" + "\n".join(server.output))


@contextmanager
def browser() -> Iterator[Any]:
    """Headless Chromium (the system's) under Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        arguments = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root without it
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=arguments)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(chromium: Any, url: str, outside: list[str] | None = None) -> Any:
    """A new tab at ``url``; every request it makes to another address is appended to ``outside``."""
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    if outside is not None:
        page.on("request", lambda request: None if request.url.startswith((url, "data:", "blob:"))
                else outside.append(request.url))
    page.goto(url, wait_until="networkidle")  # Gradio builds the page in the browser from what it fetches first
    page.wait_for_selector("#status", state="attached")
    return page


def upload(page: Any, field_id: str, file: Path) -> None:
    """Put ``file`` into the upload field ``#field_id`` (emptied first, :func:`empty_field`); wait until it shows
    its name."""
    empty_field(page, field_id)
    page.set_input_files(f"#{field_id} input[type=file]", str(file))
    # the field may show the name's stem and extension on two lines ("notes\n.png")
    shown = "([id, name]) => document.getElementById(id).innerText.replace(/\\s+/g, '').includes(name)"
    page.wait_for_function(shown, arg=[field_id, file.name.replace(" ", "")], timeout=ANSWER_MS, polling=POLL_MS)


def empty_field(page: Any, field_id: str) -> None:
    """A field that holds a file already is emptied by reloading the page (the server keeps what it computed; the
    page starts afresh)."""
    if page.locator(f"#{field_id} button[aria-label=Clear]").count():
        page.reload(wait_until="networkidle")
        page.wait_for_selector(f"#{field_id} input[type=file]", state="attached")


def status_after(page: Any, button_id: str, expected: str) -> str:
    """Click ``#button_id`` and wait until the status line holds ``expected``; the status line."""
    page.click(f"#{button_id}")
    page.wait_for_function("text => document.querySelector('#status').innerText.includes(text)", arg=expected,
                           timeout=ANSWER_MS, polling=POLL_MS)
    return page.inner_text("#status")


def loaded_images(page: Any, element_id: str, count: int) -> list[tuple[int, int]]:
    """Wait until ``#element_id`` shows ``count`` images, all loaded; their natural sizes (width, height)."""
    script = ("([id, n]) => { const images = [...document.querySelectorAll(`#${id} img`)];"
              " return images.length === n && images.every(image => image.complete && image.naturalWidth > 0); }")
    page.wait_for_function(script, arg=[element_id, count], timeout=ANSWER_MS, polling=POLL_MS)
    sizes = ("id => [...document.querySelectorAll(`#${id} img`)]"
             ".map(image => [image.naturalWidth, image.naturalHeight])")
    return [tuple(size) for size in page.evaluate(sizes, element_id)]


def colourise(page: Any, photo: Path, samples: int) -> float:
    """Seconds from the upload of ``photo`` to the loaded gallery of ``samples`` colourings: the upload, the choice
    of ``samples``, the click on "Colourise", the colourings and their PNGs in the browser."""
    empty_field(page, "photo")
    start = time.perf_counter()
    upload(page, "photo", photo)
    page.fill("#samples input[type=number]", str(samples))
    page.press("#samples input[type=number]", "Enter")
    status_after(page, "colourise", photo.name)
    loaded_images(page, "colourings", samples)
    return time.perf_counter() - start


def screenshots(folder: Path, checkpoints: dict[str, Path | None]) -> None:
    """One screenshot per task's page, after one request, as ``folder/serve_TASK.png``."""
    from PIL import Image
    from skimage import data

    with browser() as chromium:
        for task, checkpoint in checkpoints.items():
            with served(task, checkpoint) as server:
                page = open_page(chromium, server.url)
                if task == "colorize":
                    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / "coffee.jpg"
                    Image.fromarray(data.coffee()).convert("L").save(scratch)
                    colourise(page, scratch, 8)
                elif task == "glow":
                    status_after(page, "sample", "samples at")
                    loaded_images(page, "samples", 1)
                else:
                    status_after(page, "sample", "samples of each")
                    loaded_images(page, "samples", 1)
                page.screenshot(path=str(folder / f"serve_{task}.png"), full_page=True)
                shown = checkpoint or "the shipped model"
                print(f"{folder / f'serve_{task}.png'}: the page of {server.url} ({shown})")


def latency(photo: Path, repeats: int, samples: int) -> list[float]:
    """Seconds from click to loaded gallery for ``photo`` on the shipped colouriser's page, ``repeats`` times after
    one warm-up (each upload under a new name, so nothing is cached)."""
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    times = []
    with browser() as chromium, served("colorize", None) as server:
        page = open_page(chromium, server.url)
        for attempt in range(repeats + 1):
            copy = scratch / f"upload{attempt}{photo.suffix}"
            shutil.copy(photo, copy)
            seconds = colourise(page, copy, samples)
            print(f"{'warm-up' if attempt == 0 else f'run {attempt}'}: {seconds:.2f} s; "
                  f"{page.inner_text('#status')}")
            if attempt:
                times.append(seconds)
            copy.unlink()
    return times


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenshots", type=Path, help="folder for serve_TASK.png")
    parser.add_argument("--glow", type=Path, help="a tasks.glow checkpoint to show")
    parser.add_argument("--mnist", type=Path, help="a tasks.mnist checkpoint to show")
    parser.add_argument("--latency", type=Path, metavar="PHOTO", help="time upload to gallery with this photo")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    if chromium_path() is None:
        parser.error("Chromium is not installed: apt-get install -y chromium")
    if args.screenshots is not None:
        args.screenshots.mkdir(parents=True, exist_ok=True)
        checkpoints = {"colorize": None, "glow": args.glow, "mnist": args.mnist}
        screenshots(args.screenshots, {task: path for task, path in checkpoints.items()
                                       if task == "colorize" or path is not None})
    if args.latency is not None:
        times = latency(args.latency, args.repeats, args.samples)
        print(f"upload to gallery, {args.samples} colourings: median {statistics.median(times):.2f} s, "
              f"min {min(times):.2f}, max {max(times):.2f} over {len(times)} runs")


if __name__ == "__main__":
    main()
