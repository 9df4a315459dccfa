"""The model's work for /predict runs on COMPUTE_THREADS threads, so that the process's thread count
stays bounded however many request threads score (ml_backend/service/pools.py: ComputeThreads)."""

import threading

import pytest
import torch

from tests.helpers import CONFIG, tasks_from


def _threads() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def _alive_after(n: int, work) -> int:
    """Threads added while ``n`` new threads, each having run ``work()`` once, are still alive."""
    done, release = threading.Barrier(n + 1), threading.Event()

    def body():
        try:
            work()
        finally:
            done.wait(60)
            release.wait(60)

    before = _threads()
    threads = [threading.Thread(target=body) for _ in range(n)]
    for t in threads:
        t.start()
    done.wait(120)
    grown = _threads() - before - n
    release.set()
    for t in threads:
        t.join(60)
    return grown


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one torch thread: no thread has a team of its own")
def test_requests_from_many_threads_leave_the_thread_count_bounded(app, digits64):
    client = app.test_client()
    tasks = tasks_from(digits64[:24])
    body = {"tasks": tasks, "project": "9", "label_config": CONFIG}
    assert client.post("/predict", json=body).status_code == 200  # the project and its model exist now
    team = torch.get_num_threads() - 1
    conv = torch.nn.Conv2d(3, 16, 3)
    image = torch.randn(16, 3, 64, 64)

    # what the fix is for: a thread that runs a parallel torch operation keeps a team of its own
    with torch.no_grad():
        direct = _alive_after(8, lambda: conv(image))
    assert direct >= 8 * team

    def predict():  # new tasks each time: every request runs the trunk, not only the cache
        ids = threading.get_ident() % 10_000 * 100
        own = {**body, "tasks": tasks_from(digits64[:24], start_id=ids)}
        assert app.test_client().post("/predict", json=own).status_code == 200

    compute = app.extensions["backend"].compute
    assert _alive_after(8, predict) <= compute.n * team
