"""What /status and the dashboard report: the backend's identity, its caches and every project's
state, rounds, stopping signal and worker status. Reads only; writes nothing."""

from __future__ import annotations

import collections
import os
import re
import threading
from typing import Protocol

from ml_backend.core.backbones import LoadedBackbone
from ml_backend.core.stopping import StabilityRule
from ml_backend.service.features import FeatureExtractor
from ml_backend.service.jobs.context import ROUNDS_TRAINED
from ml_backend.service.learner import Learner
from ml_backend.service.projects import Projects, ProjectState
from ml_backend.service.scorer import Scorer
from ml_backend.service.settings import Settings
from ml_backend.service.store import Store, space


class Parts(Protocol):
    """The backend's parts a report reads (the Backend facade has them)."""

    store: Store
    projects: Projects
    scorer: Scorer
    features: FeatureExtractor
    learner: Learner


def stopping_signal(rule: StabilityRule, history: list[dict]) -> dict:
    """The stopping signal of a project from its rounds' κ (core/stopping.py)."""
    kappas = [float(h["kappa"]) for h in history if isinstance(h.get("kappa"), (int, float))]
    stable = rule.fires(kappas)
    if stable:
        message = (
            f"the model has stabilised: more labels barely change its predictions "
            f"(mean κ {sum(kappas[-rule.window :]) / rule.window:.3f}); consider stopping or reviewing"
        )
    elif len(kappas) < rule.window:
        message = f"learning: {len(kappas)} of the {rule.window} rounds needed to judge"
    else:
        message = f"learning: predictions still change (mean κ {sum(kappas[-rule.window :]) / rule.window:.3f})"
    return {
        "rule": rule.describe(),
        "threshold": rule.threshold,
        "window": rule.window,
        "kappa": kappas[-10:],
        "stable": stable,
        "message": message,
    }


def this_process() -> dict:
    """The process that answered (/status's ``worker``): gunicorn spreads requests over its workers,
    so a caller that wants each one's figures (the soak) tells them apart by ``pid``. ``threads``
    counts the Python threads by name, their numbers left out (``compute_0`` and ``compute_1`` are
    two ``compute``), which shows what a growing thread count is made of. ``rounds_trained``: the
    training rounds this process ran (only the process holding a project's trainer lease trains;
    its first round is when its memory takes in the optimizer and the labeled set)."""
    names = collections.Counter(re.sub(r"[-_]\d+(_\d+)?$", "", t.name) for t in threading.enumerate())
    return {"pid": os.getpid(), "threads": dict(sorted(names.items())), "rounds_trained": ROUNDS_TRAINED["rounds"]}


class StatusReport:
    def __init__(self, settings: Settings, base: LoadedBackbone, strategy, device, parts: Parts) -> None:
        self.rule = StabilityRule(settings.stop_kappa, settings.stop_window)
        self.base, self.strategy, self.device, self.parts = base, strategy, device, parts

    def metrics(self, events: dict[str, int]) -> dict:
        parts = self.parts
        return {
            "backbone": self.base.spec.name,
            "weights": self.base.weights,
            "strategy": self.strategy.name,
            "strategy_params": self.strategy.params(),
            "device": str(self.device),
            "events": events,
            "feature_cache": parts.features.stats(),
            "worker": this_process(),
            "model_dir": space(parts.store.root),
            "neutral_rank_requests": parts.scorer.pool_relative_requests,
            "projects": {
                key: self.project(state)
                for key in sorted({*parts.store.project_keys(), *parts.projects}, key=int)
                if (state := self._refreshed(key)) is not None
            },
        }

    def _refreshed(self, key: str) -> ProjectState | None:
        state = self.parts.projects.lookup(key)
        if state is not None:
            self.parts.projects.refresh(state)
        return state

    def histories(self) -> dict[str, list[dict]]:
        return {key: self.parts.store.read_history(key) for key in self.parts.projects}

    def project(self, s: ProjectState) -> dict:
        history = self.parts.store.read_history(s.key)
        return {
            "stopping": stopping_signal(self.rule, history),
            "prequential": [{"round": h.get("round"), **(h.get("prequential") or {})} for h in history[-10:]],
            "model_version": s.version,
            "published_version": s.published_version,
            "queue_version": s.queue_version,
            "round": s.round,
            "labels": list(s.config.labels),
            "labels_used": len(s.labels_used),
            "model_loaded": s.model is not None,
            "scored_pool_size": len(s.pool.acquisitions),
            "strategy_info": s.pool.strategy_info,
            "strategy": self.parts.projects.strategy_name(s)[0],
            "strategy_chosen": s.strategy,
            **s.pool.stats,
            **self.parts.learner.status(s.key),
        }
