"""Exactness in float64 against independent references (docs/methods.md §1.6, §2.2)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from strategies import emoc_last_layer, kendall_tau_b


@pytest.mark.parametrize("method", ["compiled", "sort", "pairwise"])
@pytest.mark.parametrize(
    "k, ties", [(2, False), (5, False), (7, True), (50, True), (64, False), (333, True), (1000, False)]
)
def test_batched_tau_b_equals_scipy(method, k, ties):
    g = torch.Generator().manual_seed(k)
    if ties:
        x = torch.randint(0, 5, (60, k), generator=g).double()
        y = torch.randint(0, 5, (60, k), generator=g).double()
    else:
        x = torch.randn(60, k, generator=g, dtype=torch.float64)
        y = torch.randn(60, k, generator=g, dtype=torch.float64)
    ref = np.array([kendalltau(a, b).statistic for a, b in zip(x.numpy(), y.numpy())])
    np.testing.assert_allclose(kendall_tau_b(x, y, method=method).numpy(), ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("k", [4096, 4097, 9000])
def test_compiled_tau_large_k_equals_scipy(k):
    """Beyond 64 words the inversion count switches to a Fenwick tree over words."""
    g = torch.Generator().manual_seed(k)
    x = torch.randn(3, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, 50, (3, k), generator=g).double()  # ties in y: the ordinal re-numbering
    ref = np.array([kendalltau(a, b).statistic for a, b in zip(x.numpy(), y.numpy())])
    np.testing.assert_allclose(kendall_tau_b(x, y, method="compiled").numpy(), ref, rtol=0, atol=1e-13)


def test_compiled_tau_packed_sort_falls_back_exactly():
    """Rows the packed sort cannot order (values equal in their top bits, non-finite values, NaN) go
    to the exact argsort path; -0.0 ties with 0.0 as in scipy."""
    from strategies._tau_numba import _CHUNK, tau_rows

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * _CHUNK + 5, 50))
    y = rng.standard_normal(x.shape)
    x[0] = 1.0 - np.arange(50) * 1e-15  # all 50 differ only in their lowest bits, in reverse column order
    y[1, :25] = 2.0 - np.arange(25) * 4e-16
    x[2, 3], x[3, 4], y[4, 7] = np.inf, -np.inf, np.inf
    x[5, ::2] = -0.0
    x[5, 1::2] = 0.0
    x[6, :3] = [5e-324, 0.0, -5e-324]  # subnormals next to zero
    x[_CHUNK + 1, 10:20] = 3.0  # a tie group in the second chunk
    x[7, 9] = np.nan  # scipy propagates NaN
    ref = np.array([kendalltau(a, b).statistic for a, b in zip(x, y)])
    out = tau_rows(x, y, threads=1)
    assert np.isnan(out[7]) and np.isnan(ref[7])
    np.testing.assert_allclose(np.delete(out, 7), np.delete(ref, 7), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(tau_rows(x, y, threads=2), out)


def test_tau_edge_cases():
    x = torch.tensor([[1.0, 2, 3], [5, 5, 5], [1, 2, 3]], dtype=torch.float64)
    y = torch.tensor([[3.0, 2, 1], [1, 2, 3], [1, 2, 3]], dtype=torch.float64)
    tau = kendall_tau_b(x, y)
    assert tau[0] == -1.0 and math.isnan(tau[1]) and tau[2] == 1.0  # constant row: undefined (NaN)
    assert kendall_tau_b(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)
    with pytest.raises(ValueError):
        kendall_tau_b(torch.zeros(2, 3), torch.zeros(3, 3))


def _reference_emoc(head, h_cand, h_ref, output, label):
    """Per pair: torch.func.grad of the loss, then torch.func.jvp of the output along it."""
    from torch.func import functional_call, grad, jvp

    params = {k: v.detach() for k, v in head.named_parameters()}

    def out(p, h):
        z = functional_call(head, p, (h[None],))[0]
        return z if output == "logit" else z.softmax(0)

    def loss(p, h, y):
        return -functional_call(head, p, (h[None],))[0].log_softmax(0)[y]

    values = []
    for hc in h_cand:
        probs = out(params, hc) if output == "prob" else functional_call(head, params, (hc[None],))[0].softmax(0)
        ys = [int(probs.argmax())] if label == "map" else list(range(len(probs)))
        ws = [1.0] if label == "map" else probs.tolist()
        total = 0.0
        for y, w in zip(ys, ws):
            step = grad(loss)(params, hc, y)
            changes = [jvp(lambda p: out(p, hr), (params,), (step,))[1].abs().sum() for hr in h_ref]
            total += w * torch.stack(changes).mean()
        values.append(total)
    return torch.stack(values)


@pytest.mark.parametrize("output", ["prob", "logit"])
@pytest.mark.parametrize("label", ["map", "marginal"])
def test_emoc_closed_form_equals_grad_and_jvp(output, label):
    torch.manual_seed(0)
    head = torch.nn.Linear(6, 4).double()
    h_cand = torch.randn(5, 6, dtype=torch.float64)
    h_ref = torch.randn(7, 6, dtype=torch.float64)
    with torch.no_grad():
        p_cand, p_ref = head(h_cand).softmax(1), head(h_ref).softmax(1)
    closed = emoc_last_layer(h_cand, p_cand, h_ref, p_ref, output=output, label=label)
    reference = _reference_emoc(head, h_cand, h_ref, output, label)
    torch.testing.assert_close(closed, reference.detach(), rtol=0, atol=1e-12)


def test_emoc_logit_identities():
    """Logit EMOC = 2(1 - max p')·Rep (MAP) and 2·Gini(p')·Rep (marginal), Rep = mean |h·h' + 1|."""
    g = torch.Generator().manual_seed(1)
    h_c, h_r = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    p_c = torch.randn(4, 5, generator=g, dtype=torch.float64).softmax(1)
    p_r = torch.randn(6, 5, generator=g, dtype=torch.float64).softmax(1)
    rep = (h_r @ h_c.T + 1).abs().mean(0)
    torch.testing.assert_close(emoc_last_layer(h_c, p_c, h_r, p_r, "logit", "map"), 2 * (1 - p_c.max(1).values) * rep)
    torch.testing.assert_close(
        emoc_last_layer(h_c, p_c, h_r, p_r, "logit", "marginal"), 2 * (1 - (p_c**2).sum(1)) * rep
    )


def test_k_center_greedy_equals_brute_force():
    """Greedy k-center picks, step by step, the point maximising the distance to the chosen set."""
    from strategies.diversity import k_center_greedy

    g = torch.Generator().manual_seed(3)
    pool, labeled = (
        torch.randn(12, 3, generator=g, dtype=torch.float64),
        torch.randn(2, 3, generator=g, dtype=torch.float64),
    )
    picks = k_center_greedy(pool, labeled, 5).tolist()
    centers = [*labeled]
    expected = []
    for _ in range(5):
        best = max(
            (i for i in range(12) if i not in expected),
            key=lambda i: (min(float(((pool[i] - c) ** 2).sum()) for c in centers), -i),
        )
        expected.append(best)
        centers.append(pool[best])
    assert picks == expected
    assert k_center_greedy(pool, None, 3, seed=1).tolist() == k_center_greedy(pool, None, 3, seed=1).tolist()
    assert k_center_greedy(pool, labeled, 50).shape == (12,) and k_center_greedy(pool, labeled, 0).shape == (0,)


def test_badge_factorised_distances_equal_explicit_gradient_embeddings():
    from strategies.diversity import badge, badge_distances

    g = torch.Generator().manual_seed(4)
    p = torch.randn(20, 5, generator=g, dtype=torch.float64).softmax(1)
    h = torch.randn(20, 7, generator=g, dtype=torch.float64)
    a = p - torch.nn.functional.one_hot(p.argmax(1), 5).double()
    emb = (a[:, :, None] * h[:, None, :]).flatten(1)  # the C·D gradient embeddings, explicitly
    for c in (0, 7, 19):
        torch.testing.assert_close(badge_distances(a, h, c), ((emb - emb[c]) ** 2).sum(1), rtol=0, atol=1e-12)
    picks = badge(p, h, 6, seed=2)
    assert picks[0] == int((emb**2).sum(1).argmax()) and len(set(picks.tolist())) == 6
    assert torch.equal(picks, badge(p, h, 6, seed=2))


@pytest.mark.parametrize("label", ["map", "marginal"])
def test_two_layer_emoc_closed_form_equals_grad_and_jvp(label):
    from strategies.emoc import emoc_two_layer

    torch.manual_seed(1)
    head = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).double()
    a_cand, a_ref = torch.randn(4, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    with torch.no_grad():
        u_cand, u_ref = head[0](a_cand), head[0](a_ref)
        p_cand, p_ref = head(a_cand).softmax(1), head(a_ref).softmax(1)
    closed = emoc_two_layer(a_cand, u_cand, p_cand, a_ref, u_ref, p_ref, head[2].weight, label=label)
    reference = _reference_emoc(head, a_cand, a_ref, "prob", label)  # all four parameter tensors
    torch.testing.assert_close(closed, reference.detach(), rtol=0, atol=1e-12)
