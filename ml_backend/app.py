"""The HTTP layer: Label Studio's ML backend protocol (label-studio-ml 2.x route names)."""
from __future__ import annotations

import base64
import hmac
import logging
import time

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .errors import BackendError, BadRequest
from .learning import Learner
from .logs import SecretRegistry, configure_logging
from .service import ModelService
from .settings import Settings

log = logging.getLogger(__name__)

# Label Studio's auto-created project webhook sends no credentials (its Webhook row has no
# headers), so event webhooks must pass without basic auth. They are only hints: the backend
# never trusts an event payload as training data, it re-reads labels from Label Studio with its
# own API key. START_TRAINING arrives through LS's ML API client, which does send basic auth.
PUBLIC_ROUTES = frozenset({"/health", "/webhook"})


def _json_body() -> dict:
    data = request.get_json(silent=True)
    if data is None:
        raw = request.get_data(cache=True)
        if not raw:
            raise BadRequest("empty request body; expected a JSON object")
        raise BadRequest("request body is not valid JSON")
    if not isinstance(data, dict):
        raise BadRequest(f"expected a JSON object, got {type(data).__name__}")
    return data


def create_app(settings: Settings | None = None, service: ModelService | None = None) -> Flask:
    secrets = SecretRegistry()
    settings = settings or Settings.from_env()
    for secret in (settings.label_studio_api_key, settings.basic_auth_pass):
        secrets.add(secret)
    configure_logging(settings.log_level, secrets)
    service = service or ModelService(settings, secrets)
    learner = service.learner or Learner(service)

    app = Flask("ml_backend")
    app.config["settings"] = settings
    app.extensions["model_service"] = service

    @app.before_request
    def _basic_auth():
        if not settings.basic_auth_enabled or request.path in PUBLIC_ROUTES:
            return None
        header = request.headers.get("Authorization", "")
        user = password = ""
        if header[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
            except Exception:
                user = password = ""
        ok_user = hmac.compare_digest(user.encode(), settings.basic_auth_user.encode())
        ok_pass = hmac.compare_digest(password.encode(), settings.basic_auth_pass.encode())
        if ok_user and ok_pass:
            return None
        return Response(
            '{"status": "error", "message": "authentication required"}', 401,
            {"WWW-Authenticate": 'Basic realm="ml-backend"', "Content-Type": "application/json"},
        )

    @app.errorhandler(BackendError)
    def _backend_error(exc: BackendError):
        return jsonify(status="error", message=str(exc)), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return jsonify(status="error", message=f"{exc.name}: {exc.description}"), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(status="error", message=f"internal error ({type(exc).__name__}); see the backend log"), 500

    @app.get("/")
    @app.get("/health")
    def health():
        return jsonify(
            status="UP", model_class="ActiveAdaptation", backbone=settings.backbone,
            strategy=settings.strategy, device=str(service.device),
        )

    @app.post("/setup")
    def setup():
        data = _json_body()
        schema = data.get("schema") or data.get("label_config")
        if not schema:
            raise BadRequest("missing 'schema' (the project's label config)")
        version = service.setup(
            data.get("project"), schema, str(data.get("hostname") or ""), str(data.get("access_token") or ""),
        )
        return jsonify(model_version=version)

    @app.post("/predict")
    def predict():
        data = _json_body()
        if "tasks" not in data:
            raise BadRequest("missing 'tasks' (a list of Label Studio tasks)")
        tasks = data["tasks"]
        project = data.get("project")
        if project is None and isinstance(tasks, list) and tasks and isinstance(tasks[0], dict):
            project = tasks[0].get("project")
        started = time.perf_counter()
        results = service.predict(project, tasks, data.get("label_config"))
        log.info("predicted %d task(s) for project %s in %.2fs", len(results), project, time.perf_counter() - started)
        return jsonify(results=results)

    @app.post("/webhook")
    def webhook():
        data = _json_body()
        action = data.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("missing 'action'")
        service.record_event(action)
        outcome = learner.handle(action, data)  # only sets flags: answers in milliseconds
        return jsonify(status="ok", action=action, outcome=outcome)

    @app.get("/versions")
    def versions():
        return jsonify(versions=service.versions(request.args.get("project")))

    @app.get("/metrics")
    @app.get("/status")
    def metrics():
        return jsonify(service.metrics())

    return app
