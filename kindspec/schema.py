"""Param / Kind and the check of one param value against its Param.

Param types: "str", "int", "float", "bool", "path" (made absolute against a base directory;
an input unless `writes=True`), "dict" (string keys, JSON values), and the lists "str_list",
"float_list", "int_list" (each item checked like the scalar). Rules, all optional:

- `choices`, `min` / `max` (inclusive; `min_open` / `max_open` make them exclusive) apply to
  the value, or to each item of a list;
- `pattern` (a full-match regex) applies to a str or to each item of a str_list;
- `min_items` and `unique` apply to lists;
- `nullable`: YAML null is allowed (and stays None);
- `input`: for an input path, what it must point at (see kindspec.inputs);
- `redact`: errors never echo the value (a token pasted where its variable NAME belongs).

`check_value` returns the normalised value (float from int, absolute path) or raises
ValueProblem; `index` names the offending list item. A YAML boolean is never an int or a float.
Strings are never altered otherwise (no `~` or `$VAR` expansion). An output reference, a string
that is exactly `{{ needs.JOB.outputs.NAME }}`, passes any path check: jobs.manifest checks it
and later binds it to a path.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT_REF = re.compile(r"^\{\{\s*needs\.([A-Za-z0-9_.-]+)\.outputs\.([A-Za-z0-9_]+)\s*\}\}$")
NO_DEFAULT: Any = object()
LIST_ITEM = {"str_list": "str", "float_list": "float", "int_list": "int"}
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


@dataclass(frozen=True)
class Param:
    type: str
    default: Any = NO_DEFAULT
    help: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    pattern: str | None = None
    pattern_help: str = ""  # what `pattern` means, for the error message
    min_items: int | None = None
    unique: bool = False
    nullable: bool = False
    writes: bool = False  # a "path" the job writes, not reads: never hashed into the cache key
    input: str | None = None  # an input path's kind (kindspec.inputs.INPUT_KINDS)
    redact: bool = False  # never echo the value in errors (it may be a secret pasted by mistake)

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT


# A kind's combined check: (params with defaults, world size) -> (key, message) or None.
CombinedCheck = Callable[[dict[str, Any], int], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Kind:
    name: str
    summary: str
    params: dict[str, Param]
    outputs: dict[str, str]
    resources: dict[str, Any] = field(default_factory=dict)
    gpu_capable: bool = False
    # An int param that splits the job into that many identical array tasks (each task reads
    # its index from SLURM_ARRAY_TASK_ID); None: the kind is not shardable.
    shards_param: str | None = None
    # The kind runs under torchrun (torch.distributed env: RANK, WORLD_SIZE...), so its jobs
    # may ask for resources.processes_per_node > 1 and nodes > 1 (jobs.runtime launches it).
    distributed: bool = False
    # The kind saves checkpoints, resumes from them when run again, and on SIGUSR1/SIGTERM
    # saves one and exits 75 (lyricgen.preempt): its jobs get SLURM's warning signal before
    # the time limit and `--requeue` (jobs.render), and job.sh requeues them on exit 75.
    checkpoints: bool = False
    # Checks that span several params (the only hand-written checks; see kindspec.resolve).
    combined_checks: tuple[CombinedCheck, ...] = ()

    def job_level_output(self, output: str) -> bool:
        """An output that names the job's whole out/ dir ("."), valid for array jobs too."""
        return self.outputs.get(output) == "."


def check_value(param: Param, value: Any, base_dir: Path) -> Any:
    """The value normalised for `param` (float from int, absolute path); ValueProblem else."""
    if value is None:
        if param.nullable:
            return None
        raise ValueProblem(f"expected {expected(param.type)}, got null")
    item_type = LIST_ITEM.get(param.type)
    if item_type is None:
        return _check_scalar(param, param.type, value, base_dir)
    if not isinstance(value, list | tuple):
        raise ValueProblem(f"expected {expected(param.type)}, got {describe(value)}")
    if param.min_items is not None and len(value) < param.min_items:
        raise ValueProblem(f"expected at least {param.min_items} item(s), got {len(value)}")
    items: list[Any] = []
    for index, item in enumerate(value):
        try:
            checked = _check_scalar(param, item_type, item, base_dir)
        except ValueProblem as exc:
            raise ValueProblem(exc.message, index) from None
        if param.unique and checked in items:
            raise ValueProblem(f"duplicate value {describe(item)}", index)
        items.append(checked)
    return items


def default_value(param: Param, base_dir: Path) -> Any:
    """A fresh copy of the param's default (relative path defaults made absolute)."""
    value = copy.deepcopy(param.default)
    if param.type == "path" and isinstance(value, str):
        return absolute(value, base_dir)
    return value


def expected(type_: str) -> str:
    """`a number`, `a list of integers`... for a param type."""
    item = LIST_ITEM.get(type_)
    if item is None:
        return _EXPECTED[type_]
    return f"a list of {_EXPECTED[item].split(' ', 1)[1]}s"


def absolute(value: str, base_dir: Path) -> str:
    """`value` joined to `base_dir` unless absolute or an output reference."""
    if OUTPUT_REF.fullmatch(value) or Path(value).is_absolute():
        return value
    return str(base_dir / value)


def describe(value: Any) -> str:
    """A short human rendering of a value for `got ...` messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def did_you_mean(word: Any, options: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest option, or "" when none is close."""
    close = difflib.get_close_matches(str(word), sorted(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_scalar(param: Param, type_: str, value: Any, base_dir: Path) -> Any:
    try:
        return _check_rules(param, _check_type(type_, value, base_dir), value)
    except ValueProblem as exc:
        if param.redact:
            raise ValueProblem(exc.message.split(", got ")[0] + " (value not shown)") from None
        raise


def _check_rules(param: Param, value: Any, written: Any) -> Any:
    """`value` (normalised) against the param's rules; messages show it as `written`."""
    got = f"got {describe(written)}"
    if param.choices is not None and value not in param.choices:
        options = ", ".join(describe(c) for c in param.choices)
        raise ValueProblem(f"expected one of {options}, {got}")
    if param.min is not None and (value <= param.min if param.min_open else value < param.min):
        raise ValueProblem(f"must be {'>' if param.min_open else '>='} {param.min}, {got}")
    if param.max is not None and (value >= param.max if param.max_open else value > param.max):
        raise ValueProblem(f"must be {'<' if param.max_open else '<='} {param.max}, {got}")
    if param.pattern is not None and not re.fullmatch(param.pattern, value):
        raise ValueProblem(f"expected {param.pattern_help or 'a match of ' + param.pattern}, "
                           f"{got}")
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
