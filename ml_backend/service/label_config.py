"""Parse a Label Studio label config into what an image classifier needs."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from label_studio_sdk.label_interface import LabelInterface

from ml_backend.errors import LabelConfigError
from strategies.layout import Group, Layout

SUPPORTED = (
    "an <Image> tag and one or more <Choices> tags whose toName is that image, each with at least one "
    '<Choice> and choice="single", "single-radio" or "multiple"'
)
MODES = {"single": False, "single-radio": False, "multiple": True}


@dataclass(frozen=True)
class ClassificationConfig:
    from_name: str  # the <Choices> name
    to_name: str  # the <Image> name
    value_key: str  # task data key holding the image reference ("image" for value="$image")
    labels: tuple[str, ...]  # the model's outputs: the labels, or ``group/label`` for several groups
    # Several <Choices>, or a multiple-choice one (core: strategies/layout.py); () for the
    # classic single-choice project (``from_name`` and ``labels`` say everything).
    groups: tuple[Group, ...] = ()

    def to_dict(self) -> dict:
        """As saved in a checkpoint's meta.json and in a project's registration."""
        out = {
            "from_name": self.from_name,
            "to_name": self.to_name,
            "value_key": self.value_key,
            "labels": list(self.labels),
        }
        if self.groups:
            out["groups"] = [g.to_dict() for g in self.groups]
        return out

    @classmethod
    def from_dict(cls, c: dict) -> "ClassificationConfig":
        groups = Layout.from_dict(c["groups"]).groups if c.get("groups") else ()
        return cls(c["from_name"], c["to_name"], c["value_key"], tuple(c["labels"]), groups)

    @functools.cached_property
    def layout(self) -> Layout:  # built once per config (every prediction's result goes through it)
        return Layout(self.groups) if self.groups else Layout.single(self.from_name, self.labels)

    @property
    def fingerprint(self) -> str:
        parts = [self.from_name, self.to_name, self.value_key, *self.labels]
        if self.groups:
            parts += [f"{g.name}:{'multiple' if g.multiple else 'single'}" for g in self.groups]
        return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:8]


def parse_label_config(config: str) -> ClassificationConfig:
    """Return the image-classification part of ``config`` or raise LabelConfigError that says
    what is missing and what is supported."""
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError(f"the label config is empty; this backend supports {SUPPORTED}")
    try:
        interface = LabelInterface(config)
    except Exception as exc:
        raise LabelConfigError(
            f"the label config is not valid XML ({exc}); this backend supports {SUPPORTED}"
        ) from None

    images = {o.name: o for o in interface.objects if o.tag.lower() == "image"}
    if not images:
        tags = sorted({o.tag for o in interface.objects}) or ["none"]
        raise LabelConfigError(
            f"no <Image> tag found (object tags: {', '.join(tags)}); this backend supports {SUPPORTED}"
        )
    choices = [c for c in interface.controls if c.tag.lower() == "choices"]
    if not choices:
        tags = sorted({c.tag for c in interface.controls}) or ["none"]
        raise LabelConfigError(
            f"no <Choices> tag found (control tags: {', '.join(tags)}); this backend supports {SUPPORTED}"
        )

    problems, ignored, groups, image = [], [], [], None
    for control in choices:
        targets = [t for t in control.to_name if t in images]
        mode = (control.attr.get("choice") or "single").lower()
        if not targets:  # a question about another object (a <Text>): not this backend's
            ignored.append(f'<Choices name="{control.name}"> does not point at an <Image> (toName={control.to_name})')
        elif mode not in MODES:
            problems.append(f'<Choices name="{control.name}"> has choice="{mode}"')
        elif not control.labels:
            problems.append(f'<Choices name="{control.name}"> has no <Choice> values')
        elif image is not None and images[targets[0]].name != image.name:
            problems.append(
                f'<Choices name="{control.name}"> points at <Image name="{targets[0]}"> while '
                f'<Choices name="{groups[0].name}"> points at <Image name="{image.name}"> '
                "(one image per task)"
            )
        else:
            image = images[targets[0]]
            groups.append(Group(control.name, tuple(control.labels), MODES[mode]))
    if problems or not groups:
        raise LabelConfigError("; ".join(problems or ignored) + f". This backend supports {SUPPORTED}")
    value = image.value or ""
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(
            f'<Image name="{image.name}"> has value={value!r}, expected a task field like '
            f'"$image"; this backend supports {SUPPORTED}'
        )
    layout = Layout(tuple(groups))
    first = groups[0]
    if layout.simple:
        return ClassificationConfig(first.name, image.name, value[1:], first.labels)
    return ClassificationConfig(first.name, image.name, value[1:], layout.flat, layout.groups)
