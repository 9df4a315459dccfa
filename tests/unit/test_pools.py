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
