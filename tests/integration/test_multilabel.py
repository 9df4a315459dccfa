"""Several questions about one image, one of them multi-label, end to end against a real Label
Studio 1.23.2 and the backend as a real gunicorn process: connect, predictions with one result per
group and several labels, annotations (some saying "none of these labels"), a training round, a new
version published, the queue re-ordered; a config it cannot serve refused with the tag named."""

import json

import pytest
import requests

from ml_backend.demo.servers import BackendProcess, wait_for
from tests.helpers import (
    FAST,
    connect_and_wait_for_version_0,
    project_version,
    served_in_acquisition_order,
    status,
    versions_of,
)

pytestmark = pytest.mark.labelstudio

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="traits" toName="image" choice="multiple">
    <Choice value="big"/><Choice value="loopy"/>
  </Choices>
  <Choices name="parity" toName="image">
    <Choice value="even"/><Choice value="odd"/>
  </Choices>
</View>"""


def answer(digit: int) -> dict:
    traits = (["big"] if digit >= 5 else []) + (["loopy"] if digit in (0, 6, 8, 9) else [])
    return {"traits": traits, "parity": "even" if digit % 2 == 0 else "odd"}


def annotate(ls, task, digit):
    a = answer(digit)
    result = [{"from_name": "parity", "to_name": "image", "type": "choices", "value": {"choices": [a["parity"]]}}]
    if a["traits"]:  # Label Studio saves no result for an empty multiple choice
        result.append({"from_name": "traits", "to_name": "image", "type": "choices", "value": {"choices": a["traits"]}})
    ls.api("POST", f"/api/tasks/{task}/annotations", json={"result": result})


def test_a_multi_label_and_a_single_choice_question_learn_and_reorder(label_studio, digits64, tmp_path):
    ls = label_studio
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token(), "STRATEGY": "margin", **FAST}
    with BackendProcess(tmp_path, env) as backend:
        project = ls.api("POST", "/api/projects", json={"title": "two questions", "label_config": CONFIG})["id"]
        ids = ls.upload_files(project, [(name, data) for name, data, _ in digits64[:30]])
        truth = {t: int(digits64[i][2]) for i, t in enumerate(ids)}
        v0 = connect_and_wait_for_version_0(ls, backend, project)
        predictions = ls.predictions(project)
        assert {p["task"] for p in predictions} == set(ids)
        for p in predictions:  # one result per question; the multi-label one holds a list (possibly empty)
            by_name = {r["from_name"]: r["value"]["choices"] for r in p["result"]}
            assert set(by_name) == {"traits", "parity"}, p["result"]
            assert set(by_name["traits"]) <= {"big", "loopy"} and len(by_name["parity"]) == 1

        labeled = ids[:14]
        for t in labeled:
            annotate(ls, t, truth[t])
        assert any(not answer(truth[t])["traits"] for t in labeled)  # some say "none of these"
        v1 = wait_for(lambda: (v := project_version(ls, project)) != v0 and v, 120, "a trained version")
        assert "-t1-" in v1
        st = wait_for(lambda: (s := status(backend, project))["queue_version"] == v1 and s, 60, "the publish")
        assert st["round"] == 1 and st["labels_used"] == 14
        assert st["labels"] == ["traits/big", "traits/loopy", "parity/even", "parity/odd"]
        assert st["last_round"]["loss_last"] < st["last_round"]["loss_first"]
        meta = json.loads((tmp_path / "models" / "projects" / str(project) / v1 / "meta.json").read_text())
        assert {int(k): json.loads(v) for k, v in meta["labels_used"].items()} == {t: answer(truth[t]) for t in labeled}
        assert [g["multiple"] for g in meta["config"]["groups"]] == [True, False]
        unlabeled = set(ids) - set(labeled)
        assert versions_of(ls, project)[v1] == unlabeled

        # the queue follows the new version's structured margin (the mean over the two questions)
        served = ls.walk_queue(project)
        assert set(served) == unlabeled
        tasks = [{"id": t["id"], "data": t["data"]} for t in ls.tasks(project) if t["id"] in unlabeled]
        r = requests.post(f"{backend.url}/predict", json={"tasks": tasks, "project": str(project)}, timeout=60).json()
        assert {x["model_version"] for x in r["results"]} == {v1}
        assert all(0.0 <= x["acquisition"] <= 1.0 for x in r["results"])
        assert served_in_acquisition_order(served, {t["id"]: x["acquisition"] for t, x in zip(tasks, r["results"])})
        history = [
            json.loads(line)
            for line in (tmp_path / "models" / "projects" / str(project) / "history.jsonl").read_text().splitlines()
        ]
        expected = {}
        for t in labeled:
            for label in answer(truth[t])["traits"]:
                expected[f"traits/{label}"] = expected.get(f"traits/{label}", 0) + 1
            expected[f"parity/{answer(truth[t])['parity']}"] = (
                expected.get(f"parity/{answer(truth[t])['parity']}", 0) + 1
            )
        assert history[-1]["per_class"] == expected
        assert history[-1]["prequential"]["n"] == 14
        page = requests.get(f"{backend.url}/dashboard", timeout=30)  # labels per output on the dashboard
        assert page.status_code == 200 and "traits/big" in page.text and "parity/odd" in page.text


def test_structured_configs_refuse_strategies_that_cannot_value_them(label_studio, digits64, tmp_path):
    ls = label_studio
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token(), **FAST}
    with BackendProcess(tmp_path, env) as backend:
        project = ls.api("POST", "/api/projects", json={"title": "refused", "label_config": CONFIG})["id"]
        ls.upload_files(project, [(name, data) for name, data, _ in digits64[:3]])
        refused = ls.session.post(
            f"{ls.url}/api/ml",
            json={"project": project, "url": backend.url, "title": "x", "extra_params": {"strategy": "gini"}},
            timeout=60,
        )
        # Label Studio says only "400 ... check the ML backend server console logs": the reason is there
        assert refused.status_code == 400 and "incompatible with the current labeling configuration" in refused.text
        assert "POST /setup refused (400): this label config asks traits (multi-label" in backend.log()
        r = requests.post(
            f"{backend.url}/setup",
            json={"project": str(project), "label_config": CONFIG, "extra_params": {"strategy": "gini"}},
            timeout=30,
        )
        assert r.status_code == 400
        message = r.json()["message"]
        assert "traits (multi-label, 2 labels), parity (single-choice, 2 labels)" in message
        assert "strategy 'gini' values single-choice projects only" in message and "margin" in message
        # a region tag is still refused, naming it
        boxes = (
            '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
            '<Label value="a"/></RectangleLabels></View>'
        )
        r = requests.post(f"{backend.url}/setup", json={"project": str(project), "label_config": boxes}, timeout=30)
        assert r.status_code == 422 and "no <Choices> tag found (control tags: RectangleLabels)" in r.json()["message"]
