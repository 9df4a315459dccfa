import json

import torch

from ml_backend import checkpoints


def test_save_load_prune(tmp_path):
    for r in range(4):
        checkpoints.save(tmp_path, f"v{r}", {"w": torch.full((2,), float(r))}, {"round": r})
    meta, state = checkpoints.load_latest(tmp_path)
    assert meta["version"] == "v3" and torch.equal(state["w"], torch.full((2,), 3.0))
    assert checkpoints.prune(tmp_path, keep=2) == ["v0", "v1"]
    assert [m["version"] for m in checkpoints.list_versions(tmp_path)] == ["v2", "v3"]


def test_interrupted_write_is_ignored_and_cleaned(tmp_path):
    checkpoints.save(tmp_path, "v1", {"w": torch.ones(1)}, {"round": 1})
    partial = tmp_path / ".tmp-v2-123-456"  # what a kill -9 mid-write leaves behind
    partial.mkdir()
    (partial / "model.pt").write_bytes(b"half a file")
    meta, _ = checkpoints.load_latest(tmp_path)
    assert meta["version"] == "v1" and not partial.exists()


def test_a_corrupt_latest_version_falls_back_to_the_previous_one(tmp_path):
    checkpoints.save(tmp_path, "v1", {"w": torch.ones(1)}, {"round": 1})
    checkpoints.save(tmp_path, "v2", {"w": torch.ones(1) * 2}, {"round": 2})
    (tmp_path / "v2" / "model.pt").write_bytes(b"\0" * 10)
    meta, state = checkpoints.load_latest(tmp_path)
    assert meta["version"] == "v1" and state["w"].item() == 1.0
    (tmp_path / "v1" / "meta.json").write_text("{not json")
    assert checkpoints.load_latest(tmp_path) is None  # nothing loadable: start from the pretrained model


def test_meta_is_plain_json(tmp_path):
    path = checkpoints.save(tmp_path, "v0", {"w": torch.zeros(1)}, {"round": 0, "labels": ["a"]})
    meta = json.loads((path / "meta.json").read_text())
    assert meta["labels"] == ["a"] and meta["version"] == "v0" and "saved_at" in meta
