"""How many images and rows go through the model at once (docs/benchmarks.md, "Batch size on a
CPU"): BATCH_SIZE=0 takes the device's measured default, the trainable part runs in batches of about
1 MB of trunk activations, and neither changes any value."""

import torch

import strategies
from ml_backend.core import scoring
from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import CPU_BATCH, GPU_BATCH, default_batch
from ml_backend.core.scoring import rest_rows, score_pool
from ml_backend.service.backend import Backend
from tests.helpers import make_settings


def test_batch_size_zero_is_the_devices_default_and_a_set_one_is_kept(tmp_path):
    cpu, gpu = default_batch(torch.device("cpu")), default_batch(torch.device("cuda", 0))
    assert (cpu, gpu) == (CPU_BATCH, GPU_BATCH) == (8, 64)
    assert make_settings(tmp_path).batch_size == 0  # the default, left to the backend
    backend = Backend(make_settings(tmp_path / "a"))
    try:
        assert backend.settings.batch_size == 8 and backend.features.batch_size == 8
        assert backend.scorer.settings.batch_size == 8
    finally:
        backend.close()
    backend = Backend(make_settings(tmp_path / "b", BATCH_SIZE="5"))
    try:
        assert backend.settings.batch_size == 5 and backend.features.batch_size == 5
    finally:
        backend.close()


def test_the_trainable_part_runs_in_batches_of_about_a_megabyte_of_activations():
    lite0 = torch.zeros(3, 80, 14, 14)  # EfficientNet-Lite0's boundary at 224 px: 61 KB a row
    small = torch.zeros(3, 512)  # 2 KB a row
    assert rest_rows(lite0) == 16 and rest_rows(small) == 512
    assert rest_rows(lite0, at_least=64) == 64  # a GPU's BATCH_SIZE is the floor
    assert rest_rows(torch.zeros(3, 4)) == 4096  # tiny rows: capped
    assert rest_rows(torch.zeros(2, 3, 600, 600)) == 1  # rows over the budget: one at a time


def test_the_batch_of_the_trainable_part_does_not_change_the_values(tmp_path, monkeypatch):
    backend = Backend(make_settings(tmp_path))
    try:
        model = AdaptedModel(backend.base, ["a", "b", "c"], torch.device("cpu"), 0)
        g, side = torch.Generator().manual_seed(0), backend.base.preprocess.crop
        z = model.trunk(torch.rand(40, 3, side, side, generator=g))
        keys = [str(i) for i in range(40)]

        def scored():
            return score_pool(strategies.get("margin"), model, [(keys, None, z)], batch_size=1)

        whole = scored()
        monkeypatch.setattr(scoring, "REST_BATCH_BYTES", 1)  # one row per call
        assert rest_rows(z) == 1
        one_by_one = scored()
        assert torch.allclose(whole.values, one_by_one.values, atol=1e-6)
        assert torch.allclose(whole.probs, one_by_one.probs, atol=1e-6)
    finally:
        backend.close()
