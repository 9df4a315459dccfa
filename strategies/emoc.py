"""EMOC, expected model output change (Käding et al. 2016), closed form for the last linear layer
(docs/methods.md §2.2). Larger = label first.

For a candidate x' with penultimate features h', probabilities p' and label y', one SGD step on
-log p_y'(x') changes the head by g' h'^T (g' = p' - e_y'). To first order, the output of a reference
x changes by

    logits: (h(x)·h' + 1) g'                     probabilities: (h(x)·h' + 1) J_s(x) g'

with J_s(x) g' = p_x ⊙ g' - p_x (p_x·g'). EMOC(x') is the mean over references of the L1 norm of
that change, with y' the MAP label (the paper) or marginalised over p' ("marginal").
"""

from __future__ import annotations

import torch

from .base import Need, ScoringInputs, Strategy, recall_pool, remember_pool, values_from_pool
from .registry import register
from .uncertainty import uniform_from_keys
from .value_batch import BATCH_MODES, ValueBatch


def emoc_last_layer(
    h_cand: torch.Tensor,
    p_cand: torch.Tensor,
    h_ref: torch.Tensor,
    p_ref: torch.Tensor,
    output: str = "prob",
    label: str = "map",
    bias: bool = True,
    chunk: int = 256,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """EMOC of every candidate against the references; (n,) float64.

    h_*: penultimate features (the input of the last Linear), p_*: softmax outputs.
    output: "prob" (f = softmax, default) or "logit"; label: "map" or "marginal". ``labels`` (n,)
    fixes each candidate's label instead (the set form, Eq. 5, gives a set's members one label).
    EMOC (Käding et al. 2016): the closed form of docs/methods.md §2.2.
    """
    h_cand, p_cand = h_cand.to(torch.float64), p_cand.to(torch.float64)
    h_ref, p_ref = h_ref.to(torch.float64), p_ref.to(torch.float64)
    n, c = p_cand.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.float64)
    eye = torch.eye(c, dtype=torch.float64)
    out = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, chunk):
        hc, pc = h_cand[start : start + chunk], p_cand[start : start + chunk]
        k = (h_ref @ hc.T + (1.0 if bias else 0.0)).abs()  # (M, b)
        if labels is not None:
            ys = [labels[start : start + chunk].reshape(-1, 1).long()]
            weights = [torch.ones(pc.shape[0], 1, dtype=torch.float64)]
        elif label == "map":
            ys = [pc.argmax(dim=1, keepdim=True)]
            weights = [torch.ones(pc.shape[0], 1, dtype=torch.float64)]
        elif label == "marginal":
            ys = [torch.full((pc.shape[0], 1), y, dtype=torch.long) for y in range(c)]
            weights = [pc[:, y : y + 1] for y in range(c)]
        else:
            raise ValueError(f"label={label!r}; allowed: map, marginal")
        total = torch.zeros(hc.shape[0], dtype=torch.float64)
        for y, w in zip(ys, weights):
            g = pc - eye[y.squeeze(1)]  # (b, C)
            if output == "logit":
                change = g.abs().sum(dim=1)[None, :].expand_as(k)
            elif output == "prob":
                # ||J_s(x) g'||_1 = Σ_c p_c |g'_c - p·g'| (p_c >= 0): one (M, b, C) temporary
                pg = p_ref @ g.T  # (M, b)
                change = torch.einsum("mbc,mc->mb", (g[None, :, :] - pg[:, :, None]).abs_(), p_ref)
            else:
                raise ValueError(f"output={output!r}; allowed: prob, logit")
            total += w.squeeze(1) * (k * change).mean(dim=0)
        out[start : start + chunk] = total
    return out


def emoc_two_layer(
    a_cand: torch.Tensor,
    u_cand: torch.Tensor,
    p_cand: torch.Tensor,
    a_ref: torch.Tensor,
    u_ref: torch.Tensor,
    p_ref: torch.Tensor,
    weight: torch.Tensor,
    label: str = "map",
    chunk: int = 64,
) -> torch.Tensor:
    """EMOC over a two-layer head Linear(U, c) -> ReLU -> Linear(W, b) (fc7 + fc8 of VGG/AlexNet),
    closed form (docs/methods.md §2.4), softmax outputs. ``a``: input of the first layer, ``u``: its
    pre-activation, ``weight``: W (C, H). One SGD step on candidate x' changes the logits of x by

        dz(x) = (h·h' + 1) g' + (a·a' + 1) W (σ'(u) ⊙ σ'(u') ⊙ Wᵀ g'),   h = relu(u), σ' = 1[u > 0]

    and EMOC(x') = mean_x ||J_s(x) dz(x)||₁, with g' = p' - e_y' (MAP label or marginalised).
    EMOC of Käding et al. 2016; the two-layer closed form is the project's."""
    a_cand, u_cand, p_cand = a_cand.to(torch.float64), u_cand.to(torch.float64), p_cand.to(torch.float64)
    a_ref, u_ref, p_ref = a_ref.to(torch.float64), u_ref.to(torch.float64), p_ref.to(torch.float64)
    w = weight.to(torch.float64)
    n, c = p_cand.shape
    out = torch.zeros(n, dtype=torch.float64)
    if n == 0:
        return out
    h_ref, mask_ref = u_ref.clamp_min(0), (u_ref > 0).to(torch.float64)  # (M, H)
    eye = torch.eye(c, dtype=torch.float64)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        pc, hc, mc = p_cand[sl], u_cand[sl].clamp_min(0), (u_cand[sl] > 0).to(torch.float64)
        if label == "map":
            ys, weights = [pc.argmax(dim=1)], [torch.ones(pc.shape[0], dtype=torch.float64)]
        elif label == "marginal":
            ys, weights = (
                [torch.full((pc.shape[0],), y, dtype=torch.long) for y in range(c)],
                [pc[:, y] for y in range(c)],
            )
        else:
            raise ValueError(f"label={label!r}; allowed: map, marginal")
        kh = h_ref @ hc.T + 1.0  # (M, b)
        ka = a_ref @ a_cand[sl].T + 1.0  # (M, b)
        for y, wt in zip(ys, weights):
            g = pc - eye[y]  # (b, C)
            v = mc * (g @ w)  # σ'(u') ⊙ Wᵀ g'  (b, H)
            # W (σ'(u) ⊙ v): for every reference m and candidate j, (M, b, C)
            second = torch.einsum("mh,bh,ch->mbc", mask_ref, v, w)
            dz = kh[:, :, None] * g[None, :, :] + ka[:, :, None] * second
            pg = (p_ref[:, None, :] * dz).sum(dim=2, keepdim=True)
            change = (p_ref[:, None, :] * dz - p_ref[:, None, :] * pg).abs().sum(dim=2)  # (M, b)
            out[sl] += wt * change.mean(dim=0)
    return out


MIN_REFERENCES = 100


@register
class EMOCStrategy(Strategy):
    """EMOC, expected model output change (Käding, Freytag, Rodner & Denzler, 'Active and Continuous Exploration with
    Deep Neural Networks and Expected Model Output Changes', 2016; docs/methods.md §2): per candidate, the mean
    change of the outputs on a reference sample that one labeled step would cause."""

    name = "emoc"
    needs = frozenset({Need.PROBS, Need.EMBEDDINGS, Need.KEYS, Need.LABELED_EMBEDDINGS, Need.LABELED_PROBS})
    description = (
        "Expected model output change of the last layer (closed form): uncertainty weighted by "
        "how much a label would change the outputs on a reference sample of the data."
    )
    pool_relative = True  # the reference sample is drawn from the whole pool (and the labeled set)

    def __init__(
        self,
        seed: int = 0,
        references: int = 2000,
        output: str = "prob",
        label: str = "map",
        bias: bool = True,
        head_layers: int = 1,
        reference_set: str = "all",
        pairs: int = 40_000_000,
        temperature: float = 1.0,
        batch: str = "none",
        budget: int = 256,
        candidates: int = 20_000,
    ) -> None:
        super().__init__(seed)
        if output not in ("prob", "logit") or label not in ("map", "marginal") or references < 1 or pairs < 0:
            raise TypeError("output must be prob|logit, label map|marginal, references >= 1, pairs >= 0")
        if head_layers not in (1, 2) or (head_layers == 2 and (output != "prob" or not bias)):
            raise TypeError("head_layers must be 1 or 2 (2: the two-layer closed form, softmax output with bias)")
        if reference_set not in ("all", "unlabeled"):
            raise TypeError("reference_set must be all (labeled and unlabeled, the paper) or unlabeled")
        self.references, self.output, self.label, self.bias = int(references), output, label, bool(bias)
        self.head_layers, self.reference_set = int(head_layers), reference_set
        self.pairs = int(pairs)
        if not float(temperature) > 0:
            raise TypeError("temperature must be > 0 (1: the model's own posterior)")
        self.temperature = float(temperature)  # docs/methods.md §2.5
        if batch not in BATCH_MODES:
            raise TypeError(f"batch must be one of {', '.join(BATCH_MODES)}")
        self.batch = batch
        self.batcher = ValueBatch(seed, budget, candidates)  # docs/methods.md §4.8; checks budget, candidates
        extra = {Need.FEATURES, Need.HEAD_WEIGHT} if head_layers == 2 else set()
        if head_layers == 2 and reference_set == "all":
            extra.add(Need.LABELED_FEATURES)
        self.needs = frozenset(type(self).needs | extra)

    def params(self) -> dict:
        return {
            "seed": self.seed,
            "references": self.references,
            "output": self.output,
            "label": self.label,
            "bias": self.bias,
            "head_layers": self.head_layers,
            "reference_set": self.reference_set,
            "pairs": self.pairs,
            "temperature": int(self.temperature) if self.temperature.is_integer() else self.temperature,
            "batch": self.batch,
            "budget": self.batcher.budget,
            "candidates": self.batcher.candidates,
        }

    def reference_count(self, n: int) -> int:
        """How many references value a pool of ``n`` candidates: ``references``, fewer when
        n x references would exceed ``pairs`` (0: never), but never fewer than 100 (docs/methods.md §10)."""
        if not self.pairs or n * self.references <= self.pairs:
            return self.references
        return min(self.references, max(MIN_REFERENCES, self.pairs // max(n, 1)))

    def layers(self) -> tuple[str, ...]:
        # the input of the penultimate Linear and its pre-activation (roles of each backbone)
        return ("HEAD_IN", "HEAD_PRE") if self.head_layers == 2 else ()

    def _candidates(self, inputs: ScoringInputs) -> dict:
        out = {"h": inputs.require(Need.EMBEDDINGS), "p": self._tempered(inputs.require(Need.PROBS))}
        if self.head_layers == 2:
            feats = inputs.require(Need.FEATURES, self.layers())
            out.update(a=feats["HEAD_IN"].flatten(1), u=feats["HEAD_PRE"].flatten(1))
        return out

    def _reference(self, inputs: ScoringInputs, cand: dict) -> dict:
        """The reference sample (docs/methods.md §2.2): ``references`` items drawn uniformly from the
        unlabeled pool and the labeled set, redrawn every round; unlabeled items are drawn by a hash
        of their key, so the sample does not depend on the pool's order."""
        keys = [str(k) for k in inputs.require(Need.KEYS)]
        draw = uniform_from_keys(keys, self.seed + 7919 + 1_000_003 * inputs.round)
        parts = {k: [v] for k, v in cand.items()}
        n_l = 0
        if self.reference_set == "all" and inputs.labeled_embeddings is not None and inputs.labeled_embeddings.shape[0]:
            n_l = inputs.labeled_embeddings.shape[0]
            parts["h"].append(inputs.labeled_embeddings)
            parts["p"].append(self._tempered(inputs.require(Need.LABELED_PROBS)))
            if self.head_layers == 2:
                feats = inputs.require(Need.LABELED_FEATURES, self.layers())
                parts["a"].append(feats["HEAD_IN"].flatten(1))
                parts["u"].append(feats["HEAD_PRE"].flatten(1))
            g = torch.Generator().manual_seed(self.seed * 7907 + inputs.round)
            draw = torch.cat([draw, torch.rand(n_l, generator=g, dtype=torch.float64)])
        pick = torch.argsort(draw, stable=True)[: self.reference_count(inputs.n)]
        ref = {k: torch.cat([t.to(torch.float64) for t in v])[pick] for k, v in parts.items()}
        ref["labeled"] = int((pick >= len(keys)).sum())
        return ref

    def _tempered(self, p: torch.Tensor) -> torch.Tensor:
        """The posterior at ``temperature`` T: softmax(log p / T) = softmax(z / T) (docs/methods.md §2.5);
        T = 1 returns ``p`` unchanged."""
        if self.temperature == 1.0:
            return p
        logp = p.to(torch.float64).clamp_min(1e-300).log()
        return (logp / self.temperature).softmax(dim=1)

    def _values(self, cand: dict, ref: dict, weight: torch.Tensor | None) -> torch.Tensor:
        if self.head_layers == 2:
            return emoc_two_layer(cand["a"], cand["u"], cand["p"], ref["a"], ref["u"], ref["p"], weight, self.label)
        return emoc_last_layer(cand["h"], cand["p"], ref["h"], ref["p"], self.output, self.label, self.bias)

    def acquisition(self, inputs: ScoringInputs) -> torch.Tensor:
        cand = self._candidates(inputs)
        weight = inputs.require(Need.HEAD_WEIGHT) if self.head_layers == 2 else None
        key = ("emoc", tuple(sorted(self.params().items())))
        if not inputs.full_pool:  # a request's tasks: against the reference of the last full-pool scoring
            entry = recall_pool(inputs, key, self.name)
            ref = entry["reference"]
            values = values_from_pool(
                inputs, entry, lambda idx: self._values({k: v[idx] for k, v in cand.items()}, ref, ref.get("weight"))
            )
            return values if self.batch == "none" else self.batcher(inputs, values, ("emoc-batch", key), self.name)
        ref = self._reference(inputs, cand)
        values = self._values(cand, ref, weight)
        self._info = {"references": int(ref["h"].shape[0]), "labeled_references": ref["labeled"]}
        if self.reference_count(inputs.n) < self.references:
            self._info["references_capped"] = (
                f"{self.references} -> {self.reference_count(inputs.n)} (pairs={self.pairs})"
            )
        remember_pool(
            inputs, key, values, **ref, **({"weight": weight.to(torch.float64)} if weight is not None else {})
        )
        if self.batch != "none":  # a value-weighted diverse queue (docs/methods.md §4.8)
            values = self.batcher(inputs, values, ("emoc-batch", key), self.name)
            self._info.update(self.batcher.info)
        return values

    def info(self) -> dict:
        return dict(getattr(self, "_info", {}))
