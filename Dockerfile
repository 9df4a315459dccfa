# Active Adaptation ML backend for Label Studio.
#   docker build -t active-adaptation .                          # CPU (default)
#   docker build -t active-adaptation:cuda --build-arg FLAVOR=cuda .   # CUDA: exactly what CI installs
#   docker build --build-arg BAKE_WEIGHTS=1 --build-arg BACKBONE=resnet50 --build-arg WEIGHTS=DEFAULT .
#                                                                # bake torchvision weights in (offline use)
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG FLAVOR=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TORCH_HOME=/opt/torch \
    MODEL_DIR=/data/models \
    HOST=0.0.0.0 \
    PORT=9090 \
    PYTHONPATH=/app

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /data/models /opt/torch /app \
    && chown -R app:app /data /opt/torch

WORKDIR /app

# Dependencies first, in their own layer: code changes do not reinstall torch.
COPY requirements.txt scripts/install_backend.sh /app/
RUN bash /app/install_backend.sh "${FLAVOR}" python

COPY pyproject.toml README.md /app/
COPY ml_backend /app/ml_backend
COPY strategies /app/strategies
COPY scripts/docker-start.sh /app/docker-start.sh

# Optional: download the chosen torchvision weights into the image, so that it works offline.
ARG BAKE_WEIGHTS=""
ARG BACKBONE=resnet50
ARG WEIGHTS=DEFAULT
RUN if [ -n "${BAKE_WEIGHTS}" ]; then \
        BACKBONE="${BACKBONE}" WEIGHTS="${WEIGHTS}" python -m ml_backend --check; \
    fi \
    && chown -R app:app /opt/torch /data

USER 10001:10001
VOLUME ["/data"]
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '9090'), timeout=4)"]
CMD ["/app/docker-start.sh"]
