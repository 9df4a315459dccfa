"""Faults and hostile events against a real Label Studio 1.23.2 and the backend as a real gunicorn
process: a killed worker process, forged and replayed webhook events."""

import os
import signal
import subprocess
import time

import pytest
import requests

from ml_backend.demo.servers import ADMIN_TOKEN, BackendProcess, classification_config, wait_for
from ml_backend.service.security import HEADER
from tests.helpers import (
    FAST,
    LABELS,
    annotate,
    connect_and_wait_for_version_0,
    digits_project,
    project_version,
    status,
    versions_of,
)

pytestmark = pytest.mark.labelstudio


def healthy(backend) -> bool:
    """/health answers OK; a request that times out while a new worker boots is a "not yet"."""
    try:
        return requests.get(f"{backend.url}/health", timeout=2).ok
    except requests.RequestException:
        return False


def worker_pids(backend) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(backend.process.pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_a_killed_worker_process_forgets_nothing(label_studio, digits64, tmp_path):
    """What the OOM killer does: the gunicorn master replaces the worker, which restores every
    project from MODEL_DIR (before and after its first round) and carries on from its last round."""
    ls = label_studio
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ADMIN_TOKEN, **FAST}
    with BackendProcess(tmp_path, env) as backend:
        project, ids, truth = digits_project(ls, digits64, "worker kill", 20)
        v0 = connect_and_wait_for_version_0(ls, backend, project)

        def kill_worker():
            # (the backend records a publish just after Label Studio has moved the project)
            wait_for(
                lambda: (s := status(backend, project))["published_version"] == s["model_version"], 30, "the publish"
            )
            (pid,) = worker_pids(backend)
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: (p := worker_pids(backend)) and p != [pid], 60, "a new worker process")
            wait_for(lambda: healthy(backend), 60, "the new worker")

        kill_worker()  # before the first round: the project is known from its registration
        st = status(backend, project)
        assert st["model_version"] == v0 and st["published_version"] == v0
        r = requests.post(
            f"{backend.url}/predict",
            timeout=60,
            json={
                "project": str(project),
                "tasks": [{"id": t["id"], "data": t["data"]} for t in ls.tasks(project)[:3]],
            },
        )
        assert r.status_code == 200 and {x["model_version"] for x in r.json()["results"]} == {v0}

        for t in ids[:4]:  # LS's own (authenticated) webhook reaches the new worker
            annotate(ls, t, truth[t])
        v1 = wait_for(lambda: (v := project_version(ls, project)) != v0 and v, 90, "round 1")
        assert "-t1-" in v1

        kill_worker()  # after a round: restored from its checkpoint, the next round is t=2, not t=1 again
        assert status(backend, project)["model_version"] == v1
        for t in ids[4:7]:
            annotate(ls, t, truth[t])
        v2 = wait_for(lambda: (v := project_version(ls, project)) != v1 and v, 90, "round 2")
        assert "-t2-" in v2 and status(backend, project)["labels_used"] == 7

        backend.stop()  # a full restart serves the newest version
        backend = BackendProcess(tmp_path, env, port=backend.port).start()
        assert status(backend, project)["model_version"] == v2
        backend.stop()


def test_forged_and_replayed_events_against_label_studio(label_studio, digits64, image_server, tmp_path):
    ls = label_studio
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ADMIN_TOKEN, **FAST}
    with BackendProcess(tmp_path, env) as backend:
        project, ids, truth = digits_project(ls, digits64, "forged events", 10)
        other, other_ids, _ = digits_project(ls, digits64[10:], "other project", 5)
        v0 = connect_and_wait_for_version_0(ls, backend, project)
        headers = ls.webhook_headers(project, backend.url)
        assert set(headers) == {HEADER}  # set by the backend itself, through Label Studio's API

        hacked = classification_config(["HACKED"])
        url = f"{backend.url}/webhook"
        # without the header: refused, whatever the event
        for event in (
            {"action": "PROJECT_UPDATED", "project": {"id": project, "label_config": hacked}},
            {"action": "ANNOTATION_CREATED", "project": {"id": project}},
            {"action": "ANNOTATION_CREATED", "project": {"id": 999}},
        ):
            assert requests.post(url, json=event, timeout=5).status_code == 401
        # (LS sends "Start Training" with no credentials when the connection has no basic auth)
        r = requests.post(url, json={"action": "START_TRAINING", "project": {"id": project}}, timeout=5)
        assert r.status_code == 200 and "cannot force" in r.json()["outcome"]
        # with the project's header (a replay of a real event): the payload is only a hint
        assert (
            requests.post(
                url,
                headers=headers,
                timeout=5,
                json={"action": "PROJECT_UPDATED", "project": {"id": project, "label_config": hacked}},
            ).status_code
            == 200
        )
        assert (
            requests.post(
                url,
                headers=headers,
                timeout=5,
                json={
                    "action": "TASKS_CREATED",
                    "project": {"id": project},
                    "tasks": [{"id": t, "data": {"image": f"{image_server.url}/good.png?evil"}} for t in other_ids],
                },
            ).status_code
            == 200
        )
        # the project's header does not work for another project
        assert (
            requests.post(
                url, headers=headers, timeout=5, json={"action": "PROJECT_UPDATED", "project": {"id": other}}
            ).status_code
            == 401
        )
        time.sleep(3)  # the worker re-reads the config and the tasks from Label Studio
        st = status(backend, project)
        assert st["labels"] == LABELS and st["model_version"] == v0 == project_version(ls, project)
        assert ls.predictions(other) == []  # no prediction added to another project's tasks
        assert image_server.seen == []  # no URL from a payload fetched
        assert set(versions_of(ls, project)) == {v0}
        # a real config change in Label Studio is still picked up (re-read, not taken from the event)
        ls.api("PATCH", f"/api/projects/{project}", json={"label_config": classification_config(LABELS + ["new"])})
        wait_for(lambda: status(backend, project)["labels"] == LABELS + ["new"], 60, "the re-read config")
        assert len(requests.get(f"{backend.url}/status", timeout=5).json()["projects"]) == 1


def test_a_version_left_unpublished_by_a_crash_is_published_at_start(label_studio, digits64, tmp_path):
    """Round trained and checkpointed, publishing refused by Label Studio, then kill -9: the next
    process publishes that version by itself, with no event and no /setup."""
    from tests.integration.proxy import OutageProxy

    ls = label_studio
    proxy = OutageProxy(ls.url)
    env = {"LABEL_STUDIO_URL": proxy.url, "LABEL_STUDIO_API_KEY": ADMIN_TOKEN, **FAST, "RECOVERY_MAX_S": "600"}
    backend = BackendProcess(tmp_path, env).start()
    try:
        project, ids, truth = digits_project(ls, digits64, "crash mid-publish", 12)
        v0 = connect_and_wait_for_version_0(ls, backend, project)
        proxy.fail_when = lambda method, path: method == "POST" and "/import/predictions" in path
        for t in ids[:3]:
            annotate(ls, t, truth[t])
        st = wait_for(lambda: (s := status(backend, project))["state"] == "failed" and s, 90, "the publish to fail")
        trained = st["model_version"]
        assert "-t1-" in trained and st["published_version"] is None and project_version(ls, project) == v0
        os.killpg(backend.process.pid, signal.SIGKILL)
        backend.process.wait(timeout=10)
        proxy.fail_when = None
        backend = BackendProcess(tmp_path, env, port=backend.port).start()
        wait_for(lambda: project_version(ls, project) == trained, 60, "the restored version to be published")
        # the backend records the publish just after Label Studio switches the project: wait for it too
        wait_for(lambda: status(backend, project)["published_version"] == trained, 30, "the publish to be recorded")
    finally:
        backend.stop()
        proxy.close()
