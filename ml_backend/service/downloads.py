"""Downloads that end by a deadline. requests' timeouts bound each socket operation, not a
download: a server sending one byte every few seconds keeps a download alive forever. A
:class:`BoundedSession` inside :func:`bounded` hands every socket it uses to a watchdog thread,
which shuts them down at the deadline (the only way to stop a server that drips), and reads at
most ``max_bytes`` of a response. :class:`HostSlots` bounds the connections open to each host: a
download holds one of its host's slots, and every session of a loader shares one connection pool
per host of that size (an idle keep-alive connection counts too)."""

from __future__ import annotations

import contextlib
import heapq
import socket
import threading
import time
from typing import Iterator

import requests
import requests.adapters
import urllib3

from ml_backend.errors import ImageError


class Download:
    """One image's download: its deadline and the sockets it uses (to be shut down when it passes)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sockets: list[socket.socket] = []
        self.expired = False  # the deadline passed while it ran (its sockets were shut down)
        self.done = False  # it ended: nothing is shut down any more
        self.lock = threading.Lock()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attach(self, sock) -> None:
        with self.lock:
            if sock is not None and sock not in self.sockets:
                self.sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def expire(self) -> None:
        """The watchdog's call at the deadline: shut the sockets down unless the download has ended."""
        with self.lock:
            if self.done:
                return
            self.expired = True
            sockets = list(self.sockets)
        for sock in sockets:
            _shutdown(sock)

    def finish(self) -> None:
        """The download ended: its (keep-alive) sockets must never be shut down by the watchdog."""
        with self.lock:
            self.done = True
            self.sockets.clear()


def _shutdown(sock) -> None:
    """Make a blocked recv() in another thread return: the only way to stop a server that drips."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass


class _Watchdog:
    """One daemon thread that expires downloads at their deadline (a heap of deadlines).

    requests' timeouts bound each socket operation, not a download: a server sending one byte
    every few seconds keeps a download alive forever. At the deadline the watchdog shuts the
    download's sockets down, which fails the blocked read at once."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Download]] = []
        self._cond = threading.Condition()
        self._counter = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread if it is not running (in this process: a fork leaves it behind)."""
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="download-watchdog", daemon=True)
                self._thread.start()

    def watch(self, download: Download) -> None:
        self.start()
        with self._cond:
            self._counter += 1
            heapq.heappush(self._heap, (download.deadline, self._counter, download))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, download = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            download.expire()


_WATCHDOG = _Watchdog()


def start_watchdog() -> None:
    """Start the deadline watchdog's thread now rather than at the first bounded download, so that a
    process's thread count is flat from its start (``pools.py``)."""
    _WATCHDOG.start()


_CURRENT = threading.local()  # the download the calling thread is doing (set by ``bounded``)


@contextlib.contextmanager
def bounded(deadline: float) -> Iterator[Download]:
    """The calling thread's downloads in the block (through a :class:`BoundedSession`) end by
    ``deadline`` (time.monotonic()): then the watchdog shuts their sockets down."""
    download = Download(deadline)
    previous = getattr(_CURRENT, "download", None)
    _CURRENT.download = download
    _WATCHDOG.watch(download)
    try:
        yield download
    finally:
        download.finish()
        _CURRENT.download = previous


def current() -> Download | None:
    """The download the calling thread is doing (None: outside :func:`bounded`)."""
    return getattr(_CURRENT, "download", None)


class _DeadlineMixin:
    """urllib3 connections that hand their socket to the current download, so that the watchdog
    can shut it down: after connecting, and before waiting for the response headers (a reused
    keep-alive connection does not connect again)."""

    def connect(self):
        super().connect()
        download = current()
        if download is not None:
            download.attach(self.sock)

    def getresponse(self, *args, **kwargs):
        download = current()
        if download is not None:
            download.attach(self.sock)
        return super().getresponse(*args, **kwargs)


class _HTTPConnection(_DeadlineMixin, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineMixin, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def shared_adapter(per_host: int) -> requests.adapters.HTTPAdapter:
    """One connection pool per host of at most ``per_host`` connections, for every thread's
    :class:`BoundedSession` of a loader (urllib3's pools are thread-safe). With :class:`HostSlots`
    holding the downloads of a host to ``per_host`` at once, no connection beyond the pool is ever
    opened, so a host sees at most ``per_host`` connections, idle keep-alive ones included."""
    return _DeadlineAdapter(pool_connections=64, pool_maxsize=per_host)


class HostSlots:
    """At most ``per_host`` downloads at once from each host (``host:port``)."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def _semaphore(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            slot = self._slots.get(host)
            if slot is None:
                slot = self._slots[host] = threading.BoundedSemaphore(self.per_host)
            return slot

    @contextlib.contextmanager
    def hold(self, host: str | None, deadline: float | None, what: str) -> Iterator[None]:
        """One of ``host``'s slots for the block (None: no network, no slot); waits at most until
        ``deadline`` (time.monotonic(); None: until a slot frees, each holder being bounded by its own
        deadline), then fails with an ImageError naming ``what``."""
        if host is None:
            yield
            return
        slot = self._semaphore(host)
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not slot.acquire(timeout=wait):
            raise ImageError(
                f"{what} not fetched: the request's deadline passed while it waited for one of the "
                f"{self.per_host} connections to {host} (DOWNLOAD_CONNECTIONS_PER_HOST)"
            )
        try:
            yield
        finally:
            slot.release()


class BoundedSession(requests.Session):
    """A requests session with a per-operation timeout, a hard limit on the bytes read per
    response and, inside :func:`bounded`, the download's total deadline. ``adapter``: the
    connection pools to use (:func:`shared_adapter`; None: this session's own)."""

    def __init__(self, max_bytes: int, timeout: float, adapter: requests.adapters.HTTPAdapter | None = None) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.timeout = timeout
        adapter = adapter if adapter is not None else _DeadlineAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(self, method, url, **kwargs):  # noqa: D401 - requests' signature
        download = current()
        timeout = self.timeout
        if download is not None:
            remaining = download.remaining()
            if remaining <= 0:
                raise ImageError(f"download of {url} not started: the image's deadline has passed")
            timeout = min(timeout, remaining)
        kwargs["timeout"] = timeout
        kwargs["stream"] = True
        response = super().request(method, url, **kwargs)
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            response.close()
            raise ImageError(f"image is {int(length)} bytes, more than IMAGE_MAX_BYTES={self.max_bytes}")
        chunks, total = [], 0
        try:
            for chunk in response.iter_content(1 << 16):
                total += len(chunk)
                if total > self.max_bytes:
                    raise ImageError(f"image is more than IMAGE_MAX_BYTES={self.max_bytes} bytes")
                chunks.append(chunk)
        except BaseException:
            response.close()
            raise
        response._content = b"".join(chunks)  # what response.content returns from now on
        response._content_consumed = True
        return response
