#!/usr/bin/env bash
# The test command: installs what is missing (scripts/setup_env.sh), then runs the whole suite,
# including the integration tests that start a real Label Studio on 127.0.0.1.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k queue -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
