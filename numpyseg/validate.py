"""Checks of option values: one place for "must be an integer from 1 to N" and friends.

Every check returns the value converted (int or float) or raises `ConfigError`
with one line naming the option, the allowed range and the value given, so the
command line prints it as ``numpyseg <command>: error: ...``.  NaN and infinity
never pass a check (argparse's `type=float` accepts "nan" and "inf").
"""

from __future__ import annotations

import math

from numpyseg.errors import ConfigError


def check_int(option: str, value, *, low: int = 1, high: int | None = None, multiple: int = 1) -> int:
    """`value` as an int in [low, high] (high None: no upper bound) divisible by `multiple`.

    Args:
        option: the name shown to the user, e.g. '--batch-size' or 'base_channels'.
        value: an int, or a float/str holding a whole number.
    Raises:
        ConfigError: not a whole number, out of range, or not a multiple of `multiple`.
    """
    try:
        number = float(value)
        ok = math.isfinite(number) and number == int(number)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{option} must be a whole number, got {value!r}")
    number = int(number)
    if number < low or (high is not None and number > high) or number % multiple:
        allowed = f"at least {low}" if high is None else f"from {low} to {high}"
        if multiple > 1:
            allowed = f"a multiple of {multiple}, " + allowed
        raise ConfigError(f"{option} must be {allowed}, got {value}")
    return number


def check_number(option: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a finite float in the interval from `low` to `high`.

    Args:
        option: the name shown to the user.
        low, high: bounds (None: unbounded on that side).
        low_open, high_open: exclude the bound itself ((0, 1) rather than [0, 1]).
    Raises:
        ConfigError: not a finite number, or outside the interval.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    inside = math.isfinite(number)
    if inside and low is not None:
        inside = number > low if low_open else number >= low
    if inside and high is not None:
        inside = number < high if high_open else number <= high
    if not inside:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        opening = "(" if low_open or low is None else "["
        closing = ")" if high_open or high is None else "]"
        interval = f"{opening}{left}, {right}{closing}"
        raise ConfigError(f"{option} must be a finite number in {interval}, got {value}")
    return number


def check_threshold(value, option: str = "--threshold") -> float:
    """A probability threshold, strictly between 0 and 1 (0 marks every pixel, 1 none)."""
    return check_number(option, value, low=0.0, high=1.0, low_open=True, high_open=True)
