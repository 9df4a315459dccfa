"""Thread pools started whole (ml_backend/service/pools.py)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from ml_backend.service.pools import one_torch_thread, post_worker_init, prestart


def _named(prefix):
    return sum(t.name.startswith(prefix) for t in threading.enumerate())


def test_a_prestarted_pool_has_all_its_threads_and_keeps_that_count_under_load():
    pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="prestart-test")
    try:
        assert _named("prestart-test") == 0  # a pool starts its threads lazily
        assert prestart(pool, 6) and _named("prestart-test") == 6
        list(pool.map(lambda x: x * x, range(100)))
        assert _named("prestart-test") == 6
    finally:
        pool.shutdown()


def test_the_gunicorn_hook_starts_the_request_threads_and_tolerates_a_worker_without_a_pool():
    class Cfg:
        threads = 4

    class Worker:
        cfg = Cfg()
        tpool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hook-test")

    try:
        post_worker_init(Worker())
        assert _named("hook-test") == 4
        # every request thread runs torch on itself alone (the barrier makes each of the 4 answer)
        barrier = threading.Barrier(4)

        def count():
            barrier.wait(10)
            return threading.get_ident(), torch.get_num_threads()

        answers = list(Worker.tpool.map(lambda _: count(), range(4)))
        assert len({ident for ident, _ in answers}) == 4 and {n for _, n in answers} == {1}
        post_worker_init(object())  # another worker class: nothing to start
    finally:
        Worker.tpool.shutdown()


def test_prestart_runs_its_init_once_on_each_thread():
    seen = []
    pool = ThreadPoolExecutor(max_workers=5, thread_name_prefix="init-test")
    try:
        assert prestart(pool, 5, init=lambda: seen.append(threading.get_ident()))
        assert len(seen) == 5 and len(set(seen)) == 5
    finally:
        pool.shutdown()


def _threads() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def _settled_threads() -> int:
    last = _threads()
    for _ in range(50):
        time.sleep(0.1)
        now = _threads()
        if now == last:
            return now
        last = now
    return last


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one torch thread: no thread has a team of its own")
def test_a_thread_with_one_torch_thread_starts_no_team_and_leaves_the_others_as_they_were():
    conv, image = torch.nn.Conv2d(3, 16, 3), torch.randn(16, 3, 64, 64)
    team = torch.get_num_threads() - 1

    def grown(pin: bool) -> tuple[int, list]:
        release, counts = threading.Event(), []

        def body():
            if pin:
                assert one_torch_thread()
            with torch.no_grad():
                conv(image)
            counts.append(torch.get_num_threads())
            release.wait(30)

        before = _threads()
        threads = [threading.Thread(target=body) for _ in range(6)]
        for t in threads:
            t.start()
        while len(counts) < 6:
            time.sleep(0.01)
        extra = _threads() - before - 6
        release.set()
        for t in threads:
            t.join(30)
        return extra, counts

    assert grown(pin=False)[0] >= 6 * team  # each thread's own OpenMP team
    extra, counts = grown(pin=True)
    assert extra <= 0 and counts == [1] * 6
    assert torch.get_num_threads() == team + 1  # this thread, and threads started later, keep torch's count
    later = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert later == [team + 1]


def test_compute_threads_run_the_work_on_their_own_threads_reentrantly_and_pass_errors_back():
    from ml_backend.service.pools import ComputeThreads

    before = _settled_threads()  # the teams of earlier tests' threads take a moment to end
    compute = ComputeThreads(2, name="compute-test")
    try:
        assert _named("compute-test") == 2  # started with the process, not one by one
        # and their OpenMP teams with them: running the model later adds no thread
        started = _threads()
        assert started - before >= 2 + 2 * (torch.get_num_threads() - 1)
        compute.run(lambda: torch.nn.Conv2d(3, 16, 3)(torch.randn(16, 3, 64, 64)))
        assert _threads() <= started
        assert compute.run(lambda: threading.current_thread().name).startswith("compute-test")
        # a call from one of them runs inline (a nested call would otherwise wait for itself)
        nested = compute.run(lambda: compute.run(lambda: threading.current_thread().name))
        assert nested.startswith("compute-test") and not compute.inside()

        def fail():
            raise ValueError("from the compute thread")

        try:
            compute.run(fail)
        except ValueError as exc:
            assert "from the compute thread" in str(exc)
        else:
            raise AssertionError("the error was lost")
    finally:
        compute.close()


def test_the_token_refresh_thread_starts_with_the_connection_not_at_the_first_expiry():
    from ml_backend.service.ls_client import LabelStudioConnection

    before = _named("token-refresh")
    LabelStudioConnection("", "")  # not configured: no thread to keep
    assert _named("token-refresh") == before
    connection = LabelStudioConnection("http://127.0.0.1:9", "a-legacy-token")
    assert _named("token-refresh") == before + 1
    assert connection._refresher.submit(lambda: threading.current_thread().name).result().startswith("token-refresh")
    assert _named("token-refresh") == before + 1  # the refresh ran on it, nothing new started


def test_the_download_watchdog_starts_with_the_image_loader_not_at_the_first_download(tmp_path, monkeypatch):
    import time

    from ml_backend.service import downloads
    from ml_backend.service.images import ImageLoader

    watchdog = downloads._Watchdog()  # this process's may be running already: a fresh one
    monkeypatch.setattr(downloads, "_WATCHDOG", watchdog)
    assert watchdog._thread is None
    loader = ImageLoader(tmp_path, workers=1, max_bytes=10**6, max_pixels=10**6, timeout=1.0)
    try:
        started = watchdog._thread
        assert started is not None and started.is_alive() and started.name == "download-watchdog"
        with downloads.bounded(time.monotonic() + 1):
            pass
        assert watchdog._thread is started  # the download found it running: nothing new started
    finally:
        loader.close()
