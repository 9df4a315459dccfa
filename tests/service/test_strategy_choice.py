"""A project picks its own strategy without a restart: from the connection's extra params in
/setup or from POST /projects/<id>/strategy; the version names it, predictions carry it, a restart
keeps it, and a bad choice is refused with the reason."""

import pytest

from ml_backend.app import create_app
from tests.helpers import CONFIG, make_settings, tasks_from


@pytest.fixture
def app(tmp_path):
    app = create_app(make_settings(tmp_path))
    yield app
    app.extensions["backend"].close()


def test_extra_params_choose_a_projects_strategy(app, digits64):
    client = app.test_client()
    default = client.post("/setup", json={"project": "1", "schema": CONFIG}).json["model_version"]
    chosen = client.post(
        "/setup", json={"project": "2", "schema": CONFIG, "extra_params": '{"strategy": "entropy"}'}
    ).json["model_version"]
    assert default.startswith("smallcnn-margin-t0-") and chosen.startswith("smallcnn-entropy-t0-")
    tasks = tasks_from(digits64[:8])
    one = client.post("/predict", json={"tasks": tasks, "project": "1", "label_config": CONFIG}).json["results"]
    two = client.post("/predict", json={"tasks": tasks, "project": "2", "label_config": CONFIG}).json["results"]
    assert {r["strategy"] for r in one} == {"margin"} and {r["strategy"] for r in two} == {"entropy"}
    # a later /setup without extra params keeps the choice; a dict works as well as its JSON text
    assert client.post("/setup", json={"project": "2", "schema": CONFIG}).json["model_version"] == chosen
    again = client.post("/setup", json={"project": "2", "schema": CONFIG, "extra_params": {"strategy": "entropy"}})
    assert again.json["model_version"] == chosen
    status = client.get("/status").json["projects"]
    assert (status["1"]["strategy"], status["1"]["strategy_chosen"]) == ("margin", None)
    assert (status["2"]["strategy"], status["2"]["strategy_chosen"]) == ("entropy", "entropy")


@pytest.mark.parametrize(
    "extra, message",
    [
        ('{"strategy": "nope"}', "strategy 'nope': unknown strategy"),
        ("{not json", "extra params are not JSON"),
        ('["badge"]', "must be a JSON object"),
        ('{"strategy": 3}', "'strategy' must be a string"),
        ('{"strategy": "adma:layers=A2"}', "needs layer role A2, which smallcnn does not declare"),
    ],
)
def test_a_bad_choice_is_refused_and_registers_nothing(app, extra, message):
    client = app.test_client()
    r = client.post("/setup", json={"project": "4", "schema": CONFIG, "extra_params": extra})
    assert r.status_code in (400, 422) and message in r.json["message"], r.json
    assert "4" not in client.get("/status").json["projects"]


def test_the_route_changes_the_strategy_and_a_restart_keeps_it(tmp_path, digits64):
    app = create_app(make_settings(tmp_path))
    # registrations are written for projects Label Studio confirmed (a configured LABEL_STUDIO_URL);
    # this backend has none, so it is told to write them as a configured one does
    app.extensions["backend"].projects.persist = True
    client = app.test_client()
    v0 = client.post("/setup", json={"project": "5", "schema": CONFIG}).json["model_version"]
    r = client.post("/projects/5/strategy", json={"strategy": "coreset:budget=4"})
    assert r.status_code == 200 and r.json["strategy"] == "coreset" and r.json["model_version"] != v0
    assert r.json["strategy_params"]["budget"] == 4
    tasks = tasks_from(digits64[:6])
    results = client.post("/predict", json={"tasks": tasks, "project": "5", "label_config": CONFIG}).json["results"]
    assert {x["strategy"] for x in results} == {"coreset"}
    assert client.post("/projects/5/strategy", json={"strategy": "bogus"}).status_code == 400
    assert client.post("/projects/5/strategy", json={}).status_code == 400
    assert client.post("/projects/99/strategy", json={"strategy": "entropy"}).status_code == 404
    app.extensions["backend"].close()

    again = create_app(make_settings(tmp_path))  # a restart: the choice is in MODEL_DIR
    client = again.test_client()
    assert client.get("/status").json["projects"]["5"]["strategy"] == "coreset"
    back = client.post("/projects/5/strategy", json={"strategy": None}).json
    assert back["strategy"] == "margin" and back["chosen"] is None and back["model_version"] == v0
    again.extensions["backend"].close()
