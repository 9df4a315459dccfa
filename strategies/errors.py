"""Typed errors of the strategies package."""


class StrategyError(Exception):
    """A strategy could not produce valid acquisition values."""


class UnknownStrategyError(StrategyError, ValueError):
    """A strategy name that is not registered."""


class MissingInputError(StrategyError):
    """The scorer did not provide an input that the strategy declared."""


class PoolRelativeError(StrategyError):
    """A subset of the pool cannot be scored on its own: the strategy's values are defined relative to
    the whole pool (a reference sample, a greedy selection) and no full-pool scoring of this model
    version has been kept. The scorer gives such tasks a neutral queue rank, never the top."""


class StructuredLayoutError(StrategyError, ValueError):
    """The project's outputs are structured (several choice groups, or multi-label) and the strategy
    only knows one single-choice group."""
