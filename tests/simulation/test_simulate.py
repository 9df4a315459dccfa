"""The simulation CLI: every track and every strategy with tiny budgets, the results schema,
determinism, clear errors for bad flags, and the re-plot command."""

import json

import jsonschema
import pytest

import strategies
from ml_backend.simulation import runner as simulate
from ml_backend.simulation.report import RESULTS_SCHEMA, summarise

TINY = ["--rounds", "2", "--steps", "5", "--source-steps", "20", "--seeds", "2", "--no-progress"]


def run(tmp_path, *args):
    out = tmp_path / "out"
    code = simulate.main([*args, *TINY, "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    return json.loads((out / "results.json").read_text()), out


def test_every_strategy_on_the_digits_track(tmp_path):
    specs = [s if s != "aift" else "aift:views=3" for s in strategies.available()]
    results, out = run(tmp_path, "--dataset", "digits", "--strategies", ",".join(specs), "--batch", "3")
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert {r["strategy"] for r in results["runs"]} == set(specs) and len(results["runs"]) == 2 * len(specs)
    for r in results["runs"]:
        assert [x["labels"] for x in r["rounds"]] == [10, 13, 16]  # round 0 is the initial model
    adma = next(r for r in results["runs"] if r["strategy"] == "adma")
    assert adma["strategy_info"]["landmark_mode"] == "source-data"  # landmarks from the source task
    mmd = next(r for r in results["runs"] if r["strategy"] == "mmd")
    assert mmd["strategy_info"]["source"] == "source-data"  # a sample of the source task
    assert (out / "curves.png").stat().st_size > 10_000 and "| `random` |" in (out / "summary.md").read_text()
    for r in results["runs"]:  # the stopping signal: κ of consecutive rounds on the stop set
        assert all(-1 <= x["kappa"] <= 1 for x in r["rounds"][1:]) and "kappa" not in r["rounds"][0]
    auto = next(r for r in results["runs"] if r["strategy"] == "auto")
    assert [x["strategy_info"]["regime"] for x in auto["rounds"][1:]] == ["cold-start", "cold-start"]
    summary = (out / "summary.md").read_text()
    assert "Stopping signal" in summary and "| `margin` | 0.99, 3 | 0/2 |" in summary  # 2 rounds: never 3 windows


def test_cluttered_and_novel_tracks_and_determinism(tmp_path):
    a, _ = run(tmp_path, "--dataset", "cluttered-digits", "--strategies", "random,emoc,adma", "--batch", "4")
    b, _ = run(tmp_path, "--dataset", "cluttered-digits", "--strategies", "random,emoc,adma", "--batch", "4")
    strip = lambda res: [[(x["labels"], x["accuracy"], x["auc"]) for x in r["rounds"]] for r in res["runs"]]  # noqa: E731
    assert strip(a) == strip(b)  # same seeds, same curves
    seeds = {r["seed"]: r["rounds"][0]["accuracy"] for r in a["runs"] if r["strategy"] == "random"}
    assert all(r["rounds"][0]["accuracy"] == seeds[r["seed"]] for r in a["runs"])  # shared seed set and head
    novel, _ = run(
        tmp_path, "--dataset", "digits-novel", "--strategies", "random,least_confidence,margin,max_confidence,emoc"
    )
    jsonschema.validate(novel, RESULTS_SCHEMA)
    run0 = novel["runs"][0]["rounds"]
    assert run0[0]["labels"] == 100 and run0[0]["classes_discovered"] == 5 and run0[-1]["labels"] == 110
    assert {r["set_criterion"] for r in novel["runs"]} == {"random", "min", "1-vs-2", "max", "emoc"}


def test_imagefolder_track_with_source(tmp_path, digits64):
    import io

    from PIL import Image

    for root, names in ((tmp_path / "target", (0, 1)), (tmp_path / "source", (2, 3))):
        for i, (_, png, label) in enumerate(digits64):
            if label in names:
                (root / str(label)).mkdir(parents=True, exist_ok=True)
                Image.open(io.BytesIO(png)).save(root / str(label) / f"{i}.png")
    results, _ = run(
        tmp_path,
        "--dataset",
        f"imagefolder:{tmp_path / 'target'}",
        "--source",
        str(tmp_path / "source"),
        "--strategies",
        "random,margin,adma",
        "--initial",
        "2",
        "--batch",
        "1",
    )
    assert results["config"]["m0"].endswith(".pt")  # M0 pretrained on the source folder
    assert len(results["runs"]) == 6
    # any torchvision architecture on a folder, at a chosen input size (its own normalisation)
    other, _ = run(
        tmp_path,
        "--dataset",
        f"imagefolder:{tmp_path / 'target'}",
        "--backbone",
        "mobilenet_v3_small",
        "--weights",
        "none",
        "--image-size",
        "48",
        "--strategies",
        "random,adma",
        "--initial",
        "2",
        "--batch",
        "1",
        "--steps",
        "3",
    )
    assert (other["config"]["backbone"], other["config"]["image_size"]) == ("mobilenet_v3_small", 48)
    assert all(0.0 <= x["accuracy"] <= 1.0 for r in other["runs"] for x in r["rounds"])


def test_queue_diversity_compare_runs_each_strategy_both_ways(tmp_path):
    results, out = run(
        tmp_path,
        "--dataset",
        "digits",
        "--strategies",
        "margin",
        "--batch",
        "4",
        "--queue-diversity",
        "compare",
        "--queue-diversity-top",
        "30",
    )
    jsonschema.validate(results, RESULTS_SCHEMA)
    runs = {(r["strategy"], r["seed"]): r for r in results["runs"]}
    assert set(runs) == {(name, seed) for name in ("margin", "margin +queue=coreset@30") for seed in (0, 1)}
    differ = 0
    for seed in (0, 1):
        plain, queued = runs[("margin", seed)]["rounds"], runs[("margin +queue=coreset@30", seed)]["rounds"]
        assert plain[0]["accuracy"] == queued[0]["accuracy"]  # same seed set and head before any choice
        # k-center greedy starts from the best candidate, then spreads over the top 30
        assert plain[1]["selected"][0] == queued[1]["selected"][0] and len(set(queued[1]["selected"])) == 4
        differ += set(plain[1]["selected"]) != set(queued[1]["selected"])
    assert differ
    assert "margin +queue=coreset@30" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategies", "random,best"], "unknown strategy 'best'"),
        (["--strategies", "adma:lam"], "bad strategy option"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--dataset", "imagefolder:/nonexistent"], "is not a folder"),
        (["--dataset", "digits-novel", "--strategies", "badge"], "has no set version"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--source", "/tmp"], "--source only goes with"),
        (["--dataset", "digits-novel", "--strategies", "margin", "--queue-diversity", "coreset"], "selects whole sets"),
        (["--queue-diversity-top", "1"], "--queue-diversity-top must be at least 2"),
    ],
)
def test_bad_flags_are_refused_clearly(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        simulate.main(["--dataset", "digits", *args] if "--dataset" not in args else args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_not_an_imagefolder_and_a_budget_beyond_the_pool(tmp_path, capsys):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"x")
    assert (
        simulate.main(
            [
                "--dataset",
                f"imagefolder:{tmp_path / 'flat'}",
                "--seeds",
                "1",
                "--no-progress",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "is not an ImageFolder" in capsys.readouterr().err
    assert (
        simulate.main(
            [
                "--dataset",
                "digits",
                "--batch",
                "500",
                "--rounds",
                "3",
                "--seeds",
                "1",
                "--no-progress",
                "--cache",
                str(tmp_path / "c"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "exceeds the pool" in capsys.readouterr().err


def test_plot_redraws_from_results_and_statistics_are_paired(tmp_path):
    from ml_backend.simulation import plot

    results = {
        "config": {
            "dataset": "toy",
            "strategies": ["random", "good"],
            "backbone": "smallcnn",
            "initial": 1,
            "batch": 1,
            "rounds": 2,
        },
        "versions": {},
        "seeds": [0, 1, 2],
        "runs": [],
    }
    for seed in range(3):
        for name, bonus in (("random", 0.0), ("good", 0.1 + 0.01 * seed)):
            results["runs"].append(
                {
                    "strategy": name,
                    "seed": seed,
                    "rounds": [
                        {
                            "labels": n,
                            "accuracy": 0.5 + 0.1 * i + (bonus if i else 0),
                            "auc": None,
                            "classes_discovered": 2,
                            "score_seconds": 0.0,
                            "train_seconds": 0.0,
                        }
                        for i, n in enumerate((1, 2, 3))
                    ],
                }
            )
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert plot.main([str(path)]) == 0
    assert (tmp_path / "curves.png").is_file() and "`good`" in (tmp_path / "summary.md").read_text()
    good = next(r for r in summarise(results) if r["strategy"] == "good")
    assert good["d_alc"] == pytest.approx(0.11) and good["d_alc_lo"] < 0.11 < good["d_alc_hi"]
    assert good["labels_to_baseline_final"] == 2  # reaches random's final accuracy (0.7) one round early
    assert good["reach"] == (2, 2, 2) and good["reach_ratio"] == pytest.approx(2 / 3)  # every resample agrees
    assert good["at"][3]["d"] == pytest.approx(0.11) and good["at"][1]["d"] == 0.0
    summary = (tmp_path / "summary.md").read_text()
    assert "labels to reach random's final [95% CI]" in summary and "| `good` |" in summary
    path.write_text(json.dumps({"runs": []}))
    assert plot.main([str(path)]) == 2


@pytest.mark.labelstudio
def test_live_mode_through_label_studio_and_the_backend(label_studio, tmp_path):
    from ml_backend.simulation.config import parse_args
    from ml_backend.simulation.live import run_live
    from ml_backend.simulation.pretrain import pretrain_source

    cfg, _ = parse_args(
        [
            "--live",
            "--dataset",
            "digits",
            "--strategies",
            "margin",
            "--seeds",
            "1",
            "--rounds",
            "2",
            "--batch",
            "3",
            "--steps",
            "10",
            "--source-steps",
            "20",
            "--cache",
            str(tmp_path / "c"),
        ]
    )
    cfg = cfg.replace(m0=pretrain_source(cfg))
    run = run_live(cfg, "margin", 0, label_studio, tmp_path)
    jsonschema.validate(
        {
            "config": {k: cfg.public()[k] for k in ("dataset", "strategies", "backbone", "initial", "batch", "rounds")},
            "versions": {},
            "seeds": [0],
            "runs": [run],
        },
        RESULTS_SCHEMA,
    )
    assert [r["labels"] for r in run["rounds"]] == [10, 13, 16] and run["live"]
    assert all(0 <= r["accuracy"] <= 1 and r["train_seconds"] > 0 for r in run["rounds"])
    # the backend trained one round per batch and the project follows its newest version
    project = max(p["id"] for p in label_studio.api("GET", "/api/projects")["results"])
    assert "-t3-" in label_studio.api("GET", f"/api/projects/{project}")["model_version"]


def test_holm_adjustment_matches_its_definition():
    from ml_backend.simulation.stats import holm

    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_a_stopped_simulation_resumes_from_its_journal(tmp_path, capsys):
    import json as _json

    from ml_backend.simulation.config import parse_args
    from ml_backend.simulation.runner import Journal

    args = ["--dataset", "digits", "--strategies", "random,margin", "--batch", "3"]
    full, out = run(tmp_path, *args)
    cfg, _ = parse_args([*args, *TINY, "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert not (out / "runs.jsonl").exists()  # removed once results.json holds everything
    # as if stopped after three of the four runs: the journal holds them (and a torn last line)
    Journal(out / "runs.jsonl", cfg, resume=False)
    with open(out / "runs.jsonl", "a") as f:
        for r in full["runs"][:3]:
            f.write(_json.dumps(r) + "\n")
        f.write('{"strategy": "torn')
    capsys.readouterr()
    assert simulate.main([*args, *TINY, "--cache", str(tmp_path / "cache"), "--out", str(out), "--resume"]) == 0
    assert "resuming: 3 of 4 runs already done" in capsys.readouterr().err
    resumed = _json.loads((out / "results.json").read_text())
    key = lambda res: sorted((r["strategy"], r["seed"], tuple(x["accuracy"] for x in r["rounds"])) for r in res["runs"])  # noqa: E731
    assert key(resumed) == key(full)
    # a finished simulation (no journal, results.json) is extended by another strategy and a seed
    assert not (out / "runs.jsonl").exists()
    more = [
        "--dataset",
        "digits",
        "--strategies",
        "random,margin,auto",
        "--batch",
        "3",
        *TINY[:-3],
        "--seeds",
        "3",
        "--no-progress",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--resume",
    ]
    assert simulate.main(more) == 0
    assert "resuming: 4 of 9 runs already done" in capsys.readouterr().err
    extended = _json.loads((out / "results.json").read_text())
    assert set(key(full)) <= set(key(extended)) and len(extended["runs"]) == 9
    # another configuration's journal is not reused
    Journal(out / "runs.jsonl", cfg, resume=False)
    assert (
        simulate.main(
            [
                "--dataset",
                "digits",
                "--strategies",
                "random",
                "--batch",
                "2",
                *TINY,
                "--cache",
                str(tmp_path / "cache"),
                "--out",
                str(out),
                "--resume",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "starting over" in err and "batch" in err  # says what differs


def test_the_multi_label_track_trains_sigmoids_and_reports_micro_f1(tmp_path):
    from ml_backend.simulation.datasets import multi_digits

    ds = multi_digits()
    assert ds.target.y.shape == (len(ds.target.x), 5) and set(ds.target.y.unique().tolist()) == {0.0, 1.0}
    assert (ds.target.y.sum(1) == 0).any() and (ds.target.y.sum(1) >= 2).any()  # empty and several-label images
    results, out = run(tmp_path, "--dataset", "multi-digits", "--strategies", "random,margin,badge", "--batch", "4")
    jsonschema.validate(results, RESULTS_SCHEMA)
    for r in results["runs"]:
        assert [x["labels"] for x in r["rounds"]] == [20, 24, 28]
        assert all(0 <= x["accuracy"] <= 1 for x in r["rounds"])
    assert "micro-F1" in (out / "summary.md").read_text()
    code = simulate.main(
        [
            "--dataset",
            "multi-digits",
            "--strategies",
            "adma",
            *TINY,
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "refused"),
        ]
    )
    assert code != 0  # ADMA cannot value multi-label outputs: refused, not replaced by another method
