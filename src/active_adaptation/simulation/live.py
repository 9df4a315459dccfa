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


def png(x: torch.Tensor) -> bytes:
    """A (3, H, W) tensor in [-1, 1] as PNG bytes."""
    arr = ((x.clamp(-1, 1) * 0.5 + 0.5) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _annotate(ls, task: int, label: str) -> None:
    ls.api("POST", f"/api/tasks/{task}/annotations", json={"result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]})


def run_live(cfg: dict, spec: str, seed: int, ls, workdir: Path, progress=None) -> dict:
    from active_adaptation.demo.servers import BackendProcess, wait_for
    from active_adaptation.simulation.runner import _split, load_dataset, run_name

    ds = load_dataset(cfg["dataset"], cfg.get("source"), cfg["backbone"])
    x, y, classes = ds.target.x, ds.target.y, ds.target.classes
    pool, test = _split(len(y), seed)
    initial = [int(i) for i in np.random.default_rng(seed + 7).permutation(pool)[:cfg["initial"]]]
    env = {
        "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token(), "STRATEGY": spec,
        "SEED": str(seed), "BACKBONE": cfg["backbone"], "WEIGHTS": cfg["m0"], "DEVICE": cfg["device"],
        "TRAIN_STEPS": str(cfg["steps"]), "TRAIN_LR": str(cfg["lr"]), "TRAIN_DEBOUNCE_S": "1",
        "TRAIN_MIN_NEW_LABELS": str(min(cfg["batch"], cfg["initial"])), "REVIEW_TOP": "0", "LOG_LEVEL": "WARNING",
        "QUEUE_DIVERSITY": cfg.get("queue", "off"), "QUEUE_DIVERSITY_TOP": str(cfg.get("queue_diversity_top", 100)),
    }
    run_dir = workdir / f"{spec.replace(':', '_').replace('/', '_')}-queue_{cfg.get('queue', 'off')}-seed{seed}"
    with BackendProcess(run_dir, env) as backend:
        project = ls.create_project(f"live {spec} seed {seed}", classes)
        ids = []
        for s in range(0, len(pool), 100):  # LS refuses more than 100 files per request
            ids += ls.upload_files(project, [(f"{int(i):06d}.png", png(x[int(i)])) for i in pool[s:s + 100]])
        task_of = {int(i): t for i, t in zip(pool, ids)}
        item_of = {t: i for i, t in task_of.items()}
        ls.connect_backend(project, backend.url)

        def status():
            r = requests.get(f"{backend.url}/status", timeout=30).json()
            return r["projects"].get(str(project), {})

        def version():
            return ls.api("GET", f"/api/projects/{project}")["model_version"]

        def settled(previous_round: int):
            st = status()
            ok = (st.get("round", 0) > previous_round and st.get("state") == "idle"
                  and st.get("published_version") == st.get("model_version") == version())
            return st if ok else None

        wait_for(lambda: status().get("published_version") and status().get("state") == "idle", 600, "version 0")
        test_tasks = [{"data": {"image": "data:image/png;base64," + base64.b64encode(png(x[int(i)])).decode()}}
                      for i in test]

        def evaluate() -> float:
            predicted = []
            for s in range(0, len(test_tasks), 64):
                r = requests.post(f"{backend.url}/predict", json={"tasks": test_tasks[s:s + 64], "project": str(project)},
                                  timeout=300)
                r.raise_for_status()
                predicted += [res["result"][0]["value"]["choices"][0] if res["result"] else None for res in r.json()["results"]]
            truth = [classes[int(y[int(i)])] for i in test]
            return float(np.mean([p == t for p, t in zip(predicted, truth)]))

        def record(st: dict) -> dict:
            """One round as results.json holds it; the timings are the backend's own."""
            return {"labels": len(labeled), "accuracy": evaluate(), "auc": None,
                    "classes_discovered": len({int(y[i]) for i in labeled}),
                    "score_seconds": float((st.get("publish_progress") or {}).get("score_seconds") or 0.0),
                    "train_seconds": float((st.get("last_round") or {}).get("train_seconds") or 0.0)}

        labeled = []
        for i in initial:
            _annotate(ls, task_of[i], classes[int(y[i])])
            labeled.append(i)
        st = wait_for(lambda: settled(0), 900, "the seed set's round")
        rounds = [record(st)]
        for r in range(1, cfg["rounds"] + 1):
            before = status().get("round", 0)
            for _ in range(cfg["batch"]):
                resp = ls.session.get(f"{ls.url}/api/projects/{project}/next", timeout=60)
                if resp.status_code == 404:
                    break
                resp.raise_for_status()
                task = resp.json()["id"]
                i = item_of[task]
                _annotate(ls, task, classes[int(y[i])])
                labeled.append(i)
            st = wait_for(lambda: settled(before), 900, f"round {r}")
            rounds.append(record(st))
            if progress is not None:
                progress(1)
        info = st.get("strategy_info") or {}
    return {"strategy": run_name(spec, cfg), "seed": seed, "live": True, "rounds": rounds, **({"strategy_info": info} if info else {})}
