"""WSGI entry point: ``gunicorn ml_backend.wsgi:app``."""

import sys

from ml_backend.errors import ConfigError

try:
    from ml_backend.app import create_app

    app = create_app()
except ConfigError as exc:  # a clear message, no traceback; exit code 3 stops gunicorn's arbiter
    print(f"configuration error: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)
