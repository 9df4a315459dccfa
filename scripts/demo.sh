#!/usr/bin/env bash
# The demo: installs what is missing (scripts/setup_env.sh), then starts Label Studio and the
# backend on 127.0.0.1 with a demo project. Ctrl-C stops everything. Options: see --help.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m ml_backend.demo "$@"
