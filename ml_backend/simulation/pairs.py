"""Paired comparison of strategy variants within one simulation run: each pair is (reference,
variant), e.g. an exact method and the same method with a large-pool approximation forced on.
Prints a markdown table: ALC and final accuracy of the reference, the variant's paired difference
(same seeds; 95 % t-interval, Wilcoxon signed-rank p, and p Holm-corrected for the number of pairs),
and the share of rounds in which both labeled exactly the same tasks.

    python -m ml_backend.simulation.pairs docs/results/large-pools/results.json \\
        --pair badge:budget=60,badge:budget=60:candidates=125 [--pair ...] [--out pairs.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .report import curves, emit
from .stats import holm, paired, seed_alc, t_interval, wilcoxon


def interval(t) -> str:
    """A paired difference and its 95 % interval, (d, lo, hi), as a table cell."""
    return f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}]"


def same_selections(results: dict, a: str, b: str) -> tuple[int, int]:
    """(rounds in which ``a`` and ``b`` labeled the same set of tasks, rounds compared), over the
    seeds both ran."""
    runs = {(r["strategy"], r["seed"]): r["rounds"] for r in results["runs"]}
    same = total = 0
    for (name, seed), rounds in runs.items():
        other = runs.get((b, seed)) if name == a else None
        if other is None:
            continue
        for x, y in zip(rounds[1:], other[1:]):
            total += 1
            same += set(x.get("selected", ())) == set(y.get("selected", ()))
    return same, total


def compare(results: dict, pairs: list[tuple[str, str]]) -> list[dict]:
    data = curves(results)
    rows = []
    for ref, variant in pairs:
        missing = [s for s in (ref, variant) if s not in data]
        if missing:
            raise SystemExit(f"not in these results: {', '.join(missing)}; they hold {', '.join(data)}")
        v, r = paired(data[variant], data[ref])
        alc_v, alc_r = seed_alc(v), seed_alc(r)
        row = {
            "reference": ref,
            "variant": variant,
            "seeds": len(v),
            "alc": float(alc_r.mean()),
            "final": float(r[:, -1].mean()),
        }
        for key, diffs in (("alc", alc_v - alc_r), ("final", v[:, -1] - r[:, -1])):
            row[f"d_{key}"] = t_interval(diffs)
            row[f"p_{key}"] = wilcoxon(diffs)
        row["same"] = same_selections(results, ref, variant)
        rows.append(row)
    for key in ("alc", "final"):
        for row, adjusted in zip(rows, holm([r[f"p_{key}"] for r in rows])):
            row[f"p_{key}_holm"] = adjusted
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| reference | variant | seeds | ALC | Δ ALC [95% CI] | p (Holm) | final | Δ final [95% CI] | p (Holm) "
        "| same tasks labeled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        same, total = r["same"]
        lines.append(
            f"| `{r['reference']}` | `{r['variant']}` | {r['seeds']} | {r['alc']:.3f} | {interval(r['d_alc'])} "
            f"| {r['p_alc_holm']:.2f} | {r['final']:.3f} | {interval(r['d_final'])} | {r['p_final_holm']:.2f} "
            f"| {same}/{total} rounds |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path)
    p.add_argument("--pair", action="append", required=True, help="REFERENCE,VARIANT (strategy specs)")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    pairs = []
    for text in args.pair:
        ref, sep, variant = text.partition(",")
        if not sep or not ref or not variant:
            raise SystemExit(f"--pair takes REFERENCE,VARIANT; got {text!r}")
        pairs.append((ref, variant))
    results = json.loads(args.results.read_text())
    table = markdown(compare(results, pairs))
    emit(table, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
