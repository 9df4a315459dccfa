"""SCORING_ENGINE=ray joined to a real Ray cluster of two nodes (``ray start --head`` and a second
``ray start --address``, each with one CPU, started and stopped here, with token authentication):
the actors run on both nodes and the pool's scores are the in-process ones (acquisition values within
1e-6). The backend side runs in its own process, started with the cluster's address and token as a
deployment would be."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from ml_backend.demo.servers import free_port

pytest.importorskip("ray", reason="Ray is the optional extra active-adaptation[ray] (in the dev lock)")

RAY = str(Path(sys.executable).with_name("ray"))
ROOT = Path(__file__).resolve().parents[2]

SCORE = """
import json, os, sys
import torch
from ml_backend.demo.sample_data import digit_pngs
from tests.helpers import CONFIG, digit_tasks, service_for

out, engine = sys.argv[1], sys.argv[2]
env = {"STRATEGY": "badge"}  # needs probabilities and embeddings: both come back from the actors
if engine == "ray":
    env.update(SCORING_ENGINE="ray", RAY_ADDRESS=os.environ["RAY_ADDRESS"], RAY_ACTORS="2", RAY_CPUS_PER_ACTOR="1")
service = service_for(out + "-model", **env)
try:
    pool = digit_tasks(digit_pngs(48, size=64), 40)
    pool.append({"id": 99, "data": {"image": "data:image/png;base64,bm90IGFuIGltYWdl"}})  # not an image
    service.setup("1", CONFIG)
    state = service.projects["1"]
    model = service.projects.model(state)
    with torch.no_grad():  # a trained head, the same in both: the weights must reach the actors
        model.head.weight.add_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(0)))
    results = service.scorer.score(state, pool, model, state.version, reset_pool=True)
    nodes = []
    if engine == "ray":
        import ray
        nodes = ray.get([w.node.remote() for w in service.features.engine.workers], timeout=120)
        nodes = {"actors": nodes, "alive": [n["NodeID"] for n in ray.nodes() if n["Alive"]]}
    json.dump({"results": results, "nodes": nodes}, open(out, "w"), default=str)
finally:
    service.close()
"""


def _run(args: list[str], env: dict, what: str) -> None:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def cluster_env():
    """The environment of every process of a two-node cluster with token authentication (Ray's
    default from 2.59 on: every node and the backend share the token, ``RAY_AUTH_TOKEN`` or a file
    named by ``RAY_AUTH_TOKEN_PATH``)."""
    port = free_port()
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_ADDRESS": f"127.0.0.1:{port}",
    }
    head = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    try:
        _run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"], head, "head")
        _run([RAY, "start", f"--address={env['RAY_ADDRESS']}", "--num-cpus=1"], head, "second node")
        yield env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=head, capture_output=True, timeout=180)


def test_a_two_node_cluster_scores_the_pool_as_this_process_does(tmp_path, cluster_env):
    local_env = {k: v for k, v in cluster_env.items() if not k.startswith("RAY_")}
    _run([sys.executable, "-c", SCORE, str(tmp_path / "local.json"), "local"], local_env, "local scoring")
    _run([sys.executable, "-c", SCORE, str(tmp_path / "ray.json"), "ray"], cluster_env, "scoring on the cluster")
    mine = json.loads((tmp_path / "local.json").read_text())["results"]
    remote = json.loads((tmp_path / "ray.json").read_text())
    theirs, nodes = remote["results"], remote["nodes"]
    # one CPU per node and one per actor: the two actors run on the two different nodes
    assert len(nodes["alive"]) == 2 and sorted(nodes["actors"]) == sorted(nodes["alive"]), nodes
    assert [r["result"] for r in mine] == [r["result"] for r in theirs]
    assert all(abs(a["acquisition"] - b["acquisition"]) < 1e-6 for a, b in zip(mine[:40], theirs[:40]))
    assert mine[40]["error"] and theirs[40]["error"]
