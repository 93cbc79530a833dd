"""Multi-node jobs for real, through `jobctl submit` on a local SLURM cluster of two nodes
(`make slurm-up`: nodes n1 and n2 on this machine, whose names resolve nowhere; skipped with
the reason on a cluster with fewer nodes):

* train-rnn DDP over 2 nodes x 1 process trains the model a 1-process job with the same
  global batch trains (same losses, weights), meeting at the first node's ADDRESS;
* finetune-llama (tiny random LLaMA, gloo) over 2 nodes likewise, with the profile's
  network_interface (lo) giving the address;
* a node whose processes die mid-run (SIGKILL to the step's processes on the second node)
  ends the job FAILED, the reason naming that node, and `jobctl resubmit --failed` resumes
  it from its checkpoint to the same end;
* SIGUSR1 to the batch script (`scancel --signal=USR1 --batch`, as `--signal=B:USR1@N` sends
  it) reaches both nodes' torchrun and workers, one checkpoint is written, the job requeues
  itself and the rerun resumes from that checkpoint to the same end.

The train-rnn jobs share one configuration (a 40 000-character slice of DISCO, ~150 steps of
a small GRU) so that one 1-process run is the reference of all three. A requeued job is held
by SLURM for about 2 minutes; as in test_preemption_e2e the test lifts the hold.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from test_distributed_e2e import PIPELINE, assert_same_finetune
from test_preemption_e2e import jobctl, release, usr1_until_requeued, wait_for
from test_rnn_distributed import assert_same_training
from tiny_llama import build_tiny_llama

from lyricgen.rnn.checkpoint import load_checkpoint

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DISCO = REPO.parent / "shared/corpora/disco"
PARAMS = ("{data: train.txt, valid_data: valid.txt, arch: gru, hidden_size: 64, "
          "embedding_dim: 16, batch_size: 16, seq_len: 64, dropout: 0.0, epochs: 4, "
          "warmup_steps: 5, checkpoint_every: 10, eval_every: 50, log_every: 1, "
          "precision: fp32, seed: 42, device: cpu}")
TWO_NODES = f"""\
kind: train-rnn
name: train
resources: {{cpus: 1, nodes: 2, mem: 1G, time: "00:10:00"}}
params: {PARAMS}
"""
PAIR = f"""\
name: pair
jobs:
  - {{kind: train-rnn, name: train, resources: {{cpus: 1, nodes: 2, mem: 1G, time: "00:10:00"}},
     params: {PARAMS}}}
  - {{kind: train-rnn, name: train-1, resources: {{cpus: 1, mem: 1G, time: "00:10:00"}},
     params: {PARAMS}}}
"""
RENDEZVOUS = re.compile(r"job\.sh: rendezvous at (\S+):\d+ \(node (\S+)\) for nodes (\S+)")
SETTLE_LIMIT = 12 * 60  # seconds; the train-rnn jobs ask for 10 minutes
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "PREEMPTED", "TIMEOUT", "OUT_OF_MEMORY",
         "NODE_FAIL", "UNKNOWN")


@pytest.fixture(scope="module")
def nodes(slurm_cluster: object) -> list[str]:
    """The cluster's usable nodes; skips unless there are at least two."""
    listed = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True,
                            text=True, timeout=60, check=False).stdout.split("\n")
    usable = sorted({line.split()[0] for line in listed
                     if line.strip() and line.split()[1].rstrip("*") in
                     ("idle", "mixed", "allocated")})
    if len(usable) < 2:
        pytest.skip(f"needs a SLURM cluster of 2 nodes (make slurm-up starts one), "
                    f"this one has {usable}")
    return usable


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working dir with the data, the manifests and a slurm/host profile."""
    if not (DISCO / "train.txt").is_file():
        pytest.skip(f"corpus not found at {DISCO}")
    cwd = tmp_path_factory.mktemp("multinode")
    (cwd / "train.txt").write_text((DISCO / "train.txt").read_text("utf-8")[:40000], "utf-8")
    (cwd / "valid.txt").write_text((DISCO / "valid.txt").read_text("utf-8")[:3000], "utf-8")
    (cwd / "two.yaml").write_text(TWO_NODES, encoding="utf-8")
    (cwd / "pair.yaml").write_text(PAIR, encoding="utf-8")
    (cwd / "slurm.yaml").write_text("executor: slurm\nruntime: host\n", encoding="utf-8")
    return cwd


def report(cwd: Path, runs: str) -> dict[str, dict]:
    """`jobctl status --json` of the run in `runs`, by job name."""
    result = jobctl(cwd, "status", "--json", "--runs-dir", runs)
    assert result.returncode in (0, 1), result.stderr
    return {job["name"]: job for job in json.loads(result.stdout)["jobs"]}


def settled(cwd: Path, runs: str) -> dict[str, dict]:
    """The run's report once no job is pending or running. Waits longer than the train-rnn
    jobs' time limit, so that one that hangs ends as TIMEOUT, not as a wait that gave up (a
    busy shared 2-core machine once took 5 minutes for a 30-second pair)."""
    return wait_for(f"the jobs of {runs} to end", lambda: (
        (found := report(cwd, runs)) and all(job["state"] in ENDED for job in found.values())
        and found), limit=SETTLE_LIMIT)


def submit(cwd: Path, manifest: str, runs: str, profile: str = "slurm.yaml") -> None:
    submitted = jobctl(cwd, "submit", manifest, "--profile", profile, "--runs-dir", runs)
    assert submitted.returncode == 0, submitted.stderr


def log_of(job: dict) -> str:
    """The log of the job's latest submission (a job of one task)."""
    job_id = job["tasks"][0]["job_id"]
    return (Path(job["job_dir"]) / f"logs/slurm-{job_id}.out").read_text(encoding="utf-8")


def check_rendezvous(log: str, nodes: list[str]) -> str:
    """Every attempt in `log` met at an IP address of its batch node, across two nodes of
    the cluster; returns that node's name."""
    found = RENDEZVOUS.findall(log)
    assert found, log[-3000:]
    for host, batch_node, node_list in found:
        ipaddress.ip_address(host.strip("[]"))  # an address, not a node name
        expanded = subprocess.run(["scontrol", "show", "hostnames", node_list],
                                  capture_output=True, text=True, check=True).stdout.split()
        assert batch_node in expanded and len(expanded) == 2 and set(expanded) <= set(nodes)
    return found[-1][1]


def world_size(out: Path) -> int:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))["world_size"]


@pytest.fixture(scope="module")
def pair(nodes: list[str], project: Path) -> dict[str, dict]:
    """The 2-node train-rnn job and its 1-process reference, submitted together."""
    submit(project, "pair.yaml", "runs-pair")
    return settled(project, "runs-pair")


def test_train_rnn_over_two_nodes_trains_like_one_process(pair: dict[str, dict],
                                                          nodes: list[str]) -> None:
    assert {name: job["state"] for name, job in pair.items()} == {
        "train": "COMPLETED", "train-1": "COMPLETED"}
    two, one = (Path(pair[name]["out_dir"]) for name in ("train", "train-1"))
    check_rendezvous(log_of(pair["train"]), nodes)
    assert (world_size(two), world_size(one)) == (2, 1)
    assert_same_training(one, two)


def test_finetune_llama_over_two_nodes_trains_like_one_process(
        nodes: list[str], project: Path, small_corpus: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The pipeline of test_distributed_e2e without its grid, with its 2-process finetune on
    2 nodes; the profile names the interface (lo, where both nodes live) when `ip` is
    installed, which network_interface needs; else the nodes' NodeAddr is used."""
    tiny = build_tiny_llama(tmp_path_factory.getbasetemp())
    cwd = project / "llama"
    cwd.mkdir()
    manifest = PIPELINE.split("  - kind: generate-grid")[0].replace("@MODEL@", str(tiny)).replace(
        "resources: {gpus: 0, cpus: 2, processes_per_node: 2, mem: 4G",
        "resources: {gpus: 0, cpus: 1, nodes: 2, mem: 2G")
    assert "nodes: 2" in manifest
    (cwd / "pipeline.yaml").write_text(manifest, encoding="utf-8")
    (cwd / "small.txt").write_text(small_corpus.read_text(encoding="utf-8"), encoding="utf-8")
    interface = "network_interface: lo\n" if shutil.which("ip") else ""
    (cwd / "host.yaml").write_text(
        "executor: slurm\nruntime: host\n" + interface +
        "env: {HF_HUB_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false'}\n", encoding="utf-8")
    submit(cwd, "pipeline.yaml", "runs", "host.yaml")
    done = settled(cwd, "runs")
    assert {name: job["state"] for name, job in done.items()} == \
        {name: "COMPLETED" for name in ("clean", "finetune", "finetune-1")}
    script = (Path(done["finetune"]["job_dir"]) / "job.sh").read_text(encoding="utf-8")
    assert "  --nnodes=2\n  --nproc-per-node=1\n" in script and "--rdzv-backend=c10d" in script
    check_rendezvous(log_of(done["finetune"]), nodes)
    assert_same_finetune(Path(done["finetune"]["out_dir"]), Path(done["finetune-1"]["out_dir"]))


def step_processes(job_id: str, node: str) -> list[int]:
    """PIDs of the processes of job `job_id`'s first srun step on `node` (the node's torchrun
    and its workers) on this machine, found by the SLURM variables in their environment."""
    wanted = {f"SLURM_JOB_ID={job_id}".encode(), f"SLURMD_NODENAME={node}".encode(),
              b"SLURM_STEP_ID=0", f"SLURM_CONF={os.environ['SLURM_CONF']}".encode()}
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted <= set(environ.read_bytes().split(b"\0")):
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours
            continue
    return found


def reference(pair: dict[str, dict]) -> Path:
    return Path(pair["train-1"]["out_dir"])


def training_two_nodes(project: Path, runs: str) -> tuple[dict, str, Path]:
    """Submit two.yaml into `runs` and wait for its first checkpoint: (the job's status
    record, its SLURM job id, its out dir)."""
    submit(project, "two.yaml", runs)
    job = report(project, runs)["train"]
    out = Path(job["out_dir"])
    wait_for("a first checkpoint", lambda: (out / "checkpoint/last.pt").exists())
    return job, job["tasks"][0]["job_id"], out


def test_a_node_that_dies_fails_the_job_and_resubmit_resumes_it(
        pair: dict[str, dict], nodes: list[str], project: Path) -> None:
    job, job_id, out = training_two_nodes(project, "runs-kill")
    batch_node = check_rendezvous(log_of(job), nodes)
    other = wait_for("the other node's processes", lambda: next(
        ((node, pids) for node in nodes if node != batch_node
         if (pids := step_processes(job_id, node))), None))
    for pid in other[1]:
        os.kill(pid, signal.SIGKILL)

    failed = settled(project, "runs-kill")["train"]
    task = failed["tasks"][0]
    assert failed["state"] == "FAILED", f"training ended before the node died: {failed}"
    assert task["reason"].endswith(f"first failure: node {other[0]} task 1 Killed (srun)")
    killed_at = load_checkpoint(out / "checkpoint/last.pt")["step"]
    assert killed_at >= 10 and not (out / "metrics.json").exists()

    again = jobctl(project, "resubmit", "--failed", "--runs-dir", "runs-kill")
    assert again.returncode == 0, again.stderr
    done = settled(project, "runs-kill")["train"]
    assert done["state"] == "COMPLETED", done
    resumed = log_of(done)
    assert f"resuming from {out / 'checkpoint/last.pt'} at step {killed_at} " in resumed
    check_rendezvous(resumed, nodes)
    assert world_size(out) == 2
    assert_same_training(reference(pair), out)


def test_sigusr1_reaches_every_node_and_the_requeued_job_resumes(
        pair: dict[str, dict], nodes: list[str], project: Path) -> None:
    job, _, out = training_two_nodes(project, "runs-preempt")
    requeued = usr1_until_requeued(job)
    log = log_of(job)
    # Each node's torchrun forwarded the signal to its worker (torchrun's own log lines),
    # and both ranks stopped after the same step: rank 0 wrote that one checkpoint.
    assert log.count("closing signal SIGUSR1") == 2, log[-3000:]
    stopped = re.findall(r"lyricgen: train-rnn: stopped by SIGUSR1 after step (\d+);", log)
    assert len(stopped) == 2 and len(set(stopped)) == 1, log[-3000:]
    held = wait_for("SLURM to hold the requeued job", lambda: (
        (state := report(project, "runs-preempt")["train"])["state"] == "PENDING" and state))
    assert "requeued 1x" in held["reason"], held
    release(requeued)

    done = settled(project, "runs-preempt")["train"]
    assert (done["state"], done["tasks"][0]["reason"]) == ("COMPLETED", "requeued 1x")
    log = log_of(job)
    assert f"resuming from {out / 'checkpoint/last.pt'} at step {stopped[0]} " in log
    assert len(RENDEZVOUS.findall(log)) == 2  # both attempts (--open-mode=append)
    check_rendezvous(log, nodes)
    assert world_size(out) == 2
    assert_same_training(reference(pair), out)
