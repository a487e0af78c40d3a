"""Plugin option reading: unknown keys, numbers, flags, messages naming the option."""

from __future__ import annotations

import pytest

from codexlb.errors import ConfigError
from codexlb.options import PluginOptions


def test_unknown_keys_listed_with_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        PluginOptions("demo", {"b": 1, "a": 2}, ("x", "y"))
    assert str(info.value) == "[plugins.demo] unknown option(s) a, b; allowed: x, y"
    with pytest.raises(ConfigError, match=r"allowed: none; use CODEX_LB_X"):
        PluginOptions("demo", {"a": 1}, hint="use CODEX_LB_X")


def test_unknown_key_names_the_close_match() -> None:
    with pytest.raises(ConfigError) as info:
        PluginOptions("demo", {"max_pin": 1}, ("max_pins", "weight_by_quota"))
    assert str(info.value) == ("[plugins.demo] unknown option(s) max_pin (did you mean max_pins?); "
                               "allowed: max_pins, weight_by_quota")


def test_numbers() -> None:
    options = PluginOptions("demo", {"n": "3", "f": 2.5, "bad": 1.5, "low": -1}, ("n", "f", "bad", "low"))
    assert options.number("n", 1, low=0, integer=True) == 3
    assert options.number("f", 1.0) == 2.5 and options.number("missing", 7, integer=True) == 7
    with pytest.raises(ConfigError, match=r"\[plugins.demo\] bad: invalid value 1.5; allowed: a whole number"):
        options.number("bad", 1, integer=True)
    with pytest.raises(ConfigError, match=r"low: invalid value -1; allowed: a number in 0..10"):
        options.number("low", 1, low=0, high=10)


def test_flags() -> None:
    options = PluginOptions("demo", {"a": "yes", "b": False, "c": "maybe"}, ("a", "b", "c"))
    assert options.flag("a", False) is True and options.flag("b", True) is False
    assert options.flag("missing", True) is True
    with pytest.raises(ConfigError, match=r"c: invalid value 'maybe'; allowed: true or false"):
        options.flag("c", False)
