"""Benchmark: what an annotator waits for in a big project, from the label that completes a round to
Label Studio's queue serving the new version.

    .venv/bin/python -m benchmarks.bench_scale [--tasks 1000,10000] [--db sqlite|postgres] [--labels 10]
                                               [--backbone smallcnn] [--env KEY=VALUE ...] [--out FILE.json]

A real Label Studio 1.23.2 (on SQLite, or on a PostgreSQL server this script starts as the
``postgres`` user on 127.0.0.1 and stops afterwards), a local HTTP server of generated images, and
the backend as a real gunicorn process. Per N: N tasks are imported; the backend is connected (the
first connect: cold scoring of every task and publishing; timed until Label Studio's project
follows version 0); then ``--labels`` annotations complete a round, timed from the last one until
the project follows the new version, split into the debounce (TRAIN_DEBOUNCE_S), reading labels
from Label Studio, training, re-scoring, importing the predictions, the project switch and pruning
older versions. Also: the backend's RSS, MODEL_DIR on disk and Label Studio's database growth (and
prediction count) per round. Figures go to docs/benchmarks.md; nothing here is a test.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from benchmarks.parts.meter import rss_mb
from ml_backend.demo.sample_data import digit_pngs
from ml_backend.demo.servers import ADMIN_TOKEN, BackendProcess, LabelStudio, free_port, wait_for

LABELS = [str(i) for i in range(10)]


class ImageServer:
    """``/img/<i>.png``: generated digits (48 distinct images, cycled) for any number of tasks."""

    def __init__(self):
        images = digit_pngs(48, size=64)

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                try:
                    i = int(self.path.rsplit("/", 1)[-1].split(".")[0])
                except ValueError:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = images[i % len(images)][1]
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.labels = {i: images[i % len(images)][2] for i in range(len(images))}
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def label(self, i: int) -> int:
        return self.labels[i % len(self.labels)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Postgres:
    """A throw-away PostgreSQL server run as the ``postgres`` user (Debian's packages)."""

    def __init__(self, root: Path):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        self.bin, self.dir, self.port = bins[-1], root / "pgdata", free_port()
        self.user = "postgres"

    def _run(self, *args, check=True):
        cmd = [str(a) for a in args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def start(self) -> "Postgres":
        self.dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, self.user, self.user)
            os.chmod(self.dir.parent, 0o755)
        self._run(self.bin / "initdb", "-D", self.dir, "-U", "postgres", "--auth=trust")
        self._run(
            self.bin / "pg_ctl",
            "-D",
            self.dir,
            "-o",
            f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1",
            "-l",
            self.dir / "server.log",
            "-w",
            "start",
        )
        self._run(self.bin / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "labelstudio")
        return self

    def env(self) -> dict:
        return {
            "DJANGO_DB": "default",
            "POSTGRE_NAME": "labelstudio",
            "POSTGRE_USER": "postgres",
            "POSTGRE_PASSWORD": "",
            "POSTGRE_HOST": "127.0.0.1",
            "POSTGRE_PORT": str(self.port),
        }

    def size(self) -> int:
        out = self._run(
            self.bin / "psql",
            "-h",
            "127.0.0.1",
            "-p",
            self.port,
            "-U",
            "postgres",
            "-d",
            "labelstudio",
            "-tAc",
            "SELECT pg_database_size('labelstudio')",
        )
        return int(out.stdout.strip())

    def stop(self):
        self._run(self.bin / "pg_ctl", "-D", self.dir, "-m", "fast", "-w", "stop", check=False)


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def db_bytes(ls: LabelStudio, pg: Postgres | None) -> int:
    if pg is not None:
        return pg.size()
    return sum(p.stat().st_size for p in ls.data_dir.glob("label_studio.sqlite3*"))


def project_state(ls, project):
    p = ls.api("GET", f"/api/projects/{project}")
    return p["model_version"], p.get("total_predictions_number")


def import_tasks(ls, project, images, n: int, chunk: int = 2000, url=None) -> list:
    """N tasks, one image URL each (``url(i)``; default: ``images``' PNG i); returns [(task id, index)]."""
    url = url or (lambda i: f"{images.url}/img/{i}.png")
    for start in range(0, n, chunk):
        batch = [{"image": url(i), "index": i} for i in range(start, min(n, start + chunk))]
        ls.api("POST", f"/api/projects/{project}/import", json=batch, timeout=900)
    ids = []
    page = 1
    while True:
        r = ls.session.get(
            f"{ls.url}/api/tasks",
            params={"project": project, "page": page, "page_size": 1000, "fields": "task_only"},
            timeout=600,
        )
        if r.status_code == 404:
            break
        r.raise_for_status()
        data = r.json()
        batch = data["tasks"] if isinstance(data, dict) else data
        if not batch:
            break
        ids += [(t["id"], t["data"]["index"]) for t in batch]
        page += 1
    return ids


def pairs(items: list[str]) -> dict:
    """``KEY=VALUE`` arguments as an environment."""
    return dict(kv.split("=", 1) for kv in items)


def one_size(n: int, args, root: Path, images: ImageServer) -> dict:
    pg = Postgres(root / f"pg-{n}").start() if args.db == "postgres" else None
    ls = LabelStudio(root / f"ls-{n}", extra_env={**(pg.env() if pg else {}), **pairs(args.ls_env)})
    backend = None
    try:
        ls.start()
        project = ls.create_project(f"scale {n}", LABELS)
        t = time.perf_counter()
        tasks = import_tasks(ls, project, images, n)
        import_s = time.perf_counter() - t
        env = {
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ADMIN_TOKEN,
            "BACKBONE": args.backbone,
            "STRATEGY": "margin",
            "TRAIN_DEBOUNCE_S": str(args.debounce),
            "TRAIN_STEPS": "40",
            "LOG_LEVEL": "WARNING",
            **pairs(args.env),
        }
        backend = BackendProcess(root / f"backend-{n}", env).start()
        db0 = db_bytes(ls, pg)
        t = time.perf_counter()
        v0 = ls.connect_backend(project, backend.url)["model_version"]
        wait_for(lambda: project_state(ls, project)[0] == v0, args.timeout, "version 0 in Label Studio")
        connect_s = time.perf_counter() - t
        status = lambda: requests.get(f"{backend.url}/status", timeout=30).json()["projects"][str(project)]  # noqa: E731
        first = status()
        rows = []
        db_before, preds_before = db_bytes(ls, pg), project_state(ls, project)[1]
        for r in range(1, args.rounds + 1):
            if not args.keep_pace:
                wait_for(lambda: status()["state"] == "idle", args.timeout, "idle")
            batch = tasks[(r - 1) * args.labels : r * args.labels]
            for task_id, index in batch:
                ls.api(
                    "POST",
                    f"/api/tasks/{task_id}/annotations",
                    json={
                        "result": [
                            {
                                "from_name": "label",
                                "to_name": "image",
                                "type": "choices",
                                "value": {"choices": [str(images.label(index))]},
                            }
                        ]
                    },
                )
            t = time.perf_counter()
            version = wait_for(
                lambda: f"-t{r}-" in (v := project_state(ls, project)[0]) and v,
                args.timeout,
                f"round {r} in Label Studio",
            )
            wall = time.perf_counter() - t
            trained = version.removesuffix("-first")  # a big pool's round is served from its candidates first
            if args.keep_pace:  # the next labels come at once: the rest of this publish gives way to them
                st = wait_for(
                    lambda: (
                        (s := status())["queue_version"] == trained
                        and (s.get("last_round") or {}).get("version") == trained
                        and "switch_seconds" in ((s.get("publish_progress") or {}).get("timings") or {})
                        and s
                    ),
                    args.timeout,
                    "the backend's record of the round",
                )
                st["last_round"]["publish"] = (st.get("publish_progress") or {}).get("timings") or {}
                settled = None
            else:
                st = wait_for(
                    lambda: (
                        (s := status())["published_version"] == trained
                        and (s.get("last_round") or {}).get("publish")
                        and s
                    ),
                    args.timeout,
                    "the backend's record (the rest of the publish and the pruning)",
                )
                settled = round(time.perf_counter() - t, 2)
            last = st["last_round"]
            db_after, preds_after = db_bytes(ls, pg), project_state(ls, project)[1]
            rows.append(
                {
                    "round": r,
                    "label_to_queue_s": round(wall, 2),
                    "until_all_published_s": settled,
                    "without_debounce_s": round(wall - args.debounce, 2),
                    "read_s": last.get("read_seconds"),
                    "train_s": last.get("train_seconds"),
                    "served_first": version,  # <version>-first when the round's candidates were served first
                    "head_queue_s": (last.get("head_queue") or {}).get("seconds"),  # ROUND_HEAD_FIRST's round
                    **{k.replace("_seconds", "_s"): v for k, v in (last.get("publish") or {}).items()},
                    "db_growth_mb": round((db_after - db_before) / 2**20, 2),
                    "predictions": preds_after,
                    "predictions_before": preds_before,
                }
            )
            db_before, preds_before = db_after, preds_after
        return {
            "tasks": n,
            "db": args.db,
            "backbone": args.backbone,
            "import_tasks_s": round(import_s, 1),
            "first_connect_s": round(connect_s, 2),
            "first_publish": (first.get("publish_progress") or {}).get("timings"),
            "db_growth_connect_mb": round((db_bytes(ls, pg) - db0) / 2**20, 2) if not rows else None,
            "rounds": rows,
            "backend_rss_mb": round(rss_mb(backend.process.pid), 1),
            "model_dir_mb": round(du_mb(backend.workdir / "models"), 1),
        }
    finally:
        if backend is not None:
            backend.stop()
        ls.stop()
        if pg is not None:
            pg.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="1000,10000", help="comma-separated project sizes (default 1000,10000)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--labels", type=int, default=10, help="annotations per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--debounce", type=float, default=2.0, help="TRAIN_DEBOUNCE_S")
    p.add_argument("--backbone", default="smallcnn")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--env", nargs="*", default=[], help="backend settings KEY=VALUE")
    p.add_argument(
        "--ls-env", nargs="*", default=[], help="Label Studio's environment KEY=VALUE (e.g. its feature flags)"
    )
    p.add_argument(
        "--keep-pace",
        action="store_true",
        help="annotate the next round as soon as the project follows the last version (the rest of its "
        "predictions still importing), as busy annotators do; 'all published' is then not waited for",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    images = ImageServer()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            root = Path(tmp)
            os.chmod(root, 0o755)
            for n in (int(x) for x in args.tasks.split(",")):
                print(f"[bench_scale] {n} tasks on {args.db} ...", file=sys.stderr, flush=True)
                results.append(one_size(n, args, root, images))
                print(json.dumps(results[-1]), flush=True)
    finally:
        images.close()
    print(
        "\n| tasks | db | first connect s | round | label→queue s (without debounce) | read | train | score "
        "| import first | switch | import rest | prune | all published s | DB growth MB | predictions in LS "
        "| backend RSS MB | MODEL_DIR MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        for row in res["rounds"]:
            print(
                f"| {res['tasks']} | {res['db']} | {res['first_connect_s']} | {row['round']} | "
                f"{row['label_to_queue_s']} ({row['without_debounce_s']}) | {row.get('read_s')} | "
                f"{row.get('train_s')} | {row.get('score_s')} | {row.get('import_s')} | {row.get('switch_s')} | "
                f"{row.get('import_rest_s', 0)} | {row.get('prune_s')} | {row['until_all_published_s']} | "
                f"{row['db_growth_mb']} | {row['predictions']} | {res['backend_rss_mb']} | {res['model_dir_mb']} |"
            )
    if args.out:
        args.out.write_text(
            json.dumps({"argv": sys.argv[1:], "host": socket.gethostname(), "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
