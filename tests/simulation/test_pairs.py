"""The paired variant report (python -m ml_backend.simulation.pairs)."""

import json

import pytest

from ml_backend.simulation import pairs


def run(strategy, seed, accs, selected):
    rounds = [
        {
            "labels": 10 + 5 * i,
            "accuracy": a,
            "classes_discovered": 2,
            "score_seconds": 0.0,
            "train_seconds": 0.0,
            **({"selected": s} if i else {}),
        }
        for i, (a, s) in enumerate(zip(accs, selected))
    ]
    return {"strategy": strategy, "seed": seed, "rounds": rounds}


def results():
    runs = []
    for seed in range(6):
        runs.append(run("exact", seed, [0.5, 0.6, 0.7], [[], [1, 2], [3, 4]]))
        # the variant: the same first round, another pick and +0.01 at the end
        runs.append(run("approx", seed, [0.5, 0.6, 0.71 + 0.001 * seed], [[], [2, 1], [3, 5]]))
    return {"config": {"dataset": "digits"}, "runs": runs}


def test_pairs_report_differences_and_same_selections(tmp_path, capsys):
    rows = pairs.compare(results(), [("exact", "approx")])
    (row,) = rows
    assert row["seeds"] == 6 and row["same"] == (6, 12)
    assert row["d_final"][0] == pytest.approx(0.0125)
    assert row["d_alc"][0] == pytest.approx(0.0125 / 2)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results()))
    assert pairs.main([str(path), "--pair", "exact,approx", "--out", str(tmp_path / "t.md")]) == 0
    assert "| `exact` | `approx` | 6 |" in capsys.readouterr().out and (tmp_path / "t.md").exists()


def test_pairs_names_what_is_missing():
    with pytest.raises(SystemExit, match="not in these results: nope"):
        pairs.compare(results(), [("exact", "nope")])
