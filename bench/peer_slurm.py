"""Peer benchmark: the same N trivial tasks on the same SLURM, by jobctl and by Snakemake.

    SLURM_CONF=.slurm/etc/slurm.conf .venv/bin/python bench/peer_slurm.py --tasks 1000

Each task writes `out/<i>.txt` ("done"). Tools, in turn, each in a fresh directory:

* jobctl: one generate-grid job with `shards: N` (N array tasks) in a profile whose python is
  a 2-line shell script writing that file: `jobctl submit` renders job.sh and makes ONE
  sbatch call (`#SBATCH --array=0-N-1`). Goal: 1 sbatch call, under 2 s to submit.
* snakemake: Snakemake 9 with snakemake-executor-plugin-slurm, one rule with N wildcard
  values, as a user would run it: one sbatch per job (`--jobs N`: all submitted at once).
* snakemake-array: the same with `--slurm-array-jobs=all --slurm-array-limit=40` (the
  plugin's array mode). Snakemake hands ready jobs over at most 100 at a time (its default
  --max-jobs-per-timespan 100/1s), and each array task's command line travels base64-encoded
  in the sbatch call: with 100 tasks that call exceeds Linux's 128 KiB argument limit (E2BIG),
  and the plugin's fallback (the script through stdin) puts `--slurm-jobstep-array-execs` on
  its own line, so every array task ran the chunk's FIRST job (measured: 289 tasks, 2 distinct
  outputs, MissingOutputException for the rest). 40 per array stays under the limit.

Measured per tool: submit wall time (jobctl: the `jobctl submit` process; Snakemake: from its
start to its last sbatch call), sbatch calls (an `sbatch` wrapper first on PATH logs each
call), time until every task's output exists (the latest output's mtime, the same measure
for all tools), time until the tool itself reports success (jobctl: the first `jobctl status
--json` poll, every 2 s, that says COMPLETED; Snakemake: its process exiting 0), and the load
average before and after. Ratios are Snakemake / jobctl.

What Snakemake needs here, and why (see bench/README.md):
* `--slurm-status-command squeue`: the plugin defaults to `sacct` whenever the binary exists;
  without slurmdbd sacct fails ("accounting storage is disabled"), and the plugin then
  treats every job as still running: Snakemake never finishes (measured: still waiting 12
  minutes after its 2 jobs ended, and SIGTERM only makes it wait for them). squeue works
  while jobs are younger than MinJobAge (300 s here).
* `--slurm-no-account` (no sacctmgr), `--slurm-init-seconds-before-status-checks 2` (the
  default first check after 40 s would only add idle time), resources mem_mb=512 (each task
  runs a Snakemake process of about 110 MB RSS: 64 MB got it killed for memory).
* an `srun` wrapper on PATH that exports SLURM_CONF: inside the job the plugin runs the rule
  with `srun` from an environment stripped of SLURM_* variables, so on a cluster configured
  only through $SLURM_CONF (no /etc/slurm/slurm.conf) srun finds no configuration.
jobctl tasks ask for the same 512M, 1 CPU, 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOBCTL = Path(sys.executable).parent / "jobctl"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TOOLS = ("jobctl", "snakemake", "snakemake-array")
POLL = 0.5
# Tasks per Snakemake array sbatch: each task's command travels base64-encoded in the sbatch
# command line, which must stay under Linux's 128 KiB limit for one argument (see docstring).
ARRAY_LIMIT = 40

SBATCH_WRAPPER = """#!/bin/sh
printf '%s %s\\n' "$(date +%s.%N)" "$*" >> {log}
exec {real} "$@"
"""
SRUN_WRAPPER = """#!/bin/sh
export SLURM_CONF={conf}
exec {real} "$@"
"""
TRIVIAL_PYTHON = """#!/bin/sh
# stands in for: python -m lyricgen KIND --config CFG --task N
echo done > {out}/"$7".txt
"""
GRID = """\
kind: generate-grid
name: grid
profile: bench-slurm.yaml
resources: {{cpus: 1, mem: 512M, time: "00:05:00"}}
params: {{model: model.pt, prompts: [hola], shards: {tasks}}}
"""
SNAKEFILE = """\
N = int(config["tasks"])

rule all:
    input: expand("out/{i}.txt", i=range(N))

rule task:
    output: "out/{i}.txt"
    resources: mem_mb=512, runtime=5
    shell: "echo done > {output}"
"""


@dataclass
class Result:
    tool: str
    tasks: int
    submit_s: float | None = None
    sbatch_calls: int = 0
    all_finished_s: float | None = None
    tool_done_s: float | None = None
    outputs: int = 0
    ok: bool = False
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    note: str = ""


def tool_env(bin_dir: Path, log: Path) -> dict[str, str]:
    """PATH with a counting `sbatch` and an `srun` that knows $SLURM_CONF first."""
    bin_dir.mkdir(parents=True)
    for name, text in (("sbatch", SBATCH_WRAPPER.format(log=log, real=shutil.which("sbatch"))),
                       ("srun", SRUN_WRAPPER.format(conf=os.environ["SLURM_CONF"],
                                                    real=shutil.which("srun")))):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def sbatch_times(log: Path) -> list[float]:
    if not log.exists():
        return []
    return [float(line.split()[0]) for line in log.read_text().splitlines() if line.strip()]


def wait_outputs(out: Path, tasks: int, deadline: float, proc: subprocess.Popen | None) -> int:
    """Wait until `tasks` files are in `out` (or the deadline, or `proc` ended); the count."""
    while True:
        count = len(list(out.glob("*.txt"))) if out.is_dir() else 0
        ended = proc is not None and proc.poll() is not None
        if count >= tasks or ended or time.monotonic() > deadline:
            return count
        time.sleep(POLL)


def latest_mtime(out: Path) -> float | None:
    times = [p.stat().st_mtime for p in out.glob("*.txt")]
    return max(times) if times else None


def run_jobctl(work: Path, tasks: int, timeout: float) -> Result:
    result = Result("jobctl", tasks, load_before=list(os.getloadavg()))
    out, log = work / "out", work / "sbatch.log"
    out.mkdir()
    env = tool_env(work / "bin", log)
    python = work / "trivial-python"
    python.write_text(TRIVIAL_PYTHON.format(out=out))
    python.chmod(0o755)
    (work / "bench-slurm.yaml").write_text(f"executor: slurm\npython: {python}\n")
    (work / "model.pt").write_bytes(b"")
    (work / "grid.yaml").write_text(GRID.format(tasks=tasks))
    start = time.time()
    submitted = subprocess.run([str(JOBCTL), "submit", "grid.yaml", "--runs-dir", "runs"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=300,
                               check=False)
    result.submit_s = time.time() - start
    if submitted.returncode != 0:
        result.note = submitted.stderr.strip()
        return result
    deadline = time.monotonic() + timeout
    result.outputs = wait_outputs(out, tasks, deadline, None)
    result.tool_done_s = _jobctl_done(work, env, deadline, start)
    _finish(result, out, log, start)
    result.ok = result.outputs == tasks and result.tool_done_s is not None
    return result


def _jobctl_done(work: Path, env: dict[str, str], deadline: float, start: float) -> float | None:
    """Seconds from start until `jobctl status --json` says COMPLETED (polled every 2 s)."""
    while time.monotonic() < deadline:
        shown = subprocess.run([str(JOBCTL), "status", "--json", "--runs-dir", "runs"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=120,
                               check=False)
        if shown.returncode == 0 and json.loads(shown.stdout)["jobs"][0]["state"] == "COMPLETED":
            return time.time() - start
        time.sleep(2.0)
    return None


def run_snakemake(work: Path, tasks: int, timeout: float, array: bool) -> Result:
    result = Result("snakemake-array" if array else "snakemake", tasks,
                    load_before=list(os.getloadavg()))
    out, log = work / "out", work / "sbatch.log"
    env = tool_env(work / "bin", log)
    (work / "Snakefile").write_text(SNAKEFILE)
    argv = [str(SNAKEMAKE), "--executor", "slurm", "--jobs", str(tasks), "--config",
            f"tasks={tasks}", "--slurm-no-account", "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5"]
    if array:
        argv += ["--slurm-array-jobs=all", f"--slurm-array-limit={ARRAY_LIMIT}"]
    start = time.time()
    with (work / "snakemake.log").open("w") as console:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=console,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        result.outputs = wait_outputs(out, tasks, deadline, proc)
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            result.tool_done_s = time.time() - start if code == 0 else None
            result.note = "" if code == 0 else f"snakemake exited {code}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            result.note = f"killed after {timeout:.0f} s"
    calls = sbatch_times(log)
    result.submit_s = calls[-1] - start if calls else None
    _finish(result, out, log, start)
    result.ok = result.outputs == tasks and result.tool_done_s is not None
    return result


def _finish(result: Result, out: Path, log: Path, start: float) -> None:
    result.sbatch_calls = len(sbatch_times(log))
    result.outputs = len(list(out.glob("*.txt"))) if out.is_dir() else 0
    last = latest_mtime(out) if out.is_dir() else None
    if result.outputs == result.tasks and last is not None:
        result.all_finished_s = last - start
    result.load_after = list(os.getloadavg())


def queue_idle(timeout: float = 600.0) -> None:
    """Wait until the cluster runs nothing (so one tool's tail does not slow the next)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-t", "PD,R,CG", "-o", "%i"],
                               capture_output=True, text=True, check=False).stdout
        if not queue.strip():
            return
        time.sleep(2.0)


def fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def ratio(other: float | int | None, base: float | int | None) -> str:
    if other is None or base is None or base == 0:
        return "-"
    return f"{other / base:.1f}x"


def table(results: list[Result]) -> str:
    rows = [("submit wall time (s)", "submit_s"), ("sbatch calls", "sbatch_calls"),
            ("all tasks finished (s)", "all_finished_s"), ("tool reports done (s)", "tool_done_s"),
            ("outputs written", "outputs")]
    base = next((r for r in results if r.tool == "jobctl"), None)
    header = f"{'':<24}" + "".join(f"{r.tool:>17}" for r in results)
    others = [r for r in results if r is not base]
    if base:
        header += "".join(f"{r.tool + '/jobctl':>26}" for r in others)
    lines = [header]
    for label, key in rows:
        line = f"{label:<24}" + "".join(f"{fmt(getattr(r, key)):>17}" for r in results)
        if base and key != "outputs":
            line += "".join(f"{ratio(getattr(r, key), getattr(base, key)):>26}" for r in others)
        lines.append(line)
    for r in results:
        load = ", ".join(f"{x:.2f}" for x in r.load_before) + " -> " + \
            ", ".join(f"{x:.2f}" for x in r.load_after)
        lines.append(f"{r.tool}: ok={r.ok} load average {load}" + (f"; {r.note}" if r.note
                                                                   else ""))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="trivial tasks (<= 1000)")
    parser.add_argument("--tools", default="jobctl,snakemake",
                        help=f"comma-separated, from {', '.join(TOOLS)} (default: the first "
                             "two; snakemake-array takes about 50 min for 1000 tasks on 2 cores)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds each tool may take to finish everything")
    parser.add_argument("--workdir", type=Path, help="keep the tools' directories here")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tools: {', '.join(unknown)}")
    if not 1 <= args.tasks <= 1000:
        parser.error("--tasks must be 1..1000 (one array)")
    if not os.environ.get("SLURM_CONF"):
        parser.error("SLURM_CONF must name the cluster (bash scripts/slurm-local.sh up .slurm)")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="peer-slurm-"))
    print(f"{args.tasks} tasks, {os.cpu_count()} CPUs, SLURM_CONF={os.environ['SLURM_CONF']}, "
          f"work in {root}", flush=True)
    results = []
    for tool in tools:
        queue_idle()
        work = root / tool
        work.mkdir(parents=True)
        if tool == "jobctl":
            result = run_jobctl(work, args.tasks, args.timeout)
        else:
            result = run_snakemake(work, args.tasks, args.timeout, tool == "snakemake-array")
        print(f"{tool}: {json.dumps(asdict(result))}", flush=True)
        results.append(result)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
