"""Test images that ship inside pip packages: scikit-learn's digits, rendered to PNG."""
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
