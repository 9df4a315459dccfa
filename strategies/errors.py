"""Typed errors of the strategies package."""


class StrategyError(Exception):
    """A strategy could not produce valid acquisition values.
    Project error, not from a paper."""


class UnknownStrategyError(StrategyError, ValueError):
    """A strategy name that is not registered.
    Project error, not from a paper."""


class MissingInputError(StrategyError):
    """The scorer did not provide an input that the strategy declared.
    Project error, not from a paper."""


class PoolRelativeError(StrategyError):
    """A subset of the pool cannot be scored on its own: the strategy's values are defined relative to
    the whole pool (a reference sample, a greedy selection) and no full-pool scoring of this model
    version has been kept. The scorer gives such tasks a neutral queue rank, never the top.
    Project error, not from a paper (docs/methods.md §0)."""


class StructuredLayoutError(StrategyError, ValueError):
    """The project's outputs are structured (several choice groups, or multi-label) and the strategy
    only knows one single-choice group.
    Project error, not from a paper (docs/methods.md §9.3)."""
