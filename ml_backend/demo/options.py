"""The demo's command line, with the standard library only: ``bash scripts/demo.sh --help`` prints it
with the system Python before anything is installed."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROG = "bash scripts/demo.sh"
DATA_CHOICES = ("auto", "fashion-mnist", "digits")
DESCRIPTION = """\
The local demo: Label Studio 1.23.2 and this backend on 127.0.0.1, offline.

The first run installs the two virtual environments (scripts/setup_env.sh), later runs reuse them.
It creates (or reuses) an image-classification project of Fashion-MNIST photos (Debian's package
dataset-fashion-mnist; scikit-learn's digits when it is not installed), connects the backend, which
publishes version 0, shows its guess on each task and switches the queue to uncertainty sampling,
then prints the URL and the login. Label a few images: after each training round the queue
re-orders. Ctrl-C stops everything; running it again reuses the data directory, the project and the
trained models."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help, and the description as written."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, formatter_class=_Formatter)
    p.add_argument("--dir", type=Path, default=ROOT / ".cache" / "demo", help="data directory, reused between runs")
    p.add_argument("--port", type=int, default=8080, help="Label Studio's port (a free one if it is busy)")
    p.add_argument("--backend-port", type=int, default=9090, help="the backend's port (a free one if it is busy)")
    p.add_argument("--images", type=int, default=300, help="images in a new demo project")
    p.add_argument(
        "--data",
        choices=DATA_CHOICES,
        default="auto",
        help="auto: Fashion-MNIST photos when Debian's dataset-fashion-mnist is installed, else scikit-learn's digits",
    )
    p.add_argument(
        "--strategy",
        default="auto",
        help="the acquisition strategy that orders the queue, with options as name:key=value "
        "(python -m ml_backend --list shows them all)",
    )
    p.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="efficientnet_lite0: ImageNet weights installed with the package, 64 px, frozen up to blocks.5; "
        "smallcnn: random weights",
    )
    p.add_argument(
        "--prelabel",
        choices=("on", "off"),
        default="on",
        help="on: a task opens with the model's guess filled in (faster; off: the annotator answers unprompted)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


if __name__ == "__main__":  # scripts/demo.sh --help, before the venvs exist
    parse_args()
