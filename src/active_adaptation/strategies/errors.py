"""Typed errors of the strategies package."""


class StrategyError(Exception):
    """A strategy could not produce valid acquisition values."""


class UnknownStrategyError(StrategyError, ValueError):
    """A strategy name that is not registered."""


class MissingInputError(StrategyError):
    """The scorer did not provide an input that the strategy declared."""
