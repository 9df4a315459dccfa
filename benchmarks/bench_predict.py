"""Benchmark: /predict throughput (HTTP, image download + decode, preprocessing, scoring) divided
by the bare model forward pass on the same decoded images, measured side by side in one run.

    .venv/bin/python -m benchmarks.bench_predict [--backbone resnet18] [--images 256] [--size 64]

The backend runs as a real gunicorn server (``python -m ml_backend``); images are served over HTTP
by a local server; every repetition uses fresh URLs, so the image cache never hides a download.
The ratio is printed last.
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import tempfile
import threading
import time
from io import BytesIO
from pathlib import Path

import requests
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import load_backbone
from ml_backend.demo.sample_data import digit_pngs
from ml_backend.demo.servers import BackendProcess, classification_config
from strategies import Need


def serve(files: dict[str, bytes]):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            data = files.get(self.path.split("?")[0])
            self.send_response(200 if data else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--strategy", default="margin")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    digits = digit_pngs(args.images, size=args.size)
    files = {f"/img/{i}.png": data for i, (_, data, _) in enumerate(digits)}
    server = serve(files)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    labels = [str(i) for i in range(10)]
    config = classification_config(labels)

    # The bare forward pass: same model, same batch size, images already decoded and preprocessed.
    model = AdaptedModel(load_backbone(args.backbone, "none"), labels, torch.device("cpu"))
    tensors = [model.preprocess(Image.open(BytesIO(data)).convert("RGB")) for _, data, _ in digits]

    def forward_once() -> float:
        started = time.perf_counter()
        for s in range(0, len(tensors), args.batch_size):
            model.forward(torch.stack(tensors[s : s + args.batch_size]), {Need.PROBS})
        return len(tensors) / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "BACKBONE": args.backbone,
            "WEIGHTS": "none",
            "STRATEGY": args.strategy,
            "DEVICE": "cpu",
            "BATCH_SIZE": str(args.batch_size),
            "LOG_LEVEL": "WARNING",
        }
        with BackendProcess(Path(tmp), env) as backend:

            def predict_once(tag: str) -> float:
                tasks = [{"id": i, "data": {"image": f"{url}/img/{i}.png?r={tag}"}} for i in range(args.images)]
                started = time.perf_counter()
                r = requests.post(
                    f"{backend.url}/predict", json={"tasks": tasks, "project": "1", "label_config": config}, timeout=600
                )
                elapsed = time.perf_counter() - started
                r.raise_for_status()
                results = r.json()["results"]
                assert len(results) == args.images and all(x["result"] for x in results), "some images failed"
                return args.images / elapsed

            predict_once("warmup")
            forward_once()
            predict_tps, forward_tps = [], []
            for k in range(args.repeats):  # interleaved, so both see the same machine conditions
                predict_tps.append(predict_once(f"rep{k}"))
                forward_tps.append(forward_once())
    server.shutdown()

    p, f = statistics.median(predict_tps), statistics.median(forward_tps)
    print(
        f"backbone={args.backbone} strategy={args.strategy} images={args.images} size={args.size}px "
        f"input={model.preprocess.crop}px batch={args.batch_size} "
        f"torch_threads={torch.get_num_threads()} cpus={os.cpu_count()}"
    )
    print(
        f"/predict over HTTP (download+decode+preprocess+forward+score): {p:8.1f} images/s  "
        f"(runs: {', '.join(f'{x:.1f}' for x in predict_tps)})"
    )
    print(
        f"bare forward pass on decoded images:                          {f:8.1f} images/s  "
        f"(runs: {', '.join(f'{x:.1f}' for x in forward_tps)})"
    )
    print(f"ratio /predict / forward = {p / f:.2f}")


if __name__ == "__main__":
    main()
