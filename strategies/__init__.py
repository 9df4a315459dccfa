"""Acquisition strategies: larger acquisition value = label first.

Importable without Flask or the backend. ``strategies.get(name, **params)`` builds one,
``strategies.available()`` lists them.
"""
from . import uncertainty  # noqa: F401  (registers the built-in strategies)
from .base import Need, ScoringInputs, Strategy
from .errors import MissingInputError, StrategyError, UnknownStrategyError
from .registry import available, describe, get, register
from .uncertainty import entropy, least_confidence, margin, uniform_from_keys

__all__ = [
    "Need", "ScoringInputs", "Strategy", "StrategyError", "UnknownStrategyError",
    "MissingInputError", "available", "describe", "get", "register",
    "entropy", "least_confidence", "margin", "uniform_from_keys",
]
