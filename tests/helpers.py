"""Helpers shared by several test modules (test modules import from here, never from each other)."""

from __future__ import annotations

import base64

import requests
import torch

from ml_backend.demo.servers import classification_config, wait_for
from ml_backend.service.backend import Backend
from ml_backend.service.settings import Settings
from strategies import ScoringInputs

# ---------------------------------------------------------------- a real Label Studio (tests/integration)
LABELS = [str(i) for i in range(10)]
CONFIG = classification_config(LABELS)  # one <Choices> over the ten digits
FAST = {"TRAIN_DEBOUNCE_S": "1", "TRAIN_STEPS": "40", "PUBLISH_RETRIES": "3", "LOG_LEVEL": "INFO"}


def served_in_acquisition_order(served: list[int], acquisition: dict[int, float]) -> bool:
    """True when every task is served no later than any task of lower acquisition value."""
    values = [acquisition[t] for t in served]
    return all(a >= b for a, b in zip(values, values[1:]))


def project_version(ls, project):
    return ls.api("GET", f"/api/projects/{project}")["model_version"]


def status(backend, project):
    return requests.get(f"{backend.url}/status", timeout=10).json()["projects"].get(str(project), {})


def annotate(ls, task, label):
    return ls.api(
        "POST",
        f"/api/tasks/{task}/annotations",
        json={
            "result": [
                {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [str(label)]}}
            ]
        },
    )


def digits_project(ls, digits, title, n):
    project = ls.create_project(title, LABELS)
    ids = ls.upload_files(project, [(name, data) for name, data, _ in digits[:n]])
    return project, ids, {t: digits[i][2] for i, t in enumerate(ids)}


def log_in(browser, ls) -> None:
    """Log the browser in to Label Studio's UI as the admin of ``ls``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ml_backend.demo.servers import ADMIN_EMAIL, ADMIN_PASSWORD

    browser.get(f"{ls.url}/user/login/")
    browser.find_element(By.NAME, "email").send_keys(ADMIN_EMAIL)
    browser.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: "/user/login" not in d.current_url)


def connect_and_wait_for_version_0(ls, backend, project) -> str:
    """Connect the backend to the project and wait until the project is moved to version 0."""
    v0 = ls.connect_backend(project, backend.url)["model_version"]
    wait_for(lambda: project_version(ls, project) == v0, 60, "version 0")
    return v0


def versions_of(ls, project):
    out = {}
    for p in ls.predictions(project):
        out.setdefault(p["model_version"], set()).add(p["task"])
    return out


# ---------------------------------------------------------------- strategy inputs (tests/unit)
def pool_inputs(n, seed=0, c=4, d=8, m=4):
    """A seeded pool of n items with every input a strategy may ask for (float64)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    layer = lambda *shape: torch.randn(n, *shape, generator=g, dtype=torch.float64).relu()  # noqa: E731
    return ScoringInputs(
        n=n,
        keys=[f"task-{i}" for i in range(n)],
        probs=logits.softmax(1),
        logits=logits,
        embeddings=torch.randn(n, d, generator=g, dtype=torch.float64),
        features={"A": layer(3, 2, 2), "B": layer(6)},
        source_probs=torch.randn(n, 5, generator=g, dtype=torch.float64).mul(3).softmax(1),
        source_features={"A": layer(3, 2, 2), "B": layer(6)},
        labeled_embeddings=torch.randn(3, d, generator=g, dtype=torch.float64),
        labeled_probs=torch.randn(3, c, generator=g, dtype=torch.float64).softmax(1),
        view_probs=torch.randn(m, n, c, generator=g, dtype=torch.float64).softmax(2),
        round=1,
    )


def map_inputs(inputs, fn, views):
    """Apply fn to every per-item tensor of inputs (views: along dim 1)."""
    take = lambda t: None if t is None else fn(t)  # noqa: E731
    return ScoringInputs(
        n=inputs.n,
        keys=inputs.keys,
        probs=take(inputs.probs),
        logits=take(inputs.logits),
        embeddings=take(inputs.embeddings),
        features={k: fn(v) for k, v in inputs.features.items()},
        source_probs=take(inputs.source_probs),
        source_features={k: fn(v) for k, v in inputs.source_features.items()},
        labeled_embeddings=inputs.labeled_embeddings,
        labeled_probs=inputs.labeled_probs,
        view_probs=None if inputs.view_probs is None else views(inputs.view_probs),
        round=inputs.round,
    )


def permute_inputs(inputs, perm):
    out = map_inputs(inputs, lambda t: t[perm], lambda v: v[:, perm])
    return ScoringInputs(**{**out.__dict__, "keys": [inputs.keys[i] for i in perm]})


def with_state(inputs: ScoringInputs, idx, state, version, full_pool) -> ScoringInputs:
    """The inputs of the items ``idx`` of a pool, as one request with its own state and version."""
    sub = map_inputs(inputs, lambda t: t[idx], lambda v: v[:, idx])
    return ScoringInputs(
        **{
            **sub.__dict__,
            "n": len(idx),
            "keys": [inputs.keys[i] for i in idx],
            "state": state,
            "model_version": version,
            "full_pool": full_pool,
        }
    )


# ---------------------------------------------------------------- the backend without Label Studio (tests/service)
def make_settings(tmp_path, **env):
    """Settings of a test backend (small CNN, random weights, CPU, margin) on MODEL_DIR=tmp_path."""
    base = {
        "BACKBONE": "smallcnn",
        "WEIGHTS": "none",
        "MODEL_DIR": str(tmp_path),
        "DEVICE": "cpu",
        "STRATEGY": "margin",
    }
    base.update(env)
    return Settings.from_env(base)


def data_uri(png: bytes) -> str:
    """A PNG as a data: URI (an image task that needs no server)."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def tasks_from(digits, start_id=1):
    """(name, PNG, label) triples as Label Studio tasks with data-URI images."""
    return [{"id": start_id + i, "data": {"image": data_uri(png)}} for i, (_, png, _) in enumerate(digits)]


def service_for(tmp_path, **env):
    """The backend facade without HTTP (small CNN, random weights, CPU) on MODEL_DIR=tmp_path."""
    base = {"BACKBONE": "smallcnn", "WEIGHTS": "none", "MODEL_DIR": str(tmp_path), "DEVICE": "cpu"}
    return Backend(Settings.from_env({**base, **env}))


def digit_tasks(digits, n):
    """The first ``n`` digits as Label Studio tasks with data-URI images (ids 1..n)."""
    return [
        {"id": i + 1, "data": {"image": "data:image/png;base64," + base64.b64encode(digits[i][1]).decode()}}
        for i in range(n)
    ]


class FakeClock:
    """The worker's clock, moved by hand (``clock.now += 5``)."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


def drain(worker):
    """Run every job due now; returns them."""
    done = []
    while (job := worker.run_once()) is not None:
        done.append(job)
    return done
