"""Demo and test images that need no download: scikit-learn's digits (inside the pip package) and
Fashion-MNIST (Debian's ``dataset-fashion-mnist``), rendered to PNG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def digit_pngs(n: int, size: int = 64, seed: int = 0) -> list[tuple[str, bytes, int]]:
    """``n`` digits as (filename, PNG bytes, true label), upscaled to ``size`` px, RGB."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.images))[:n]
    out = []
    for i in order:
        pixels = (digits.images[i] / 16.0 * 255).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((size, size), Image.NEAREST).convert("RGB")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append((f"digit_{i:04d}_{digits.target[i]}.png", buf.getvalue(), int(digits.target[i])))
    return out


def png_bytes(color=(200, 30, 30), size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def fashion_available(folder=None) -> bool:
    """Whether Fashion-MNIST's IDX files are installed (FASHION_MNIST_DIR, Debian's package)."""
    from ml_backend.fashion_mnist import FASHION_MNIST_DIR
    from ml_backend.fashion_mnist import idx_file as _idx_file

    try:
        _idx_file(folder or FASHION_MNIST_DIR, "t10k-images-idx3-ubyte")
        _idx_file(folder or FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte")
    except FileNotFoundError:
        return False
    return True


def fashion_pngs(n: int, size: int = 112, seed: int = 0, folder=None) -> list[tuple[str, bytes, str]]:
    """``n`` Fashion-MNIST test images (balanced by chance) as (filename, PNG bytes, true label),
    upscaled from 28 px to ``size`` px so that an annotator can see them, RGB."""
    from ml_backend.fashion_mnist import FASHION_CLASSES, FASHION_MNIST_DIR, read_idx
    from ml_backend.fashion_mnist import idx_file as _idx_file

    folder = folder or FASHION_MNIST_DIR
    images = read_idx(_idx_file(folder, "t10k-images-idx3-ubyte"))
    labels = read_idx(_idx_file(folder, "t10k-labels-idx1-ubyte"))
    order = np.random.default_rng(seed).permutation(len(labels))[:n]
    out = []
    for i in order:
        image = Image.fromarray(images[i], mode="L").resize((size, size), Image.LANCZOS).convert("RGB")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        label = FASHION_CLASSES[int(labels[i])]
        out.append(
            (f"fashion_{int(i):05d}_{label.replace('/', '-').replace(' ', '-').lower()}.png", buf.getvalue(), label)
        )
    return out
