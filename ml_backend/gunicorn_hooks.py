"""gunicorn settings module (``gunicorn -c python:ml_backend.gunicorn_hooks``): the hooks that
``python -m ml_backend`` sets itself, for a gunicorn started directly (the container)."""

from ml_backend.service.pools import post_worker_init

__all__ = ["post_worker_init"]
