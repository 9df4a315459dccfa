import json
import os
import subprocess

import pytest
import torch

from ml_backend.app import create_app
from ml_backend.service.store import Store
from tests.helpers import make_settings


def test_save_load_prune(tmp_path):
    for r in range(4):
        Store(tmp_path).save_checkpoint("1", f"v{r}", {"w": torch.full((2,), float(r))}, {"round": r})
    meta, state = Store(tmp_path).load_latest("1")
    assert meta["version"] == "v3" and torch.equal(state["w"], torch.full((2,), 3.0))
    assert Store(tmp_path).prune("1", keep=2) == ["v0", "v1"]
    assert [m["version"] for m in Store(tmp_path).list_versions("1")] == ["v2", "v3"]


def test_interrupted_write_is_ignored_and_cleaned(tmp_path):
    Store(tmp_path).save_checkpoint("1", "v1", {"w": torch.ones(1)}, {"round": 1})
    partial = tmp_path / "projects" / "1" / ".tmp-v2-123-456"  # what a kill -9 mid-write leaves behind
    partial.mkdir()
    (partial / "model.pt").write_bytes(b"half a file")
    meta, _ = Store(tmp_path).load_latest("1")
    assert meta["version"] == "v1" and not partial.exists()


def test_a_corrupt_latest_version_falls_back_to_the_previous_one(tmp_path):
    Store(tmp_path).save_checkpoint("1", "v1", {"w": torch.ones(1)}, {"round": 1})
    Store(tmp_path).save_checkpoint("1", "v2", {"w": torch.ones(1) * 2}, {"round": 2})
    (tmp_path / "projects" / "1" / "v2" / "model.pt").write_bytes(b"\0" * 10)
    meta, state = Store(tmp_path).load_latest("1")
    assert meta["version"] == "v1" and state["w"].item() == 1.0
    (tmp_path / "projects" / "1" / "v1" / "meta.json").write_text("{not json")
    assert Store(tmp_path).load_latest("1") is None  # nothing loadable: start from the pretrained model


def test_meta_is_plain_json(tmp_path):
    assert Store(tmp_path).save_checkpoint("1", "v0", {"w": torch.zeros(1)}, {"round": 0, "labels": ["a"]}) == 1
    meta = json.loads((tmp_path / "projects" / "1" / "v0" / "meta.json").read_text())
    assert meta["labels"] == ["a"] and meta["version"] == "v0" and "saved_at" in meta


def test_a_full_disk_writes_no_version_and_says_so(tmp_path, monkeypatch):
    """Found by the soak (benchmarks/soak.py, MODEL_DIR on a full tmpfs): the round failed with
    torch's "unexpected pos 1408 vs 1302", which does not say the disk is full. Now: no trace of the
    version on disk, the last one still loads, and the error names the cause."""
    import errno
    from pathlib import Path

    import pytest

    from ml_backend.errors import DiskFull

    store = Store(tmp_path)
    store.save_checkpoint("1", "v1", {"w": torch.ones(1)}, {"round": 1})
    real = Path.write_bytes

    def full(self, data):
        if self.name == "model.pt":
            real(self, bytes(data)[:100])  # a part written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFull, match="MODEL_DIR is full .* v2 was not written"):
        store.save_checkpoint("1", "v2", {"w": torch.ones(1) * 2}, {"round": 2})
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "projects" / "1").iterdir() if p.is_dir()] == ["v1"]
    meta, weights = store.load_latest("1")
    assert meta["version"] == "v1" and weights["w"].item() == 1.0
    store.save_checkpoint("1", "v2", {"w": torch.ones(1) * 2}, {"round": 2})  # space is back: written
    assert store.load_latest("1")[0]["version"] == "v2"


def test_a_nearly_full_model_dir_is_reported_live_in_status_and_on_the_dashboard(tmp_path):
    """With MODEL_DIR full no process can write its status for the others: /status and the dashboard
    read MODEL_DIR's free space themselves and say why no new version can be written."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        pytest.skip("a small filesystem of its own needs `mount -t tmpfs` (root)")
    try:
        client = create_app(make_settings(small)).test_client()
        space = client.get("/status").get_json()["model_dir"]
        assert space["low"] and space["total_mb"] <= 8 and "keeps serving" in space["message"]
        assert space["message"] in client.get("/dashboard").get_data(as_text=True)
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_a_model_dir_with_room_reports_its_free_space_and_no_warning(client):
    space = client.get("/status").get_json()["model_dir"]
    assert space["free_mb"] > 64 and not space["low"] and "message" not in space
    assert "space-low" not in client.get("/dashboard").get_data(as_text=True)
