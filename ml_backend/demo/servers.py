"""Start and stop a real Label Studio 1.23.2 (its own venv) and the backend on 127.0.0.1.

Used by the demo, the integration tests and the benchmarks. The first start in a checkout migrates a
database (about 40 s); the migrated SQLite file is kept under .cache/ and copied into every later
data dir, which makes a start take a few seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
LS_VENV = Path(os.environ.get("LS_VENV", ROOT / ".cache" / "ls-venv"))
LS_BIN = LS_VENV / "bin" / "label-studio"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "active-adaptation"  # local-only servers on 127.0.0.1 (tests, benchmarks, demo)
ADMIN_TOKEN = "0123456789abcdef0123456789abcdef01234567"  # legacy token of the admin (40 hex)
# A migrated database with this admin; the name changes with the credentials and the LS lock file.
_TEMPLATE_KEY = hashlib.sha1(
    f"{ADMIN_EMAIL}:{ADMIN_PASSWORD}:{ADMIN_TOKEN}:".encode() + (ROOT / "requirements-labelstudio.txt").read_bytes()
).hexdigest()[:12]
DB_TEMPLATE = ROOT / ".cache" / "ls-db-template" / f"label_studio-{_TEMPLATE_KEY}.sqlite3"

IMAGE_CLASSIFICATION_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image" choice="single-radio">
    {choices}
  </Choices>
</View>"""
# The demo's labeling screen: the image at a fixed size, its pixels sharp (a 28 px photo is not blurred
# up to the window's width), and the choices beside it, all visible without scrolling (hotkeys 1-9, 0).
SIDE_BY_SIDE_CONFIG = """<View style="display: flex; align-items: flex-start; gap: 32px">
  <View style="flex: 0 0 {px}px">
    <Image name="image" value="$image" width="{px}px" maxWidth="{px}px" smoothing="false" zoomControl="false"/>
  </View>
  <View>
    <Header value="What is it?"/>
    <Choices name="label" toName="image" choice="single-radio">
      {choices}
    </Choices>
  </View>
</View>"""


# Label Studio's own fix for importing predictions into big projects (its feature flag, off by
# default in 1.23): without it every import request recounts every task of the project, ~7 s per
# request at 10k tasks on a 2-core VM against 0.2-0.5 s with it (docs/benchmarks.md). docker-compose.yml sets it too.
LABEL_STUDIO_FLAGS = {"fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(command: list[str], cwd: Path, env: dict, log_path: Path) -> subprocess.Popen:
    """Start a server in its own process group (so that it can be stopped with all its children)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(process: subprocess.Popen, url: str, timeout: float, log_tail=lambda: "") -> bool:
    """Poll ``url``/health until it answers {"status": "UP"}; raise (with the log's tail) if the
    process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}:\n{log_tail()}")
        try:
            if requests.get(f"{url}/health", timeout=2).json().get("status") == "UP":
                return True
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.3)
    return False


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3):
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def stop_process_group(process: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM the process group a server was started in; SIGKILL it after ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def classification_config(labels, image_px: int | None = None) -> str:
    """One single-choice question about an image; with ``image_px``, the demo's side-by-side screen."""
    if image_px:
        choices = "\n      ".join(f'<Choice value="{label}"/>' for label in labels)
        return SIDE_BY_SIDE_CONFIG.replace("{px}", str(int(image_px))).replace("{choices}", choices)
    return IMAGE_CLASSIFICATION_CONFIG.format(choices="\n    ".join(f'<Choice value="{label}"/>' for label in labels))


class LabelStudio:
    """A throw-away Label Studio server. Use as a context manager; stops its process group."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_env: dict | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "label-studio.log"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {ADMIN_TOKEN}"

    # ------------------------------------------------------------------ process
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))}
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir),
            LABEL_STUDIO_USERNAME=ADMIN_EMAIL,
            LABEL_STUDIO_PASSWORD=ADMIN_PASSWORD,
            LABEL_STUDIO_USER_TOKEN=ADMIN_TOKEN,
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            LABEL_STUDIO_ML_BLOCK_LOCAL_IP="false",
            LABEL_STUDIO_SSRF_PROTECTION_ENABLED="false",
            LABEL_STUDIO_HOST=self.url,
            LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
            LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(self.data_dir),
            SENTRY_DSN="",
            FRONTEND_SENTRY_DSN="",
            COLLECT_ANALYTICS="false",
            **LABEL_STUDIO_FLAGS,
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 240.0) -> "LabelStudio":
        if not LS_BIN.exists():
            raise RuntimeError(f"{LS_BIN} not found: run `bash scripts/setup_env.sh` first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fresh = not (self.data_dir / "label_studio.sqlite3").exists()
        if fresh and DB_TEMPLATE.exists():
            shutil.copy(DB_TEMPLATE, self.data_dir / "label_studio.sqlite3")
        self.process = spawn(
            [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(self.port)],
            cwd=self.data_dir,
            env=self.env(),
            log_path=self.log_path,
        )
        if not wait_healthy(self.process, self.url, timeout, self.log_tail):
            self.stop()
            raise RuntimeError(f"Label Studio did not become healthy in {timeout:.0f}s:\n{self.log_tail()}")
        self._wait_for_admin()
        if fresh and not DB_TEMPLATE.exists():
            DB_TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
            tmp = DB_TEMPLATE.with_suffix(".tmp")
            with sqlite3.connect(self.data_dir / "label_studio.sqlite3") as src, sqlite3.connect(tmp) as dst:
                src.backup(dst)
            tmp.replace(DB_TEMPLATE)
        return self

    def _wait_for_admin(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.session.get(f"{self.url}/api/current-user/whoami", timeout=5).status_code == 200:
                return
            time.sleep(0.5)
        raise RuntimeError("the admin's legacy token is not accepted")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process_group(self.process, grace=15)

    def __enter__(self) -> "LabelStudio":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ REST helpers
    def api(self, method: str, path: str, expect: int | tuple = (200, 201, 204), **kwargs):
        response = self.session.request(method, f"{self.url}{path}", timeout=kwargs.pop("timeout", 120), **kwargs)
        expected = (expect,) if isinstance(expect, int) else expect
        if response.status_code not in expected:
            raise AssertionError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json() if response.content and "json" in response.headers.get("Content-Type", "") else response

    def create_project(self, title: str, labels, image_px: int | None = None) -> int:
        config = classification_config(labels, image_px)
        return self.api("POST", "/api/projects", json={"title": title, "label_config": config})["id"]

    def upload_files(self, project: int, files: list[tuple[str, bytes]]) -> list[int]:
        multipart = [(f"file{i}", (name, data)) for i, (name, data) in enumerate(files)]
        return self.api("POST", f"/api/projects/{project}/import", files=multipart, params={"return_task_ids": "true"})[
            "task_ids"
        ]

    def import_tasks(self, project: int, tasks: list[dict]) -> list[int]:
        return self.api("POST", f"/api/projects/{project}/import", json=tasks, params={"return_task_ids": "true"})[
            "task_ids"
        ]

    def personal_access_token(self) -> str:
        """A Personal Access Token (JWT refresh token) of the admin (one per user: created once)."""
        if getattr(self, "_pat", None) is None:
            self._pat = self.api("POST", "/api/token/")["token"]
        return self._pat

    def tasks(self, project: int) -> list[dict]:
        out, page = [], 1
        while True:
            r = self.session.get(
                f"{self.url}/api/tasks",
                params={"project": project, "page": page, "page_size": 500, "fields": "all"},
                timeout=60,
            )
            if r.status_code == 404:
                break
            r.raise_for_status()
            data = r.json()
            batch = data["tasks"] if isinstance(data, dict) else data
            out.extend(batch)
            if len(batch) < 500:
                break
            page += 1
        return out

    def connect_backend(self, project: int, url: str, title: str = "active-adaptation", **auth) -> dict:
        return self.api("POST", "/api/ml", json={"project": project, "url": url, "title": title, **auth})

    def webhook_headers(self, project: int, backend_url: str) -> dict:
        """The headers Label Studio sends with the project's webhook to ``backend_url`` (the backend
        sets its authentication header there once it has confirmed the project)."""
        for hook in self.api("GET", "/api/webhooks/", params={"project": project}):
            if hook["url"].rstrip("/") == backend_url.rstrip("/") + "/webhook":
                return dict(hook.get("headers") or {})
        return {}

    def retrieve_predictions(self, project: int) -> None:
        self.api(
            "POST",
            "/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": project},
            json={"selectedItems": {"all": True, "excluded": []}},
            timeout=300,
        )

    def predictions(self, project: int) -> list[dict]:
        return self.api("GET", "/api/predictions/", params={"project": project})

    def use_uncertainty_queue(self, project: int, model_version: str) -> dict:
        return self.api(
            "PATCH",
            f"/api/projects/{project}",
            json={"sampling": "Uncertainty sampling", "model_version": model_version},
        )

    def walk_queue(self, project: int, limit: int = 10_000) -> list[int]:
        """Serve tasks with /next and skip each one: the order an annotator would see."""
        served = []
        for _ in range(limit):
            r = self.session.get(f"{self.url}/api/projects/{project}/next", timeout=60)
            if r.status_code == 404:
                break
            r.raise_for_status()
            task = r.json()
            served.append(task["id"])
            self.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": [], "was_cancelled": True})
        return served


class BackendProcess:
    def __init__(self, workdir: Path, env: dict, port: int | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "MODEL_DIR": str(self.workdir / "models"),
            "BACKBONE": "smallcnn",
            "WEIGHTS": "none",
            "DEVICE": "cpu",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.log_path = self.workdir / "backend.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "BackendProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = spawn([sys.executable, "-m", "ml_backend"], cwd=ROOT, env=self.env, log_path=self.log_path)
        if wait_healthy(self.process, self.url, timeout, lambda: self.log()[-3000:]):
            return self
        self.stop()
        raise RuntimeError(f"backend not healthy after {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process_group(self.process, grace=20)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
