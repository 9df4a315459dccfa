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
    "WEBHOOK_SECRET": ("", "Master secret for webhook authentication: the backend sets a header derived from it on each project's webhook in Label Studio and refuses events without it. Unset: a random one is created in MODEL_DIR/secrets/webhook.key."),
    "MAX_REQUEST_MB": ("64", "Largest request body accepted, in MB (413 beyond it)."),
    "PREDICT_DEADLINE_S": ("80", "Deadline for one /predict request's image downloads, in seconds (Label Studio waits 100 s); tasks whose images are not fetched by then get no prediction."),
    "RECOVERY_MAX_S": ("300", "A failed round or publish is retried in the background, first after 5 s, then doubling up to this many seconds."),
    "LOG_LEVEL": ("INFO", "One of " + ", ".join(LOG_LEVELS) + "."),
    "PORT": ("9090", "Port of `python -m ml_backend`."),
    "HOST": ("0.0.0.0", "Interface `python -m ml_backend` listens on."),
    "WORKERS": ("1", "gunicorn worker processes for `python -m ml_backend` (keep 1 per GPU: each worker holds its own models)."),
    "THREADS": ("64", "gunicorn threads per worker. At most THREADS - 8 `/predict` requests run at once (more get 503 with Retry-After), so that /webhook, /setup and /health always find a free thread (docs/benchmarks.md)."),
    "BACKBONE": ("resnet18", "Model architecture: one of the registered backbones (see `python -m ml_backend --list`)."),
    "WEIGHTS": ("DEFAULT", "Pretrained weights: a torchvision weights name of the backbone (DEFAULT, IMAGENET1K_V1, ...), a path to a saved state_dict, or `none` for random initialisation."),
    "STRATEGY": ("margin", "Acquisition strategy: a registered strategy (see `python -m ml_backend --list`), with options as `name:key=value:...`, e.g. `adma:lam=0.1:landmarks=kmeans`."),
    "QUEUE_DIVERSITY": ("off", "Diversity-aware queue order: `off`, or `coreset` to re-order the top QUEUE_DIVERSITY_TOP tasks by k-center greedy on the model's features so that consecutive tasks are not near-duplicates."),
    "QUEUE_DIVERSITY_TOP": ("100", "How many of the highest-acquisition tasks QUEUE_DIVERSITY re-orders."),
    "REVIEW_TOP": ("20", "After each round, list this many labeled tasks whose annotation looks most suspicious (in /status under `review`); 0 turns it off."),
    "REVIEW_METHOD": ("loss", "How suspicious annotations are ranked: `loss` (the trained head's loss on its label, the cheap default) or `influence` (last-layer self-influence, with K-fold influence on validation loss)."),
    "TRAIN_DROP_HARMFUL": ("false", "Influence-based data dropout (Wang et al.): before a round, drop labeled examples whose up-weighting would raise the K-fold validation loss (psi > 0). Off by default; dropped tasks are listed in /status."),
    "DEVICE": ("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
    "SEED": ("0", "Seed for head initialisation and seeded strategies."),
    "BATCH_SIZE": ("32", "Images per forward pass when scoring."),
    "FETCH_WORKERS": ("8", "Concurrent image downloads per request."),
    "IMAGE_MAX_BYTES": ("20000000", "Images larger than this many bytes are refused (the task gets no prediction)."),
    "IMAGE_MAX_PIXELS": ("40000000", "Images with more pixels than this are refused (decompression-bomb guard)."),
    "IMAGE_TIMEOUT_S": ("15", "Total time in seconds for one image download (connect, headers, body, redirects), however slowly the server sends."),
    "TRAIN_DEBOUNCE_S": ("5", "Seconds without new annotation events before a training round starts (a burst gives one round)."),
    "TRAIN_MIN_NEW_LABELS": ("1", "Changed labels (new, updated or deleted) needed to start a round; START_TRAINING always starts one."),
    "TRAIN_STEPS": ("100", "Optimizer steps per round."),
    "TRAIN_LR": ("0.001", "Adam learning rate."),
    "TRAIN_WEIGHT_DECAY": ("0.0005", "Adam weight decay."),
    "TRAIN_BATCH_SIZE": ("32", "Mini-batch size."),
    "TRAIN_NEW_FRACTION": ("0.1", "Share of each mini-batch drawn from labels new in this round (the EMOC paper's 0.9 old / 0.1 new)."),
    "TRAIN_AUGMENT": ("none", "Training augmentation: none (trains on cached frozen features, fastest), flip, crop or flip+crop."),
    "TRAIN_AMP": ("true", "Mixed precision (bfloat16 autocast) when training on CUDA."),
    "KEEP_VERSIONS": ("3", "Checkpoints kept per project; older versions are pruned."),
    "PUBLISH_ON_CONNECT": ("true", "Score the whole pool and publish version 0 when a project first connects."),
    "SET_UNCERTAINTY_SAMPLING": ("true", "When publishing, also switch the project's queue to uncertainty sampling (lowest score first); without it Label Studio ignores the scores."),
    "PUBLISH_CHUNK": ("500", "Predictions per bulk import request."),
    "PUBLISH_RETRIES": ("5", "Attempts per Label Studio API call while publishing (exponential back-off)."),
    "DELETE_OLD_PREDICTIONS": ("false", "After publishing a version, delete this backend's predictions of older versions."),
    "FEATURE_CACHE_MB": ("1024", "Memory for cached frozen-layer activations; beyond it they spill to disk."),
    "FEATURE_CACHE_DISK_MB": ("8192", "Disk for spilled activations under MODEL_DIR/cache/features."),
    "FEATURE_CACHE_DTYPE": ("float16", "Storage type of cached activations: float16, bfloat16 or float32."),
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


def _float(env: Mapping[str, str], name: str, minimum: float, inclusive: bool = False, maximum: float | None = None) -> float:
    raw = _get(env, name)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not (value >= minimum if inclusive else value > minimum) or (maximum is not None and value > maximum):
        bound = f"{'>=' if inclusive else '>'} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ConfigError(f"{name}={value} must be {bound}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = _get(env, name).lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is invalid; allowed: true, false")


def _choice(env: Mapping[str, str], name: str, allowed) -> str:
    raw = _get(env, name).lower()
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r} is invalid; allowed: {', '.join(allowed)}")
    return raw


@dataclass(frozen=True)
class Settings:
    label_studio_url: str = ""
    label_studio_api_key: str = dataclasses.field(default="", repr=False)
    model_dir: Path = Path("./model_dir")
    basic_auth_user: str = ""
    basic_auth_pass: str = dataclasses.field(default="", repr=False)
    webhook_secret: str = dataclasses.field(default="", repr=False)
    max_request_mb: int = 64
    predict_deadline_s: float = 80.0
    recovery_max_s: float = 300.0
    log_level: str = "INFO"
    port: int = 9090
    host: str = "0.0.0.0"
    workers: int = 1
    threads: int = 64
    backbone: str = "resnet18"
    weights: str = "DEFAULT"
    strategy: str = "margin"
    queue_diversity: str = "off"
    queue_diversity_top: int = 100
    review_top: int = 20
    review_method: str = "loss"
    train_drop_harmful: bool = False
    device: str = "auto"
    seed: int = 0
    batch_size: int = 32
    fetch_workers: int = 8
    image_max_bytes: int = 20_000_000
    image_max_pixels: int = 40_000_000
    image_timeout_s: float = 15.0
    train_debounce_s: float = 5.0
    train_min_new_labels: int = 1
    train_steps: int = 100
    train_lr: float = 1e-3
    train_weight_decay: float = 5e-4
    train_batch_size: int = 32
    train_new_fraction: float = 0.1
    train_augment: str = "none"
    train_amp: bool = True
    keep_versions: int = 3
    publish_on_connect: bool = True
    set_uncertainty_sampling: bool = True
    publish_chunk: int = 500
    publish_retries: int = 5
    delete_old_predictions: bool = False
    feature_cache_mb: int = 1024
    feature_cache_disk_mb: int = 8192
    feature_cache_dtype: str = "float16"

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
        strategy = _get(env, "STRATEGY")
        try:
            strategies.from_spec(strategy)
        except strategies.StrategyError as exc:
            raise ConfigError(f"STRATEGY={strategy!r}: {exc}") from None
        device = _get(env, "DEVICE").lower()
        if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ConfigError(f"DEVICE={device!r} is invalid; allowed: auto, cpu, cuda, cuda:N")
        values = dict(
            label_studio_url=url,
            label_studio_api_key=_get(env, "LABEL_STUDIO_API_KEY"),
            model_dir=Path(_get(env, "MODEL_DIR")),
            basic_auth_user=user,
            basic_auth_pass=password,
            webhook_secret=_get(env, "WEBHOOK_SECRET"),
            max_request_mb=_int(env, "MAX_REQUEST_MB", 1),
            predict_deadline_s=_float(env, "PREDICT_DEADLINE_S", 0.0),
            recovery_max_s=_float(env, "RECOVERY_MAX_S", 0.0),
            log_level=level,
            port=_int(env, "PORT", 1),
            host=_get(env, "HOST"),
            workers=_int(env, "WORKERS", 1),
            threads=_int(env, "THREADS", 1),
            backbone=backbone,
            weights=_get(env, "WEIGHTS"),
            strategy=strategy,
            queue_diversity=_choice(env, "QUEUE_DIVERSITY", ("off", "coreset")),
            queue_diversity_top=_int(env, "QUEUE_DIVERSITY_TOP", 2),
            review_top=_int(env, "REVIEW_TOP", 0),
            review_method=_choice(env, "REVIEW_METHOD", ("loss", "influence")),
            train_drop_harmful=_bool(env, "TRAIN_DROP_HARMFUL"),
            device=device,
            seed=_int(env, "SEED", 0),
            batch_size=_int(env, "BATCH_SIZE", 1),
            fetch_workers=_int(env, "FETCH_WORKERS", 1),
            image_max_bytes=_int(env, "IMAGE_MAX_BYTES", 1),
            image_max_pixels=_int(env, "IMAGE_MAX_PIXELS", 1),
            image_timeout_s=_float(env, "IMAGE_TIMEOUT_S", 0.0),
            train_debounce_s=_float(env, "TRAIN_DEBOUNCE_S", 0.0, inclusive=True),
            train_min_new_labels=_int(env, "TRAIN_MIN_NEW_LABELS", 1),
            train_steps=_int(env, "TRAIN_STEPS", 1),
            train_lr=_float(env, "TRAIN_LR", 0.0),
            train_weight_decay=_float(env, "TRAIN_WEIGHT_DECAY", 0.0, inclusive=True),
            train_batch_size=_int(env, "TRAIN_BATCH_SIZE", 1),
            train_new_fraction=_float(env, "TRAIN_NEW_FRACTION", 0.0, inclusive=True, maximum=1.0),
            train_augment=_choice(env, "TRAIN_AUGMENT", ("none", "flip", "crop", "flip+crop")),
            train_amp=_bool(env, "TRAIN_AMP"),
            keep_versions=_int(env, "KEEP_VERSIONS", 1),
            publish_on_connect=_bool(env, "PUBLISH_ON_CONNECT"),
            set_uncertainty_sampling=_bool(env, "SET_UNCERTAINTY_SAMPLING"),
            publish_chunk=_int(env, "PUBLISH_CHUNK", 1),
            publish_retries=_int(env, "PUBLISH_RETRIES", 1),
            delete_old_predictions=_bool(env, "DELETE_OLD_PREDICTIONS"),
            feature_cache_mb=_int(env, "FEATURE_CACHE_MB", 1),
            feature_cache_disk_mb=_int(env, "FEATURE_CACHE_DISK_MB", 0),
            feature_cache_dtype=_choice(env, "FEATURE_CACHE_DTYPE", ("float16", "bfloat16", "float32")),
        )
        values.update(overrides)
        return cls(**values)
