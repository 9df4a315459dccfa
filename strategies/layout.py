"""What a project's classifier outputs: one or more groups of labels (docs/methods.md §9).

A Label Studio config may ask several questions about one image: one ``<Choices>`` tag per
question, each either single-choice (exactly one label: softmax over the group, cross-entropy) or
``choice="multiple"`` (any subset: one sigmoid per label, binary cross-entropy). The model has one
linear head; its active outputs are the groups' labels side by side, in config order, so that each
group is a contiguous slice of the outputs.

The classic project (one single-choice group) is ``Layout.simple``: every code path then behaves as
it always has (softmax over all outputs, the label string as the answer).

An *answer* (what an annotation says, what the model predicts) is a dict ``{group: label}`` for a
single-choice group and ``{group: [labels...]}`` (sorted) for a multiple-choice group; groups that
were not answered are absent. Its *canonical string* is the label itself for a simple layout and a
sorted-keys JSON otherwise; the backend stores answers as canonical strings (``labels_used``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Group:
    """One question of the label config: a ``<Choices>`` tag's labels, single-choice or multi-label. Project data
    structure, not from a paper (docs/methods.md §9.1)."""

    name: str  # the <Choices> name (Label Studio's from_name)
    labels: tuple[str, ...]
    multiple: bool = False  # choice="multiple": any subset of the labels

    def to_dict(self) -> dict:
        return {"name": self.name, "labels": list(self.labels), "multiple": self.multiple}


@dataclass(frozen=True)
class Layout:
    """The groups of a project's outputs, side by side in config order: the head's slice of each group, its
    probabilities, answers, targets and loss. Project data structure, not from a paper (docs/methods.md §9.1)."""

    groups: tuple[Group, ...]

    def __post_init__(self):
        if not self.groups or any(not g.labels for g in self.groups):
            raise ValueError("a layout needs at least one group, each with at least one label")
        if len({g.name for g in self.groups}) != len(self.groups):
            raise ValueError("two groups of a layout share a name")

    @classmethod
    def single(cls, name: str, labels: Sequence[str]) -> "Layout":
        return cls((Group(name, tuple(labels), False),))

    @property
    def simple(self) -> bool:
        """One single-choice group: the classic classifier."""
        return len(self.groups) == 1 and not self.groups[0].multiple

    @property
    def flat(self) -> tuple[str, ...]:
        """The model's output names in order: the labels for one group, ``group/label`` for several
        (two groups may share a label such as "yes")."""
        if len(self.groups) == 1:
            return self.groups[0].labels
        return tuple(f"{g.name}/{label}" for g in self.groups for label in g.labels)

    def slices(self) -> list[tuple[Group, int, int]]:
        """(group, start, stop) of each group among the outputs."""
        out, start = [], 0
        for g in self.groups:
            out.append((g, start, start + len(g.labels)))
            start += len(g.labels)
        return out

    def describe(self) -> str:
        return ", ".join(
            f"{g.name} ({'multi-label' if g.multiple else 'single-choice'}, {len(g.labels)} labels)"
            for g in self.groups
        )

    # ------------------------------------------------------------------ outputs -> probabilities
    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Per group: a softmax (single-choice) or elementwise sigmoid (multi-label) of its slice."""
        if self.simple:
            return logits.softmax(dim=1)
        parts = [logits[:, a:b].sigmoid() if g.multiple else logits[:, a:b].softmax(dim=1) for g, a, b in self.slices()]
        return torch.cat(parts, dim=1)

    def decode(self, probs: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
        """The predicted answer per row: the most likely label of each single-choice group and every
        label with p >= ``threshold`` of each multi-label group (possibly none)."""
        out: list[dict] = [{} for _ in range(probs.shape[0])]
        for g, a, b in self.slices():
            part = probs[:, a:b]
            if g.multiple:
                on = (part >= threshold).tolist()
                for row, flags in zip(out, on):
                    row[g.name] = sorted(label for label, f in zip(g.labels, flags) if f)
            else:
                for row, j in zip(out, part.argmax(dim=1).tolist()):
                    row[g.name] = g.labels[j]
        return out

    # ------------------------------------------------------------------ answers
    def canonical(self, answer: Mapping) -> str:
        """The answer as one string (what ``labels_used`` keeps): the label itself for a simple
        layout, a sorted-keys JSON otherwise."""
        if self.simple:
            return str(answer[self.groups[0].name])
        clean = {k: (sorted(v) if isinstance(v, (list, tuple, set, frozenset)) else v) for k, v in answer.items()}
        return json.dumps(clean, sort_keys=True, ensure_ascii=False)

    def parse(self, text: str) -> dict:
        """The answer a canonical string stands for."""
        if self.simple:
            return {self.groups[0].name: text}
        answer = json.loads(text)
        if not isinstance(answer, dict):
            raise ValueError(f"not a structured answer: {text!r}")
        return answer

    def unknown(self, answer: Mapping) -> list[str]:
        """Labels of ``answer`` that its group does not have (e.g. the config lost a label)."""
        bad = []
        for g in self.groups:
            if g.name not in answer:
                continue
            value = answer[g.name]
            for label in value if g.multiple else [value]:
                if label not in g.labels:
                    bad.append(f"{g.name}={label}" if len(self.groups) > 1 else str(label))
        return bad

    def target(self, answer: Mapping) -> torch.Tensor:
        """The training target over the outputs: 1/0 per label of an answered group, NaN for the
        labels of a group the answer leaves out (no loss there)."""
        t = torch.full((len(self.flat),), float("nan"))
        for g, a, b in self.slices():
            if g.name not in answer:
                continue
            value = answer[g.name]
            chosen = set(value) if g.multiple else {value}
            t[a:b] = torch.tensor([1.0 if label in chosen else 0.0 for label in g.labels])
        return t

    def agrees(self, predicted: Mapping, truth: Mapping) -> bool:
        """Whether a prediction matches an answer on every group the answer gives (exact set match
        for a multi-label group)."""
        for g in self.groups:
            if g.name not in truth:
                continue
            p, t = predicted.get(g.name), truth[g.name]
            if g.multiple:
                if sorted(p or []) != sorted(t):
                    return False
            elif p != t:
                return False
        return True

    def per_class(self, answers: Iterable[Mapping]) -> Counter:
        """How many answers hold each output (``flat`` name): the dashboard's labels per class."""
        counts: Counter = Counter()
        names = dict(zip([(g.name, label) for g in self.groups for label in g.labels], self.flat))
        for answer in answers:
            for g in self.groups:
                if g.name in answer:
                    value = answer[g.name]
                    for label in value if g.multiple else [value]:
                        if (g.name, label) in names:
                            counts[names[(g.name, label)]] += 1
        return counts

    # ------------------------------------------------------------------ training
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sum over groups of the mean loss over the examples that answer the group: cross-entropy
        for a single-choice group, binary cross-entropy (per label, averaged) for a multi-label one."""
        total = logits.new_zeros(())
        for g, a, b in self.slices():
            part, target = logits[:, a:b], targets[:, a:b]
            answered = ~torch.isnan(target).any(dim=1)
            if not answered.any():
                continue
            if g.multiple:
                total = total + torch.nn.functional.binary_cross_entropy_with_logits(part[answered], target[answered])
            else:
                total = total + torch.nn.functional.cross_entropy(part[answered], target[answered].argmax(dim=1))
        return total

    def to_dict(self) -> list[dict]:
        return [g.to_dict() for g in self.groups]

    @classmethod
    def from_dict(cls, groups: Sequence[Mapping]) -> "Layout":
        return cls(tuple(Group(str(g["name"]), tuple(g["labels"]), bool(g.get("multiple"))) for g in groups))


def answer_from_results(results: Iterable, layout: Layout) -> dict | None:
    """The answer one annotation's (or prediction's) ``result`` list gives for ``layout``; None
    when it gives nothing usable.

    * A single-choice group takes its first choice; a group without a result is not answered.
    * A multi-label group takes the set of its choices. A submitted annotation that answers some
      group but has no result for a multi-label group says "none of these labels" there (Label
      Studio saves no result for an empty multiple choice). An annotation with no choices at all
      is not an answer when the layout has a single-choice group (nothing was chosen where a
      choice is due: most likely submitted by mistake); when every group is multi-label it says
      "none of the labels" everywhere (Label Studio offers no other way to say so).
    Project rule, not from a paper (docs/methods.md §9.2).
    """
    by_name = {g.name: g for g in layout.groups}
    answer: dict = {}
    for item in results or []:
        if not isinstance(item, dict) or item.get("type") != "choices" or item.get("from_name") not in by_name:
            continue
        g = by_name[item["from_name"]]
        choices = [str(c) for c in ((item.get("value") or {}).get("choices") or [])]
        if g.multiple:
            answer[g.name] = sorted(set(answer.get(g.name, [])) | set(choices))
        elif choices and g.name not in answer:
            answer[g.name] = choices[0]
    if not answer and not all(g.multiple for g in layout.groups):
        return None
    for g in layout.groups:
        if g.multiple and g.name not in answer:
            answer[g.name] = []
    return answer


def resolve_answer(annotations: Iterable[dict], layout: Layout) -> dict | None:
    """One answer from a task's annotations (skipped ones are not answers), group by group: a
    single-choice group by majority vote, a multi-label group label by label (a label is on when
    more than half of the annotations answering the group choose it); ties go to the most recently
    updated annotation (then the highest id).
    Project rule, not from a paper (docs/methods.md §9.2)."""
    voted = []
    for a in annotations or []:
        if isinstance(a, dict) and not a.get("was_cancelled"):
            answer = answer_from_results(a.get("result"), layout)
            if answer is not None:
                voted.append((a, answer))
    if not voted:
        return None
    voted.sort(key=lambda pair: (str(pair[0].get("updated_at") or ""), pair[0].get("id") or 0))
    out: dict = {}
    for g in layout.groups:
        answers = [(a, ans[g.name]) for a, ans in voted if g.name in ans]
        if not answers:
            continue
        latest = answers[-1][1]
        if g.multiple:
            n = len(answers)
            counts = Counter(label for _, labels in answers for label in labels)
            out[g.name] = sorted(
                label
                for label in set(counts) | set(latest)
                if counts[label] * 2 > n or (counts[label] * 2 == n and label in latest)
            )
        else:
            counts = Counter(label for _, label in answers)
            top = max(counts.values())
            out[g.name] = next(label for _, label in reversed(answers) if counts[label] == top)
    return out
