"""Field checks shared by every JSON record reader (units records, alignments, eval items).

A decoded JSON value is accepted only with the type its field declares, and never converted:
an integer field takes an `int` (not 3.7, not "7", not `true` -- Python's bool is an int, so it is
excluded by name), a number field a finite int or float (not NaN/Infinity, which the stdlib
decoder lets through), a string field a `str`. Errors raise `FieldError` naming `where`
(file:line) and the field, e.g. `units.jsonl:3: field 'units'[4] must be an integer, not 3.7`.

List checks run at C speed (`map(type, ...)`, `min`, `max`) and look at elements one by one only
to name the first bad one, so a reader pays little for them on good data.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Optional

_INT = {int}
_NUMBER = {int, float}
INT64_END = 2 ** 63  # integer fields are stored as int64: larger ones are refused, not wrapped
_FLOAT_MAX = sys.float_info.max


class FieldError(ValueError):
    """One field of a record has the wrong type or value; `field` names it."""

    def __init__(self, where: str, field: str, problem: str, index: Optional[int] = None) -> None:
        super().__init__(f"{where}: field {field!r}{'' if index is None else f'[{index}]'} {problem}")
        self.field, self.index = field, index


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_number(v: Any) -> bool:
    t = type(v)
    return (t is float and math.isfinite(v)) or (t is int and -_FLOAT_MAX <= v <= _FLOAT_MAX)


def _bounds(v, lo, hi, above) -> Optional[str]:
    if lo is not None and hi is not None and hi != INT64_END and not lo <= v < hi:
        return f"= {v!r} outside [{lo}, {hi})"
    if lo is not None and v < lo:
        return f"must be >= {lo}, not {v!r}"
    if above is not None and not v > above:
        return f"must be > {above}, not {v!r}"
    if hi is not None and v >= hi:
        return f"must be < {hi}, not {v!r}"
    return None


def integer(value: Any, where: str, field: str, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """An int in [lo, hi) (hi defaults to the int64 range)."""
    lo, hi = -INT64_END if lo is None else lo, INT64_END if hi is None else hi
    if not _is_int(value):
        raise FieldError(where, field, f"must be an integer, not {value!r}")
    problem = _bounds(value, lo, hi, None)
    if problem:
        raise FieldError(where, field, problem)
    return value


def number(value: Any, where: str, field: str, lo: Optional[float] = None, above: Optional[float] = None) -> float:
    """A finite int or float, >= lo and/or > above."""
    if not _is_number(value):
        raise FieldError(where, field, f"must be a finite number, not {value!r}")
    problem = _bounds(value, lo, None, above)
    if problem:
        raise FieldError(where, field, problem)
    return value


def string(value: Any, where: str, field: str, empty: bool = False) -> str:
    if type(value) is not str:
        raise FieldError(where, field, f"must be a string, not {value!r}")
    if not empty and not value.strip():
        raise FieldError(where, field, "must be a non-empty string")
    return value


def _list(values: Any, where: str, field: str, types: set, what: str, check, lo, hi, above, empty: bool) -> list:
    if type(values) is not list:
        raise FieldError(where, field, f"must be a list of {what}s, not {type(values).__name__}")
    if not values:
        if not empty:
            raise FieldError(where, field, "is an empty list")
        return values
    try:
        ok = set(map(type, values)) <= types and (types is _INT or all(map(math.isfinite, values)))
    except OverflowError:  # an int beyond the float range
        ok = False
    if ok:
        low, high = min(values), max(values)
        ok = ((lo is None or low >= lo) and (above is None or low > above) and (hi is None or high < hi))
    if ok:
        return values
    for i, v in enumerate(values):  # name the first bad element
        if not check(v):
            raise FieldError(where, field, f"must be {'an' if what[0] in 'aeiou' else 'a'} {what}, not {v!r}", i)
        problem = _bounds(v, lo, hi, above)
        if problem:
            raise FieldError(where, field, problem, i)
    raise AssertionError("unreachable")  # pragma: no cover


def integers(values: Any, where: str, field: str, lo: Optional[int] = None, hi: Optional[int] = None,
             empty: bool = True) -> list[int]:
    """A list of ints, each in [lo, hi) (hi defaults to the int64 range)."""
    lo, hi = -INT64_END if lo is None else lo, INT64_END if hi is None else hi
    return _list(values, where, field, _INT, "integer", _is_int, lo, hi, None, empty)


def numbers(values: Any, where: str, field: str, lo: Optional[float] = None, empty: bool = True) -> list:
    """A list of finite ints/floats, each >= lo."""
    return _list(values, where, field, _NUMBER, "finite number", _is_number, lo, None, None, empty)
