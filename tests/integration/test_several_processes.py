"""Several backend processes on one MODEL_DIR behind a real Label Studio 1.23.2: a burst of
annotations gives one round, kill -9 of the process that trains lets the other take over, and
/status is the same whichever process answers."""

import json
import os
import signal

import pytest
import requests

from ml_backend.demo.servers import BackendProcess, wait_for
from tests.helpers import annotate, digits_project, project_version

pytestmark = pytest.mark.labelstudio


def versions_on_disk(model_dir, project):
    folder = model_dir / "projects" / str(project)
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "meta.json").is_file())


def project_status(url, project):
    return requests.get(f"{url}/status", timeout=10).json()["projects"].get(str(project), {})


def test_two_backends_on_one_model_dir_train_once_and_take_over_after_kill_9(label_studio, digits64, tmp_path):
    ls = label_studio
    models = tmp_path / "models"
    env = {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.personal_access_token(),
        "MODEL_DIR": str(models),
        "TRAIN_DEBOUNCE_S": "1",
        "TRAIN_STEPS": "6000",
        "LEASE_RETRY_S": "0.5",
        "LOG_LEVEL": "INFO",
    }
    with BackendProcess(tmp_path / "a", env) as a, BackendProcess(tmp_path / "b", env) as b:
        project, ids, truth = digits_project(ls, digits64, "two backends", 30)
        v0 = ls.connect_backend(project, a.url, title="a")["model_version"]
        assert ls.connect_backend(project, b.url, title="b")["model_version"] == v0  # B adopts A's project
        wait_for(lambda: project_version(ls, project) == v0, 60, "version 0")
        # both connections have a webhook: every annotation reaches both processes
        for t in ids[:10]:
            annotate(ls, t, truth[t])
        holder = wait_for(
            lambda: (h := project_status(a.url, project).get("trainer")) and h.get("job") == "round" and h,
            60,
            "a process to start the round",
        )
        assert project_status(b.url, project)["trainer"] == holder  # the same answer from the other process
        os.kill(holder["pid"], signal.SIGKILL)  # kill -9 of the trainer, mid-round
        v1 = wait_for(lambda: "-t1-" in (v := project_version(ls, project)) and v, 300, "the round, taken over")
        wait_for(lambda: project_status(a.url, project).get("published_version") == v1, 30, "A to see the publish")
        st_a, st_b = project_status(a.url, project), project_status(b.url, project)
        for st in (st_a, st_b):
            assert (st["model_version"], st["round"], st["labels_used"], st["published_version"]) == (v1, 1, 10, v1)
        assert st_a["training_runs"] == st_b["training_runs"] == 1
        assert st_a["process"] != f"{holder['host']}:{holder['pid']}"  # the round ran in a surviving process
        assert [v for v in versions_on_disk(models, project) if "-t" in v] == [v1]  # one round, no torn version
        meta = json.loads((models / "projects" / str(project) / v1 / "meta.json").read_text())
        assert meta["seq"] == 1 and len(meta["labels_used"]) == 10


def test_two_gunicorn_workers_give_one_round_per_burst_and_one_status(label_studio, digits64, tmp_path):
    ls = label_studio
    env = {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.personal_access_token(),
        "WORKERS": "2",
        "TRAIN_DEBOUNCE_S": "4",
        "TRAIN_STEPS": "300",
        "LEASE_RETRY_S": "0.5",
    }
    with BackendProcess(tmp_path, env) as backend:
        project, ids, truth = digits_project(ls, digits64, "two workers", 30)
        v0 = ls.connect_backend(project, backend.url)["model_version"]
        wait_for(lambda: project_version(ls, project) == v0, 60, "version 0")
        for t in ids[:12]:  # webhooks land on either worker
            annotate(ls, t, truth[t])
        v1 = wait_for(lambda: "-t1-" in (v := project_version(ls, project)) and v, 120, "the round")
        wait_for(
            lambda: all(project_status(backend.url, project).get("state") == "idle" for _ in range(4)),
            60,
            "both workers idle",
        )
        # from either worker: the same answer, once each has looked at MODEL_DIR again (at most every 2 s;
        # under load a worker may answer before that look)
        wait_for(
            lambda: (
                {
                    (s["model_version"], s["round"], s["published_version"], s["training_runs"])
                    for s in (project_status(backend.url, project) for _ in range(8))
                }
                == {(v1, 1, v1, 1)}
            ),
            20,
            "eight answers, all with the round's version",
        )
        assert [v for v in versions_on_disk(tmp_path / "models", project) if "-t" in v] == [v1]
        tasks = [{"id": t["id"], "data": t["data"]} for t in ls.tasks(project) if t["id"] in ids[12:15]]
        for _ in range(4):  # every worker predicts with the round's version
            r = requests.post(f"{backend.url}/predict", json={"tasks": tasks, "project": str(project)}, timeout=60)
            assert {x["model_version"] for x in r.json()["results"]} == {v1}
