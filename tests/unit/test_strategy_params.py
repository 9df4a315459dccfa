"""A template test over every registered strategy (in the style of scikit-activeml's): each
constructor parameter is reported by ``params()`` with the value it was given, so that versions,
saved strategy state and ``--list`` describe the strategy completely."""

import inspect

import pytest

import strategies
from strategies.registry import _REGISTRY


@pytest.mark.parametrize("name", strategies.available())
def test_params_cover_every_constructor_parameter(name):
    cls = _REGISTRY[name]
    signature = inspect.signature(cls.__init__)
    names = [
        p
        for p in signature.parameters
        if p != "self"
        and signature.parameters[p].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    defaults = cls().params()
    assert set(names) == set(defaults), set(names) ^ set(defaults)
    for p in names:
        default = signature.parameters[p].default
        assert defaults[p] == default, (p, defaults[p], default)
    # every option set through a spec comes back from params()
    assert cls(seed=7).params()["seed"] == 7
