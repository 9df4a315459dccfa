import http.server
import shutil
import threading
import time

import pytest

from ml_backend.demo.sample_data import digit_pngs, png_bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    seen: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        type(self).seen.append((self.path, dict(self.headers)))
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_response(404)
            self.end_headers()
            return
        kind, payload = route
        if kind == "redirect":
            self.send_response(303)
            self.send_header("Location", payload)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "slow":
            time.sleep(payload)
            payload = png_bytes()
        if kind == "stream":  # no Content-Length, more bytes than allowed
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(payload):
                self.wfile.write(b"\0" * 65536)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if kind == "json" else "image/png")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(scope="session")
def digits64():
    return digit_pngs(48, size=64)


def _serve(routes):
    handler = type("H", (_Handler,), {"routes": routes, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.seen = handler.seen
    return server


@pytest.fixture
def image_server(digits64):
    good = digits64[0][1]
    routes = {
        "/good.png": ("bytes", good),
        "/corrupt.png": ("bytes", good[: len(good) // 2]),
        "/text.png": ("bytes", b"this is not an image"),
        "/empty.png": ("bytes", b""),
        "/slow.png": ("slow", 3.0),
        "/huge-stream.png": ("stream", 40),
    }
    for i, (_name, data, _) in enumerate(digits64):
        routes[f"/digits/{i}.png"] = ("bytes", data)
    server = _serve(routes)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def project_server():
    """A stand-in for Label Studio's project API that confirms project 1 and serves no images
    (for tests of what the backend does when images fail; the real Label Studio is used elsewhere)."""
    import json

    server = _serve({"/api/projects/1/": ("json", json.dumps({"id": 1, "title": "p", "label_config": ""}).encode())})
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def second_server(digits64):
    server = _serve({"/good.png": ("bytes", digits64[1][1])})
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """One real Label Studio 1.23.2 for the whole test session (started and stopped here)."""
    from ml_backend.demo.servers import LabelStudio

    server = LabelStudio(tmp_path_factory.mktemp("label-studio"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup_env.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()
