"""Re-draw curves.png and summary.md from a simulation's results.json.

python -m ml_backend.simulation.plot runs/clutter/results.json [--out DIR] [--baseline random]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    from ml_backend.simulation.report import RESULTS_SCHEMA, plot_curves, summary_markdown

    parser = argparse.ArgumentParser(
        prog="python -m ml_backend.simulation.plot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", type=Path)
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for curves.png and summary.md (default: beside the file)"
    )
    parser.add_argument("--baseline", default="random")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read {args.results}: {exc}", file=sys.stderr)
        return 2
    import jsonschema

    try:
        jsonschema.validate(results, RESULTS_SCHEMA)
    except jsonschema.ValidationError as exc:
        print(f"error: {args.results} is not a simulation results file: {exc.message}", file=sys.stderr)
        return 2
    out = args.out or args.results.parent
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(results, out / "curves.png", args.baseline)
    (out / "summary.md").write_text(summary_markdown(results, args.baseline))
    print(summary_markdown(results, args.baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
