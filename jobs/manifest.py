"""Manifest YAML -> validated jobs.spec.Pipeline (jobs in dependency order).

A manifest is either one job (top-level `kind:`) or a pipeline (`jobs:` list, with optional
pipeline-wide `name:` and `profile:`). Job keys: kind, name, profile, needs (pipeline jobs
only), resources, params, matrix, throttle. Every problem is one `InputError` line
`path:line: key: message` (see jobs.yamlsafe for the YAML-level checks).

* params are checked against the kind's schema (kindspec) and defaults are filled in;
  relative `path` params are joined to `base_dir` (default: the current directory).
* `matrix: {param: [values...]}` expands, in the written key order with the last key varying
  fastest, into one Task per cell (an array job, at most MAX_ARRAY_TASKS tasks); `throttle`
  caps the array tasks running at once. Every task carries all its params into config.json,
  so tasks x param values is capped at MAX_TASK_VALUES (a long list times many tasks would
  otherwise take minutes and gigabytes from a small file).
* A param value that is exactly `{{ needs.JOB.outputs.NAME }}` (also as a list item or inside
  a dict param) is an output reference: JOB must be listed in `needs`, NAME must be an output
  of JOB's kind, and JOB must not be a matrix job. `bind_outputs` later replaces it by a path.
  Every other string, however Jinja-looking, is kept verbatim.
* profile: the `profile` argument (`--profile`) > the job's > the pipeline's >
  $JOBCTL_PROFILE > "laptop". A profile is a name (SAFE_NAME) or a path to a .yaml file.
"""

from __future__ import annotations

import copy
import dataclasses
import graphlib
import itertools
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.resources import parse_resources
from jobs.spec import SAFE_NAME, JobSpec, Pipeline, Source, Task
from jobs.validate import (
    Where,
    clean_string,
    describe,
    did_you_mean,
    integer,
    known_keys,
    mapping,
    sequence,
)
from jobs.yamlsafe import LineDict, LineList, count_values, load_yaml, plain
from kindspec.registry import KINDS
from kindspec.resolve import (
    ParamProblem,
    check_combined,
    check_input_paths,
    required_message,
    unknown_param_message,
)
from kindspec.schema import OUTPUT_REF, Kind, ValueProblem, check_value, default_value

JOB_KEYS = ("kind", "name", "profile", "resources", "params", "matrix", "throttle")
PIPELINE_JOB_KEYS = (*JOB_KEYS, "needs")
PIPELINE_KEYS = ("jobs", "name", "profile")
MAX_ARRAY_TASKS = 1001  # SLURM's default MaxArraySize allows array indices 0..1000
MAX_TASK_VALUES = 1_000_000  # param values summed over a job's tasks
DEFAULT_PROFILE = "laptop"
_PROFILE_FILE = re.compile(r"[^\x00-\x1f\x7f]+\.ya?ml")
_NAME_RULE = "a name of letters, digits, '_', '.', '-' (starting with a letter or digit, " \
             "at most 64 characters)"


@dataclass(frozen=True)
class _Ref:
    """An output reference found in a job's params, with where it was written."""

    job: str
    output: str
    where: Where
    line: int


@dataclass(frozen=True)
class _Draft:
    """A checked job before needs and references are resolved across the pipeline."""

    spec: JobSpec
    where: Where
    data: LineDict
    refs: list[_Ref]


def load_pipeline(path: Path, *, base_dir: Path | None = None, profile: str | None = None,
                  check_inputs: bool = True) -> Pipeline:
    """Load and validate a manifest; jobs come back in topological (needs-first) order.
    `check_inputs=False` skips only the input path checks (kindspec.inputs), for tests and
    tools that look at a manifest's structure away from its data."""
    path = Path(path)
    text, doc = load_yaml(path)
    where = Where(str(path))
    doc = mapping(doc, where, 1, "a mapping (a job with kind: or a pipeline with jobs:)")
    base = Path(base_dir if base_dir is not None else Path.cwd()).absolute()
    fallback = _fallback_profile(profile)
    if "jobs" in doc:
        drafts = _pipeline_drafts(doc, where, base, fallback)
    else:
        if "needs" in doc:
            raise where.at("needs").error(doc.line_of("needs"), "only jobs inside a "
                                          "pipeline's jobs: list can have needs")
        known_keys(doc, JOB_KEYS, where, "; a pipeline lists its jobs under jobs:")
        drafts = [_draft(doc, where, base, fallback, single=True)]
    _check_needs(drafts)
    ordered = _topological(drafts)
    _check_refs(ordered)
    for draft in ordered:  # after the structure: params that clash, then missing inputs
        _check_tasks(draft, lambda kind, values, world: check_combined(kind, values, world))
    if check_inputs:
        for draft in ordered:
            _check_tasks(draft, lambda kind, values, world: check_input_paths(kind, values))
    return Pipeline(source=str(path), text=text, jobs=tuple(d.spec for d in ordered))


def validate_file(path: Path) -> Pipeline:
    """`jobctl validate`: the loaded pipeline, or an InputError."""
    return load_pipeline(path)


def bind_outputs(pipeline: Pipeline, out_dir_of: Callable[[str], Path]) -> Pipeline:
    """Replace each output reference in task params by `out_dir_of(JOB) / <kind output>`.

    References were validated by load_pipeline; Task.matrix keeps the values as written.
    """
    kind_of = {job.name: KINDS[job.kind] for job in pipeline.jobs}

    def bind(value: Any) -> Any:
        if isinstance(value, str):
            ref = OUTPUT_REF.fullmatch(value)
            if ref is None:
                return value
            job, output = ref.groups()
            return str(out_dir_of(job) / kind_of[job].outputs[output])
        if isinstance(value, list):
            return [bind(item) for item in value]
        if isinstance(value, dict):
            return {key: bind(item) for key, item in value.items()}
        return value

    jobs = tuple(
        dataclasses.replace(job, tasks=tuple(
            dataclasses.replace(task, params=bind(task.params)) for task in job.tasks))
        for job in pipeline.jobs)
    return dataclasses.replace(pipeline, jobs=jobs)


def _fallback_profile(override: str | None) -> tuple[str, bool]:
    """(profile, forced): the --profile override wins over everything in the manifest."""
    if override is not None:
        return _profile_value(override, Where("--profile"), None), True
    env = os.environ.get("JOBCTL_PROFILE")
    if env:
        return _profile_value(env, Where("JOBCTL_PROFILE"), None), False
    return DEFAULT_PROFILE, False


def _profile_value(value: Any, where: Where, line: int | None) -> str:
    what = "a profile name or a path to a .yaml file"
    if isinstance(value, str) and _PROFILE_FILE.fullmatch(value):
        return value
    return clean_string(value, where, line, SAFE_NAME, what)


def _pipeline_drafts(doc: LineDict, where: Where, base: Path,
                     fallback: tuple[str, bool]) -> list[_Draft]:
    known_keys(doc, PIPELINE_KEYS, where, "; job keys go inside each entry of jobs:")
    if "name" in doc:
        clean_string(doc["name"], where.at("name"), doc.line_of("name"), SAFE_NAME, _NAME_RULE)
    if "profile" in doc:
        value = _profile_value(doc["profile"], where.at("profile"), doc.line_of("profile"))
        fallback = fallback if fallback[1] else (value, False)
    jobs = sequence(doc["jobs"], where.at("jobs"), doc.line_of("jobs"), "a list of jobs")
    if not jobs:
        raise where.at("jobs").error(doc.line_of("jobs"), "the pipeline has no jobs")
    drafts: list[_Draft] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(jobs):
        at = where.at("jobs").at(index)
        data = mapping(item, at, jobs.line_of(index), "a job mapping")
        known_keys(data, PIPELINE_JOB_KEYS, at)
        draft = _draft(data, at, base, fallback, single=False)
        name = draft.spec.name
        if name in seen:
            raise at.at("name").error(data.line_of("name"), f"duplicate job name {name!r} "
                                      f"(also at line {seen[name]}); give each job a name:")
        seen[name] = data.line_of("name")
        drafts.append(draft)
    return drafts


def _draft(data: LineDict, where: Where, base: Path, fallback: tuple[str, bool],
           single: bool) -> _Draft:
    kind = _kind(data, where)
    name = kind.name
    if "name" in data:
        name = clean_string(data["name"], where.at("name"), data.line_of("name"), SAFE_NAME,
                            _NAME_RULE)
    profile = fallback[0]
    if "profile" in data:
        value = _profile_value(data["profile"], where.at("profile"), data.line_of("profile"))
        profile = profile if fallback[1] else value
    needs: tuple[str, ...] = () if single else _needs(data, where)
    refs: list[_Ref] = []
    params = _params(data, kind, where, base, refs)
    cells = _matrix(data, kind, params, where, base, refs)
    _require(kind, params, cells, data, where)
    resources = parse_resources(data.get("resources"), kind, where.at("resources"),
                                data.line_of("resources"))
    tasks = _tasks(kind, params, cells or [{}], base)
    tasks = _shard(kind, tasks, cells is not None, data, where)
    array = cells is not None or len(tasks) > 1
    throttle = _throttle(data, where, array)
    spec = JobSpec(name=name, kind=kind.name, profile=profile, needs=needs,
                   resources=resources, tasks=tasks, array=array, throttle=throttle,
                   source=Source(where.path, data.line))
    return _Draft(spec, where, data, refs)


def _kind(data: LineDict, where: Where) -> Kind:
    if "kind" not in data:
        raise where.error(data.line, "missing key 'kind' (a job needs kind:, a pipeline "
                                     "needs jobs:)")
    value, line = data["kind"], data.line_of("kind")
    known = ", ".join(sorted(KINDS))
    if not isinstance(value, str):
        raise where.at("kind").error(line, f"expected a kind name ({known}), got "
                                           f"{describe(value)}")
    if value not in KINDS:
        raise where.at("kind").error(line, f"unknown kind {value!r} (known: {known})"
                                           f"{did_you_mean(value, KINDS)}")
    return KINDS[value]


def _needs(data: LineDict, where: Where) -> tuple[str, ...]:
    if "needs" not in data:
        return ()
    at, line = where.at("needs"), data.line_of("needs")
    items = sequence(data["needs"], at, line, "a list of job names")
    names: list[str] = []
    for index, item in enumerate(items):
        name = clean_string(item, at.at(index), items.line_of(index), what="a job name")
        if name in names:
            raise at.at(index).error(items.line_of(index), f"{name!r} is listed twice")
        names.append(name)
    return tuple(names)


def _params(data: LineDict, kind: Kind, where: Where, base: Path,
            refs: list[_Ref]) -> dict[str, Any]:
    """The given params, checked and normalised (no defaults yet)."""
    if data.get("params") is None:
        return {}
    given = mapping(data["params"], where.at("params"), data.line_of("params"))
    checked: dict[str, Any] = {}
    for key, value in given.items():
        at = where.at("params").at(key)
        if key not in kind.params:
            raise at.error(given.line_of(key), unknown_param_message(kind, key))
        checked[key] = _value(kind, key, value, at, given.line_of(key), base)
        _collect_refs(value, at, given.line_of(key), refs)
    return checked


def _value(kind: Kind, key: str, value: Any, where: Where, line: int, base: Path) -> Any:
    """check_value with the error placed on the offending list item when there is one."""
    try:
        return check_value(kind.params[key], value, base)
    except ValueProblem as exc:
        if exc.index is not None and isinstance(value, LineList):
            raise where.at(exc.index).error(value.line_of(exc.index), exc.message) from None
        raise where.error(line, exc.message) from None


def _collect_refs(value: Any, where: Where, line: int, refs: list[_Ref]) -> None:
    """Record every output reference in `value` (a string, or nested in lists/dicts)."""
    if isinstance(value, str):
        ref = OUTPUT_REF.fullmatch(value)
        if ref is not None:
            refs.append(_Ref(ref.group(1), ref.group(2), where, line))
    elif isinstance(value, LineList):
        for index, item in enumerate(value):
            _collect_refs(item, where.at(index), value.line_of(index), refs)
    elif isinstance(value, LineDict):
        for key, item in value.items():
            _collect_refs(item, where.at(str(key)), value.line_of(key), refs)


def _matrix(data: LineDict, kind: Kind, params: dict[str, Any], where: Where, base: Path,
            refs: list[_Ref]) -> list[dict[str, Any]] | None:
    """The matrix cells in order (last key fastest), or None without a matrix."""
    if "matrix" not in data:
        return None
    at, line = where.at("matrix"), data.line_of("matrix")
    given = mapping(data["matrix"], at, line, "a mapping of param -> list of values")
    if not given:
        raise at.error(line, "the matrix is empty; list at least one param")
    axes: list[list[tuple[str, Any]]] = []
    for key, values in given.items():
        axes.append(_axis(kind, key, values, params, at.at(key), given.line_of(key), base,
                          refs))
    count = math.prod(len(axis) for axis in axes)
    if count > MAX_ARRAY_TASKS:
        raise at.error(line, f"the matrix expands to {count} tasks (at most "
                             f"{MAX_ARRAY_TASKS})")
    per_task = count_values(params, MAX_TASK_VALUES) + sum(
        max(count_values(value, MAX_TASK_VALUES) for _, value in axis) for axis in axes)
    if count * per_task > MAX_TASK_VALUES:
        raise at.error(line, f"the matrix makes {count} tasks of up to {per_task} param values "
                             f"each (at most {MAX_TASK_VALUES} in all): shorten the lists or "
                             "split the job")
    return [dict(cell) for cell in itertools.product(*axes)]


def _axis(kind: Kind, key: str, values: Any, params: dict[str, Any], where: Where, line: int,
          base: Path, refs: list[_Ref]) -> list[tuple[str, Any]]:
    if key not in kind.params:
        raise where.error(line, unknown_param_message(kind, key))
    if key in params:
        raise where.error(line, f"{key!r} is set both in params and in matrix; keep one")
    items = sequence(values, where, line, "a non-empty list of values")
    if not items:
        raise where.error(line, "expected a non-empty list of values")
    axis: list[tuple[str, Any]] = []
    for index, item in enumerate(items):
        value = _value(kind, key, item, where.at(index), items.line_of(index), base)
        if any(value == seen for _, seen in axis):
            raise where.at(index).error(items.line_of(index),
                                        f"duplicate matrix value {describe(item)}")
        _collect_refs(item, where.at(index), items.line_of(index), refs)
        axis.append((key, value))
    return axis


def _require(kind: Kind, params: dict[str, Any], cells: list[dict[str, Any]] | None,
             data: LineDict, where: Where) -> None:
    given = set(params) | (set(cells[0]) if cells else set())
    for name, param in kind.params.items():
        if param.required and name not in given:
            raise where.at("params").error(data.line_of("params"), required_message(kind, name))


def _check_tasks(draft: _Draft, check: Callable[[Kind, dict[str, Any], int], None]) -> None:
    """Run a kindspec.resolve check (kind, full params, world size) on each of the job's
    tasks; a ParamProblem becomes an error on the line where the offending key was written."""
    spec = draft.spec
    for task in spec.tasks:
        try:
            check(KINDS[spec.kind], task.params, spec.resources.world_size)
        except ParamProblem as exc:
            raise _param_where(exc.key, draft.data, draft.where).error(
                _param_line(exc.key, draft.data), exc.message) from None


def _param_where(key: str, data: LineDict, where: Where) -> Where:
    in_matrix = isinstance(data.get("matrix"), LineDict) and key in data["matrix"]
    return where.at("matrix" if in_matrix else "params").at(key)


def _param_line(key: str, data: LineDict) -> int:
    """The line of `key` in params or matrix, else of params:, else of the job."""
    for section in ("params", "matrix"):
        block = data.get(section)
        if isinstance(block, LineDict) and key in block:
            return block.line_of(key)
    return data.line_of("params") if "params" in data else data.line


def _shard(kind: Kind, tasks: tuple[Task, ...], has_matrix: bool, data: LineDict,
           where: Where) -> tuple[Task, ...]:
    """A shardable kind with `shards: N > 1` becomes N identical array tasks (0..N-1)."""
    shards = tasks[0].params.get(kind.shards_param, 1) if kind.shards_param else 1
    if shards <= 1:
        return tasks
    given = data.get("params")
    line = (given.line_of(kind.shards_param) if isinstance(given, LineDict)
            and kind.shards_param in given else data.line_of("params"))
    if has_matrix:
        raise where.at("params").at(kind.shards_param).error(
            line, "shards cannot be combined with a matrix; use one of them")
    if shards > MAX_ARRAY_TASKS:
        raise where.at("params").at(kind.shards_param).error(
            line, f"{shards} shards: at most {MAX_ARRAY_TASKS} array tasks")
    return tuple(Task(index=i, params=copy.deepcopy(tasks[0].params)) for i in range(shards))


def _throttle(data: LineDict, where: Where, is_array: bool) -> int | None:
    if "throttle" not in data:
        return None
    line = data.line_of("throttle")
    if not is_array:
        raise where.at("throttle").error(line, "throttle only applies to an array job "
                                               "(a matrix or shards > 1)")
    return integer(data["throttle"], where.at("throttle"), line, 1)


def _tasks(kind: Kind, params: dict[str, Any], cells: list[dict[str, Any]],
           base: Path) -> tuple[Task, ...]:
    """One Task per cell; params in schema order with defaults filled in."""
    tasks = []
    for index, cell in enumerate(cells):
        values = {}
        for name, param in kind.params.items():
            if name in cell:
                values[name] = copy.deepcopy(cell[name])
            elif name in params:
                values[name] = copy.deepcopy(params[name])
            else:
                values[name] = default_value(param, base)
        tasks.append(Task(index=index, params=plain(values), matrix=plain(cell)))
    return tuple(tasks)


def _check_needs(drafts: list[_Draft]) -> None:
    names = {d.spec.name for d in drafts}
    for draft in drafts:
        needs = draft.data.get("needs")
        for index, name in enumerate(draft.spec.needs):
            at, line = draft.where.at("needs").at(index), needs.line_of(index)
            if name == draft.spec.name:
                raise at.error(line, f"job {name!r} cannot need itself")
            if name not in names:
                raise at.error(line, f"no job named {name!r} in this pipeline"
                                     f"{did_you_mean(name, names)} "
                                     f"(jobs: {', '.join(sorted(names))})")


def _topological(drafts: list[_Draft]) -> list[_Draft]:
    """Drafts ordered needs-first; ties keep the manifest order. Cycles are errors."""
    by_name = {d.spec.name: d for d in drafts}
    order = {d.spec.name: i for i, d in enumerate(drafts)}
    sorter = graphlib.TopologicalSorter({d.spec.name: d.spec.needs for d in drafts})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        first = by_name[cycle[0]]
        raise first.where.at("needs").error(first.data.line_of("needs"), "cyclic needs: "
                                            + " -> ".join(cycle)) from None
    ordered: list[_Draft] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=order.__getitem__)
        ordered.extend(by_name[name] for name in ready)
        sorter.done(*ready)
    return ordered


def _check_refs(drafts: list[_Draft]) -> None:
    by_name = {d.spec.name: d.spec for d in drafts}
    for draft in drafts:
        for ref in draft.refs:
            _check_ref(ref, draft.spec, by_name)


def _check_ref(ref: _Ref, job: JobSpec, by_name: dict[str, JobSpec]) -> None:
    text = f"{{{{ needs.{ref.job}.outputs.{ref.output} }}}}"
    if ref.job not in job.needs:
        if ref.job in by_name and ref.job != job.name:
            raise ref.where.error(ref.line, f"{text} refers to job {ref.job!r}, which is not "
                                            f"in needs; add needs: [{ref.job}] to job "
                                            f"{job.name!r}")
        raise ref.where.error(ref.line, f"{text} refers to job {ref.job!r}, which is not in "
                                        f"needs{did_you_mean(ref.job, job.needs)}")
    target = by_name[ref.job]
    outputs = KINDS[target.kind].outputs
    if ref.output not in outputs:
        raise ref.where.error(ref.line, f"job {ref.job!r} (kind {target.kind!r}) has no "
                                        f"output {ref.output!r}"
                                        f"{did_you_mean(ref.output, outputs)} "
                                        f"(outputs: {', '.join(outputs)})")
    if target.array and not KINDS[target.kind].job_level_output(ref.output):
        whole = [name for name in outputs if KINDS[target.kind].job_level_output(name)]
        hint = (f"; use outputs.{whole[0]} (the whole out/ dir, one subdir per task)"
                if whole else "")
        raise ref.where.error(ref.line, f"job {ref.job!r} is an array job whose tasks write "
                                        f"out/<task>/; output {ref.output!r} is ambiguous{hint}")
