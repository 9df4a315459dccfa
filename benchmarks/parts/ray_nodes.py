"""A Ray cluster of several nodes on this machine, for the benchmarks' ``--ray-nodes``: ``ray start
--head`` and then ``ray start --address`` for each further node, with token authentication (Ray's
default from 2.59 on), each node given its share of the CPUs; stopped (``ray stop --force``) on the
way out, also after a failure. What it yields is the backend's environment for
``SCORING_ENGINE=ray`` joined to that cluster: one actor per node."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

from ml_backend.demo.servers import free_port

RAY = str(Path(sys.executable).with_name("ray"))


def _ray(args: list[str], env: dict) -> None:
    done = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


@contextlib.contextmanager
def ray_cluster(nodes: int, cpus_each: int | None = None):
    """``nodes`` Ray nodes of ``cpus_each`` CPUs (default: this machine's CPUs shared out); yields the
    environment a backend needs to score on them (``SCORING_ENGINE=ray``, one actor per node)."""
    cpus_each = cpus_each or max(1, (os.cpu_count() or 1) // nodes)
    port = free_port()
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    try:
        _ray(["start", "--head", f"--port={port}", f"--num-cpus={cpus_each}", "--include-dashboard=false"], env)
        for _ in range(nodes - 1):
            _ray(["start", f"--address=127.0.0.1:{port}", f"--num-cpus={cpus_each}"], env)
        yield {
            "SCORING_ENGINE": "ray",
            "RAY_ADDRESS": f"127.0.0.1:{port}",
            "RAY_ACTORS": str(nodes),
            "RAY_CPUS_PER_ACTOR": str(cpus_each),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=180)
