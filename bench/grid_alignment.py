"""Where a backbone stage's map puts a thin line, against where the line is (issue 22: could the memory's map sit a
few pixels off the defects, which thin cracks would pay for?).

    python bench/grid_alignment.py --backbone efficientnet_lite2 --stages 1 2 4

A 3 px bright line along one image row, at every phase of a grid cell, on a flat grey image: each stage's response
(the norm of its change against the plain image, per grid row) peaks near some grid row; the peak's sub-cell place
(a parabola through the peak and its two neighbours) is mapped to pixels as `maps.distance_map` upsamples a grid
(bilinear, align_corners=False: cell i at (i + 0.5) x stride - 0.5). Prints the mean offset map - line over the
phases, and its range. No data, no training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mala.backbone_stages import STAGE_STRIDES  # noqa: E402
from mala.model.backbone import pretrained_backbone  # noqa: E402

SIZE = 224
FIRST_ROW = 96  # the line's rows: one grid cell's phases from here, well inside the image


def peak_place(response: torch.Tensor) -> float:
    """The sub-cell place of the maximum of a 1-D response (a parabola through the peak and its neighbours)."""
    i = int(response[1:-1].argmax()) + 1
    before, peak, after = (float(v) for v in response[i - 1:i + 2])
    curvature = before - 2 * peak + after
    return i + (0.5 * (before - after) / curvature if curvature else 0.0)


@torch.no_grad()
def offsets(backbone_name: str, stage: int) -> list[float]:
    """Map place - line place (px) of a thin line at every phase of a stage's grid cell."""
    backbone = pretrained_backbone(backbone_name, last_stage=stage).eval()
    stride = STAGE_STRIDES[stage]
    plain = torch.full((1, 3, SIZE, SIZE), 0.5)
    reference = backbone.features(plain, (stage,))[0]
    found = []
    for row in range(FIRST_ROW, FIRST_ROW + stride):
        image = plain.clone()
        image[..., row - 1:row + 2, :] = 1.0
        response = (backbone.features(image, (stage,))[0] - reference).norm(dim=1)[0].mean(dim=1)
        found.append((peak_place(response) + 0.5) * stride - 0.5 - row)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    torch.set_num_threads(2)
    for stage in args.stages:
        found = offsets(args.backbone, stage)
        print(f"stage {stage} (stride {STAGE_STRIDES[stage]}): map - line {sum(found) / len(found):+.2f} px, "
              f"over the phases {min(found):+.1f} to {max(found):+.1f}")


if __name__ == "__main__":
    main()
