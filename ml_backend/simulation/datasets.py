"""Offline datasets for the simulation (docs/methods.md §8.2). Everything ships inside pip wheels
(scikit-learn's digits, scikit-image's textures) or is generated, deterministically given a seed.

A dataset is a source task (to pretrain M0 and take ADMA's landmarks from) and a target task (the
active-learning pool and test set), as float tensors (N, 3, H, W) normalised to [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SOURCE_TEXTURES = ("brick", "grass", "gravel")
TARGET_TEXTURES = ("camera", "moon", "coins", "page")


@dataclass
class Task:
    x: torch.Tensor  # (N, 3, H, W)
    y: torch.Tensor  # (N,); a multi-label task: (N, C) of 0/1
    classes: list[str]
    layout: object = None  # a multi-label task's ``strategies.layout.Layout``; None: single-label


@dataclass
class Dataset:
    name: str
    source: Task | None
    target: Task
    description: str


def _to_tensor(gray: np.ndarray) -> torch.Tensor:
    """(N, H, W) in [0, 1] -> (N, 3, H, W) in [-1, 1]."""
    t = torch.from_numpy(gray.astype(np.float32))[:, None].repeat(1, 3, 1, 1)
    return (t - 0.5) / 0.5


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def digits() -> Dataset:
    """Digits 0-4 (source) -> 5-9 (target), 8x8 upscaled to 16x16: the fast smoke track (no
    measurable transfer gain, docs/methods.md §8.2)."""
    images, labels = _digits()
    big = images.repeat(2, axis=1).repeat(2, axis=2)
    src, tgt = labels < 5, labels >= 5
    return Dataset(
        "digits",
        Task(_to_tensor(big[src]), torch.from_numpy(labels[src]), [str(i) for i in range(5)]),
        Task(_to_tensor(big[tgt]), torch.from_numpy(labels[tgt] - 5), [str(i) for i in range(5, 10)]),
        "scikit-learn digits, source 0-4 -> target 5-9, 16x16",
    )


def _textures(names) -> list[np.ndarray]:
    from skimage import data, transform
    from skimage.color import rgb2gray

    out = []
    for name in names:
        img = getattr(data, name)()
        if img.ndim == 3:
            img = rgb2gray(img[..., :3])
        img = transform.rescale(img.astype(np.float64), 0.25, anti_aliasing=True)  # coarser texture per crop
        out.append(img.astype(np.float32))
    return out


def clutter(
    images: np.ndarray, textures: list[np.ndarray], rng: np.random.Generator, contrast: float = 0.5, size: int = 16
) -> np.ndarray:
    """Paste each 8x8 digit at a random offset on a random texture crop (max blending)."""
    out = np.empty((len(images), size, size), dtype=np.float32)
    for i, digit in enumerate(images):
        tex = textures[rng.integers(len(textures))]
        r, c = rng.integers(tex.shape[0] - size), rng.integers(tex.shape[1] - size)
        crop = tex[r : r + size, c : c + size]
        lo, hi = crop.min(), crop.max()
        canvas = (crop - lo) / (hi - lo + 1e-8) * contrast
        dr, dc = rng.integers(size - 8 + 1), rng.integers(size - 8 + 1)
        canvas[dr : dr + 8, dc : dc + 8] = np.maximum(canvas[dr : dr + 8, dc : dc + 8], digit)
        out[i] = canvas
    return out


def cluttered_digits(contrast: float = 0.5, placements: int = 10) -> Dataset:
    """Source: digits 0-4 on brick/grass/gravel, ``placements`` per image; target: digits 5-9 on
    camera/moon/coins/page, one placement each: new classes and a new clutter domain, where
    pretraining on the source measurably helps (docs/methods.md §8.2, track T1)."""
    images, labels = _digits()
    rng = np.random.default_rng(12345)  # the dataset is fixed; seeds vary the split and the loop
    src, tgt = labels < 5, labels >= 5
    src_images = np.repeat(images[src], placements, axis=0)
    src_labels = np.repeat(labels[src], placements)
    source = clutter(src_images, _textures(SOURCE_TEXTURES), rng, contrast)
    target = clutter(images[tgt], _textures(TARGET_TEXTURES), rng, contrast)
    return Dataset(
        "cluttered-digits",
        Task(_to_tensor(source), torch.from_numpy(src_labels), [str(i) for i in range(5)]),
        Task(_to_tensor(target), torch.from_numpy(labels[tgt] - 5), [str(i) for i in range(5, 10)]),
        f"digits on scikit-image texture crops (contrast {contrast}); source 0-4 on {'/'.join(SOURCE_TEXTURES)}, "
        f"target 5-9 on {'/'.join(TARGET_TEXTURES)}, 16x16",
    )


def digits_novel() -> Dataset:
    """The EMOC protocol scaled down (docs/methods.md §8.2, track T2): all ten digits are the target;
    the loop picks 5 known classes per seed. No source task: M0 is pretrained on nothing."""
    images, labels = _digits()
    big = images.repeat(2, axis=1).repeat(2, axis=2)
    return Dataset(
        "digits-novel",
        None,
        Task(_to_tensor(big), torch.from_numpy(labels), [str(i) for i in range(10)]),
        "scikit-learn digits, 10 classes: 5 known with 20 labels each, novel classes only in the pool",
    )


def image_folder(path: Path, preprocess) -> Task:
    """An ImageFolder (one subfolder per class) as preprocessed tensors."""
    from ml_backend.imagefolder import image_folder_files, load_image_files

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder")
    files, ys, classes = image_folder_files(path)
    if len(classes) < 2:
        raise ValueError(f"{path} is not an ImageFolder: it needs one subfolder per class (found {len(classes)})")
    counts = np.bincount(ys, minlength=len(classes))
    if (counts == 0).any():
        empty = [classes[i] for i in np.nonzero(counts == 0)[0]]
        raise ValueError(f"{path} is not an ImageFolder: class folder(s) {empty} hold no images")
    return Task(torch.stack(load_image_files(files, preprocess)), torch.tensor(ys), classes)


from ml_backend.fashion_mnist import (  # noqa: E402  (the reader is shared with the demo)
    FASHION_CLASSES,
    FASHION_MNIST_DIR,
    read_idx,
)
from ml_backend.fashion_mnist import idx_file as _idx_file  # noqa: E402

FASHION_SIZE = 4000  # items drawn (fixed, class-stratified by chance) from the 70,000: pool + test per seed


def fashion_mnist(folder: Path | None = None, size: int = FASHION_SIZE) -> Dataset:
    """Fashion-MNIST (Zalando, MIT): 28x28 grey photos of 10 kinds of clothing. A fixed random
    ``size`` of the 70,000 images is the track (each seed splits it into pool and test); no source
    task: M0 is an ImageNet-pretrained network (docs/results.md, the pretrained track)."""
    folder = Path(folder or FASHION_MNIST_DIR)
    images = np.concatenate(
        [read_idx(_idx_file(folder, "train-images-idx3-ubyte")), read_idx(_idx_file(folder, "t10k-images-idx3-ubyte"))]
    )
    labels = np.concatenate(
        [read_idx(_idx_file(folder, "train-labels-idx1-ubyte")), read_idx(_idx_file(folder, "t10k-labels-idx1-ubyte"))]
    ).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels")
    keep = np.sort(np.random.default_rng(2017).permutation(len(labels))[:size])
    return Dataset(
        "fashion-mnist",
        None,
        Task(
            _to_tensor(images[keep].astype(np.float32) / 255.0), torch.from_numpy(labels[keep]), list(FASHION_CLASSES)
        ),
        f"Fashion-MNIST ({folder}), {size} of 70,000 images, 28x28 grey, 10 classes",
    )


def multi_digits(size: int = 32) -> Dataset:
    """The multi-label track (docs/methods.md §9.5). Source: one digit 0-4 at a random place on a
    ``size``² canvas (single-label, to pretrain M0). Target: 2-3 digits of 0-9, each in its own
    quadrant at a random offset; the labels are which of 5-9 appear (any subset, the empty one too):
    new classes, several per image, and distractors M0 knows."""
    from strategies.layout import Group, Layout

    images, labels = _digits()
    rng = np.random.default_rng(4242)
    half = size // 2
    src = np.nonzero(labels < 5)[0]
    source = np.zeros((len(src), size, size), dtype=np.float32)
    for i, j in enumerate(src):
        r, c = rng.integers(size - 8 + 1, size=2)
        source[i, r : r + 8, c : c + 8] = images[j]
    n = len(labels)
    target = np.zeros((n, size, size), dtype=np.float32)
    y = np.zeros((n, 5), dtype=np.float32)
    for i in range(n):
        quadrants = rng.permutation(4)[: rng.integers(2, 4)]
        for q in quadrants:
            j = rng.integers(n)
            r = (q // 2) * half + rng.integers(half - 8 + 1)
            c = (q % 2) * half + rng.integers(half - 8 + 1)
            target[i, r : r + 8, c : c + 8] = images[j]
            if labels[j] >= 5:
                y[i, labels[j] - 5] = 1.0
    classes = [str(i) for i in range(5, 10)]
    return Dataset(
        "multi-digits",
        Task(_to_tensor(source), torch.from_numpy(labels[src]), [str(i) for i in range(5)]),
        Task(_to_tensor(target), torch.from_numpy(y), classes, Layout((Group("digits", tuple(classes), True),))),
        f"multi-label: 2-3 scikit-learn digits per {size}x{size} image, labels = which of 5-9 appear; "
        "source: one digit 0-4",
    )


DATASETS = {
    "digits": digits,
    "cluttered-digits": cluttered_digits,
    "digits-novel": digits_novel,
    "fashion-mnist": fashion_mnist,
    "multi-digits": multi_digits,
}
