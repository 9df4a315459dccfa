"""Backbones: architectures, their layer roles, weights and which early layers stay frozen.

A registry of torchvision backbones plus a small CNN for fast CPU tests and demos. Each entry
says where its classifier head is, which early layers are frozen (as in the ADMA paper, see
docs/methods.md §1.2: "first two layers for AlexNet, first seven for VGG-16, first eight for ResNet-18",
counting weight layers in forward order) and how to preprocess images.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn
from torchvision.transforms.v2 import functional as TF


from active_adaptation.errors import ConfigError, WeightsUnavailable

log = logging.getLogger(__name__)

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
            box = ((width - keep) // 2, 0, (width - keep) // 2 + keep, height) if width > height else \
                (0, (height - keep) // 2, width, (height - keep) // 2 + keep)
            image = image.crop(box)
        image = TF.resize(image, [self.resize], antialias=True)
        image = TF.center_crop(image, [self.crop])
        tensor = TF.to_dtype(TF.pil_to_tensor(image), torch.float32, scale=True)
        return TF.normalize(tensor, list(self.mean), list(self.std))

    def to_dict(self) -> dict:
        return asdict(self)


class SmallCNN(nn.Module):
    """conv16-pool-conv32-pool-fc128-fc64-head (docs/methods.md §8.2): fast on a CPU, any input size."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 128), nn.ReLU(inplace=True),
            nn.Linear(128, 64), nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[int], nn.Module]  # num_source_classes -> randomly initialised model
    head: str  # dotted path of the classifier Linear
    frozen: tuple[str, ...]  # parameter-name prefixes that stay frozen
    preprocess: Preprocess  # used when the weights do not carry their own
    source_classes: int  # size of the source head of a fresh model
    trunk: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # the frozen early layers
    rest: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # everything after: rest(m, trunk(m, x)) == m(x)
    torchvision_name: str | None = None  # for torchvision's weights registry
    # ADMA's layers (docs/methods.md §1.2) as module names, post-activation; "+relu" applies a ReLU to
    # the hooked output (for a ReLU module that a residual block reuses and so cannot be hooked).
    roles: tuple[tuple[str, str], ...] = ()


_IMAGENET_PRE = Preprocess(256, 224, IMAGENET_MEAN, IMAGENET_STD)

_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _BACKBONES:
        raise ValueError(f"backbone '{spec.name}' is already registered")
    _BACKBONES[spec.name] = spec
    return spec


def available_backbones() -> list[str]:
    return sorted(_BACKBONES)


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ConfigError(
            f"BACKBONE={name!r} is unknown; allowed: {', '.join(available_backbones())}"
        ) from None


def _tv(name: str) -> Callable[[int], nn.Module]:
    return lambda n: torchvision.models.get_model(name, weights=None, num_classes=n)


# Trunk/rest splits at the freeze boundary. Submodules are looked up at call time, so a replaced
# head is always the one used. The frozen-feature cache stores trunk outputs.
def _resnet_trunk(m, x):
    return m.layer2[0](m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))


def _resnet_rest(m, z):
    z = m.layer4(m.layer3(m.layer2[1](z)))
    return m.fc(torch.flatten(m.avgpool(z), 1))


def _features_split(k: int):
    def trunk(m, x):
        return m.features[:k](x)

    def rest(m, z):
        z = m.features[k:](z)
        if hasattr(m, "avgpool"):
            z = torch.flatten(m.avgpool(z), 1)
        return m.classifier(z)

    return trunk, rest


register_backbone(BackboneSpec(
    "resnet18", _tv("resnet18"), head="fc",
    # First 8 convs counting downsample: conv1(+bn1), layer1 (4 convs), layer2.0 (3 convs).
    frozen=("conv1.", "bn1.", "layer1.", "layer2.0."),
    preprocess=_IMAGENET_PRE, source_classes=1000, trunk=_resnet_trunk, rest=_resnet_rest,
    torchvision_name="resnet18",
    # A = block layer4.0 (its two parallel branches hold the 4th weight layer from the end),
    # B = the pooled input of fc; A2 = layer4.0.conv1 after its BN and ReLU
    roles=(("A", "layer4.0"), ("B", "avgpool"), ("A2", "layer4.0.bn1+relu")),
))
register_backbone(BackboneSpec(
    "vgg16", _tv("vgg16"), head="classifier.6",
    # conv1_1 ... conv3_3 = features.{0,2,5,7,10,12,14}
    frozen=tuple(f"features.{i}." for i in (0, 2, 5, 7, 10, 12, 14)),
    preprocess=_IMAGENET_PRE, source_classes=1000, trunk=_features_split(16)[0], rest=_features_split(16)[1],
    torchvision_name="vgg16",
    roles=(("A", "features.30"), ("B", "classifier.4"), ("A2", "features.27"),  # pool5, fc7 ReLU, conv5_2 ReLU
           ("HEAD_IN", "classifier.2"), ("HEAD_PRE", "classifier.3")),  # fc7's input and pre-activation
))
register_backbone(BackboneSpec(
    "alexnet", _tv("alexnet"), head="classifier.6",
    frozen=("features.0.", "features.3."),  # conv1, conv2
    preprocess=_IMAGENET_PRE, source_classes=1000, trunk=_features_split(5)[0], rest=_features_split(5)[1],
    torchvision_name="alexnet",
    roles=(("A", "features.12"), ("B", "classifier.5"), ("A2", "features.9"),  # pool5, fc7 ReLU, conv4 ReLU
           ("HEAD_IN", "classifier.3"), ("HEAD_PRE", "classifier.4")),  # fc7's input and pre-activation
))
register_backbone(BackboneSpec(
    "smallcnn", SmallCNN, head="classifier.5",
    frozen=("features.0.",),  # conv1, as in docs/methods.md §8.2
    preprocess=Preprocess(32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    source_classes=10, trunk=_features_split(2)[0], rest=_features_split(2)[1],
    # A = the conv block feeding fc1, B = fc2 after its ReLU; conv1 (A2) is frozen, inside the trunk
    roles=(("A", "features.6"), ("B", "classifier.4"), ("HEAD_IN", "classifier.2"), ("HEAD_PRE", "classifier.3")),
))
register_backbone(BackboneSpec(
    "smallcnn-unfrozen", SmallCNN, head="classifier.5",
    frozen=(),  # every layer trains (the EMOC paper's setting for a network that starts from random weights)
    preprocess=Preprocess(32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    source_classes=10, trunk=_features_split(0)[0], rest=_features_split(0)[1],
    roles=(("A", "features.6"), ("B", "classifier.4"), ("HEAD_IN", "classifier.2"), ("HEAD_PRE", "classifier.3")),
))


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


def load_backbone(name: str, weights: str, seed: int = 0) -> LoadedBackbone:
    """Build backbone ``name`` with ``weights``.

    ``weights``: ``none`` (random init, seeded), a torchvision weights name of this backbone
    (``DEFAULT``, ``IMAGENET1K_V1``, ...; loaded through torchvision's API and its cache), or a
    path to a saved ``state_dict``. Offline with an empty cache this raises WeightsUnavailable
    instead of silently continuing with random weights.
    """
    spec = get_backbone(name)
    w = weights.strip()
    if w.lower() == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = spec.build(spec.source_classes)
        return LoadedBackbone(spec, model.eval(), "none", spec.preprocess, None)

    if os.sep in w or w.endswith((".pt", ".pth", ".bin")) or Path(w).exists():
        return _load_state_dict_file(spec, Path(w))

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
            "WEIGHTS at a state_dict file, or set WEIGHTS=none to start from random weights."
        ) from None
    model = spec.build(len(tv_weights.meta["categories"]))
    model.load_state_dict(state)
    t = tv_weights.transforms()
    pre = Preprocess(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std))
    log.info("loaded %s from %s", tv_weights, cached)
    return LoadedBackbone(spec, model.eval(), str(tv_weights), pre, list(tv_weights.meta["categories"]))


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
        raise WeightsUnavailable(
            f"WEIGHTS={path}: not a {spec.name} state_dict (no '{head_key}' entry)"
        )
    model = spec.build(int(state[head_key].shape[0]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsUnavailable(f"WEIGHTS={path} does not fit backbone {spec.name}: {exc}") from None
    return LoadedBackbone(spec, model.eval(), str(path), spec.preprocess, None)
