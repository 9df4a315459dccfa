#!/usr/bin/env bash
# The test command: installs what is missing (scripts/setup_env.sh), checks lint and formatting
# (ruff, configured in pyproject.toml), then runs the whole suite, including the integration tests
# that start a real Label Studio on 127.0.0.1.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k queue -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --tests  # the tests also need a browser (chromium)
echo "[test] ruff check and ruff format --check"
.venv/bin/ruff check --quiet . || { echo "[test] ruff check failed: .venv/bin/ruff check --fix . fixes some" >&2; exit 1; }
.venv/bin/ruff format --check --quiet . || { echo "[test] not formatted: .venv/bin/ruff format ." >&2; exit 1; }
exec .venv/bin/python -m pytest "$@"
