"""Thread pools started whole (ml_backend/service/pools.py)."""

import threading
from concurrent.futures import ThreadPoolExecutor

from ml_backend.service.pools import post_worker_init, prestart


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
        post_worker_init(object())  # another worker class: nothing to start
    finally:
        Worker.tpool.shutdown()


def test_compute_threads_run_the_work_on_their_own_threads_reentrantly_and_pass_errors_back():
    from ml_backend.service.pools import ComputeThreads

    compute = ComputeThreads(2, name="compute-test")
    try:
        assert _named("compute-test") == 2  # started with the process, not one by one
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
