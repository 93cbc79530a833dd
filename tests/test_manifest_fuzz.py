"""Bad input for jobs.manifest.load_pipeline, property-based (hypothesis).

The property, for ANY file: load_pipeline either returns a Pipeline that jobctl can use
(JSON- and UTF-8-serialisable, every job renders to a script or to an InputError), or raises
jobs.errors.InputError whose str() is ONE line `PATH:LINE: ...` with LINE inside the file.
Any other exception fails the test. Inputs: random YAML documents, manifest-shaped documents,
raw bytes and text, and mutations of every example manifest (tests/manifest_strategies.py).
Examples are derandomized (the same ones on every run, no example database), so a failure
always reproduces. Regressions found this way live in tests/data/manifests/regress/.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from manifest_strategies import (
    HOSTILE,
    MUTATIONS,
    TEXT,
    HypothesisPick,
    RandomPick,
    duplicate_key_line,
    key_lines,
    manifest_documents,
    mutate,
    raw_inputs,
    yaml_documents,
)

from jobs.errors import InputError
from jobs.manifest import load_pipeline
from jobs.plan import render_job
from jobs.spec import SAFE_NAME, Pipeline, Profile
from jobs.yamlsafe import load_yaml, plain
from kindspec.registry import KINDS

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests/data/manifests"
EXAMPLES = sorted(REPO.glob("manifests/*.yaml")) + sorted((DATA / "good").glob("*.yaml"))
BASE = Path("/proj")
JOBCTL = Path(sys.executable).with_name("jobctl")


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBCTL_PROFILE", raising=False)


def max_line(data: bytes) -> int:
    """An upper bound for a line number in `data`: every line-break convention counted."""
    try:
        return len(data.decode("utf-8-sig").splitlines()) + 1
    except UnicodeDecodeError:
        return data.count(b"\n") + 1


def assert_one_line(error: InputError, path: Path, data: bytes) -> None:
    text = str(error)
    assert text.splitlines() == [text], repr(text)
    assert error.line is not None and 1 <= error.line <= max_line(data), text
    assert text.startswith(f"{path}:{error.line}: "), text
    assert error.key.isprintable(), text


def assert_usable(pipeline: Pipeline, path: Path) -> None:
    """What jobctl does next must work: config.json as UTF-8 JSON, and rendering."""
    assert isinstance(pipeline, Pipeline) and pipeline.jobs
    for job in pipeline.jobs:
        assert job.kind in KINDS and SAFE_NAME.fullmatch(job.name) and job.tasks
        json.dumps(job.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")
        try:
            assert render_job(job, Profile(name="laptop"), Path("/runs/r") / job.name)
        except InputError as exc:
            assert_one_line(exc, path, pipeline.text.encode("utf-8"))


def check(path: Path, data: bytes) -> Pipeline | InputError:
    """Write `data` to `path` and load it: the property of this module."""
    path.write_bytes(data)
    return verify(path, data)


def verify(path: Path, data: bytes) -> Pipeline | InputError:
    """Load `path` (holding `data`): a usable Pipeline or a one-line InputError."""
    try:
        pipeline = load_pipeline(path, base_dir=BASE, check_inputs=False)
    except InputError as exc:
        assert_one_line(exc, path, data)
        return exc
    assert_usable(pipeline, path)
    return pipeline


@fuzz(300)
@given(data=yaml_documents())
def test_random_yaml_documents(tmp_path: Path, data: bytes) -> None:
    check(tmp_path / "doc.yaml", data)


@fuzz(400)
@given(data=manifest_documents())
def test_manifest_shaped_documents(tmp_path: Path, data: bytes) -> None:
    check(tmp_path / "manifest.yaml", data)


@fuzz(500)
@given(data=raw_inputs())
def test_raw_bytes_and_text(tmp_path: Path, data: bytes) -> None:
    check(tmp_path / "raw.yaml", data)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_examples_load(example: Path) -> None:
    """The mutations below start from valid manifests."""
    assert isinstance(verify(example, example.read_bytes()), Pipeline)


@fuzz(400)
@given(example=st.sampled_from(EXAMPLES), choices=st.data())
def test_mutated_examples(tmp_path: Path, example: Path, choices: st.DataObject) -> None:
    check(tmp_path / example.name, mutate(example.read_bytes(), HypothesisPick(choices.draw)))


def test_every_mutation_is_exercised() -> None:
    """Each mutation changes some example (none is silently a no-op)."""
    rng = random.Random(0)
    for mutation in MUTATIONS:
        assert any(mutation(e.read_bytes(), RandomPick(rng)) != e.read_bytes()
                   for e in EXAMPLES for _ in range(5)), mutation.__name__


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_duplicated_key_lines_are_reported(tmp_path: Path, example: Path) -> None:
    """Every `key:` line copied below itself is a duplicate-key error on the copy's line."""
    data = example.read_bytes()
    indices = key_lines(data)
    assert indices
    for index in indices:
        copy = duplicate_key_line(data, _Line(index))
        result = check(tmp_path / example.name, copy)
        assert isinstance(result, InputError), f"line {index + 1} copied: loaded fine"
        assert result.line == index + 2 and "duplicate key" in result.message, str(result)


class _Line:
    """A Pick whose choice among line indices is always `line`."""

    def __init__(self, line: int) -> None:
        self.line = line

    def index(self, size: int) -> int:
        raise AssertionError("duplicate_key_line only chooses a line")

    def choice(self, options: list[int]) -> int:
        assert self.line in options
        return self.line


# --- hostile strings reach the job verbatim ---------------------------------------------------

def string_slots(doc: dict) -> list[tuple[str, dict, str, bool]]:
    """(job name, its params mapping, param name, is a list) for every plain-string param of
    every job in a loaded example: `str` params without choices and `str_list` params, not
    set by a matrix."""
    jobs = doc["jobs"] if "jobs" in doc else [doc]
    slots = []
    for job in jobs:
        params = job.setdefault("params", {})
        for name, param in KINDS[job["kind"]].params.items():
            if name in job.get("matrix", {}) or param.choices is not None:
                continue
            if param.type in ("str", "str_list"):
                slots.append((job.get("name", job["kind"]), params, name,
                              param.type == "str_list"))
    return slots


def slotted_examples() -> list[Path]:
    """The examples with a plain string param to inject into (a `report` job has none); an
    example that does not load is left to test_examples_load."""
    found = []
    for example in EXAMPLES:
        try:
            if string_slots(plain(load_yaml(example)[1])):
                found.append(example)
        except (InputError, KeyError, TypeError, AttributeError):
            continue
    return found


SLOTTED = slotted_examples()


def test_hostile_injection_has_examples() -> None:
    assert {DATA / "good/hostile.yaml", DATA / "good/single_scrape.yaml"} <= set(SLOTTED)


@fuzz(150)
@given(example=st.sampled_from(SLOTTED),
       text=st.one_of(st.sampled_from(HOSTILE), TEXT,
                      st.lists(st.sampled_from(HOSTILE), max_size=4).map("".join)),
       choices=st.data())
def test_hostile_strings_in_string_params_load_verbatim(tmp_path: Path, example: Path,
                                                         text: str,
                                                         choices: st.DataObject) -> None:
    doc = plain(load_yaml(example)[1])
    job, params, name, is_list = choices.draw(st.sampled_from(string_slots(doc)))
    pattern = KINDS[next(j for j in doc.get("jobs", [doc]) if j.get("name", j["kind"]) == job)
                    ["kind"]].params[name].pattern
    assume(pattern is None or re.fullmatch(pattern, text) is not None)  # e.g. a marker line
    injected = params[name] = [text, "plain"] if is_list else text
    data = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_style='"')
    pipeline = check(tmp_path / "hostile.yaml", data.encode("utf-8"))
    assert isinstance(pipeline, Pipeline), str(pipeline)
    assert [task.params[name] for task in pipeline.job(job).tasks] == (
        [injected] * len(pipeline.job(job).tasks))


# --- regressions ------------------------------------------------------------------------------

# fixture -> (line, key, message fragment): bugs of the first loader, found by the properties
# above or in review while writing them (each fixture's comment says which).
REGRESSIONS = {
    "int_tag_not_an_int": (3, "", "'abc' is not a valid integer"),
    "int_tag_empty": (3, "", "'' is not a valid integer"),
    "float_tag_not_a_float": (3, "", "'fast' is not a valid number"),
    "bool_tag_not_a_bool": (3, "", "'maybe' is not a valid boolean"),
    "hex_without_digits": (3, "", "'0x_' is not a valid integer"),
    "int_too_many_digits": (2, "", "integer out of range"),
    "int_over_64_bits": (3, "", "integer out of range (64 bits)"),
    "key_with_newline": (3, "params.a\\nb", "unknown param for kind 'scrape'"),
    "key_with_line_separator": (2, "a\\u2028b", "unknown key"),
    "key_with_record_separator": (4, "\\x1e", "unknown key"),
    "lone_surrogate": (4, "", "lone surrogate"),
    "matrix_too_many_values": (7, "matrix", "the matrix makes 1001 tasks of up to 1004"),
}


def test_every_regression_fixture_has_a_case() -> None:
    assert {p.stem for p in (DATA / "regress").glob("*.yaml")} == {*REGRESSIONS, "plain_text"}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_fixtures(name: str) -> None:
    path = DATA / "regress" / f"{name}.yaml"
    line, key, fragment = REGRESSIONS[name]
    error = verify(path, path.read_bytes())
    assert isinstance(error, InputError), name
    assert (error.line, error.key) == (line, key) and fragment in error.message, str(error)


def test_equals_and_merge_signs_are_plain_text() -> None:
    """`=` and `<<` as values are strings (PyYAML alone cannot construct either)."""
    path = DATA / "regress" / "plain_text.yaml"
    clean, scrape = load_pipeline(path, base_dir=BASE, check_inputs=False).jobs
    assert clean.tasks[0].params["marker"] == "="
    assert scrape.tasks[0].params["artists"] == ["<<", "="]


@pytest.mark.parametrize("size", [100_000, 1_000_000])
def test_very_long_lines(tmp_path: Path, size: int) -> None:
    good = check(tmp_path / "long.yaml", f"kind: scrape\nparams:\n  artists: [{'a' * size}]\n"
                 .encode())
    assert isinstance(good, Pipeline) and good.jobs[0].tasks[0].params["artists"] == ["a" * size]
    bad = check(tmp_path / "long.yaml", f"kind: scrape\nparams:\n  {'k' * size}: 1\n".encode())
    assert isinstance(bad, InputError) and bad.line == 3


# --- the real CLI -----------------------------------------------------------------------------

def cli_cases(workdir: Path) -> list[bytes]:
    """A fixed handful of bad manifests: seeded mutations of the examples that the loader
    refuses, plus shapes of the regressions (non-UTF-8, NUL, key with a newline, bad tag)."""
    rng, cases, probe = random.Random(20240101), [], workdir / "probe.yaml"
    while len(cases) < 5:
        data = mutate(rng.choice(EXAMPLES).read_bytes(), RandomPick(rng))
        if isinstance(check(probe, data), InputError):
            cases.append(data)
    return cases + [b"kind: scrape\nparams:\n  artists: [caf\xe9]\n", b"kind: scr\x00ape\n",
                    b'kind: scrape\n"a\\nb": 1\n', b"kind: scrape\nparams: {max_songs: !!int x}\n"]


@pytest.mark.skipif(importlib.util.find_spec("jobs.cli") is None,
                    reason="jobs/cli.py (jobctl) is not written yet")
@pytest.mark.parametrize("index", range(9))
def test_cli_validate_bad_manifest_is_one_line_exit_2(tmp_path: Path, index: int) -> None:
    path = tmp_path / f"bad {index}.yaml"
    path.write_bytes(cli_cases(tmp_path)[index])
    result = subprocess.run([str(JOBCTL), "validate", str(path)], cwd=tmp_path,
                            capture_output=True, text=True, errors="replace", timeout=60,
                            check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.endswith("\n"), result.stderr
    assert result.stderr.startswith(f"jobctl: error: {path}:"), result.stderr
    assert "Traceback" not in result.stderr and not result.stdout
