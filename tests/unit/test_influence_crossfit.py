"""Influence data dropout's ψ by cross-fitting, checked against brute force: for every fold, refit
the head without it, up-weight one training item by ε, refit, and difference the held-out fold's loss."""

import torch

from strategies import review_annotations
from strategies.influence import cross_fitted_psi, fit_head

LAM = 0.05


def toy(n=24, d=3, c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(c, (n,), generator=g)
    h = torch.randn(c, d, generator=g, dtype=torch.float64)[y] * 1.5 + torch.randn(
        n, d, generator=g, dtype=torch.float64
    )
    y[:3] = (y[:3] + 1) % c  # three flipped labels
    return h, y


def held_out_loss(h, y, w, b):
    return torch.nn.functional.cross_entropy(h @ w.T + b, y, reduction="sum")


def brute_force_psi(h, y, i, folds, assign, eps=1e-4):
    """Mean over the folds that do not hold i of d/dε [held-out loss of the head fit with i up-weighted by ε]."""
    c, d = int(y.max()) + 1, h.shape[1]
    values = []
    for f in range(folds):
        held = assign == f
        if held[i]:
            continue
        train = (~held).nonzero().squeeze(1)
        j = int((train == i).nonzero())

        def fit(e):
            ha = torch.cat([h[train], torch.ones(len(train), 1, dtype=torch.float64)], 1)
            w = torch.zeros(c, d + 1, dtype=torch.float64, requires_grad=True)
            opt = torch.optim.LBFGS(
                [w], max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-16, line_search_fn="strong_wolfe"
            )

            def closure():
                opt.zero_grad()
                losses = torch.nn.functional.cross_entropy(ha @ w.T, y[train], reduction="none")
                loss = losses.mean() + e * losses[j] + 0.5 * LAM * w.pow(2).sum()
                loss.backward()
                return loss

            opt.step(closure)
            w = w.detach()
            return held_out_loss(h[held], y[held], w[:, :-1], w[:, -1])

        values.append(float((fit(eps) - fit(-eps)) / (2 * eps)))
    return sum(values) / len(values)


def test_cross_fitted_psi_equals_brute_force_refits():
    h, y = toy()
    folds = 4
    w, b = fit_head(h, y, torch.zeros(2, 3), torch.zeros(2), LAM)
    psi = cross_fitted_psi(h, y, w, b, LAM, folds=folds, seed=0)
    assign = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)) % folds
    for i in (0, 1, 7, 15):  # two flipped, two clean
        assert abs(float(psi[i]) - brute_force_psi(h, y, i, folds, assign)) < 1e-4 * max(1.0, abs(float(psi[i])))
    assert torch.equal(review_annotations(h, y, w, b, LAM, folds=folds, seed=0)["psi"], psi)
