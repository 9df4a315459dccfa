"""Fetch and decode task images.

References of every kind Label Studio produces (``/data/upload/...``, ``/data/local-files/?d=...``,
``s3://``/``gs://``/``azure-blob://`` through LS's presign endpoint with the task id, plain
``http(s)://``) are resolved by label-studio-sdk's ``get_local_path``, which also sends the
credentials only to the Label Studio host and caches downloads on disk. We add what a server
needs around it: a timeout and a byte limit on every download, a pixel limit, concurrency with a
bound in all (``workers`` threads, FETCH_WORKERS) and per host (``per_host`` connections,
DOWNLOAD_CONNECTIONS_PER_HOST), JPEGs decoded at a reduced size where the preprocessing allows it
(``draft_side``), and one clear reason per failed task. The deadline of a download is
``downloads.py``'s; the SDK's resolver is reached through ``sdk.py``.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit

import requests
from PIL import Image, UnidentifiedImageError

from ml_backend.errors import ImageError
from ml_backend.service import downloads, pools, sdk
from ml_backend.service.downloads import BoundedSession, HostSlots

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where images come from: the Label Studio host and a token to authenticate with it."""

    hostname: str = ""
    token: Callable[[], str | None] = lambda: None


class ImageLoader:
    def __init__(
        self,
        cache_dir: Path,
        workers: int,
        max_bytes: int,
        max_pixels: int,
        timeout: float,
        per_host: int = 8,
        draft_side: int = 0,
    ):
        """``workers``: images fetched and decoded at once in all; ``per_host``: connections open to
        one host at most; ``draft_side``: the shorter side the preprocessing resizes to (see decode)."""
        self.cache_dir = Path(cache_dir)
        self.max_bytes, self.max_pixels, self.timeout, self.draft_side = max_bytes, max_pixels, timeout, draft_side
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="image-fetch", initializer=pools.one_torch_thread
        )
        pools.prestart(self._executor, workers)  # all started now, none with a torch team: a flat thread count
        downloads.start_watchdog()  # (the requests' download deadlines) likewise
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._local, self._slots = threading.local(), HostSlots(per_host)
        self._adapter = downloads.shared_adapter(per_host)
        # per Label Studio host: whether it serves uploads at /data/upload/ (None: not known yet)
        self._direct_uploads: dict[str, bool] = {}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._adapter.close()

    def _session(self) -> BoundedSession:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = BoundedSession(self.max_bytes, self.timeout, self._adapter)
        return session

    def load_many(
        self,
        refs: Sequence[tuple[object, object]],
        source: Source,
        transform: Callable | None = None,
        deadline: float | None = None,
    ) -> list:
        """Load ``[(task_id, reference), ...]`` concurrently. Each item is the RGB image (passed
        through ``transform`` in the same worker thread, if given) or the ImageError that explains
        why that task has none. Never raises for one bad image. ``deadline`` (time.monotonic()) bounds
        the whole call: images not fetched by then fail with a clear reason."""
        return [f.result() for f in self.submit_many(refs, source, transform, deadline)]

    def submit_many(
        self,
        refs: Sequence[tuple[object, object]],
        source: Source,
        transform: Callable | None = None,
        deadline: float | None = None,
    ) -> list[Future]:
        """Like :meth:`load_many`, but returns one future per reference, in order, so that a
        caller can start computing on the first images while the rest are still downloading."""
        token: str | None = None
        if any(_needs_token(r) or _on_host(r, source.hostname) for _, r in refs):
            try:
                token = source.token()
            except Exception as exc:  # e.g. an expired PAT: every Label Studio image fails alike
                reason = f"cannot authenticate with Label Studio: {type(exc).__name__}: {exc}"
                log.error("%s", reason)
                failed = ImageError(reason)
                futures = []
                for task_id, ref in refs:
                    if _needs_token(ref) or _on_host(ref, source.hostname):
                        log.warning("task %s: no prediction, image unusable: %s", task_id, reason)
                        future: Future = Future()
                        future.set_result(failed)
                    else:
                        future = self._executor.submit(
                            self._load_safe, task_id, ref, source.hostname, None, transform, deadline
                        )
                    futures.append(future)
                return futures
        return [
            self._executor.submit(self._load_safe, task_id, ref, source.hostname, token, transform, deadline)
            for task_id, ref in refs
        ]

    def _load_safe(
        self,
        task_id,
        ref,
        hostname: str,
        token: str | None,
        transform: Callable | None = None,
        deadline: float | None = None,
    ):
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise ImageError("not fetched: the request's deadline (PREDICT_DEADLINE_S) passed first")
            image = self.load(task_id, ref, hostname, token, deadline)
            return transform(image) if transform is not None else image
        except ImageError as exc:
            log.warning("task %s: no prediction, image unusable: %s", task_id, exc)
            return exc
        except Exception as exc:  # a bug or an unexpected library error: still only this task
            log.warning("task %s: no prediction, image unusable: %s: %s", task_id, type(exc).__name__, exc)
            return ImageError(f"{type(exc).__name__}: {exc}")

    def load(
        self, task_id, ref, hostname: str = "", token: str | None = None, deadline: float | None = None
    ) -> Image.Image:
        """One image: its download within IMAGE_TIMEOUT_S in all (connect, headers, body, redirects,
        presigning), counted from when one of its host's connections is free, and before ``deadline``
        (waiting for that connection included) if one is given."""
        return self._load(task_id, ref, hostname, token, deadline)

    def _download(self, task_id, ref: str, hostname: str, token: str | None, deadline: float | None) -> str:
        """The local path of ``ref``, fetched holding one of its host's connection slots."""
        with self._slots.hold(_host_of(ref, hostname), deadline, ref):
            limit = time.monotonic() + self.timeout
            with downloads.bounded(limit if deadline is None else min(limit, deadline)) as download:
                try:
                    return self._fetch(task_id, ref, hostname, token)
                except ImageError:
                    raise
                except Exception:
                    if download.expired:  # whatever the shut-down socket made a library raise
                        raise _too_slow(ref, self.timeout) from None
                    raise

    def _load(
        self, task_id, ref, hostname: str = "", token: str | None = None, deadline: float | None = None
    ) -> Image.Image:
        if not isinstance(ref, str) or not ref.strip():
            raise ImageError(f"no image reference in the task data (got {ref!r})")
        ref = ref.strip()
        if ref.startswith("data:"):
            return self._decode(_data_uri_bytes(ref), where="data URI")
        if _needs_token(ref) and not hostname:
            raise ImageError(f"{ref} is served by Label Studio, but LABEL_STUDIO_URL is not set")
        if _needs_token(ref) and not token:
            raise ImageError(
                f"{ref} is served by Label Studio, which needs LABEL_STUDIO_API_KEY "
                "(a Personal Access Token or legacy token)"
            )
        try:
            path = self._download(task_id, ref, hostname, token, deadline)
        except ImageError:
            raise
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise ImageError(f"download of {ref} failed with HTTP {status}") from None
        except requests.RequestException as exc:
            download = downloads.current()
            if isinstance(exc, requests.Timeout) or (download is not None and download.expired):
                raise _too_slow(ref, self.timeout) from None
            raise ImageError(f"download of {ref} failed: {type(exc).__name__}") from None
        except (FileNotFoundError, ValueError) as exc:
            raise ImageError(f"cannot resolve {ref}: {exc}") from None
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError:
            raise ImageError(f"{ref}: file not found") from None
        if size > self.max_bytes:
            raise ImageError(f"image is {size} bytes, more than IMAGE_MAX_BYTES={self.max_bytes}")
        try:
            return self._decode(path.read_bytes(), where=ref)
        except ImageError:
            # A cached download that does not decode must not stay cached.
            if self.cache_dir in path.parents:
                path.unlink(missing_ok=True)
            raise

    def _fetch(self, task_id, ref: str, hostname: str, token: str | None) -> str:
        """The local path of ``ref`` (label-studio-sdk's resolver and cache). An upload
        (``/data/upload/…``) is asked for at that path first: the SDK would first try
        ``/storage-data/uploaded/`` and fall back, which costs Label Studio's default file storage one
        refused request and a warning per image. A host that does not serve that path (its default
        storage is in the cloud) is remembered and gets the SDK's way from then on."""
        upload = _upload_path(ref)
        direct = bool(upload and hostname and self._direct_uploads.get(hostname.rstrip("/")) is not False)
        if direct:
            try:
                path = sdk.local_path(
                    hostname.rstrip("/") + upload,
                    self._session(),
                    str(self.cache_dir),
                    hostname,
                    token or None,
                    task_id,
                )
                self._direct_uploads[hostname.rstrip("/")] = True
                return path
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status not in (400, 403, 404) or self._direct_uploads.get(hostname.rstrip("/")):
                    raise
                log.info("%s does not serve uploads at /data/upload/ (HTTP %s); using /storage-data/", hostname, status)
                self._direct_uploads[hostname.rstrip("/")] = False
        return sdk.local_path(ref, self._session(), str(self.cache_dir), hostname or None, token or None, task_id)

    def _decode(self, data: bytes, where: str) -> Image.Image:
        return decode(data, where, self.max_bytes, self.max_pixels, self.draft_side)


def decode(data: bytes, where: str, max_bytes: int, max_pixels: int, draft_side: int = 0) -> Image.Image:
    """The RGB image in ``data`` within the byte and pixel bounds; a JPEG decoded at the smallest of
    libjpeg's 1/2, 1/4, 1/8 scales that keeps at least ``draft_side`` pixels on its shorter side
    (0: full size). ImageError with the reason otherwise."""
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes, more than IMAGE_MAX_BYTES={max_bytes}")
    if not data:
        raise ImageError(f"{where}: empty file")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"{where}: {width}x{height} pixels, more than IMAGE_MAX_PIXELS={max_pixels}")
        if draft_side and image.format == "JPEG":  # short side stays >= draft_side (Pillow picks the scale)
            image.draft("RGB", (draft_side, draft_side))
        image.load()
        return image.convert("RGB")
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{where}: not an image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{where}: corrupt image ({exc})") from None


def _too_slow(ref, timeout: float) -> ImageError:
    return ImageError(f"download of {ref} took longer than {timeout:g}s (IMAGE_TIMEOUT_S, or the request's deadline)")


def _upload_path(ref: str) -> str | None:
    """``/data/upload/<project>/<file>`` for an uploaded file's reference in any of its spellings."""
    path = ref.split("?", 1)[0]
    for prefix in ("/data/upload/", "data/upload/", "/upload/", "upload/"):
        if path.startswith(prefix):
            return "/data/upload/" + ref[len(prefix) :]
    return None


def _host_of(ref: str, hostname: str) -> str | None:
    """Whose connections a download of ``ref`` uses (``host:port``): a URL's host, Label Studio's
    for what it serves or presigns; None for what needs no connection (a data URI)."""
    if ref.startswith("data:"):
        return None
    parts = urlsplit(ref)
    if parts.scheme in ("http", "https") and parts.netloc:
        return parts.netloc.lower()
    return urlsplit(hostname).netloc.lower() or hostname or "label-studio"


def _needs_token(ref: object) -> bool:
    if not isinstance(ref, str):
        return False
    return ref.startswith(
        ("/data/", "data/upload", "upload/", "/upload/", "/storage-data/", "s3:", "gs:", "azure-blob:")
    )


def _on_host(ref: object, hostname: str) -> bool:
    return bool(hostname) and isinstance(ref, str) and ref.startswith(hostname.rstrip("/") + "/")


def _data_uri_bytes(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if ";base64" not in header:
        raise ImageError("data URI is not base64-encoded")
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise ImageError("data URI is not valid base64") from None
