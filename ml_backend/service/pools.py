"""Thread pools started whole: :func:`prestart` makes a pool start all its threads at once instead of
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
