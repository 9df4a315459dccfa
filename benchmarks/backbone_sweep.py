"""Sweep: every architecture that torchvision lists (plus ours), built with random weights, checked
the way tests/unit/test_backbone_families.py checks one per family: the trunk/rest split reproduces
the whole model, the freeze boundary and trainable share, the strategies it serves, and the reason
for every refusal. Prints a markdown table (docs/backbones.md keeps the last one).

    .venv/bin/python -m benchmarks.backbone_sweep [--only resnet50,vit_b_16] [--out table.md]

Large architectures take minutes each on a CPU (vit_h_14 and regnet_y_128gf hold over 600M
parameters); the default input is 64 px except where an architecture fixes its size.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.architectures import (
    architecture,
    available_backbones,
    get_backbone,
    refused_backbones,
    strategies_refused_by_family,
)
from ml_backend.core.backbones import load_backbone


def check(name: str, side: int) -> dict:
    started = time.perf_counter()
    spec = get_backbone(name)
    side = spec.fixed_size or max(side, spec.min_size)
    base = load_backbone(name, "none")
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = base.model(x)
        split = spec.rest(base.model, spec.trunk(base.model, x))
    error = float((whole - split).abs().max())
    model = AdaptedModel(base, ["a", "b"], torch.device("cpu"))
    row = {
        "name": name,
        "family": spec.family,
        "side": side,
        "stages": len(spec.stages),
        "frozen": spec.n_frozen,
        "boundary": spec.stages[spec.n_frozen - 1].name if spec.n_frozen else "—",
        "trainable": model.trainable / model.total,
        "params_m": model.total / 1e6,
        "max_abs_error": error,
        "exact": error <= 1e-4 * max(1.0, float(whole.abs().max())),
        "refused": strategies_refused_by_family(spec.family),
        "seconds": time.perf_counter() - started,
    }
    del base, model
    gc.collect()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma list of architectures (default: all)")
    parser.add_argument("--size", type=int, default=64, help="input side where the architecture allows it")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or available_backbones()
    from tqdm import tqdm

    rows = []
    for name in tqdm(names, desc="architectures"):
        architecture(name)  # unknown names fail here, clearly
        rows.append(check(name, args.size))
    lines = [
        "| architecture | family | params (M) | stages frozen (boundary) | trainable | split exact "
        "(max abs error) | strategies refused (the role missing) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["family"], r["name"])):
        refused = (
            ", ".join(f"`{k}` ({v.split(':')[0].removeprefix('needs layer role ')})" for k, v in r["refused"].items())
            or "none"
        )
        lines.append(
            f"| `{r['name']}` | {r['family']} | {r['params_m']:.1f} | {r['frozen']}/{r['stages']} "
            f"(`{r['boundary']}`) | {r['trainable']:.0%} | {'yes' if r['exact'] else 'NO'} "
            f"({r['max_abs_error']:.1e}) | {refused} |"
        )
    for name, reason in refused_backbones().items():
        lines.append(f"| `{name}` | refused | — | — | — | — | the whole architecture: {reason} |")
    table = "\n".join(lines)
    print(table)
    bad = [r["name"] for r in rows if not r["exact"]]
    print(
        f"\n{len(rows)} architectures checked in {sum(r['seconds'] for r in rows):.0f} s; "
        f"{len(refused_backbones())} refused; split not exact: {', '.join(bad) or 'none'}"
    )
    if args.out:
        args.out.write_text(table + "\n")
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
