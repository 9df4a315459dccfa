"""Turn a task's annotations into one training label, deterministically.

(Several <Choices> groups or a multi-label one: :func:`task_answer`, with the rules of
``active_adaptation/layout.py``.)

* Skipped annotations (``was_cancelled``) are not labels.
* An annotation gives the first choice of the project's ``<Choices>`` control; one without a
  choice for that control gives nothing.
* Several annotations on one task: **majority vote**; a tie goes to the label of the most recently
  updated annotation among the tied labels (then the highest annotation id).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from active_adaptation.layout import answer_from_results, resolve_answer


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


# ---------------------------------------------------------------------------- several groups, multi-label
def task_answer(annotations: Iterable[dict], config) -> str | None:
    """A task's label for ``config`` (a ClassificationConfig) as the canonical answer string
    (layout.py): the label for the classic single-choice project (:func:`resolve_label`), else the
    groups' answers resolved by :func:`active_adaptation.layout.resolve_answer`; None: none."""
    layout = config.layout
    if layout.simple:
        return resolve_label(annotations, config.from_name)
    answer = resolve_answer(annotations, layout)
    return None if answer is None else layout.canonical(answer)


def result_answer(result: list, config) -> str | None:
    """The canonical answer a prediction's (or one annotation's) ``result`` holds; None: none."""
    layout = config.layout
    if layout.simple:
        return annotation_choice({"result": result}, config.from_name)
    answer = answer_from_results(result, layout)
    return None if answer is None else layout.canonical(answer)


def unknown_labels(text: str, config) -> list[str]:
    """The labels of a canonical answer that the label config does not have."""
    if config.layout.simple:
        return [] if text in config.labels else [text]
    return config.layout.unknown(config.layout.parse(text))


def prediction_result(config, predicted) -> list[dict]:
    """Label Studio's ``result`` for one predicted answer (a label, or a structured answer dict):
    one ``choices`` item per group (a multi-label group may predict no label: an empty list)."""
    if config.layout.simple:
        return [{"from_name": config.from_name, "to_name": config.to_name, "type": "choices",
                 "value": {"choices": [predicted]}}]
    out = []
    for g in config.layout.groups:
        value = predicted.get(g.name)
        choices = list(value) if g.multiple else ([] if value is None else [value])
        out.append({"from_name": g.name, "to_name": config.to_name, "type": "choices", "value": {"choices": choices}})
    return out
