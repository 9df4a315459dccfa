"""The learning loop end to end against a real Label Studio 1.23.2 and the backend as a real
gunicorn process: publish on connect, train on annotations, move the queue, survive storms,
kill -9 and Label Studio outages."""

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ml_backend.demo.servers import ADMIN_TOKEN, BackendProcess, wait_for
from tests.helpers import (
    FAST,
    annotate,
    connect_and_wait_for_version_0,
    digits_project,
    project_version,
    served_in_acquisition_order,
    status,
    versions_of,
)
from tests.integration.proxy import OutageProxy

pytestmark = pytest.mark.labelstudio


def test_connect_publish_learn_reorder_and_forget_deleted(label_studio, digits64, tmp_path):
    ls = label_studio
    with BackendProcess(
        tmp_path, {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token(), **FAST}
    ) as backend:
        project, ids, truth = digits_project(ls, digits64, "learning loop", 40)
        v0 = ls.connect_backend(project, backend.url)["model_version"]
        # version 0 is published for every task and the project moves to it by itself
        wait_for(lambda: project_version(ls, project) == v0, 60, "the project to move to version 0")
        assert versions_of(ls, project)[v0] == set(ids)

        labeled = ids[:12]
        for t in labeled:
            annotate(ls, t, truth[t])
        v1 = wait_for(lambda: (v := project_version(ls, project)) != v0 and v, 90, "a trained version")
        assert "-t1-" in v1
        st = wait_for(
            lambda: (s := status(backend, project))["queue_version"] == v1 and s, 30, "the publish to be recorded"
        )
        assert st["round"] == 1 and st["labels_used"] == 12 and st["training_runs"] == 1
        assert st["last_round"]["loss_last"] < st["last_round"]["loss_first"]
        # the annotations the trained head disagrees with (p(label) < REVIEW_MAX_P), most doubtful first
        review = st["review"]
        assert {int(r["task"]) for r in review} <= set(labeled) and all(r["p_label"] < 0.5 for r in review)
        assert [r["loss"] for r in review] == sorted((r["loss"] for r in review), reverse=True)
        assert all(r["label"] == str(truth[int(r["task"])]) for r in review)
        unlabeled = set(ids) - set(labeled)
        assert versions_of(ls, project)[v1] == unlabeled  # every unlabeled task, nothing else

        # the queue now follows the new model's acquisition values
        served = ls.walk_queue(project)
        assert set(served) == unlabeled
        tasks = [{"id": t["id"], "data": t["data"]} for t in ls.tasks(project) if t["id"] in unlabeled]
        r = requests.post(f"{backend.url}/predict", json={"tasks": tasks, "project": str(project)}, timeout=60).json()
        assert {x["model_version"] for x in r["results"]} == {v1}
        acquisition = {t["id"]: x["acquisition"] for t, x in zip(tasks, r["results"])}
        assert served_in_acquisition_order(served, acquisition)

        # deleting an annotation: the next round trains without it
        wait_for(lambda: status(backend, project)["state"] == "idle", 30, "the skips to settle")
        gone = labeled[0]
        (annotation,) = ls.api("GET", f"/api/tasks/{gone}/annotations")
        ls.api("DELETE", f"/api/annotations/{annotation['id']}")
        v2 = wait_for(lambda: "-t2-" in (v := project_version(ls, project)) and v, 90, "the round after a deletion")
        meta = json.loads((tmp_path / "models" / "projects" / str(project) / v2 / "meta.json").read_text())
        assert str(gone) not in meta["labels_used"] and len(meta["labels_used"]) == 11
        assert gone in versions_of(ls, project)[v2]  # unlabeled again, so it is scored again

        # new tasks (TASKS_CREATED) get predictions of the served version without a new round
        wait_for(lambda: status(backend, project)["state"] == "idle", 30, "idle")
        added = ls.upload_files(project, [(name, data) for name, data, _ in digits64[40:43]])
        wait_for(lambda: set(added) <= versions_of(ls, project).get(v2, set()), 60, "predictions for new tasks")
        assert project_version(ls, project) == v2

        # a label added to the config grows the head: a new version is published, nothing retrained
        config = ls.api("GET", f"/api/projects/{project}")["label_config"]
        ls.api(
            "PATCH",
            f"/api/projects/{project}",
            json={
                "label_config": config.replace(
                    '<Choice value="9"/>', '<Choice value="9"/>\n    <Choice value="none of these"/>'
                )
            },
        )
        v3 = wait_for(lambda: (v := project_version(ls, project)) != v2 and v, 60, "a version for the grown config")
        # the backend records the publish just after Label Studio has moved the project
        st = wait_for(
            lambda: (s := status(backend, project))["published_version"] == v3 and s,
            30,
            "the backend to record the publish",
        )
        assert "-t2-" in v3 and st["round"] == 2 and st["labels"][-1] == "none of these"
        assert st["published_version"] == v3 and st["training_runs"] == 2


def test_storm_concurrent_predictions_and_kill_9(label_studio, digits64, tmp_path):
    ls = label_studio
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ADMIN_TOKEN, **FAST}
    project, ids, truth = digits_project(ls, digits64, "storm and crash", 30)
    backend = BackendProcess(tmp_path, env).start()
    try:
        v0 = connect_and_wait_for_version_0(ls, backend, project)

        # 200 events in a few seconds (5 real annotations among them): at most 2 training runs
        started = time.monotonic()
        payload = {"action": "ANNOTATION_UPDATED", "project": {"id": project}}
        headers = ls.webhook_headers(project, backend.url)  # what LS itself sends: the backend's secret header
        assert headers
        with ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(requests.post, f"{backend.url}/webhook", json=payload, headers=headers, timeout=5)
                for _ in range(195)
            ]
            for t in ids[:5]:
                annotate(ls, t, truth[t])
            assert all(f.result().status_code == 200 for f in futures)
        assert time.monotonic() - started < 10
        wait_for(lambda: "-t" in (v := project_version(ls, project)) and v != v0 and v, 90, "the storm's round")
        wait_for(lambda: status(backend, project)["state"] == "idle", 30, "idle after the storm")
        time.sleep(2)  # a second debounced round, if any, would have started by now
        wait_for(lambda: status(backend, project)["state"] == "idle", 60, "idle")
        runs = status(backend, project)["training_runs"]
        assert 1 <= runs <= 2, runs
        served_before = project_version(ls, project)
        backend.stop()

        # slow training, so that the kill lands mid-round
        backend = BackendProcess(tmp_path, {**env, "TRAIN_STEPS": "200000"}, port=backend.port).start()
        assert status(backend, project)["model_version"] == served_before  # restored from its checkpoint
        for t in ids[5:8]:
            annotate(ls, t, truth[t])
        wait_for(
            lambda: (
                status(backend, project).get("state") == "running"
                and "training" in status(backend, project).get("reason", "")
            ),
            60,
            "training to start",
        )

        tasks = [{"id": t["id"], "data": t["data"]} for t in ls.tasks(project)][:10]
        with ThreadPoolExecutor(20) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(
                        f"{backend.url}/predict", json={"tasks": tasks, "project": str(project)}, timeout=120
                    ),
                    range(20),
                )
            )
        assert all(a.status_code == 200 and len(a.json()["results"]) == 10 for a in answers)
        assert {x["model_version"] for a in answers for x in a.json()["results"]} == {served_before}
        assert status(backend, project)["state"] == "running"  # still training: served from the old model

        os.killpg(backend.process.pid, signal.SIGKILL)
        backend.process.wait(timeout=10)
        backend = BackendProcess(tmp_path, env, port=backend.port).start()
        st = status(backend, project)
        assert st["model_version"] == served_before and st["round"] == runs
        project_dir = tmp_path / "models" / "projects" / str(project)
        assert not any(p.name.startswith(".tmp") for p in project_dir.iterdir())
        assert len(ls.api("GET", f"/api/tasks/{ids[6]}/annotations")) == 1  # nothing lost in LS

        # "Start Training" in Label Studio: the next round uses all 8 labels
        ml_id = ls.api("GET", "/api/ml", params={"project": project})[0]["id"]
        ls.api("POST", f"/api/ml/{ml_id}/train")
        wait_for(
            lambda: (
                status(backend, project).get("labels_used") == 8 and status(backend, project).get("state") == "idle"
            ),
            90,
            "a round with all labels",
        )
        assert project_version(ls, project) == status(backend, project)["model_version"] != served_before
    finally:
        backend.stop()


def test_label_studio_outage_during_publish_is_retried_and_reported(label_studio, digits64, tmp_path):
    ls = label_studio
    proxy = OutageProxy(ls.url)
    try:
        env = {
            "LABEL_STUDIO_URL": proxy.url,
            "LABEL_STUDIO_API_KEY": ADMIN_TOKEN,
            "DELETE_OLD_PREDICTIONS": "true",
            **FAST,
            "REVIEW_TOP": "0",  # the review tab's reasons are imported too (advice: a failure is only logged)
        }
        with BackendProcess(tmp_path, env) as backend:
            project, ids, truth = digits_project(ls, digits64, "outage", 20)
            v0 = connect_and_wait_for_version_0(ls, backend, project)

            proxy.fail_when = lambda method, path: method == "POST" and "/import/predictions" in path
            for t in ids[:4]:
                annotate(ls, t, truth[t])
            st = wait_for(lambda: (s := status(backend, project))["state"] == "failed" and s, 90, "the publish to fail")
            assert "importing predictions failed after 3 attempts" in st["reason"]
            assert "previous model keeps serving" in st["reason"]
            assert len(proxy.failed) == 3  # retried, then reported
            assert project_version(ls, project) == v0  # Label Studio still points at published predictions
            r = requests.post(
                f"{backend.url}/predict",
                json={"tasks": [{"id": ids[5], "data": {}}], "project": str(project)},
                timeout=30,
            )
            assert r.status_code == 200  # the backend keeps answering

            assert st["retry_in_s"] and "retrying in" in st["reason"]
            # Label Studio is back: the backend retries by itself, with no event and no /setup
            events = requests.get(f"{backend.url}/status", timeout=10).json()["events"]
            proxy.fail_when = None
            st = wait_for(
                lambda: (s := status(backend, project))["published_version"] and s["state"] == "idle" and s,
                60,
                "the background retry to publish",
            )
            after = requests.get(f"{backend.url}/status", timeout=10).json()["events"]
            # the only new events are LS's echo of the backend's own project switch
            assert {k for k in after if after[k] != events.get(k)} <= {"PROJECT_UPDATED"}
            assert project_version(ls, project) == st["model_version"] == st["published_version"] != v0
            assert set(versions_of(ls, project)) == {st["model_version"]}  # DELETE_OLD_PREDICTIONS removed v0
    finally:
        proxy.close()


def test_auto_switches_from_cold_start_to_badge_after_a_round(label_studio, digits64, tmp_path):
    """A project that chose `auto` (its connection's extra params; STRATEGY stays margin) starts in
    the cold-start regime (TypiClust), and the round after its labels pass per_class × classes
    switches to BADGE: visible in /status and in each prediction's strategy."""
    ls = label_studio
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token(), "STRATEGY": "margin", **FAST}
    with BackendProcess(tmp_path, env) as backend:
        project, ids, truth = digits_project(ls, digits64, "auto regime", 30)
        ml = ls.connect_backend(project, backend.url, extra_params={"strategy": "auto:per_class=1"})
        v0 = ml["model_version"]
        assert v0.startswith("smallcnn-auto-t0-"), v0
        wait_for(lambda: project_version(ls, project) == v0, 60, "version 0")
        info = status(backend, project)["strategy_info"]
        assert (info["regime"], info["serving"], info["labels"], info["switch_at"]) == (
            "cold-start",
            "typiclust",
            0,
            10,
        )

        def predict(task_ids):
            tasks = [{"id": t["id"], "data": t["data"]} for t in ls.tasks(project) if t["id"] in task_ids]
            r = requests.post(f"{backend.url}/predict", json={"tasks": tasks, "project": str(project)}, timeout=60)
            r.raise_for_status()
            return {t["id"]: x for t, x in zip(tasks, r.json()["results"])}

        first = predict(set(ids))
        assert {p["strategy"] for p in first.values()} == {"auto/typiclust"}
        served = sorted(first, key=lambda t: -first[t]["acquisition"])[:10]  # what the cold-start queue serves first
        for t in served:
            annotate(ls, t, truth[t])
        v1 = wait_for(lambda: (v := project_version(ls, project)) != v0 and v, 120, "a trained version")
        assert "-auto-t1-" in v1
        st = wait_for(lambda: (s := status(backend, project))["published_version"] == v1 and s, 30, "the publish")
        info = st["strategy_info"]
        assert (info["regime"], info["serving"], info["labels"]) == ("warm", "badge", 10)
        assert (st["strategy"], st["strategy_chosen"]) == ("auto", "auto:per_class=1")
        rest = set(ids) - set(served)
        results = predict(rest).values()
        assert {p["strategy"] for p in results} == {"auto/badge"} and {p["model_version"] for p in results} == {v1}
        assert versions_of(ls, project)[v1] == rest
