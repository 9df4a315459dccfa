"""The ablation's decision rule (docs/results.md, "The decision rule"), applied to stored runs, so that
the outcome is computed rather than read off tables by hand.

Step 1 (``--step select``, one explore run): a candidate goes to the confirm phase when its mean ALC
is at most ``margin`` below the baseline's and the summary's per-count test (Wilcoxon, Holm across the
strategies at each label count) marks it significantly below ``random`` at no label count.

Step 2 (``--step confirm``, one run per track): a candidate passes a track when the one-sided paired
t-test of H0 "candidate − baseline ≤ −margin" (seed ALC) is rejected at p < 0.05, Holm-corrected over
the candidates of that track, and it is significantly below ``random`` at no label count. It becomes
the default only when it passes every track given.

    python -m ml_backend.simulation.decide --step select docs/results/ablation-explore/results.json \\
        --candidates emoc,auto:warm=emoc
    python -m ml_backend.simulation.decide --step confirm docs/results/ablation-confirm-*/results.json \\
        --candidates auto:warm=emoc [--seeds 10-19] [--out decision.md]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .config import parse_seeds
from .report import below_at, count_tests, curves, emit
from .stats import holm, paired, seed_alc
from .subset import restrict


def below_random(results: dict, random: str = "random") -> dict[str, list[int]]:
    """Each strategy's label counts at which it is significantly below ``random`` (the summary's test)."""
    data = curves(results)
    tests = count_tests(data, data[random], random)
    return {name: below_at(at) for name, at in tests.items()}


def noninferiority(results: dict, candidate: str, baseline: str, margin: float) -> dict:
    """Paired by seed: the candidate's ALC minus the baseline's, and the one-sided t-test of
    H0 "difference ≤ −margin" (small p: the candidate is not worse by more than ``margin``)."""
    from scipy import stats

    data = curves(results)
    c, b = paired(data[candidate], data[baseline])
    d = seed_alc(c) - seed_alc(b)
    if len(d) < 2:
        p = math.nan
    elif np.all(d == d[0]):
        p = 0.0 if d[0] > -margin else 1.0
    else:
        p = float(stats.ttest_1samp(d + margin, 0.0, alternative="greater").pvalue)
    lower = math.nan
    if len(d) >= 2:
        lower = float(d.mean() - stats.t.ppf(0.95, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return {"seeds": len(d), "d": float(d.mean()) if len(d) else math.nan, "lower95": lower, "p": p}


def select(results: dict, candidates: list[str], baseline: str, random: str, margin: float) -> list[dict]:
    data = curves(results)
    below = below_random(results, random)
    base_alc = float(seed_alc(data[baseline]["matrix"]).mean())
    rows = []
    for name in candidates:
        alc = float(seed_alc(data[name]["matrix"]).mean())
        gap = alc - base_alc
        rows.append(
            {
                "candidate": name,
                "seeds": len(data[name]["seeds"]),
                "alc": alc,
                "gap": gap,
                "below": below.get(name, []),
                "passes": gap >= -margin and not below.get(name),
            }
        )
    return rows


def confirm(tracks: dict[str, dict], candidates: list[str], baseline: str, random: str, margin: float) -> list[dict]:
    rows = []
    for track, results in tracks.items():
        below = below_random(results, random)
        tests = [noninferiority(results, name, baseline, margin) for name in candidates]
        for name, t, adjusted in zip(candidates, tests, holm([t["p"] for t in tests])):
            ok = adjusted < 0.05 and not below.get(name)
            rows.append(
                {"track": track, "candidate": name, **t, "p_holm": adjusted, "below": below.get(name, []), "passes": ok}
            )
    return rows


def _labels(counts: list[int]) -> str:
    return "no" if not counts else "yes: at " + ", ".join(map(str, counts))


def markdown_select(rows: list[dict], baseline: str, margin: float) -> str:
    lines = [
        f"| candidate | seeds | ALC | − `{baseline}` | within {margin * 100:g} pp? "
        "| below random at a count? | to confirm? |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['candidate']}` | {r['seeds']} | {r['alc']:.3f} | {r['gap'] * 100:+.1f} pp "
            f"| {'yes' if r['gap'] >= -margin else 'no'} | {_labels(r['below'])} "
            f"| **{'yes' if r['passes'] else 'no'}** |"
        )
    return "\n".join(lines) + "\n"


def markdown_confirm(rows: list[dict], baseline: str, margin: float) -> str:
    lines = [
        f"| track | candidate | seeds | − `{baseline}`, ALC | one-sided 95 % lower bound "
        f"| p (H0: ≤ −{margin * 100:g} pp) "
        "| p (Holm) | below random at a count? | passes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['track']} | `{r['candidate']}` | {r['seeds']} | {r['d'] * 100:+.2f} pp "
            f"| {r['lower95'] * 100:+.2f} pp "
            f"| {r['p']:.4f} | {r['p_holm']:.4f} | {_labels(r['below'])} | {'yes' if r['passes'] else 'no'} |"
        )
    verdict = []
    for name in dict.fromkeys(r["candidate"] for r in rows):
        mine = [r for r in rows if r["candidate"] == name]
        passed = sum(r["passes"] for r in mine)
        verdict.append(
            f"- `{name}`: {'passes every track' if passed == len(mine) else 'fails'} ({passed} of {len(mine)} tracks)"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(verdict) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, nargs="+", help="results.json (one per track for --step confirm)")
    p.add_argument("--step", choices=("select", "confirm"), required=True)
    p.add_argument("--candidates", required=True, help="comma list of strategy specs")
    p.add_argument("--baseline", default="auto")
    p.add_argument("--random", default="random")
    p.add_argument("--margin", type=float, default=0.005, help="ALC margin (0.005 = 0.5 pp)")
    p.add_argument("--seeds", default=None, help="only these seeds (e.g. 10-19)")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    candidates = args.candidates.split(",")
    tracks = {}
    for path in args.results:
        results = json.loads(path.read_text())
        if args.seeds is not None:
            results = restrict(results, parse_seeds(args.seeds))
        held = set(curves(results))
        missing = [s for s in [*candidates, args.baseline, args.random] if s not in held]
        if missing:
            raise SystemExit(f"{path}: no runs of {', '.join(missing)}; it holds {', '.join(sorted(held))}")
        tracks[str(results["config"]["dataset"]).rsplit("/", 1)[-1]] = results
    if args.step == "select":
        if len(tracks) != 1:
            raise SystemExit("--step select reads one explore run")
        text = markdown_select(
            select(*tracks.values(), candidates, args.baseline, args.random, args.margin), args.baseline, args.margin
        )
    else:
        text = markdown_confirm(
            confirm(tracks, candidates, args.baseline, args.random, args.margin), args.baseline, args.margin
        )
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
