"""Compute an ADMA landmark file (docs/methods.md §1.9, F1/F2) from source images in ImageFolder layout.

    python -m ml_backend.service.make_landmarks SOURCE_DIR OUT.pt --backbone resnet18 --weights DEFAULT [--per-class 5]

With one subfolder per class, landmarks are the class medoids of Eqs. 1-2 (or ``--per-class``
k-means sub-centers); with ``--aligned`` the subfolders are taken to be the source head's classes in
sorted order (so ADMA can use Eq. 8's α). The file names the backbone and weights it was made with;
the backend refuses it for any other pair.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from ml_backend import atomic
    from ml_backend.core.backbones import load_backbone, resolve_device
    from ml_backend.errors import ConfigError, WeightsUnavailable
    from ml_backend.service.landmarks import landmarks_for_folder
    from strategies.errors import StrategyError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="ImageFolder of source images")
    parser.add_argument("out", type=Path, help="landmark file to write (.pt)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--weights", default="DEFAULT")
    parser.add_argument("--layers", default="A", help="A (ADMA) or A,A2 (ADMA-2)")
    parser.add_argument("--per-class", type=int, default=1, help="sub-centers per class (k-means medoids)")
    parser.add_argument("--aligned", action="store_true", help="subfolders are the source head's classes, in order")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        parser.error(f"{args.source} is not a folder")
    if args.out.suffix != ".pt":
        parser.error("the landmark file must end in .pt")
    try:
        base = load_backbone(args.backbone, args.weights)
        roles = tuple(r.strip() for r in args.layers.split(",")) + ("B",)
        lm = landmarks_for_folder(
            base,
            args.source,
            resolve_device(args.device),
            args.out.parent / ".landmark-cache",
            roles,
            args.per_class,
            aligned=args.aligned,
        )
    except (ConfigError, WeightsUnavailable, StrategyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lm.mode = "file"
    atomic.save_torch(Path(args.out), lm.to_dict())
    print(f"wrote {lm.k} landmarks ({', '.join(sorted(lm.a))} + B) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
