"""How the soak judges a backend process's resources (benchmarks/soak_parts/report.py): from its
warm-up on, a worker only once its feature cache has taken in the pool, and saying what grew."""

from benchmarks.soak_parts.report import resource_growth, targets


def sample(minute, rss, threads=90, fds=14, cache_items=None, pool=3000, python=None, kinds=None, rounds=0, segs=2):
    u = {"role": "backend worker", "rss_mb": rss, "threads": threads, "fds": fds}
    u["fd_kinds"] = kinds or {"socket": 4, "file": fds - 4}
    if cache_items is not None:
        u.update(cache_items=cache_items, cache_mb=cache_items * 0.03, cache_limit_mb=512.0, rounds_trained=rounds)
        u["python_threads"] = python or {"compute": 2, "gthread": 4}
    return {"minute": minute, "procs": {"7": u}, "pool": pool, "segments_on_disk": segs}


def test_a_worker_is_judged_from_its_full_cache_on_so_the_cache_fill_is_not_growth():
    # born at 5, scores the whole pool at minute 9 (RSS +84 MB), then flat
    rows = [sample(m, 810 + m, cache_items=40 * m) for m in range(5, 9)]
    rows += [sample(m, 900 + 0.5 * m, cache_items=3000) for m in range(9, 14)]
    growth = resource_growth(rows)
    (p,) = growth["processes"]
    assert p["warm_minute"] == 9 and p["from_minute"] == 9 and p["judged"]
    assert growth["max_rss_growth_pct"] < 1
    # judged the way it was before (2 minutes after it appeared), the same worker grew over 10 %
    assert (rows[-1]["procs"]["7"]["rss_mb"] - rows[2]["procs"]["7"]["rss_mb"]) / rows[2]["procs"]["7"]["rss_mb"] > 0.1


def test_growth_after_the_warm_up_is_reported_with_what_grew():
    rows = [sample(m, 900, cache_items=3000) for m in range(5, 9)]
    for m in (9, 10):
        rows.append(sample(m, 1000, threads=91, fds=15, cache_items=3000, python={"compute": 2, "gthread": 4, "x": 1}))
    growth = resource_growth(rows)
    (p,) = growth["processes"]
    assert p["judged"] and p["rss_growth_pct"] == 11.1
    assert p["python_thread_growth"] == {"x": 1} and p["fd_growth_by_kind"] == {"file": 1}
    assert growth["max_thread_growth"] == 1 and growth["max_fd_growth"] == 1


def test_a_connection_open_at_one_sample_is_not_descriptor_growth():
    rows = [sample(m, 900, cache_items=3000) for m in range(5, 10)]
    rows.append(sample(10, 900, fds=17, cache_items=3000, kinds={"socket": 7, "file": 10}))  # requests in flight
    assert resource_growth(rows)["max_fd_growth"] == 0


def test_a_worker_never_seen_warm_is_listed_not_judged_and_nothing_judged_meets_no_target():
    rows = [sample(m, 800 + 20 * m, cache_items=10) for m in range(5, 15)]
    growth = resource_growth(rows)
    assert growth["processes"][0]["judged"] is False and growth["processes"][0]["why_not"] == "never seen warm"
    result = {
        "resources": growth,
        "health": {"p99_s": 0.01},
        "recovery_by_kind": {},
        "annotations_lost": 0,
        "lost_during_run": [],
        "unexpected_5xx": 0,
        "partial_checkpoints": [],
        "model_version_without_predictions": [],
    }
    t = targets(result)
    assert t["rss_growth_under_10pct"] is None and t["no_thread_or_fd_growth"] is None


def test_a_worker_that_takes_over_training_is_judged_from_its_first_round_on():
    # warm cache from minute 5; at minute 9 it takes the trainer lease over and trains (+150 MB), then flat
    rows = [sample(m, 800, cache_items=3000) for m in range(5, 9)]
    rows += [sample(m, 950 + 0.5 * m, cache_items=3000, rounds=m - 8) for m in range(9, 14)]
    growth = resource_growth(rows)
    (p,) = growth["processes"]
    assert p["warm_minute"] == 9 and p["rounds_trained"] == [1, 5]
    assert growth["max_rss_growth_pct"] < 1
    # a worker that never trains is judged from its full cache alone: the same step is growth there
    flat = [sample(m, 800, cache_items=3000) for m in range(5, 9)]
    flat += [sample(m, 950, cache_items=3000) for m in range(9, 14)]
    assert resource_growth(flat)["max_rss_growth_pct"] > 10


def test_descriptors_of_bounded_kinds_are_counted_only_past_their_bound():
    base = {"socket": 4, "file": 10, ".seg": 2}
    rows = [sample(m, 900, cache_items=3000, kinds=base, segs=3) for m in range(5, 9)]
    held = {**base, ".lease": 1, ".seg": 3}  # a round holds the lease at both last samples; one more segment read
    rows += [sample(m, 900, cache_items=3000, kinds=held, segs=3) for m in (9, 10)]
    growth = resource_growth(rows)
    (p,) = growth["processes"]
    assert p["fd_growth_by_kind"] == {".lease": 1, ".seg": 1}
    assert p["fd_growth_within_bound"] == {".lease": [1, 1], ".seg": [1, 4]}
    assert growth["max_fd_growth"] == 0
    # past the bound (more segment descriptors than segments on disk, plus the one written): growth
    rows += [sample(m, 900, cache_items=3000, kinds={**held, ".seg": 6}, segs=3) for m in (11, 12)]
    assert resource_growth(rows)["max_fd_growth"] == 4


def test_a_kind_of_descriptor_that_fell_does_not_make_up_for_one_that_grew():
    rows = [sample(m, 900, cache_items=3000, kinds={"socket": 4, "file": 10, ".lease": 1}) for m in range(5, 9)]
    rows += [sample(m, 900, cache_items=3000, kinds={"socket": 5, "file": 10}) for m in (9, 10)]  # lease let go
    growth = resource_growth(rows)
    assert growth["processes"][0]["fd_growth_by_kind"] == {".lease": -1, "socket": 1}
    assert growth["max_fd_growth"] == 1


def test_thread_names_not_seen_at_one_end_are_not_reported_as_growth():
    rows = [sample(m, 900, cache_items=3000) for m in range(5, 11)]
    del rows[2]["procs"]["7"]["python_threads"]  # /status did not answer for it at minute 7, its first judged
    (p,) = resource_growth(rows)["processes"]
    assert p["from_minute"] == 7 and p["python_thread_growth"] is None
    rows[2]["procs"]["7"]["python_threads"] = {"compute": 2, "gthread": 4}
    assert resource_growth(rows)["processes"][0]["python_thread_growth"] == {}  # seen at both ends: none grew
