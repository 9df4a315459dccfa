"""Housekeeping jobs: re-reading the label config (PROJECT_UPDATED) and securing the project's
webhook with its authentication header."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import requests

from ml_backend.errors import LabelConfigError
from ml_backend.service.jobs.context import JobContext
from ml_backend.service.label_config import parse_label_config
from ml_backend.service.ls_client import ProjectAPI
from ml_backend.service.security import HEADER

log = logging.getLogger(__name__)


def check_config(ctx: JobContext) -> None:
    """PROJECT_UPDATED: re-read the label config from Label Studio (never from the event)."""
    state = ctx.state
    project = ctx.call(lambda: ctx.api().project(), "reading the project")
    try:
        config = parse_label_config(project.get("label_config") or "")
    except LabelConfigError as exc:
        ctx.status.last_error = f"label config not supported: {exc}"
        log.error(
            "project %s: the label config in Label Studio is not supported (%s); the previous model keeps serving",
            state.key,
            exc,
        )
        return
    if ctx.projects.update_config(state, config):
        ctx.projects.save_registration(state)
        log.info("project %s: label config changed (labels %s): %s", state.key, list(config.labels), state.version)


def secure_webhook(ctx: JobContext) -> None:
    """Put this project's secret header on the webhooks Label Studio created for this backend
    (the ones at <url>/webhook of an ML backend connection whose /health is this backend's)."""
    api = ctx.api()
    ctx.status.set("securing", "setting the webhook's authentication header in Label Studio")
    try:
        _set_webhook_header(ctx, api, ctx.webhook_secret())
    finally:
        ctx.status.set("idle", "")


def _set_webhook_header(ctx: JobContext, api: ProjectAPI, secret: str) -> None:
    key = ctx.state.key
    # On a first connection Label Studio calls /setup before it saves the connection and creates
    # its webhook: poll for them for a few seconds before giving up (and retrying later).
    deadline = time.monotonic() + 10.0
    while True:
        urls = [u.rstrip("/") for u in api.ml_backend_urls() if u]
        mine = {u + "/webhook" for u in urls if _is_this_backend(u, ctx.instance_id)}
        hooks = [
            h for h in api.webhooks() if str(h.get("url") or "").rstrip("/") in mine and str(h.get("project")) == key
        ]
        if hooks or time.monotonic() > deadline or ctx.stopped():
            break
        time.sleep(0.5)
    if not mine:
        raise RuntimeError(
            f"none of the project's ML backend connections ({len(urls)}) reaches this backend's "
            "/health; set the webhook header by hand (docs/security.md)"
        )
    if not hooks:
        undotted = [
            u for u in sorted(mine) if "." not in (urlsplit(u).hostname or "") and urlsplit(u).hostname != "localhost"
        ]
        if undotted:  # Django's URL validator refuses such a host: Label Studio created no webhook, silently
            raise RuntimeError(
                f"Label Studio created no webhook for {undotted[0]}: it refuses webhook URLs whose "
                "host has no dot; connect the backend by a name with a dot (e.g. "
                "http://backend.internal:9090 in docker compose) or an IP address"
            )
        raise RuntimeError("Label Studio has no webhook for this backend's connection yet")
    changed = 0
    for hook in hooks:
        headers = dict(hook.get("headers") or {})
        if headers.get(HEADER) != secret:
            headers[HEADER] = secret
            api.set_webhook_headers(hook["id"], headers)
            changed += 1
    ctx.status.webhook = f"secured ({len(hooks)} webhook(s))"
    log.info("project %s: webhook authentication set on %d of %d webhook(s)", key, changed, len(hooks))


def _is_this_backend(url: str, instance_id: str) -> bool:
    try:
        answer = requests.get(f"{url}/health", timeout=3).json()
    except (requests.RequestException, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("instance") == instance_id
