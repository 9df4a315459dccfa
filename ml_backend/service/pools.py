"""Thread pools started whole, and the threads that run the torch work of requests
(:class:`ComputeThreads`). :func:`prestart` makes a pool start all its threads at once instead of
one by one as load first reaches them. A process's thread count is then flat from its start (gunicorn's
request threads, the image downloads), so that a count that grows over a long run means a leak
(docs/benchmarks.md, the soak). It is also a gunicorn settings module: ``gunicorn -c
python:ml_backend.service.pools`` sets the :func:`post_worker_init` hook (the container does; ``python
-m ml_backend`` sets it itself)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


def prestart(executor: ThreadPoolExecutor, n: int, timeout: float = 30.0) -> bool:
    """Start ``n`` threads of ``executor`` now (it has at most ``n``); True when all of them started.
    Each waits for the others, so that every submission finds no idle thread and starts a new one."""
    if n <= 0:
        return True
    barrier = threading.Barrier(n + 1)
    for _ in range(n):
        executor.submit(barrier.wait, timeout)
    try:
        barrier.wait(timeout)
        return True
    except threading.BrokenBarrierError:  # busy or shut down: the pool still grows on demand
        log.debug("could not start the %d threads of %r at once", n, executor)
        return False


def post_worker_init(worker) -> None:
    """gunicorn hook: the gthread worker's request threads (``--threads``), all started with the worker."""
    pool = getattr(worker, "tpool", None)
    if pool is not None:
        prestart(pool, int(worker.cfg.threads))


class ComputeThreads:
    """The few threads that run the torch work of requests (``COMPUTE_THREADS``).

    Each thread that runs a parallel torch operation gets an OpenMP team of ``cores - 1`` threads of
    its own, kept for that thread's life. Run from gunicorn's request threads (``THREADS``), the
    teams would add up to ``THREADS x (cores - 1)`` threads as more of them score for the first
    time (docs/benchmarks.md, the soak); run here, at most ``COMPUTE_THREADS x (cores - 1)``, all
    started with the process. A request thread waits for its result (the wait is not bounded: the
    request's deadline bounds its downloads, which stay on the request thread). Re-entrant: a call
    from one of these threads runs inline."""

    def __init__(self, n: int, name: str = "compute") -> None:
        self.n = max(1, int(n))
        self._ours = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=self.n, thread_name_prefix=name, initializer=self._mark)
        prestart(self._pool, self.n)

    def _mark(self) -> None:
        self._ours.inside = True

    def inside(self) -> bool:
        """True on one of these threads."""
        return getattr(self._ours, "inside", False)

    def run(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on one of these threads (inline on one of them); its result or
        its exception."""
        if self.inside():
            return fn(*args, **kwargs)
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
