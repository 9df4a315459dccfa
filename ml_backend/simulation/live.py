"""Live mode of the simulation: the same loop through a real Label Studio and the real backend.

Per strategy and seed: a fresh backend process (its own MODEL_DIR) and a fresh project holding the
pool as uploaded PNGs. The oracle labels the seed set, then, round after round, annotates the next
``batch`` tasks in exactly the order Label Studio's queue serves them (``/api/projects/{id}/next``),
while the backend trains and publishes in the background (TRAIN_MIN_NEW_LABELS = batch, so one
round per batch). After every published version the test set is scored through the backend's
``/predict``. Accuracy comes from the predicted labels; ``auc`` is null (the protocol returns no
probabilities); ``score_seconds`` / ``train_seconds`` are the backend's own figures from ``/status``.

Differences from the offline loop, stated: images go through the backend's own preprocessing (for
smallcnn, a resize to 32 px); the backend's round counter t is 1 after the seed set is trained, so
ADMA's first query uses t = 1 (offline: t = 0).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

from ml_backend.simulation.config import SimConfig
from ml_backend.simulation.loop import initial_labels, run_name, split_pool
from ml_backend.simulation.pretrain import dataset_of


def png(x: torch.Tensor) -> bytes:
    """A (3, H, W) tensor in [-1, 1] as PNG bytes."""
    arr = ((x.clamp(-1, 1) * 0.5 + 0.5) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _annotate(ls, task: int, label: str) -> None:
    ls.api(
        "POST",
        f"/api/tasks/{task}/annotations",
        json={"result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]},
    )


def _backend_env(cfg: SimConfig, spec: str, seed: int, ls) -> dict:
    return {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.personal_access_token(),
        "STRATEGY": spec,
        "SEED": str(seed),
        "BACKBONE": cfg.backbone,
        "WEIGHTS": cfg.m0,
        "DEVICE": cfg.device,
        "TRAIN_STEPS": str(cfg.steps),
        "TRAIN_LR": str(cfg.lr),
        "TRAIN_DEBOUNCE_S": "1",
        "TRAIN_MIN_NEW_LABELS": str(min(cfg.batch, cfg.initial)),
        "REVIEW_TOP": "0",
        "LOG_LEVEL": "WARNING",
        "QUEUE_DIVERSITY": cfg.queue,
        "QUEUE_DIVERSITY_TOP": str(cfg.queue_diversity_top),
    }


class _Session:
    """One project of the live loop: its backend, its Label Studio project and the oracle."""

    def __init__(self, ls, backend, project: int, x, y, classes, test):
        self.ls, self.backend, self.project, self.y, self.classes = ls, backend, project, y, classes
        self.test = test
        self.test_tasks = [
            {"data": {"image": "data:image/png;base64," + base64.b64encode(png(x[int(i)])).decode()}} for i in test
        ]
        self.labeled: list[int] = []

    def status(self) -> dict:
        r = requests.get(f"{self.backend.url}/status", timeout=30).json()
        return r["projects"].get(str(self.project), {})

    def settled(self, previous_round: int) -> dict | None:
        """/status once a round after ``previous_round`` is trained, published and served."""
        st = self.status()
        version = self.ls.api("GET", f"/api/projects/{self.project}")["model_version"]
        ok = (
            st.get("round", 0) > previous_round
            and st.get("state") == "idle"
            and st.get("published_version") == st.get("model_version") == version
        )
        return st if ok else None

    def label(self, task: int, item: int) -> None:
        _annotate(self.ls, task, self.classes[int(self.y[item])])
        self.labeled.append(item)

    def evaluate(self) -> float:
        predicted = []
        for s in range(0, len(self.test_tasks), 64):
            r = requests.post(
                f"{self.backend.url}/predict",
                timeout=300,
                json={"tasks": self.test_tasks[s : s + 64], "project": str(self.project)},
            )
            r.raise_for_status()
            predicted += [
                res["result"][0]["value"]["choices"][0] if res["result"] else None for res in r.json()["results"]
            ]
        truth = [self.classes[int(self.y[int(i)])] for i in self.test]
        return float(np.mean([p == t for p, t in zip(predicted, truth)]))

    def record(self, st: dict) -> dict:
        """One round as results.json holds it; the timings are the backend's own."""
        return {
            "labels": len(self.labeled),
            "accuracy": self.evaluate(),
            "auc": None,
            "classes_discovered": len({int(self.y[i]) for i in self.labeled}),
            "score_seconds": float((st.get("publish_progress") or {}).get("score_seconds") or 0.0),
            "train_seconds": float((st.get("last_round") or {}).get("train_seconds") or 0.0),
        }


def run_live(cfg: SimConfig, spec: str, seed: int, ls, workdir: Path, progress=None) -> dict:
    from ml_backend.demo.servers import BackendProcess, wait_for

    ds = dataset_of(cfg)
    x, y, classes = ds.target.x, ds.target.y, ds.target.classes
    pool, test = split_pool(len(y), seed)
    run_dir = workdir / f"{spec.replace(':', '_').replace('/', '_')}-queue_{cfg.queue}-seed{seed}"
    with BackendProcess(run_dir, _backend_env(cfg, spec, seed, ls)) as backend:
        project = ls.create_project(f"live {spec} seed {seed}", classes)
        ids = []
        for s in range(0, len(pool), 100):  # LS refuses more than 100 files per request
            ids += ls.upload_files(project, [(f"{int(i):06d}.png", png(x[int(i)])) for i in pool[s : s + 100]])
        task_of = {int(i): t for i, t in zip(pool, ids)}
        item_of = {t: i for i, t in task_of.items()}
        ls.connect_backend(project, backend.url)
        run = _Session(ls, backend, project, x, y, classes, test)
        wait_for(
            lambda: run.status().get("published_version") and run.status().get("state") == "idle", 600, "version 0"
        )
        for i in initial_labels(pool, seed, cfg.initial):
            run.label(task_of[i], i)
        st = wait_for(lambda: run.settled(0), 900, "the seed set's round")
        rounds = [run.record(st)]
        for r in range(1, cfg.rounds + 1):
            before = run.status().get("round", 0)
            for _ in range(cfg.batch):  # in exactly the order Label Studio's queue serves them
                resp = ls.session.get(f"{ls.url}/api/projects/{project}/next", timeout=60)
                if resp.status_code == 404:
                    break
                resp.raise_for_status()
                run.label(resp.json()["id"], item_of[resp.json()["id"]])
            st = wait_for(lambda: run.settled(before), 900, f"round {r}")
            rounds.append(run.record(st))
            if progress is not None:
                progress(1)
        info = st.get("strategy_info") or {}
    return {
        "strategy": run_name(spec, cfg),
        "seed": seed,
        "live": True,
        "rounds": rounds,
        **({"strategy_info": info} if info else {}),
    }
