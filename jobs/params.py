"""Check manifest params against a kind's params schema (jobs.kinds.Param).

Generic over the schema: no kind is named here. Types:

* `int` (a YAML boolean is NOT an int), `float` (ints accepted and converted; nan/inf refused),
  `bool`, `str`, `path`, `dict` (string keys, JSON-like values);
* `str_list`, `float_list`, `int_list` (each item checked like the scalar type).

`choices`, `min` and `max` apply to the value, or to each item of a list. `null` is accepted
only for `nullable` params. A `path` that is not absolute is joined to `base_dir`, except an
output reference `{{ needs.JOB.outputs.NAME }}`, which jobs.manifest checks and later binds.
Strings are never altered otherwise (no `~` or `$VAR` expansion).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from jobs.kinds import Param
from jobs.spec import OUTPUT_REF
from jobs.validate import describe

_LIST_ITEM = {"str_list": "str", "float_list": "float", "int_list": "int"}
_EXPECTED = {
    "int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
    "path": "a path (non-empty string)", "dict": "a mapping",
}


class ValueProblem(Exception):
    """A value does not fit its Param; `index` is the offending list item, if any."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index


def check_value(param: Param, value: Any, base_dir: Path) -> Any:
    """The value normalised for `param` (float from int, absolute path); ValueProblem else."""
    if value is None:
        if param.nullable:
            return None
        raise ValueProblem(f"expected {expected(param.type)}, got null")
    item_type = _LIST_ITEM.get(param.type)
    if item_type is None:
        return _check_scalar(param, param.type, value, base_dir)
    if not isinstance(value, list):
        raise ValueProblem(f"expected {expected(param.type)}, got {describe(value)}")
    items = []
    for index, item in enumerate(value):
        try:
            items.append(_check_scalar(param, item_type, item, base_dir))
        except ValueProblem as exc:
            raise ValueProblem(exc.message, index) from None
    return items


def default_value(param: Param, base_dir: Path) -> Any:
    """A fresh copy of the param's default (relative path defaults made absolute)."""
    value = copy.deepcopy(param.default)
    if param.type == "path" and isinstance(value, str):
        return absolute(value, base_dir)
    return value


def expected(type_: str) -> str:
    """`a number`, `a list of integers`... for a param type."""
    item = _LIST_ITEM.get(type_)
    if item is None:
        return _EXPECTED[type_]
    return f"a list of {_EXPECTED[item].split(' ', 1)[1]}s"


def absolute(value: str, base_dir: Path) -> str:
    """`value` joined to `base_dir` unless absolute or an output reference."""
    if OUTPUT_REF.fullmatch(value) or Path(value).is_absolute():
        return value
    return str(base_dir / value)


def _check_scalar(param: Param, type_: str, value: Any, base_dir: Path) -> Any:
    value = _check_type(type_, value, base_dir)
    if param.choices is not None and value not in param.choices:
        options = ", ".join(describe(c) for c in param.choices)
        raise ValueProblem(f"expected one of {options}, got {describe(value)}")
    if param.min is not None and value < param.min:
        raise ValueProblem(f"must be >= {param.min}, got {describe(value)}")
    if param.max is not None and value > param.max:
        raise ValueProblem(f"must be <= {param.max}, got {describe(value)}")
    return value


def _check_type(type_: str, value: Any, base_dir: Path) -> Any:
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "path": isinstance(value, str) and value != "" and "\x00" not in value,
        "dict": isinstance(value, dict),
    }[type_]
    if not ok:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        hint = " (quote it to make it a string)" if type_ in ("str", "path") and number else ""
        raise ValueProblem(f"expected {_EXPECTED[type_]}, got {describe(value)}{hint}")
    if type_ == "float":
        if not math.isfinite(value):
            raise ValueProblem(f"expected a finite number, got {describe(value)}")
        return float(value)
    if type_ == "path":
        return absolute(value, base_dir)
    if type_ == "dict":
        _check_json(value)
    return value


def _check_json(value: Any) -> None:
    """Dict params go to config.json: only string keys and JSON values."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueProblem(f"mapping keys must be strings, got {describe(key)}")
            _check_json(item)
    elif isinstance(value, list):
        for item in value:
            _check_json(item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueProblem(f"expected a finite number, got {describe(value)}")
