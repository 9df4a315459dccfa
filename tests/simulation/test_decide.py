"""The ablation's decision rule (python -m ml_backend.simulation.decide)."""

import json

import pytest

from ml_backend.simulation import decide


def run(strategy, seed, accs):
    rounds = [
        {"labels": 10 * (i + 1), "accuracy": a, "classes_discovered": 2, "score_seconds": 0.0, "train_seconds": 0.0}
        for i, a in enumerate(accs)
    ]
    return {"strategy": strategy, "seed": seed, "rounds": rounds}


def results(seeds=12, dataset="fashion-mnist"):
    runs = []
    for seed in range(seeds):
        j = 0.001 * ((seed * 7) % 5 - 2)  # a seed's own level, shared by its strategies
        e = 1e-5 * (seed + 1)  # no two seeds differ by the same amount (no ties for Wilcoxon)
        runs.append(run("random", seed, [0.5, 0.60 + j, 0.65 + j, 0.70 + j]))
        runs.append(run("auto", seed, [0.5, 0.63 + j + e, 0.68 + j + e, 0.72 + j + e]))
        # a hair below auto on every seed: not worse by more than 0.5 pp
        runs.append(run("close", seed, [0.5, 0.629 + j - e / 2, 0.679 + j - e / 2, 0.719 + j - e / 2]))
        # 2 pp below auto: outside the margin, still above random
        runs.append(run("far", seed, [0.5, 0.61 + j + 2 * e, 0.66 + j + 2 * e, 0.70 + j + 3 * e]))
        # as good as auto on ALC, but below random at the first count on every seed
        runs.append(run("dips", seed, [0.5, 0.58 + j - e, 0.71 + j + e, 0.74 + j + e]))
        # as good as auto on average, but 2 pp above or below it from seed to seed: too noisy to tell
        swing = 0.02 if seed % 2 else -0.02
        runs.append(run("noisy", seed, [0.5, 0.63 + j + e + swing, 0.68 + j + e + swing, 0.72 + j + e + swing]))
    return {"config": {"dataset": dataset}, "runs": runs}


def test_step_one_selects_by_the_margin_and_the_per_count_test():
    rows = {r["candidate"]: r for r in decide.select(results(), ["close", "far", "dips"], "auto", "random", 0.005)}
    assert rows["close"]["passes"] and rows["close"]["gap"] == pytest.approx(-0.001, abs=2e-4)
    assert not rows["far"]["passes"] and rows["far"]["gap"] < -0.005 and rows["far"]["below"] == []
    assert not rows["dips"]["passes"] and rows["dips"]["gap"] > -0.005 and rows["dips"]["below"] == [20]


def test_step_two_needs_every_track_and_holm_over_the_candidates(tmp_path, capsys):
    tracks = {"a": results(), "b": results(dataset="digits")}
    rows = decide.confirm(tracks, ["close", "far", "dips"], "auto", "random", 0.005)
    by = {(r["track"], r["candidate"]): r for r in rows}
    assert by[("a", "close")]["passes"] and by[("b", "close")]["passes"]
    assert by[("a", "close")]["p_holm"] < 0.05 and by[("a", "close")]["lower95"] > -0.005
    assert not by[("a", "far")]["passes"] and by[("a", "far")]["p"] > 0.5
    # non-inferior on ALC, but the per-count test against random vetoes it
    assert by[("a", "dips")]["p_holm"] < 0.05 and not by[("a", "dips")]["passes"]
    # as good as auto on average, too noisy to reject H0
    (noisy,) = decide.confirm({"a": results()}, ["noisy"], "auto", "random", 0.005)
    assert abs(noisy["d"]) < 1e-3 and 0.05 < noisy["p"] < 0.5 and not noisy["passes"]
    paths = []
    for name, res in (("a", results()), ("b", results(dataset="imagefolder:/x/fashion-lt10"))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(res))
    assert decide.main(["--step", "confirm", *map(str, paths), "--candidates", "close,dips"]) == 0
    out = capsys.readouterr().out
    assert "| fashion-lt10 | `close` |" in out and "`close`: passes every track (2 of 2 tracks)" in out
    assert "`dips`: fails (0 of 2 tracks)" in out


def test_a_missing_strategy_is_named(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results()))
    with pytest.raises(SystemExit, match="no runs of nope"):
        decide.main(["--step", "select", str(path), "--candidates", "nope"])
