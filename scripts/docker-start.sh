#!/bin/sh
# Container entry point: gunicorn with threads. One worker per GPU (the default, WORKERS=1): each
# worker process holds its own copy of every model, its own feature cache and its own training
# threads; several workers on one GPU would multiply memory and train the same project twice.
# Threads serve concurrent /predict, /setup and /webhook calls while training runs in the background.
exec gunicorn --bind "${HOST:-0.0.0.0}:${PORT:-9090}" --workers "${WORKERS:-1}" --threads "${THREADS:-64}" \
    --worker-class gthread --timeout 300 --no-control-socket -c python:ml_backend.service.pools --log-level "$(echo "${LOG_LEVEL:-INFO}" | tr 'A-Z' 'a-z')" \
    ml_backend.wsgi:app
