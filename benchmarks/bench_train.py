"""Benchmarks of the learning loop, each measured side by side in one run:

rescore   full-pool re-scoring from the frozen-feature cache vs a full forward pass
          (and vs uncached scoring, which also downloads and decodes every image)
round     one training round (TRAIN_STEPS steps on cached features) on the chosen backbone
publish   publishing 1,000 tasks (score + bulk import + move the project) vs Label Studio's
          own "Retrieve Predictions" path on the same 1,000 images (needs the LS venv)

  .venv/bin/python -m benchmarks.bench_train rescore --backbone resnet18 --images 256
  .venv/bin/python -m benchmarks.bench_train round --backbone resnet18 --labels 100 --steps 100
  .venv/bin/python -m benchmarks.bench_train publish --tasks 1000
"""

from __future__ import annotations

import argparse
import base64
import http.server
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from ml_backend.core.trainer import Example, TrainConfig, fine_tune
from ml_backend.demo.sample_data import digit_pngs
from ml_backend.demo.servers import classification_config
from ml_backend.service.backend import Backend
from ml_backend.service.settings import Settings
from strategies import Need

LABELS = [str(i) for i in range(10)]
CONFIG = classification_config(LABELS)


def serve(files: dict[str, bytes]) -> str:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            data = files.get(self.path.split("?")[0], b"")
            self.send_response(200 if data else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def make_service(tmp: str, backbone: str, **env) -> Backend:
    return Backend(
        Settings.from_env(
            {
                "BACKBONE": backbone,
                "WEIGHTS": "none",
                "MODEL_DIR": tmp,
                "DEVICE": env.pop("device", "auto"),
                "LOG_LEVEL": "WARNING",
                **env,
            }
        )
    )


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_rescore(args) -> None:
    digits = digit_pngs(args.images, size=args.size)
    url = serve({f"/{i}.png": d for i, (_, d, _) in enumerate(digits)})
    with tempfile.TemporaryDirectory() as tmp:
        service = make_service(tmp, args.backbone, device=args.device, FEATURE_CACHE_DTYPE=args.dtype)
        service.setup("1", CONFIG)
        state = service.projects["1"]
        model = service.projects.model(state)
        counter = iter(range(10**9))

        def uncached():  # fresh task ids and URLs: every image is downloaded, decoded and run in full
            k = next(counter)
            tasks = [{"id": 10**6 * (k + 1) + i, "data": {"image": f"{url}/{i}.png?k={k}"}} for i in range(args.images)]
            service.scorer.score(state, tasks, model, state.version)

        pool = [{"id": i, "data": {"image": f"{url}/{i}.png"}} for i in range(args.images)]
        service.scorer.score(state, pool, model, state.version)  # fill the cache
        x = torch.stack([model.preprocess(service.features.loader.load(t["id"], t["data"]["image"])) for t in pool])

        def full_forward():  # the bare full forward pass on already preprocessed images
            for s in range(0, len(x), 32):
                model.forward(x[s : s + 32], {Need.PROBS})

        def cached():
            service.scorer.score(state, pool, model, state.version, reset_pool=True)

        uncached(), full_forward(), cached()  # warm-up
        t_cached = median_time(cached, args.repeats)
        t_full = median_time(full_forward, args.repeats)
        t_uncached = median_time(uncached, args.repeats)
        service.close()
    n = args.images
    print(
        f"backbone={args.backbone} images={n} ({args.size}px) device={service.device} cache dtype={args.dtype} "
        f"torch_threads={torch.get_num_threads()}"
    )
    print(f"re-scoring from the frozen-feature cache:          {n / t_cached:9.1f} images/s")
    print(f"bare full forward pass (preprocessed tensors):     {n / t_full:9.1f} images/s")
    print(f"uncached scoring (download+decode+full forward):   {n / t_uncached:9.1f} images/s")
    print(f"speed-up vs uncached scoring = {t_uncached / t_cached:.2f}x")
    print(f"speed-up vs bare full forward = {t_full / t_cached:.2f}x")


def bench_round(args) -> None:
    digits = digit_pngs(args.labels, size=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        service = make_service(tmp, args.backbone, device=args.device)
        service.setup("1", CONFIG)
        state = service.projects["1"]
        model = service.projects.model(state)
        tasks = [
            {"id": i, "data": {"image": "data:image/png;base64," + base64.b64encode(d).decode()}}
            for i, (_, d, _) in enumerate(digits)
        ]
        started = time.perf_counter()
        trunks = service.features.trunk_activations(state, model, tasks)
        t_features = time.perf_counter() - started
        examples = [Example(str(i), digits[i][2], True, trunk=trunks[i]) for i in range(len(tasks))]
        twin = model.clone()
        metrics = fine_tune(twin, examples, TrainConfig(steps=args.steps, batch_size=32))
        started = time.perf_counter()
        service.projects.save_version(state, twin, 1, {e.key: str(e.label) for e in examples}, metrics)
        t_save = time.perf_counter() - started
        service.close()
    print(
        f"backbone={args.backbone} labels={args.labels} steps={args.steps} batch=32 "
        f"device={metrics['device']} amp={metrics['amp']}"
    )
    print(
        f"trunk features for the labels: {t_features:.2f}s; training: {metrics['seconds']:.2f}s "
        f"({metrics['seconds'] / args.steps * 1000:.1f} ms/step); checkpoint: {t_save:.2f}s"
    )
    print(f"loss {metrics['loss_first']:.3f} -> {metrics['loss_last']:.3f}")
    print(f"round duration (features + training + checkpoint) = {t_features + metrics['seconds'] + t_save:.2f}s")


def bench_publish(args) -> None:
    """Same backend, same project, same tasks, same warm caches: the only difference between the
    two measured paths is how predictions reach Label Studio."""
    import requests

    from ml_backend.demo.servers import ADMIN_TOKEN, BackendProcess, LabelStudio

    digits = digit_pngs(min(args.tasks, 1797), size=args.size)
    digits = (digits * (args.tasks // len(digits) + 1))[: args.tasks]
    files = [(f"{i:05d}_{name}", data) for i, (name, data, _) in enumerate(digits)]

    def wait(predicate, what, timeout=900):
        started = time.perf_counter()
        while not predicate():
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.1)

    with tempfile.TemporaryDirectory() as tmp, LabelStudio(Path(tmp) / "ls") as ls:
        env = {
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ADMIN_TOKEN,
            "BACKBONE": args.backbone,
            "LOG_LEVEL": "WARNING",
            "TRAIN_DEBOUNCE_S": "0.5",
            "TRAIN_STEPS": "20",
        }
        project = ls.create_project("publish benchmark", LABELS)
        ids = []
        for s in range(0, len(files), 90):  # LS accepts at most 100 files per request
            ids += ls.upload_files(project, files[s : s + 90])
        with BackendProcess(Path(tmp) / "backend", env) as backend:

            def st():
                return requests.get(f"{backend.url}/status", timeout=10).json()["projects"].get(str(project), {})

            def version():
                return ls.api("GET", f"/api/projects/{project}")["model_version"]

            started = time.perf_counter()
            v0 = ls.connect_backend(project, backend.url)["model_version"]
            wait(lambda: version() == v0, "version 0")
            t_cold = time.perf_counter() - started
            wait(lambda: st().get("state") == "idle", "the end of the first publish")
            cold = st()["publish_progress"]

            ls.api(
                "POST",
                f"/api/tasks/{ids[0]}/annotations",
                json={
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [str(digits[0][2])]},
                        }
                    ]
                },
            )
            wait(lambda: version() != v0 and st().get("state") == "idle", "round 1")
            v1, warm = version(), st()["publish_progress"]

            # LS's own path, same tasks and caches: remove v1's predictions, then Retrieve Predictions
            ls.api("DELETE", f"/api/projects/{project}/model-versions/", json={"model_version": v1})
            started = time.perf_counter()
            ls.retrieve_predictions(project)
            t_retrieve = time.perf_counter() - started
            n_retrieved = sum(1 for p in ls.predictions(project) if p["model_version"] == v1)
    n = warm["total"]
    print(f"tasks={args.tasks} backbone={args.backbone} images={args.size}px (Label Studio {ls.url}, SQLite, 2 CPUs)")
    print(
        f"cold publish on connect (download {cold['total']} images from LS, score, import, move): {t_cold:6.2f}s "
        f"(scoring {cold['score_seconds']:.2f}s)"
    )
    print(
        f"warm publish after a round (list tasks, score from cache, import {n}, move):   {warm['seconds']:6.2f}s "
        f"({warm['seconds'] / n * 1000:.1f} ms/task; scoring {warm['score_seconds']:.2f}s)"
    )
    print(
        f"LS 'Retrieve Predictions', same {n_retrieved} tasks, same warm caches:          {t_retrieve:6.2f}s "
        f"({t_retrieve / n_retrieved * 1000:.1f} ms/task)"
    )
    print(f"ratio retrieve / publish = {t_retrieve / warm['seconds']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("rescore", help="cached vs uncached full-pool re-scoring")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p = sub.add_parser("round", help="duration of one training round")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p = sub.add_parser("publish", help="publish path vs Label Studio's Retrieve Predictions")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--backbone", default="smallcnn")
    p.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    {"rescore": bench_rescore, "round": bench_round, "publish": bench_publish}[args.command](args)


if __name__ == "__main__":
    main()
