"""One registry: the backend's STRATEGY env var, the simulation CLI and the docs all read it."""

from __future__ import annotations

from typing import Any

from .base import _STRUCTURED, Strategy
from .errors import UnknownStrategyError

_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator. Refuses duplicate names so that one name always means one method.
    Project helper, not from a paper."""
    name = cls.name
    if not name or name != name.strip().lower():
        raise ValueError(f"strategy name must be lower-case and non-empty, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"strategy '{name}' is already registered by {_REGISTRY[name].__qualname__}")
    _REGISTRY[name] = cls
    if cls.structured:
        _STRUCTURED.add(name)
    return cls


def available() -> list[str]:
    """Registered strategy names, sorted.
    Project helper, not from a paper."""
    return sorted(_REGISTRY)


def get(name: str, **params: Any) -> Strategy:
    """Instantiate a registered strategy by name with its parameters.
    Project helper, not from a paper."""
    key = (name or "").strip().lower()
    if key not in _REGISTRY:
        raise UnknownStrategyError(f"unknown strategy {name!r}; available: {', '.join(available())}")
    try:
        return _REGISTRY[key](**params)
    except TypeError as exc:
        raise UnknownStrategyError(f"bad parameters for strategy '{key}': {exc}") from exc


def describe() -> list[dict[str, Any]]:
    """Name, description and declared inputs of every strategy (for docs and `--help`).
    Project helper, not from a paper."""
    return [
        {
            "name": n,
            "description": _REGISTRY[n].description,
            "needs": sorted(need.value for need in _REGISTRY[n].needs),
            "options": {k: v for k, v in _REGISTRY[n]().params().items() if k != "seed"},
        }
        for n in available()
    ]


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[:key=value[:key=value...]]`` -> (name, params), e.g. ``adma:lam=0.2:landmarks=kmeans``.
    Values are read as bool, none, int, float or else string. Used by STRATEGY and the CLIs.
    Project helper, not from a paper."""
    parts = [p.strip() for p in str(spec or "").split(":")]
    name, params = parts[0].lower(), {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UnknownStrategyError(f"bad strategy option {part!r} in {spec!r}; expected key=value")
        params[key.strip()] = _value(value.strip())
    return name, params


def from_spec(spec: str, **defaults: Any) -> Strategy:
    """Build a strategy from a spec string; ``defaults`` (e.g. seed) apply unless the spec sets them.
    Project helper, not from a paper."""
    name, params = parse_spec(spec)
    return get(name, **{**defaults, **params})
