"""AIFT, active incremental fine-tuning (Zhou et al., CVPR'17), on test-time-augmented views of whole
images (docs/methods.md §3.2). Larger = label first.

For item i with m views and probabilities p^j: ĉ = argmax_k mean_j p^{j,k}; S' = the ⌈α m⌉ (at least
2) views with the highest p^{j,ĉ} (the paper's majority selection, generalised to many classes);

    score_i = λ1 Σ_{j∈S'} e^j + λ2 Σ_{j≠l ∈ S'} d(j, l),
    e^j = -Σ_k p^{j,k} log p^{j,k},   d(j, l) = Σ_k (p^{j,k} - p^{l,k}) log(p^{j,k} / p^{l,k})  (symmetric KL)

Each unordered pair counts twice, as in the paper's sum over the matrix R.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
from torchvision.transforms.v2 import functional as TF

from .base import Need, ScoringInputs, Strategy
from .registry import register

_EPS = 1e-12


def tta_views(
    images: torch.Tensor, m: int, keys: Sequence[str], seed: int = 0, round_: int = 0, flip: bool = False
) -> torch.Tensor:
    """(m, N, 3, H, W) views of preprocessed images: view 0 is the image itself; the others are a
    random resized crop (scale 0.8-1, ratio 0.9-1.1), a rotation of up to ±10°, mild brightness and
    contrast changes and, with ``flip``, a horizontal flip. Seeded per (seed, item key, round), so a
    view does not depend on the pool's order.
    The project's whole-image stand-in for the patches of AIFT (Zhou et al., CVPR'17): docs/methods.md §3.2."""
    n, _, h, w = images.shape
    out = images.unsqueeze(0).repeat(m, 1, 1, 1, 1)
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(f"{seed}:{key}:{round_}".encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest, "big") & (2**63 - 1))
        for j in range(1, m):
            r = torch.rand(8, generator=g).tolist()
            area = h * w * (0.8 + 0.2 * r[0])
            ratio = math.exp(math.log(0.9) + (math.log(1.1) - math.log(0.9)) * r[1])
            ch = min(h, max(1, round(math.sqrt(area / ratio))))
            cw = min(w, max(1, round(math.sqrt(area * ratio))))
            top, left = int(r[2] * (h - ch + 1)), int(r[3] * (w - cw + 1))
            v = TF.resized_crop(images[i], top, left, ch, cw, [h, w], antialias=True)
            v = TF.rotate(v, (r[4] * 2 - 1) * 10.0)
            if flip and r[5] < 0.5:
                v = TF.horizontal_flip(v)
            mean = v.mean()
            v = (v - mean) * (0.9 + 0.2 * r[6]) + mean + (r[7] * 2 - 1) * 0.1  # contrast, brightness
            out[j, i] = v
    return out


def aift_scores(view_probs: torch.Tensor, alpha: float = 0.25, lam1: float = 1.0, lam2: float = 1.0) -> torch.Tensor:
    """AIFT values (N,) from view probabilities (m, N, C).
    AIFT (Zhou et al., 'Fine-tuning Convolutional Neural Networks for Biomedical Image Analysis: Actively and
    Incrementally', CVPR'17): entropy plus pairwise symmetric KL over the majority's views, docs/methods.md §3.2."""
    p = view_probs.to(torch.float64).clamp_min(_EPS)
    m, n, c = p.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.float64)
    keep = min(m, max(2, math.ceil(alpha * m))) if m >= 2 else m
    majority = p.mean(dim=0).argmax(dim=1)  # (N,)
    support = p.gather(2, majority[None, :, None].expand(m, n, 1)).squeeze(2)  # (m, N)
    top = support.topk(keep, dim=0).indices  # (keep, N)
    sel = p.gather(0, top[:, :, None].expand(keep, n, c)).permute(1, 0, 2)  # (N, keep, C)
    ent = -(sel * sel.log()).sum(dim=2).sum(dim=1)
    diff = sel[:, :, None, :] - sel[:, None, :, :]
    logratio = sel.log()[:, :, None, :] - sel.log()[:, None, :, :]
    div = (diff * logratio).sum(dim=3).sum(dim=(1, 2))  # the diagonal is 0
    return lam1 * ent + lam2 * div


@register
class AIFTStrategy(Strategy):
    """AIFT (Zhou et al., CVPR'17) on test-time-augmented views of whole images: docs/methods.md §3.2."""

    name = "aift"
    needs = frozenset({Need.VIEW_PROBS})
    description = (
        "AIFT (CVPR'17) on test-time-augmented views: entropy plus pairwise symmetric KL over the "
        "majority-class views (m forward passes per item)."
    )

    def __init__(
        self,
        seed: int = 0,
        views: int = 16,
        alpha: float = 0.25,
        lam1: float = 1.0,
        lam2: float = 1.0,
        flip: bool = False,
    ) -> None:
        super().__init__(seed)
        if int(views) < 2 or not 0 < float(alpha) <= 1:
            raise TypeError("views must be >= 2 and alpha in (0, 1]")
        self.m, self.alpha, self.lam1, self.lam2, self.flip = (
            int(views),
            float(alpha),
            float(lam1),
            float(lam2),
            bool(flip),
        )

    def params(self) -> dict:
        return {
            "seed": self.seed,
            "views": self.m,
            "alpha": self.alpha,
            "lam1": self.lam1,
            "lam2": self.lam2,
            "flip": self.flip,
        }

    def views(self) -> int:
        return self.m

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        return aift_scores(inputs.require(Need.VIEW_PROBS), self.alpha, self.lam1, self.lam2)
