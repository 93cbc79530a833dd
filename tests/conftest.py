"""Shared fixtures.

* every test runs with HF_HUB_OFFLINE=1 / TRANSFORMERS_OFFLINE=1 (nothing can be downloaded)
  and, once torch is imported, with torch.set_num_threads(1);
* `disco_dir` / `small_corpus`: the real corpus from ../shared/corpora/disco (next to the
  checkout, never copied into the repo) and a few of its songs in a tmp file;
* `slurm_cluster`: the local SLURM cluster (`make slurm-up`), skipped with the reason when
  it is not reachable;
* `fake_python` / `fake_profile`: a stand-in for the job interpreter whose behaviour each
  test controls through its input file, so executor and CLI tests need no ML code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DISCO = REPO.parent / "shared/corpora/disco"
SONG_MARKER = "<|fin|>"


@pytest.fixture(autouse=True)
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may download anything."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """One torch thread in every test that runs with torch loaded (the machine is shared)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def disco_dir() -> Path:
    if not (DISCO / "valid.txt").is_file():
        pytest.skip(f"corpus not found at {DISCO} (expected ../shared next to the checkout)")
    return DISCO


@pytest.fixture
def small_corpus(disco_dir: Path, tmp_path: Path) -> Path:
    """The first 12 songs of DISCO's valid split, in the marker format, in a tmp file."""
    songs = (disco_dir / "valid.txt").read_text(encoding="utf-8").split(SONG_MARKER)[:12]
    path = tmp_path / "small.txt"
    path.write_text(f"\n{SONG_MARKER}\n".join(s.strip() for s in songs) + f"\n{SONG_MARKER}\n",
                    encoding="utf-8")
    return path


@dataclass(frozen=True)
class SlurmCluster:
    conf: Path


def _slurm_skip_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "SLURM client commands not installed (apt-get install slurm-client)"
    conf = os.environ.get("SLURM_CONF")
    if not conf or not Path(conf).is_file():
        return "SLURM_CONF is not set to a slurm.conf (start one: make slurm-up)"
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    states = result.stdout.split()
    if result.returncode != 0 or not any(s.rstrip("*") in ("idle", "mixed", "allocated")
                                         for s in states):
        return f"no usable SLURM node (sinfo: {(result.stderr or result.stdout).strip()!r})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The running SLURM cluster named by $SLURM_CONF; skips with the reason otherwise."""
    reason = _slurm_skip_reason()
    if reason:
        pytest.skip(reason)
    return SlurmCluster(conf=Path(os.environ["SLURM_CONF"]))


FAKE_PYTHON = '''\
#!{python}
"""Stands in for `python -m lyricgen KIND --config CFG --task N`.

Reads the task's params from CFG. Behaviour comes from the file named by the `input` param,
one directive per line: `fail CODE`, `fail-seeds S1 S2 ... CODE`, `sleep SECONDS`,
`alloc MIB` (hold that many MiB, written so that they are resident, until the end),
`notify FIFO` (write a line into it: blocks until the test reads) and `wait FIFO` (block
until the test writes into it); both do nothing when FIFO does not exist.
On success writes every output of the kind (kindspec.registry) into the task's out dir (one line
naming job and task, so directives do not leak downstream); always writes `fake.json` with
the SLURM_* environment, params and times it saw.
"""
import json, os, sys, time
from pathlib import Path

args = sys.argv[1:]
config = json.loads(Path(args[args.index("--config") + 1]).read_text())
task = int(args[args.index("--task") + 1])
params = config["tasks"][task]["params"]
out = Path(config["out_dir"])
if len(config["tasks"]) > 1:
    out = out / str(task)
out.mkdir(parents=True, exist_ok=True)
started = time.time()
print(f"fake {{config['kind']}} task {{task}} starts", flush=True)
code = 0
held = []
for line in Path(params["input"]).read_text().splitlines():
    words = line.split()
    if words[:1] == ["alloc"]:
        held.append(b"x" * (int(words[1]) << 20))
    elif words[:1] == ["sleep"]:
        time.sleep(float(words[1]))
    elif words[:1] == ["fail"]:
        code = int(words[1])
    elif words[:1] == ["fail-seeds"] and str(params.get("seed")) in words[1:-1]:
        code = int(words[-1])
    elif words[:1] == ["notify"] and os.path.exists(words[1]):
        with open(words[1], "w") as fifo:
            fifo.write(f"{{os.getpid()}}\\n")
    elif words[:1] == ["wait"] and os.path.exists(words[1]):
        with open(words[1]) as fifo:
            fifo.read()
env = {{k: v for k, v in os.environ.items() if k.startswith("SLURM_")}}
(out / "fake.json").write_text(json.dumps({{"env": env, "params": params, "task": task,
                                           "started": started, "ended": time.time()}}))
if code:
    print(f"fake failure {{code}}", flush=True)
    sys.exit(code)
sys.path.insert(0, {repo!r})
from kindspec.registry import KINDS
for name in KINDS[config["kind"]].outputs.values():
    (out / name).write_text(f"output of {{config['job']}} task {{task}}\\n")
print("fake done", flush=True)
'''


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """An executable that stands in for the job interpreter (see FAKE_PYTHON)."""
    path = tmp_path / "fakepython"
    path.write_text(FAKE_PYTHON.format(python=sys.executable, repo=str(REPO)))
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_profile(tmp_path: Path, fake_python: Path) -> Path:
    """A local/host profile whose interpreter is `fake_python`, runs in tmp/runs."""
    path = tmp_path / "fake.yaml"
    path.write_text(textwrap.dedent(f"""\
        executor: local
        runtime: host
        python: {fake_python}
        runs_dir: {tmp_path / 'runs'}
        """))
    return path
