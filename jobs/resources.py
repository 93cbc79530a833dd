"""Check a manifest's `resources:` block and free-form sbatch options.

`parse_resources` merges Resources() defaults < the kind's resources < the manifest's, then
checks every field: gpus int >= 0; cpus, nodes and processes_per_node int >= 1; mem a size
with a unit (512M, 16G, 1T); time in a SLURM form (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM,
D-HH:MM:SS) or an int of minutes; partition one name or a comma-separated list.

Distributed launch (see jobs.runtime): only a kind with `distributed=True` may ask for
nodes > 1 or processes_per_node > 1. For such a kind processes_per_node defaults to gpus (one
process per GPU) or 1 without GPUs; with GPUs it must equal gpus (DDP puts local rank r on
GPU r: fewer processes leave GPUs idle, more crash), and it may not exceed cpus (the CPUs of
a node, shared by its processes).

`signal_seconds` (int, 0 to 65535; 0 = off): how long before the time limit SLURM sends
SIGUSR1 to the script of a kind that checkpoints (Kind.checkpoints), which saves a checkpoint
and requeues the job. Left out, `warning_seconds` picks 300 s, at most a tenth of the time
limit; an explicit value must be below the limit (SLURM would signal at once, and the job
would requeue itself forever) and is refused for kinds that do not checkpoint. SLURM may send
the signal up to 60 s early (its event resolution).

`sbatch_options` checks `resources.extra` and a profile's `sbatch:` mapping: long option
names (`account`, `qos`, `constraint`...) with string or integer values on one line. Options
that jobctl sets itself (job-name, output, array, dependency, ...) are refused, and so are
the ones with a dedicated resources key (mem, time, gres...), with a hint to use that key.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from jobs.spec import Resources
from jobs.validate import Where, clean_string, describe, integer, known_keys, mapping
from jobs.yamlsafe import LineDict
from kindspec.registry import KINDS
from kindspec.schema import Kind

_MEM = re.compile(r"[1-9][0-9]*[KMGT]", re.I)
_MEM_UNITS = "BKMGT"
_TIME = re.compile(r"""[0-9]+(?::[0-5]?[0-9]){0,2}        # MM, MM:SS, HH:MM:SS
                       |[0-9]+-[0-9]{1,2}(?::[0-5]?[0-9]){0,2}  # D-HH, D-HH:MM, D-HH:MM:SS""",
                   re.X)
PARTITION = re.compile(r"[A-Za-z0-9_.-]+(?:,[A-Za-z0-9_.-]+)*")
_OPTION = re.compile(r"[a-z][a-z0-9-]*")
CONTROLLED_OPTIONS = frozenset({
    "job-name", "output", "error", "input", "array", "dependency", "parsable", "wrap", "chdir",
    "export", "wait", "test-only", "open-mode", "kill-on-invalid-dep", "requeue", "no-requeue",
})
_RESOURCE_OPTIONS = {
    "gres": "gpus", "gpus": "gpus", "gpus-per-node": "gpus", "cpus-per-task": "cpus",
    "mem": "mem", "mem-per-cpu": "mem", "time": "time", "nodes": "nodes",
    "partition": "partition", "ntasks": "processes_per_node",
    "ntasks-per-node": "processes_per_node", "signal": "signal_seconds",
}
_KEYS = ("gpus", "cpus", "mem", "time", "nodes", "partition", "extra", "processes_per_node",
         "signal_seconds")
_SIGNAL = "signal_seconds"
MAX_SIGNAL_SECONDS = 65535  # SLURM keeps --signal's time in 16 bits
DEFAULT_SIGNAL_SECONDS = 300
_COUNTS = ("gpus", "cpus", "nodes", "processes_per_node")
_PROCESSES = "processes_per_node"


def parse_resources(data: Any, kind: Kind, where: Where, line: int) -> Resources:
    """Resources from the kind's defaults overridden by the manifest's `resources:` (at
    `line`), with processes_per_node resolved and the distributed-launch rules checked."""
    given = LineDict(line) if data is None else mapping(data, where, line)
    known_keys(given, _KEYS, where)
    checked = {key: _check(key, value, where.at(key), given.line_of(key))
               for key, value in given.items()}
    merged = dataclasses.replace(Resources(), **{**kind.resources, **checked})
    if _PROCESSES not in checked and _PROCESSES not in kind.resources and kind.distributed:
        merged = dataclasses.replace(merged, processes_per_node=max(merged.gpus, 1))
    problem = _launch_problem(merged, kind, "gpus" in given) or _signal_problem(merged, kind)
    if problem:
        key, message = problem
        raise where.at(key).error(given.line_of(key), message)
    return merged


def _launch_problem(res: Resources, kind: Kind, gpus_given: bool) -> tuple[str, str] | None:
    """(key, message) of the first distributed-launch rule `res` breaks, else None."""
    if not kind.distributed:
        for key, count in (("nodes", res.nodes), (_PROCESSES, res.processes_per_node)):
            if count > 1:
                return key, (f"kind {kind.name} runs as one process, so {key} must be 1; only "
                             f"kinds launched with torchrun can use more ({_distributed_kinds()})")
    elif res.gpus and res.processes_per_node != res.gpus:
        origin = "" if gpus_given else f" (kind {kind.name}'s default)"
        return _PROCESSES, (f"with gpus: {res.gpus}{origin} a node runs one process per GPU: "
                            f"leave processes_per_node out or set it to {res.gpus}, or set "
                            f"gpus: 0 for CPU processes; got {res.processes_per_node}")
    if res.processes_per_node > res.cpus:
        return _PROCESSES, (f"{res.processes_per_node} processes per node need at least as "
                            f"many cpus (the CPUs of one node, shared by its processes), "
                            f"got cpus: {res.cpus}")
    return None


def _distributed_kinds() -> str:
    return ", ".join(name for name, kind in KINDS.items() if kind.distributed)


def _signal_problem(res: Resources, kind: Kind) -> tuple[str, str] | None:
    """(key, message) when an explicit signal_seconds cannot work, else None."""
    if not res.signal_seconds:
        return None
    if not kind.checkpoints:
        kinds = ", ".join(name for name, k in KINDS.items() if k.checkpoints)
        return _SIGNAL, (f"kind {kind.name} does not checkpoint, so it cannot use a warning "
                         f"signal before its time limit (kinds that do: {kinds}); remove it "
                         "or set 0")
    limit = time_limit_seconds(res.time)
    if res.signal_seconds >= limit:
        return _SIGNAL, (f"{res.signal_seconds} s must be less than the time limit "
                         f"({res.time} = {limit} s), or SLURM signals the job as it starts")
    return None


def time_limit_seconds(text: str) -> int:
    """Seconds of a checked SLURM time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM,
    D-HH:MM:SS)."""
    days, sep, clock = text.partition("-")
    if not sep:
        days, clock = "0", text
    parts = [int(part) for part in clock.split(":")]
    if sep:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:  # HH:MM:SS
        hours, minutes, seconds = parts
    else:  # MM or MM:SS
        hours, minutes, seconds = 0, parts[0], parts[1] if len(parts) == 2 else 0
    return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds


def mem_bytes(text: str) -> int | None:
    """Bytes of a checked memory size (512M, 16G; K/M/G/T are powers of 1024, as for
    SLURM's --mem); None for anything else (a foreign run.json)."""
    if not isinstance(text, str) or not _MEM.fullmatch(text):
        return None
    return int(text[:-1]) << (10 * _MEM_UNITS.index(text[-1].upper()))


def format_bytes(count: float) -> str:
    """A size in --mem's units, short: 900K, 414M, 1.3G, 12G (1024-based)."""
    value, unit = float(count), 0
    while value >= 1000 and unit < len(_MEM_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    text = f"{value:.1f}" if value < 10 and unit else f"{value:.0f}"
    return f"{text}{'B' if unit == 0 else _MEM_UNITS[unit]}"


def format_duration(seconds: float) -> str:
    """Elapsed time as SLURM shows it: 0:03:31, 27:46:40 (hours go on past a day)."""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def warning_seconds(res: Resources, kind: Kind | None) -> int:
    """Seconds before the time limit at which SLURM signals the job (0: no signal): an
    explicit signal_seconds, else DEFAULT_SIGNAL_SECONDS capped at a tenth of the limit, for
    kinds that checkpoint; always 0 for other kinds."""
    if kind is None or not kind.checkpoints:
        return 0
    if res.signal_seconds is not None:
        return res.signal_seconds
    return min(DEFAULT_SIGNAL_SECONDS, time_limit_seconds(res.time) // 10)


def _check(key: str, value: Any, where: Where, line: int) -> Any:
    if key in _COUNTS:
        return integer(value, where, line, 0 if key == "gpus" else 1)
    if key == _SIGNAL:
        seconds = integer(value, where, line, 0)
        if seconds > MAX_SIGNAL_SECONDS:
            raise where.error(line, f"must be <= {MAX_SIGNAL_SECONDS} seconds, got {seconds}")
        return seconds
    if key == "mem":
        if isinstance(value, str) and _MEM.fullmatch(value):
            return value.upper()
        raise where.error(line, f"expected a size with a unit like 512M, 16G or 1T, "
                                f"got {describe(value)}")
    if key == "time":
        return _time(value, where, line)
    if key == "partition":
        return clean_string(value, where, line, PARTITION, "a partition name")
    return sbatch_options(value, where, line)


def _time(value: Any, where: Where, line: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise where.error(line, "expected a time limit like 30 (minutes), 04:00:00 or "
                                f"2-00:00:00, got {describe(value)}")
    if not any(c not in "0:-" for c in value):
        raise where.error(line, "the time limit must be more than zero")
    return value


def sbatch_options(data: Any, where: Where, line: int) -> dict[str, str]:
    """Checked free-form sbatch long options: name -> value as a string."""
    given: LineDict = mapping(data, where, line, "a mapping of sbatch options")
    options: dict[str, str] = {}
    for key, value in given.items():
        at, key_line = where.at(key), given.line_of(key)
        if not _OPTION.fullmatch(key):
            raise at.error(key_line, "expected a long sbatch option name like 'account' "
                                     "(lowercase letters, digits, dashes)")
        if key in CONTROLLED_OPTIONS:
            raise at.error(key_line, f"jobctl sets --{key} itself; remove it")
        if key in _RESOURCE_OPTIONS:
            raise at.error(key_line, f"use resources.{_RESOURCE_OPTIONS[key]} instead of "
                                     f"--{key}")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        options[key] = clean_string(value, at, key_line, what="a string or an integer")
    return options
