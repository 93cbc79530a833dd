"""Plain-text reference of the kinds registry, for `jobctl kinds [KIND]`.

Pure functions over kindspec.registry (no I/O), so the text always matches what validation accepts.
"""

from __future__ import annotations

import json
from typing import Any

from kindspec.registry import KINDS
from kindspec.schema import Kind, Param


def kinds_overview() -> str:
    """One line per kind: name, flags and summary."""
    width = max(len(name) for name in KINDS)
    lines = []
    for kind in KINDS.values():
        lines.append(f"{kind.name:<{width}}  {kind.summary}{_flags(kind)}")
    lines.append("\n`jobctl kinds KIND` lists a kind's params, defaults, outputs and resources.")
    return "\n".join(lines)


def kind_reference(kind: Kind) -> str:
    """A kind's params (type, default or `required`, allowed values, help), outputs and
    default resources."""
    lines = [f"{kind.name}: {kind.summary}{_flags(kind)}", "", "params:"]
    width = max(len(name) for name in kind.params)
    for name, param in kind.params.items():
        lines.append(f"  {name:<{width}}  {_signature(param)}")
        if param.help:
            lines.append(f"  {'':<{width}}    {param.help}")
    lines.append("")
    lines.append("outputs (for {{ needs.JOB.outputs.NAME }}):")
    lines.extend(f"  {name}: out/{path}" for name, path in kind.outputs.items())
    resources = ", ".join(f"{key}={value}" for key, value in kind.resources.items())
    lines.append(f"\ndefault resources: {resources or '-'}")
    return "\n".join(lines)


def _signature(param: Param) -> str:
    parts = [param.type + (" or null" if param.nullable else "")]
    parts.append("required" if param.required else f"default {_show(param.default)}")
    if param.choices:
        parts.append("one of " + ", ".join(str(choice) for choice in param.choices))
    if param.min is not None and param.max is not None:
        parts.append(f"range {'(' if param.min_open else '['}{_show(param.min)}, "
                     f"{_show(param.max)}{')' if param.max_open else ']'}")
    elif param.min is not None:
        parts.append(f"{'>' if param.min_open else '>='} {_show(param.min)}")
    elif param.max is not None:
        parts.append(f"{'<' if param.max_open else '<='} {_show(param.max)}")
    if param.pattern_help:
        parts.append(param.pattern_help)
    if param.min_items:
        parts.append(f"at least {param.min_items} item(s)")
    if param.unique:
        parts.append("no duplicates")
    if param.input:
        parts.append(f"input: an existing {param.input.replace('_', ' ')}")
    return "; ".join(parts)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _flags(kind: Kind) -> str:
    flags = [label for label, on in (("gpu", kind.gpu_capable), ("torchrun", kind.distributed),
                                     ("checkpoints", kind.checkpoints),
                                     (f"shards: {kind.shards_param}", kind.shards_param))
             if on]
    return f" [{', '.join(flags)}]" if flags else ""
