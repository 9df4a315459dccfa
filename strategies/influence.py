"""Influence of labeled examples through the last layer (docs/methods.md §6; Koh & Liang 2017, Wang et al.
2018's data dropout). The head W̃ = [W b] (C × (D+1)) is treated as the minimiser of

    J(θ) = (1/n) Σ_i ℓ(z_i; θ) + (λ/2) ||θ||²,      λ = the weight decay used in training,

on frozen penultimate features. With ∇ℓ_i = vec((p_i - e_{y_i}) h̃_iᵀ) and
H = (1/n) Σ_i J_s(p_i) ⊗ h̃_i h̃_iᵀ + λ I:

* self-influence SI_i = ∇ℓ_iᵀ H⁻¹ ∇ℓ_i (≥ 0; large = suspicious label);
* ψ_i = -(Σ_v ∇ℓ_v)ᵀ H⁻¹ ∇ℓ_i over a validation set: ψ_i > 0 means up-weighting z_i would raise the
  validation loss (the data-dropout rule drops it); removing z_i changes it by about -ψ_i / n.

H is formed exactly (Cholesky) up to ``exact_limit`` parameters, else approximated by K-FAC
(H ≈ G ⊗ A + λ I with G = E[J_s], A = E[h̃ h̃ᵀ], inverted through both eigendecompositions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _aug(h: torch.Tensor) -> torch.Tensor:
    h = h.to(torch.float64).flatten(1)
    return torch.cat([h, torch.ones(h.shape[0], 1, dtype=torch.float64)], dim=1)


def _probs(h_aug: torch.Tensor, w_aug: torch.Tensor) -> torch.Tensor:
    return (h_aug @ w_aug.T).softmax(dim=1)


def _head(weight: torch.Tensor, bias: torch.Tensor, device: torch.device) -> torch.Tensor:
    """W̃ = [W b] in float64 on ``device`` (the head may live on the GPU, the features on the CPU)."""
    return torch.cat(
        [weight.detach().to(device, torch.float64), bias.detach().to(device, torch.float64)[:, None]], dim=1
    )


def label_loss(h: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """The head's probability of each given label and its loss -log p_y (the cheap suspicion ranking).
    The project's default review ranking (docs/methods.md §6.4), not from a paper."""
    p_y = _probs(_aug(h), _head(weight, bias, h.device)).gather(1, y.long()[:, None]).squeeze(1)
    return {"loss": -p_y.clamp_min(1e-12).log(), "p_label": p_y}


@dataclass
class HeadInfluence:
    """The inverse-Hessian solver of one trained head on its labeled set.
    Influence functions through the last layer (Koh & Liang, 'Understanding Black-box Predictions via Influence
    Functions', ICML'17); docs/methods.md §6.1."""

    w_aug: torch.Tensor  # (C, D+1)
    weight_decay: float
    n: int
    exact: bool
    _chol: torch.Tensor | None = None
    _kfac: tuple | None = None

    @classmethod
    def fit(
        cls,
        h: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        weight_decay: float,
        exact_limit: int = 6000,
    ) -> "HeadInfluence":
        if weight_decay <= 0:
            raise ValueError("influence needs weight decay > 0 (it makes H positive definite)")
        ha = _aug(h)
        w_aug = _head(weight, bias, h.device)
        p = _probs(ha, w_aug)
        n, c = p.shape
        d1 = ha.shape[1]
        exact = c * d1 <= exact_limit
        out = cls(w_aug, float(weight_decay), n, exact)
        if exact:
            # H = (1/n) Σ_i J_s(p_i) ⊗ h̃_i h̃_iᵀ + λ I, in the row-major vec of W̃ (index c*(D+1) + d)
            js = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (n, C, C)
            hh = ha[:, :, None] * ha[:, None, :]  # (n, D1, D1)
            big = torch.einsum("nab,nij->aibj", js, hh).reshape(c * d1, c * d1) / n
            big += weight_decay * torch.eye(c * d1, dtype=torch.float64)
            out._chol = torch.linalg.cholesky(big)
        else:
            g = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(dim=0)
            a = ha.T @ ha / n
            lg, ug = torch.linalg.eigh(g)
            la, ua = torch.linalg.eigh(a)
            out._kfac = (ug, lg.clamp_min(0), ua, la.clamp_min(0))
        return out

    def grads(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇ℓ_i as (n, C, D+1) matrices."""
        ha = _aug(h)
        p = _probs(ha, self.w_aug)
        a = p - torch.nn.functional.one_hot(y.long(), p.shape[1]).to(torch.float64)
        return a[:, :, None] * ha[:, None, :]

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        """H⁻¹ v for v of shape (..., C, D+1)."""
        shape = v.shape
        if self.exact:
            flat = v.reshape(-1, shape[-2] * shape[-1]).T
            return torch.cholesky_solve(flat, self._chol).T.reshape(shape)
        ug, lg, ua, la = self._kfac
        inner = ug.T @ v @ ua
        inner = inner / (lg[:, None] * la[None, :] + self.weight_decay)
        return ug @ inner @ ua.T

    def self_influence(self, h: torch.Tensor, y: torch.Tensor, grads: torch.Tensor | None = None) -> torch.Tensor:
        """SI_i = ∇ℓ_iᵀ H⁻¹ ∇ℓ_i; pass ``grads`` (from :meth:`grads`) when they are already computed."""
        g = self.grads(h, y) if grads is None else grads
        return (g * self.solve(g)).sum(dim=(1, 2))

    def psi(self, h: torch.Tensor, y: torch.Tensor, h_val: torch.Tensor, y_val: torch.Tensor) -> torch.Tensor:
        """ψ_i = -(Σ_v ∇ℓ_v)ᵀ H⁻¹ ∇ℓ_i: one solve for all i."""
        s = self.solve(self.grads(h_val, y_val).sum(dim=0))
        return -(self.grads(h, y) * s).sum(dim=(1, 2))


def fit_head(
    h: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    weight_decay: float,
    iterations: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimiser of J(θ) above on (h, y) (multinomial logistic regression with L2 on [W b]),
    by L-BFGS in float64 from (``weight``, ``bias``); returns (W, b).
    Project helper, not from a paper (docs/methods.md §6.2)."""
    ha, yl = _aug(h), y.long()
    w_aug = _head(weight, bias, ha.device).clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w_aug],
        lr=1.0,
        max_iter=iterations,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ha @ w_aug.T, yl) + 0.5 * weight_decay * w_aug.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_aug = w_aug.detach()
    return w_aug[:, :-1], w_aug[:, -1]


def cross_fitted_psi(
    h: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    weight_decay: float,
    folds: int = 5,
    seed: int = 0,
) -> torch.Tensor:
    """ψ by cross-fitting (docs/methods.md §6.2): for each fold f, a head is fit without f and ψ of
    every item it was fit on is taken on f as the validation set; an item's ψ is the mean over the
    folds that do not hold it. No item is ever in its own validation set, and no validation item
    was seen by the head, so ψ carries no self-influence.
    The project's cross-fitting of the influence ψ of Koh & Liang, ICML'17; not from a paper."""
    n = h.shape[0]
    folds = max(2, min(folds, n))
    assign = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) % folds
    total = torch.zeros(n, dtype=torch.float64)
    count = torch.zeros(n, dtype=torch.float64)
    for f in range(folds):
        held = assign == f
        train = ~held
        if not held.any() or int(train.sum()) < 2:
            continue
        w, b = fit_head(h[train], y[train], weight, bias, weight_decay)
        inf = HeadInfluence.fit(h[train], y[train], w, b, weight_decay)
        total[train] += inf.psi(h[train], y[train], h[held], y[held])
        count[train] += 1
    return total / count.clamp_min(1)


def review_annotations(
    h: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    weight_decay: float,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Per labeled example: training loss -log p_y, p_y, self-influence under the trained head and
    ψ by cross-fitting (:func:`cross_fitted_psi`).
    Self-influence and ψ after Koh & Liang, ICML'17; docs/methods.md §6.4."""
    inf = HeadInfluence.fit(h, y, weight, bias, weight_decay)
    psi = cross_fitted_psi(h, y, weight, bias, weight_decay, folds, seed)
    return {**label_loss(h, y, weight, bias), "self_influence": inf.self_influence(h, y), "psi": psi}


def in_fold_psi(
    h: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    weight_decay: float,
    folds: int = 5,
    seed: int = 0,
) -> torch.Tensor:
    """The earlier K-fold ψ, kept for comparison (benchmarks, tests): one head fit on everything, the
    other folds as validation. Its validation items were trained on, so near the optimum ψ_i carries
    item i's own self-influence (always >= 0) and flags too many items.
    ψ of Koh & Liang, ICML'17, as Wang et al.'s data dropout (2018) uses it; docs/methods.md §6.2."""
    inf = HeadInfluence.fit(h, y, weight, bias, weight_decay)
    n = h.shape[0]
    folds = max(2, min(folds, n))
    assign = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) % folds
    grads = inf.grads(h, y)
    psi = torch.zeros(n, dtype=torch.float64)
    for f in range(folds):
        inside = assign == f
        if inside.all() or not inside.any():
            continue
        s = inf.solve(grads[~inside].sum(dim=0))
        psi[inside] = -(grads[inside] * s).sum(dim=(1, 2))
    return psi
