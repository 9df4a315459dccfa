"""The HTTP protocol through Flask's test client, with the real model service (small CNN)."""

import base64
import logging
import time

import pytest

from ml_backend.app import create_app
from ml_backend.demo.servers import classification_config
from ml_backend.service.security import HEADER
from tests.helpers import CONFIG, LABELS, data_uri, make_settings, tasks_from


def test_health_is_public_and_fast(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json["status"] == "UP" and r.json["backbone"] == "smallcnn"


def test_setup_answers_a_version_quickly_without_loading_a_model(client, app):
    started = time.perf_counter()
    r = client.post(
        "/setup", json={"project": "3.1700000000", "schema": CONFIG, "hostname": "http://ls", "access_token": "abc123"}
    )
    assert time.perf_counter() - started < 3.0
    assert r.status_code == 200 and r.json["model_version"].startswith("smallcnn-margin-t0-")
    metrics = client.get("/metrics").json
    assert metrics["projects"]["3"]["model_loaded"] is False
    # same config -> same version; a grown label set -> a new version
    assert client.post("/setup", json={"project": "3.1700000000", "schema": CONFIG}).json == r.json
    grown = client.post("/setup", json={"project": "3", "schema": classification_config(LABELS + ["x"])}).json
    assert grown["model_version"] != r.json["model_version"]


def test_predict_returns_label_numeric_score_and_version_for_every_task(client, digits64):
    version = client.post("/setup", json={"project": "5.1", "schema": CONFIG}).json["model_version"]
    tasks = tasks_from(digits64[:20])
    r = client.post("/predict", json={"tasks": tasks, "project": "5.1", "label_config": CONFIG})
    assert r.status_code == 200
    results = r.json["results"]
    assert len(results) == 20
    for item in results:
        assert item["model_version"] == version
        assert isinstance(item["score"], float) and 0 <= item["score"] < 1
        (choice,) = item["result"]
        assert choice["from_name"] == "label" and choice["to_name"] == "image" and choice["type"] == "choices"
        assert choice["value"]["choices"][0] in LABELS
    # lower score <=> higher acquisition: the score order is the acquisition order
    by_score = sorted(range(20), key=lambda i: results[i]["score"])
    acq = [results[i]["acquisition"] for i in by_score]
    assert all(a >= b for a, b in zip(acq, acq[1:]))
    assert results[by_score[0]]["score"] == 0.0


def test_scores_are_ranked_against_the_scored_pool(client, digits64):
    tasks = tasks_from(digits64[:30])
    pool = client.post("/predict", json={"tasks": tasks, "project": "6", "label_config": CONFIG}).json["results"]
    # a later single-task request is ranked against the whole pool, not against itself
    best = min(range(30), key=lambda i: pool[i]["score"])
    worst = max(range(30), key=lambda i: pool[i]["score"])
    for i in (best, worst):
        single = client.post("/predict", json={"tasks": [tasks[i]], "project": "6", "label_config": CONFIG}).json[
            "results"
        ][0]
        assert single["score"] == pool[i]["score"]
    assert pool[worst]["score"] == pytest.approx(29 / 30)


def test_bad_images_get_empty_result_and_least_urgent_score(client, digits64, image_server, caplog):
    tasks = tasks_from(digits64[:3]) + [
        {"id": 101, "data": {"image": f"{image_server.url}/missing.png"}},
        {"id": 102, "data": {"image": f"{image_server.url}/corrupt.png"}},
        {"id": 103, "data": {"image": f"{image_server.url}/text.png"}},
        {"id": 104, "data": {}},
        {"id": 105, "data": {"image": "data:image/png;base64,@@@@"}},
    ]
    with caplog.at_level(logging.WARNING):
        r = client.post("/predict", json={"tasks": tasks, "project": "7", "label_config": CONFIG})
    assert r.status_code == 200
    results = r.json["results"]
    assert len(results) == 8 and all(x["result"] for x in results[:3])
    for item in results[3:]:
        assert item["result"] == [] and item["score"] == 1.0 and item["model_version"]
        assert item["error"]
    assert max(x["score"] for x in results[:3]) < 1.0
    for task_id in (101, 102, 103, 104, 105):
        assert f"task {task_id}: no prediction" in caplog.text


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty request body"),
        (b"[1, 2]", 400, "expected a JSON object"),
        (b'{"project": "1"}', 400, "missing 'tasks'"),
        (b'{"tasks": [], "project": "1", "label_config": "x"}', 422, "not valid XML"),
        (b'{"tasks": "abc", "project": "1", "label_config": "x"}', 400, "must be a list of task objects"),
        (b'{"tasks": [], "project": "99"}', 404, "project 99 is not set up"),
        (
            b'{"tasks": [1, 2], "project": "1", "label_config": "<View><Image name=\\"i\\" value=\\"$i\\"/>'
            b'<Choices name=\\"c\\" toName=\\"i\\"><Choice value=\\"a\\"/></Choices></View>"}',
            400,
            "must be a list of task objects",
        ),
        (b'{"tasks": []}', 400, "missing 'project'"),
    ],
)
def test_bad_predict_requests_get_a_clear_answer(client, body, status, message):
    r = client.post("/predict", data=body, content_type="application/json")
    assert r.status_code == status and r.json["status"] == "error" and message in r.json["message"]
    assert "Traceback" not in r.get_data(as_text=True)


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"project": "1"}, 400, "missing 'schema'"),
        ({"project": "1", "schema": '<View><Image name="i" value="$i"/></View>'}, 422, "no <Choices> tag found"),
        ({"schema": CONFIG}, 400, "missing 'project'"),
    ],
)
def test_bad_setup_requests(client, body, status, message):
    r = client.post("/setup", json=body)
    assert r.status_code == status and message in r.json["message"]


def test_zero_one_and_a_thousand_tasks(client, digits64):
    assert client.post("/predict", json={"tasks": [], "project": "8", "label_config": CONFIG}).json == {"results": []}
    one = client.post("/predict", json={"tasks": tasks_from(digits64[:1]), "project": "8"}).json["results"]
    assert len(one) == 1 and one[0]["score"] == 0.0
    many = [{"id": 1000 + i, "data": {"image": data_uri(digits64[i % len(digits64)][1])}} for i in range(1000)]
    results = client.post("/predict", json={"tasks": many, "project": "8"}).json["results"]
    assert len(results) == 1000 and all(r["result"] and isinstance(r["score"], float) for r in results)


def test_webhook_acknowledges_every_authenticated_event(client, app):
    client.post("/setup", json={"project": "1.1700000000", "schema": CONFIG})
    secrets = app.extensions["backend"].webhook_secrets
    good = {HEADER: secrets.for_project("1")}
    for action in ("ANNOTATION_CREATED", "ANNOTATIONS_DELETED", "START_TRAINING", "SOMETHING_NEW"):
        r = client.post("/webhook", json={"action": action, "project": {"id": 1}}, headers=good)
        assert r.status_code == 200 and r.json["status"] == "ok" and r.json["action"] == action
    assert client.get("/metrics").json["events"]["ANNOTATIONS_DELETED"] == 1
    # no header, another project's header, a wrong one: 401, and the event is not even counted
    for headers in ({}, {HEADER: secrets.for_project("2")}, {HEADER: "0" * 64}):
        r = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 1}}, headers=headers)
        assert r.status_code == 401 and HEADER in r.json["message"]
    assert client.get("/metrics").json["events"]["ANNOTATIONS_DELETED"] == 1
    assert client.post("/webhook", data=b"nope", content_type="application/json", headers=good).status_code == 400
    assert client.post("/webhook", json={"project": 1}, headers=good).status_code == 400
    assert client.post("/webhook", json={"action": "X"}, headers=good).status_code == 400


def test_versions_route(client):
    version = client.post("/setup", json={"project": "9.1", "schema": CONFIG}).json["model_version"]
    assert client.get("/versions").json == {"versions": [version]}
    assert client.get("/versions?project=9").json == {"versions": [version]}


def test_basic_auth(tmp_path):
    app = create_app(make_settings(tmp_path, BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="s3cret-pass"))
    client = app.test_client()
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:s3cret-pass").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"ls:wrong").decode()}
    assert client.get("/health").status_code == 200
    # /webhook authenticates itself (secret header or basic auth), it is not behind the 401 of basic auth
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 1}}
    assert client.post("/webhook", json=event).status_code == 401
    assert client.post("/webhook", json=event, headers=good).status_code == 404  # authenticated, never set up
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    assert client.get("/", headers=browser).status_code == 401  # the dashboard
    page = client.get("/", headers={**browser, **good})
    assert page.status_code == 200 and page.mimetype == "text/html" and b"Active Adaptation" in page.data
    for route in ("/versions", "/metrics", "/dashboard"):
        assert client.get(route).status_code == 401
        assert client.get(route, headers=bad).status_code == 401
        assert client.get(route, headers=good).status_code == 200
    r = client.post("/setup", json={"project": "1", "schema": CONFIG})
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert client.post("/setup", json={"project": "1", "schema": CONFIG}, headers=good).status_code == 200
    assert client.post("/predict", json={"tasks": []}, headers={"Authorization": "Basic !!!"}).status_code == 401
    app.extensions["backend"].close()


def test_secrets_never_reach_the_log(tmp_path, caplog, project_server):
    app = create_app(
        make_settings(
            tmp_path,
            LABEL_STUDIO_API_KEY="pat-super-secret-value",
            LABEL_STUDIO_URL=project_server.url,
            PUBLISH_ON_CONNECT="false",
        )
    )
    client = app.test_client()
    with caplog.at_level(logging.DEBUG):
        client.post("/setup", json={"project": "1", "schema": CONFIG, "access_token": "legacy-secret-token"})
        log = logging.getLogger("test")
        log.warning("library says: Authorization: Bearer eyJhbGciOi.abc.def and key %s", "pat-super-secret-value")
        log.error("setup token legacy-secret-token")
        try:
            raise RuntimeError("failed with header Authorization: Token legacy-secret-token")
        except RuntimeError:
            log.exception("boom")
        # an LS-hosted image with an unreachable LS: the failure is logged, the token is not
        client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": "/data/upload/1/a.png"}}], "project": "1"})
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    for secret in ("pat-super-secret-value", "legacy-secret-token", "eyJhbGciOi.abc.def"):
        assert secret not in text
    assert "Authorization: Bearer ***" in text and "task 1: no prediction" in text
    app.extensions["backend"].close()


def test_start_commands_fail_clearly_on_bad_settings(tmp_path):
    """Both start commands refuse a bad setting at start with a message naming it, no traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "STRATEGY": "best-one", "MODEL_DIR": str(tmp_path), "BACKBONE": "smallcnn", "WEIGHTS": "none"}
    r = subprocess.run([sys.executable, "-m", "ml_backend"], env=env, capture_output=True, text=True, timeout=120)
    assert (
        r.returncode == 2
        and "configuration error: STRATEGY='best-one': unknown strategy 'best-one'; available:" in r.stderr
    )
    assert "Traceback" not in r.stderr
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    r = subprocess.run(
        [gunicorn, "--no-control-socket", "-b", "127.0.0.1:0", "ml_backend.wsgi:app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "configuration error: STRATEGY='best-one'" in r.stderr


def test_gunicorn_serves_the_wsgi_app(tmp_path):
    import os
    import subprocess
    import sys
    import time

    import requests

    from ml_backend.demo.servers import free_port, stop_process_group

    port = free_port()
    env = {**os.environ, "MODEL_DIR": str(tmp_path), "BACKBONE": "smallcnn", "WEIGHTS": "none"}
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    process = subprocess.Popen(
        [gunicorn, "--no-control-socket", "--threads", "4", "-b", f"127.0.0.1:{port}", "ml_backend.wsgi:app"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).json()["status"] == "UP":
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail("gunicorn did not serve /health")
    finally:
        stop_process_group(process, grace=20)


def test_the_root_url_is_the_dashboard_for_a_browser_and_health_for_the_rest(client):
    assert client.get("/").json["status"] == "UP"  # curl's */*, scripts, probes
    assert client.get("/", headers={"Accept": "application/json"}).json["status"] == "UP"
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.mimetype == "text/html" and b"No project yet" in page.data
    client.post("/setup", json={"project": "7", "schema": CONFIG})
    page = client.get("/dashboard").data.decode()
    assert 'id="project-7"' in page and "no round yet" in page and "<script" not in page


def test_chart_ticks_are_round_and_few():
    from ml_backend.service.dashboard import line_chart, y_ticks

    assert y_ticks(-0.00654435, 1.0) == (-0.25, 1.0, ["-0.25", "0", "0.25", "0.50", "0.75", "1.00"])
    assert y_ticks(0.0, 1.0)[2] == ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    svg = line_chart("κ", [1, 2], [0.5, -0.00654435], lo=-0.00654435)
    assert "54435" not in svg.split("<circle")[0]  # the axis, not the point's tooltip
