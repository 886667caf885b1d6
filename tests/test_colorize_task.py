"""``python -m tasks.colorize`` end to end: train (bundled photos and a folder), eval, colorize, the API."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cinn.cli import run_command
from cinn.colorization import load_colorizer
from cinn.config import load_config
from cinn.data import DataError
from cinn.engine import load_checkpoint, save_checkpoint
from tasks import colorize

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/colorize/tiny.yaml")


def colour_photo(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random colour photo, uint8 (H, W, 3)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 3, 3, generator=generator)
    pixels = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")[0]
    return (pixels.permute(1, 2, 0) * 255).round().byte().numpy()


def write_photo_folder(folder: Path, count: int, grey: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = Image.fromarray(colour_photo(40 + 3 * index, 50, seed=index))
        (image.convert("L") if grey else image).save(folder / f"photo_{index}.png")
    return folder


def write_rgb16_png(path: Path, pixels: np.ndarray) -> None:
    """A 48-bit RGB PNG (colour type 2, bit depth 16) from uint16 ``(H, W, 3)``; PIL cannot write one."""
    height, width, _ = pixels.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def write_every_format(folder: Path) -> dict[str, tuple[int, int]]:
    """One photo per format and mode colourisation must accept; returns file name → (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(colour_photo(30, 45, seed=9))
    files = {
        "rgb.jpg": rgb,
        "cmyk.jpg": rgb.convert("CMYK"),
        "rgba.png": rgb.convert("RGBA"),
        "palette.png": rgb.convert("P"),
        "grey.png": rgb.convert("L"),
        "grey16.png": Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257),
        "photo.webp": rgb,
        "photo.tiff": rgb,
    }
    for name, image in files.items():
        image.save(folder / name)
    write_rgb16_png(folder / "rgb16.png", colour_photo(30, 45, seed=9).astype(np.uint16) * 257)
    return {**{name: image.size for name, image in files.items()}, "rgb16.png": rgb.size}


@pytest.fixture(scope="module")
def trained_run(tiny_colorize_run) -> Path:
    """A tiny cINN trained on scikit-image's bundled photos, as `train` with no --data does."""
    return tiny_colorize_run


def test_train_on_the_bundled_photos_writes_the_run(trained_run):
    state = load_checkpoint(trained_run / "checkpoint.pt")
    assert state["task"] == "colorize" and state["step"] == 4
    assert state["conventions"]["ab_downsample"] == 2 and state["conventions"]["shorter_side"] == 32
    assert {"config.yaml", "metrics.csv", "learning_curve.png", "heldout.png", "samples"} <= {
        path.name for path in trained_run.iterdir()}


def test_default_config_file_is_the_no_argument_default():
    default = load_config(colorize.ColorizeConfig, ROOT / "configs/colorize/skimage.yaml")
    assert default == colorize.ColorizeConfig()


def test_eval_reports_nll_best_of_n_rmse_and_diversity(trained_run, capsys):
    assert colorize.main(["eval", "--checkpoint", str(trained_run / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "held-out photo(s)" in out and "bits per ab dimension" in out
    assert "best-of-3 RMSE of ab at T=0.8" in out and "predicting ab = 0" in out and "diversity" in out


def test_eval_on_a_folder(trained_run, tmp_path, capsys):
    folder = write_photo_folder(tmp_path / "held_out", 3)
    assert colorize.main(["eval", "--checkpoint", str(trained_run / "checkpoint.pt"), "--data", str(folder)]) == 0
    assert f"all 3 photos in {folder}" in capsys.readouterr().out


def tag_rows(out: str) -> dict[str, list[str]]:
    """The per-tag table ``eval`` prints: tag → its cells."""
    rows = [line.strip("|").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[1:]}


def test_eval_judges_the_photos_of_a_list_per_tag(trained_run, tmp_path, capsys):
    write_photo_folder(tmp_path / "a", 3)
    write_photo_folder(tmp_path / "b", 2)
    photo_list = tmp_path / "lists" / "held_out.csv"  # folders relative to the list's own folder
    photo_list.parent.mkdir()
    photo_list.write_text("folder,photo,tag\n../a,photo_0.png,people\n../b,photo_1.png,animals\n"
                          "../a,photo_2.png,people\n")
    assert colorize.main(["eval", "--checkpoint", str(trained_run / "checkpoint.pt"), "--data",
                          str(photo_list)]) == 0
    out = capsys.readouterr().out
    assert f"the 3 photos listed in {photo_list}" in out
    rows = tag_rows(out)
    assert list(rows) == ["animals", "people", "all"]
    assert [row[0] for row in rows.values()] == ["1", "2", "3"]
    overall = float(out.split("uniform dequantisation): ")[1].split()[0])
    assert float(rows["all"][1].split()[0]) == pytest.approx(overall, abs=0.006)
    people = [float(rows["people"][1].split()[0]), float(rows["animals"][1])]
    assert (2 * people[0] + people[1]) / 3 == pytest.approx(overall, abs=0.01)  # the groups split the photos


def test_eval_on_a_folder_of_sub_folders_judges_each_sub_folder(trained_run, tmp_path, capsys):
    write_photo_folder(tmp_path / "held_out" / "urban", 2)
    write_photo_folder(tmp_path / "held_out" / "landscape", 1)
    assert colorize.main(["eval", "--checkpoint", str(trained_run / "checkpoint.pt"), "--data",
                          str(tmp_path / "held_out")]) == 0
    rows = tag_rows(capsys.readouterr().out)
    assert list(rows) == ["landscape", "urban", "all"] and rows["urban"][0] == "2"


def test_table_draws_the_photos_of_the_tags_asked_for(trained_run, tmp_path, capsys):
    write_photo_folder(tmp_path / "photos" / "people", 2)
    write_photo_folder(tmp_path / "photos" / "urban", 3)
    out = tmp_path / "table.png"
    arguments = ["table", "--checkpoint", str(trained_run / "checkpoint.pt"), "--input", str(tmp_path / "photos"),
                 "--samples", "1", "--out", str(out)]
    assert colorize.main([*arguments, "--tags", "people"]) == 0
    assert "2 of all 5 photos" in capsys.readouterr().out and out.is_file()
    with pytest.raises(DataError, match="its tags: people, urban"):
        colorize.main([*arguments, "--tags", "animals"])


@pytest.mark.parametrize("text, message", [
    ("folder,photo\n.,photo_0.png\n", "it needs folder, photo, tag"),
    ("folder,photo,tag\n.,photo_9.png,people\n", "missing or not image files"),
    ("folder,photo,tag\n.,photo_0.png,\n", "empty fields on line(s) 2"),
    ("folder,photo,tag\n.,photo_0.png,a\n.,photo_0.png,b\n", "names a photo twice"),
], ids=["columns", "missing_photo", "empty_tag", "twice"])
def test_a_bad_photo_list_is_refused_in_one_line(trained_run, tmp_path, text, message):
    write_photo_folder(tmp_path, 1)
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(DataError, match=re.escape(message)):
        colorize.main(["eval", "--checkpoint", str(trained_run / "checkpoint.pt"), "--data",
                       str(tmp_path / "list.csv")])


def test_colorize_accepts_every_format_and_keeps_the_size(trained_run, tmp_path):
    sizes = write_every_format(tmp_path / "in")
    out = tmp_path / "out"
    assert colorize.main(["colorize", "--checkpoint", str(trained_run / "checkpoint.pt"), "--input",
                          str(tmp_path / "in"), "--samples", "2", "--temperature", "0.8", "--out", str(out)]) == 0
    for name, size in sizes.items():
        stem = name.replace(".", "_")
        for index in (1, 2):
            with Image.open(out / f"{stem}_sample{index}.png") as written:
                assert written.size == size and written.mode == "RGB"
        assert (out / f"{stem}_contact.png").is_file()


def test_python_api_colourises_a_photo(trained_run):
    colorizer = load_colorizer(trained_run / "checkpoint.pt")
    photo = torch.from_numpy(colour_photo(27, 41, seed=3)).permute(2, 0, 1).contiguous()
    colourings = colorizer.colorize(photo, n_samples=3, temperature=0.8)
    assert colourings.shape == (3, 3, 27, 41) and colourings.dtype == torch.uint8


@pytest.mark.parametrize("architecture", ["cinn", "regressor"])
def test_train_on_a_folder_with_a_validation_split(tmp_path, architecture, capsys):
    folder = write_photo_folder(tmp_path / "photos", 8)
    run_dir = tmp_path / "run"
    assert colorize.main(["train", "--config", TINY, "--data", str(folder), "--run_dir", str(run_dir),
                          "--data.val_fraction=0.25", f"--model.architecture={architecture}"]) == 0
    assert colorize.main(["eval", "--checkpoint", str(run_dir / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "the run's 2 held-out photo(s)" in out
    if architecture == "regressor":
        assert "sample diversity: 0.00" in out  # deterministic: every sample is the prediction


def test_grey_photos_in_a_training_folder_are_skipped_and_counted(tmp_path, capsys):
    folder = write_photo_folder(tmp_path / "photos", 6)
    write_photo_folder(tmp_path / "photos" / "scans", 2, grey=True)
    assert colorize.main(["train", "--config", TINY, "--data", str(folder), "--run_dir", str(tmp_path / "run"),
                          "--data.val_fraction=0.25", "--train.steps=2"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 of the 8 training photos as greyscale" in out
    assert "training on 4 photos, 2 held out for validation" in out


def run_and_fail(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_command(colorize.main, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_greyscale_training_photos_are_refused(tmp_path, capsys):
    folder = write_photo_folder(tmp_path / "grey", 4, grey=True)
    args = ["train", "--config", TINY, "--data", str(folder), "--run_dir", str(tmp_path / "r")]
    err = run_and_fail(args, capsys)
    assert "4 of the 4 training photos are greyscale" in err


@pytest.mark.parametrize("override, message", [
    ("--data.crop_size=12", "must be a multiple of 2^model.n_levels · data.ab_downsample = 8"),
    ("--data.ab_downsample=3", "power of two"),
    ("--data.holdout=lena", "data.holdout must be one of"),
    ("--data.crop_size=64", "at most data.image_size"),
])
def test_impossible_settings_give_one_clear_line(tmp_path, override, message, capsys):
    err = run_and_fail(["train", "--config", TINY, "--run_dir", str(tmp_path / "r"), override], capsys)
    assert message in err


def test_missing_inputs_give_one_clear_line(trained_run, tmp_path, capsys):
    checkpoint = str(trained_run / "checkpoint.pt")
    err = run_and_fail(["train", "--config", TINY, "--data", str(tmp_path / "nowhere")], capsys)
    assert "does not exist" in err
    out = tmp_path / "out"
    err = run_and_fail(["colorize", "--checkpoint", checkpoint, "--input", str(tmp_path / "no.jpg"),
                        "--out", str(out)], capsys)
    assert "does not exist" in err and not out.exists()  # nothing written for a failed call
    (tmp_path / "empty").mkdir()
    err = run_and_fail(["colorize", "--checkpoint", checkpoint, "--input", str(tmp_path / "empty")], capsys)
    assert "contains no photos" in err


def test_a_checkpoint_of_another_task_is_named(tmp_path, capsys):
    save_checkpoint({"task": "glow", "config": {}}, tmp_path / "glow.pt")
    err = run_and_fail(["colorize", "--checkpoint", str(tmp_path / "glow.pt"), "--input", str(tmp_path)], capsys)
    assert "checkpoint of the 'glow' task, not 'colorize'" in err


def test_config_overrides_are_refused_outside_train(trained_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        colorize.main(["eval", "--checkpoint", str(trained_run / "checkpoint.pt"), "--train.lr=1"])
    assert exit_info.value.code == 2
    assert "unrecognised arguments: --train.lr=1" in capsys.readouterr().err


def test_the_shipped_pretrained_colouriser_loads_safely_and_colourises_a_photo(tmp_path, capsys):
    from cinn.colorization import PRETRAINED_COLORIZER

    state = torch.load(PRETRAINED_COLORIZER, weights_only=True)
    assert state["task"] == "colorize" and "optimizer" not in state
    assert PRETRAINED_COLORIZER.stat().st_size < 20 * 2**20
    photo = torch.from_numpy(colour_photo(40, 56, seed=1)).permute(2, 0, 1).contiguous()
    colourings = load_colorizer().colorize(photo, n_samples=2, temperature=0.8)
    assert colourings.shape == (2, 3, 40, 56) and colourings.dtype == torch.uint8
    folder = write_photo_folder(tmp_path / "photos", 1)
    out = tmp_path / "out"
    assert colorize.main(["colorize", "--input", str(folder), "--samples", "2", "--out", str(out)]) == 0
    assert (out / "photo_0_png_sample2.png").is_file()  # no --checkpoint: the pretrained model
    (tmp_path / "large").mkdir()
    Image.fromarray(colour_photo(80, 96, seed=2)).save(tmp_path / "large" / "photo.png")
    assert colorize.main(["table", "--input", str(tmp_path / "large"), "--samples", "1",
                          "--temperatures", "0", "1", "--out", str(out / "table.png")]) == 0
    assert (out / "table.png").is_file()
