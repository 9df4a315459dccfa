"""Set criteria of the EMOC paper's protocol (docs/methods.md §2.3, §4.1): one set X' of K items is
chosen per step among M candidate sets. Every criterion returns one value per set, larger = pick.

* ``random``: a seeded uniform value per set;
* ``min``: least confidence averaged over the set, i.e. -mean max p;
* ``1-vs-2``: -mean (p(1) - p(2));
* ``max``: +mean max p (the most certain set; expected to lose);
* ``emoc``: Eq. 5, the sum over members of their EMOC, all members taking the set's label
  ŷ'(X') = argmax_c mean_{x'∈X'} p(c|x').

In production the backend uses per-instance criteria with top-b; sets are for the simulation's
known+novel-classes track, which reproduces the paper's protocol.
"""

from __future__ import annotations

import torch

from .emoc import emoc_last_layer

SET_CRITERIA = ("random", "min", "1-vs-2", "max", "emoc")


def set_criterion(
    name: str,
    sets: torch.Tensor,
    probs: torch.Tensor,
    embeddings: torch.Tensor | None = None,
    ref_embeddings: torch.Tensor | None = None,
    ref_probs: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Values (M,) for the candidate ``sets`` (M, K) of pool indices; larger = pick.
    The set criteria of the EMOC paper's protocol (Käding et al. 2016); docs/methods.md §2.3, §4.1."""
    p = probs.to(torch.float64)
    members = p[sets]  # (M, K, C)
    if name == "random":
        return torch.rand(sets.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if name == "min":
        return -members.max(dim=2).values.mean(dim=1)
    if name == "1-vs-2":
        if p.shape[1] < 2:
            return torch.zeros(sets.shape[0], dtype=torch.float64)
        top2 = members.topk(2, dim=2).values
        return -(top2[..., 0] - top2[..., 1]).mean(dim=1)
    if name == "max":
        return members.max(dim=2).values.mean(dim=1)
    if name == "emoc":
        if embeddings is None or ref_embeddings is None or ref_probs is None:
            raise ValueError("set EMOC needs embeddings and a reference sample")
        label = members.mean(dim=1).argmax(dim=1)  # (M,) the set's shared label
        flat = sets.reshape(-1)
        per_member = emoc_last_layer(
            embeddings[flat], p[flat], ref_embeddings, ref_probs, labels=label.repeat_interleave(sets.shape[1])
        )
        return per_member.reshape(sets.shape).sum(dim=1)
    raise ValueError(f"unknown set criterion {name!r}; allowed: {', '.join(SET_CRITERIA)}")
