"""Parse a Label Studio label config into what an image classifier needs."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from label_studio_sdk.label_interface import LabelInterface

from active_adaptation.errors import LabelConfigError

SUPPORTED = (
    "an <Image> tag and a single-choice <Choices> tag (choice=\"single\" or \"single-radio\") "
    "whose toName is that image, with at least one <Choice>"
)


@dataclass(frozen=True)
class ClassificationConfig:
    from_name: str  # the <Choices> name
    to_name: str  # the <Image> name
    value_key: str  # task data key holding the image reference ("image" for value="$image")
    labels: tuple[str, ...]

    def to_dict(self) -> dict:
        """As saved in a checkpoint's meta.json and in a project's registration."""
        return {"from_name": self.from_name, "to_name": self.to_name, "value_key": self.value_key,
                "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, c: dict) -> "ClassificationConfig":
        return cls(c["from_name"], c["to_name"], c["value_key"], tuple(c["labels"]))

    @property
    def fingerprint(self) -> str:
        text = "\x1f".join((self.from_name, self.to_name, self.value_key, *self.labels))
        return hashlib.sha1(text.encode()).hexdigest()[:8]


def parse_label_config(config: str) -> ClassificationConfig:
    """Return the image-classification part of ``config`` or raise LabelConfigError that says
    what is missing and what is supported."""
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError(f"the label config is empty; this backend supports {SUPPORTED}")
    try:
        interface = LabelInterface(config)
    except Exception as exc:
        raise LabelConfigError(f"the label config is not valid XML ({exc}); this backend supports {SUPPORTED}") from None

    images = {o.name: o for o in interface.objects if o.tag.lower() == "image"}
    if not images:
        tags = sorted({o.tag for o in interface.objects}) or ["none"]
        raise LabelConfigError(f"no <Image> tag found (object tags: {', '.join(tags)}); this backend supports {SUPPORTED}")
    choices = [c for c in interface.controls if c.tag.lower() == "choices"]
    if not choices:
        tags = sorted({c.tag for c in interface.controls}) or ["none"]
        raise LabelConfigError(f"no <Choices> tag found (control tags: {', '.join(tags)}); this backend supports {SUPPORTED}")

    problems = []
    for control in choices:
        targets = [t for t in control.to_name if t in images]
        mode = (control.attr.get("choice") or "single").lower()
        if not targets:
            problems.append(f"<Choices name=\"{control.name}\"> does not point at an <Image> (toName={control.to_name})")
        elif mode not in ("single", "single-radio"):
            problems.append(f"<Choices name=\"{control.name}\"> allows multiple choices (choice=\"{mode}\")")
        elif not control.labels:
            problems.append(f"<Choices name=\"{control.name}\"> has no <Choice> values")
        else:
            image = images[targets[0]]
            value = image.value or ""
            if not value.startswith("$") or len(value) < 2:
                problems.append(f"<Image name=\"{image.name}\"> has value={value!r}, expected a task field like \"$image\"")
                continue
            return ClassificationConfig(control.name, image.name, value[1:], tuple(control.labels))
    raise LabelConfigError("; ".join(problems) + f". This backend supports {SUPPORTED}")
