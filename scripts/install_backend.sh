#!/usr/bin/env bash
# Install the backend's dependencies from the lock (requirements.txt) into the Python given.
# The one install step shared by scripts/setup_env.sh (dev, CI) and the Dockerfile.
#   install_backend.sh cuda PYTHON   exactly requirements.txt: PyPI's torch, which carries its CUDA
#                                    libraries, runs on the CPU and uses a GPU when there is one
#                                    (what CI installs and tests)
#   install_backend.sh cpu PYTHON    the same versions, but torch/torchvision as CPU-only wheels
#                                    from download.pytorch.org and no CUDA libraries (~5 GB smaller)
set -euo pipefail
flavor=${1:-cuda}
python=${2:-python3}
here="$(cd "$(dirname "$0")" && pwd)"
lock="${LOCK:-$here/../requirements.txt}"
[[ -f "$lock" ]] || lock="$here/requirements.txt"   # inside the Docker build context
pip_install() { "$python" -m pip install --disable-pip-version-check "$@"; }
case "$flavor" in
    cuda)
        pip_install -r "$lock" ;;
    cpu)
        torch=$(grep -E '^torch==' "$lock" | cut -d= -f3)
        vision=$(grep -E '^torchvision==' "$lock" | cut -d= -f3)
        pip_install --index-url https://download.pytorch.org/whl/cpu "torch==${torch}+cpu" "torchvision==${vision}+cpu"
        grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==' "$lock" > /tmp/requirements-cpu.txt
        pip_install -r /tmp/requirements-cpu.txt ;;
    *)
        echo "usage: install_backend.sh cuda|cpu [python]" >&2; exit 2 ;;
esac
