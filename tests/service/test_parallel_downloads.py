"""Bounded parallel downloads and JPEG draft decoding, against a real local HTTP server that counts
its open connections (keep-alive ones included) and real JPEGs."""

import http.server
import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from ml_backend.core.preprocess import Preprocess
from ml_backend.errors import ImageError
from ml_backend.service.images import ImageLoader, Source


def photo_jpeg(width: int, height: int, seed: int = 0, quality: int = 85) -> bytes:
    """A photo-like JPEG: smooth colour fields, a few shapes, sensor noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.05, 0.2) * width
        base[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    base += rng.normal(0, 6, base.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class CountingServer:
    """HTTP/1.1 (keep-alive) server: ``/img/<i>.jpg`` after ``delay`` seconds, ``/404.jpg``,
    ``/text.jpg``, ``/truncated.jpg``, ``/huge.jpg`` (above the byte bound), ``/slow.jpg`` (longer than
    the per-image timeout). Counts the connections open at once, and the most ever."""

    def __init__(self, delay: float, image: bytes):
        self.open = self.peak = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with outer.lock:
                    outer.open += 1
                    outer.peak = max(outer.peak, outer.open)

            def finish(self):
                with outer.lock:
                    outer.open -= 1
                super().finish()

            def _send(self, data: bytes, status: int = 200):
                self.send_response(status)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the client gave up (its deadline): expected here
                    self.close_connection = True

            def do_GET(self):
                if self.path == "/404.jpg":
                    return self._send(b"no", 404)
                if self.path == "/text.jpg":
                    return self._send(b"this is not an image")
                if self.path == "/truncated.jpg":
                    return self._send(image[: len(image) // 3])
                if self.path == "/huge.jpg":
                    return self._send(b"\xff" * 3_000_000)
                time.sleep(30 if self.path == "/slow.jpg" else delay)
                self._send(image)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def jpeg():
    return photo_jpeg(640, 480)


@pytest.fixture
def slow_server(jpeg):
    server = CountingServer(0.3, jpeg)
    yield server
    server.close()


def test_per_host_bound_is_never_exceeded_and_downloads_run_in_parallel(tmp_path, slow_server):
    loader = ImageLoader(tmp_path, workers=16, max_bytes=2_000_000, max_pixels=10**8, timeout=10, per_host=4)
    try:
        n, delay = 24, 0.3
        started = time.monotonic()
        items = loader.load_many([(i, f"{slow_server.url}/img/{i}.jpg") for i in range(n)], Source())
        took = time.monotonic() - started
        assert all(isinstance(x, Image.Image) for x in items)
        assert slow_server.peak == 4  # parallel, and never more than DOWNLOAD_CONNECTIONS_PER_HOST
        assert took < 0.5 * n * delay, took  # ≈ n/4 × delay = 1.8 s; serial would be 7.2 s
    finally:
        loader.close()


def test_each_host_has_its_own_bound(tmp_path, jpeg):
    a, b = CountingServer(0.2, jpeg), CountingServer(0.2, jpeg)
    loader = ImageLoader(tmp_path, workers=16, max_bytes=2_000_000, max_pixels=10**8, timeout=10, per_host=3)
    try:
        refs = [(i, f"{(a if i % 2 else b).url}/img/{i}.jpg") for i in range(24)]
        items = loader.load_many(refs, Source())
        assert all(isinstance(x, Image.Image) for x in items)
        assert a.peak == 3 and b.peak == 3
    finally:
        loader.close()
        a.close()
        b.close()


def test_bad_images_fail_alone_within_their_bounds(tmp_path, slow_server):
    loader = ImageLoader(tmp_path, workers=8, max_bytes=1_000_000, max_pixels=10**8, timeout=1.5, per_host=4)
    try:
        bad = ["404", "text", "truncated", "huge", "slow"]
        refs = [(name, f"{slow_server.url}/{name}.jpg") for name in bad]
        refs += [(i, f"{slow_server.url}/img/{i}.jpg") for i in range(12)]
        started = time.monotonic()
        items = loader.load_many(refs, Source())
        took = time.monotonic() - started
        reasons = {name: str(x) for (name, _), x in zip(refs, items) if isinstance(x, ImageError)}
        assert set(reasons) == set(bad), reasons
        assert "HTTP 404" in reasons["404"] and "not an image" in reasons["text"]
        assert "corrupt" in reasons["truncated"] and "IMAGE_MAX_BYTES" in reasons["huge"]
        assert "took longer than 1.5s" in reasons["slow"]
        assert all(isinstance(x, Image.Image) for x in items[len(bad) :])
        # the slow one costs its 1.5 s deadline and holds one of 4 connections: the other 16 go on
        assert took < 4.0, took
        assert slow_server.peak <= 4
    finally:
        loader.close()


def test_waiting_for_a_connection_counts_against_the_request_deadline(tmp_path, jpeg):
    server = CountingServer(2.0, jpeg)
    loader = ImageLoader(tmp_path, workers=8, max_bytes=2_000_000, max_pixels=10**8, timeout=10, per_host=1)
    try:
        started = time.monotonic()
        items = loader.load_many(
            [(i, f"{server.url}/img/{i}.jpg") for i in range(4)], Source(), deadline=time.monotonic() + 1.0
        )
        assert time.monotonic() - started < 3.0
        assert all(isinstance(x, ImageError) for x in items)
        assert any("DOWNLOAD_CONNECTIONS_PER_HOST" in str(x) for x in items), [str(x) for x in items]
        assert server.peak == 1
    finally:
        loader.close()
        server.close()


def test_jpeg_draft_decodes_at_a_reduced_size_close_to_a_full_decode(tmp_path):
    data = photo_jpeg(1600, 1200, seed=3)
    pre = Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    full = ImageLoader(tmp_path / "a", workers=1, max_bytes=10**7, max_pixels=10**8, timeout=5)
    draft = ImageLoader(tmp_path / "b", workers=1, max_bytes=10**7, max_pixels=10**8, timeout=5, draft_side=256)
    try:
        full_image, draft_image = full._decode(data, "full"), draft._decode(data, "draft")
        assert full_image.size == (1600, 1200)
        assert draft_image.size == (400, 300)  # 1/4: the largest scale keeping ≥ 256 px on the short side
        assert min(draft_image.size) >= pre.resize
        a, b = pre(full_image), pre(draft_image)
        assert a.shape == b.shape == (3, 224, 224)
        # in [0, 1] units (the normalisation's std is 0.5): a mean difference well under 1 %
        difference = ((a - b).abs() * 0.5).mean().item()
        assert difference < 0.01, difference
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.99
        # and the decode itself is cheaper
        timings = {}
        for name, loader in (("full", full), ("draft", draft)):
            started = time.perf_counter()
            for _ in range(5):
                loader._decode(data, name)
            timings[name] = time.perf_counter() - started
        assert timings["draft"] < timings["full"], timings
    finally:
        full.close()
        draft.close()


def test_draft_never_goes_below_the_resize_side(tmp_path):
    loader = ImageLoader(tmp_path, workers=1, max_bytes=10**7, max_pixels=10**8, timeout=5, draft_side=256)
    try:
        assert loader._decode(photo_jpeg(640, 480), "x").size == (640, 480)  # 1/2 would give 240 < 256
        assert loader._decode(photo_jpeg(1200, 520), "x").size == (600, 260)
    finally:
        loader.close()


def test_the_next_chunk_downloads_while_the_current_one_runs_through_the_model(tmp_path, jpeg):
    from types import SimpleNamespace

    from ml_backend.service.feature_cache import FeatureCache
    from ml_backend.service.features import FeatureExtractor

    server = CountingServer(0.05, jpeg)
    requested: list[tuple[float, str]] = []
    original = server.server.RequestHandlerClass.do_GET

    def do_get(handler):
        requested.append((time.monotonic(), handler.path))
        original(handler)

    server.server.RequestHandlerClass.do_GET = do_get
    loader = ImageLoader(tmp_path / "img", workers=8, max_bytes=2_000_000, max_pixels=10**8, timeout=10, per_host=8)
    cache = FeatureCache(tmp_path / "feat", "fp", memory_bytes=10**7, disk_bytes=0)
    trunk_calls: list[tuple[float, float]] = []

    def trunk(x):  # a model slow enough that downloads could finish first
        started = time.monotonic()
        time.sleep(0.5)
        trunk_calls.append((started, time.monotonic()))
        return x.mean(dim=(2, 3))

    model = SimpleNamespace(trunk=trunk, preprocess=Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3))
    state = SimpleNamespace(hostname="", access_token=None, config=SimpleNamespace(value_key="image"))
    extractor = FeatureExtractor(loader, cache, None, SimpleNamespace(configured=False), batch_size=4)
    try:
        tasks = [{"id": i, "data": {"image": f"{server.url}/img/{i}.jpg"}} for i in range(16)]
        keys = [extractor.fingerprint(extractor.reference(state, t)) for t in tasks]
        chunks = list(extractor.trunk_activation_chunks(state, model, tasks, keys, size=8))
        assert [start for start, _ in chunks] == [0, 8]
        assert all(isinstance(z, torch.Tensor) for _, part in chunks for z in part)
        second_chunk_first_request = min(t for t, path in requested if int(path.split("/")[-1][:-4]) >= 8)
        first_chunk_trunk_end = trunk_calls[1][1]  # 8 tasks in batches of 4: calls 0 and 1
        assert second_chunk_first_request < first_chunk_trunk_end
    finally:
        loader.close()
        cache.close()
        server.close()
