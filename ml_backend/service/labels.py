"""Turn a task's annotations into one training label, deterministically, for the project's label
config (the rules themselves live in ``strategies/layout.py``, one implementation for the
classic single-choice project, several groups and multi-label):

* Skipped annotations (``was_cancelled``) are not labels.
* An annotation gives the first choice of a single-choice ``<Choices>`` control (the set of choices
  of a multi-label one); one without a choice for that control gives nothing for it.
* Several annotations on one task: **majority vote**; a tie goes to the label of the most recently
  updated annotation among the tied labels (then the highest annotation id).

A label is kept as the canonical answer string (``Layout.canonical``): the label itself for the
classic project, a sorted-keys JSON for several groups or multi-label.
"""

from __future__ import annotations

from typing import Iterable

from strategies.layout import answer_from_results, resolve_answer


def task_answer(annotations: Iterable[dict], config) -> str | None:
    """A task's label for ``config`` (a ClassificationConfig) as the canonical answer string; None: none."""
    answer = resolve_answer(annotations, config.layout)
    return None if answer is None else config.layout.canonical(answer)


def result_answer(result: list, config) -> str | None:
    """The canonical answer a prediction's (or one annotation's) ``result`` holds; None: none."""
    answer = answer_from_results(result, config.layout)
    return None if answer is None else config.layout.canonical(answer)


def unknown_labels(text: str, config) -> list[str]:
    """The labels of a canonical answer that the label config does not have."""
    return config.layout.unknown(config.layout.parse(text))


def prediction_result(config, predicted) -> list[dict]:
    """Label Studio's ``result`` for one predicted answer (a label, or a structured answer dict):
    one ``choices`` item per group (a multi-label group may predict no label: an empty list)."""
    if config.layout.simple:
        return [
            {
                "from_name": config.from_name,
                "to_name": config.to_name,
                "type": "choices",
                "value": {"choices": [predicted]},
            }
        ]
    out = []
    for g in config.layout.groups:
        value = predicted.get(g.name)
        choices = list(value) if g.multiple else ([] if value is None else [value])
        out.append({"from_name": g.name, "to_name": config.to_name, "type": "choices", "value": {"choices": choices}})
    return out
