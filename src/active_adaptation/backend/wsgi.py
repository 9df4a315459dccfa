"""WSGI entry point: ``gunicorn active_adaptation.backend.wsgi:app``."""
import sys

from active_adaptation.errors import ConfigError

try:
    from active_adaptation.backend.app import create_app

    app = create_app()
except ConfigError as exc:  # a clear message, no traceback; exit code 3 stops gunicorn's arbiter
    print(f"configuration error: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)
