"""The local demo: Label Studio 1.23.2 and this backend on 127.0.0.1, offline.

    bash scripts/demo.sh            (installs what is missing, then runs this module)

Its command line and what it does: ``options.py`` (``bash scripts/demo.sh --help``).
"""

from __future__ import annotations

import fcntl
import json
import signal
import socket
import sys
import time

import requests

from ml_backend.demo.options import parse_args
from ml_backend.demo.sample_data import digit_pngs, fashion_available, fashion_pngs
from ml_backend.demo.servers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ADMIN_TOKEN,
    BackendProcess,
    LabelStudio,
    free_port,
)
from ml_backend.fashion_mnist import FASHION_CLASSES

DATA = {  # what the demo project holds: title, labels, (n, seed) -> [(file name, PNG, label)]
    "fashion-mnist": (
        "Active Adaptation demo: Fashion-MNIST",
        list(FASHION_CLASSES),
        lambda n, seed: fashion_pngs(n, size=112, seed=seed),
    ),
    "digits": (
        "Active Adaptation demo: digits",
        [str(i) for i in range(10)],
        lambda n, seed: digit_pngs(n, size=64, seed=seed),
    ),
}


def port_or_free(port: int, what: str) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            other = free_port()
            print(f"[demo] port {port} is busy; {what} uses port {other} instead", flush=True)
            return other


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def find_project(ls: LabelStudio, title: str) -> int | None:
    page = ls.api("GET", "/api/projects", params={"page_size": 1000, "title": title})
    items = page["results"] if isinstance(page, dict) else page
    for item in items:
        if item.get("title") == title:
            return item["id"]
    return None


def choose_data(requested: str) -> str:
    """``auto``: Fashion-MNIST when it is installed, else the digits (saying how to get the photos)."""
    if requested != "auto":
        if requested == "fashion-mnist" and not fashion_available():
            raise RuntimeError(
                "Fashion-MNIST is not installed: `apt-get install dataset-fashion-mnist` "
                "(or set FASHION_MNIST_DIR), or run with --data digits"
            )
        return requested
    if fashion_available():
        return "fashion-mnist"
    say(
        "Fashion-MNIST is not installed, so the demo labels 8x8 digits; for real photos of clothing: "
        "`apt-get install dataset-fashion-mnist` (bash scripts/setup_env.sh does it as root)"
    )
    return "digits"


IMAGE_PX = 224  # the demo's photos on screen: 28 px Fashion-MNIST at 8x, 8 px digits at 28x, pixels kept sharp


def ensure_project(ls: LabelStudio, images: int, data: str = "digits") -> tuple[int, bool]:
    title, labels, make = DATA[data]
    project = find_project(ls, title)
    if project is not None:
        return project, False
    project = ls.create_project(title, labels, image_px=IMAGE_PX)
    files = [(name, png) for name, png, _ in make(images, 1)]
    for start in range(0, len(files), 90):  # LS accepts at most 100 files per request
        ls.upload_files(project, files[start : start + 90])
    return project, True


def ensure_connected(ls: LabelStudio, project: int, backend_url: str) -> None:
    existing = ls.api("GET", "/api/ml", params={"project": project})
    if existing:
        ml = existing[0]
        if ml["url"] != backend_url:  # the backend came up on another port this time
            ls.api("PATCH", f"/api/ml/{ml['id']}", json={"url": backend_url, "project": project})
            # LS creates the backend's webhook only when the backend is first added: move it too
            for hook in ls.api("GET", "/api/webhooks/", params={"project": project}):
                if hook["url"] == ml["url"].rstrip("/") + "/webhook":
                    ls.api("PATCH", f"/api/webhooks/{hook['id']}", json={"url": backend_url + "/webhook"})
        # LS calls /setup on many reads; one now makes the backend publish if it needs to
        requests.post(
            f"{backend_url}/setup",
            json={"project": str(project), "schema": ls.api("GET", f"/api/projects/{project}")["label_config"]},
            timeout=10,
        )
    else:
        ls.connect_backend(project, backend_url, title="Active Adaptation")


def wait_until_published(ls, backend, project: int, stopping: dict) -> dict | None:
    """The project once Label Studio serves the backend's published version; None if stopped."""
    deadline = time.monotonic() + 600
    while not stopping["flag"]:
        st = requests.get(f"{backend.url}/status", timeout=10).json()["projects"].get(str(project), {})
        current = ls.api("GET", f"/api/projects/{project}")
        if st.get("published_version") and current["model_version"] == st["published_version"]:
            return current
        if time.monotonic() > deadline:
            raise RuntimeError(f"the backend did not publish in time; status: {st}")
        time.sleep(0.5)
    return None


def announce(ls, backend, project: int, current: dict, lock) -> None:
    """Print where to go and how to log in; leave the URL in the lock file for a second demo to show."""
    url = f"{ls.url}/projects/{project}/data"
    info = {
        "url": url,
        "label_studio": ls.url,
        "backend": backend.url,
        "project": project,
        "model_version": current["model_version"],
        "sampling": current["sampling"],
        "pids": [ls.process.pid, backend.process.pid],
        "login": ADMIN_EMAIL,
    }
    lock.seek(0)
    lock.truncate()
    lock.write(url)
    lock.flush()
    print(
        f"""
==============================================================================
 Active Adaptation demo is ready: {url}
 Log in with {ADMIN_EMAIL} / {ADMIN_PASSWORD}
 Click "Label All Tasks": the queue serves the most useful image first
 (queue: {current["sampling"]}, model version {current["model_version"]}).
 Label a few images; after each training round the queue re-orders.
 Dashboard: {backend.url}/      API token (this demo's admin): {ADMIN_TOKEN}
 Backend status: {backend.url}/status      Ctrl-C stops everything.
==============================================================================""",
        flush=True,
    )
    print("DEMO READY " + json.dumps(info), flush=True)


# a real pretrained network, sized for a CPU: 64 px inputs, only the last block and head train
DEMO_WEIGHTS = {"efficientnet_lite0": {"WEIGHTS": "DEFAULT", "IMAGE_SIZE": "64", "FREEZE": "blocks.5"}}


def backend_env(args, ls: LabelStudio) -> dict:
    """The demo backend's settings: the local Label Studio, the chosen backbone and strategy, quick rounds."""
    return {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ADMIN_TOKEN,
        "BACKBONE": args.backbone,
        **DEMO_WEIGHTS.get(args.backbone, {"WEIGHTS": "none"}),
        "STRATEGY": args.strategy,
        "PRELABEL": args.prelabel,
        "TRAIN_DEBOUNCE_S": "2",
        "TRAIN_STEPS": "60",
    }


def main() -> int:
    args = parse_args()

    args.dir.mkdir(parents=True, exist_ok=True)
    lock = open(args.dir / "demo.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        say(f"a demo is already running on {args.dir}: {lock.read().strip() or 'see its terminal'}")
        return 1

    stopping = {"flag": False}

    def stop(signum, _frame):
        stopping["flag"] = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    ls = LabelStudio(args.dir / "label-studio", port=port_or_free(args.port, "Label Studio"))
    backend = None
    try:
        say(f"starting Label Studio on {ls.url} (first start migrates a database: about 40 s)")
        ls.start()
        backend = BackendProcess(args.dir, backend_env(args, ls), port=port_or_free(args.backend_port, "the backend"))
        say(f"starting the backend on {backend.url} (log: {backend.log_path})")
        backend.start()
        data = choose_data(args.data)
        project, created = ensure_project(ls, args.images, data)
        say(("created" if created else "reusing") + f" project {project}: '{DATA[data][0]}'")
        ensure_connected(ls, project, backend.url)
        say("waiting for the backend to score every task and publish its predictions")
        current = wait_until_published(ls, backend, project, stopping)
        if current is None:
            return 0
        announce(ls, backend, project, current, lock)
        while not stopping["flag"]:
            if ls.process.poll() is not None or backend.process.poll() is not None:
                say("a server exited unexpectedly; stopping")
                return 1
            time.sleep(0.5)
        return 0
    except Exception as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        say("stopping")
        if backend is not None:
            backend.stop()
        ls.stop()
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
