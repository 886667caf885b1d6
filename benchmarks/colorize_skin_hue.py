"""The hue of skin in colourisations: the mean ab hue angle inside hand-marked skin regions, samples against truth.

For each photo of ``--regions`` (a JSON file: ``{"photos": {"NAME": [[x0, y0, x1, y1], ...]}}``, rectangles
in the photo's own pixels) and each checkpoint (``default``: the pretrained model shipped with cinn), the
photo is colourised ``--samples`` times at its own size (``Colorizer.colorize``, one draw per seed of
``--seeds``); inside the rectangles the mean ``a`` and ``b`` (CIE Lab) of each colouring give its hue angle
``atan2(b, a)`` in degrees and its chroma ``sqrt(a² + b²)``. The true photo's are computed the same way.
Printed per photo and model: the truth's hue and chroma, the samples' circular mean hue and mean chroma, and
the share of samples whose hue lies within ``--tolerance`` degrees of the truth's. Skin in Lab has hues of
about 30° to 70° (orange-red to yellow); blue is about −90°, green about 135°.

    python benchmarks/colorize_skin_hue.py --regions benchmarks/colorize_skin_regions.json \\
        --photos ../shared/data/bsds432 --checkpoints default NEW.pt
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from cinn.color import rgb_to_lab
from cinn.colorization import load_colorizer
from cinn.data import open_image


def region_mask(rectangles: list[list[int]], height: int, width: int) -> Tensor:
    """A boolean ``(H, W)`` mask that is true inside any of the rectangles ``[x0, y0, x1, y1]`` (x1, y1
    excluded).

    Example:
        >>> region_mask([[1, 0, 3, 1]], 2, 4).int().tolist()
        [[0, 1, 1, 0], [0, 0, 0, 0]]
    """
    mask = torch.zeros(height, width, dtype=torch.bool)
    for x0, y0, x1, y1 in rectangles:
        mask[y0:y1, x0:x1] = True
    return mask


def hue_and_chroma(rgb: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The hue angle (degrees) and chroma of the mean ab inside ``mask`` of each RGB image ``(N, 3, H, W)``
    uint8: two ``(N,)`` tensors.

    Example:
        >>> orange = torch.tensor([230, 150, 90], dtype=torch.uint8)[None, :, None, None].expand(1, 3, 2, 2)
        >>> hue, chroma = hue_and_chroma(orange, torch.ones(2, 2, dtype=torch.bool))
        >>> 50 < hue.item() < 70 and chroma.item() > 30
        True
    """
    lab = rgb_to_lab(rgb.float() / 255)
    a, b = lab[:, 1][:, mask].mean(1), lab[:, 2][:, mask].mean(1)
    return torch.rad2deg(torch.atan2(b, a)), torch.hypot(a, b)


def circular_mean(degrees: Tensor) -> float:
    """The mean direction of angles in degrees.

    Example:
        >>> round(circular_mean(torch.tensor([170.0, -170.0])))
        180
    """
    radians = torch.deg2rad(degrees)
    return math.degrees(math.atan2(radians.sin().mean().item(), radians.cos().mean().item()))


def angle_between(first: Tensor, second: float) -> Tensor:
    """The absolute difference of angles in degrees, in [0, 180]."""
    return (first - second + 180).remainder(360).sub(180).abs()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", required=True, type=Path, help="JSON file of skin rectangles per photo")
    parser.add_argument("--photos", required=True, type=Path, help="the folder that holds the photos")
    parser.add_argument("--checkpoints", nargs="+", required=True, help="'default' is the shipped model")
    parser.add_argument("--samples", type=int, default=6, help="colourings per photo and seed")
    parser.add_argument("--seeds", default="0,1,2", help="sample draws, comma-separated")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--tolerance", type=float, default=30.0, help="degrees of hue that count as the truth's")
    args = parser.parse_args()
    regions = json.loads(args.regions.read_text())["photos"]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    colorizers = {name: load_colorizer(None if name == "default" else name) for name in args.checkpoints}
    print(f"mean hue angle (degrees) and chroma of ab inside the skin regions; {args.samples} samples x seeds "
          f"{seeds} at T={args.temperature}; 'near' = share of samples within {args.tolerance:g}° of the truth")
    shares: dict[str, list[float]] = {name: [] for name in colorizers}
    for photo, rectangles in regions.items():
        image = pil_to_tensor(open_image(args.photos / photo, 3))
        mask = region_mask(rectangles, *image.shape[-2:])
        true_hue, true_chroma = hue_and_chroma(image[None], mask)
        line = [f"{photo}: truth {true_hue.item():6.1f}° chroma {true_chroma.item():4.1f}"]
        for name, colorizer in colorizers.items():
            with torch.no_grad():
                colourings = torch.cat([colorizer.colorize(image, args.samples, args.temperature, seed=seed)
                                        for seed in seeds])
            hue, chroma = hue_and_chroma(colourings, mask)
            near = (angle_between(hue, true_hue.item()) <= args.tolerance).float().mean().item()
            shares[name].append(near)
            line.append(f"{name}: {circular_mean(hue):6.1f}° chroma {chroma.mean().item():4.1f} near {near:.0%}")
        print(" | ".join(line))
    for name, values in shares.items():
        print(f"{name}: near the truth's hue in {sum(values) / len(values):.0%} of the samples (mean over photos)")


if __name__ == "__main__":
    main()
