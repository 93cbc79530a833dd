"""The one param schema (kindspec): jobctl validate and each lyricgen kind accept the same params.

The property: for every kind, params drawn from the schema (valid values, boundaries, values
just past them, wrong types, nulls, unknown keys, missing required params, existing and missing
input paths) are accepted by `jobctl validate` (jobs.manifest.load_pipeline on a manifest file)
if and only if the kind's own config parsing (lyricgen.kinds.config_class(kind).from_params)
accepts them. No training run is needed: only the parsing is compared.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.errors import InputError
from jobs.manifest import load_pipeline
from kindspec.inputs import input_problem, model_kind_of
from kindspec.registry import KINDS
from kindspec.schema import LIST_ITEM, Param
from lyricgen.errors import LyricgenInputError
from lyricgen.kinds import ENTRY_POINTS, config_class

REPO = Path(__file__).resolve().parents[1]
JOBCTL = REPO / ".venv" / "bin" / "jobctl"
_STRINGS = ["ok", "ABC_1", "GENIUS_ACCESS_TOKEN", "<|fin|>", "Rosalía", "two words", "q_proj",
            "all-linear", " ", ""]
_PYTHON_TYPES = {"str": str, "path": str, "int": int, "float": float, "bool": bool, "dict": dict}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One existing path of each input kind, and one missing path."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "file.txt").write_text("hola\n", encoding="utf-8")
    (root / "dir").mkdir()
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (root / "rnn" / "checkpoint").mkdir(parents=True)
    (root / "rnn" / "checkpoint" / "best.pt").write_bytes(b"")
    (root / "grid").mkdir()
    (root / "grid" / "grid.json").write_text("{}", encoding="utf-8")
    found = {"file": root / "file.txt", "dir": root / "dir", "file_or_dir": root / "dir",
             "model_dir": root / "model", "model": root / "rnn", "grid": root / "grid",
             "missing": root / "missing"}
    return {name: str(path) for name, path in found.items()}


# --- the config classes are the schema ------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_config_class_fields_are_the_kinds_params(kind: str) -> None:
    """Same names in the same order, types that fit, and no defaults of their own."""
    cls = config_class(kind)
    assert [f.name for f in fields(cls)] == list(KINDS[kind].params)
    hints = typing.get_type_hints(cls)
    for name, param in KINDS[kind].params.items():
        assert all(f.default is f.default_factory for f in fields(cls)), "defaults live in kindspec"
        hint = hints[name]
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        assert (type(None) in options) == param.nullable, name
        base = [o for o in options if o is not type(None)][0]
        if param.type in LIST_ITEM:
            assert typing.get_origin(base) is tuple, name
        elif param.type == "path":
            assert base in (str, Path), name
        else:
            assert base is _PYTHON_TYPES[param.type], name


def test_every_kind_has_a_module_and_a_config() -> None:
    assert set(ENTRY_POINTS) == set(KINDS)


def test_schema_rules_fit_their_types() -> None:
    """`input` only on path params, patterns only on strings, list rules only on lists, and
    every default passes its own param's check."""
    from kindspec.schema import check_value

    for kind in KINDS.values():
        for name, param in kind.params.items():
            assert param.input is None or param.type == "path", name
            assert param.pattern is None or param.type in ("str", "str_list"), name
            assert (param.min_items is None and not param.unique) or param.type in LIST_ITEM
            if not param.required and param.default is not None:
                check_value(param, param.default, Path("/"))


def test_implementation_choices_match_the_schema() -> None:
    from lyricgen.rnn.model import ARCHS
    from lyricgen.rnn.vocab import LEVELS, MARKER

    rnn = KINDS["train-rnn"].params
    assert rnn["arch"].choices == ARCHS and rnn["level"].choices == LEVELS
    assert rnn["marker"].default == MARKER == KINDS["clean"].params["marker"].default


# --- the property: validate accepts exactly what the job accepts ----------------------------

def _valid_scalars(param: Param, item: str) -> st.SearchStrategy[Any]:
    if param.choices is not None:
        return st.sampled_from(param.choices)
    if item == "bool":
        return st.booleans()
    if item in ("int", "float"):
        low = param.min if param.min is not None else -1000
        high = param.max if param.max is not None else low + 1000
        edges = [low, high, (low + high) / 2]
        if item == "int":
            return st.sampled_from([math.ceil(v) for v in edges] + [math.ceil(low) + 1])
        return st.sampled_from(edges + [low + 1e-9, high - 1e-9, int(low), int(high)])
    if item == "str":
        fitting = [text for text in _STRINGS
                   if param.pattern is None or re.fullmatch(param.pattern, text)]
        return st.sampled_from(fitting)
    return st.just({"a": 1})


def _bad_scalars(param: Param) -> st.SearchStrategy[Any]:
    bounds = [v for v in (param.min, param.max) if v is not None]
    nudged = [b - 1 for b in bounds] + [b + 1 for b in bounds] + bounds
    return st.sampled_from([*nudged, None, True, "7", 1.5, -1, 0, "", " x ", "a\nb",
                            "nope", [1], float("inf")])


def _good(param: Param, paths: dict[str, str]) -> st.SearchStrategy[Any]:
    """Values the schema should accept (boundaries included)."""
    if param.type == "path":
        return st.just(paths[param.input] if param.input else "relative/out")
    item = LIST_ITEM.get(param.type)
    if item is None:
        return _valid_scalars(param, param.type)
    return st.lists(_valid_scalars(param, item), min_size=param.min_items or 0, max_size=3,
                    unique=param.unique)


def _any(param: Param, paths: dict[str, str]) -> st.SearchStrategy[Any]:
    """Good values, bad ones, and values just past the boundaries."""
    if param.type == "path":
        return st.sampled_from([paths["missing"], paths["file"], paths["dir"], paths["model"],
                                paths["model_dir"]])
    item = LIST_ITEM.get(param.type)
    if item is None:
        return st.one_of(_valid_scalars(param, param.type), _bad_scalars(param))
    items = st.one_of(_valid_scalars(param, item), _bad_scalars(param))
    return st.one_of(st.lists(items, max_size=3), _bad_scalars(param))


@st.composite
def kind_params(draw: st.DrawFn, paths: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """A kind and its params: all good, or good but for a few values drawn from anything,
    a missing required param or an unknown key."""
    kind = KINDS[draw(st.sampled_from(sorted(KINDS)))]
    params = {name: draw(_good(param, paths)) for name, param in kind.params.items()
              if param.required or draw(st.booleans())}
    for name in draw(st.lists(st.sampled_from(list(kind.params)), max_size=2)):
        params[name] = draw(_any(kind.params[name], paths))
    if draw(st.integers(0, 15)) == 0:
        params.pop(draw(st.sampled_from(list(kind.params))), None)
    if draw(st.integers(0, 15)) == 0:
        params["not_a_param"] = 1
    return kind.name, params


def _validate(tmp: Path, kind: str, params: dict[str, Any]) -> bool:
    manifest = tmp / "m.yaml"
    manifest.write_text(yaml.safe_dump({"kind": kind, "params": params}, allow_unicode=True),
                        encoding="utf-8")
    try:
        load_pipeline(manifest, base_dir=tmp, profile="laptop")
    except InputError:
        return False
    return True


def _job_accepts(kind: str, params: dict[str, Any], tmp: Path,
                 monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.chdir(tmp)  # relative paths resolve against the same base as in validate
    try:
        config_class(kind).from_params(params)
    except LyricgenInputError:
        return False
    return True


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_validate_accepts_exactly_what_the_job_accepts(data: st.DataObject, inputs, tmp_path,
                                                        monkeypatch) -> None:
    kind, params = data.draw(kind_params(inputs))
    accepted = _validate(tmp_path, kind, params)
    assert accepted == _job_accepts(kind, params, tmp_path, monkeypatch), (kind, params)


def test_the_property_sees_both_outcomes_for_every_kind(inputs, tmp_path, monkeypatch) -> None:
    """Guards the strategy: each kind's defaults + valid inputs pass, a bad value fails."""
    for name, kind in KINDS.items():
        good = {key: inputs[p.input] if p.input else "x"
                for key, p in kind.params.items() if p.required}
        if name == "generate-grid":
            good["prompts"] = ["Bajo la luna"]
        if name == "scrape":
            good["artists"] = ["Rosalía"]
        assert _validate(tmp_path, name, good), name
        assert _job_accepts(name, good, tmp_path, monkeypatch), name
        assert not _validate(tmp_path, name, {**good, "seed_": 1})
        assert not _job_accepts(name, {**good, "seed_": 1}, tmp_path, monkeypatch)


# --- what users hit first (issue: validate accepted, the job failed at its first line) ------

@pytest.mark.parametrize(("kind", "params", "where", "message"), [
    ("train-rnn", {"lr": 0}, "params.lr", "must be > 0"),
    ("train-rnn", {"max_minutes": 0}, "params.max_minutes", "must be > 0"),
    ("generate-grid", {"top_p": 0}, "params.top_p", "must be > 0"),
    ("generate-grid", {"temperatures": [0.8, 0.8]}, "params.temperatures[1]",
     "duplicate value 0.8"),
    ("finetune-llama", {"model_path": "meta-llama/Meta-Llama-3-8B"}, "params.model_path",
     "looks like a Hugging Face Hub id"),
    ("finetune-llama", {"model_path": "models/none"}, "params.model_path", "does not exist"),
    ("clean", {"valid_fraction": 0.5, "test_fraction": 0.5}, "params.test_fraction",
     "must be < 1"),
    ("scrape", {"source": "files"}, "params.path", "required when source is files"),
])
def test_validate_refuses_what_the_job_would_refuse(tmp_path: Path, kind: str, params: dict,
                                                     where: str, message: str,
                                                     inputs: dict[str, str]) -> None:
    base = {"train-rnn": {"data": inputs["file"]},
            "generate-grid": {"model": inputs["model"], "prompts": ["a"]},
            "finetune-llama": {"data_path": inputs["file"]},
            "clean": {"input": inputs["file"]}, "scrape": {}}[kind]
    (tmp_path / "models").mkdir()
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"kind": kind, "params": {**base, **params}}),
                        encoding="utf-8")
    done = subprocess.run([str(JOBCTL), "validate", str(manifest)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(f"jobctl: error: {manifest}:"), line
    assert f": {where}" in line and message in line, line


def test_jobctl_run_refuses_a_missing_model_before_starting(tmp_path: Path,
                                                            inputs: dict[str, str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"kind": "finetune-llama", "params": {
        "model_path": "meta-llama/Meta-Llama-3-8B", "data_path": inputs["file"]}}),
        encoding="utf-8")
    done = subprocess.run([str(JOBCTL), "run", str(manifest)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "looks like a Hugging Face Hub id" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_world_size_is_checked_at_validate(tmp_path: Path, inputs: dict[str, str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({
        "kind": "train-rnn", "params": {"data": inputs["file"], "batch_size": 16},
        "resources": {"processes_per_node": 3}}), encoding="utf-8")
    with pytest.raises(InputError, match="16 does not split evenly over 3 processes") as info:
        load_pipeline(manifest)
    assert info.value.key == "params.batch_size"


def test_matrix_values_are_checked_like_params(tmp_path: Path, inputs: dict[str, str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"kind: train-rnn\nparams: {{batch_size: 16}}\nmatrix:\n"
                        f"  data: [{json.dumps(inputs['file'])}, {json.dumps(inputs['missing'])}]"
                        "\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing: does not exist") as info:
        load_pipeline(manifest)
    assert (info.value.line, info.value.key) == (4, "matrix.data")


def test_token_env_errors_never_echo_the_value() -> None:
    from lyricgen.corpus.scrape import ScrapeParams

    with pytest.raises(LyricgenInputError) as info:
        ScrapeParams.from_params({"artists": ["x"], "token_env": "abc123secret"})
    assert "abc123secret" not in str(info.value) and "token_env" in str(info.value)


# --- input kinds -----------------------------------------------------------------------------

def test_input_kinds(tmp_path: Path, inputs: dict[str, str]) -> None:
    assert input_problem("file", inputs["file"]) is None
    assert "expected a file" in input_problem("file", inputs["dir"])
    assert "expected a directory" in input_problem("dir", inputs["file"])
    assert input_problem("file_or_dir", inputs["file"]) is None
    assert "no config.json" in input_problem("model_dir", inputs["dir"])
    job_dir = tmp_path / "train"  # a jobctl job dir holds a config.json too
    job_dir.mkdir()
    (job_dir / "config.json").write_text('{"schema": 1, "kind": "train-rnn"}', "utf-8")
    assert "has no model_type" in input_problem("model_dir", job_dir)
    assert model_kind_of(job_dir) is None and "is no model" in input_problem("model", job_dir)
    assert input_problem("model", inputs["model"]) is None  # a train-rnn out dir
    assert input_problem("model", inputs["model_dir"]) is None  # a LLaMA dir
    assert "is no model" in input_problem("model", inputs["dir"])
    assert "no grid.json" in input_problem("grid", inputs["dir"])
    assert model_kind_of(Path(inputs["model"])) == "rnn"
    assert model_kind_of(Path(inputs["model_dir"])) == "llama"
    assert "does not exist" in input_problem("file", inputs["missing"])
    unreadable = tmp_path / "secret.txt"
    unreadable.write_text("x")
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        assert "not readable" in input_problem("file", unreadable)


def test_an_adapter_needs_its_local_base(tmp_path: Path, inputs: dict[str, str]) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "meta-llama/Meta-Llama-3-8B"}), encoding="utf-8")
    assert "the adapter's base model" in input_problem("model", adapter)
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": inputs["model_dir"]}), encoding="utf-8")
    assert input_problem("model", adapter) is None


def test_hub_hint_only_for_hub_like_paths(tmp_path: Path) -> None:
    assert "Hub id" in input_problem("model_dir", tmp_path / "meta-llama" / "Llama-3")
    assert "Hub id" not in input_problem("model_dir", tmp_path / "runs" / "x" / "train" / "out")
    assert "Hub id" not in input_problem("file", tmp_path / "meta-llama" / "Llama-3")
