"""benchmarks/colorize_skin_hue.py: the hue of ab inside marked regions, samples against truth."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.benchmark_scripts import load_script

skin = load_script("colorize_skin_hue")


def test_the_examples_hold():
    assert doctest.testmod(skin).failed == 0


def test_a_photo_is_near_its_own_hue_and_far_from_its_complement():
    pixels = np.zeros((1, 3, 4, 4), dtype=np.uint8)
    pixels[:, :, :2] = np.array([220, 160, 120], dtype=np.uint8)[None, :, None, None]  # skin, top half
    pixels[:, :, 2:] = np.array([60, 110, 220], dtype=np.uint8)[None, :, None, None]  # blue, bottom half
    rgb = torch.from_numpy(pixels)
    top, bottom = skin.region_mask([[0, 0, 4, 2]], 4, 4), skin.region_mask([[0, 2, 4, 4]], 4, 4)
    (skin_hue, _), (blue_hue, _) = skin.hue_and_chroma(rgb, top), skin.hue_and_chroma(rgb, bottom)
    assert 30 < skin_hue.item() < 80 and -120 < blue_hue.item() < -60
    assert skin.angle_between(skin_hue, blue_hue.item()).item() > 120


def test_the_script_reports_every_photo_and_model(tiny_colorize_run, tmp_path, capsys, monkeypatch):
    generator = np.random.default_rng(0)
    Image.fromarray(generator.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "face.png")
    (tmp_path / "regions.json").write_text(json.dumps({"photos": {"face.png": [[4, 4, 20, 20]]}}))
    monkeypatch.setattr("sys.argv", ["colorize_skin_hue.py", "--regions", str(tmp_path / "regions.json"),
                                     "--photos", str(tmp_path), "--checkpoints",
                                     str(tiny_colorize_run / "checkpoint.pt"), "--samples", "2", "--seeds", "0"])
    skin.main()
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("face.png: truth") and "near" in out[1]
    assert out[2].endswith("of the samples (mean over photos)")
    with pytest.raises(SystemExit):
        monkeypatch.setattr("sys.argv", ["colorize_skin_hue.py"])
        skin.main()
