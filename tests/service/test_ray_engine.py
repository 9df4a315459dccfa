"""SCORING_ENGINE=ray on a local Ray started by the test: feature extraction and re-scoring on Ray
actors give the in-process results (acquisition values within 1e-6)."""

import pytest
import torch

from tests.helpers import CONFIG, digit_tasks, service_for

ray = pytest.importorskip("ray", reason="Ray is the optional extra active-adaptation[ray] (in the dev lock)")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_scores_the_pool_as_this_process_does(tmp_path, digits64, local_ray):
    strategy = "badge"  # needs probabilities and embeddings: both come back from the actors
    local = service_for(tmp_path / "local", STRATEGY=strategy)
    remote = service_for(
        tmp_path / "ray", STRATEGY=strategy, SCORING_ENGINE="ray", RAY_ACTORS="2", RAY_CPUS_PER_ACTOR="0.5"
    )
    try:
        assert local.features.engine is None and remote.features.engine is not None
        pool = digit_tasks(digits64, 40)
        pool.append({"id": 99, "data": {"image": "data:image/png;base64,bm90IGFuIGltYWdl"}})  # not an image
        results = []
        for service in (local, remote):
            service.setup("1", CONFIG)
            state = service.projects["1"]
            model = service.projects.model(state)
            with torch.no_grad():  # a trained head, the same in both: the weights must reach the actors
                model.head.weight.add_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(0)))
            results.append(service.scorer.score(state, pool, model, state.version, reset_pool=True))
        mine, theirs = results
        assert [r["result"] for r in mine] == [r["result"] for r in theirs]
        assert all(abs(a["acquisition"] - b["acquisition"]) < 1e-6 for a, b in zip(mine[:40], theirs[:40]))
        assert mine[40]["error"] and theirs[40]["error"] and "image" in theirs[40]["error"].lower()
        # the activations Ray computed are in the frozen-feature cache, as the local ones are
        assert remote.features.stats()["memory_items"] == local.features.stats()["memory_items"] == 40
    finally:
        local.close()
        remote.close()
