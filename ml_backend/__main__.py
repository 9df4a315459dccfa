"""``python -m ml_backend``: serve with gunicorn (threads) on $HOST:$PORT (default 0.0.0.0:9090)."""
from __future__ import annotations

import argparse
import sys

from .errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description=__doc__)
    parser.add_argument("--list", action="store_true", help="list backbones and strategies, then exit")
    parser.add_argument("--check", action="store_true", help="validate the settings and load the weights, then exit")
    parser.add_argument("--webhook-header", metavar="PROJECT_ID",
                        help="print the X-Active-Adaptation-Secret header value for a project's webhook "
                             "(to set it by hand in Label Studio), then exit")
    args = parser.parse_args(argv)

    if args.webhook_header is not None:
        from .errors import BadRequest
        from .security import HEADER, WebhookSecrets
        from .service import project_key
        from .settings import Settings

        try:
            settings = Settings.from_env()
            key = project_key(args.webhook_header)
        except (ConfigError, BadRequest) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{HEADER}: {WebhookSecrets(settings.model_dir, settings.webhook_secret).for_project(key)}")
        return 0

    import strategies

    from .models import available_backbones
    from .settings import Settings

    if args.list:
        print("backbones:", ", ".join(available_backbones()))
        print("strategies:")
        for item in strategies.describe():
            print(f"  {item['name']:<18} {item['description']}  (needs: {', '.join(item['needs'])})")
            if item["options"]:
                options = ":".join(f"{k}={v}" for k, v in item["options"].items())
                print(f"  {'':<18} options (defaults): {item['name']}:{options}")
        return 0
    try:
        settings = Settings.from_env()
        if args.check:
            from .app import create_app

            app = create_app(settings)
            app.extensions["model_service"].close()
            print("configuration OK:", settings)
            return 0
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):
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
            from .app import create_app

            try:
                return create_app(settings)
            except ConfigError as exc:  # e.g. weights that cannot be loaded: exit code 3 stops the arbiter
                print(f"configuration error: {exc}", file=sys.stderr, flush=True)
                sys.exit(3)

    _Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
