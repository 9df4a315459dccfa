"""ADMA landmarks from preprocessed images, with the original model M0 (docs/methods.md §1.3):
Eqs. 1-2 per class (optionally k-means sub-centers) on M0's layer-B representation; the landmark
activations at layers A (and A2) and B are kept, flattened."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ml_backend.core.adapted import AdaptedModel
from strategies import Need
from strategies.adma_landmarks import Landmarks, kmeans_landmarks, medoid_landmarks


@torch.no_grad()
def source_activations(model: AdaptedModel, images: torch.Tensor, roles: Sequence[str], batch_size: int = 64) -> dict:
    """M0's activations at ``roles`` (and its source-head probabilities) for preprocessed images."""
    out: dict[str, list] = {}
    for s in range(0, images.shape[0], batch_size):
        part = model.forward(images[s : s + batch_size], {Need.SOURCE_FEATURES, Need.SOURCE_PROBS}, tuple(roles))
        for k, v in part["source_features"].items():
            out.setdefault(k, []).append(v.flatten(1))
        out.setdefault("source_probs", []).append(part["source_probs"])
    return {k: torch.cat(v) for k, v in out.items()}


def landmarks_from_images(
    model: AdaptedModel,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    roles: Sequence[str],
    per_class: int = 1,
    kmeans: int = 25,
    seed: int = 0,
    mode: str = "source-data",
) -> Landmarks:
    roles = [r for r in roles if r != "B"]
    acts = source_activations(model, images, (*roles, "B"))
    a = {r: acts[r] for r in roles}
    if labels is None or len(set(labels.tolist())) < 2:
        lm = kmeans_landmarks(a, acts["B"], [f"{i:09d}" for i in range(images.shape[0])], kmeans, seed)
        lm.mode = mode
        return lm
    return medoid_landmarks(a, acts["B"], labels, per_class, seed, mode)


class ImageSource:
    """:class:`strategies.base.SourceData` over preprocessed source images (a tensor, or a function
    that makes it: called only if a strategy asks) and their labels."""

    def __init__(
        self,
        model: AdaptedModel,
        images: torch.Tensor | Callable[[], torch.Tensor],
        labels: torch.Tensor | None,
        seed: int = 0,
    ):
        self.model, self._images, self.labels, self.seed = model, images, labels, seed

    @property
    def images(self) -> torch.Tensor:
        if callable(self._images):
            self._images = self._images()
        return self._images

    def activations(self, roles: Sequence[str], limit: int | None = None) -> dict[str, torch.Tensor]:
        return source_activations(self.model, self.images[:limit], tuple(roles))

    @torch.no_grad()
    def current_activations(self, roles: Sequence[str], items: Sequence[int]) -> dict[str, torch.Tensor]:
        """The model as it is now (the adapted one, M_t) at ``roles`` for source images ``items``."""
        out = self.model.forward(self.images[list(items)], {Need.FEATURES}, tuple(roles))["features"]
        return {k: v.flatten(1).float() for k, v in out.items()}

    def landmarks(self, roles: Sequence[str], per_class: int) -> Landmarks:
        return landmarks_from_images(self.model, self.images, self.labels, roles, per_class=per_class, seed=self.seed)
