"""ADMA, AIFT, set criteria, core-set/BADGE/MMD strategies and influence: exactness against direct,
independent references in float64 (docs/methods.md §1-§6)."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, spearmanr

import strategies
from strategies import ScoringInputs
from strategies.adma import adma_distinctiveness, adma_tradeoff
from strategies.adma_landmarks import Landmarks, alpha_distance, alpha_source, exemplar_landmarks, medoid_landmarks
from strategies.aift import aift_scores
from strategies.influence import HeadInfluence, review_annotations
from strategies.mmd import mmd2, mmd_greedy_exact, mmd_greedy_rff
from strategies.sets import set_criterion


# ----------------------------------------------------------------------------- ADMA
def _reference_adma(xa, xb, ca, cb, alpha, normalize):
    """Eqs. 3-9 written out per instance with loops and scipy's Kendall tau."""
    k = ca.shape[0]
    sq = lambda u, v: float(((u - v) ** 2).sum())  # noqa: E731  squared L2 (Eqs. 2-4)
    sca = np.array([[sq(ca[i], ca[j]) for j in range(k)] for i in range(k)])
    scb = np.array([[sq(cb[i], cb[j]) for j in range(k)] for i in range(k)])
    off = ~np.eye(k, dtype=bool)
    s_a = np.median(sca[off]) if normalize else 1.0
    s_b = np.median(scb[off]) if normalize else 1.0
    out = []
    for x_a, x_b, a in zip(xa, xb, alpha):
        s_x = np.array([sq(x_a, ca[j]) / s_a - sq(x_b, cb[j]) / s_b for j in range(k)])  # Eqs. 4-5
        s_hat = sum(a[j] * (sca[:, j] / s_a - scb[:, j] / s_b) for j in range(k))  # Eqs. 6-7
        tau = kendalltau(s_x, s_hat).statistic
        out.append(0.5 if math.isnan(tau) else (1 - tau) / 2)  # Eq. 9
    return np.array(out)


@pytest.mark.parametrize("normalize", [True, False])
def test_adma_distinctiveness_equals_per_instance_reference(normalize):
    g = torch.Generator().manual_seed(0)
    n, k = 40, 12
    xa, ca = torch.randn(n, 30, generator=g, dtype=torch.float64), torch.randn(k, 30, generator=g, dtype=torch.float64)
    xb, cb = (
        torch.randn(n, 7, generator=g, dtype=torch.float64) * 5,
        torch.randn(k, 7, generator=g, dtype=torch.float64) * 5,
    )
    alpha = torch.rand(n, k, generator=g, dtype=torch.float64)
    d, info = adma_distinctiveness([xa], xb, [ca], cb, alpha, normalize=normalize, chunk=7)
    ref = _reference_adma(xa.numpy(), xb.numpy(), ca.numpy(), cb.numpy(), alpha.numpy(), normalize)
    np.testing.assert_allclose(d.numpy(), ref, rtol=0, atol=1e-10)
    assert (info["s_B"] != 1.0) == normalize


def test_adma_two_a_layers_mean_and_variance():
    g = torch.Generator().manual_seed(1)
    n, k = 20, 6
    xa1, xa2 = torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(n, 9, generator=g, dtype=torch.float64)
    ca1, ca2 = torch.randn(k, 5, generator=g, dtype=torch.float64), torch.randn(k, 9, generator=g, dtype=torch.float64)
    xb, cb = torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randn(k, 4, generator=g, dtype=torch.float64)
    alpha = torch.rand(n, k, generator=g, dtype=torch.float64)
    d1, _ = adma_distinctiveness([xa1], xb, [ca1], cb, alpha)
    d2, _ = adma_distinctiveness([xa2], xb, [ca2], cb, alpha)
    mean, _ = adma_distinctiveness([xa1, xa2], xb, [ca1, ca2], cb, alpha, combine="mean")
    var, _ = adma_distinctiveness([xa1, xa2], xb, [ca1, ca2], cb, alpha, combine="variance")
    torch.testing.assert_close(mean, (d1 + d2) / 2)
    torch.testing.assert_close(var, ((d1 - d2) / 2) ** 2)


def test_adma_tradeoff_is_clipped_and_alphas_follow_eq8():
    d, u = torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.6])
    assert torch.equal(adma_tradeoff(d, u, 0, 0.5), d)  # t = 0: distinctiveness only
    torch.testing.assert_close(adma_tradeoff(d, u, 1, 0.25), 0.75 * d + 0.25 * u)
    assert torch.equal(adma_tradeoff(d, u, 9, 0.5), u)  # λt > 1 is clipped: never a negative weight
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    # two sub-centers of class 0 share its probability; class 2 has one landmark
    torch.testing.assert_close(
        alpha_source(p, torch.tensor([0, 0, 2])), torch.tensor([[0.25, 0.25, 0.2]], dtype=torch.float64)
    )
    a = alpha_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 1.0]]), eps=0.0)
    torch.testing.assert_close(a, torch.tensor([[0.2, 1.0]], dtype=torch.float64))  # reciprocal, non-squared L2


def test_medoid_landmarks_follow_eqs_1_2_per_class():
    # class 0: points 0, 1, 10 -> mean 11/3, nearest = 1; class 1: 100, 104, 103 -> mean 102.33 -> 103
    b = torch.tensor([[0.0], [1.0], [10.0], [100.0], [104.0], [103.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    lm = medoid_landmarks({"A": b * 2}, b, labels)
    assert lm.b.flatten().tolist() == [1.0, 103.0] and lm.classes.tolist() == [0, 1]
    assert lm.a["A"].flatten().tolist() == [2.0, 206.0]


def test_exemplar_landmarks_pick_the_most_source_confident_items():
    sp = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.95, 0.05]], dtype=torch.float64)
    b = torch.arange(4.0)[:, None]
    lm = exemplar_landmarks({}, b, sp, ["a", "b", "c", "d"], per_class=2)
    assert lm.b.flatten().tolist() == [3.0, 0.0, 2.0] and lm.classes.tolist() == [0, 0, 1]


def test_adma_strategy_keeps_landmarks_and_reports_mode(tmp_path):
    from tests.helpers import pool_inputs

    inputs = pool_inputs(30)
    state = {}
    s = strategies.get("adma", lam=0.5)
    first = s(ScoringInputs(**{**inputs.__dict__, "state": state, "round": 0}))
    assert s.info()["landmark_mode"] == "pool-exemplars" and s.info()["weight_uncertainty"] == 0.0
    landmark_keys = [k for k in state if k[0] == "adma_landmarks"]
    assert len(landmark_keys) == 1  # computed once, reused
    # a landmark file gives the same numbers as the same landmarks computed in place
    lm = state[landmark_keys[0]]
    torch.save(lm.to_dict(), tmp_path / "lm.pt")
    from_file = strategies.get("adma", lam=0.5, landmarks=str(tmp_path / "lm.pt"))
    torch.testing.assert_close(from_file(ScoringInputs(**{**inputs.__dict__, "round": 0})), first)
    assert from_file.info()["landmark_mode"] == "pool-exemplars"  # as saved
    km = strategies.get("adma", landmarks="kmeans", kmeans=5)
    km(inputs)
    assert km.info()["landmark_mode"] == "kmeans" and km.info()["alpha"] == "distance"
    with pytest.raises(strategies.StrategyError, match="class-aligned"):
        strategies.get("adma", landmarks="kmeans", kmeans=5, alpha="source")(inputs)
    bad = Landmarks({"A": torch.zeros(3, 99)}, torch.zeros(3, 6), None, "file")
    s2 = strategies.get("adma")
    s2.set_landmarks(bad)
    with pytest.raises(strategies.StrategyError, match="another backbone"):
        s2(inputs)


@pytest.mark.parametrize("spec", ["adma", "adma:landmarks=kmeans:kmeans=5"])
def test_adma_keeps_alpha_per_item_and_skips_m0_after_the_first_scoring(spec):
    """α (Eq. 8, or ADMA-distance) depends only on M0 and the landmarks: once every item's α is kept,
    the scorer may skip M0, and the values are bit-identical to a fresh computation."""
    from strategies import Need
    from tests.helpers import permute_inputs, pool_inputs

    inputs = pool_inputs(30)
    source = {Need.SOURCE_FEATURES, Need.SOURCE_PROBS}
    without_m0 = {"source_probs": None, "source_features": {}}
    s, state = strategies.from_spec(spec), {}
    keys = list(inputs.keys)
    assert source <= s.needs_for(keys, state)
    first = s(ScoringInputs(**{**inputs.__dict__, "state": state}))
    assert torch.equal(first, strategies.from_spec(spec)(inputs))  # no state: the same numbers
    assert not source & s.needs_for(keys, state)
    again = s(ScoringInputs(**{**inputs.__dict__, **without_m0, "state": state}))
    assert torch.equal(again, first)
    # order-invariant with kept α as well
    perm = list(reversed(range(30)))
    shuffled = s(ScoringInputs(**{**permute_inputs(inputs, perm).__dict__, **without_m0, "state": state}))
    assert torch.equal(shuffled, first[perm])
    # an unseen item, an item whose image changed (new fingerprint), an item that cannot be cached
    assert source <= s.needs_for(keys + ["task-new"], state)
    assert source <= s.needs_for(["changed"] + keys[1:], state)
    assert source <= s.needs_for([None] + keys[1:], state)
    with pytest.raises(strategies.MissingInputError):
        s(ScoringInputs(**{**inputs.__dict__, **without_m0, "state": state, "fingerprints": ["changed"] + keys[1:]}))
    # items that leave the pool are forgotten one full-pool scoring later
    take = lambda idx: ScoringInputs(**{**permute_inputs(inputs, idx).__dict__, "n": len(idx)})  # noqa: E731
    sub = take(list(range(20)))
    s(ScoringInputs(**{**sub.__dict__, "state": state}))
    assert not source & s.needs_for(keys[20:], state)
    s(ScoringInputs(**{**sub.__dict__, "state": state}))
    assert source <= s.needs_for(keys[20:], state) and not source & s.needs_for(keys[:20], state)
    # a request's few tasks (not the full pool) are added without forgetting the rest
    s(ScoringInputs(**{**take([25]).__dict__, "state": state, "full_pool": False}))
    assert not source & s.needs_for(keys[:20] + [keys[25]], state)


# ----------------------------------------------------------------------------- AIFT
def test_aift_matches_hand_computation():
    p1, p2, p3 = [0.7, 0.3], [0.6, 0.4], [0.3, 0.7]
    views = torch.tensor([[p1], [p2], [p3]], dtype=torch.float64)  # (m=3, N=1, C=2)
    # majority class 0 (mean p0 = 0.533); keep ⌈α m⌉ = 2 views with the highest p0: p1, p2
    e = lambda p: -sum(x * math.log(x) for x in p)  # noqa: E731
    d = sum((a - b) * math.log(a / b) for a, b in zip(p1, p2))
    want = e(p1) + e(p2) + 2 * d
    assert aift_scores(views, alpha=0.5).item() == pytest.approx(want, abs=1e-12)
    assert aift_scores(views, alpha=0.5, lam2=0).item() == pytest.approx(e(p1) + e(p2), abs=1e-12)


def test_tta_views_are_seeded_per_item():
    from strategies.aift import tta_views

    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    v = tta_views(x, 4, ["a", "b", "c"], seed=1)
    assert v.shape == (4, 3, 3, 16, 16) and torch.equal(v[0], x)
    again = tta_views(x[[2, 0]], 4, ["c", "a"], seed=1)
    assert torch.equal(again[:, 0], v[:, 2]) and not torch.equal(v[1], v[2])


# ----------------------------------------------------------------------------- set criteria (EMOC protocol)
def test_set_criteria_table():
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.8, 0.2]], dtype=torch.float64)
    sets = torch.tensor([[0, 3], [1, 2]])
    torch.testing.assert_close(set_criterion("min", sets, probs), torch.tensor([-0.85, -0.55], dtype=torch.float64))
    torch.testing.assert_close(set_criterion("1-vs-2", sets, probs), torch.tensor([-0.7, -0.1], dtype=torch.float64))
    torch.testing.assert_close(set_criterion("max", sets, probs), torch.tensor([0.85, 0.55], dtype=torch.float64))
    h = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    value = set_criterion("emoc", sets, probs, h, h, probs)
    # Eq. 5: the sum of each member's EMOC under the set's shared label (set 1: mean p = [0.55, 0.45] -> 0)
    per = strategies.emoc_last_layer(h, probs, h, probs, labels=torch.tensor([0, 0, 0, 0]))
    torch.testing.assert_close(value, torch.stack([per[0] + per[3], per[1] + per[2]]))


# ----------------------------------------------------------------------------- batch strategies
def test_coreset_and_badge_strategies_follow_their_greedy_order():
    from tests.helpers import pool_inputs

    inputs = pool_inputs(25)
    values = strategies.get("coreset", budget=5)(inputs)
    order = torch.argsort(values, descending=True)[:5]
    ref = strategies.k_center_greedy(inputs.embeddings, inputs.labeled_embeddings, 5)
    assert order.tolist() == ref.tolist()  # keys task-0..24 sort as 0,1,10,... but k-center is order-free here
    badge_values = strategies.get("badge", budget=6, seed=2)(inputs)
    assert badge_values.topk(6).values.min() > badge_values.sort(descending=True).values[6]


def test_diverse_queue_reorders_only_the_top():
    values = torch.tensor([0.9, 0.8, 0.7, 0.1], dtype=torch.float64)
    h = torch.tensor([[0.0], [0.01], [5.0], [9.0]])
    out = strategies.diverse_queue(values, h, top=3)
    assert torch.argsort(out, descending=True).tolist() == [0, 2, 1, 3]  # near-duplicate of 0 moves back


def test_mmd_greedy_equals_exhaustive_and_rff_agrees():
    g = torch.Generator().manual_seed(0)
    source = torch.randn(40, 2, generator=g, dtype=torch.float64)
    pool = torch.cat(
        [
            torch.randn(14, 2, generator=g, dtype=torch.float64),
            torch.randn(3, 2, generator=g, dtype=torch.float64) * 0.3 + 6,
        ]
    )  # a target-only cluster
    bw = 1.5
    greedy = mmd_greedy_exact(source, pool, 3, bandwidth=bw).tolist()
    rest = lambda q: pool[[i for i in range(len(pool)) if i not in q]]  # noqa: E731
    direct = []  # the greedy recomputing MMD² from scratch at every step
    for _ in range(3):
        direct.append(
            min((i for i in range(len(pool)) if i not in direct), key=lambda i: mmd2(source, rest(direct + [i]), bw))
        )
    assert greedy == direct
    best = min(itertools.combinations(range(len(pool)), 3), key=lambda q: mmd2(source, rest(q), bw))
    assert {14, 16} <= set(greedy) and {14, 15, 16} & set(best)  # the target-only cluster goes first
    assert mmd2(source, rest(greedy), bw) <= 1.1 * mmd2(source, rest(best), bw)  # greedy is near the optimum
    rff = mmd_greedy_rff(source, pool, 3, features=4096, bandwidth=bw).tolist()
    assert mmd2(source, rest(rff), bw) <= 1.1 * mmd2(source, rest(best), bw)


# ----------------------------------------------------------------------------- influence
def _fit_head(h, y, c, wd, weights=None):
    """Minimise (1/n) Σ w_i ℓ_i + (wd/2)||θ||² exactly (L-BFGS, float64)."""
    n, d = h.shape
    w = torch.zeros(c, d + 1, dtype=torch.float64, requires_grad=True)
    ha = torch.cat([h, torch.ones(n, 1, dtype=torch.float64)], 1)
    weights = torch.ones(n, dtype=torch.float64) if weights is None else weights
    opt = torch.optim.LBFGS(
        [w], lr=1, max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(ha @ w.T, y, reduction="none") * weights).sum() / n
        loss = loss + wd / 2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def test_influence_predicts_leave_one_out_validation_loss():
    g = torch.Generator().manual_seed(0)
    n, d, c, wd = 60, 4, 3, 0.05
    centres = torch.randn(c, d, generator=g, dtype=torch.float64) * 1.5
    y = torch.arange(n) % c
    h = centres[y] + torch.randn(n, d, generator=g, dtype=torch.float64)
    y[:5] = (y[:5] + 1) % c  # a few wrong labels
    hv_y = torch.arange(30) % c
    hv = centres[hv_y] + torch.randn(30, d, generator=g, dtype=torch.float64)
    w = _fit_head(h, y, c, wd)
    inf = HeadInfluence.fit(h, y, w[:, :d], w[:, d], wd)
    psi = inf.psi(h, y, hv, hv_y)
    predicted = -psi / n  # change of the summed validation loss when z_i is removed

    def val_loss(wt):
        ha = torch.cat([hv, torch.ones(len(hv), 1, dtype=torch.float64)], 1)
        return torch.nn.functional.cross_entropy(ha @ wt.T, hv_y, reduction="sum").item()

    base = val_loss(w)
    actual = []
    for i in range(0, n, 3):  # exact leave-one-out refits of the 1/n objective (weight 0 for z_i)
        weights = torch.ones(n, dtype=torch.float64)
        weights[i] = 0
        actual.append(val_loss(_fit_head(h, y, c, wd, weights)) - base)
    pred = predicted[::3].numpy()
    assert spearmanr(pred, actual).statistic > 0.95
    assert np.mean(np.sign(pred) == np.sign(actual)) > 0.9


def test_kfac_solve_is_the_kronecker_inverse_and_review_ranks_flipped_labels():
    g = torch.Generator().manual_seed(1)
    n, d, c, wd = 80, 5, 3, 0.01
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    w = torch.randn(c, d + 1, generator=g, dtype=torch.float64)
    inf = HeadInfluence.fit(h, y, w[:, :d], w[:, d], wd, exact_limit=0)  # force K-FAC
    ug, lg, ua, la = inf._kfac
    gm, am = ug @ torch.diag(lg) @ ug.T, ua @ torch.diag(la) @ ua.T
    big = torch.kron(gm, am) + wd * torch.eye(c * (d + 1), dtype=torch.float64)
    v = torch.randn(c, d + 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(inf.solve(v).flatten(), torch.linalg.solve(big, v.flatten()))
    # flipped labels on a separable problem: the review puts them first
    centres = torch.randn(c, d, generator=g, dtype=torch.float64) * 4
    y = torch.arange(n) % c
    h = centres[y] + torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5
    noisy = y.clone()
    noisy[:6] = (noisy[:6] + 1) % c
    wt = _fit_head(h, noisy, c, wd)
    stats = review_annotations(h, noisy, wt[:, :d], wt[:, d], wd)
    for key in ("self_influence", "loss"):
        top = set(torch.argsort(stats[key], descending=True)[:6].tolist())
        assert len(top & set(range(6))) >= 5, key
