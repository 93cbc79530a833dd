"""A kind's config object from its params, through the one schema (kindspec).

Every kind's config class is a frozen dataclass whose fields are exactly the kind's params in
kindspec.registry (same names, same order; no defaults of its own: they live in the schema).
`build_config(cls, kind, params)` resolves the params with kindspec.resolve (the same function
`jobctl validate` goes through) and converts values to the field types: `Path` for path fields,
tuples for list fields. Any problem is one LyricgenInputError `params: KEY: message` (exit 2).

The world size for combined checks (e.g. train-rnn's batch split) is $WORLD_SIZE, which
torchrun sets, else 1.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from kindspec.registry import KINDS
from kindspec.resolve import ParamProblem, check_combined, resolve_params
from lyricgen.errors import LyricgenInputError

Config = TypeVar("Config")


def resolve(kind: str, params: dict[str, Any], world_size: int | None = None) -> dict[str, Any]:
    """The kind's full, checked params; LyricgenInputError naming the key at fault."""
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    try:
        return resolve_params(KINDS[kind], params, world_size=world)
    except ParamProblem as exc:
        raise _input_error(exc) from None


def check_world_size(kind: str, params: dict[str, Any], world_size: int) -> None:
    """The kind's combined checks for the world size a step really runs with."""
    try:
        check_combined(KINDS[kind], params, world_size)
    except ParamProblem as exc:
        raise _input_error(exc) from None


def _input_error(exc: ParamProblem) -> LyricgenInputError:
    key = exc.key if exc.index is None else f"{exc.key}[{exc.index}]"
    return LyricgenInputError(f"params: {key}: {exc.message}")


def build_config(cls: type[Config], kind: str, params: dict[str, Any]) -> Config:
    """`cls(**resolved params)` with path fields as Path and list fields as tuples."""
    hints = typing.get_type_hints(cls)
    values = resolve(kind, params)
    return cls(**{name: _convert(hints[name], value) for name, value in values.items()})


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if Path in options:
        return Path(value)
    if any(typing.get_origin(option) is tuple for option in options):
        return tuple(value)
    return value
