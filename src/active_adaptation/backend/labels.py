"""Turn a task's annotations into one training label, deterministically.

* Skipped annotations (``was_cancelled``) are not labels.
* An annotation gives the first choice of the project's ``<Choices>`` control; one without a
  choice for that control gives nothing.
* Several annotations on one task: **majority vote**; a tie goes to the label of the most recently
  updated annotation among the tied labels (then the highest annotation id).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable


def annotation_choice(annotation: dict, from_name: str) -> str | None:
    if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
        return None
    for item in annotation.get("result") or []:
        if isinstance(item, dict) and item.get("from_name") == from_name and item.get("type") == "choices":
            choices = (item.get("value") or {}).get("choices") or []
            if choices:
                return str(choices[0])
    return None


def resolve_label(annotations: Iterable[dict], from_name: str) -> str | None:
    voted = [(a, c) for a in annotations or [] if (c := annotation_choice(a, from_name)) is not None]
    if not voted:
        return None
    counts = Counter(c for _, c in voted)
    top = max(counts.values())
    tied = {c for c, n in counts.items() if n == top}
    latest = max((a for a, c in voted if c in tied), key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0))
    return annotation_choice(latest, from_name)
