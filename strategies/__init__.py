"""Acquisition strategies: larger acquisition value = label first.

Importable without Flask or the backend. ``strategies.get(name, **params)`` builds one,
``strategies.available()`` lists them.
"""
from . import emoc, uncertainty  # noqa: F401  (registers the built-in strategies)
from .base import Need, ScoringInputs, Strategy
from .errors import MissingInputError, StrategyError, UnknownStrategyError
from .registry import available, describe, get, register
from .emoc import emoc_last_layer
from .kendall import kendall_tau_b
from .uncertainty import entropy, gini, least_confidence, margin, max_confidence, uniform_from_keys

__all__ = [
    "Need", "ScoringInputs", "Strategy", "StrategyError", "UnknownStrategyError",
    "MissingInputError", "available", "describe", "get", "register",
    "entropy", "gini", "least_confidence", "margin", "max_confidence", "uniform_from_keys",
    "emoc_last_layer", "kendall_tau_b",
]
