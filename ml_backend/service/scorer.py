"""Scoring for the backend: task images -> frozen-feature cache -> the core pool-scoring function
(``core/scoring.py``) -> Label Studio's prediction JSON. Owns each project's :class:`PoolState`."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import LoadedBackbone
from ml_backend.core.queue_score import LEAST_URGENT_SCORE, NEUTRAL_SCORE, acquisition_to_score
from ml_backend.core.scoring import score_pool
from ml_backend.errors import ImageError
from ml_backend.service.engine import make_engine
from ml_backend.service.feature_cache import FeatureCache
from ml_backend.service.images import ImageLoader, Source
from ml_backend.service.labels import prediction_result
from ml_backend.service.ls_client import LabelStudioConnection
from ml_backend.service.projects import ProjectState
from ml_backend.service.settings import Settings
from ml_backend.service.store import Store
from strategies import Strategy

log = logging.getLogger(__name__)


def prediction(state: ProjectState, strategy: str, label, score: float, acquisition, version: str) -> dict:
    """Label Studio's prediction, plus why the task sits where it does in the queue: the strategy,
    its acquisition value (None: not valued without a full-pool scoring, neutral rank) and round t.
    ``label``: the predicted label, or a structured layout's answer dict (one result per group)."""
    out = {
        "result": prediction_result(state.config, label),
        "score": score,
        "model_version": version,
        "acquisition": None if acquisition is None else float(acquisition),
        "strategy": strategy,
        "round": state.round,
    }
    if "landmark_mode" in state.pool.strategy_info:
        out["landmark_mode"] = state.pool.strategy_info["landmark_mode"]
    return out


def state_ident(base: LoadedBackbone, strategy: Strategy) -> str:
    """Which backbone and strategy a saved strategy state belongs to."""
    ident = json.dumps([base.spec.name, base.weights, strategy.name, strategy.params()], sort_keys=True, default=str)
    return hashlib.sha1(ident.encode()).hexdigest()[:12]


class _StrategyStates:
    """What a strategy computed once from a project's pool, kept beside its checkpoints (a part of
    :class:`Scorer`)."""

    def _save_strategy_state(self, state: ProjectState) -> None:
        """Keep what the strategy computed once from the pool (ADMA's landmarks) beside the
        checkpoints, once: after a restart the project scores as before."""
        if state.pool.strategy_saved:
            return
        strategy = self.strategy_of(state)
        saved = strategy.saved_state(state.pool.strategy_state)
        if saved is not None and self.store.save_strategy_state(state.key, state_ident(self.base, strategy), saved):
            state.pool.strategy_saved = True

    def restore(self, state: ProjectState) -> None:
        """Put back a project's saved strategy state (when it was saved for this backbone and strategy)."""
        strategy = self.strategy_of(state)
        saved = self.store.load_strategy_state(state.key, state_ident(self.base, strategy))
        if saved is not None and strategy.restore_state(state.pool.strategy_state, saved):
            state.pool.strategy_saved = True
            log.info("project %s: restored the strategy's state", state.key)


class Scorer(_StrategyStates):
    def __init__(
        self, settings: Settings, base: LoadedBackbone, book, store: Store, connection: LabelStudioConnection
    ) -> None:
        """``book``: the StrategyBook (``choice.py``): each project's strategy, STRATEGY by default."""
        self.settings, self.base, self.book, self.store, self.connection = settings, base, book, store, connection
        self.loader = ImageLoader(
            store.cache_dir("images"),
            settings.fetch_workers,
            settings.image_max_bytes,
            settings.image_max_pixels,
            settings.image_timeout_s,
        )
        self.engine = make_engine(settings)  # None: in this process; RayEngine: SCORING_ENGINE=ray
        fingerprint = hashlib.sha1(
            json.dumps(
                [
                    base.spec.name,
                    base.weights,
                    base.preprocess.to_dict(),
                    base.spec.frozen,
                    settings.feature_cache_dtype,
                ],
                sort_keys=True,
            ).encode()
        ).hexdigest()[:12]
        self.features = FeatureCache(
            store.cache_dir("features"),
            fingerprint,
            settings.feature_cache_mb * 2**20,
            settings.feature_cache_disk_mb * 2**20,
            settings.feature_cache_dtype,
        )
        self._strategy_lock = threading.Lock()  # strategies may keep per-call diagnostics
        self.pool_relative_requests = 0  # subsets given a neutral rank (a pool-relative strategy, nothing kept)

    def strategy_of(self, state: ProjectState) -> Strategy:
        return self.book.get(state.strategy)

    # ------------------------------------------------------------------ images and activations
    def source(self, state: ProjectState, deadline: float | None = None) -> Source:
        """Where the project's images come from. A request (one with a ``deadline``) waits at most
        3 s for a PAT refresh, background work 60 s (see LabelStudioConnection.token)."""
        if self.connection.configured:
            connection, token_wait = self.connection, 60.0 if deadline is None else 3.0
            return Source(connection.url, lambda: connection.token(wait=token_wait))
        token = state.access_token
        return Source(state.hostname.rstrip("/"), lambda: token or None)

    @staticmethod
    def reference(state: ProjectState, task: dict) -> tuple:
        data = task.get("data")
        return task.get("id"), data.get(state.config.value_key) if isinstance(data, dict) else None

    def fingerprint(self, reference: tuple) -> str | None:
        """What a task *is* for every per-task cache (trunk activations, a strategy's per-item
        state), from its (task id, image reference); None when either is missing (nothing is cached)."""
        task_id, ref = reference
        return self.features.key(task_id, ref) if task_id is not None and isinstance(ref, str) else None

    def trunk_activations(
        self,
        state: ProjectState,
        model: AdaptedModel,
        tasks: Sequence[dict],
        keys: Sequence[str | None] | None = None,
        deadline: float | None = None,
    ) -> list:
        """Per task: trunk activations (from the frozen-feature cache when present) or the
        ImageError that explains why there are none. Downloads overlap the trunk forward pass."""
        refs = [self.reference(state, t) for t in tasks]
        keys = list(keys) if keys is not None else [self.fingerprint(r) for r in refs]
        out: list = [self.features.get(k) if k else None for k in keys]
        missing = [i for i, z in enumerate(out) if z is None]
        if self.engine is not None and missing and deadline is None:  # background work: on Ray
            source = self.source(state)
            computed = self.engine.trunk([refs[i] for i in missing], source.hostname, source.token())
            for i, z in zip(missing, computed):
                out[i] = z if isinstance(z, ImageError) else self.features.round(z)
                if keys[i] and not isinstance(z, ImageError):
                    self.features.put(keys[i], out[i])
            return out
        futures = self.loader.submit_many(
            [refs[i] for i in missing], self.source(state, deadline), transform=model.preprocess, deadline=deadline
        )
        pending: list[tuple[int, torch.Tensor]] = []

        def flush():
            z = self.features.round(model.trunk(torch.stack([t for _, t in pending])))
            for (i, _), zi in zip(pending, z):
                out[i] = zi
                if keys[i]:
                    self.features.put(keys[i], zi)
            pending.clear()

        for i, future in zip(missing, futures):
            item = future.result()
            if isinstance(item, ImageError):
                out[i] = item
                continue
            pending.append((i, item))
            if len(pending) == self.settings.batch_size:
                flush()
        if pending:
            flush()
        return out

    def images(self, state: ProjectState, model: AdaptedModel, tasks: Sequence[dict]) -> list:
        """Per task: its preprocessed image, or the ImageError that explains why there is none."""
        return self.loader.load_many(
            [self.reference(state, t) for t in tasks], self.source(state), transform=model.preprocess
        )

    # ------------------------------------------------------------------ scoring
    def predict(self, state: ProjectState, tasks: list, model: AdaptedModel, version: str) -> list[dict]:
        """/predict: the tasks of one request, scored against the served version's pool."""
        if not tasks:
            return []
        started = time.perf_counter()
        results = self.score(state, tasks, model, version, deadline=time.monotonic() + self.settings.predict_deadline_s)
        with state.lock:
            stats = state.pool.stats
            stats["predict_requests"] += 1
            stats["tasks_predicted"] += len(tasks)
            stats["image_failures"] += sum(1 for r in results if not r["result"])
            stats["predict_seconds"] += time.perf_counter() - started
        return results

    def _batches(self, state, model, tasks, fingerprints, deadline, failed: dict, progress) -> Iterator:
        """(keys, fingerprints, trunk activations) per chunk of tasks whose images load; the
        others go to ``failed`` (index -> ImageError)."""
        chunk = max(self.settings.batch_size, 256)  # bounded memory for large pools
        for start in range(0, len(tasks), chunk):
            part = self.trunk_activations(
                state, model, tasks[start : start + chunk], fingerprints[start : start + chunk], deadline=deadline
            )
            ok = [j for j, a in enumerate(part) if not isinstance(a, ImageError)]
            failed.update({start + j: a for j, a in enumerate(part) if isinstance(a, ImageError)})
            if progress is not None:
                progress(min(start + chunk, len(tasks)))
            if ok:
                yield (
                    [str(tasks[start + j].get("id", f"#{start + j}")) for j in ok],
                    [fingerprints[start + j] for j in ok],
                    torch.stack([part[j] for j in ok]),
                )

    def score(
        self,
        state: ProjectState,
        tasks: Sequence[dict],
        model: AdaptedModel,
        version: str,
        reset_pool: bool = False,
        progress: Callable[[int], None] | None = None,
        deadline: float | None = None,
    ) -> list[dict]:
        """Predictions for ``tasks`` (label + score + version). With ``reset_pool`` these tasks are
        the whole unlabeled pool (a publish) and their values become the reference of the version's
        queue scores; ``deadline`` (time.monotonic()) bounds the image downloads of a request."""
        fingerprints = [self.fingerprint(self.reference(state, t)) for t in tasks]
        failed: dict[int, ImageError] = {}
        pool = state.pool

        def images() -> torch.Tensor:  # only for strategies that need test-time-augmented views
            good = [t for i, t in enumerate(tasks) if i not in failed]
            loaded = self.loader.load_many(
                [self.reference(state, t) for t in good],
                self.source(state, deadline),
                transform=model.preprocess,
                deadline=deadline,
            )
            bad = [str(x) for x in loaded if isinstance(x, ImageError)]
            if bad:
                raise ImageError(f"{len(bad)} image(s) became unreadable while scoring: {bad[0]}")
            return torch.stack(loaded)

        strategy = self.strategy_of(state)
        scored = score_pool(
            strategy,
            model,
            self._batches(state, model, tasks, fingerprints, deadline, failed, progress),
            candidates=fingerprints,
            labeled_trunk=pool.labeled_trunk,
            images=images,
            round_=state.round,
            state=pool.strategy_state,
            full_pool=reset_pool,
            batch_size=self.settings.batch_size,
            lock=self._strategy_lock,
            model_version=version,
            forward=self.engine.forward if self.engine is not None and deadline is None else None,
        )
        if reset_pool and scored.keys:
            if scored.info:
                pool.strategy_info = scored.info
            pool.scored_version = version
            self._save_strategy_state(state)
        if scored.pool_relative:  # never the top of the queue: the middle, until a full-pool scoring
            values, scores = [None] * len(scored.keys), np.full(len(scored.keys), NEUTRAL_SCORE)
            self.pool_relative_requests += 1
        else:
            values = scored.values.numpy()
            scores = self._queue_scores(state, tasks, scored.keys, values, version, reset_pool)
        labels = model.decode(scored.probs) if scored.keys else []
        kept_info = pool.strategy_info if pool.scored_version == version else {}
        serving = (scored.info or kept_info).get("serving")  # auto: the strategy its regime serves
        served = f"{strategy.name}/{serving}" if serving else strategy.name
        out: list[dict] = []
        j = 0
        for i in range(len(tasks)):
            if i in failed:
                out.append(
                    {"result": [], "score": LEAST_URGENT_SCORE, "model_version": version, "error": str(failed[i])}
                )
                continue
            out.append(prediction(state, served, labels[j], float(scores[j]), values[j], version))
            j += 1
        return out

    def _queue_scores(
        self, state: ProjectState, tasks, keys: list[str], values: np.ndarray, version: str, reset_pool: bool
    ) -> np.ndarray:
        """Label Studio scores: each value ranked within the served version's scored pool."""
        with state.lock:
            if state.version == version:
                if reset_pool:
                    state.pool.acquisitions = {}
                by_key = {str(t.get("id", f"#{i}")): t for i, t in enumerate(tasks)}
                for key, value in zip(keys, values):
                    if "id" in by_key[key]:
                        state.pool.acquisitions[key] = float(value)
                reference = np.fromiter(state.pool.acquisitions.values(), dtype=np.float64)
            else:  # the served version moved on during this request: rank within the request
                reference = values
        return acquisition_to_score(values, reference if reference.size else values)

    def set_labeled(self, state: ProjectState, trunks: list) -> None:
        """The trunk activations of the labels the served version was trained on (for strategies
        that compare the pool with the labeled set)."""
        with state.lock:
            state.pool.labeled_trunk = trunks

    def close(self) -> None:
        self.loader.close()
        if self.engine is not None:
            self.engine.close()
