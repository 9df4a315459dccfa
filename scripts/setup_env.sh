#!/usr/bin/env bash
# Create (or update) the two virtual environments from the lock files, saying what each step installs
# and how big it is. Idempotent: a venv is rebuilt only when its lock file changed (a stamp in it).
# Needs only python3.11 with venv and the package index.
#   .venv            the backend, its tests and scripts   (requirements.txt + requirements-dev.txt + this package)
#   .cache/ls-venv   Label Studio 1.23.2 for tests and the demo  (requirements-labelstudio.txt)
# As root with apt-get it also installs Debian's dataset-fashion-mnist (the demo's photos) and, with
# --tests (scripts/test.sh), chromium and chromium-driver (the browser tests); the demo never installs them.
# torch: TORCH_FLAVOR=cpu|cuda chooses; unset, a new .venv gets the CPU build from download.pytorch.org
# on a machine without an NVIDIA GPU when that index is reachable, else PyPI's build (CUDA libraries included).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TESTS=0
[[ ${1:-} == --tests ]] && TESTS=1

say() { echo "[setup] $*"; }

pip_run() {  # a pip command with its progress shown, hiding pip's warnings about unreachable local index locations
    "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) || { say "failed: $*" >&2; exit 1; }
}

make_venv() {  # dir lockfile what install-command...
    local dir=$1 lock=$2 what=$3; shift 3
    local stamp="$dir/.lock.sha256" want
    want=$(sha256sum "$lock" requirements-dev.txt pyproject.toml scripts/install_backend.sh | sha256sum | cut -d' ' -f1)
    if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        say "$dir is up to date"; return
    fi
    say "installing $dir: $what"
    [[ -x "$dir/bin/python" ]] || "$PYTHON" -m venv "$dir"
    "$@"
    echo "$want" > "$stamp"
    INSTALLED=1
}
INSTALLED=0

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 || compgen -G "/dev/nvidia[0-9]*" >/dev/null; }

index_reachable() {  # download.pytorch.org answers within 5 s
    "$PYTHON" -c "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/whl/cpu/', timeout=5)" \
        >/dev/null 2>&1
}

choose_torch() {  # sets FLAVOR (cpu|cuda) and WHY
    if [[ -n ${TORCH_FLAVOR:-} ]]; then
        FLAVOR=$TORCH_FLAVOR WHY="TORCH_FLAVOR=$TORCH_FLAVOR"
    elif compgen -G ".venv/lib/python*/site-packages/torch-*+cpu.dist-info" >/dev/null; then
        FLAVOR=cpu WHY="the CPU build this .venv already has"
    elif [[ -x .venv/bin/python ]]; then
        FLAVOR=cuda WHY="the build this .venv already has"
    elif has_gpu; then
        FLAVOR=cuda WHY="an NVIDIA GPU is present"
    elif index_reachable; then
        FLAVOR=cpu WHY="no NVIDIA GPU here, and download.pytorch.org is reachable"
    else
        FLAVOR=cuda WHY="no NVIDIA GPU here, but download.pytorch.org is unreachable: PyPI's build, CUDA libraries included"
    fi
}

install_backend_venv() {
    # the same install step as the Dockerfile's (cuda: exactly the lock, PyPI's torch)
    if [[ $FLAVOR == cpu && -z ${TORCH_FLAVOR:-} ]]; then  # chosen here: PyPI's build if the CPU index fails
        bash scripts/install_backend.sh cpu .venv/bin/python \
            2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) \
            || { say "the CPU build did not install; PyPI's build instead (about 7 GB)"; FLAVOR=cuda; }
    fi
    [[ $FLAVOR == cpu && -z ${TORCH_FLAVOR:-} ]] || pip_run bash scripts/install_backend.sh "$FLAVOR" .venv/bin/python
    say "  the test tools (requirements-dev.txt) and this package"
    pip_run .venv/bin/python -m pip install --disable-pip-version-check -r requirements-dev.txt
    pip_run .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e ".[test]"
}

install_ls_venv() {
    pip_run .cache/ls-venv/bin/python -m pip install --disable-pip-version-check -r requirements-labelstudio.txt
}

apt_install() {  # what why packages...: Debian packages as root, else say how to get them
    local what=$1 why=$2; shift 2
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
        say "installing $what as root with apt-get ($*)"
        (DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
            apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }) \
            || say "could not install $*; $why"
    else
        say "$* not installed (apt-get install $*); $why"
    fi
}

torch_version=$(grep -E '^torch==' requirements.txt | cut -d= -f3)
[[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]] \
    || apt_install "Debian's Fashion-MNIST (30 MB), the demo's photos" \
        "the demo labels scikit-learn's digits instead and the fashion-mnist test is skipped" dataset-fashion-mnist
if [[ $TESTS -eq 1 ]] && ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
    apt_install "Debian's chromium and chromium-driver (about 300 MB with their libraries), for the browser tests" \
        "the browser tests will be skipped" chromium chromium-driver
fi
choose_torch
if [[ $FLAVOR == cpu ]]; then
    size="torch $torch_version CPU build from download.pytorch.org ($WHY); about 2 GB on disk"
else
    size="torch $torch_version from PyPI ($WHY); about 7 GB on disk, 4 GB of it CUDA libraries"
fi
make_venv .venv requirements.txt "$size, then the test tools" install_backend_venv
mkdir -p .cache
make_venv .cache/ls-venv requirements-labelstudio.txt "Label Studio 1.23.2, about 1 GB on disk" install_ls_venv
[[ $INSTALLED -eq 1 ]] || exit 0  # nothing installed: the checks below cost ~20 s (torch, Label Studio's CLI)
.venv/bin/python -c "import torch, torchvision, flask, label_studio_sdk; print('[setup] backend venv OK: torch', torch.__version__)"
.cache/ls-venv/bin/label-studio version 2>/dev/null | grep -m1 -i "label studio version" || .cache/ls-venv/bin/python -c "import label_studio; print('[setup] label-studio', label_studio.__version__)"
