"""A task's features: its image (``images.py``) -> the frozen-feature cache (``feature_cache.py``)
-> the frozen trunk of the served model, in this process or on Ray actors (``engine.py``). Scoring
and training both start from here: :meth:`FeatureExtractor.trunk_activations` gives each task's
activations at the freeze boundary, computed once per task and image."""

from __future__ import annotations

import hashlib
import json
from typing import Iterator, Sequence

import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.backbones import LoadedBackbone
from ml_backend.errors import ImageError
from ml_backend.service.engine import make_engine
from ml_backend.service.feature_cache import FeatureCache
from ml_backend.service.images import ImageLoader, Source
from ml_backend.service.ls_client import LabelStudioConnection
from ml_backend.service.pools import ComputeThreads
from ml_backend.service.project_state import ProjectState
from ml_backend.service.settings import Settings
from ml_backend.service.store import Store

# How images are decoded (images.py): JPEGs at a reduced size where the preprocessing allows it.
DECODING = "jpeg-draft-to-resize"


def cache_fingerprint(base: LoadedBackbone, dtype: str) -> str:
    """What the cached activations depend on: backbone, weights, preprocessing, decoding, freeze
    boundary and the dtype they are kept in (a change starts the cache afresh)."""
    ident = [base.spec.name, base.weights, base.preprocess.to_dict(), base.spec.frozen, dtype, DECODING]
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


class FeatureExtractor:
    def __init__(
        self,
        loader: ImageLoader,
        cache: FeatureCache,
        engine,
        connection: LabelStudioConnection,
        batch_size: int,
        compute: ComputeThreads | None = None,
    ) -> None:
        """``engine``: None (the trunk runs in this process) or a RayEngine (SCORING_ENGINE=ray);
        ``connection``: Label Studio, when LABEL_STUDIO_URL and its key are set (else each project's
        /setup host and token); ``batch_size``: images per trunk forward pass; ``compute``: where the
        trunk runs for a request (one with a deadline; None: on the calling thread)."""
        self.loader, self.cache, self.engine, self.connection = loader, cache, engine, connection
        self.batch_size, self.compute = batch_size, compute

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        base: LoadedBackbone,
        store: Store,
        connection: LabelStudioConnection,
        compute: ComputeThreads | None = None,
    ) -> FeatureExtractor:
        loader = ImageLoader(
            store.cache_dir("images"),
            settings.fetch_workers,
            settings.image_max_bytes,
            settings.image_max_pixels,
            settings.image_timeout_s,
            per_host=settings.download_connections_per_host,
            draft_side=base.preprocess.resize,
        )
        engine = make_engine(settings)  # None: in this process; RayEngine: SCORING_ENGINE=ray
        cache = FeatureCache(
            store.cache_dir("features"),
            cache_fingerprint(base, settings.feature_cache_dtype),
            settings.feature_cache_mb * 2**20,
            settings.feature_cache_disk_mb * 2**20,
            settings.feature_cache_dtype,
        )
        return cls(loader, cache, engine, connection, settings.batch_size, compute)

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
        return self.cache.key(task_id, ref) if task_id is not None and isinstance(ref, str) else None

    def images(
        self, state: ProjectState, model: AdaptedModel, tasks: Sequence[dict], deadline: float | None = None
    ) -> list:
        """Per task: its preprocessed image, or the ImageError that explains why there is none."""
        return self.loader.load_many(
            [self.reference(state, t) for t in tasks],
            self.source(state, deadline),
            transform=model.preprocess,
            deadline=deadline,
        )

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
        return self._finish(model, self._start(state, model, tasks, keys, deadline))

    def trunk_activation_chunks(
        self,
        state: ProjectState,
        model: AdaptedModel,
        tasks: Sequence[dict],
        keys: Sequence[str | None],
        size: int,
        deadline: float | None = None,
    ) -> Iterator[tuple[int, list]]:
        """(start, :meth:`trunk_activations` of ``tasks[start : start + size]``) per chunk, in order;
        the next chunk's images download and decode while this one runs through the trunk, so the
        model never waits at a chunk's boundary (memory: two chunks of preprocessed images)."""
        starts = list(range(0, len(tasks), size))
        begin = lambda s: self._start(state, model, tasks[s : s + size], keys[s : s + size], deadline)  # noqa: E731
        ahead = begin(starts[0]) if starts else None
        try:
            for n, start in enumerate(starts):
                current, ahead = ahead, begin(starts[n + 1]) if n + 1 < len(starts) else None
                yield start, self._finish(model, current)
        finally:  # stopped early (a round is due, an error): the prefetched downloads are not needed
            for future in (ahead or {}).get("futures", ()):
                future.cancel()

    def _start(self, state, model, tasks, keys, deadline) -> dict:
        """Look the tasks up in the cache and start downloading the images of those not in it."""
        refs = [self.reference(state, t) for t in tasks]
        keys = list(keys) if keys is not None else [self.fingerprint(r) for r in refs]
        out: list = [self.cache.get(k) if k else None for k in keys]
        missing = [i for i, z in enumerate(out) if z is None]
        job = {
            "refs": refs,
            "keys": keys,
            "out": out,
            "missing": missing,
            "futures": [],
            "request": deadline is not None,
        }
        if self.engine is not None and missing and deadline is None:  # background work: on Ray
            job["source"] = self.source(state)
        elif missing:
            job["futures"] = self.loader.submit_many(
                [refs[i] for i in missing], self.source(state, deadline), transform=model.preprocess, deadline=deadline
            )
        return job

    def _finish(self, model: AdaptedModel, job: dict) -> list:
        """Run the trunk on a started chunk's images as they arrive, batch by batch."""
        refs, keys, out, missing, futures = job["refs"], job["keys"], job["out"], job["missing"], job["futures"]
        if "source" in job:  # on Ray
            source = job["source"]
            computed = self.engine.trunk([refs[i] for i in missing], source.hostname, source.token())
            for i, z in zip(missing, computed):
                out[i] = z if isinstance(z, ImageError) else self.cache.round(z)
                if keys[i] and not isinstance(z, ImageError):
                    self.cache.put(keys[i], out[i])
            return out
        pending: list[tuple[int, torch.Tensor]] = []
        compute = self.compute if job["request"] and self.compute is not None else None

        def activations(images: list) -> torch.Tensor:
            return self.cache.round(model.trunk(torch.stack(images)))

        def flush():
            images = [t for _, t in pending]
            z = activations(images) if compute is None else compute.run(activations, images)
            for (i, _), zi in zip(pending, z):
                out[i] = zi
                if keys[i]:
                    self.cache.put(keys[i], zi)
            pending.clear()

        for i, future in zip(missing, futures):
            item = future.result()
            if isinstance(item, ImageError):
                out[i] = item
                continue
            pending.append((i, item))
            if len(pending) == self.batch_size:
                flush()
        if pending:
            flush()
        return out

    def stats(self) -> dict:
        """The frozen-feature cache's counters (/status's ``feature_cache``)."""
        return self.cache.stats()

    def close(self) -> None:
        self.loader.close()
        self.cache.close()
        if self.engine is not None:
            self.engine.close()
