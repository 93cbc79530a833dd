"""Hostile paths end to end: a copy of the project in a directory named like
`my lyrics/ñ 100% #1 'q' "dq" $HOME $(touch pwned) %j` runs clean -> train-rnn (20 steps,
tiny) -> generate-grid with `jobctl run` (local bash) and `jobctl submit --profile
slurm-host` (the local SLURM cluster), and clean -> train-rnn under a stand-in `apptainer`
that applies the --bind options the way apptainer parses them and refuses to start when a
path named in config.json is not reachable inside.

jobctl's project dir is the checkout its `jobs` package lives in, so each test copies jobs/,
lyricgen/, templates/ and manifests/profiles/ into the hostile directory and runs jobctl
there with that copy first on sys.path (job.sh runs `python -m lyricgen` from it too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COPIED = ("jobs", "lyricgen", "templates", "manifests/profiles")
HOSTILE = "my lyrics/ñ 100% #1 'q' \"dq\" $HOME $(touch pwned) %j"
DATA = "data/canciones ñ 100% #1 'q'.txt"
DONE_WAIT = 300.0
SMALL = '{cpus: 1, mem: 1G, time: "00:10:00"}'
CLEAN = f"""\
  - kind: clean
    name: clean
    resources: {SMALL}
    params: {{input: "{{{{INPUT}}}}", valid_fraction: 0.2, test_fraction: 0.1, min_lines: 1}}
"""
TRAIN = f"""\
  - kind: train-rnn
    name: train
    needs: [clean]
    resources: {SMALL}
    params:
      data: "{{{{ needs.clean.outputs.train }}}}"
      valid_data: "{{{{ needs.clean.outputs.valid }}}}"
      hidden_size: 16
      embedding_dim: 8
      seq_len: 16
      batch_size: 4
      max_steps: 20
      warmup_steps: 2
      eval_every: 10
      checkpoint_every: 10
      log_every: 5
      device: cpu
      precision: fp32
"""
GRID = f"""\
  - kind: generate-grid
    name: grid
    needs: [train]
    resources: {SMALL}
    params:
      model: "{{{{ needs.train.outputs.checkpoint }}}}"
      prompts: ["Bajo la luna"]
      temperatures: [0.8]
      samples: 1
      max_tokens: 20
      batch_size: 1
      device: cpu
"""


def copy_project(root: Path, corpus: Path, name: str = HOSTILE) -> Path:
    """The project's code in `root/name`, with the corpus at DATA inside it."""
    project = root / name
    for sub in COPIED:
        shutil.copytree(REPO / sub, project / sub,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (project / DATA).parent.mkdir()
    shutil.copyfile(corpus, project / DATA)
    return project


def manifest(project: Path, *parts: str, data: str = DATA) -> Path:
    path = project / "pipeline ñ #1.yaml"
    text = "jobs:\n" + "".join(parts)
    path.write_text(text.replace("{{INPUT}}", data.replace('"', '\\"')), encoding="utf-8")
    return path


def jobctl(project: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """jobctl of the project copy, run from it."""
    env = {**(env or os.environ), "PYTHONPATH": str(project)}
    return subprocess.run([sys.executable, "-c", "from jobs.cli import main; main()", *args],
                          cwd=project, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def status(project: Path, *args: str) -> dict:
    result = jobctl(project, "status", "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def wait_settled(project: Path) -> dict:
    """Poll `jobctl status --json` until no job is pending or running (a wait, not a timing
    check)."""
    deadline = time.monotonic() + DONE_WAIT
    while True:
        report = status(project)
        if not any(job["state"] in ("PENDING", "RUNNING") for job in report["jobs"]):
            return report
        assert time.monotonic() < deadline, states(report)
        time.sleep(1.0)


def states(report: dict) -> dict[str, list[str]]:
    return {job["name"]: [t["state"] for t in job["tasks"]] for job in report["jobs"]}


def check_pipeline(project: Path, report: dict) -> None:
    """Every job COMPLETED with its outputs in the run dir under the project; logs readable."""
    assert states(report) == {"clean": ["COMPLETED"], "train": ["COMPLETED"],
                              "grid": ["COMPLETED"]}
    run_dir = Path(report["run_dir"])
    assert run_dir.parent == project / "runs"
    jobs = {job["name"]: job for job in report["jobs"]}
    assert Path(jobs["grid"]["out_dir"]) == run_dir / "grid" / "out"
    grid = json.loads((run_dir / "grid/out/grid.json").read_text(encoding="utf-8"))
    assert len(grid["cells"]) == 1 and grid["cells"][0]["prompt"] == "Bajo la luna"
    assert (run_dir / "train/out/checkpoint/last.pt").is_file()
    config = json.loads((run_dir / "clean/config.json").read_text(encoding="utf-8"))
    assert config["tasks"][0]["params"]["input"] == str(project / DATA)
    logs = jobctl(project, "logs", "train")
    assert logs.returncode == 0, logs.stderr
    assert "step" in logs.stdout.lower(), logs.stdout
    assert not list(project.parents[1].rglob("pwned"))


@pytest.mark.slow
def test_local_run_from_a_hostile_project_dir(small_corpus: Path, tmp_path: Path) -> None:
    """`jobctl run` with a backslash in the path too (SLURM could not log there)."""
    project = copy_project(tmp_path, small_corpus, HOSTILE + " a\\b")
    path = manifest(project, CLEAN, TRAIN, GRID)
    result = jobctl(project, "run", path.name, "--profile", "laptop")
    assert result.returncode == 0, result.stdout + result.stderr
    check_pipeline(project, status(project))


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_submit_from_a_hostile_project_dir(slurm_cluster: object, small_corpus: Path,
                                                 tmp_path: Path) -> None:
    """SLURM writes each log where jobctl looks for it: '%' and '%j' in the directory are
    escaped in --output, spaces, quotes, '#', '$' and 'ñ' pass as one argv word."""
    project = copy_project(tmp_path, small_corpus)
    path = manifest(project, CLEAN, TRAIN, GRID)
    result = jobctl(project, "submit", path.name, "--profile", "slurm-host")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("submitted as") == 3
    report = wait_settled(project)
    check_pipeline(project, report)
    run_dir = Path(report["run_dir"])
    for job in report["jobs"]:
        job_id = job["tasks"][0]["job_id"]
        assert (run_dir / job["name"] / "logs" / f"slurm-{job_id}.out").is_file()
    backslash = tmp_path / "a\\b"
    backslash.mkdir()
    refused = jobctl(project, "submit", path.name, "--profile", "slurm-host", "--force",
                     "--runs-dir", str(backslash / "runs"))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "holds a backslash" in refused.stderr
    assert not (backslash / "runs").exists()


# --- apptainer, played by a stand-in that applies the binds -------------------------------

FAKE_APPTAINER = r'''#!{python}
"""Stand-in for `apptainer exec [--nv] --cleanenv --pwd DIR --bind SPEC... IMAGE CMD...`.

Parses each --bind as apptainer 1.x does for what jobctl writes (tokens `[^,^:]+:?`, each
stripped: a ',' '^' or an edge space in a path would change the result, and is refused), then
checks, as seen inside (the last bind covering a path wins), that --pwd, config.json, its
job_dir and out_dir (read-write) and every absolute path among the params of every task
are the same host path. Logs the binds to $FAKE_APPTAINER_LOG, then runs CMD on the host with
the environment --cleanenv would leave (APPTAINERENV_NAME forwarded as NAME).
"""
import json, os, re, sys

def fail(message):
    print(f"fake apptainer: {{message}}", file=sys.stderr)
    sys.exit(97)

def parse(spec):
    tokens = [t.strip() for t in re.findall(r"[^,^:]+:?", spec)]
    if "".join(tokens) != spec or not 1 <= len(tokens) <= 3:
        fail(f"apptainer would misread --bind {{spec!r}} as {{tokens}}")
    fields = spec.split(":")
    source, target = fields[0], fields[1] if len(fields) > 1 else fields[0]
    options = fields[2] if len(fields) > 2 else "rw"
    if options not in ("ro", "rw") or not os.path.exists(source):
        fail(f"bad bind {{spec!r}}")
    return source, target, options == "rw"

def inside(path, binds, write=False):
    for source, target, writable in reversed(binds):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            host = source + path[len(target):]
            if host != path or not os.path.exists(host) or (write and not writable):
                fail(f"{{path!r}} is not reachable {{'read-write ' if write else ''}}inside")
            return
    fail(f"{{path!r}} is outside every bind")

args = sys.argv[1:]
binds, pwd, at = [], None, 1
while args[at].startswith("--"):
    if args[at] in ("--bind", "--pwd"):
        if args[at] == "--bind":
            binds.append(parse(args[at + 1]))
        else:
            pwd = args[at + 1]
        at += 2
    else:
        at += 1
command = args[at + 1:]
config_path = command[command.index("--config") + 1]
config = json.load(open(config_path, encoding="utf-8"))
inside(pwd, binds)
inside(config_path, binds)
inside(config["job_dir"], binds, write=True)
inside(config["out_dir"], binds, write=True)
params = [value for task in config["tasks"] for value in task["params"].values()
          if isinstance(value, str) and value.startswith("/")]
for value in params:
    inside(value, binds)
with open(os.environ["FAKE_APPTAINER_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps({{"job": config["job"], "binds": [list(b) for b in binds],
                          "params": params}}) + "\n")
env = {{name[len("APPTAINERENV_"):]: value for name, value in os.environ.items()
       if name.startswith("APPTAINERENV_")}}
env.update(PATH=os.environ["PATH"], HOME=os.environ.get("HOME", "/"), LANG="C.UTF-8")
os.chdir(pwd)
os.execve({python!r}, [{python!r}, *command[1:]], env)
'''


@pytest.mark.slow
def test_apptainer_binds_follow_the_data(small_corpus: Path, tmp_path: Path) -> None:
    """The issue's cluster case: the corpus lives outside the project (a tmp dir standing for
    /scratch) and is bound read-only; a need cached from an earlier run is bound from that
    run's dir; project and runs dir have hostile names. Each job starts only if every path
    in its config.json is reachable inside."""
    project = copy_project(tmp_path, small_corpus)
    scratch = tmp_path / "scratch ñ #1" / "corpus 100% 'q'.txt"
    scratch.parent.mkdir()
    shutil.copyfile(small_corpus, scratch)
    bin_dir, log = tmp_path / "bin", tmp_path / "apptainer.jsonl"
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text(FAKE_APPTAINER.format(python=sys.executable))
    (bin_dir / "apptainer").chmod(0o755)
    profile = project / "apptainer-local.yaml"
    profile.write_text("executor: local\nruntime: apptainer\nimage: lyricgen.sif\n"
                       "env: {OMP_NUM_THREADS: '1'}\n", encoding="utf-8")
    (project / "lyricgen.sif").write_bytes(b"")
    runs = tmp_path / "runs ñ 100% #1 'x'"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "FAKE_APPTAINER_LOG": str(log)}
    args = ("--profile", profile.name, "--runs-dir", str(runs))

    first = jobctl(project, "run", manifest(project, CLEAN, data=str(scratch)).name, *args,
                   env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    second = jobctl(project, "run", manifest(project, CLEAN, TRAIN, data=str(scratch)).name,
                    *args, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "skipped: cached" in second.stdout
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [call["job"] for call in calls] == ["clean", "train"]
    scratch_bind = (str(scratch), str(scratch), False)
    assert scratch_bind in [tuple(b) for b in calls[0]["binds"]]
    report = status(project, "--runs-dir", str(runs))
    assert states(report) == {"clean": ["SKIPPED"], "train": ["COMPLETED"]}
    cached_out = Path(report["jobs"][0]["cached_from"]["out_dir"])
    run_dir = report["run_dir"]
    assert not cached_out.is_relative_to(run_dir)
    train_binds = [tuple(b) for b in calls[1]["binds"]]
    for name in ("train.txt", "valid.txt"):
        path = str(cached_out / name)
        assert (path, path, False) in train_binds
    assert (str(project), str(project), True) in train_binds
    assert (run_dir, run_dir, True) in train_binds
    assert scratch_bind not in train_binds
