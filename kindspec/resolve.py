"""`resolve_params`: a params dict -> the full, checked params of a kind.

The one parser of params: lyricgen's config objects are built from its result, and
jobs.manifest runs the same steps (with file:line positions) through the functions below, so
`jobctl validate` accepts exactly what the job accepts. Steps, in order:

1. every key is a param of the kind (else a did-you-mean);
2. every required param is given;
3. each value passes `check_value` (types, ranges, choices, patterns, list rules; relative paths
   made absolute against `base_dir`), the others get their defaults;
4. the kind's combined checks (several params, the world size) pass;
5. every input path exists and is what its param needs (kindspec.inputs); an output reference
   (`{{ needs.JOB.outputs.NAME }}`) is skipped: the job that writes it has not run yet.

Every failure is a ParamProblem naming the key (and the list item) at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kindspec.inputs import input_problem
from kindspec.schema import (
    OUTPUT_REF,
    Kind,
    ValueProblem,
    check_value,
    default_value,
    did_you_mean,
)


class ParamProblem(Exception):
    """A params problem at `key` (list item `index`, if any): one line `key: message`."""

    def __init__(self, key: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
        self.index = index


def resolve_params(kind: Kind, given: Mapping[str, Any], *, base_dir: Path | None = None,
                   world_size: int = 1, check_inputs: bool = True) -> dict[str, Any]:
    """All of `kind`'s params (schema order), from `given` and the defaults; ParamProblem."""
    base = Path(base_dir if base_dir is not None else Path.cwd()).absolute()
    for key in given:
        if key not in kind.params:
            raise ParamProblem(key, unknown_param_message(kind, key))
    for name, param in kind.params.items():
        if param.required and name not in given:
            raise ParamProblem(name, required_message(kind, name))
    values: dict[str, Any] = {}
    for name, param in kind.params.items():
        if name not in given:
            values[name] = default_value(param, base)
            continue
        try:
            values[name] = check_value(param, given[name], base)
        except ValueProblem as exc:
            raise ParamProblem(name, exc.message, exc.index) from None
    check_combined(kind, values, world_size)
    if check_inputs:
        check_input_paths(kind, values)
    return values


def unknown_param_message(kind: Kind, key: str) -> str:
    return (f"unknown param for kind {kind.name!r}{did_you_mean(key, kind.params)} "
            f"(params: {', '.join(kind.params)})")


def required_message(kind: Kind, name: str) -> str:
    param = kind.params[name]
    help_text = f" ({param.help})" if param.help else ""
    return f"missing required param {name!r} for kind {kind.name!r}{help_text}"


def check_combined(kind: Kind, values: dict[str, Any], world_size: int = 1) -> None:
    """Run the kind's combined checks on full params (defaults filled in)."""
    for check in kind.combined_checks:
        problem = check(values, world_size)
        if problem is not None:
            raise ParamProblem(*problem)


def check_input_paths(kind: Kind, values: dict[str, Any]) -> None:
    """Every input path param (Param.input) of full params points at what it must."""
    for name, param in kind.params.items():
        value = values.get(name)
        if param.input is None or value is None or OUTPUT_REF.fullmatch(value):
            continue
        problem = input_problem(param.input, value)
        if problem is not None:
            raise ParamProblem(name, problem)
