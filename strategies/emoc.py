"""EMOC, expected model output change (Käding et al. 2016), closed form for the last linear layer
(METHODS.md §2.2). Larger = label first.

For a candidate x' with penultimate features h', probabilities p' and label y', one SGD step on
-log p_y'(x') changes the head by g' h'^T (g' = p' - e_y'). To first order, the output of a reference
x changes by

    logits: (h(x)·h' + 1) g'                     probabilities: (h(x)·h' + 1) J_s(x) g'

with J_s(x) g' = p_x ⊙ g' - p_x (p_x·g'). EMOC(x') is the mean over references of the L1 norm of
that change, with y' the MAP label (the paper) or marginalised over p' ("marginal").
"""
from __future__ import annotations

import torch

from .base import Need, ScoringInputs, Strategy
from .registry import register
from .uncertainty import uniform_from_keys


def emoc_last_layer(h_cand: torch.Tensor, p_cand: torch.Tensor, h_ref: torch.Tensor, p_ref: torch.Tensor,
                    output: str = "prob", label: str = "map", bias: bool = True, chunk: int = 256,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
    """EMOC of every candidate against the references; (n,) float64.

    h_*: penultimate features (the input of the last Linear), p_*: softmax outputs.
    output: "prob" (f = softmax, default) or "logit"; label: "map" or "marginal". ``labels`` (n,)
    fixes each candidate's label instead (the set form, Eq. 5, gives a set's members one label).
    """
    h_cand, p_cand = h_cand.to(torch.float64), p_cand.to(torch.float64)
    h_ref, p_ref = h_ref.to(torch.float64), p_ref.to(torch.float64)
    n, c = p_cand.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.float64)
    eye = torch.eye(c, dtype=torch.float64)
    out = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, chunk):
        hc, pc = h_cand[start:start + chunk], p_cand[start:start + chunk]
        k = (h_ref @ hc.T + (1.0 if bias else 0.0)).abs()  # (M, b)
        if labels is not None:
            ys = [labels[start:start + chunk].reshape(-1, 1).long()]
            weights = [torch.ones(pc.shape[0], 1, dtype=torch.float64)]
        elif label == "map":
            ys = [pc.argmax(dim=1, keepdim=True)]
            weights = [torch.ones(pc.shape[0], 1, dtype=torch.float64)]
        elif label == "marginal":
            ys = [torch.full((pc.shape[0], 1), y, dtype=torch.long) for y in range(c)]
            weights = [pc[:, y:y + 1] for y in range(c)]
        else:
            raise ValueError(f"label={label!r}; allowed: map, marginal")
        total = torch.zeros(hc.shape[0], dtype=torch.float64)
        for y, w in zip(ys, weights):
            g = pc - eye[y.squeeze(1)]  # (b, C)
            if output == "logit":
                change = g.abs().sum(dim=1)[None, :].expand_as(k)
            elif output == "prob":
                pg = p_ref @ g.T  # (M, b)
                js = p_ref[:, None, :] * g[None, :, :] - p_ref[:, None, :] * pg[:, :, None]  # (M, b, C)
                change = js.abs().sum(dim=2)
            else:
                raise ValueError(f"output={output!r}; allowed: prob, logit")
            total += w.squeeze(1) * (k * change).mean(dim=0)
        out[start:start + chunk] = total
    return out


@register
class EMOCStrategy(Strategy):
    name = "emoc"
    needs = frozenset({Need.PROBS, Need.EMBEDDINGS, Need.KEYS})
    description = ("Expected model output change of the last layer (closed form): uncertainty weighted by "
                   "how much a label would change the outputs on a reference sample of the pool.")

    def __init__(self, seed: int = 0, references: int = 2000, output: str = "prob", label: str = "map",
                 bias: bool = True) -> None:
        super().__init__(seed)
        if output not in ("prob", "logit") or label not in ("map", "marginal") or references < 1:
            raise TypeError("output must be prob|logit, label map|marginal, references >= 1")
        self.references, self.output, self.label, self.bias = int(references), output, label, bool(bias)

    def params(self) -> dict:
        return {"seed": self.seed, "references": self.references, "output": self.output, "label": self.label,
                "bias": self.bias}

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        h, p = inputs.require(Need.EMBEDDINGS), inputs.require(Need.PROBS)
        keys = [str(k) for k in inputs.require(Need.KEYS)]
        # a seeded reference sample chosen by key, so that it does not depend on the pool's order
        draw = uniform_from_keys(keys, self.seed + 7919)
        ref = torch.argsort(draw)[: self.references]
        return emoc_last_layer(h, p, h[ref], p[ref], self.output, self.label, self.bias)
