"""How much a transparent image's embedding changes when its alpha channel is dropped instead of composited on
white as locktune does: the figure the transformers export's README states.

    python benchmarks/transparency_effect.py --model runs/demo --count 60

Tux Paint stamps (Debian's tuxpaint-stamps, `make data`) with at least one pixel not fully opaque, a seeded
random sample; each embedded from its file (locktune: composited on white) and from its RGB channels alone
(`image.convert("RGB")` as a transformers user would write it, the colours hidden under transparent pixels
showing).  Prints the cosine between the two embeddings and the largest component difference.
"""

from __future__ import annotations

import argparse
import glob
import random

import numpy as np
from PIL import Image

STAMPS = "/usr/share/tuxpaint/stamps"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run folder or saved-model folder")
    parser.add_argument("--count", type=int, default=60, help="stamps with transparency to embed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import locktune

    model = locktune.load(args.model, device="cpu")
    paths = sorted(glob.glob(f"{STAMPS}/**/*.png", recursive=True))
    random.Random(args.seed).shuffle(paths)
    cosines, diffs, used = [], [], []
    for path in paths:
        rgba = Image.open(path).convert("RGBA")
        if int(np.asarray(rgba)[..., 3].min()) == 255:
            continue  # no transparency: both ways give the same pixels
        white = model.encode_image(path)
        dropped = model.encode_image(np.asarray(rgba)[..., :3])
        cosines.append(float((white * dropped).sum()))
        diffs.append(float((white - dropped).abs().max()))
        used.append(path)
        if len(used) == args.count:
            break
    cosines, diffs = np.array(cosines), np.array(diffs)
    print(f"{len(used)} Tux Paint stamps with transparency, {model}")
    print(f"cosine(composited on white, alpha dropped): median {np.median(cosines):.3f}, lowest {cosines.min():.3f} "
          f"({used[int(cosines.argmin())]})")
    print(f"largest component difference: median {np.median(diffs):.3f}, largest {diffs.max():.3f}")


if __name__ == "__main__":
    main()
