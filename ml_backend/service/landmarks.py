"""ADMA landmarks from files (docs/methods.md §1.3, §1.9); the computation is ``core/landmarks.py``.

* ``prepare_landmarks``: at start, hands ADMA the landmarks its ``landmarks=`` option names.
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
from typing import Sequence

import torch

from ml_backend import atomic
from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import LoadedBackbone
from ml_backend.core.landmarks import landmarks_from_images
from ml_backend.imagefolder import image_folder_files, load_image_files
from ml_backend.service.store import Store
from strategies import Strategy
from strategies.adma_landmarks import Landmarks
from strategies.errors import StrategyError

log = logging.getLogger(__name__)


def landmarks_for_folder(
    base: LoadedBackbone,
    folder: Path,
    device: torch.device,
    cache_dir: Path,
    roles: Sequence[str],
    per_class: int = 1,
    seed: int = 0,
    aligned: bool = False,
) -> Landmarks:
    """``aligned``: the sorted subfolders are the source head's classes 0, 1, ... (Eq. 8's α applies)."""
    files, labels, classes = image_folder_files(folder)
    if len(files) < 2:
        raise StrategyError(f"ADMA reference folder {folder}: needs at least 2 images, found {len(files)}")
    digest = hashlib.sha1(
        json.dumps(
            [
                base.spec.name,
                base.digest,
                list(roles),
                per_class,
                seed,
                aligned,
                [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
            ]
        ).encode()
    )
    cache = cache_dir / f"folder-{digest.hexdigest()[:16]}.pt"
    if cache.is_file():
        return Landmarks.load(cache)
    model = AdaptedModel(base, ["_"], device)
    try:
        tensors = load_image_files(files, base.preprocess)
    except ValueError as exc:
        raise StrategyError(f"ADMA reference folder: {exc}") from None
    lm = landmarks_from_images(
        model,
        torch.stack(tensors),
        torch.tensor(labels) if classes else None,
        roles,
        per_class,
        seed=seed,
        mode="folder",
    )
    if not (aligned and classes):
        lm.classes = None  # subfolder order is not known to be the source head's: alpha by distance
    lm.meta = {
        "backbone": base.spec.name,
        "weights": base.weights,
        "weights_sha256": base.digest,
        "folder": str(folder),
        "images": len(files),
    }
    atomic.save_torch(Path(cache), lm.to_dict())
    log.info(
        "ADMA: %d landmarks from reference folder %s (%d images, %d classes)", lm.k, folder, len(files), len(classes)
    )
    return lm


def check_landmark_file(path: Path, base: LoadedBackbone) -> Landmarks:
    lm = Landmarks.load(path)
    if lm.meta.get("backbone") != base.spec.name or lm.meta.get("weights_sha256") != base.digest:
        made = {"backbone": lm.meta.get("backbone"), "weights": lm.meta.get("weights")}
        reason = (
            "it names no weights hash: remake it with python -m ml_backend.service.make_landmarks"
            if "weights_sha256" not in lm.meta
            else "the weights differ (SHA-256)"
        )
        raise StrategyError(
            f"ADMA landmark file {path} was made for {made}, this backend runs "
            f"{{'backbone': {base.spec.name!r}, 'weights': {base.weights!r}}}: {reason}"
        )
    lm.mode = "file"
    return lm


def prepare_landmarks(
    strategy: Strategy, base: LoadedBackbone, device: torch.device, store: Store, seed: int = 0
) -> None:
    """ADMA with a reference folder (landmark mode F2): compute its landmarks once with M0 and cache
    them; with a landmark file (F1): check it against this backbone and weights."""
    landmarks = getattr(strategy, "landmarks", None)
    if strategy.name != "adma" or not isinstance(landmarks, str):
        return
    path = Path(landmarks)
    if path.is_dir():
        strategy.set_landmarks(
            landmarks_for_folder(base, path, device, store.cache_dir("landmarks"), roles=strategy.layers(), seed=seed)
        )
    elif path.suffix == ".pt":
        strategy.set_landmarks(check_landmark_file(path, base))
