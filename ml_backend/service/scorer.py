"""Scoring for the backend: each task's trunk activations (``features.py``: images -> frozen-feature
cache -> trunk) -> the core pool-scoring function (``core/scoring.py``) -> Label Studio's prediction
JSON. Owns each project's :class:`PoolState`."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.queue_score import LEAST_URGENT_SCORE, NEUTRAL_SCORE, acquisition_to_score
from ml_backend.core.scoring import score_pool
from ml_backend.errors import ImageError
from ml_backend.service.features import FeatureExtractor
from ml_backend.service.labels import prediction_result
from ml_backend.service.pools import ComputeThreads
from ml_backend.service.project_state import ProjectState, keyed_sample
from ml_backend.service.settings import Settings
from ml_backend.service.strategy_states import StrategyStates
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


def keep_candidate_embeddings(state: ProjectState, scored, settings: Settings) -> None:
    """After a whole-pool scoring that computed embeddings, with ``ROUND_HEAD_FIRST``: keep the scored
    version's embeddings of the tasks its next round's head-first queue is likely to score
    (``jobs/head_round.py``; its candidates, ``first_queue.round_candidates``): the most valuable and the
    keyed sample, twice as many of each as it takes (labels remove some); a few MB at most."""
    n_top, n_sample = settings.round_queue_candidates, settings.first_queue_sample
    if not settings.round_head_first or not n_top or scored.embeddings is None or scored.values is None:
        return
    values = scored.values.tolist()
    top = heapq.nlargest(2 * n_top, range(len(values)), key=values.__getitem__)
    keyed = set(keyed_sample(scored.keys, 2 * n_sample))
    rows = sorted(set(top) | {i for i, k in enumerate(scored.keys) if k in keyed})
    kept = scored.embeddings[rows].clone()  # its own storage: the pool's embeddings are not held
    with state.lock:
        state.pool.embeddings = {scored.keys[i]: row for i, row in zip(rows, kept)}


class ScoringGaveWay(Exception):
    """A scoring that was told to give way (a round is due) stopped between chunks; what it computed
    stays in the feature cache."""


class Scorer:
    def __init__(
        self,
        settings: Settings,
        features: FeatureExtractor,
        strategy_states: StrategyStates,
        compute: ComputeThreads,
    ) -> None:
        """``features``: each task's trunk activations and images; ``strategy_states``: each
        project's strategy (STRATEGY by default) and what it computed once from the pool;
        ``compute``: where a request's scoring runs."""
        self.settings, self.extractor, self.strategy_states = settings, features, strategy_states
        self.compute = compute
        self._strategy_lock = threading.Lock()  # strategies may keep per-call diagnostics
        self.pool_relative_requests = 0  # subsets given a neutral rank (a pool-relative strategy, nothing kept)

    def strategy_of(self, state: ProjectState) -> Strategy:
        return self.strategy_states.strategy_of(state)

    def restore(self, state: ProjectState) -> None:
        """Put back a project's saved strategy state (see :meth:`StrategyStates.restore`)."""
        self.strategy_states.restore(state)

    # ------------------------------------------------------------------ scoring
    def predict(self, state: ProjectState, tasks: list, model: AdaptedModel, version: str) -> list[dict]:
        """/predict: the tasks of one request, scored against the served version's pool."""
        if not tasks:
            return []
        started = time.perf_counter()
        deadline = time.monotonic() + self.settings.predict_deadline_s
        # the downloads on this thread, the model's work on the compute threads (pools.ComputeThreads)
        keys = [self.extractor.fingerprint(self.extractor.reference(state, t)) for t in tasks]
        prepared = [z for _, part in self._activation_chunks(state, model, tasks, keys, deadline) for z in part]
        results = self.compute.run(self.score, state, tasks, model, version, deadline=deadline, prepared=prepared)
        with state.lock:
            stats = state.pool.stats
            stats["predict_requests"] += 1
            stats["tasks_predicted"] += len(tasks)
            stats["image_failures"] += sum(1 for r in results if not r["result"])
            stats["predict_seconds"] += time.perf_counter() - started
        return results

    def _chunk(self) -> int:
        return max(self.settings.batch_size, 256)  # tasks at a time: bounded memory for large pools

    def _activation_chunks(self, state, model, tasks, fingerprints, deadline) -> Iterator:
        """(start, trunk activations or ImageError) per chunk of :meth:`_chunk` tasks; the next
        chunk's images download while this one runs through the trunk."""
        return self.extractor.trunk_activation_chunks(
            state, model, tasks, fingerprints, self._chunk(), deadline=deadline
        )

    def _batches(
        self, state, model, tasks, fingerprints, deadline, failed: dict, progress, give_way, prepared=None
    ) -> Iterator:
        """(keys, fingerprints, trunk activations) per chunk of tasks whose images load; the
        others go to ``failed`` (index -> ImageError). Raises :class:`ScoringGaveWay` between chunks
        when ``give_way()`` says so. ``prepared``: every task's activations or ImageError, already
        computed (nothing is downloaded)."""
        chunk = self._chunk()
        if prepared is not None:
            chunks = ((s, prepared[s : s + chunk]) for s in range(0, len(tasks), chunk))
        else:
            chunks = self._activation_chunks(state, model, tasks, fingerprints, deadline)
        for start in range(0, len(tasks), chunk):
            if give_way is not None and start and give_way():
                chunks.close()  # its prefetched downloads are cancelled
                raise ScoringGaveWay(f"gave way after {start} of {len(tasks)} tasks")
            _, part = next(chunks)
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
        sample: bool = False,
        give_way: Callable[[], bool] | None = None,
        prepared: list | None = None,
        labeled_trunk: list | None = None,
        forward: Callable | None = None,
    ) -> list[dict]:
        """Predictions for ``tasks`` (label + score + version). With ``reset_pool`` these tasks are
        the whole unlabeled pool (a publish) and their values become the reference of the version's
        queue scores; ``deadline`` (time.monotonic()) bounds the image downloads of a request. With
        ``sample`` the tasks are a preliminary version's whole pool (a big project's first queue,
        ``jobs/first_queue.py``): valued and ranked among themselves, nothing of the project's pool
        state used or changed. ``give_way``: see :meth:`_batches`. ``labeled_trunk``: the labeled set's
        trunk activations, when not the served version's; ``forward``: runs the model on ``prepared``
        (``core/scoring.head_outputs`` on embeddings: a round's head-first queue, ``jobs/head_round.py``)."""
        started, features, pool = time.perf_counter(), self.extractor, state.pool
        fingerprints = [features.fingerprint(features.reference(state, t)) for t in tasks]
        failed: dict[int, ImageError] = {}

        def images() -> torch.Tensor:  # only for strategies that need test-time-augmented views
            return self._images(state, model, [t for i, t in enumerate(tasks) if i not in failed], deadline)

        strategy = self.strategy_of(state)
        scored = score_pool(
            strategy,
            model,
            self._batches(state, model, tasks, fingerprints, deadline, failed, progress, give_way, prepared),
            candidates=fingerprints,
            labeled_trunk=pool.labeled_trunk if labeled_trunk is None else labeled_trunk,
            images=images,
            round_=state.round,
            state={} if sample else pool.strategy_state,
            full_pool=reset_pool or sample,
            batch_size=self.settings.batch_size,
            lock=self._strategy_lock,
            model_version=version,
            forward=forward or (features.engine.forward if features.engine is not None and deadline is None else None),
        )
        if reset_pool and scored.keys:
            if scored.info:
                pool.strategy_info = scored.info
            pool.scored_version = version
            pool.scoring_seconds = round(time.perf_counter() - started, 3)  # (first_queue.round_candidates)
            keep_candidate_embeddings(state, scored, self.settings)
            self.strategy_states.save(state)
        values, scores = self._values_and_scores(state, tasks, scored, version, reset_pool, sample)
        labels = model.decode(scored.probs) if scored.keys else []
        kept_info = pool.strategy_info if pool.scored_version == version and not sample else {}
        serving = (scored.info or kept_info).get("serving")  # auto: the strategy its regime serves
        served = f"{strategy.name}/{serving}" if serving else strategy.name
        return self._predictions(state, len(tasks), failed, served, labels, scores, values, version)

    def _images(self, state: ProjectState, model: AdaptedModel, tasks: list, deadline: float | None) -> torch.Tensor:
        loaded = self.extractor.images(state, model, tasks, deadline)
        bad = [str(x) for x in loaded if isinstance(x, ImageError)]
        if bad:
            raise ImageError(f"{len(bad)} image(s) became unreadable while scoring: {bad[0]}")
        return torch.stack(loaded)

    def _values_and_scores(self, state: ProjectState, tasks, scored, version: str, reset_pool: bool, sample: bool):
        """The acquisition values (None: not valued) and Label Studio scores of the scored tasks."""
        if scored.pool_relative:  # never the top of the queue: the middle, until a full-pool scoring
            self.pool_relative_requests += 1
            return [None] * len(scored.keys), np.full(len(scored.keys), NEUTRAL_SCORE)
        values = scored.values.numpy()
        if sample:  # a preliminary version: ranked among its own pool
            return values, acquisition_to_score(values, values)
        return values, self._queue_scores(state, tasks, scored.keys, values, version, reset_pool)

    @staticmethod
    def _predictions(state: ProjectState, n: int, failed: dict, served: str, labels, scores, values, version) -> list:
        """One prediction per task, in order: the scored tasks' (``labels``, ``scores`` and
        ``values`` in their order), and the least urgent, with the reason, for those in ``failed``."""
        out: list[dict] = []
        j = 0
        for i in range(n):
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
