"""Several processes on one MODEL_DIR: the trainer lease (exclusive, released by kill -9), a job
that finds it taken waits instead of failing, and every process serves the newest version."""

import os
import signal
import subprocess
import sys
import time

import pytest

from ml_backend.service.store import LeaseBusy, Store
from ml_backend.service.worker import ProjectWorker
from tests.helpers import CONFIG, FakeClock, digit_tasks, drain, service_for


def test_the_lease_is_exclusive_and_names_its_holder(tmp_path):
    a, b = Store(tmp_path), Store(tmp_path)  # two open file descriptions: as two processes
    assert b.lease_holder("4") is None
    with a.trainer_lease("4", "round"):
        with pytest.raises(LeaseBusy, match=f"pid {os.getpid()} \\(round since") as busy:
            with b.trainer_lease("4", "publish"):
                pass
        assert busy.value.holder["pid"] == os.getpid() and busy.value.holder["job"] == "round"
        assert b.lease_holder("4")["job"] == "round"
        with pytest.raises(LeaseBusy):  # the same Store, another job: still one at a time
            with a.trainer_lease("4", "publish"):
                pass
    assert b.lease_holder("4") is None
    with b.trainer_lease("4", "publish"):  # free again
        assert a.lease_holder("4")["job"] == "publish"


def test_kill_9_of_the_holder_frees_the_lease(tmp_path):
    code = (
        "import sys, time; from ml_backend.service.store import Store\n"
        f"with Store({str(tmp_path)!r}).trainer_lease('4', 'round'):\n"
        "    print('held', flush=True); time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LeaseBusy) as busy:
            with Store(tmp_path).trainer_lease("4", "round"):
                pass
        assert busy.value.holder["pid"] == child.pid
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        with Store(tmp_path).trainer_lease("4", "round"):  # taken over at once
            pass
    finally:
        child.kill()
        child.wait()


def test_a_job_that_finds_the_lease_taken_waits_and_runs_when_it_is_free():
    clock, calls = FakeClock(), []

    def run(job, control):
        calls.append(job)
        if len(calls) == 1:
            raise LeaseBusy("7", {"host": "other", "pid": 42, "job": "round", "since": time.time()})

    worker = ProjectWorker("7", run, debounce_s=5.0, recovery_max_s=60.0, clock=clock, lease_retry_s=2.0)
    worker.labels_changed()
    clock.now += 5
    assert drain(worker) == [("round", False)]
    assert worker.info["state"] == "waiting" and "other pid 42" in worker.info["reason"]
    assert worker.info["failed_runs"] == 0 and worker.info["retry_in_s"] == 2.0
    clock.now += 1
    assert drain(worker) == []  # not before LEASE_RETRY_S
    clock.now += 1
    assert drain(worker) == [("round", False)] and len(calls) == 2


def test_a_process_serves_the_version_another_one_trained(tmp_path, digits64):
    """Two backends on one MODEL_DIR: B adopts the project A set up, and serves A's newer version."""
    from ml_backend.core.trainer import Example, TrainConfig, fine_tune

    a, b = service_for(tmp_path), service_for(tmp_path)
    try:
        v0 = a.setup("5", CONFIG)
        pool = digit_tasks(digits64, 30)
        assert b.projects.lookup("5") is None  # nothing on disk yet: no registration without Label Studio
        a.store.write_registration("5", a.projects["5"].config.to_dict(), None)  # what a confirmed project writes
        assert b.predict("5", pool[:3])[0]["model_version"] == v0  # adopted from MODEL_DIR
        state = a.projects["5"]
        model = a.projects.model(state).clone()
        trunks = a.features.trunk_activations(state, model, pool[:10])
        examples = [Example(str(t["id"]), digits64[i][2], True, trunk=trunks[i]) for i, t in enumerate(pool[:10])]
        used = {e.key: str(e.label) for e in examples}
        version, checkpoint, seq = a.projects.save_version(
            state, model, 1, used, fine_tune(model, examples, TrainConfig(steps=5))
        )
        a.projects.serve(state, model, 1, used, checkpoint, seq)
        other = b.projects["5"]
        other.refreshed = 0.0  # as if 2 s had passed
        results = b.predict("5", pool[10:13])
        assert {r["model_version"] for r in results} == {version} and other.round == 1 and other.seq == seq
        assert other.labels_used == used
        ours = a.predict("5", pool[10:13])
        assert [r["result"] for r in results] == [r["result"] for r in ours]
        assert a.metrics()["projects"]["5"]["published_version"] is None  # trained, not yet in Label Studio
        a.projects.mark_published(state, version)
        other.refreshed = 0.0
        seen = b.metrics()["projects"]["5"]
        assert seen["published_version"] == seen["queue_version"] == version
    finally:
        a.close()
        b.close()
