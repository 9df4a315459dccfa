"""Which strategy a project uses: the backend's `STRATEGY`, or the one the project chose (Label
Studio's connection "extra params" `{"strategy": "badge"}` sent with /setup, or
`POST /projects/<id>/strategy`). Each spec is built, checked against the backbone and prepared
(ADMA's landmarks) once per process, and shared by every project that chose it."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import strategies
from ml_backend.core.backbones import LoadedBackbone
from ml_backend.errors import BadRequest, ConfigError
from ml_backend.service.landmarks import prepare_landmarks
from ml_backend.service.settings import Settings
from ml_backend.service.store import Store
from strategies import Strategy

log = logging.getLogger(__name__)


class StrategyBook:
    def __init__(self, settings: Settings, base: LoadedBackbone, device, store: Store) -> None:
        self.settings, self.base, self.device, self.store = settings, base, device, store
        self._built: dict[str, Strategy] = {}
        self._lock = threading.Lock()
        self.default = self._build(settings.strategy, f"STRATEGY={settings.strategy}")  # ConfigError at start
        self._built[settings.strategy] = self.default

    def _build(self, spec: str, who: str) -> Strategy:
        strategy = strategies.from_spec(spec, seed=self.settings.seed)
        self.base.spec.require_layers(strategy.layers(), who)
        prepare_landmarks(strategy, self.base, self.device, self.store, self.settings.seed)
        return strategies.with_queue_diversity(
            strategy, self.settings.queue_diversity, self.settings.queue_diversity_top
        )

    def get(self, spec: str | None) -> Strategy:
        """The strategy for ``spec`` (None: STRATEGY). BadRequest names what is wrong with a bad spec."""
        if spec is None:
            return self.default
        with self._lock:
            if spec not in self._built:
                try:
                    self._built[spec] = self._build(spec, f"strategy {spec!r}")
                except strategies.StrategyError as exc:
                    raise BadRequest(f"strategy {spec!r}: {exc}") from None
                except ConfigError as exc:
                    raise BadRequest(str(exc)) from None
                log.info("strategy %r built for the projects that chose it", spec)
            return self._built[spec]

    def describe(self, spec: str | None) -> tuple[str, dict]:
        strategy = self.get(spec)
        return strategy.name, strategy.params()


def requested_strategy(extra_params: Any) -> str | None:
    """The strategy a connection's extra params ask for: a JSON object (or its text) with a
    ``strategy`` entry; None when they ask for none. BadRequest for anything unreadable."""
    if extra_params in (None, "", {}):
        return None
    if isinstance(extra_params, str):
        try:
            extra_params = json.loads(extra_params)
        except ValueError:
            raise BadRequest('the connection\'s extra params are not JSON; use e.g. {"strategy": "badge"}') from None
    if not isinstance(extra_params, dict):
        raise BadRequest('the connection\'s extra params must be a JSON object, e.g. {"strategy": "badge"}')
    spec = extra_params.get("strategy")
    if spec is None or spec == "":
        return None
    if not isinstance(spec, str):
        raise BadRequest('extra params: \'strategy\' must be a string such as "badge" or "adma:lam=0.1"')
    return spec.strip()
