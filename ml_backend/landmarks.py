"""ADMA landmarks from images, with the original model M0 (docs/methods.md §1.3, §1.9).

* ``landmarks_from_images``: Eqs. 1-2 per class (optionally k-means sub-centers) on M0's layer-B
  representation; the landmark activations at layers A (and A2) and B are kept, flattened.
* ``landmarks_for_folder``: a reference folder (F2) in ImageFolder layout. One subfolder per class
  gives class medoids; their order is not assumed to match the source head, so α is by distance.
  The result is cached under MODEL_DIR, keyed by the folder's file list, backbone and weights.
* ``check_landmark_file``: a landmark file (F1) must name this backbone and weights.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import torch
from strategies import Need
from strategies.adma import Landmarks, kmeans_landmarks, medoid_landmarks
from strategies.errors import StrategyError

from .images import image_folder_files, load_image_files
from .models import AdaptedModel, LoadedBackbone

log = logging.getLogger(__name__)

@torch.no_grad()
def source_activations(model: AdaptedModel, images: torch.Tensor, roles: Sequence[str], batch_size: int = 64) -> dict:
    """M0's activations at ``roles`` (and its source-head probabilities) for preprocessed images."""
    out: dict[str, list] = {}
    for s in range(0, images.shape[0], batch_size):
        part = model.forward(images[s:s + batch_size], {Need.SOURCE_FEATURES, Need.SOURCE_PROBS}, tuple(roles))
        for k, v in part["source_features"].items():
            out.setdefault(k, []).append(v.flatten(1))
        out.setdefault("source_probs", []).append(part["source_probs"])
    return {k: torch.cat(v) for k, v in out.items()}


def landmarks_from_images(model: AdaptedModel, images: torch.Tensor, labels: torch.Tensor | None,
                          roles: Sequence[str], per_class: int = 1, kmeans: int = 25, seed: int = 0,
                          mode: str = "source-data") -> Landmarks:
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

    def __init__(self, model: AdaptedModel, images: torch.Tensor | Callable[[], torch.Tensor],
                 labels: torch.Tensor | None, seed: int = 0):
        self.model, self._images, self.labels, self.seed = model, images, labels, seed

    @property
    def images(self) -> torch.Tensor:
        if callable(self._images):
            self._images = self._images()
        return self._images

    def activations(self, roles: Sequence[str], limit: int | None = None) -> dict[str, torch.Tensor]:
        return source_activations(self.model, self.images[:limit], tuple(roles))

    def landmarks(self, roles: Sequence[str], per_class: int) -> Landmarks:
        return landmarks_from_images(self.model, self.images, self.labels, roles, per_class=per_class, seed=self.seed)


def landmarks_for_folder(base: LoadedBackbone, folder: Path, device: torch.device, cache_dir: Path,
                         roles: Sequence[str], per_class: int = 1, seed: int = 0, aligned: bool = False) -> Landmarks:
    """``aligned``: the sorted subfolders are the source head's classes 0, 1, ... (Eq. 8's α applies)."""
    files, labels, classes = image_folder_files(folder)
    if len(files) < 2:
        raise StrategyError(f"ADMA reference folder {folder}: needs at least 2 images, found {len(files)}")
    digest = hashlib.sha1(json.dumps([base.spec.name, base.weights, list(roles), per_class, seed, aligned,
                                      [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]]).encode())
    cache = cache_dir / f"folder-{digest.hexdigest()[:16]}.pt"
    if cache.is_file():
        return Landmarks.load(cache)
    model = AdaptedModel(base, ["_"], device)
    try:
        tensors = load_image_files(files, base.preprocess)
    except ValueError as exc:
        raise StrategyError(f"ADMA reference folder: {exc}") from None
    lm = landmarks_from_images(model, torch.stack(tensors), torch.tensor(labels) if classes else None, roles,
                               per_class, seed=seed, mode="folder")
    if not (aligned and classes):
        lm.classes = None  # subfolder order is not known to be the source head's: alpha by distance
    lm.meta = {"backbone": base.spec.name, "weights": base.weights, "folder": str(folder), "images": len(files)}
    cache_dir.mkdir(parents=True, exist_ok=True)
    lm.save(cache)
    log.info("ADMA: %d landmarks from reference folder %s (%d images, %d classes)", lm.k, folder, len(files),
             len(classes))
    return lm


def check_landmark_file(path: Path, base: LoadedBackbone) -> Landmarks:
    lm = Landmarks.load(path)
    want = {"backbone": base.spec.name, "weights": base.weights}
    got = {k: lm.meta.get(k) for k in want}
    if got != want:
        raise StrategyError(f"ADMA landmark file {path} was made for {got}, this backend runs {want}")
    lm.mode = "file"
    return lm
