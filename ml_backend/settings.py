"""Settings, read once from the environment into an immutable object.

Environment-variable names follow label-studio-ml 2.x where it has one (LABEL_STUDIO_URL,
LABEL_STUDIO_API_KEY, MODEL_DIR, BASIC_AUTH_USER, BASIC_AUTH_PASS, LOG_LEVEL, PORT).
Every variable is described in :data:`ENV_VARS`; the README's configuration table is checked
against it by a test.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from .errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEVICES = ("auto", "cpu", "cuda")

# name -> (default, meaning). The default is the raw string as it would appear in the environment.
ENV_VARS: dict[str, tuple[str, str]] = {
    "LABEL_STUDIO_URL": ("", "Base URL of Label Studio as this backend reaches it, e.g. http://label-studio:8080. Needed to fetch images and to publish predictions."),
    "LABEL_STUDIO_API_KEY": ("", "A Personal Access Token (refreshed automatically) or a legacy API token of a Label Studio user."),
    "MODEL_DIR": ("./model_dir", "Where models, checkpoints and caches are stored."),
    "BASIC_AUTH_USER": ("", "If set (with BASIC_AUTH_PASS), every route except /health requires HTTP basic auth."),
    "BASIC_AUTH_PASS": ("", "Password for BASIC_AUTH_USER."),
    "LOG_LEVEL": ("INFO", "One of " + ", ".join(LOG_LEVELS) + "."),
    "PORT": ("9090", "Port of `python -m ml_backend`."),
    "HOST": ("0.0.0.0", "Interface `python -m ml_backend` listens on."),
    "WORKERS": ("1", "gunicorn worker processes for `python -m ml_backend` (keep 1 per GPU: each worker holds its own models)."),
    "THREADS": ("8", "gunicorn threads per worker."),
    "BACKBONE": ("resnet18", "Model architecture: one of the registered backbones (see `python -m ml_backend --list`)."),
    "WEIGHTS": ("DEFAULT", "Pretrained weights: a torchvision weights name of the backbone (DEFAULT, IMAGENET1K_V1, ...), a path to a saved state_dict, or `none` for random initialisation."),
    "STRATEGY": ("margin", "Acquisition strategy: one of the registered strategies (see `python -m ml_backend --list`)."),
    "DEVICE": ("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
    "SEED": ("0", "Seed for head initialisation and seeded strategies."),
    "BATCH_SIZE": ("32", "Images per forward pass when scoring."),
    "FETCH_WORKERS": ("8", "Concurrent image downloads per request."),
    "IMAGE_MAX_BYTES": ("20000000", "Images larger than this many bytes are refused (the task gets no prediction)."),
    "IMAGE_MAX_PIXELS": ("40000000", "Images with more pixels than this are refused (decompression-bomb guard)."),
    "IMAGE_TIMEOUT_S": ("15", "Timeout in seconds for one image download."),
}


def _get(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value is None or value.strip() == "":
        return ENV_VARS[name][0]
    return value.strip()


def _int(env: Mapping[str, str], name: str, minimum: int) -> int:
    raw = _get(env, name)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, minimum: float) -> float:
    raw = _get(env, name)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value > minimum:
        raise ConfigError(f"{name}={value} must be > {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    label_studio_url: str = ""
    label_studio_api_key: str = dataclasses.field(default="", repr=False)
    model_dir: Path = Path("./model_dir")
    basic_auth_user: str = ""
    basic_auth_pass: str = dataclasses.field(default="", repr=False)
    log_level: str = "INFO"
    port: int = 9090
    host: str = "0.0.0.0"
    workers: int = 1
    threads: int = 8
    backbone: str = "resnet18"
    weights: str = "DEFAULT"
    strategy: str = "margin"
    device: str = "auto"
    seed: int = 0
    batch_size: int = 32
    fetch_workers: int = 8
    image_max_bytes: int = 20_000_000
    image_max_pixels: int = 40_000_000
    image_timeout_s: float = 15.0

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.basic_auth_user)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Read and validate every variable. Raises ConfigError naming the variable."""
        # Imported here so that reading settings stays cheap and strategies stay Flask-free.
        import strategies

        from .models import available_backbones

        env = os.environ if env is None else env
        url = _get(env, "LABEL_STUDIO_URL").rstrip("/")
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(f"LABEL_STUDIO_URL={url!r} must start with http:// or https://")
        user, password = _get(env, "BASIC_AUTH_USER"), _get(env, "BASIC_AUTH_PASS")
        if bool(user) != bool(password):
            raise ConfigError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together")
        level = _get(env, "LOG_LEVEL").upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL={level!r} is invalid; allowed: {', '.join(LOG_LEVELS)}")
        backbone = _get(env, "BACKBONE").lower()
        if backbone not in available_backbones():
            raise ConfigError(
                f"BACKBONE={backbone!r} is unknown; allowed: {', '.join(available_backbones())}"
            )
        strategy = _get(env, "STRATEGY").lower()
        if strategy not in strategies.available():
            raise ConfigError(
                f"STRATEGY={strategy!r} is unknown; allowed: {', '.join(strategies.available())}"
            )
        device = _get(env, "DEVICE").lower()
        if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ConfigError(f"DEVICE={device!r} is invalid; allowed: auto, cpu, cuda, cuda:N")
        values = dict(
            label_studio_url=url,
            label_studio_api_key=_get(env, "LABEL_STUDIO_API_KEY"),
            model_dir=Path(_get(env, "MODEL_DIR")),
            basic_auth_user=user,
            basic_auth_pass=password,
            log_level=level,
            port=_int(env, "PORT", 1),
            host=_get(env, "HOST"),
            workers=_int(env, "WORKERS", 1),
            threads=_int(env, "THREADS", 1),
            backbone=backbone,
            weights=_get(env, "WEIGHTS"),
            strategy=strategy,
            device=device,
            seed=_int(env, "SEED", 0),
            batch_size=_int(env, "BATCH_SIZE", 1),
            fetch_workers=_int(env, "FETCH_WORKERS", 1),
            image_max_bytes=_int(env, "IMAGE_MAX_BYTES", 1),
            image_max_pixels=_int(env, "IMAGE_MAX_PIXELS", 1),
            image_timeout_s=_float(env, "IMAGE_TIMEOUT_S", 0.0),
        )
        values.update(overrides)
        return cls(**values)
