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


def test_a_scan_larger_than_memory_does_not_flush_what_is_used_again(tmp_path):
    entry = 1000 * 2  # float16
    cache = FeatureCache(tmp_path, "fp", memory_bytes=10 * entry, disk_bytes=0)  # memory only
    hot = {f"hot{i}": torch.randn(1000) for i in range(3)}
    for k, v in hot.items():
        cache.put(k, v)
        assert cache.get(k) is not None  # used again: protected
    for i in range(200):  # a pool scan 20 times the memory bound, each entry seen once
        cache.put(f"scan{i}", torch.randn(1000))
    assert all(cache.in_memory(k) for k in hot)
    assert all(cache.get(k) is not None for k in hot)
    assert cache.stats()["memory_items"] <= 10


def test_a_second_full_scan_of_a_pool_larger_than_memory_hits(tmp_path):
    entry = 256 * 2
    cache = FeatureCache(tmp_path, "fp", memory_bytes=50 * entry, disk_bytes=10**8)
    pool = [f"task{i}" for i in range(1000)]  # 20 times the memory bound
    for k in pool:  # first scoring: every lookup misses, every entry is computed and put
        assert cache.get(k) is None
        cache.put(k, torch.randn(256))
    before = cache.stats()
    assert before["disk_items"] == len(pool)
    for k in pool:  # second scoring
        assert cache.get(k) is not None
    after = cache.stats()
    hits = after["hits"] - before["hits"]
    assert hits / len(pool) >= 0.95
    assert after["disk_hits"] > 0 and after["hit_rate"] == after["hits"] / (after["hits"] + after["misses"])
    # a restarted process is served from the same disk store
    cache.close()
    again = FeatureCache(tmp_path, "fp", memory_bytes=50 * entry, disk_bytes=10**8)
    assert sum(again.get(k) is not None for k in pool) == len(pool)


def test_a_damaged_or_cut_entry_is_a_miss_never_served(tmp_path):
    cache = FeatureCache(tmp_path, "fp", memory_bytes=1, disk_bytes=10**8)
    values = {f"k{i}": torch.randn(500) for i in range(5)}
    for k, v in values.items():
        cache.put(k, v)
    cache.close()
    (segment,) = (tmp_path / "fp").glob("*.seg")
    data = bytearray(segment.read_bytes())
    record = len(data) // 5
    data[record + record // 2] ^= 0xFF  # flip a byte inside k1's data
    segment.write_bytes(bytes(data[: 4 * record + record // 2]))  # and cut k4 short (a crash mid-write)
    again = FeatureCache(tmp_path, "fp", memory_bytes=1, disk_bytes=10**8)
    assert again.get("k1") is None and again.get("k4") is None
    for k in ("k0", "k2", "k3"):
        torch.testing.assert_close(again.get(k), again.round(values[k]))
    assert again.stats()["disk_items"] == 3  # k1 left the index when its check failed; k4 never entered


def test_status_and_dashboard_show_the_cache_size_and_hit_rate(client):
    cache = client.get("/status").get_json()["feature_cache"]
    for field in ("memory_items", "memory_mb", "disk_items", "disk_mb", "disk_limit_mb", "hits", "hit_rate"):
        assert field in cache
    page = client.get("/dashboard").get_data(as_text=True)
    assert 'class="meta feature-cache"' in page and "disk 0 tasks" in page
