#!/usr/bin/env bash
# Create (or update) the two virtual environments from the lock files. Idempotent: a venv is
# rebuilt only when its lock file changed. Needs only python3.11 with venv and the package index.
#   .venv            the backend, its tests and scripts   (requirements.txt + requirements-dev.txt + this package)
#   .cache/ls-venv   Label Studio 1.23.2 for tests and the demo  (requirements-labelstudio.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

quiet() {  # run a pip command, hiding pip's warnings about unreachable local index locations
    "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "[setup] failed: $*" >&2; exit 1; }
}

make_venv() {  # dir lockfile install-command...
    local dir=$1 lock=$2; shift 2
    local stamp="$dir/.lock.sha256" want
    want=$(sha256sum "$lock" requirements-dev.txt pyproject.toml scripts/install_backend.sh | sha256sum | cut -d' ' -f1)
    if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "[setup] $dir is up to date"; return
    fi
    echo "[setup] installing $dir from $lock (a few minutes on a fresh machine)"
    [[ -x "$dir/bin/python" ]] || "$PYTHON" -m venv "$dir"
    "$@"
    echo "$want" > "$stamp"
    INSTALLED=1
}
INSTALLED=0

install_backend_venv() {
    export PIP_QUIET=1  # one line per venv, not one per requirement
    # the same install step as the Dockerfile's (FLAVOR=cuda: exactly the lock)
    # TORCH_FLAVOR=cpu: CPU-only torch wheels from download.pytorch.org (~5 GB smaller; needs that index)
    quiet bash scripts/install_backend.sh "${TORCH_FLAVOR:-cuda}" .venv/bin/python
    quiet .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    quiet .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e ".[test]"
}

install_ls_venv() {
    quiet .cache/ls-venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-labelstudio.txt
}

install_system_data() {
    # Fashion-MNIST for the pretrained simulation track and its test (Debian's package; optional)
    [[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]] && return
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
        echo "[setup] installing Debian's dataset-fashion-mnist (the fashion-mnist track)"
        (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 \
            && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
            || echo "[setup] could not install dataset-fashion-mnist; its end-to-end test will be skipped"
    else
        echo "[setup] Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); its end-to-end test will be skipped"
    fi
}

install_browser() {
    # Debian's chromium + chromium-driver for the dashboard's real-browser test (optional)
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
        echo "[setup] installing Debian's chromium and chromium-driver (the dashboard's browser test)"
        (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || {
            apt-get update -q >/dev/null 2>&1 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }) \
            || echo "[setup] could not install chromium; the dashboard's browser test will be skipped"
    else
        echo "[setup] chromium is not installed (apt-get install chromium chromium-driver); the browser test will be skipped"
    fi
}

install_system_data
install_browser
make_venv .venv requirements.txt install_backend_venv
mkdir -p .cache
make_venv .cache/ls-venv requirements-labelstudio.txt install_ls_venv
[[ $INSTALLED -eq 1 ]] || exit 0  # nothing installed: the checks below cost ~20 s (torch, Label Studio's CLI)
.venv/bin/python -c "import torch, torchvision, flask, label_studio_sdk; print('[setup] backend venv OK: torch', torch.__version__)"
.cache/ls-venv/bin/label-studio version 2>/dev/null | grep -m1 -i "label studio version" || .cache/ls-venv/bin/python -c "import label_studio; print('[setup] label-studio', label_studio.__version__)"
