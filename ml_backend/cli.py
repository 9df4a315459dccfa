"""``python -m ml_backend``: serve with gunicorn (threads) on $HOST:$PORT (default 0.0.0.0:9090)."""

from __future__ import annotations

import argparse
import sys

from ml_backend.errors import BadRequest, ConfigError


def _webhook_header(project: str) -> int:
    from ml_backend.service.projects import project_key
    from ml_backend.service.security import HEADER, WebhookSecrets
    from ml_backend.service.settings import Settings
    from ml_backend.service.store import Store

    try:
        settings = Settings.from_env()
        key = project_key(project)
    except (ConfigError, BadRequest) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{HEADER}: {WebhookSecrets(Store(settings.model_dir), settings.webhook_secret).for_project(key)}")
    return 0


def _list() -> int:
    import strategies
    from ml_backend.core.architectures import describe_backbones, strategies_refused_by_family

    print("backbones (BACKBONE=name; FREEZE moves the frozen boundary; docs/backbones.md):")
    for row in describe_backbones():
        names = ", ".join(row["architectures"])
        if row["refused"]:
            print(f"  {row['family']:<19} refused: {row['refused']}\n  {'':<19} ({names})")
            continue
        refused = strategies_refused_by_family(row["family"])
        can = (
            "every strategy"
            if not refused
            else "every strategy except " + ", ".join(f"{name} ({reason})" for name, reason in refused.items())
        )
        size = f"; input fixed at {row['fixed_size']} px" if row["fixed_size"] else ""
        print(f"  {row['family']:<19} {names}\n  {'':<19} {can}{size}")
    print("strategies:")
    for item in strategies.describe():
        print(f"  {item['name']:<18} {item['description']}  (needs: {', '.join(item['needs'])})")
        if item["options"]:
            options = ":".join(f"{k}={v}" for k, v in item["options"].items())
            print(f"  {'':<18} options (defaults): {item['name']}:{options}")
    return 0


def _check(settings) -> int:
    from ml_backend.app import create_app

    app = create_app(settings)
    app.extensions["backend"].close()
    print("configuration OK:", settings)
    return 0


def _serve(settings) -> int:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        """The app is built in each worker process (never in the master and then forked): a worker
        that the OOM killer or a crash replaces restores every project from MODEL_DIR itself."""

        def load_config(self):
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", settings.threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("timeout", 300)  # LS waits up to 100 s for /predict
            self.cfg.set("loglevel", settings.log_level.lower())
            self.cfg.set("accesslog", None)
            self.cfg.set("control_socket_disable", True)  # one shared path in $HOME would clash between servers

        def load(self):
            from ml_backend.app import create_app

            try:
                return create_app(settings)
            except ConfigError as exc:  # e.g. weights that cannot be loaded: exit code 3 stops the arbiter
                print(f"configuration error: {exc}", file=sys.stderr, flush=True)
                sys.exit(3)

    Server().run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description=__doc__)
    parser.add_argument("--list", action="store_true", help="list backbones and strategies, then exit")
    parser.add_argument("--check", action="store_true", help="validate the settings and load the weights, then exit")
    parser.add_argument(
        "--settings",
        action="store_true",
        help="print every setting (environment variable, default, meaning) as a Markdown table, then exit",
    )
    parser.add_argument(
        "--webhook-header",
        metavar="PROJECT_ID",
        help="print the X-Active-Adaptation-Secret header value for a project's webhook "
        "(to set it by hand in Label Studio), then exit",
    )
    args = parser.parse_args(argv)
    if args.settings:
        from ml_backend.service.settings import settings_table

        print(settings_table())
        return 0
    if args.webhook_header is not None:
        return _webhook_header(args.webhook_header)
    if args.list:
        return _list()
    from ml_backend.service.settings import Settings

    try:
        settings = Settings.from_env()
        if args.check:
            return _check(settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return _serve(settings)
