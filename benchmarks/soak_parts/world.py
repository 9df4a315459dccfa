"""The processes of a soak run (``python -m benchmarks.soak``): a real Label Studio with annotator accounts,
an image host that can fail, the backend under gunicorn on a MODEL_DIR of its own, a second replica,
and what they use (memory, threads, file descriptors) read from /proc. Everything started here is
stopped by :meth:`World.close`, by process group, also after a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from benchmarks.bench_scale import ImageServer, import_tasks
from ml_backend.demo.servers import ADMIN_TOKEN, LS_VENV, BackendProcess, LabelStudio, wait_for

LABELS = [str(i) for i in range(10)]
# Creates (or reuses) one Label Studio account per annotator, with a known legacy token, in the
# organisation of the admin; run with Label Studio's own interpreter and environment.
_MAKE_USERS = r"""
import os, sys, django
import label_studio
sys.path.insert(0, os.path.dirname(label_studio.__file__))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
django.setup()
from organizations.models import Organization
from rest_framework.authtoken.models import Token
from users.models import User
org = Organization.objects.first()
for i, token in enumerate(sys.argv[1:]):
    email = f"annotator{i + 1}@example.com"
    user = User.objects.filter(email=email).first() or User.objects.create_user(email=email, password=token)
    Token.objects.filter(user=user).delete()
    Token.objects.create(user=user, key=token)
    org.add_user(user)
    user.active_organization = org
    user.save(update_fields=["active_organization"])
"""


class FaultyImages(ImageServer):
    """The benchmark's image host, which can answer 500 (``mode = "500"``) or hang (``"hang"``:
    requests wait until the mode changes back to ``"ok"``)."""

    def __init__(self):
        super().__init__()
        self.mode, self.failed = "ok", 0
        owner, base = self, self.server.RequestHandlerClass

        class Faulty(base):
            def do_GET(self):
                while owner.mode == "hang":
                    time.sleep(0.2)
                if owner.mode == "500":
                    owner.failed += 1
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

        self.server.RequestHandlerClass = Faulty
        self.server.daemon_threads = True


class SmallDisk:
    """A tmpfs of its own for MODEL_DIR that can be filled and freed (mounting needs root; without
    it, ``skipped`` says why and MODEL_DIR is an ordinary folder)."""

    def __init__(self, path: Path, size_mb: int):
        self.path, self.mounted, self.skipped = Path(path), False, None
        self.path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if r.returncode == 0:
            self.mounted = True
        else:
            self.skipped = f"mount -t tmpfs not permitted here ({(r.stderr or r.stdout).strip()[:200]})"
        self.filler = self.path / "soak-filler.bin"

    def free_mb(self) -> float:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize / 2**20

    def fill(self) -> None:
        """Take every free byte of the filesystem (unbuffered writes: ENOSPC comes back at once)."""
        with open(self.filler, "ab", buffering=0) as f:
            for size in (2**20, 4096, 1):
                try:
                    while f.write(b"\0" * size):
                        pass
                except OSError:
                    pass

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        self.free()
        if self.mounted:
            if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def fd_kind(target: str) -> str:
    """What an open file descriptor is, from its /proc link: socket, pipe, anon_inode:<what>, or the
    file's suffix (``.seg``: the feature cache's segments)."""
    if target.startswith(("socket:", "pipe:")):
        return target.split(":", 1)[0]
    if target.startswith("anon_inode:"):
        return target.strip("[]").replace("[", "")
    return Path(target).suffix or "file"


def proc_usage(pid: int) -> dict | None:
    """RSS (MB), threads and open file descriptors of one process (and the descriptors by kind,
    :func:`fd_kind`), from /proc; None when it is gone."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        kinds: dict[str, int] = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                kind = fd_kind(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:  # closed meanwhile
                continue
            kinds[kind] = kinds.get(kind, 0) + 1
    except (OSError, ValueError):
        return None
    return {
        "rss_mb": round(int(fields.get("VmRSS", "0 kB").split()[0]) / 1024, 1),
        "threads": int(fields["Threads"]),
        "fds": sum(kinds.values()),
        "fd_kinds": dict(sorted(kinds.items())),
    }


class World:
    """Label Studio, the image host, the backend (gunicorn, ``workers`` workers) and the project."""

    def __init__(self, root: Path, args):
        self.root, self.args = Path(root), args
        self.images = FaultyImages()
        self.disk = SmallDisk(self.root / "model-dir", args.disk_mb)
        self.ls = LabelStudio(self.root / "label-studio")
        self.backend: BackendProcess | None = None
        self.replica: BackendProcess | None = None
        self.project = 0
        self.tokens = [f"{i + 1:02d}" * 20 for i in range(args.annotators)]
        self.index_of: dict[int, int] = {}  # task id -> image index
        self.added: list[dict] = []  # tasks imported during the run
        self.labels = LABELS

    @property
    def model_dir(self) -> Path:
        return self.disk.path

    def backend_env(self) -> dict:
        env = {
            "LABEL_STUDIO_URL": self.ls.url,
            "LABEL_STUDIO_API_KEY": ADMIN_TOKEN,
            "MODEL_DIR": str(self.model_dir),
            "WORKERS": str(self.args.workers),
            "STRATEGY": "margin",
            "LOG_LEVEL": "INFO",
            **dict(kv.split("=", 1) for kv in self.args.env),
        }
        if self.args.backbone != "default":
            env["BACKBONE"] = self.args.backbone
        return env

    def new_backend(self, folder: str, port: int | None = None) -> BackendProcess:
        backend = BackendProcess(self.root / folder, self.backend_env(), port=port)
        if self.args.backbone == "default":  # the backend's own default backbone and weights
            backend.env.pop("BACKBONE", None)
            backend.env.pop("WEIGHTS", None)
        return backend

    def start(self) -> None:
        self.ls.start()
        subprocess.run(
            [str(LS_VENV / "bin" / "python"), "-c", _MAKE_USERS, *self.tokens],
            cwd=self.ls.data_dir,
            env=self.ls.env(),
            check=True,
            capture_output=True,
        )
        self.project = self.ls.create_project("soak", LABELS)
        self.index_of = dict(import_tasks(self.ls, self.project, self.images, self.args.tasks))
        self.backend = self.new_backend("backend").start(timeout=300)
        v0 = self.ls.connect_backend(self.project, self.backend.url)["model_version"]
        wait_for(lambda: self.project_version() == v0, 900, "version 0 in Label Studio", interval=1)

    def add_tasks(self, n: int) -> None:
        """``n`` more tasks of the image host (the task's ``index`` gives its true label)."""
        start = max(self.index_of.values(), default=-1) + 1 + len(self.added)
        batch = [{"image": f"{self.images.url}/img/{i}.png", "index": i} for i in range(start, start + n)]
        self.ls.api("POST", f"/api/projects/{self.project}/import", json=batch, timeout=120)
        self.added += batch

    def truth(self, task: dict) -> str:
        return str(self.images.label(int(task["data"]["index"])))

    def project_version(self) -> str | None:
        r = self.ls.session.get(f"{self.ls.url}/api/projects/{self.project}", timeout=10)
        return r.json().get("model_version") if r.ok else None

    def webhook_headers(self) -> dict:
        return wait_for(lambda: self.ls.webhook_headers(self.project, self.backend.url), 120, "the secured webhook")

    def backend_pids(self) -> list[int]:
        """Every backend process: the gunicorn master(s) and their workers, the replica's too."""
        out = []
        for b in (self.backend, self.replica):
            if b is not None and b.process is not None and b.process.poll() is None:
                out += [b.process.pid, *child_pids(b.process.pid)]
        return out

    def worker_pids(self) -> list[int]:
        return child_pids(self.backend.process.pid)

    def healthy(self, url: str | None = None) -> bool:
        try:
            return requests.get(f"{url or self.backend.url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    def kill_backend(self) -> None:
        """``kill -9`` of the backend's whole process group."""
        try:
            os.killpg(self.backend.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.backend.process.wait(timeout=30)

    def close(self) -> None:
        for b in (self.replica, self.backend):
            if b is not None:
                b.stop()
        self.ls.stop()
        self.images.mode = "ok"
        self.images.close()
        self.disk.close()
