"""Write a class-imbalanced ImageFolder from Fashion-MNIST, for the ``imagefolder:PATH`` track.

    python -m ml_backend.simulation.make_imagefolder OUT [--ratio 10] [--largest 500]

Class c (in Fashion-MNIST's order) gets ``round(largest · ratio^(−c/(C−1)))`` images: a geometric
("long-tailed") profile from ``largest`` down to ``largest / ratio``, the shape used for imbalanced
active-learning benchmarks (e.g. CIFAR-10-LT). Images are drawn without replacement, seeded, and
saved as 28×28 grey PNGs under ``OUT/<class>/``; ``OUT/counts.json`` records the profile.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def class_counts(classes: int, largest: int, ratio: float) -> list[int]:
    """Per class, the geometric profile from ``largest`` down to ``largest / ratio``."""
    if classes < 2 or largest < 1 or ratio < 1:
        raise ValueError("need at least 2 classes, largest >= 1 and ratio >= 1")
    return [max(1, int(round(largest * ratio ** (-c / (classes - 1))))) for c in range(classes)]


def make(out: Path, ratio: float = 10.0, largest: int = 500, seed: int = 0, folder: Path | None = None) -> dict:
    from PIL import Image

    from ml_backend.fashion_mnist import FASHION_CLASSES, FASHION_MNIST_DIR, read_idx
    from ml_backend.fashion_mnist import idx_file as _idx_file

    folder = Path(folder or FASHION_MNIST_DIR)
    images = np.concatenate(
        [read_idx(_idx_file(folder, "train-images-idx3-ubyte")), read_idx(_idx_file(folder, "t10k-images-idx3-ubyte"))]
    )
    labels = np.concatenate(
        [read_idx(_idx_file(folder, "train-labels-idx1-ubyte")), read_idx(_idx_file(folder, "t10k-labels-idx1-ubyte"))]
    )
    counts = class_counts(len(FASHION_CLASSES), largest, ratio)
    rng = np.random.default_rng(seed)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new folder")
    for c, (name, n) in enumerate(zip(FASHION_CLASSES, counts)):
        have = np.nonzero(labels == c)[0]
        if len(have) < n:
            raise ValueError(f"class {name!r} has {len(have)} images, {n} wanted")
        target = out / name.replace("/", "-")
        target.mkdir(parents=True)
        for i in rng.choice(have, n, replace=False):
            Image.fromarray(images[i], mode="L").save(target / f"{int(i):05d}.png")
    info = {
        "source": str(folder),
        "ratio": ratio,
        "largest": largest,
        "seed": seed,
        "counts": {name.replace("/", "-"): n for name, n in zip(FASHION_CLASSES, counts)},
        "imbalance": counts[0] / counts[-1],
    }
    (out / "counts.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--ratio", type=float, default=10.0, help="largest / smallest class (default 10)")
    p.add_argument("--largest", type=int, default=500, help="images in the largest class (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fashion-mnist", type=Path, default=None, help="folder of the IDX files (default FASHION_MNIST_DIR)"
    )
    args = p.parse_args(argv)
    try:
        info = make(args.out, args.ratio, args.largest, args.seed, args.fashion_mnist)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{sum(info['counts'].values())} images in {args.out}: {info['counts']} (imbalance {info['imbalance']:.1f}:1)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
