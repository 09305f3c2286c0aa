"""Copy ../shared/data to a compact folder (images <= 256 px, 30 DTD images per class) that fits a device upload.

    python bench/compact_data.py --out .device/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shrink(source: Path, target: Path, longest: int, is_mask: bool) -> None:
    image = Image.open(source)
    scale = longest / max(image.size)
    if scale < 1:  # an image and its mask have one size, so they get the same new size
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(size, Image.NEAREST if is_mask else Image.BILINEAR)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, quality=95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--longest", type=int, default=256)
    parser.add_argument("--textures-per-class", type=int, default=30)
    args = parser.parse_args()
    for dataset in ("magnetic_tile", "metal_plate"):
        for path in sorted((SHARED / dataset).rglob("*")):
            if path.suffix.lower() in (".png", ".jpg"):
                relative = path.relative_to(SHARED / dataset)
                shrink(path, args.out / dataset / relative, args.longest, "ground_truth" in relative.parts)
    for texture_class in sorted((SHARED / "dtd" / "images").iterdir()):
        for path in sorted(texture_class.iterdir())[: args.textures_per_class]:
            shrink(path, args.out / "dtd" / texture_class.name / path.name, 224, False)


if __name__ == "__main__":
    main()
