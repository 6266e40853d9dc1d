"""Checks of scalar options, one place each: every message names the parameter.

Example:
    >>> positive_int(3, "epochs")
    3
    >>> positive_int(0, "epochs")
    Traceback (most recent call last):
    ...
    ffjord._errors.InputError: epochs must be a positive integer, got 0
"""

import math
from typing import Any

import numpy as np

from ._errors import InputError


def is_int(value: Any) -> bool:
    """An integer, not a bool (NumPy integers included)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number, not a bool."""
    real = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    return real and math.isfinite(value)


def _fail(name: str, what: str, value: Any) -> InputError:
    return InputError(f"{name} must be {what}, got {value!r}", parameters=(name,))


def positive_int(value: Any, name: str) -> int:
    if not is_int(value) or value < 1:
        raise _fail(name, "a positive integer", value)
    return int(value)


def non_negative_int(value: Any, name: str, what: str = "a non-negative integer") -> int:
    if not is_int(value) or value < 0:
        raise _fail(name, what, value)
    return int(value)


def positive_number(value: Any, name: str) -> float:
    if not is_number(value) or value <= 0:
        raise _fail(name, "a positive number", value)
    return float(value)


def non_negative_number(value: Any, name: str) -> float:
    if not is_number(value) or value < 0:
        raise _fail(name, "a non-negative number", value)
    return float(value)


def fraction(value: Any, name: str, *, below: float = 1.0, what: str = "") -> float:
    """A number in [0, below)."""
    if not is_number(value) or not 0 <= value < below:
        raise _fail(name, what or f"a fraction in [0, {below:g})", value)
    return float(value)


def one_of(value: Any, name: str, choices) -> Any:
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise InputError(f"unknown {name} {value!r}; choose one of: {listed}")
    return value
