"""Backbone families: how every architecture of one torchvision module runs as a chain of stages.

A family describes, for every torchvision architecture built by one module (resnet.py, vgg.py, ...),
how a model of it runs as a chain of stages, where its classifier head is, where its layer roles
(ADMA's A and B, EMOC's hidden layer) are, which roles it cannot declare and why, and the default
freeze boundary (as in the ADMA paper, see docs/methods.md §1.2: "first two layers for AlexNet, first
seven for VGG-16, first eight for ResNet-18", counting weight layers in forward order). Also the
small CNN's family and timm's EfficientNet (efficientnet_lite0). A backbone is one architecture with
a freeze boundary: trunk = the first k stages (frozen, cached), rest = the other stages + post.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


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
