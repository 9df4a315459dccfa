#!/usr/bin/env bash
# The demo: installs what is missing (scripts/setup_env.sh), then starts Label Studio and the
# backend on 127.0.0.1 with a demo project. Ctrl-C stops everything. Options: see --help.
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then  # instant, with the system Python: nothing is installed for it
        PYTHON="${PYTHON:-python3.11}"
        command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
        exec "$PYTHON" -m ml_backend.demo.options "$@"
    fi
done
bash scripts/setup_env.sh
exec .venv/bin/python -m ml_backend.demo "$@"
