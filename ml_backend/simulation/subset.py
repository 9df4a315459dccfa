"""One strategy against the others of a stored run, on the seeds you name: e.g. the seeds that were
not yet seen when a strategy's settings were chosen. Prints a markdown table: the strategy's ALC and
final accuracy on those seeds, each other strategy's, and the paired differences (strategy − other;
95 % t-interval, Wilcoxon signed-rank p, and p Holm-corrected for the number of strategies compared).

    python -m ml_backend.simulation.subset docs/results/fashion-mnist/results.json --strategy auto \\
        --seeds 12-19 [--against random,margin] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import parse_seeds
from .pairs import compare, interval
from .report import curves, emit


def restrict(results: dict, seeds: tuple[int, ...]) -> dict:
    """The same results, with only the runs of ``seeds``."""
    keep = set(seeds)
    return {**results, "runs": [r for r in results["runs"] if r["seed"] in keep]}


def table(results: dict, strategy: str, against: list[str]) -> str:
    """Markdown: ``strategy`` minus each of ``against``, paired by seed, Holm over ``against``."""
    data = curves(results)
    rows = compare(results, [(other, strategy) for other in against])
    seeds = data[strategy]["seeds"]
    alc, final = data[strategy]["matrix"][:, 1:].mean(), data[strategy]["matrix"][:, -1].mean()
    lines = [
        f"`{strategy}` on seeds {', '.join(map(str, seeds))}: ALC {alc:.3f}, final {final:.3f}",
        "",
        f"| other | seeds | ALC | `{strategy}` − other, ALC [95% CI] | p | p (Holm) | final "
        f"| `{strategy}` − other, final [95% CI] | p | p (Holm) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pvalue(x):
        return "<0.0001" if x < 0.0001 else f"{x:.4f}"

    for r in rows:
        lines.append(
            f"| `{r['reference']}` | {r['seeds']} | {r['alc']:.3f} | {interval(r['d_alc'])} | {pvalue(r['p_alc'])} "
            f"| {pvalue(r['p_alc_holm'])} | {r['final']:.3f} | {interval(r['d_final'])} | {pvalue(r['p_final'])} "
            f"| {pvalue(r['p_final_holm'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path)
    p.add_argument("--strategy", required=True, help="the strategy compared with the others")
    p.add_argument("--seeds", default=None, help="a count (20), a list (0,3,5) or a range (12-19); default: all")
    p.add_argument("--against", default=None, help="comma list of strategies (default: every other one)")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    if args.seeds is not None:
        results = restrict(results, parse_seeds(args.seeds))
    names = list(curves(results))
    if args.strategy not in names:
        raise SystemExit(f"{args.strategy!r} is not in these results; they hold {', '.join(names)}")
    against = args.against.split(",") if args.against else [n for n in names if n != args.strategy]
    text = table(results, args.strategy, against)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
