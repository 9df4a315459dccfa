"""Acquisition strategies: larger acquisition value = label first.

Importable without Flask or the backend. ``strategies.get(name, **params)`` or
``strategies.from_spec("adma:lam=0.2")`` builds one, ``strategies.available()`` lists them.
"""

from . import adma, aift, auto, coldstart, diversity, emoc, mmd, uncertainty  # noqa: F401  (register the built-in strategies)
from .adma import adma_distinctiveness
from .adma_landmarks import Landmarks
from .aift import aift_scores, tta_views
from .base import Need, ScoringInputs, Strategy, structured_names
from .diversity import DiverseQueue, badge, diverse_queue, k_center_greedy, with_queue_diversity
from .emoc import emoc_last_layer
from .errors import MissingInputError, PoolRelativeError, StrategyError, StructuredLayoutError, UnknownStrategyError
from .influence import HeadInfluence, review_annotations
from .kendall import kendall_tau_b
from .registry import available, describe, from_spec, get, parse_spec, register
from .sets import SET_CRITERIA, set_criterion
from .uncertainty import entropy, gini, least_confidence, margin, max_confidence, uniform_from_keys

__all__ = [
    "structured_names",
    "StructuredLayoutError",
    "Need",
    "ScoringInputs",
    "Strategy",
    "StrategyError",
    "UnknownStrategyError",
    "MissingInputError",
    "PoolRelativeError",
    "available",
    "describe",
    "get",
    "from_spec",
    "parse_spec",
    "register",
    "entropy",
    "gini",
    "least_confidence",
    "margin",
    "max_confidence",
    "uniform_from_keys",
    "emoc_last_layer",
    "kendall_tau_b",
    "Landmarks",
    "adma_distinctiveness",
    "aift_scores",
    "tta_views",
    "badge",
    "k_center_greedy",
    "diverse_queue",
    "DiverseQueue",
    "with_queue_diversity",
    "HeadInfluence",
    "review_annotations",
    "SET_CRITERIA",
    "set_criterion",
]
