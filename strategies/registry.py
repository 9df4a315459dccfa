"""One registry: the backend's STRATEGY env var, the simulation CLI and the docs all read it."""
from __future__ import annotations

from typing import Any

from .base import Strategy
from .errors import UnknownStrategyError

_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator. Refuses duplicate names so that one name always means one method."""
    name = cls.name
    if not name or name != name.strip().lower():
        raise ValueError(f"strategy name must be lower-case and non-empty, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"strategy '{name}' is already registered by {_REGISTRY[name].__qualname__}")
    _REGISTRY[name] = cls
    return cls


def available() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **params: Any) -> Strategy:
    """Instantiate a registered strategy by name with its parameters."""
    key = (name or "").strip().lower()
    if key not in _REGISTRY:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}; available: {', '.join(available())}"
        )
    try:
        return _REGISTRY[key](**params)
    except TypeError as exc:
        raise UnknownStrategyError(f"bad parameters for strategy '{key}': {exc}") from exc


def describe() -> list[dict[str, Any]]:
    """Name, description and declared inputs of every strategy (for docs and `--help`)."""
    return [
        {
            "name": n,
            "description": _REGISTRY[n].description,
            "needs": sorted(need.value for need in _REGISTRY[n].needs),
        }
        for n in available()
    ]
