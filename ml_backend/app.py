"""The HTTP layer: Label Studio's ML backend protocol (label-studio-ml 2.x route names).

The protocol's routes call the hooks of :class:`ml_backend.model.ActiveAdaptationModel`
(``setup``, ``predict``, ``fit``); the status routes read the :class:`Backend` facade. Nothing here
reaches past the facade."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
import time

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ml_backend.errors import BackendError, BadRequest
from ml_backend.model import ActiveAdaptationModel
from ml_backend.service.backend import Backend
from ml_backend.service.logs import SecretRegistry, configure_logging
from ml_backend.service.projects import project_key
from ml_backend.service.security import HEADER
from ml_backend.service.settings import Settings

log = logging.getLogger(__name__)

# /webhook authenticates itself (security.py): Label Studio's auto-created project webhook sends
# the secret header this backend sets on it, never basic auth; START_TRAINING arrives through LS's
# ML API client, which sends basic auth when the connection has it.
PUBLIC_ROUTES = frozenset({"/health", "/webhook"})
RESERVED_THREADS = 8  # gunicorn threads kept free of /predict for /webhook, /setup, /health, /status


def _json_body() -> dict:
    """The request's JSON object. The body's size is bounded by MAX_REQUEST_MB (413 beyond it);
    JSON nested too deeply for the parser is a 400 like any other malformed body."""
    raw = request.get_data(cache=True)
    if not raw:
        raise BadRequest("empty request body; expected a JSON object")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(f"expected a JSON object, got {type(data).__name__}")
    return data


def create_app(settings: Settings | None = None, service: Backend | None = None) -> Flask:
    secrets = SecretRegistry()
    settings = settings or Settings.from_env()
    for secret in (settings.label_studio_api_key, settings.basic_auth_pass, settings.webhook_secret):
        secrets.add(secret)
    configure_logging(settings.log_level, secrets)
    service = service or Backend(settings, secrets)
    service.resume()  # republish what a crash or an outage left unpublished

    app = Flask("ml_backend")
    app.config["settings"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_mb * 2**20
    app.extensions["backend"] = service
    _guard(app, settings)
    _label_studio_routes(app, service, settings)
    _webhook_route(app, service, settings)
    _status_routes(app, service, settings)
    return app


def _basic_auth_ok(settings: Settings) -> bool:
    header = request.headers.get("Authorization", "")
    user = password = ""
    if header[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except Exception:
            user = password = ""
    ok_user = hmac.compare_digest(user.encode(), settings.basic_auth_user.encode())
    ok_pass = hmac.compare_digest(password.encode(), settings.basic_auth_pass.encode())
    return ok_user and ok_pass


def _guard(app: Flask, settings: Settings) -> None:
    """Basic auth on every route but the public ones; every error as a JSON answer, never a traceback."""

    @app.before_request
    def _basic_auth():
        if not settings.basic_auth_enabled or request.path in PUBLIC_ROUTES or _basic_auth_ok(settings):
            return None
        return Response(
            '{"status": "error", "message": "authentication required"}',
            401,
            {"WWW-Authenticate": 'Basic realm="ml-backend"', "Content-Type": "application/json"},
        )

    @app.errorhandler(BackendError)
    def _backend_error(exc: BackendError):
        # Label Studio shows only "400 Client Error ... check the ML backend server console logs"
        log.warning("%s %s refused (%d): %s", request.method, request.path, exc.status, exc)
        return jsonify(status="error", message=str(exc)), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return jsonify(status="error", message=f"{exc.name}: {exc.description}"), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(status="error", message=f"internal error ({type(exc).__name__}); see the backend log"), 500


def _label_studio_routes(app: Flask, service: Backend, settings: Settings) -> None:
    """/setup and /predict of Label Studio's ML backend protocol (label-studio-ml 2.x names)."""

    @app.post("/setup")
    def setup():
        data = _json_body()
        schema = data.get("schema") or data.get("label_config")
        if not schema:
            raise BadRequest("missing 'schema' (the project's label config)")
        connection = {k: data.get(k) for k in ("hostname", "access_token", "extra_params")}
        model = ActiveAdaptationModel(service, data.get("project"), schema, connection)
        return jsonify(model_version=model.setup())

    @app.post("/projects/<project>/strategy")
    def choose_strategy(project: str):
        """{"strategy": "badge"} gives a project its own strategy; {"strategy": null} returns it to STRATEGY."""
        data = _json_body()
        if "strategy" not in data:
            raise BadRequest("missing 'strategy' (a strategy spec such as \"badge\", or null for STRATEGY)")
        spec = data["strategy"]
        if spec is not None and (not isinstance(spec, str) or not spec.strip()):
            raise BadRequest('\'strategy\' must be a strategy spec such as "badge" or "adma:lam=0.1", or null')
        return jsonify(service.choose_strategy(project, spec.strip() if spec else None))

    # /predict requests hold a gunicorn thread for as long as they score; beyond this many at once
    # they are refused, so that the fast routes never queue behind them (gthread queues in FIFO)
    max_predicting = max(1, settings.threads - RESERVED_THREADS)
    predict_slots = threading.BoundedSemaphore(max_predicting)

    @app.post("/predict")
    def predict():
        if not predict_slots.acquire(blocking=False):
            message = f"busy: {max_predicting} /predict requests are running (THREADS - 8); retry shortly"
            return jsonify(status="error", message=message), 503, {"Retry-After": "1"}
        try:
            data = _json_body()
            if "tasks" not in data:
                raise BadRequest("missing 'tasks' (a list of Label Studio tasks)")
            tasks = data["tasks"]
            project = data.get("project")
            if project is None and isinstance(tasks, list) and tasks and isinstance(tasks[0], dict):
                project = tasks[0].get("project")
            started = time.perf_counter()
            model = ActiveAdaptationModel(service, project, data.get("label_config"))
            results = model.predict(tasks, context=data.get("context"))
            log.info(
                "predicted %d task(s) for project %s in %.2fs", len(results), project, time.perf_counter() - started
            )
            return jsonify(results=results)
        finally:
            predict_slots.release()


def _webhook_route(app: Flask, service: Backend, settings: Settings) -> None:
    @app.post("/webhook")
    def webhook():
        """Events are hints (project id + action): nothing in a payload is trusted, labels, the
        label config and new tasks are re-read from Label Studio. Answers in milliseconds."""
        data = _json_body()
        action = data.get("action")
        if not isinstance(action, str) or not action or len(action) > 64:
            raise BadRequest("missing 'action'")
        key = project_key(data.get("project"))
        authenticated = service.webhook_authentic(key, request.headers.get(HEADER)) or (
            settings.basic_auth_enabled and _basic_auth_ok(settings)
        )
        # LS sends "Start Training" without any credentials when the connection has no basic auth:
        # accepted as a hint that cannot force anything (a debounced label check)
        if not authenticated and not (action == "START_TRAINING" and not settings.basic_auth_enabled):
            return jsonify(
                status="error",
                message=(
                    f"webhook events need the {HEADER} header that this backend sets on the project's webhook in "
                    "Label Studio (or basic auth); see docs/security.md"
                ),
            ), 401
        model = ActiveAdaptationModel(service, key)
        outcome = model.fit(action, data, authenticated=authenticated)  # only sets flags
        return jsonify(status="ok", action=action, outcome=outcome)


def _status_routes(app: Flask, service: Backend, settings: Settings) -> None:
    @app.get("/")
    def root():
        """The dashboard for a browser; the health answer for everything else (e.g. `curl /`)."""
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
            return dashboard_page()
        return health()

    @app.get("/dashboard")
    def dashboard_page():
        from ml_backend.service.dashboard import render

        page = render(service.metrics(), service.histories(), settings.label_studio_url)
        return Response(page, 200, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"})

    @app.get("/health")
    def health():
        return jsonify(
            status="UP",
            model_class="ActiveAdaptation",
            backbone=settings.backbone,
            strategy=settings.strategy,
            device=str(service.device),
            instance=service.instance_id,
        )

    @app.get("/versions")
    def versions():
        return jsonify(versions=service.versions(request.args.get("project")))

    @app.get("/metrics")
    @app.get("/status")
    def metrics():
        return jsonify(service.metrics())
