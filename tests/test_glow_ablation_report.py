"""benchmarks/glow_ablation_report.py: per-seed means and paired differences from per-image CSV files."""

from __future__ import annotations

import doctest

import pytest
import torch

from tests.benchmark_scripts import load_script

report = load_script("glow_ablation_report")


def write(path, values):
    path.write_text("image,bits_per_dim\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))


def test_the_examples_hold():
    assert doctest.testmod(report).failed == 0


def test_a_constant_shift_is_a_paired_difference_with_no_spread(tmp_path):
    images = torch.linspace(2.0, 5.0, 10).tolist()  # images of very different difficulty
    write(tmp_path / "base_s0.csv", images)
    write(tmp_path / "base_s1.csv", [v + 0.02 for v in images])
    write(tmp_path / "better_s0.csv", [v - 0.1 for v in images])
    write(tmp_path / "missing_s9.txt", images)
    lines = report.table(tmp_path, ["base", "better", "missing"], "base")
    assert len(lines) == 4  # header, rule, two variants with CSV files
    base, better = lines[2].split(" | "), lines[3].split(" | ")
    assert base[1] == "2" and base[3] == "3.510" and base[4] == "— |"
    assert better[1] == "1" and better[3] == "3.400" and better[4] == "-0.1100 ± 0.0000 |"
    with pytest.raises(SystemExit, match="no evaluated run of the baseline"):
        report.table(tmp_path, ["better"], "nothing")
