"""jobs.manifest: loading, strict validation with file:line:key errors, matrix expansion,
needs ordering and output-reference binding."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.errors import InputError
from jobs.manifest import MAX_ARRAY_TASKS, bind_outputs, load_pipeline, validate_file
from kindspec import registry as kinds
from kindspec.schema import Kind, Param

DATA = Path(__file__).resolve().parent / "data" / "manifests"
GOOD, BAD = DATA / "good", DATA / "bad"
BASE = Path("/proj")

# fixture -> (line, key, fragment of the message)
BAD_CASES = {
    "syntax_error": (4, "", "YAML syntax error"),
    "duplicate_key": (5, "", "duplicate key 'max_songs'"),
    "python_tag": (3, "", "YAML tag '!!python/object/apply:os.system' is not allowed"),
    "unknown_top_key": (2, "parms", "did you mean 'params'?"),
    "unknown_kind": (2, "kind", "unknown kind 'claen'"),
    "unknown_param": (4, "params.max_song", "did you mean 'max_songs'?"),
    "wrong_type": (3, "params.max_songs", "expected an integer, got 'fast'"),
    "bool_not_int": (4, "params.max_songs", "expected an integer, got true"),
    "out_of_range": (4, "params.valid_fraction", "must be <= 0.5, got 0.9"),
    "bad_choice": (3, "params.source", "expected one of 'genius', 'files', got 'web'"),
    "missing_required": (3, "params", "missing required param 'input'"),
    "bad_list_item": (5, "params.artists[1]", "expected a string, got 311"),
    "bad_name": (2, "name", "got '../escape'"),
    "bad_profile": (2, "profile", "expected a profile name"),
    "duplicate_job": (3, "jobs[1].name", "duplicate job name 'scrape' (also at line 2)"),
    "missing_need": (6, "jobs[1].needs[0]", "no job named 'song' in this pipeline; "
                                            "did you mean 'songs'?"),
    "cyclic_needs": (5, "jobs[0].needs", "cyclic needs: a -> b -> c -> a"),
    "needs_in_single": (2, "needs", "only jobs inside a pipeline"),
    "ref_not_in_needs": (8, "jobs[1].params.input", "add needs: [songs] to job 'tidy'"),
    "ref_unknown_output": (8, "jobs[1].params.input", "no output 'song'; did you mean 'songs'?"),
    "ref_array_job": (10, "jobs[1].params.input", "is an array job whose tasks write"),
    "matrix_unknown_param": (5, "matrix.sed", "did you mean 'seed'?"),
    "matrix_empty_list": (4, "matrix.seed", "non-empty list"),
    "matrix_bad_value": (6, "matrix.valid_fraction[1]", "expected a number, got 'lots'"),
    "matrix_and_params": (4, "matrix.seed", "set both in params and in matrix"),
    "throttle_without_matrix": (3, "throttle", "only applies to an array job"),
    "bad_mem": (4, "resources.mem", "expected a size with a unit"),
    "bad_time": (3, "resources.time", "expected a time limit"),
    "extra_controlled": (5, "resources.extra.dependency", "jobctl sets --dependency itself"),
    "extra_newline": (4, "resources.extra.comment", "control characters"),
    "unknown_resource": (3, "resources.gpu", "did you mean 'gpus'?"),
    "nodes_single_process_kind": (4, "resources.nodes", "kind clean runs as one process"),
    "processes_per_gpu": (5, "resources.processes_per_node",
                          "with gpus: 1 (kind finetune-llama's default) a node runs one "
                          "process per GPU"),
    "processes_over_cpus": (3, "resources.processes_per_node", "got cpus: 1"),
    "not_mapping": (1, "", "expected a mapping"),
    "empty_jobs": (2, "jobs", "the pipeline has no jobs"),
    "multi_doc": (2, "", "expected a single document"),
    "pipeline_and_kind": (3, "kind", "job keys go inside each entry of jobs:"),
    "comments_only": (1, "", "holds no YAML data"),
}

# The manifests here name made-up data paths: their structure is what is tested (input
# path checks have tests of their own in tests/test_kindspec.py).
load_structure = functools.partial(load_pipeline, check_inputs=False)


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBCTL_PROFILE", raising=False)


def _write(tmp_path: Path, text: str | bytes, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path, **kw) -> InputError:
    with pytest.raises(InputError) as info:
        load_structure(path, base_dir=BASE, **kw)
    return info.value


def _assert_one_line(err: InputError, path: Path, line: int, key: str, fragment: str) -> None:
    text = str(err)
    assert "\n" not in text
    assert text.startswith(f"{path}:{line}: "), text
    assert err.key == key, text
    assert fragment in err.message, text


def test_every_bad_fixture_has_a_case() -> None:
    assert {p.stem for p in BAD.glob("*.yaml")} == set(BAD_CASES)


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_fixture_is_one_line_with_file_line_and_key(name: str) -> None:
    path = BAD / f"{name}.yaml"
    line, key, fragment = BAD_CASES[name]
    _assert_one_line(_error(path), path, line, key, fragment)


def test_python_tag_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f'kind: scrape\nname: !!python/object/apply:os.system '
                            f'["touch {marker}"]\n')
    _assert_one_line(_error(path), path, 2, "", "is not allowed")
    assert not marker.exists()


@pytest.mark.parametrize("tag", ["!!binary aGVsbG8=", "!!set {a, b}", "!!timestamp 2024-01-01",
                                 "!!python/name:os.system", "!custom x"])
def test_non_core_tags_are_refused(tmp_path: Path, tag: str) -> None:
    path = _write(tmp_path, f"kind: scrape\nparams:\n  token_env: {tag}\n")
    _assert_one_line(_error(path), path, 3, "", "is not allowed")


def test_non_utf8_names_line_and_byte_offset(tmp_path: Path) -> None:
    data = b"kind: scrape\nparams:\n  artists: [caf\xe9]\n"
    path = _write(tmp_path, data)
    offset = data.index(b"\xe9")
    _assert_one_line(_error(path), path, 3, "", f"byte 0xe9 at byte offset {offset}")


def test_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    _assert_one_line(_error(path), path, 1, "", "the file is empty")


def test_control_character_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "kind: scrape\n\nname: a\x07b\n")
    _assert_one_line(_error(path), path, 3, "", "U+0007")


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope.yaml")
    assert str(err).startswith(f"{tmp_path / 'nope.yaml'}: cannot read file")


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    path = _write(tmp_path, "\n".join(lines) + "\nkind: scrape\n")
    _assert_one_line(_error(path), path, 1, "", "expands to more than")


def test_duplicate_key_in_nested_mapping_inside_pipeline(tmp_path: Path) -> None:
    path = _write(tmp_path, "jobs:\n  - kind: scrape\n    resources:\n      cpus: 1\n"
                            "      mem: 1G\n      cpus: 2\n")
    _assert_one_line(_error(path), path, 6, "", "duplicate key 'cpus'")


def test_merge_keys_may_be_overridden_without_duplicate_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "jobs:\n  - kind: scrape\n    name: a\n    params: {artists: [X]}\n"
                            "    resources: &res {cpus: 2, mem: 4G}\n"
                            "  - kind: scrape\n    name: b\n    params: {artists: [X]}\n"
                            "    resources:\n      <<: *res\n      cpus: 3\n")
    b = load_structure(path).job("b")
    assert (b.resources.cpus, b.resources.mem) == (3, "4G")


@pytest.mark.parametrize("needs, fragment", [("[a, a]", "'a' is listed twice"),
                                             ("[b]", "job 'b' cannot need itself"),
                                             ("a", "expected a list of job names")])
def test_bad_needs(tmp_path: Path, needs: str, fragment: str) -> None:
    path = _write(tmp_path, f"jobs:\n  - kind: scrape\n    name: a\n  - kind: scrape\n"
                            f"    name: b\n    needs: {needs}\n")
    err = _error(path)
    assert str(err).startswith(f"{path}:6: jobs[1].needs"), str(err)
    assert fragment in err.message


def test_matrix_too_large(tmp_path: Path) -> None:
    seeds = list(range(MAX_ARRAY_TASKS // 2 + 1))
    path = _write(tmp_path, f"kind: clean\nparams: {{input: x}}\nmatrix:\n  seed: {seeds}\n"
                            "  min_lines: [1, 2]\n")
    _assert_one_line(_error(path), path, 3, "matrix", f"expands to {2 * len(seeds)} tasks")


def test_single_job_defaults_and_resources() -> None:
    pipeline = load_structure(GOOD / "single_scrape.yaml", base_dir=BASE)
    assert pipeline.source == str(GOOD / "single_scrape.yaml")
    assert pipeline.text == (GOOD / "single_scrape.yaml").read_text(encoding="utf-8")
    (job,) = pipeline.jobs
    assert (job.name, job.kind, job.profile, job.needs, job.array) == (
        "scrape", "scrape", "laptop", (), False)
    (task,) = job.tasks
    assert task.index == 0 and task.matrix == {}
    assert list(task.params) == list(kinds.KINDS["scrape"].params)  # schema order, all filled
    assert task.params["artists"] == ["Rosalía", "Los Planetas"]
    assert task.params["max_songs"] == 5
    assert task.params["sort"] == "popularity"  # default
    assert task.params["backoff_seconds"] == 1.0
    assert isinstance(task.params["backoff_seconds"], float)
    res = job.resources
    assert (res.mem, res.time, res.cpus, res.gpus) == ("1G", "45", 1, 0)  # cpus from the kind
    assert res.extra == {"account": "lab", "qos": "2"}
    assert job.source.line == 2
    json.dumps(job.to_dict())  # plain data all the way down
    assert validate_file(GOOD / "single_scrape.yaml").jobs[0].name == "scrape"


def test_pipeline_order_matrix_and_paths() -> None:
    pipeline = load_structure(GOOD / "pipeline.yaml", base_dir=BASE)
    assert [job.name for job in pipeline.jobs] == ["songs", "clean"]
    songs, clean = pipeline.jobs
    assert songs.tasks[0].params["path"] == "/proj/data/raw"
    assert (clean.array, clean.throttle, clean.needs) == (True, 2, ("songs",))
    expected = [(v, s) for v in (0.05, 0.1) for s in (1, 2, 3)]
    assert [(t.matrix["valid_fraction"], t.matrix["seed"]) for t in clean.tasks] == expected
    assert [t.index for t in clean.tasks] == list(range(6))
    for task in clean.tasks:
        assert task.params["valid_fraction"] == task.matrix["valid_fraction"]
        assert task.params["seed"] == task.matrix["seed"]
        assert task.params["outputs"] == "/proj/exports/clean"
        assert task.params["input"] == "{{ needs.songs.outputs.songs }}"
        assert task.params["min_lines"] == 2
    assert clean.resources.partition == "cpu,gpu"
    assert clean.resources.time == "1-00:00:00"
    assert clean.source.line == 6


def test_tasks_do_not_share_mutable_params() -> None:
    clean = load_structure(GOOD / "pipeline.yaml", base_dir=BASE).job("clean")
    clean.tasks[0].params["seed"] = 99
    assert clean.tasks[1].params["seed"] == 2


def test_profile_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    path = GOOD / "pipeline.yaml"
    by_name = {job.name: job.profile for job in load_structure(path).jobs}
    assert by_name == {"songs": "cluster", "clean": "laptop"}  # pipeline, then job-level
    forced = load_structure(path, profile="other.yaml").jobs
    assert {job.profile for job in forced} == {"other.yaml"}
    monkeypatch.setenv("JOBCTL_PROFILE", "cluster")
    assert load_structure(GOOD / "single_scrape.yaml").jobs[0].profile == "cluster"
    monkeypatch.setenv("JOBCTL_PROFILE", "bad name!")
    with pytest.raises(InputError, match="^JOBCTL_PROFILE: expected a profile name"):
        load_structure(GOOD / "single_scrape.yaml")


def test_base_dir_defaults_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    songs = load_structure(GOOD / "pipeline.yaml").job("songs")
    assert songs.tasks[0].params["path"] == str(tmp_path / "data/raw")


def test_bind_outputs_replaces_references_only(tmp_path: Path) -> None:
    pipeline = load_structure(GOOD / "pipeline.yaml", base_dir=BASE)
    bound = bind_outputs(pipeline, lambda job: tmp_path / "runs" / job / "out")
    songs_file = str(tmp_path / "runs/songs/out/songs.jsonl")
    assert {t.params["input"] for t in bound.job("clean").tasks} == {songs_file}
    assert bound.job("clean").tasks[3].matrix == {"valid_fraction": 0.1, "seed": 1}
    assert bound.job("songs") == pipeline.job("songs")
    assert pipeline.job("clean").tasks[0].params["input"].startswith("{{")  # not mutated


def test_hostile_strings_stay_verbatim(tmp_path: Path) -> None:
    pipeline = load_structure(GOOD / "hostile.yaml", base_dir=BASE)
    bound = bind_outputs(pipeline, lambda job: tmp_path / job)
    artists = bound.job("raw").tasks[0].params["artists"]
    assert artists == ["$(rm -rf /)", "`reboot`", "it's \"quoted\"", "two\nlines", "{{ 7*7 }}",
                       "{% raw %}x{% endraw %}", "{{ needs.raw.outputs.songs }} trailing",
                       "{{ needs.nobody.outputs.nothing }}\n"]
    tidy = bound.job("tidy").tasks[0].params
    assert tidy["marker"] == "; echo pwned #"
    assert tidy["input"] == str(tmp_path / "raw" / "songs.jsonl")


def test_yaml_1_1_pitfalls_are_off(tmp_path: Path) -> None:
    path = _write(tmp_path, "kind: scrape\nparams:\n  artists: [no]\n  sleep_seconds: 5e-1\n"
                            "resources:\n  time: 4:00:00\n")
    job = load_structure(path).jobs[0]
    assert job.tasks[0].params["artists"] == ["no"]
    assert job.tasks[0].params["sleep_seconds"] == 0.5
    assert job.resources.time == "4:00:00"


def test_time_and_mem_forms(tmp_path: Path) -> None:
    for time in ("30", "30:00", "04:00:00", "2-00", "2-12:30", "2-12:30:00"):
        path = _write(tmp_path, f"kind: clean\nparams: {{input: x}}\n"
                                f"resources: {{time: '{time}', mem: 512m}}\n")
        assert load_structure(path).jobs[0].resources.time == time
    path = _write(tmp_path, "kind: clean\nparams: {input: x}\nresources: {time: 90, mem: 1T}\n")
    assert load_structure(path).jobs[0].resources.time == "90"
    path = _write(tmp_path, "kind: scrape\nresources: {time: '00:00:00'}\n")
    _assert_one_line(_error(path), path, 2, "resources.time", "more than zero")


@pytest.mark.parametrize("option, hint", [("mem", "use resources.mem"),
                                          ("gres", "use resources.gpus"),
                                          ("job-name", "jobctl sets --job-name"),
                                          ("Account", "long sbatch option name")])
def test_extra_refuses_options_jobctl_controls(tmp_path: Path, option: str, hint: str) -> None:
    path = _write(tmp_path, f"kind: scrape\nresources:\n  extra:\n    {option}: x\n")
    _assert_one_line(_error(path), path, 4, f"resources.extra.{option}", hint)


FINETUNE = "kind: finetune-llama\nparams: {model_path: m, data_path: d.jsonl}\n"


@pytest.mark.parametrize("resources, expected", [
    ("", (1, 1, 1)),  # the kind's default: one GPU, one process
    ("resources: {gpus: 4, cpus: 8}", (4, 1, 4)),
    ("resources: {gpus: 0, cpus: 2}", (0, 1, 1)),
    ("resources: {gpus: 0, cpus: 4, processes_per_node: 2, nodes: 3}", (0, 3, 2)),
    ("resources: {gpus: 2, nodes: 2, processes_per_node: 2}", (2, 2, 2)),
])
def test_processes_per_node_defaults_to_one_per_gpu(tmp_path: Path, resources: str,
                                                    expected: tuple[int, int, int]) -> None:
    res = load_structure(_write(tmp_path, FINETUNE + resources + "\n")).jobs[0].resources
    assert (res.gpus, res.nodes, res.processes_per_node) == expected
    assert res.world_size == expected[1] * expected[2]


def test_single_process_kinds_keep_one_process_whatever_their_gpus(tmp_path: Path) -> None:
    path = _write(tmp_path, "kind: clean\nparams: {input: t.txt}\nresources: {gpus: 2}\n")
    res = load_structure(path).jobs[0].resources
    assert (res.gpus, res.processes_per_node, res.nodes) == (2, 1, 1)
    path = _write(tmp_path, "kind: scrape\nresources:\n  processes_per_node: 2\n  cpus: 2\n")
    _assert_one_line(_error(path), path, 3, "resources.processes_per_node",
                     "only kinds launched with torchrun can use more (train-rnn, "
                     "finetune-llama)")


def test_train_rnn_runs_one_process_per_gpu(tmp_path: Path) -> None:
    path = _write(tmp_path, "kind: train-rnn\nparams: {data: t.txt}\nresources: {gpus: 2}\n")
    res = load_structure(path).jobs[0].resources
    assert (res.gpus, res.processes_per_node, res.nodes) == (2, 2, 1)


@pytest.fixture
def toy_kind(monkeypatch: pytest.MonkeyPatch) -> Kind:
    """A kind with every param type, registered only for one test."""
    kind = Kind(
        name="toy", summary="every param type",
        params={
            "n": Param("int", 3, min=1, max=10),
            "lr": Param("float", 0.1, min=0),
            "flag": Param("bool", False),
            "arch": Param("str", "gru", choices=("rnn", "gru")),
            "data": Param("path", "in.txt"),
            "tags": Param("str_list", []),
            "ratios": Param("float_list", [0.5], max=1),
            "sizes": Param("int_list", [1]),
            "opts": Param("dict", {}),
            "note": Param("str", None, nullable=True),
        },
        outputs={"model": "model.pt"},
        resources={"gpus": 1, "mem": "8G"},
    )
    monkeypatch.setitem(kinds.KINDS, "toy", kind)
    return kind


def test_toy_kind_types_are_normalised(tmp_path: Path, toy_kind: Kind) -> None:
    path = _write(tmp_path, "kind: toy\nparams:\n  lr: 5e-5\n  flag: true\n  data: d/x.txt\n"
                            "  ratios: [1, 0.25]\n  sizes: [2, 3]\n  opts: {a: [1, {b: null}]}\n"
                            "  note: null\n")
    job = load_structure(path, base_dir=BASE).jobs[0]
    params = job.tasks[0].params
    assert params["lr"] == 5e-5 and params["flag"] is True
    assert params["data"] == "/proj/d/x.txt"
    assert params["ratios"] == [1.0, 0.25] and all(isinstance(r, float) for r in params["ratios"])
    assert params["opts"] == {"a": [1, {"b": None}]} and type(params["opts"]) is dict
    assert params["note"] is None and params["n"] == 3
    default = load_structure(_write(tmp_path, "kind: toy\n"), base_dir=BASE).jobs[0]
    assert default.tasks[0].params["data"] == "/proj/in.txt"  # relative default made absolute
    assert (job.resources.gpus, job.resources.mem, job.resources.cpus) == (1, "8G", 1)


@pytest.mark.parametrize("line, key, fragment", [
    ("n: 3.0", "params.n", "expected an integer, got 3.0"),
    ("n: 11", "params.n", "must be <= 10"),
    ("lr: .nan", "params.lr", "expected a finite number"),
    ("lr: false", "params.lr", "expected a number, got false"),
    ("flag: yes", "params.flag", "expected true or false, got 'yes'"),
    ("data: ''", "params.data", "expected a path"),
    ("tags: solo", "params.tags", "expected a list of strings, got 'solo'"),
    ("ratios: [0.5, 2]", "params.ratios[1]", "must be <= 1"),
    ("sizes: [1, true]", "params.sizes[1]", "expected an integer, got true"),
    ("opts: {1: a}", "params.opts", "mapping keys must be strings"),
    ("opts: [a]", "params.opts", "expected a mapping"),
    ("arch: null", "params.arch", "expected a string, got null"),
    ("arch: lstm", "params.arch", "expected one of 'rnn', 'gru'"),
])
def test_toy_kind_bad_values(tmp_path: Path, toy_kind: Kind, line: str, key: str,
                             fragment: str) -> None:
    path = _write(tmp_path, f"kind: toy\nparams:\n  {line}\n")
    _assert_one_line(_error(path), path, 3, key, fragment)


def test_references_inside_lists_and_dicts_are_bound(tmp_path: Path, toy_kind: Kind) -> None:
    path = _write(tmp_path, "jobs:\n  - kind: toy\n    name: base\n    params: {data: x}\n"
                            "  - kind: toy\n    name: next\n    needs: [base]\n    params:\n"
                            "      data: '{{ needs.base.outputs.model }}'\n"
                            "      tags: [keep, '{{ needs.base.outputs.model }}']\n"
                            "      opts: {init: '{{ needs.base.outputs.model }}'}\n")
    pipeline = load_structure(path, base_dir=BASE)
    params = bind_outputs(pipeline, lambda job: Path("/runs") / job).job("next").tasks[0].params
    assert params["data"] == "/runs/base/model.pt"
    assert params["tags"] == ["keep", "/runs/base/model.pt"]
    assert params["opts"] == {"init": "/runs/base/model.pt"}


def test_reference_in_list_with_bad_output_names_the_item(tmp_path: Path,
                                                          toy_kind: Kind) -> None:
    path = _write(tmp_path, "jobs:\n  - kind: toy\n    name: base\n    params: {data: x}\n"
                            "  - kind: toy\n    name: next\n    needs: [base]\n    params:\n"
                            "      data: x\n      tags:\n        - keep\n"
                            "        - '{{ needs.base.outputs.modl }}'\n")
    _assert_one_line(_error(path), path, 12, "jobs[1].params.tags[1]", "did you mean 'model'?")


def test_matrix_over_list_param_and_reference_values(tmp_path: Path, toy_kind: Kind) -> None:
    path = _write(tmp_path, "kind: toy\nparams: {data: x}\nmatrix:\n  sizes: [[1, 2], [3]]\n"
                            "  arch: [rnn, gru]\n")
    job = load_structure(path).jobs[0]
    assert [t.matrix for t in job.tasks] == [
        {"sizes": [1, 2], "arch": "rnn"}, {"sizes": [1, 2], "arch": "gru"},
        {"sizes": [3], "arch": "rnn"}, {"sizes": [3], "arch": "gru"}]
    path = _write(tmp_path, "kind: toy\nparams: {data: x}\nmatrix:\n  arch: [rnn, gru, rnn]\n")
    _assert_one_line(_error(path), path, 4, "matrix.arch[2]", "duplicate matrix value 'rnn'")


def test_self_reference_in_single_job(tmp_path: Path, toy_kind: Kind) -> None:
    path = _write(tmp_path, "kind: toy\nname: me\nparams:\n"
                            "  data: '{{ needs.me.outputs.model }}'\n")
    _assert_one_line(_error(path), path, 4, "params.data", "which is not in needs")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(exclude_categories=("Cs",))), min_size=1, max_size=5))
def test_any_string_reaches_the_job_verbatim(tmp_path: Path, prompts: list[str]) -> None:
    """Whatever text a (quoted) YAML string holds comes back unchanged after binding."""
    text = yaml.safe_dump({"kind": "generate-grid", "params": {"model": "m", "prompts": prompts}},
                          default_style='"', allow_unicode=True)
    path = _write(tmp_path, text)
    bound = bind_outputs(load_structure(path), lambda job: tmp_path / job)
    assert bound.jobs[0].tasks[0].params["prompts"] == prompts
