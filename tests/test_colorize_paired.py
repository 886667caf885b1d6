"""benchmarks/colorize_paired.py: NLL and best-of-N compared photo by photo, per tag."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.benchmark_scripts import load_script

paired = load_script("colorize_paired")


def test_a_model_against_itself_differs_by_nothing_on_every_tag(tiny_colorize_run, tmp_path, capsys, monkeypatch):
    generator = np.random.default_rng(0)
    for index in range(3):
        pixels = generator.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"photo_{index}.png")
    (tmp_path / "list.csv").write_text("folder,photo,tag\n.,photo_0.png,people\n.,photo_1.png,animals\n"
                                       ".,photo_2.png,people\n")
    checkpoint = str(tiny_colorize_run / "checkpoint.pt")
    monkeypatch.setattr("sys.argv", ["colorize_paired.py", "--data", str(tmp_path / "list.csv"), "--checkpoints",
                                     checkpoint, checkpoint, "--seeds", "0,1", "--samples", "2"])
    paired.main()
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if not line.startswith(" ")] == [
        "all photos (3):", "animals (1):", "people (2):"]
    differences = [line for line in out.splitlines() if " − " in line]
    assert len(differences) == 6  # NLL and RMSE for each of the three groups
    assert all("0.000 ±" in line and "lower on 0 of" in line for line in differences)


def test_without_data_the_runs_are_compared_on_their_validation_photos(tiny_colorize_run, capsys, monkeypatch):
    checkpoint = str(tiny_colorize_run / "checkpoint.pt")
    monkeypatch.setattr("sys.argv", ["colorize_paired.py", "--checkpoints", checkpoint, checkpoint, "--seeds", "0",
                                     "--samples", "2"])
    paired.main()
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "all photos (1):"  # configs/colorize/tiny.yaml holds out one photo
    assert all("0.000 ±" in line for line in out.splitlines() if " − " in line)


def test_runs_with_other_data_settings_are_not_compared_on_their_validation_photos(monkeypatch):
    def per_photo(checkpoint, *args):
        return torch.zeros(2), torch.zeros(2), ["", ""], {"val_fraction": 0.1 if "a" in str(checkpoint) else 0.2}

    monkeypatch.setattr(paired, "per_photo", per_photo)
    monkeypatch.setattr("sys.argv", ["colorize_paired.py", "--checkpoints", "a.pt", "b.pt"])
    with pytest.raises(SystemExit, match="data settings differ"):
        paired.main()
