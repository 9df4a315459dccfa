"""The hooks by name: ActiveAdaptationModel has label-studio-ml 2.x's setup/predict/fit, and the
protocol's routes go through them (the real backend, small CNN)."""

import inspect

import pytest

from ml_backend.model import ActiveAdaptationModel
from ml_backend.service.security import HEADER
from tests.helpers import CONFIG, tasks_from


def test_the_hooks_have_label_studio_ml_names_and_signatures():
    setup = inspect.signature(ActiveAdaptationModel.setup)
    predict = inspect.signature(ActiveAdaptationModel.predict)
    fit = inspect.signature(ActiveAdaptationModel.fit)
    assert list(setup.parameters) == ["self"]
    assert list(predict.parameters) == ["self", "tasks", "context", "kwargs"]
    assert predict.parameters["context"].default is None
    assert list(fit.parameters) == ["self", "event", "data", "kwargs"]
    assert fit.parameters["data"].default is None
    for sig in (predict, fit):
        assert list(sig.parameters.values())[-1].kind is inspect.Parameter.VAR_KEYWORD


@pytest.fixture
def calls(monkeypatch):
    """Which hook each request went through (the hooks still run: the spy calls them)."""
    seen = []
    for name in ("setup", "predict", "fit"):
        original = getattr(ActiveAdaptationModel, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            seen.append((_name, str(self.project_id)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ActiveAdaptationModel, name, spy)
    return seen


def test_the_routes_go_through_the_hooks(client, app, digits64, calls):
    assert client.post("/setup", json={"project": 3, "schema": CONFIG}).status_code == 200
    r = client.post("/predict", json={"project": 3, "tasks": tasks_from(digits64[:2])})
    assert r.status_code == 200 and len(r.get_json()["results"]) == 2
    secret = app.extensions["backend"].webhook_secrets.for_project("3")
    r = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 3}}, headers={HEADER: secret})
    assert r.status_code == 200
    assert calls == [("setup", "3"), ("predict", "3"), ("fit", "3")]


def test_fit_hands_the_event_to_the_worker_and_returns_at_once(app):
    backend = app.extensions["backend"]
    ActiveAdaptationModel(backend, "5", CONFIG).setup()
    outcome = ActiveAdaptationModel(backend, "5").fit("ANNOTATION_CREATED", {"project": {"id": 5}})
    assert isinstance(outcome, str) and outcome
    assert backend.metrics()["events"] == {"ANNOTATION_CREATED": 1}
    # nothing was trained in the call: the served version is still the untrained one
    assert "-t0-" in backend.projects["5"].version
