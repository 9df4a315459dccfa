"""Fashion-MNIST (Zalando, MIT) as Debian's ``dataset-fashion-mnist`` installs it: IDX files,
optionally gzipped. Used by the simulation's ``fashion-mnist`` track, the imbalanced ImageFolder
maker and the demo; numpy only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) as a numpy array."""
    import gzip

    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, the file holds {data.size} values (truncated?)")
    return data.reshape(shape)


def idx_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"Fashion-MNIST is not at {folder} (no {stem}[.gz]). Install it with `apt-get install dataset-fashion-mnist` "
        "(Debian/Ubuntu), or point FASHION_MNIST_DIR at a folder with the four IDX files from "
        "https://github.com/zalandoresearch/fashion-mnist"
    )
