"""What code a benchmark's figures come from."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def git_state() -> str:
    """The checkout's commit, marked when tracked files differ from it ("unknown" outside git)."""
    try:
        run = dict(capture_output=True, text=True, cwd=ROOT)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], **run).stdout
        return (head or "unknown") + (" + uncommitted changes" if dirty.strip() else "")
    except OSError:
        return "unknown"
