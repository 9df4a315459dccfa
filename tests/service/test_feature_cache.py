import torch

from ml_backend.service.feature_cache import FeatureCache


def test_memory_bound_spills_to_disk_and_reads_back(tmp_path):
    cache = FeatureCache(tmp_path, "fp1", memory_bytes=3 * 1000 * 2, disk_bytes=10**9)
    tensors = {f"k{i}": torch.randn(1000) for i in range(10)}
    for k, v in tensors.items():
        cache.put(k, v)
    stats = cache.stats()
    assert stats["memory_items"] <= 3 and stats["disk_items"] >= 7
    for k, v in tensors.items():
        torch.testing.assert_close(cache.get(k), cache.round(v))
    assert cache.get("absent") is None


def test_disk_bound_evicts_oldest(tmp_path):
    cache = FeatureCache(tmp_path, "fp1", memory_bytes=1, disk_bytes=5000)
    for i in range(10):
        cache.put(f"k{i}", torch.randn(500))
    assert cache.stats()["disk_mb"] * 2**20 <= 5000 + 2100
    assert cache.get("k0") is None and cache.get("k8") is not None


def test_a_new_fingerprint_invalidates_and_a_restart_keeps(tmp_path):
    a = FeatureCache(tmp_path, "fp1", memory_bytes=1, disk_bytes=10**9)
    a.put("x", torch.ones(100))
    a.put("y", torch.ones(100))
    again = FeatureCache(tmp_path, "fp1", memory_bytes=1, disk_bytes=10**9)  # a restart
    assert again.get("x") is not None
    other = FeatureCache(tmp_path, "fp2", memory_bytes=1, disk_bytes=10**9)  # weights changed
    assert other.get("x") is None and not (tmp_path / "fp1").exists()


def test_rounding_matches_what_the_cache_returns(tmp_path):
    cache = FeatureCache(tmp_path, "fp", memory_bytes=10**6, disk_bytes=10**6, dtype="float16")
    z = torch.randn(64) * 10
    cache.put("k", z)
    assert torch.equal(cache.get("k"), cache.round(z))
