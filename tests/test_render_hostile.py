"""Hostile strings never reach a shell.

A pipeline loaded from YAML whose string params hold shell, quoting and template syntax is
rendered (jobs.render.render_script) under two profiles loaded from YAML whose strings are as
hostile as profile validation allows (quotes, backticks, `;`, `&&`, `{{ }}`, `{% %}`,
spaces, `$(...)` in the interpreter path). Then:

* no param string appears in any script (params travel only through config.json), except
  the paths an apptainer script binds: a hostile but bindable model path there is one quoted
  argv word per --bind;
* shellcheck passes on every script;
* every script really runs with bash (fake `python`, `apptainer` and `module` commands record
  what they receive): the command line and the exported environment arrive exactly as
  written, and no embedded command ever runs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from manifest_strategies import HOSTILE

from jobs.manifest import bind_outputs, load_pipeline
from jobs.profiles import load_profile
from jobs.render import render_script
from jobs.runtime import lyricgen_argv
from jobs.spec import JobSpec, Pipeline, Profile

MARK = "jobctl-param-"
# A model path apptainer can bind (no ':' ',' '^'), hostile to a shell and to Jinja.
BINDABLE = "/models/$(touch pwned-bind) `touch pwned-bind` it's \"q\" ñ 100% #1 {{ 7*7 }}"
TOKEN = "s3cr3t-token-value"
RECORDER = """#!{python}
import json, os, sys
names = json.loads(os.environ["FAKE_NAMES"])
with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps({{"prog": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                          "env": {{n: os.environ.get(n) for n in names}}}}) + "\\n")
"""
ENV = {
    "QUOTES": "it's \"quoted\" \\ back\\slash",
    "TICKS": "`touch pwned-tick`",
    "JINJA": "{{ 7*7 }} {% raw %} {# c #}",
    "CHAIN": "; touch pwned-semi && touch pwned-and | cat #",
    "GLOB": "* ? [a-z] !! ~ %",
    "SPACES": "  two  spaces  ",
}


def hostile_params(tmp_path: Path) -> list[str]:
    """Each hostile string, made unique by a MARK prefix, plus commands aimed at tmp_path."""
    commands = [f"$(touch {tmp_path}/pwned-param)", f"`touch {tmp_path}/pwned-param`",
                f"; touch {tmp_path}/pwned-param #"]
    return [f"{MARK}{i}:{text}" for i, text in enumerate([*HOSTILE, *commands])]


def hostile_pipeline(tmp_path: Path) -> Pipeline:
    texts = hostile_params(tmp_path)
    doc = {"name": "hostile", "jobs": [
        {"name": "raw", "kind": "scrape", "params": {"artists": texts}},
        {"name": "tidy.1", "kind": "clean", "needs": ["raw"],
         "resources": {"gpus": 1, "extra": {"account": "lab-1"}},
         "params": {"input": "{{ needs.raw.outputs.songs }}", "marker": texts[-1],
                    "outputs": f"{MARK}dir/{texts[1]}"}},
        {"name": "grid", "kind": "generate-grid", "params": {
            "model": BINDABLE, "prompts": texts[2:]}},
    ]}
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, default_style='"'),
                    encoding="utf-8")
    return bind_outputs(load_pipeline(path, base_dir=tmp_path, check_inputs=False),
                        lambda job: tmp_path / "runs/r1" / job / "out")


def hostile_profiles(tmp_path: Path) -> dict[str, Profile]:
    """A host profile whose python path is hostile (and real), and an apptainer profile."""
    bin_dir = tmp_path / "bin dir"
    bin_dir.mkdir()
    python = bin_dir / "py $(touch pwned-python) it's `x` {{ 7*7 }}"
    for path in (python, bin_dir / "apptainer", bin_dir / "module"):
        path.write_text(RECORDER.format(python=sys.executable), encoding="utf-8")
        path.chmod(0o755)
    common = {"env": ENV, "sbatch": {"qos": "normal"}}
    host = {**common, "runtime": "host", "python": str(python)}
    apptainer = {**common, "runtime": "apptainer", "executor": "slurm",
                 "image": "/images/it's a \"sif\" `x` {{ 7*7 }}; rm -rf.sif",
                 "binds": ["/data/my corpus's `x` {{y}}:/data:ro", str(tmp_path)],
                 "env_passthrough": ["GENIUS_ACCESS_TOKEN"], "modules": ["cuda/12.1", "tool+x"],
                 "gpu_gres": "gpu:titanrtx", "cache_dir": f"{tmp_path}/hf'cache`x`{{z}}"}
    profiles = {}
    for name, data in (("host", host), ("apptainer", apptainer)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        profiles[name] = load_profile(str(path))
    return profiles


def param_strings(job: JobSpec) -> list[str]:
    """Every string in the job's params (list items included)."""
    found: list[str] = []
    for task in job.tasks:
        for value in task.params.values():
            items = value if isinstance(value, list) else [value]
            found += [item for item in items if isinstance(item, str)]
    return found


@pytest.fixture
def rendered(tmp_path: Path) -> list[tuple[JobSpec, Profile, Path, Path, str]]:
    """(job, profile, job dir, project dir, script) for every job under both profiles."""
    project = tmp_path / "proj 'it`s` $HOME {{7*7}} ñ 100% #1"
    project.mkdir()
    pipeline = hostile_pipeline(tmp_path)
    out = []
    for profile in hostile_profiles(tmp_path).values():
        for job in pipeline.jobs:
            job_dir = tmp_path / "runs" / profile.name / job.name
            out.append((job, profile, job_dir, project,
                        render_script(job, profile, job_dir=job_dir, project_dir=project)))
    return out


def test_no_param_string_appears_in_any_script(rendered, tmp_path: Path) -> None:
    assert len(rendered) == 6
    for job, profile, _, _, script in rendered:
        assert sum(MARK in text for text in param_strings(job)) >= 2, job.name  # has teeth
        assert MARK not in script and "pwned-param" not in script, (job.name, profile.name)
        assert TOKEN not in script
        bound = [line.strip() for line in script.splitlines() if "pwned-bind" in line]
        if job.name == "grid" and profile.runtime == "apptainer":
            assert bound == [shlex.quote(f"{BINDABLE}:{BINDABLE}:ro")]
        else:
            assert bound == [], (job.name, profile.name)


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (apt-get install shellcheck; CI has it)")
def test_shellcheck_passes(rendered, tmp_path: Path) -> None:
    for job, profile, _, _, script in rendered:
        path = tmp_path / f"{profile.name}-{job.name}.sh"
        path.write_text(script, encoding="utf-8")
        result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(path)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_run_with_values_verbatim_and_nothing_injected(rendered,
                                                               tmp_path: Path) -> None:
    log, cwd = tmp_path / "calls.jsonl", tmp_path / "cwd"
    cwd.mkdir()
    names = [*ENV, "APPTAINERENV_GENIUS_ACCESS_TOKEN"]
    env = {**os.environ, "PATH": f"{tmp_path / 'bin dir'}{os.pathsep}{os.environ['PATH']}",
           "FAKE_LOG": str(log), "FAKE_NAMES": json.dumps(names), "GENIUS_ACCESS_TOKEN": TOKEN}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    for job, profile, job_dir, project, script in rendered:
        log.unlink(missing_ok=True)
        job_dir.mkdir(parents=True)
        (job_dir / "job.sh").write_text(script, encoding="utf-8")
        result = subprocess.run(["bash", str(job_dir / "job.sh")], cwd=cwd, env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        argv = lyricgen_argv(job, profile, project, job_dir)
        expected = [["load", m] for m in profile.modules] + [[*argv[1:], "--task", "0"]]
        assert [call["argv"] for call in calls] == expected, (job.name, profile.name)
        assert calls[-1]["prog"] == Path(argv[0]).name
        assert {k: calls[-1]["env"][k] for k in ENV} == ENV
        forwarded = calls[-1]["env"]["APPTAINERENV_GENIUS_ACCESS_TOKEN"]
        assert forwarded == (TOKEN if profile.runtime == "apptainer" else None)
        status = json.loads((job_dir / "status/0.json").read_text(encoding="utf-8"))
        assert (status["state"], status["exit_code"]) == ("COMPLETED", 0)
    assert not [p for p in tmp_path.rglob("*pwned*") if not p.name.startswith("py ")]
