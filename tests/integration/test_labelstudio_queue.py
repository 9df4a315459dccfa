"""End to end with a real Label Studio 1.23.2: the queue serves tasks in acquisition order."""

import random

import pytest
import requests

from ml_backend.demo.servers import ADMIN_TOKEN, BackendProcess, wait_for
from tests.helpers import FAST, LABELS, project_version, served_in_acquisition_order, status, versions_of

pytestmark = pytest.mark.labelstudio


@pytest.fixture(scope="module")
def pat(label_studio):
    return label_studio.personal_access_token()


@pytest.fixture(scope="module")
def backend(label_studio, pat, tmp_path_factory):
    proc = BackendProcess(
        tmp_path_factory.mktemp("backend"),
        {
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": pat,
            "STRATEGY": "margin",
            # this module checks Label Studio's own "Retrieve Predictions" path; the learning loop's
            # automatic publishing is covered in test_labelstudio_learning.py
            "PUBLISH_ON_CONNECT": "false",
        },
    )
    proc.start()
    yield proc
    proc.stop()


def make_project(ls, digits, title):
    project = ls.create_project(title, LABELS)
    good = ls.upload_files(project, [(name, data) for name, data, _ in digits[:36]])
    png = digits[0][1]
    bad = ls.upload_files(
        project, [("not-an-image.png", b"plain text, not a PNG"), ("truncated.png", png[: len(png) // 3])]
    )
    bad += ls.import_tasks(project, [{"image": f"/data/upload/{project}/never-uploaded.png"}])
    return project, good, bad


def backend_acquisitions(ls, backend, project):
    """Ask the backend directly (same model version) for each task's acquisition value."""
    tasks = [{"id": t["id"], "data": t["data"]} for t in ls.tasks(project)]
    r = requests.post(f"{backend.url}/predict", json={"tasks": tasks, "project": str(project)}, timeout=120)
    r.raise_for_status()
    return {t["id"]: item.get("acquisition") for t, item in zip(tasks, r.json()["results"])}


def test_queue_serves_tasks_in_decreasing_acquisition(label_studio, backend, digits64, pat):
    ls = label_studio
    project, good, bad = make_project(ls, digits64, "queue order")

    ml = ls.connect_backend(project, backend.url)
    assert ml["state"] == "CO", ml  # /health and /setup answered in time
    version = ml["model_version"]
    assert version.startswith("smallcnn-margin-t0-")

    ls.retrieve_predictions(project)
    predictions = ls.predictions(project)
    by_task = {p["task"]: p for p in predictions}
    assert set(by_task) == set(good + bad)
    assert all(p["model_version"] == version and isinstance(p["score"], float) for p in predictions)
    for task in bad:  # unusable images: no label, served last
        assert by_task[task]["result"] == [] and by_task[task]["score"] == 1.0
    for task in good:
        assert by_task[task]["result"][0]["value"]["choices"][0] in LABELS and by_task[task]["score"] < 1.0

    ls.use_uncertainty_queue(project, version)
    served = ls.walk_queue(project)
    assert sorted(served) == sorted(good + bad)
    assert set(served[-len(bad) :]) == set(bad)

    acquisition = backend_acquisitions(ls, backend, project)
    assert served_in_acquisition_order(served[: len(good)], acquisition)
    assert len({acquisition[t] for t in good}) == len(good)  # distinct values: the order is fully determined

    # The check has teeth: a random order of the same tasks fails it ...
    rng = random.Random(0)
    shuffled = [rng.sample(served[: len(good)], len(good)) for _ in range(200)]
    assert not any(served_in_acquisition_order(order, acquisition) for order in shuffled)

    # ... and so does the order Label Studio serves when the project does not point at the
    # backend's version (connecting sets it to the backend's title: the queue is then random).
    other, good2, bad2 = make_project(ls, digits64, "queue order, wrong version")
    ls.connect_backend(other, backend.url)
    ls.retrieve_predictions(other)
    project_info = ls.api("GET", f"/api/projects/{other}")
    assert project_info["model_version"] != version
    ls.api("PATCH", f"/api/projects/{other}", json={"sampling": "Uncertainty sampling"})
    served2 = [t for t in ls.walk_queue(other) if t in good2]
    assert not served_in_acquisition_order(served2, backend_acquisitions(ls, backend, other))

    # Neither the PAT, the access token derived from it nor the legacy token reached the log.
    log = backend.log()
    assert pat not in log and ADMIN_TOKEN not in log and "eyJ" not in log
    assert "not an image" in log and "never-uploaded.png" in log


def test_legacy_token_and_basic_auth(label_studio, digits64, tmp_path):
    """A legacy API token works too, and LS connects with basic auth and still delivers webhooks."""
    ls = label_studio
    with BackendProcess(
        tmp_path,
        {
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ADMIN_TOKEN,
            "BASIC_AUTH_USER": "ls",
            "BASIC_AUTH_PASS": "basic-pass-123",
            "STRATEGY": "entropy",
            "PUBLISH_ON_CONNECT": "false",
        },
    ) as backend:
        project = ls.create_project("legacy token", LABELS)
        ls.upload_files(project, [(n, d) for n, d, _ in digits64[:5]])
        assert requests.get(f"{backend.url}/metrics", timeout=5).status_code == 401
        ml = ls.connect_backend(
            project, backend.url, auth_method="BASIC_AUTH", basic_auth_user="ls", basic_auth_pass="basic-pass-123"
        )
        assert ml["state"] == "CO" and ml["model_version"].startswith("smallcnn-entropy-t0-")
        ls.retrieve_predictions(project)
        predictions = ls.predictions(project)
        assert len(predictions) == 5 and all(p["result"] for p in predictions)
        # an annotation fires LS's auto-created webhook, which carries no credentials
        task = predictions[0]["task"]
        ls.api(
            "POST",
            f"/api/tasks/{task}/annotations",
            json={
                "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["3"]}}]
            },
        )
        metrics = requests.get(f"{backend.url}/metrics", auth=("ls", "basic-pass-123"), timeout=5).json()
        assert metrics["events"].get("ANNOTATION_CREATED") == 1
        log = backend.log()
        assert ADMIN_TOKEN not in log and "basic-pass-123" not in log


def test_the_connections_extra_params_choose_the_projects_strategy(label_studio, backend, digits64):
    """Label Studio sends the connection's extra params with /setup: {"strategy": ...} gives this
    project its own strategy, the others keep STRATEGY."""
    ls = label_studio
    project = ls.create_project("own strategy", LABELS)
    tasks = ls.upload_files(project, [(name, data) for name, data, _ in digits64[:8]])
    ml = ls.connect_backend(project, backend.url, extra_params={"strategy": "entropy"})
    assert ml["state"] == "CO" and ml["model_version"].startswith("smallcnn-entropy-t0-"), ml
    ls.retrieve_predictions(project)
    predictions = ls.predictions(project)
    assert {p["task"] for p in predictions} == set(tasks)
    assert all(p["model_version"] == ml["model_version"] for p in predictions)
    # edited in Label Studio later: the next /setup switches the project to the new choice
    # (Label Studio 1.23 answers a PATCH without the url with a 500: "healthcheck_() missing ... 'url'")
    ls.api(
        "PATCH",
        f"/api/ml/{ml['id']}",
        json={"url": backend.url, "project": project, "extra_params": {"strategy": "least_confidence"}},
    )
    status = requests.get(f"{backend.url}/status", timeout=10).json()["projects"][str(project)]
    assert (status["strategy"], status["strategy_chosen"]) == ("least_confidence", "least_confidence")


def test_a_big_projects_first_queue_comes_from_a_sample_then_from_the_whole_pool(label_studio, digits64, tmp_path):
    """FIRST_QUEUE_SAMPLE (here 5 of 36 tasks): the project is switched to a preliminary version
    scored on a sample, then to the whole pool's version, and the preliminary one is pruned (that
    Label Studio's /next serves the preliminary version meanwhile: benchmarks/bench_photos.py)."""
    ls = label_studio
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ADMIN_TOKEN, **FAST, "FIRST_QUEUE_SAMPLE": "5"}
    with BackendProcess(tmp_path, env) as backend:
        project = ls.create_project("first queue", LABELS)
        ls.upload_files(project, [(name, data) for name, data, _ in digits64[:36]])
        v0 = ls.connect_backend(project, backend.url)["model_version"]
        st = wait_for(lambda: (s := status(backend, project))["published_version"] == v0 and s, 120, "version 0")
        first = st["publish_progress"]["first_queue"]
        assert first["version"] == f"{v0}-first" and first["sample"] == 5 and first["unlabeled"] == 36
        assert project_version(ls, project) == v0 and set(versions_of(ls, project)) == {v0}  # -first pruned
        assert len(versions_of(ls, project)[v0]) == 36
