"""Thread pools started whole, and the threads that run the torch work of requests
(:class:`ComputeThreads`). :func:`prestart` makes a pool start all its threads at once instead of
one by one as load first reaches them. A process's thread count is then flat from its start (gunicorn's
request threads, the image downloads), so that a count that grows over a long run means a leak
(docs/benchmarks.md, the soak). It is also a gunicorn settings module: ``gunicorn -c
python:ml_backend.service.pools`` sets the :func:`post_worker_init` hook (the container does; ``python
-m ml_backend`` sets it itself)."""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


def prestart(executor: ThreadPoolExecutor, n: int, timeout: float = 30.0, init=None) -> bool:
    """Start ``n`` threads of ``executor`` now (it has at most ``n``); True when all of them started.
    Each waits for the others, so that every submission finds no idle thread and starts a new one;
    ``init()``, when given, runs once on each of them first."""
    if n <= 0:
        return True
    barrier = threading.Barrier(n + 1)

    def start():
        if init is not None:
            init()
        barrier.wait(timeout)

    for _ in range(n):
        executor.submit(start)
    try:
        barrier.wait(timeout)
        return True
    except threading.BrokenBarrierError:  # busy or shut down: the pool still grows on demand
        log.debug("could not start the %d threads of %r at once", n, executor)
        return False


@functools.cache
def _openmp():
    """torch's OpenMP runtime (ctypes), or None where none is found."""
    import ctypes
    import glob
    import os

    import torch

    folder = os.path.join(os.path.dirname(torch.__file__), "lib")
    for pattern in ("libgomp*", "libomp*", "libiomp*"):
        for path in sorted(glob.glob(os.path.join(folder, pattern))):
            try:
                lib = ctypes.CDLL(path)  # the copy torch already loaded: the same handle
            except OSError:
                continue
            if hasattr(lib, "omp_set_num_threads"):
                return lib
    log.info("torch's OpenMP runtime not found: request threads keep torch's thread count")
    return None


def one_torch_thread() -> bool:
    """Make torch run its parallel operations on the calling thread alone, from now on. OpenMP keeps
    the number of threads per thread, and torch reads it on each operation, so this thread will
    never start a team of its own (see :class:`ComputeThreads`); every other thread keeps torch's
    setting. For threads that should not run the model (request threads, image downloads): what
    heavy work they have goes to :class:`ComputeThreads`. False where torch has no OpenMP runtime
    that can be told (the thread is left as it was)."""
    import torch

    omp = _openmp()
    if omp is None:
        return False
    torch.get_num_threads()  # torch sets this thread's count on first use: before ours, not after
    omp.omp_set_num_threads(1)
    return True


def _form_team() -> None:
    """Run one parallel torch operation on the calling thread, so that its OpenMP team starts now."""
    import torch

    torch.ones(1 << 17).add_(1)


def post_worker_init(worker) -> None:
    """gunicorn hook: the gthread worker's request threads (``--threads``), all started with the
    worker, each with one torch thread (:func:`one_torch_thread`)."""
    pool = getattr(worker, "tpool", None)
    if pool is not None:
        prestart(pool, int(worker.cfg.threads), init=one_torch_thread)


class ComputeThreads:
    """The few threads that run the torch work of requests (``COMPUTE_THREADS``).

    Each thread that runs a parallel torch operation gets an OpenMP team of ``cores - 1`` threads of
    its own, kept for that thread's life. Run from gunicorn's request threads (``THREADS``), the
    teams would add up to ``THREADS x (cores - 1)`` threads as more of them score for the first
    time (docs/benchmarks.md, the soak); run here, at most ``COMPUTE_THREADS x (cores - 1)``, all
    started with the process. A request thread waits for its result (the wait is not bounded: the
    request's deadline bounds its downloads, which stay on the request thread; only a strategy that
    needs the images themselves, AIFT's views, reads them again from the scoring). Re-entrant: a
    call from one of these threads runs inline."""

    def __init__(self, n: int, name: str = "compute") -> None:
        self.n = max(1, int(n))
        self._ours = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=self.n, thread_name_prefix=name, initializer=self._start)
        prestart(self._pool, self.n)

    def _start(self) -> None:
        """Each thread: marked as one of these, and its OpenMP team started now, not at its first request."""
        self._ours.inside = True
        _form_team()

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
