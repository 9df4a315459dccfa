"""Local images in ImageFolder layout (one subfolder per class), read with Pillow: what ADMA's
reference folders (backend) and the simulation's own datasets are made of."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_folder_files(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """Images of a local folder in ImageFolder layout: (files, class index per file, class names).
    A folder without class subfolders gives its own images, all of class 0, and no class names."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    if classes:
        for c, name in enumerate(classes):
            for f in sorted((folder / name).rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(f)
                    labels.append(c)
    else:
        files = [f for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        labels = [0] * len(files)
    return files, labels, classes


def load_image_files(files: Sequence[Path], transform: Callable) -> list:
    """Open, convert to RGB and transform every file; ValueError naming the first unreadable one."""
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                out.append(transform(im.convert("RGB")))
        except Exception as exc:
            raise ValueError(f"cannot read {f}: {exc}") from None
    return out
