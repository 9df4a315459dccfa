"""Outputs of the simulation: the results.json schema, summary statistics, summary.md and curves.png.
``python -m ml_backend.simulation.plot RESULTS.json`` re-draws them from the file alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ml_backend import atomic
from ml_backend.simulation.stats import holm, paired, reach_interval, seed_alc, t_interval, wilcoxon

ROUND_SCHEMA = {
    "type": "object",
    "required": ["labels", "accuracy", "auc", "classes_discovered", "score_seconds", "train_seconds"],
    "properties": {
        "labels": {"type": "integer", "minimum": 0},
        "accuracy": {"type": "number", "minimum": 0, "maximum": 1},
        "auc": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "classes_discovered": {"type": "integer", "minimum": 0},
        "score_seconds": {"type": "number", "minimum": 0},
        "train_seconds": {"type": "number", "minimum": 0},
    },
}
RESULTS_SCHEMA = {
    "type": "object",
    "required": ["config", "versions", "seeds", "runs"],
    "properties": {
        "config": {"type": "object", "required": ["dataset", "strategies", "backbone", "initial", "batch", "rounds"]},
        "versions": {"type": "object"},
        "seeds": {"type": "array", "items": {"type": "integer"}},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["strategy", "seed", "rounds"],
                "properties": {
                    "strategy": {"type": "string"},
                    "seed": {"type": "integer"},
                    "rounds": {"type": "array", "minItems": 1, "items": ROUND_SCHEMA},
                },
            },
        },
    },
}


def curves(results: dict) -> dict[str, dict]:
    """Per strategy: labels axis and an (seeds, rounds) accuracy matrix, in seed order."""
    out: dict[str, dict] = {}
    for run in results["runs"]:
        entry = out.setdefault(run["strategy"], {"labels": [r["labels"] for r in run["rounds"]], "acc": {}, "disc": {}})
        entry["acc"][run["seed"]] = [r["accuracy"] for r in run["rounds"]]
        entry["disc"][run["seed"]] = [r["classes_discovered"] for r in run["rounds"]]
    for entry in out.values():
        seeds = sorted(entry["acc"])
        entry["seeds"] = seeds
        entry["matrix"] = np.array([entry["acc"][s] for s in seeds], dtype=np.float64)
    return out


MULTI_LABEL_TRACKS = ("multi-digits",)


def metric_name(cfg: dict) -> str:
    """What a track's ``accuracy`` measures: micro-F1 on a multi-label track."""
    return "micro-F1" if cfg.get("dataset") in MULTI_LABEL_TRACKS else "accuracy"


def summarise(results: dict, baseline: str = "random") -> list[dict]:
    """ALC (mean accuracy over rounds 1..T), final accuracy, labels to reach the baseline's final
    accuracy, and paired differences to the baseline (95% t-interval, Wilcoxon signed-rank p, and p
    Holm-corrected for the number of strategies compared)."""
    data = curves(results)
    base = data.get(baseline)
    rows = []
    for name, entry in data.items():
        m = entry["matrix"]
        alc = seed_alc(m)
        final = m[:, -1]
        mean_curve = m.mean(axis=0)
        row = {
            "strategy": name,
            "seeds": len(entry["seeds"]),
            "alc": float(alc.mean()),
            "final": float(final.mean()),
            "final_labels": entry["labels"][-1],
            "time_score": None,
            "time_train": None,
            "curve": mean_curve.tolist(),
        }
        disc = np.array([entry["disc"][s] for s in entry["seeds"]], dtype=np.float64)
        row["discovered_final"] = float(disc[:, -1].mean())
        if base is not None:
            target = float(base["matrix"][:, -1].mean())
            reached = np.nonzero(mean_curve >= target - 1e-12)[0]
            row["labels_to_baseline_final"] = int(entry["labels"][reached[0]]) if len(reached) else None
            common = [s for s in entry["seeds"] if s in base["acc"]]
            if name != baseline and common:
                idx = [entry["seeds"].index(s) for s in common]
                bidx = [base["seeds"].index(s) for s in common]
                bm = base["matrix"]
                b_alc = seed_alc(bm)
                d_alc, d_final = alc[idx] - b_alc[bidx], final[idx] - bm[bidx, -1]
                row["d_alc"], row["d_alc_lo"], row["d_alc_hi"] = t_interval(d_alc)
                row["d_alc_p"] = wilcoxon(d_alc)
                row["d_final"], row["d_final_lo"], row["d_final_hi"] = t_interval(d_final)
                row["d_final_p"] = wilcoxon(d_final)
        times = [
            (r["score_seconds"], r["train_seconds"])
            for run in results["runs"]
            if run["strategy"] == name
            for r in run["rounds"][1:]
        ]
        if times:
            row["time_score"] = float(np.mean([t[0] for t in times]))
            row["time_train"] = float(np.mean([t[1] for t in times]))
        rows.append(row)
    for key in ("d_alc_p", "d_final_p"):  # corrected for the number of strategies compared with the baseline
        compared = [r for r in rows if key in r]
        for r, adjusted in zip(compared, holm([r[key] for r in compared])):
            r[key + "_holm"] = adjusted
    if base is not None:
        _at_label_counts(rows, data, base, baseline)
    rows.sort(key=lambda r: -r["alc"])
    return rows


def count_tests(data: dict, base: dict, baseline: str) -> dict[str, dict]:
    """Per strategy (the baseline and strategies on other label counts left out) and label count: mean
    accuracy and paired difference to the baseline (t-interval, Wilcoxon p, and p Holm-corrected across
    the strategies at that label count)."""
    labels = base["labels"]
    out: dict[str, dict] = {}
    for name, entry in data.items():
        if name == baseline or entry["labels"] != labels:
            continue
        m, b = paired(entry, base)
        if len(m) == 0:
            continue
        out[name] = {}
        for j, n in enumerate(labels):
            d = m[:, j] - b[:, j]
            mean, lo, hi = t_interval(d)
            out[name][n] = {"acc": float(m[:, j].mean()), "d": mean, "lo": lo, "hi": hi, "p": wilcoxon(d)}
    for n in labels:
        cells = [at[n] for at in out.values()]
        for cell, adjusted in zip(cells, holm([c["p"] for c in cells])):
            cell["p_holm"] = adjusted
    return out


def below_at(at: dict) -> list:
    """The label counts of :func:`count_tests` cells where a strategy is significantly below the
    baseline (Holm-corrected p < 0.05)."""
    return [n for n, c in at.items() if c.get("p_holm", 1.0) < 0.05 and c["d"] < 0]


def emit(text: str, out) -> None:
    """A command's markdown: printed, and also written to ``out`` when given."""
    print(text, end="")
    if out:
        out.write_text(text)


def _at_label_counts(rows: list[dict], data: dict, base: dict, baseline: str) -> None:
    """Per label count, the paired tests of :func:`count_tests`; and the labels-to-reach bootstrap
    interval."""
    tests = count_tests(data, base, baseline)
    for row in rows:
        row["at"] = tests.get(row["strategy"], {})
        if row["at"]:
            row["reach"] = reach_interval(data[row["strategy"]], base)
            row["reach_ratio"] = row["reach"][0] / base["labels"][-1] if base["labels"][-1] else math.nan


def _fmt(x, digits=3):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def summary_markdown(results: dict, baseline: str = "random") -> str:
    cfg = results["config"]
    rows = summarise(results, baseline)
    lines = [
        f"# Simulation: {cfg['dataset']}",
        "",
        f"backbone `{cfg['backbone']}`, weights `{cfg.get('weights')}`"
        + (f", FREEZE `{cfg['freeze']}`" if cfg.get("freeze", "default") != "default" else "")
        + (f", {cfg['image_size']} px" if cfg.get("image_size") else "")
        + f", seed set {cfg['initial']}, "
        f"{cfg['rounds']} rounds × {cfg['batch']}, {len(results['seeds'])} seeds, device {cfg.get('device')}"
        + (
            f", wall time {results['wall_seconds'] / 60:.0f} min with {cfg.get('workers', 1)} worker(s)"
            if results.get("wall_seconds")
            else ""
        )
        + ".",
        (
            'On this multi-label track every "accuracy" below is the test set\'s micro-F1 at the threshold '
            "0.5 (docs/methods.md §9.5). "
            if metric_name(cfg) == "micro-F1"
            else ""
        )
        + "ALC = mean test accuracy over rounds 1..T. Δ = paired difference to "
        f"`{baseline}` (same seeds), mean [95% t-interval], p = Wilcoxon signed-rank, p (Holm) = p corrected "
        "for the number of strategies compared with the baseline.",
        "",
        "| strategy | seeds | ALC | Δ ALC [95% CI] | p | p (Holm) | final acc | Δ final [95% CI] | p | p (Holm) | "
        f"labels to reach {baseline}'s final | classes found | score s/round | train s/round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d_alc = (
            f"{r['d_alc']:+.3f} [{r['d_alc_lo']:+.3f}, {r['d_alc_hi']:+.3f}]"
            if "d_alc" in r and not math.isnan(r["d_alc_lo"])
            else "—"
        )
        d_fin = (
            f"{r['d_final']:+.3f} [{r['d_final_lo']:+.3f}, {r['d_final_hi']:+.3f}]"
            if "d_final" in r and not math.isnan(r["d_final_lo"])
            else "—"
        )
        reach = r.get("labels_to_baseline_final", "—")
        lines.append(
            f"| `{r['strategy']}` | {r['seeds']} | {r['alc']:.3f} | {d_alc} | {_fmt(r.get('d_alc_p'))} | "
            f"{_fmt(r.get('d_alc_p_holm'))} | {r['final']:.3f} | {d_fin} | {_fmt(r.get('d_final_p'))} | "
            f"{_fmt(r.get('d_final_p_holm'))} | "
            f"{reach if reach is not None else 'not reached'} | {r['discovered_final']:.1f} | "
            f"{_fmt(r['time_score'])} | {_fmt(r['time_train'])} |"
        )
    lines += _fixed_counts_markdown(rows, baseline)
    lines += _stopping_markdown(results)
    return "\n".join(lines) + "\n"


STOP_RULES = ((0.99, 3), (0.95, 3), (0.9, 2))  # the paper's rule first, then two looser ones


def stopping(results: dict, rules=STOP_RULES) -> list[dict]:
    """Per strategy and rule (core/stopping.py): in how many runs the stabilizing-predictions signal
    fires, at which label count, the accuracy it gives up (final minus accuracy when it fires, a
    95% t-interval over seeds; 0 where it never fires) and the labels it saves."""
    from ml_backend.core.stopping import StabilityRule

    out = []
    by_strategy: dict[str, list] = {}
    for run in results["runs"]:
        if len(run["rounds"]) > 1 and all("kappa" in r for r in run["rounds"][1:]):
            by_strategy.setdefault(run["strategy"], []).append(run)
    for name, runs in by_strategy.items():
        for threshold, window in rules:
            rule = StabilityRule(threshold, window)
            fired, gaps, saved = [], [], []
            for run in runs:
                rounds = run["rounds"]
                at = rule.first([r["kappa"] for r in rounds[1:]])
                stop = rounds[at + 1] if at is not None else rounds[-1]
                fired.append(stop["labels"] if at is not None else None)
                gaps.append(rounds[-1]["accuracy"] - stop["accuracy"])
                saved.append(rounds[-1]["labels"] - stop["labels"])
            mean, lo, hi = t_interval(np.array(gaps))
            hits = [f for f in fired if f is not None]
            out.append(
                {
                    "strategy": name,
                    "rule": rule.describe(),
                    "threshold": threshold,
                    "window": window,
                    "runs": len(runs),
                    "fired": len(hits),
                    "median_labels": float(np.median(hits)) if hits else None,
                    "gap": mean,
                    "gap_lo": lo,
                    "gap_hi": hi,
                    "saved": float(np.mean(saved)),
                    "budget": runs[0]["rounds"][-1]["labels"],
                }
            )
    return out


def _stopping_markdown(results: dict) -> list[str]:
    rows = stopping(results)
    if not rows:
        return []
    out = [
        "",
        "Stopping signal (stabilizing predictions, docs/methods.md §7): Cohen's κ between consecutive "
        "rounds' predictions on a fixed stop set of 1000 pool items; the rule fires when the mean of the last "
        "`window` κ reaches the threshold. Gap = final accuracy − accuracy when it fires (0 where it never "
        "fires), mean [95% t-interval]; saved = labels of the budget left when it fires.",
        "",
        "| strategy | rule (κ ≥, window) | fired in | median labels when fired | accuracy gap [95% CI] | "
        "labels saved (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| `{r['strategy']}` | {r['threshold']:g}, {r['window']} | {r['fired']}/{r['runs']} | "
            f"{_fmt_labels(r['median_labels']) if r['median_labels'] is not None else '—'} | "
            f"{r['gap']:+.3f} [{r['gap_lo']:+.3f}, {r['gap_hi']:+.3f}] | {r['saved']:.0f} of {r['budget']} |"
        )
    return out


def _fmt_labels(x: float) -> str:
    return "not reached" if math.isinf(x) else f"{x:.0f}"


def _fixed_counts_markdown(rows: list[dict], baseline: str) -> list[str]:
    """Accuracy at a few label counts (the first, a third, two thirds and the last round), with the
    paired difference to the baseline; ▲/▼ = significantly above/below it (Holm-corrected p < 0.05
    across the strategies at that label count). Then the labels needed to reach the baseline's final."""
    compared = [r for r in rows if r.get("at")]
    if not compared:
        return []
    counts = list(next(iter(compared))["at"])
    picks = sorted(
        {counts[1 if len(counts) > 1 else 0], counts[len(counts) // 3], counts[2 * len(counts) // 3], counts[-1]}
    )
    base_row = next((r for r in rows if r["strategy"] == baseline), None)
    out = [
        "",
        f"Accuracy at fixed label counts: mean, and the paired difference to `{baseline}` [95% interval]; "
        "▲/▼ = significantly above/below it (Wilcoxon, Holm-corrected across strategies at that count, p < 0.05). "
        f"Below the table: labels needed to reach `{baseline}`'s final accuracy, with a 95% bootstrap interval over "
        "seeds.",
        "",
        "| strategy | "
        + " | ".join(f"{n} labels" for n in picks)
        + f" | labels to reach {baseline}'s final [95% CI] | "
        "share of the budget | below the baseline at any count? |",
        "|---|" + "---|" * (len(picks) + 3),
    ]
    if base_row is not None:
        curve = dict(zip(counts, base_row["curve"]))
        out.append(
            f"| `{baseline}` | " + " | ".join(f"{curve[n]:.3f}" for n in picks) + f" | {counts[-1]} | 1.00 | — |"
        )
    for r in compared:
        cells = []
        for n in picks:
            c = r["at"][n]
            mark = (" ▲" if c["d"] > 0 else " ▼") if c.get("p_holm", 1.0) < 0.05 else ""
            cells.append(f"{c['acc']:.3f} ({c['d']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]){mark}")
        est, lo, hi = r["reach"]
        below = below_at(r["at"])
        out.append(
            f"| `{r['strategy']}` | "
            + " | ".join(cells)
            + f" | {_fmt_labels(est)} [{_fmt_labels(lo)}, {_fmt_labels(hi)}] | "
            + (f"{r['reach_ratio']:.2f}" if not math.isinf(est) else "—")
            + f" | {'yes: at ' + ', '.join(map(str, below)) if below else 'no'} |"
        )
    return out


def _plot_paired(ax2, data: dict, base: dict, baseline: str, colors: dict) -> None:
    """The right panel: each strategy's paired accuracy difference to the baseline, with 95% intervals."""
    from scipy import stats

    ax2.axhline(0, color="black", lw=1.2)
    for name, entry in sorted(data.items()):
        if name == baseline:
            continue
        common = [s for s in entry["seeds"] if s in base["acc"]]
        if not common:
            continue
        d = np.array([np.array(entry["acc"][s]) - np.array(base["acc"][s]) for s in common])
        x = np.array(entry["labels"])
        mean = d.mean(axis=0)
        ax2.plot(x, mean, label=name, color=colors[name], lw=1.4)
        if d.shape[0] > 1:
            half = stats.t.ppf(0.975, d.shape[0] - 1) * d.std(axis=0, ddof=1) / math.sqrt(d.shape[0])
            ax2.fill_between(x, mean - half, mean + half, alpha=0.10, color=colors[name])
    ax2.set(
        xlabel="labels",
        ylabel=f"accuracy − {baseline} (paired)",
        title=f"paired difference to {baseline}, mean and 95% interval",
    )
    ax2.grid(alpha=0.3)


def plot_curves(results: dict, path: Path, baseline: str = "random") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    data = curves(results)
    base = data.get(baseline)
    fig, axes = plt.subplots(
        1, 2 if base is not None else 1, figsize=(14 if base is not None else 8, 5.5), dpi=110, squeeze=False
    )
    ax = axes[0, 0]
    colors = {}
    others = [n for n in sorted(data) if n != baseline]
    palette = plt.get_cmap("tab10" if len(others) <= 10 else "tab20")
    for k, name in enumerate(others):
        colors[name] = palette(k % palette.N)
    alc = {n: float(seed_alc(e["matrix"]).mean()) for n, e in data.items()}
    for name in sorted(data, key=lambda n: -alc[n]):  # the legend reads as a ranking by ALC
        entry = data[name]
        m, x = entry["matrix"], np.array(entry["labels"])
        mean = m.mean(axis=0)
        (line,) = ax.plot(
            x,
            mean,
            label=f"{name}: ALC {alc[name]:.3f} (n={m.shape[0]})",
            lw=2.2 if name == baseline else 1.4,
            color="black" if name == baseline else colors[name],
        )
        if m.shape[0] > 1:
            half = stats.t.ppf(0.975, m.shape[0] - 1) * m.std(axis=0, ddof=1) / math.sqrt(m.shape[0])
            ax.fill_between(x, mean - half, mean + half, alpha=0.12, color=line.get_color())
    cfg = results["config"]
    ax.set(
        xlabel="labels",
        ylabel=f"test {metric_name(cfg)}",
        title=f"{cfg['dataset']}: mean and 95% interval over {len(results['seeds'])} seeds",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if base is not None:
        _plot_paired(axes[0, 1], data, base, baseline, colors)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out / "results.json", json.dumps(results, indent=1).encode())
    (out / "summary.md").write_text(summary_markdown(results))
    plot_curves(results, out / "curves.png")
