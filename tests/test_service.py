"""Model service without HTTP: frozen-feature cache consistency and restart from checkpoints."""
import base64

import pytest
import torch

from ml_backend.service import ModelService
from ml_backend.settings import Settings
from ml_backend.trainer import Example, TrainConfig, fine_tune
from scripts.local_servers import classification_config

CONFIG = classification_config([str(i) for i in range(10)])


def service_for(tmp_path, **env):
    base = {"BACKBONE": "smallcnn", "WEIGHTS": "none", "MODEL_DIR": str(tmp_path), "DEVICE": "cpu"}
    return ModelService(Settings.from_env({**base, **env}))


def tasks(digits, n):
    return [{"id": i + 1, "data": {"image": "data:image/png;base64," + base64.b64encode(digits[i][1]).decode()}}
            for i in range(n)]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cached_and_uncached_scoring_agree(tmp_path, digits64, dtype):
    service = service_for(tmp_path, FEATURE_CACHE_DTYPE=dtype)
    service.setup("1", CONFIG)
    pool = tasks(digits64, 40)
    first = service.predict("1", pool)  # fills the cache
    assert service.features.stats()["misses"] == 40
    second = service.predict("1", pool)  # served from the cache: no image work at all
    assert service.features.stats()["hits"] == 40
    assert [r["acquisition"] for r in first] == [r["acquisition"] for r in second]
    assert [r["result"] for r in first] == [r["result"] for r in second]
    if dtype == "float32":  # exactly the full forward pass
        state = service.projects["1"]
        model = service.model(state)
        x = torch.stack([model.preprocess(service.loader.load(t["id"], t["data"]["image"])) for t in pool])
        full = model.forward(x, {"probs"})["probs"]
        labels = [model.active[j] for j in full.argmax(1).tolist()]
        assert labels == [r["result"][0]["value"]["choices"][0] for r in first]
    service.close()


def test_restart_serves_the_last_complete_version(tmp_path, digits64):
    service = service_for(tmp_path)
    v0 = service.setup("3", CONFIG)
    state = service.projects["3"]
    pool = tasks(digits64, 20)
    model = service.model(state).clone()
    trunks = service.trunk_activations(state, model, pool)
    examples = [Example(str(t["id"]), digits64[i][2], True, trunk=trunks[i]) for i, t in enumerate(pool)]
    metrics = fine_tune(model, examples, TrainConfig(steps=20))
    used = {e.key: str(e.label) for e in examples}
    version, checkpoint = service.save_version(state, model, 1, used, metrics)
    assert service.serve(state, model, 1, used, checkpoint) == version != v0
    before = service.predict("3", pool)
    service.close()

    again = service_for(tmp_path)  # a restart: nothing but MODEL_DIR survives
    restored = again.projects["3"]
    assert restored.version == version and restored.round == 1 and restored.labels_used == used
    assert again.setup("3", CONFIG) == version
    after = again.predict("3", pool)
    assert [r["acquisition"] for r in after] == [r["acquisition"] for r in before]
    again.close()
