"""The simulation's data and its original model M0: datasets loaded once per process, images at
the backbone's input size, and M0 pretrained on the track's source task (cached by configuration)."""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path

import torch

from ml_backend import atomic
from ml_backend.simulation import datasets
from ml_backend.simulation.config import SimConfig


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, source: str | None, backbone: str, image_size: int = 0) -> datasets.Dataset:
    """A track's images, in [-1, 1] like every track (resize_for turns them into the backbone's
    normalisation); an ImageFolder is resized and cropped to the backbone's input size once here."""
    if name.startswith("imagefolder:"):
        from ml_backend.core.architectures import get_backbone
        from ml_backend.core.preprocess import Preprocess

        native = get_backbone(backbone).preprocess  # the backbone's own resize and crop (scaled to image_size)
        crop = image_size or native.crop
        pre = Preprocess(round(crop * native.resize / native.crop), crop, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        target = datasets.image_folder(Path(name.split(":", 1)[1]), pre)
        src = datasets.image_folder(Path(source), pre) if source else None
        return datasets.Dataset(name, src, target, f"ImageFolder {name.split(':', 1)[1]}")
    return datasets.DATASETS[name]()


def dataset_of(cfg: SimConfig) -> datasets.Dataset:
    return load_dataset(cfg.dataset, cfg.source, cfg.backbone, cfg.image_size)


def resize_for(cfg: SimConfig, x: torch.Tensor) -> torch.Tensor:
    """Images (in [-1, 1]) at the backbone's input size and normalisation (the small CNN takes them as
    they are: its input is [-1, 1] at any size)."""
    if cfg.backbone in ("smallcnn", "smallcnn-unfrozen") and not cfg.image_size:
        return x
    pre = base_model(cfg.backbone, cfg.m0 or "none", cfg.freeze, cfg.image_size).preprocess
    if x.shape[-2:] != (pre.crop, pre.crop):  # imagefolder images already come at the backbone's size
        x = torch.nn.functional.interpolate(x, size=(pre.crop, pre.crop), mode="bilinear", align_corners=False)
    if pre.mean != (0.5, 0.5, 0.5) or pre.std != (0.5, 0.5, 0.5):
        mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
        x = (x * 0.5 + 0.5 - mean) / std
    return x


@functools.lru_cache(maxsize=2)
def base_model(backbone: str, weights: str, freeze: str = "default", image_size: int = 0):
    from ml_backend.core.backbones import load_backbone

    return load_backbone(backbone, weights, freeze=freeze, image_size=image_size)


def pretrain_source(cfg: SimConfig) -> str:
    """M0's weights: ``cfg.weights``, or with ``auto`` a backbone trained on the source task (all
    layers, Adam), cached in ``cfg.cache`` by configuration."""
    from ml_backend.core.architectures import get_backbone

    if cfg.weights != "auto":
        return cfg.weights
    ds = dataset_of(cfg)
    if ds.source is None or cfg.source_steps == 0:
        return "none"
    key = hashlib.sha1(
        json.dumps([cfg.dataset, cfg.source, cfg.backbone, cfg.source_steps, len(ds.source.y), 2]).encode()
    ).hexdigest()[:12]
    path = Path(cfg.cache) / f"m0-{cfg.dataset.replace(':', '_').replace('/', '_')}-{cfg.backbone}-{key}.pt"
    if path.is_file():
        return str(path)
    torch.manual_seed(0)
    model = get_backbone(cfg.backbone).build(len(ds.source.classes))
    x, y = resize_for(cfg, ds.source.x), ds.source.y
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    model.train()
    print(
        f"[simulate] pretraining M0 ({cfg.backbone}) on the source task: {len(y)} images, "
        f"{cfg.source_steps} steps (cached in {path})",
        file=sys.stderr,
    )
    from tqdm import tqdm

    for _ in tqdm(range(cfg.source_steps), desc="source model", leave=False, disable=not cfg.progress):
        idx = torch.randint(len(y), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    atomic.save_torch(path, model.state_dict())
    return str(path)
