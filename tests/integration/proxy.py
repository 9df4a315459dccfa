"""A small HTTP reverse proxy in front of Label Studio that can simulate an outage."""

from __future__ import annotations

import http.server
import threading

import requests

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


class OutageProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.fail_when = None  # callable(method, path) -> bool; True = answer 503
        self.failed: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.fail_when is not None and proxy.fail_when(self.command, self.path):
                    proxy.failed.append((self.command, self.path))
                    payload = b'{"detail": "simulated outage"}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                r = requests.request(
                    self.command,
                    proxy.target + self.path,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=120,
                )
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
