"""Preprocessing: how an image becomes a backbone's input tensor (resize, centre-crop, normalise).

The ImageNet statistics used by torchvision's weights, and the guard against extreme aspect ratios.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_ASPECT = 4  # see Preprocess.__call__


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalise. Serialisable."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image) -> torch.Tensor:
        """PIL RGB image -> float tensor (3, crop, crop).

        Only the central ``crop`` square of the resized image is used, so an image longer than
        MAX_ASPECT times its short side is first cut to that centre: a 250000x1 strip would
        otherwise be resized to 8,000,000x32 pixels (a gigabyte) to keep 32x32 of them. Images
        within the ratio are resized exactly as before."""
        width, height = image.size
        short, long_ = min(width, height), max(width, height)
        if short > 0 and long_ > MAX_ASPECT * short:
            keep = MAX_ASPECT * short
            box = (
                ((width - keep) // 2, 0, (width - keep) // 2 + keep, height)
                if width > height
                else (0, (height - keep) // 2, width, (height - keep) // 2 + keep)
            )
            image = image.crop(box)
        image = TF.resize(image, [self.resize], antialias=True)
        image = TF.center_crop(image, [self.crop])
        if isinstance(image, Image.Image):
            # The same float32 operations as to_dtype(scale=True) and normalize (bit for bit), in
            # numpy: torch would spread these small tensors over its intra-op threads, and from the
            # image-fetch threads, beside the model's forward pass, that costs 20-40 ms per image on
            # a busy 2-core machine instead of 1 ms.
            pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
            pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        tensor = TF.to_dtype(TF.pil_to_tensor(image), torch.float32, scale=True)
        return TF.normalize(tensor, list(self.mean), list(self.std))

    def to_dict(self) -> dict:
        return asdict(self)
