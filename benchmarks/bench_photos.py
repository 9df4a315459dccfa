"""Benchmark: a big project of real photos, from connecting the backend to an ordered queue.

    .venv/bin/python -m benchmarks.bench_photos [--tasks 1000,10000,100000] [--db sqlite|postgresql]
                                                [--latency-ms 50] [--device cpu|cuda] [--photos 200]
                                                [--labels 10] [--ray-nodes 2] [--env KEY=VALUE ...]
                                                [--out FILE.json]

A real Label Studio 1.23.2 (SQLite, or a throw-away PostgreSQL as in ``bench_scale``), a local
HTTP server of generated JPEG photos (640×480 to 1600×1200, quality 85: skimage's photographs
cropped, resized, re-lit and given sensor noise; ``--photos`` distinct ones, each task its own URL,
served after ``--latency-ms``), and the backend as a real gunicorn process at its defaults (default
backbone, weights, image size and strategy; only ``--env`` changes them). Per N it reports, side by
side:

* **connect → first ordered queue**: until the project's model version is one of the backend's and
  Label Studio's ``/next`` serves a task with a prediction of that version;
* **connect → every task scored** (``/status``: a full-pool scoring of every task), as tasks/s;
* the backbone's **plain forward pass** on the same device and input size (in-memory tensors, at the
  fastest of several batch sizes, ``benchmarks/parts/forward.py``), before the backend starts and
  again right after the pool is scored: the physical limit, and the ratio to the faster of the two;
* the backend's **peak RSS** (gunicorn master and worker, sampled every second) and its series
  (``rss_series_mb``, every 10 s); the **cores used while the pool was scored**
  (``cores_while_scoring``: the backend's, Label Studio's, this process's with its photo server, and
  the machine's: what shares the CPU with the forward pass);
* **label → queue re-ordered** after one round of ``--labels`` annotations (on a big pool the
  round's preliminary version, ``ROUND_QUEUE_CANDIDATES``; then **label → whole pool's queue**), and
  the frozen-feature cache's **hit rate over that round's full-pool re-scoring** (the second scoring
  of every task).

With ``--ray-nodes N`` the backend scores on a Ray cluster of N nodes started on this machine
(``SCORING_ENGINE=ray``, one actor per node, the CPUs shared out); the peak RSS then counts the
backend's own processes, not Ray's actors.

Prints a table and writes JSON (``--out``). Figures go to docs/benchmarks.md; nothing here is a test.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image, ImageEnhance

from benchmarks.bench_scale import Postgres, db_bytes, import_tasks, pairs
from benchmarks.parts.forward import forward_throughput
from benchmarks.parts.meter import Meter
from benchmarks.parts.provenance import git_state
from benchmarks.parts.ray_nodes import ray_cluster
from ml_backend.core.backbones import default_batch
from ml_backend.demo.servers import ADMIN_TOKEN, BackendProcess, LabelStudio, wait_for

LABELS = ["astronaut", "coffee", "cat", "rocket", "galaxy", "retina", "tissue", "camera"]


def make_photos(n: int, seed: int = 0) -> list[tuple[bytes, int]]:
    """``n`` distinct photo-like JPEGs (bytes, label: the photograph each was cut from)."""
    import skimage.data as data

    bases = [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.hubble_deep_field(),
        data.retina(),
        data.immunohistochemistry(),
        np.stack([data.camera()] * 3, -1),
    ]
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        label = i % len(bases)
        base = Image.fromarray(bases[label])
        width, height = base.size
        share = rng.uniform(0.6, 1.0)
        cw, ch = int(width * share), int(height * share)
        x, y = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
        w = int(rng.choice([800, 1024, 1280, 1600]))
        image = base.crop((x, y, x + cw, y + ch)).resize((w, w * 3 // 4), Image.Resampling.BICUBIC)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
        pixels = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(5, 9), (w * 3 // 4, w, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
        out.append((buffer.getvalue(), label))
    return out


class PhotoServer:
    """``/photo/<i>.jpg`` (any i): photo ``i mod len(photos)``, after ``latency`` seconds; HTTP/1.1."""

    def __init__(self, photos: list[tuple[bytes, int]], latency: float):
        self.photos, self.served = photos, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(handler):  # noqa: N805
                try:
                    i = int(handler.path.rsplit("/", 1)[-1].split(".")[0])
                except ValueError:
                    handler.send_error(404)
                    return
                time.sleep(latency)
                data = photos[i % len(photos)][0]
                handler.send_response(200)
                handler.send_header("Content-Type", "image/jpeg")
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                try:
                    handler.wfile.write(data)
                    self.served += 1
                except OSError:
                    handler.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def label(self, i: int) -> str:
        return LABELS[self.photos[i % len(self.photos)][1]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def import_photo_tasks(ls: LabelStudio, project: int, server: PhotoServer, n: int) -> list:
    """N tasks, one photo URL each; returns [(task id, index)]."""
    return import_tasks(ls, project, server, n, chunk=5000, url=lambda i: f"{server.url}/photo/{i}.jpg")


class Watch:
    """What Label Studio's project and the backend's /status say, for the polling loops."""

    def __init__(self, ls: LabelStudio, project: int, backend: BackendProcess):
        self.ls, self.project, self.backend = ls, project, backend

    def model_version(self) -> str:
        return self.ls.api("GET", f"/api/projects/{self.project}")["model_version"] or ""

    def backend_versions(self) -> set[str]:
        r = requests.get(f"{self.backend.url}/versions", params={"project": self.project}, timeout=30)
        versions = r.json().get("versions") or []
        return {v if isinstance(v, str) else str(v.get("version")) for v in versions}

    def status(self) -> dict:
        return requests.get(f"{self.backend.url}/status", timeout=60).json()

    def project_status(self) -> dict:
        return self.status()["projects"].get(str(self.project)) or {}

    def next_serves(self, version: str) -> bool:
        """Label Studio's /next serves a task that has a prediction of ``version``."""
        try:  # Label Studio busy with a round's imports can take over a minute to answer: not yet
            r = self.ls.session.get(f"{self.ls.url}/api/projects/{self.project}/next", timeout=60)
        except requests.Timeout:
            return False
        if r.status_code != 200:
            return False
        task = r.json()
        predictions = task.get("predictions")
        if predictions is None:
            predictions = self.ls.api("GET", "/api/predictions", params={"task": task["id"]})
        return any(p.get("model_version") == version for p in predictions)

    def ordered(self) -> str | None:
        """The project's version when its queue follows one of the backend's versions, else None."""
        version = self.model_version()
        trained = version.removesuffix("-first")  # a big project's preliminary version (FIRST_QUEUE_SAMPLE)
        if version and trained in self.backend_versions() and self.next_serves(version):
            return version
        return None


def all_scored(p: dict, n: int) -> bool:
    progress = p.get("publish_progress") or {}
    full = progress.get("total", 0) >= 0.99 * n and progress.get("scored", 0) >= progress.get("total", 1)
    return full or p.get("scored_pool_size", 0) >= 0.99 * n


def connect(watch: Watch, n: int, timeout: float, until: str = "round", meter: Meter | None = None) -> dict:
    """Connect the backend; time the first ordered queue and every task scored (``until``
    ``first-queue``: only the first queue); ``meter`` marks both ends of the scoring."""
    started = time.perf_counter()
    if meter is not None:
        meter.mark("connected")
    watch.ls.connect_backend(watch.project, watch.backend.url)
    first_queue = all_tasks = None
    version = None
    while time.perf_counter() - started < timeout:
        now = time.perf_counter() - started
        if first_queue is None and (version := watch.ordered()):
            first_queue = round(now, 1)
        if all_tasks is None and all_scored(watch.project_status(), n):
            all_tasks = round(now, 1)
            if meter is not None:
                meter.mark("all scored")
        if first_queue is not None and (all_tasks is not None or until == "first-queue"):
            break
        time.sleep(0.5)
    if until == "first-queue":
        return {"first_queue_s": first_queue, "first_queue_version": version, "all_scored_s": None}
    wait_for(lambda: watch.project_status().get("state") == "idle", timeout, "the first publish to end")
    return {
        "first_queue_s": first_queue,
        "first_queue_version": version,
        "all_scored_s": all_tasks,
        "all_published_s": round(time.perf_counter() - started, 1),
    }


def one_round(watch: Watch, server: PhotoServer, tasks: list, labels: int, timeout: float) -> dict:
    """Annotate ``labels`` tasks; time label → queue re-ordered; the cache's hits over the re-scoring."""
    before = watch.status()["feature_cache"]
    for task_id, index in tasks[:labels]:
        choice = {"choices": [server.label(index)]}
        result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": choice}]
        watch.ls.api("POST", f"/api/tasks/{task_id}/annotations", json={"result": result})
    started, head_s = time.perf_counter(), None
    head = wait_for(lambda: ((v := watch.model_version()).endswith("-head") or "-t1-" in v) and v, timeout, "round 1")
    if head.endswith("-head"):  # the head-first queue (ROUND_HEAD_FIRST), unless the round overtook it
        wait_for(lambda: watch.next_serves(head) or "-t1-" in watch.model_version(), timeout, "the head queue")
        head_s = round(time.perf_counter() - started, 2) if "-t1-" not in watch.model_version() else None
    version = wait_for(lambda: "-t1-" in (v := watch.model_version()) and v, timeout, "round 1 in Label Studio")
    wait_for(lambda: watch.next_serves(version), timeout, "/next serving round 1's predictions")
    queue_s = time.perf_counter() - started  # a big pool: its preliminary version (ROUND_QUEUE_CANDIDATES)
    full = version.removesuffix("-first")
    wait_for(lambda: watch.model_version() == full, timeout, "round 1's whole pool in Label Studio")
    wait_for(lambda: watch.next_serves(full), timeout, "/next serving round 1's whole pool")
    full_s = time.perf_counter() - started
    p = wait_for(lambda: (p := watch.project_status()).get("last_round") and p, timeout, "the round's record")
    after = watch.status()["feature_cache"]
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    return {
        "label_to_head_queue_s": head_s,  # the served model's head refit on the labels, before the fine-tuning
        "label_to_queue_s": round(queue_s, 2),
        "label_to_whole_pool_queue_s": round(full_s, 2),
        "round_version": version,
        "last_round": p.get("last_round"),
        "rescoring_lookups": hits + misses,
        "rescoring_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "feature_cache": after,
    }


def one_size(n: int, args, root: Path, server: PhotoServer, forward: dict) -> dict:
    pg = Postgres(root / f"pg-{n}").start() if args.db == "postgresql" else None
    ls = LabelStudio(root / f"ls-{n}", extra_env={**(pg.env() if pg else {}), **pairs(args.ls_env)})
    backend = meter = None
    try:
        ls.start()
        project = ls.create_project(f"photos {n}", LABELS)
        t = time.perf_counter()
        tasks = import_photo_tasks(ls, project, server, n)
        import_s = time.perf_counter() - t
        env = {
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ADMIN_TOKEN,
            "LOG_LEVEL": "WARNING",
            "DEVICE": args.device,
            "TRAIN_DEBOUNCE_S": str(args.debounce),
            "BACKBONE": "efficientnet_lite0",  # the defaults (BackendProcess would set smallcnn)
            "WEIGHTS": "DEFAULT",
            **args.ray_env,
            **pairs(args.env),
        }
        backend = BackendProcess(root / f"backend-{n}", env).start(timeout=180)
        trees = {"backend": backend.process.pid, "label_studio": ls.process.pid}
        meter = Meter(backend.process.pid, trees)
        watch = Watch(ls, project, backend)
        served_before = server.served
        first = connect(watch, n, args.timeout, args.until, meter)
        downloads = server.served - served_before
        # the plain forward pass again, right after the scoring: a shared VM's speed can drift by tens of per cent
        scored = first["all_scored_s"] is not None
        again = forward_throughput(args.device, forward["best_batch"], server.photos[:20], batches=()) if scored else {}
        limit = max(forward["images_per_s"], again.get("images_per_s", 0))
        rnd = one_round(watch, server, tasks, args.labels, args.timeout) if args.until == "round" else {}
        rate = n / first["all_scored_s"] if first["all_scored_s"] else None
        return {
            "tasks": n,
            "db": args.db,
            "device": args.device,
            "latency_ms": args.latency_ms,
            "engine": f"ray, {args.ray_nodes} nodes" if args.ray_nodes else "local",
            "import_tasks_s": round(import_s, 1),
            **first,
            "photos_downloaded": downloads,
            "scored_tasks_per_s": round(rate, 1) if rate else None,
            "forward_images_per_s": forward["images_per_s"],
            "forward_images_per_s_after": again.get("images_per_s"),  # at the batch that was fastest before
            "ratio_to_forward": round(rate / limit, 2) if rate else None,  # against the faster of the two
            "cpu_ceiling": forward["cpu_ceiling"],  # the most a CPU-only machine allows (forward_throughput)
            **rnd,
            "backend_peak_rss_mb": meter.stop(),
            "rss_series_mb": meter.series,  # (seconds since the backend started, MB) every 10 s
            "cores_while_scoring": (
                meter.cpu_between("connected", "all scored") if "all scored" in meter.marks else None
            ),
            "db_mb": round(db_bytes(ls, pg) / 2**20, 1),
        }
    finally:
        if meter is not None:
            meter.stop()
        if backend is not None:
            backend.stop()
        ls.stop()
        if pg is not None:
            pg.stop()


def table(results: list[dict]) -> str:
    rows = [
        "| tasks | db | device | engine | latency ms | connect → first ordered queue s | connect → all scored s "
        "| scored/s "
        "| plain forward img/s | ratio | label → head queue s | label → queue s (train s) "
        "| label → whole pool's queue s | re-scoring cache hits | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        hit = r.get("rescoring_hit_rate")
        rows.append(
            f"| {r['tasks']:,} | {r['db']} | {r['device']} | {r.get('engine', 'local')} | {r['latency_ms']} | "
            f"{r['first_queue_s']} | "
            f"{r['all_scored_s']} | {r['scored_tasks_per_s']} | {r['forward_images_per_s']} | "
            f"{r['ratio_to_forward']} | {r.get('label_to_head_queue_s') or '—'} | "
            f"{r.get('label_to_queue_s', '—')} ({(r.get('last_round') or {}).get('train_seconds')}) | "
            f"{r.get('label_to_whole_pool_queue_s', '—')} | "
            f"{'—' if hit is None else f'{100 * hit:.1f} %'} | {r['backend_peak_rss_mb']} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="1000", help="comma-separated project sizes, e.g. 1000,10000,100000")
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--latency-ms", type=float, default=50.0, help="the photo server's delay before each answer")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--photos", type=int, default=200, help="distinct photos generated (reused under new URLs)")
    p.add_argument("--labels", type=int, default=10, help="annotations in the round")
    p.add_argument("--debounce", type=float, default=2.0, help="TRAIN_DEBOUNCE_S")
    p.add_argument("--timeout", type=float, default=7200)
    p.add_argument("--env", nargs="*", default=[], help="backend settings KEY=VALUE (default: none changed)")
    p.add_argument("--ls-env", nargs="*", default=[], help="Label Studio's environment KEY=VALUE")
    p.add_argument(
        "--until",
        choices=["first-queue", "scored", "round"],
        default="round",
        help="first-queue: stop once the first ordered queue is served (for projects whose full scoring takes "
        "hours on a CPU); scored: also every task scored; round: and then one round (default)",
    )
    p.add_argument(
        "--ray-nodes",
        type=int,
        default=0,
        help="score with SCORING_ENGINE=ray on a cluster of this many nodes started on this machine "
        "(benchmarks/parts/ray_nodes.py; the CPUs shared out, one actor per node); 0: the local engine",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    print(f"[bench_photos] generating {args.photos} photos ...", file=sys.stderr, flush=True)
    photos = make_photos(args.photos)
    sizes = sorted(len(b) for b, _ in photos)
    print(f"[bench_photos] JPEG sizes {sizes[0] // 1024}–{sizes[-1] // 1024} KB", file=sys.stderr, flush=True)
    batch = int(pairs(args.env).get("BATCH_SIZE", 0)) or default_batch(torch.device(args.device))
    forward = forward_throughput(args.device, batch, photos)
    print(f"[bench_photos] plain forward pass: {forward}", file=sys.stderr, flush=True)
    server = PhotoServer(photos, args.latency_ms / 1000)
    results = []
    try:
        with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp:
            args.ray_env = stack.enter_context(ray_cluster(args.ray_nodes)) if args.ray_nodes else {}
            root = Path(tmp)
            os.chmod(root, 0o755)
            for n in (int(x) for x in args.tasks.split(",")):
                print(f"[bench_photos] {n} tasks on {args.db} ...", file=sys.stderr, flush=True)
                results.append(one_size(n, args, root, server, forward))
                print(json.dumps(results[-1]), flush=True)
    finally:
        server.close()
    print("\n" + table(results))
    if args.out:
        meta = {"argv": sys.argv[1:], "host": socket.gethostname(), "code": git_state(), "forward": forward}
        meta["photo_kb"] = [sizes[0] // 1024, sizes[len(sizes) // 2] // 1024, sizes[-1] // 1024]
        args.out.write_text(json.dumps({**meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
