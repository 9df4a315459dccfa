"""Settings, read once from the environment into an immutable object.

Each setting is declared once, as a field of :class:`Settings`: its type, its default, its meaning
and how its environment variable (the field's name in upper case) is parsed and checked. Everything
else is derived from those fields: :data:`ENV_VARS` (name -> (default as written in the environment,
meaning)), the configuration table in docs/settings.md (:func:`settings_table`, printed by
``python -m ml_backend --settings`` and checked by a test) and :meth:`Settings.from_env`. Links in a
meaning are relative to docs/, where the table lives.

A secret setting (``secret=True``: the API key, the basic auth password, the webhook secret) can
also be read from a file named by ``<NAME>_FILE`` (a Docker or Kubernetes secret such as
``/run/secrets/label_studio_api_key``), so that its value is in no process environment that
``docker inspect`` shows; setting both ``<NAME>`` and ``<NAME>_FILE`` is an error.

Names follow label-studio-ml 2.x where it has one (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY,
MODEL_DIR, BASIC_AUTH_USER, BASIC_AUTH_PASS, LOG_LEVEL, PORT).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ml_backend.errors import ConfigError
from ml_backend.service.setting_types import (
    FILE_SUFFIX,
    LOG_LEVELS,
    backbone,
    choice,
    device,
    flag,
    freeze,
    integer,
    log_level,
    number,
    path,
    read_secret_file,
    setting,
    shown,
    strategy,
    url,
)


@dataclass(frozen=True)
class Settings:  # long: every setting's declaration, one field each (type, default, meaning, check)
    label_studio_url: str = setting(
        "",
        "Base URL of Label Studio as this backend reaches it, e.g. `http://label-studio:8080`. Needed to fetch images "
        "(otherwise the `hostname` and token sent in `/setup` are used).",
        url,
    )
    label_studio_api_key: str = setting(
        "",
        "A Personal Access Token (refreshed automatically) or a legacy API token of a Label Studio user.",
        secret=True,
    )
    model_dir: Path = setting(
        Path("model_dir"),
        "Where models, checkpoints and caches are stored (a relative path starts in the working directory).",
        path,
    )
    basic_auth_user: str = setting(
        "", "If set (with `BASIC_AUTH_PASS`), every route except `/health` and `/webhook` requires HTTP basic auth."
    )
    basic_auth_pass: str = setting("", "Password for `BASIC_AUTH_USER`.", secret=True)
    webhook_secret: str = setting(
        "",
        "Master secret for webhook authentication ([security.md](security.md)); unset: created once in "
        "`MODEL_DIR/secrets/webhook.key`.",
        secret=True,
    )
    max_request_mb: int = setting(64, "Largest request body accepted, in MB (413 beyond it).", integer(1))
    predict_deadline_s: float = setting(
        80.0,
        "Deadline for one `/predict` request's image downloads (Label Studio waits 100 s); tasks not fetched by then "
        "get no prediction.",
        number(0.0),
    )
    recovery_max_s: float = setting(
        300.0,
        "A failed round or publish is retried in the background after 5 s, doubling up to this many seconds.",
        number(0.0),
    )
    lease_retry_s: float = setting(
        2.0,
        "While another process (another gunicorn worker or a replica sharing `MODEL_DIR`) runs a project's round or "
        "publish, this process tries to take over the project's jobs every this many seconds ([Several "
        "processes](deployment.md#several-processes)).",
        number(0.0),
    )
    log_level: str = setting("INFO", "One of " + ", ".join(LOG_LEVELS) + ".", log_level)
    port: int = setting(9090, "Port of `python -m ml_backend`.", integer(1))
    host: str = setting("0.0.0.0", "Interface `python -m ml_backend` listens on.")
    workers: int = setting(
        1,
        "gunicorn worker processes. Each holds its own models (keep 1 per GPU); they share `MODEL_DIR`, one at a time "
        "trains and publishes a project ([Several processes](deployment.md#several-processes)).",
        integer(1),
    )
    threads: int = setting(
        64,
        "gunicorn threads per worker. At most `THREADS - 8` `/predict` requests run at once (more get 503 with "
        "`Retry-After`), so that `/webhook`, `/setup` and `/health` always find a free thread "
        "([benchmarks](benchmarks.md#latency-of-webhook-and-setup-under-load-benchmarksbench_latencypy)).",
        integer(1),
    )
    backbone: str = setting(
        "efficientnet_lite0",
        "`efficientnet_lite0` (ImageNet weights that install with the package: nothing is downloaded), any torchvision "
        "classification architecture by name (`resnet50`, `convnext_tiny`, `vit_b_16`, …), `smallcnn` or "
        "`smallcnn-unfrozen`; `python -m ml_backend --list` shows each family's strategies and refusals "
        "([backbones.md](backbones.md)).",
        backbone,
    )
    weights: str = setting(
        "DEFAULT",
        "A weights name of the backbone (`DEFAULT`, `IMAGENET1K_V1`, …: torchvision's, loaded through its cache; "
        "efficientnet_lite0's packaged ImageNet weights), a path to a saved `state_dict`, or `none` for random "
        "initialisation.",
    )
    freeze: str = setting(
        "default",
        "Where the frozen early layers end: `default` (the family's boundary, [backbones.md](backbones.md#freeze)), "
        "`none` (train everything), `all` (only the classifier trains), a fraction of the stages such as `0.5`, or a "
        "stage's module name (frozen up to and including it, e.g. `layer2`). The log says \"N of M parameters "
        'trainable".',
        freeze,
    )
    image_size: int = setting(
        0,
        "Input side in pixels after resize and centre-crop; `0`: the size the weights were trained at (224 for most). "
        "Smaller is faster on a CPU.",
        integer(0),
    )
    strategy: str = setting(
        "auto",
        "A registered strategy (`python -m ml_backend --list`), with options as `name:key=value:…`, e.g. "
        "`adma:lam=0.1:landmarks=kmeans` (see [Strategies](../README.md#strategies) and "
        "[strategies.md](strategies.md#choosing-a-strategy)).",
        strategy,
    )
    queue_diversity: str = setting(
        "off",
        "`coreset`: re-order the `QUEUE_DIVERSITY_TOP` highest-acquisition tasks by k-center greedy on the model's "
        "features, so that consecutive tasks in the queue are not near-duplicates.",
        choice("off", "coreset"),
    )
    queue_diversity_top: int = setting(100, "How many top tasks `QUEUE_DIVERSITY` re-orders.", integer(2))
    stop_kappa: float = setting(
        0.99,
        "The stopping signal ([learning.md](learning.md#dashboard-and-stopping-signal)) fires when the mean Cohen's κ "
        "between consecutive versions' predictions on a fixed sample of unlabeled tasks, over the last `STOP_WINDOW` "
        "rounds, reaches this (Bloodgood & Vijay-Shanker's rule: 0.99 over 3).",
        number(0.0),
    )
    stop_window: int = setting(3, "Rounds the stopping signal averages κ over.", integer(1))
    stop_sample: int = setting(
        500,
        "Unlabeled tasks in the stopping signal's fixed sample (chosen by a seeded hash of the task id).",
        integer(10),
    )
    review_top: int = setting(
        20,
        "After each round, list this many labeled tasks whose annotations look most suspicious (`/status` → `review`); "
        "`0` turns it off.",
        integer(0),
    )
    multilabel_threshold: float = setting(
        0.5,
        'A multi-label `<Choices choice="multiple">` group predicts every label whose sigmoid probability reaches '
        "this; margin's multi-label value is the smallest distance to it ([multi-label.md](multi-label.md)).",
        number(0.0, maximum=1.0),
    )
    review_max_p: float = setting(
        0.5,
        "Only annotations whose label the trained head gives a probability below this are listed for review.",
        number(0.0),
    )
    label_studio_tabs: bool = setting(
        True,
        'Keep two Data Manager tabs in each project: "Queue" (ordered by score, lowest = served first, with the score '
        'and model version columns) and "Review (N)" (the review list; it stays, empty, once made). Your own '
        "tabs are never touched.",
        flag,
    )
    review_method: str = setting(
        "heldout",
        "`heldout` (each label judged by heads fit without it on the original network's embeddings, which no label "
        "trained: a wrong label the trained head has memorised is still caught; each flagged task carries the held-out "
        "guess and its probability; [results.md](results.md#data-dropout-and-the-review-list-under-label-noise)), "
        "`loss` (the trained head's loss on the given label; cheap) or `influence` (last-layer self-influence, plus "
        "cross-fitted influence ψ on validation loss; `flag` marks ψ > 0 with p(label) < 0.5).",
        choice("heldout", "loss", "influence"),
    )
    train_drop_harmful: bool = setting(
        False,
        "Influence-based data dropout: after training on a round's labels, leave out labels whose up-weighting would "
        "raise the validation loss (ψ > 0, cross-fitted: each fold's ψ from a head fit without it) and train again "
        "without them. Dropped tasks are listed in `/status` → `dropped_by_influence`. Never drops more than half. "
        "Measured in [results.md](results.md#data-dropout-and-the-review-list-under-label-noise) before you turn "
        "it on.",
        flag,
    )
    device: str = setting("auto", "`auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`.", device)
    seed: int = setting(0, "Seed for head initialisation and seeded strategies.", integer(0))
    batch_size: int = setting(
        0,
        "Images per forward pass when scoring; `0`: 8 on a CPU, 64 on a GPU (on a CPU small batches are faster: "
        "[measured](benchmarks.md#batch-size-on-a-cpu)).",
        integer(0),
    )
    compute_threads: int = setting(
        2,
        "Threads that run the model for `/predict` requests, in all (the requests take turns on them; their downloads "
        "stay on the request threads). Each holds a team of `cores - 1` torch threads, so the process's thread count "
        "stays bounded however many requests score "
        "([the soak](benchmarks.md#soak-annotators-label-for-20-minutes-while-things-break-benchmarkssoakpy)).",
        integer(1),
    )
    fetch_workers: int = setting(
        16,
        "Images downloaded and decoded at once, in all (every request and background scoring of the process share "
        "them); the next images download and decode while the model runs on the current batch.",
        integer(1),
    )
    download_connections_per_host: int = setting(
        8,
        "Connections open at once to one image host (`host:port`; Label Studio's own for uploads, local files and "
        "presigned cloud storage), idle keep-alive ones included. A download waiting for one counts against the "
        "request's deadline, not against its own `IMAGE_TIMEOUT_S`.",
        integer(1),
    )
    image_max_bytes: int = setting(20_000_000, "Larger images are refused (that task gets no prediction).", integer(1))
    image_max_pixels: int = setting(
        40_000_000, "Images with more pixels are refused (decompression-bomb guard).", integer(1)
    )
    image_timeout_s: float = setting(
        15.0,
        "Total time in seconds for one image download (connect, headers, body, redirects), however slowly the server "
        "sends.",
        number(0.0),
    )
    train_debounce_s: float = setting(
        5.0,
        "Seconds without new annotation events before a training round starts (a burst gives one round).",
        number(0.0, inclusive=True),
    )
    train_debounce_max_s: float = setting(
        30.0,
        "While annotation events keep coming, a round starts at the latest this many seconds after the first of them.",
        number(0.0, inclusive=True),
    )
    train_min_new_labels: int = setting(
        1,
        'Changed labels (new, updated or deleted) needed to start a round; "Start Training" always starts one.',
        integer(1),
    )
    train_steps: int = setting(100, "Optimizer steps per round.", integer(1))
    train_lr: float = setting(1e-3, "Adam learning rate.", number(0.0))
    train_weight_decay: float = setting(5e-4, "Adam weight decay.", number(0.0, inclusive=True))
    train_batch_size: int = setting(32, "Mini-batch size.", integer(1))
    train_new_fraction: float = setting(
        0.1,
        "Share of each mini-batch drawn from labels new in this round (the EMOC paper's 0.9 old / 0.1 new).",
        number(0.0, inclusive=True, maximum=1.0),
    )
    train_augment: str = setting(
        "none",
        "`none` (trains on cached frozen features, fastest), `flip`, `crop` or `flip+crop`.",
        choice("none", "flip", "crop", "flip+crop"),
    )
    train_amp: bool = setting(True, "Mixed precision (bfloat16 autocast) when training on CUDA.", flag)
    keep_versions: int = setting(3, "Checkpoints kept per project; older versions are pruned.", integer(1))
    publish_on_connect: bool = setting(
        True, "Score the whole pool and publish version 0 when a project first connects.", flag
    )
    set_uncertainty_sampling: bool = setting(
        True,
        "When publishing, also switch the project's queue to uncertainty sampling (lowest score first); without it "
        "Label Studio ignores the scores.",
        flag,
    )
    prelabel: str = setting(
        "keep",
        "Whether a task opens with the model's guess already selected (Label Studio's *Use predictions to prelabel "
        "tasks*, `show_collab_predictions`), set with each publish: `on`, `off`, or `keep` (the project's own choice; "
        "Label Studio's default is on). On is faster where the model is mostly right; off avoids anchoring, an "
        "annotator accepting a wrong guess, which matters most early, when the model is often wrong "
        "([learning.md](learning.md#the-labeling-screen)). Turn it off here rather than in Label Studio, whose switch "
        "also clears the project's model version (the queue is random until the next publish).",
        choice("keep", "on", "off"),
    )
    publish_chunk: int = setting(500, "Predictions per bulk import request.", integer(1))
    publish_first: int = setting(
        200,
        "A new version's predictions for this many tasks at the top of its queue are imported first; then the project "
        "switches to it (the annotators' queue follows it from then on) and the rest is imported in the background, "
        "giving way to the next round when one is due. `0`: import everything before switching.",
        integer(0),
    )
    first_queue_sample: int = setting(
        200,
        "A big project's first queue does not wait for its whole pool: on connect, when more than twice this many "
        "tasks are unlabeled, a sample of this many spread over the project is scored first and served as a "
        "preliminary version (`<version>-first`) while the rest is scored in the background "
        "([methods.md](methods.md#0-conventions)). `0`: always score the whole pool first.",
        integer(0),
    )
    round_queue_candidates: int = setting(
        300,
        "After a round, a big pool's queue does not wait for the whole pool to be scored by the new model: when "
        "more than twice this many plus `FIRST_QUEUE_SAMPLE` tasks are unlabeled, the previous version's this many "
        "most valuable tasks and a fixed sample of `FIRST_QUEUE_SAMPLE` others are scored first and served as "
        "`<version>-first` while the rest is scored ([methods.md](methods.md#0-conventions)). `0`: the previous "
        "version serves until the whole pool is scored.",
        integer(0),
    )
    round_head_first: bool = setting(
        True,
        "When `ROUND_QUEUE_CANDIDATES` applies and the last round's fine-tuning took over `ROUND_QUEUE_AFTER_S` (or "
        "none was timed yet), before the fine-tuning (a minute on a CPU): the served model with only its head refit "
        "on the labels scores those candidates as `<version>-head` and the queue switches to it, so that it follows "
        "new labels in seconds ([methods.md](methods.md#0-conventions)).",
        flag,
    )
    round_queue_after_s: float = setting(
        10.0,
        "`ROUND_QUEUE_CANDIDATES` only when this process's last whole-pool scoring took over this many seconds "
        "(and `ROUND_HEAD_FIRST` only when the last round's fine-tuning did).",
        number(0.0, inclusive=True),
    )
    publish_retries: int = setting(
        5, "Attempts per Label Studio API call while publishing (exponential back-off).", integer(1)
    )
    delete_old_predictions: bool = setting(
        True,
        "After publishing a version (and moving the project to it), delete this backend's predictions of older "
        "versions, so that they do not pile up in Label Studio's database and Data Manager; `false` keeps every "
        "version's predictions.",
        flag,
    )
    scoring_engine: str = setting(
        "local",
        "Where feature extraction and re-scoring run: `local` (this process) or `ray` (Ray Data actors; `pip install "
        "'active-adaptation[ray]'`; see [Scoring on Ray](deployment.md#scoring-on-ray)).",
        choice("local", "ray"),
    )
    ray_address: str = setting(
        "",
        "With `SCORING_ENGINE=ray`: the cluster to join (e.g. `ray://head:10001` or `auto`); empty: a local Ray "
        "instance started by the backend.",
    )
    ray_actors: int = setting(2, "With `SCORING_ENGINE=ray`: actors in the pool (one model each).", integer(1))
    ray_cpus_per_actor: float = setting(1.0, "With `SCORING_ENGINE=ray`: CPUs each actor reserves.", number(0.0))
    ray_gpus_per_actor: float = setting(
        0.0,
        "With `SCORING_ENGINE=ray`: GPUs per actor (e.g. 1, or 0.5 to share one); 0: CPU actors.",
        number(0.0, inclusive=True),
    )
    feature_cache_mb: int = setting(
        1024,
        "Memory for cached frozen-layer activations (scan-resistant: a pass over a pool larger than this does not "
        "push out the entries used again and again; [learning.md](learning.md#frozen-feature-cache)).",
        integer(1),
    )
    feature_cache_disk_mb: int = setting(
        8192,
        "Disk for cached activations under `MODEL_DIR/cache/features` (every entry is written there): size it to the "
        "pool, tasks × an entry's size (`/status` → `feature_cache`), so that re-scoring a pool larger than memory is "
        "served from disk; `0`: memory only.",
        integer(0),
    )
    feature_cache_dtype: str = setting(
        "float16",
        "Storage type of cached activations: `float16`, `bfloat16` or `float32`.",
        choice("float16", "bfloat16", "float32"),
    )

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.basic_auth_user)

    def train_config(self, seed: int):
        """The trainer's configuration from the TRAIN_* settings (``seed``: this round's)."""
        from ml_backend.core.trainer import TrainConfig

        names = ("steps", "lr", "weight_decay", "batch_size", "new_fraction", "augment", "amp")
        return TrainConfig(seed=seed, **{name: getattr(self, f"train_{name}") for name in names})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Read and validate every variable. Raises ConfigError naming the variable."""
        env = os.environ if env is None else env
        values = {}
        for f in dataclasses.fields(cls):
            name, raw = f.name.upper(), env.get(f.name.upper())
            raw = raw.strip() if raw is not None else ""
            if f.metadata["secret"]:
                file_var = name + FILE_SUFFIX
                path = (env.get(file_var) or "").strip()
                if path and raw:
                    raise ConfigError(f"{name} and {file_var} are both set: set one of them")
                if path:
                    raw = read_secret_file(name, file_var, path)
            if raw:
                values[f.name] = f.metadata["parse"](name, raw)
        values.update(overrides)
        settings = cls(**values)
        if bool(settings.basic_auth_user) != bool(settings.basic_auth_pass):
            raise ConfigError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together")
        return settings


def _env_vars() -> dict[str, tuple[str, str]]:
    out = {}
    for f in dataclasses.fields(Settings):
        name = f.name.upper()
        out[name] = (shown(f.default), f.metadata["meaning"])
        if f.metadata["secret"]:
            out[name + FILE_SUFFIX] = (
                "",
                f"A file holding `{name}` (its text; surrounding whitespace such as a trailing newline is "
                f"dropped), e.g. a Docker secret `/run/secrets/{f.name}`; setting both `{name}` and "
                f"`{name}{FILE_SUFFIX}` is an error, and so is "
                "a missing, unreadable or empty file.",
            )
    return out


# every environment variable the backend reads: each setting, and a <NAME>_FILE for each secret one
ENV_VARS: dict[str, tuple[str, str]] = _env_vars()


def settings_table() -> str:
    """The configuration table of docs/settings.md, from the declarations above.

    ``python -m ml_backend --settings`` prints it; tests/service/test_settings.py checks that
    docs/settings.md holds it. Links in the meanings are relative to docs/.
    """
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, (default, meaning) in ENV_VARS.items():
        rows.append(f"| `{name}` | {f'`{default}`' if default else '(empty)'} | {meaning} |")
    return "\n".join(rows)
