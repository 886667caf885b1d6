"""``serve``: each task's page in a real browser (Debian's Chromium, driven by Playwright), started as a user
starts it, on a free local port with a tiny model. The tests that need the browser skip, saying why, when Chromium
or Playwright is missing; ``.ci/run`` installs both, so in CI they run."""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from benchmark_scripts import load_script
from PIL import Image

from cinn.web import CONCURRENCY, QUEUE_SIZE

pages = load_script("serve_pages")
ROOT = Path(__file__).resolve().parents[1]
HAVE_GRADIO = importlib.util.find_spec("gradio") is not None
needs_gradio = pytest.mark.skipif(not HAVE_GRADIO, reason='Gradio is not installed (pip install -e ".[demo]")')
needs_browser = pytest.mark.skipif(
    not HAVE_GRADIO or importlib.util.find_spec("playwright") is None or pages.chromium_path() is None,
    reason='needs Gradio, Playwright and Chromium (pip install -e ".[dev,demo]"; apt-get install -y chromium)')


def photo(path: Path, width: int = 96, height: int = 64) -> Path:
    """A colour photo with structure (a gradient in each channel)."""
    gradient = Image.linear_gradient("L").resize((width, height))
    Image.merge("RGB", (gradient, gradient.rotate(90).resize((width, height)), gradient.transpose(0))).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` pixels (a few bytes on disk: a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def chromium():
    with pages.browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict[str, Path]:
    """The server's TMPDIR (its workspace goes there) and its working folder, both empty at the start."""
    return {"tmp": tmp_path_factory.mktemp("server_tmp"), "cwd": tmp_path_factory.mktemp("server_cwd")}


@pytest.fixture(scope="module")
def colorize_server(tiny_colorize_run, scratch):
    with pages.served("colorize", tiny_colorize_run / "checkpoint.pt", env={"TMPDIR": str(scratch["tmp"])},
                      cwd=scratch["cwd"]) as server:
        yield server


@needs_browser
def test_a_photo_is_colourised_at_full_resolution_with_nothing_fetched_from_elsewhere(colorize_server, chromium,
                                                                                    tmp_path):
    outside: list[str] = []
    page = pages.open_page(chromium, colorize_server.url, outside)
    about = page.inner_text("body")  # says which model
    assert "checkpoint.pt" in about and "trained on scikit-image's bundled photos" in about
    pages.colourise(page, photo(tmp_path / "street.png", 96, 64), samples=3)
    assert pages.loaded_images(page, "colourings", 3) == [(96, 64)] * 3  # the photo's own size, downloadable
    assert pages.loaded_images(page, "grey", 1) == [(96, 64)]
    assert "3 colourings of street.png (96x64)" in page.inner_text("#status")
    assert outside == []  # no fonts, scripts or analytics from elsewhere


@needs_browser
def test_each_bad_upload_gets_its_message_and_the_next_good_upload_works(colorize_server, chromium, tmp_path):
    page = pages.open_page(chromium, colorize_server.url)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    tiny = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tiny)
    bomb = png_header_only(tmp_path / "bomb.png", 20000, 15000)  # 300 megapixels
    expected = {text: "cannot read image notes.png", tiny: "the photo is 1x1 pixels",
                bomb: "bomb.png has more than the 178956970 pixels"}
    for index, (file, message) in enumerate(expected.items()):
        pages.upload(page, "photo", file)
        status = pages.status_after(page, "colourise", file.name)
        assert message in status and "\n" not in status.strip(), status
        good = photo(tmp_path / f"good{index}.png")
        pages.upload(page, "photo", good)
        assert f"8 colourings of {good.name}" in pages.status_after(page, "colourise", good.name)
        assert pages.loaded_images(page, "colourings", 8) == [(96, 64)] * 8


@needs_browser
def test_two_uploads_at_once_are_both_answered(colorize_server, chromium, tmp_path):
    tabs = [pages.open_page(chromium, colorize_server.url) for _ in range(2)]
    files = [photo(tmp_path / f"first{k}.png", 64 + 16 * k, 64) for k in range(2)]
    for tab, file in zip(tabs, files, strict=True):
        pages.upload(tab, "photo", file)
    for tab in tabs:  # both requests are sent before either is answered
        tab.click("#colourise")
    for tab, file in zip(tabs, files, strict=True):
        tab.wait_for_function("name => document.querySelector('#status').innerText.includes(name)", arg=file.name,
                              timeout=pages.ANSWER_MS, polling=pages.POLL_MS)
        assert pages.loaded_images(tab, "colourings", 8) == [(64 + 16 * files.index(file), 64)] * 8


@needs_browser
def test_the_glow_page_samples_interpolates_and_moves_along_a_class_direction(tiny_glow_run, mnist_data_root,
                                                                             chromium, tmp_path):
    with pages.served("glow", tiny_glow_run / "checkpoint.pt") as server:
        page = pages.open_page(chromium, server.url)
        assert "16 samples at T=0.7" in pages.status_after(page, "sample", "samples at")
        assert pages.loaded_images(page, "samples", 1)
        page.get_by_role("tab", name="Interpolate").click()
        status = pages.status_after(page, "interpolate", "images from")
        assert "8 images from test image 0 to test image 1" in status
        pages.upload(page, "first_image", photo(tmp_path / "mine.png", 40, 30))  # any photo, made 28x28 grey
        assert "from mine.png to test image 1" in pages.status_after(page, "interpolate", "mine.png")
        assert pages.loaded_images(page, "interpolation", 1) == [(8 * 112 + 18, 116)]
        page.get_by_role("tab", name="Attribute").click()
        assert "reconstructed (left) and moved by 1" in pages.status_after(page, "move", "moved by")
        assert pages.loaded_images(page, "moved", 1)


@needs_browser
def test_the_class_conditional_page_samples_chosen_classes_and_transfers_an_upload(tiny_mnist_run, chromium,
                                                                                  tmp_path):
    digit = tmp_path / "seven.png"
    Image.new("L", (40, 40), 255).save(digit)
    with pages.served("mnist", tiny_mnist_run / "checkpoint.pt") as server:
        page = pages.open_page(chromium, server.url)
        assert "8 samples of each of 10 classes" in pages.status_after(page, "sample", "samples of each")
        page.get_by_role("tab", name="Style transfer").click()
        pages.upload(page, "digit", digit)
        assert "decoded under each of the 10 classes" in pages.status_after(page, "transfer", "the uploaded image")
        assert pages.loaded_images(page, "transferred", 1)


@needs_browser
def test_the_server_stops_cleanly_and_leaves_nothing_behind(tiny_colorize_run, scratch, chromium, tmp_path):
    checkpoint = tiny_colorize_run / "checkpoint.pt"
    before = sorted(path.name for path in tiny_colorize_run.iterdir())
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir(), cwd.mkdir()
    with pages.served("colorize", checkpoint, env={"TMPDIR": str(tmp)}, cwd=cwd) as server:
        page = pages.open_page(chromium, server.url)
        pages.colourise(page, photo(tmp_path / "kept.png"), samples=2)
        assert [path.name.startswith("cinn-serve-") for path in tmp.iterdir()] == [True]
        assert server.stop() == 0
    assert server.output[-1] == "stopped" and "Traceback" not in "\n".join(server.output)
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == []  # uploads and results went with it
    assert sorted(path.name for path in tiny_colorize_run.iterdir()) == before


@needs_gradio
def test_the_server_binds_this_machine_only_unless_told(tiny_colorize_run):
    from tasks import colorize

    args = colorize.ColorizeTask().parser().parse_args(["serve", "--checkpoint", "x.pt"])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    with pages.served("colorize", tiny_colorize_run / "checkpoint.pt") as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert f"({CONCURRENCY} request at a time, up to {QUEUE_SIZE} waiting" in server.output[-1]


@needs_gradio
def test_a_port_in_use_is_one_line(tiny_colorize_run):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "tasks.colorize", "serve", "--checkpoint",
                                 str(tiny_colorize_run / "checkpoint.pt"), "--port", str(port)],
                                capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"cannot serve at 127.0.0.1:{port}" in result.stderr and "--port 0" in result.stderr


def test_without_gradio_serve_says_how_to_install_it(tiny_colorize_run):
    hide_gradio = ("import sys; sys.modules['gradio'] = None; from tasks import colorize; "
                   "colorize.ColorizeTask().run(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", hide_gradio, "serve", "--checkpoint",
                             str(tiny_colorize_run / "checkpoint.pt")], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert 'pip install -e ".[demo]"' in result.stderr


def test_nothing_but_serve_imports_gradio():
    code = ("import sys; import cinn, cinn.web, cinn.task; from tasks import colorize, glow, mnist; "
            "print('gradio' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"
