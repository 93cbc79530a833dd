"""SLURM executor without a cluster: parsing, state merging, sbatch command lines (a fake
sbatch/scancel on PATH). The real cluster is exercised in test_e2e_slurm.py."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import plan
from jobs.cli import load
from jobs.errors import UsageError
from jobs.executors import collect_status, full_selection
from jobs.executors import slurm as slurm_mod
from jobs.executors.slurm import (
    SlurmExecutor,
    compress_indices,
    expand_indices,
    first_failed_node,
    jobcomp_path,
    log_cause,
    parse_record,
    parse_sbatch_id,
    slurm_task_state,
)
from jobs.state import Run
from jobs.taskstatus import write_task_status

SCONTROL_LINE = (
    "JobId=3 JobName=lyricgen-b UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=1 "
    "Nice=0 Account=(null) QOS=(null) JobState=CANCELLED Reason=DependencyNeverSatisfied "
    "Dependency=afterok:2(failed) Requeue=1 ExitCode=0:0 NtasksPerN:B:S:C=0:0:*:* "
    "SubmitTime=2026-11-26T08:14:04 NodeList= TRES=cpu=1,mem=21695M,node=1,billing=1 "
    "Command=/runs/x/b/job.sh WorkDir=/work/main Power=")

PIPELINE = """\
jobs:
  - {kind: clean, name: a, params: {input: a.txt}}
  - {kind: clean, name: grid, needs: [a], params: {input: a.txt}, matrix: {seed: [1, 2, 3]},
     throttle: 2}
  - {kind: clean, name: b, needs: [grid], params: {input: a.txt}}
"""


def test_parse_record_keeps_values_with_equals_and_empty_values() -> None:
    record = parse_record(SCONTROL_LINE)
    assert record["JobState"] == "CANCELLED"
    assert record["TRES"] == "cpu=1,mem=21695M,node=1,billing=1"
    assert record["NtasksPerN:B:S:C"] == "0:0:*:*"
    assert record["NodeList"] == "" and record["Power"] == ""
    assert record["Dependency"] == "afterok:2(failed)"


def test_parse_sbatch_id() -> None:
    assert parse_sbatch_id("123\n") == "123"
    assert parse_sbatch_id("sbatch: warning: x\n77;cluster1\n") == "77"
    with pytest.raises(UsageError, match="not a job id"):
        parse_sbatch_id("Submitted batch job 5")


def test_index_lists() -> None:
    assert expand_indices("0-3,7,9-13:2%4") == [0, 1, 2, 3, 7, 9, 11, 13]
    assert compress_indices([8, 0, 1, 2, 5, 7]) == "0-2,5,7-8"


@given(st.sets(st.integers(min_value=0, max_value=1000), min_size=1))
def test_compress_and_expand_round_trip(indices: set[int]) -> None:
    assert expand_indices(compress_indices(indices)) == sorted(indices)


@pytest.mark.parametrize(("fields", "expected"), [
    ("JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 NodeList=n1",
     ("FAILED", 3, "exit code 3", None)),
    (SCONTROL_LINE, ("CANCELLED", None, "dependency failed", None)),
    ("JobState=CANCELLED ExitCode=0:0 NodeList=(null)",
     ("CANCELLED", None, "cancelled before it started", None)),
    ("JobState=CANCELLED ExitCode=0:15 NodeList=n1",
     ("CANCELLED", 0, "signal 15 (SIGTERM)", "TERM")),
    ("JobState=TIMEOUT ExitCode=0:1 NodeList=n1", ("TIMEOUT", 0, "time limit", "HUP")),
    ("JobState=OUT_OF_MEMORY ExitCode=0:125 NodeList=n1",
     ("OUT_OF_MEMORY", 0, "out of memory", "125")),
    ("JobState=FAILED Reason=JobLaunchFailure ExitCode=0:9 NodeList=n1",
     ("FAILED", 0, "signal 9 (SIGKILL)", "KILL")),
    ("JobState=FAILED ExitCode=137:0 NodeList=n1", ("FAILED", 137, "exit code 137 (SIGKILL)",
                                                    None)),
    ("JobState=PENDING Reason=Dependency ExitCode=0:0 NodeList=",
     ("PENDING", None, "waiting for needs", None)),
    ("JobState=COMPLETING ExitCode=0:0 NodeList=n1", ("RUNNING", None, None, None)),
    ("JobState=CANCELLED Reason=Dependency NodeList=",
     ("CANCELLED", None, "cancelled before it started", None)),
    ("JobState=PENDING Reason=Resources NodeList=", ("PENDING", None, "Resources", None)),
])
def test_slurm_task_state(fields: str, expected: tuple) -> None:
    state = slurm_task_state(parse_record(fields), 0, "9")
    assert (state.state, state.exit_code, state.reason, state.signal) == expected


# slurmstepd's lines as SLURM 22.05 writes them into the job's log.
OVER_MEMORY = ("slurmstepd-localnode: error: StepId=1.batch exceeded memory limit "
               "(646041600 > 104857600), being killed\n"
               "slurmstepd-localnode: error: Exceeded job memory limit\n")


@pytest.mark.parametrize(("text", "cause"), [
    (OVER_MEMORY, "OUT_OF_MEMORY"),
    ("slurmstepd: error: Detected 1 oom_kill event in StepId=5.batch. Some of the step tasks "
     "have been OOM Killed.", "OUT_OF_MEMORY"),
    ("slurmstepd-localnode: error: *** JOB 2 ON localnode CANCELLED AT 2026-11-26T08:36:38 "
     "DUE TO TIME LIMIT ***", "TIMEOUT"),
    ("slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-11-26T08:36:38 DUE TO PREEMPTION "
     "***", "PREEMPTED"),
    ("slurmstepd-localnode: error: *** JOB 3 ON localnode CANCELLED AT 2026-11-26T08:35:37 ***",
     None),
    ("my program says: exceeded memory limit of its cache\n", None),
])
def test_log_cause_reads_slurmstepd_lines_only(text: str, cause: str | None) -> None:
    assert log_cause(text) == cause


# A 2-node job whose task on n2 was SIGKILLed (tests/test_multinode_e2e.py), after an earlier
# attempt (requeued, same log) in which srun reported another failure.
NODE_DIED = (
    "job.sh: rendezvous at 127.0.0.1:20004 (node n1) for nodes n[1-2]\n"
    "srun: error: n1: task 0: Exited with exit code 1\n"
    "job.sh: rendezvous at 127.0.0.1:20004 (node n1) for nodes n[1-2]\n"
    "train-rnn gru/char:   0%|          | 0/579 [00:00<?, ?step/s]"
    "srun: error: n2: task 1: Killed\n"
    "srun: launch/slurm: _step_signal: Terminating StepId=4.0\n"
    "slurmstepd-n1: error: *** STEP 4.0 ON n1 CANCELLED AT 2026-12-03T20:50:31 ***\n"
    "srun: error: n1: task 0: Exited with exit code 1\n")


def test_first_failed_node_of_the_current_attempt() -> None:
    assert first_failed_node(NODE_DIED) == "node n2 task 1 Killed (srun)"
    assert first_failed_node(NODE_DIED.split("train-rnn")[0]) is None
    assert first_failed_node("srun: error: n3: tasks 0-1: Exited with exit code 2\n") == \
        "node n3 task 0-1 Exited with exit code 2 (srun)"
    assert first_failed_node("nothing here\n") is None


def test_jobcomp_path_only_for_filetxt(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("# comment\nJobCompType=jobcomp/filetxt  # inline\nJobCompLoc=/x/comp.txt\n")
    assert jobcomp_path(conf) == Path("/x/comp.txt")
    conf.write_text("JobCompType=jobcomp/none\nJobCompLoc=/x/comp.txt\n")
    assert jobcomp_path(conf) is None
    assert jobcomp_path(tmp_path / "missing.conf") is None


@pytest.fixture
def run(tmp_path: Path, fake_profile: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "p.yaml").write_text(PIPELINE)
    pipeline, profiles = load(str(tmp_path / "p.yaml"), str(fake_profile))
    return plan.create_run(pipeline, profiles, tmp_path / "runs", executor="slurm", force=True)


FAKE_SBATCH = """#!/usr/bin/env bash
echo "$*" >> {log}
n=$(wc -l < {log})
if [[ -e {fail} && $n -ge $(cat {fail}) ]]; then
  echo "sbatch: error: invalid partition" >&2
  exit 1
fi
echo "$((40 + n));local"
"""


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """sbatch printing ids 41, 42, ... (`ID;cluster`), failing from the Nth call when the
    file `fail` holds N; scancel recording its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    files = {"log": tmp_path / "sbatch.log", "fail": tmp_path / "fail",
             "scancel": tmp_path / "scancel.log"}
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(log=files["log"], fail=files["fail"]))
    (bin_dir / "scancel").write_text(f'#!/usr/bin/env bash\necho "$*" >> {files["scancel"]}\n')
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-slurm.conf"))
    return files


def test_submit_chains_dependencies_and_records_ids(run: Run,
                                                    fake_slurm: dict[str, Path]) -> None:
    assert SlurmExecutor().submit(run, full_selection(run.read()))
    calls = [call.split(" ", 1) for call in fake_slurm["log"].read_text().splitlines()]
    log, grid_log = f"{run.dir}/a/logs/slurm-%j.out", f"{run.dir}/grid/logs/slurm-%A_%a.out"
    assert calls[0][0].startswith("--comment=jobctl:")  # the token that finds a lost answer
    assert calls[0][1] == (f"--parsable --kill-on-invalid-dep=yes --output={log} --error={log} "
                           f"{run.dir}/a/job.sh")
    assert calls[1][1] == (f"--parsable --kill-on-invalid-dep=yes --output={grid_log} "
                           f"--error={grid_log} --dependency=afterok:41 {run.dir}/grid/job.sh")
    assert "--dependency=afterok:42 " in calls[2][1]
    record = run.read()
    submissions = [record["jobs"][n]["submissions"][0] for n in ("a", "grid", "b")]
    assert [s["job_id"] for s in submissions] == ["41", "42", "43"]
    assert [call[0] for call in calls] == [f"--comment={s['token']}" for s in submissions]
    assert all(re.fullmatch(rf"jobctl:{run.id}/{name}:[0-9a-f]{{8}}", s["token"])
               for name, s in zip(("a", "grid", "b"), submissions, strict=True))
    states = {j.name: [t.state for t in j.tasks] for j in collect_status(run)}
    assert states == {"a": ["UNKNOWN"], "grid": ["UNKNOWN"] * 3, "b": ["UNKNOWN"]}


def test_failed_sbatch_cancels_what_this_call_queued(run: Run,
                                                     fake_slurm: dict[str, Path]) -> None:
    fake_slurm["fail"].write_text("3")
    with pytest.raises(UsageError, match="sbatch failed for .*b/job.sh: sbatch: error: "
                                         "invalid partition"):
        SlurmExecutor().submit(run, full_selection(run.read()))
    assert fake_slurm["scancel"].read_text().split() == ["41", "42"]
    assert run.read()["jobs"]["b"]["submissions"] == []  # rejected: nothing was queued
    assert collect_status(run)[2].tasks[0].reason == "never submitted"


# sbatch that queues the job (a line in the `queue` file, which the fake scontrol prints,
# with the --comment it was given) unless the file `lost` exists, then answers as the
# file `answer` says: an id, garbage, or nothing within the timeout.
UNCLEAR_SBATCH = """#!/usr/bin/env bash
echo "$*" >> {log}
n=$(wc -l < {log})
comment=${{1#--comment=}}
if [[ ! -e {lost} ]]; then
  echo "JobId=$((40 + n)) JobState=PENDING Reason=None Comment=$comment NodeList=" >> {queue}
fi
case "$(cat {answer})" in
  garbage) echo "sbatch: Submitted batch job $((40 + n)) (maybe)" ;;
  hang) exec sleep 30 ;;
  *) echo "$((40 + n))" ;;
esac
"""


@pytest.fixture
def unclear_slurm(fake_slurm: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    files = {**fake_slurm, "queue": tmp_path / "queue", "answer": tmp_path / "answer",
             "lost": tmp_path / "lost"}
    files["queue"].write_text("")
    files["answer"].write_text("id")
    (tmp_path / "bin" / "sbatch").write_text(UNCLEAR_SBATCH.format(**files))
    (tmp_path / "bin" / "scontrol").write_text(f"#!/usr/bin/env bash\ncat {files['queue']}\n")
    return files


def test_sbatch_garbage_is_recovered_by_the_comment(run: Run, unclear_slurm: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    unclear_slurm["answer"].write_text("garbage")
    assert SlurmExecutor().submit(run, full_selection(run.read()))
    jobs = run.read()["jobs"]
    assert [jobs[n]["submissions"][0]["job_id"] for n in ("a", "grid", "b")] == \
        ["41", "42", "43"]
    assert "--dependency=afterok:42 " in unclear_slurm["log"].read_text().splitlines()[2]
    note = jobs["a"]["submissions"][0]["note"]
    assert note.startswith("sbatch printed 'sbatch: Submitted batch job 41 (maybe)', not a "
                           f"job id for {run.dir}/a/job.sh; found the job by its comment")
    assert [t.state for t in collect_status(run)[0].tasks] == ["PENDING"]


def test_sbatch_timeout_after_queueing_is_recovered(run: Run, unclear_slurm: dict[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_mod, "COMMAND_TIMEOUT", 1)
    unclear_slurm["answer"].write_text("hang")
    assert SlurmExecutor().submit(run, {"a": [0]})
    submission = run.read()["jobs"]["a"]["submissions"][0]
    assert submission["job_id"] == "41"
    assert submission["note"].startswith(f"sbatch did not answer within 1s for {run.dir}/a/")


def test_a_lost_answer_stays_recorded_and_status_finds_the_job_later(
        run: Run, unclear_slurm: dict[str, Path]) -> None:
    """No job with the token yet: submit fails and cancels what it queued, but the
    submission stays, and once the job shows up (a slow controller) status shows it."""
    assert SlurmExecutor().submit(run, {"a": [0]})
    unclear_slurm["answer"].write_text("garbage")
    unclear_slurm["lost"].write_text("")
    with pytest.raises(UsageError, match=r"not a job id for .*/grid/job.sh; SLURM lists no job "
                                         r"with comment jobctl:.*/grid:[0-9a-f]{8}, so it was "
                                         r"probably not queued"):
        SlurmExecutor().submit(run, {"grid": [0, 1, 2], "b": [0]})
    assert unclear_slurm["scancel"].exists() is False  # nothing of this call was queued
    token = run.read()["jobs"]["grid"]["submissions"][0]["token"]
    grid = collect_status(run)[1]
    assert {(t.state, t.reason) for t in grid.tasks} == {
        ("UNKNOWN", f"sbatch gave no job id and SLURM lists no job with comment {token}")}
    with unclear_slurm["queue"].open("a") as queue:  # the controller got it after all
        for task in range(3):
            queue.write(f"JobId={50 + task} ArrayJobId=50 ArrayTaskId={task} JobName=x "
                        f"JobState=PENDING Reason=None Comment={token} NodeList=\n")
    grid = collect_status(run)[1]
    assert [(t.state, t.job_id) for t in grid.tasks] == [("PENDING", f"50_{i}") for i in range(3)]
    assert SlurmExecutor().cancel(run, run.read(), ["grid"]) == ["50"]


def test_resubmission_of_some_array_tasks_uses_array_option(run: Run) -> None:
    job = run.read()["jobs"]["grid"]
    assert SlurmExecutor.sbatch_argv(job, [0, 2], ["7"])[5:7] == [
        "--dependency=afterok:7", "--array=0,2%2"]
    assert not any(a.startswith("--array") for a in SlurmExecutor.sbatch_argv(job, [0, 1, 2],
                                                                              []))


def fake_sources(monkeypatch: pytest.MonkeyPatch, live: list[str], done: list[str]) -> None:
    monkeypatch.setattr(slurm_mod, "_scontrol_records", lambda: [parse_record(x) for x in live])
    monkeypatch.setattr(slurm_mod, "_jobcomp_records", lambda: [parse_record(x) for x in done])


def submitted(run: Run, ids: dict[str, str], when: float) -> None:
    def add(record: dict) -> None:
        for name, job_id in ids.items():
            record["jobs"][name]["submissions"].append({
                "executor": "slurm", "job_id": job_id,
                "tasks": list(range(record["jobs"][name]["tasks"])), "submitted": when})
    run.update(add)


def stamp(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when))


def test_state_sources_in_order_of_trust(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    submitted(run, {"a": "10", "grid": "11", "b": "12"}, now)
    write_task_status(run.dir / "a", 0, "COMPLETED", "", exit_code=0)
    status = json.loads((run.dir / "a" / "status" / "0.json").read_text())
    status.update(state="RUNNING", exit_code=None, task=1)
    (run.dir / "grid" / "status" / "1.json").write_text(json.dumps(status))
    fake_sources(monkeypatch, live=[
        f"JobId=10 JobState=RUNNING NodeList=n1 SubmitTime={stamp(now)}",
        f"JobId=21 ArrayJobId=11 ArrayTaskId=1 JobState=CANCELLED ExitCode=0:9 NodeList=n1 "
        f"SubmitTime={stamp(now)}",
    ], done=[
        f"JobId=20 ArrayJobId=11 ArrayTaskId=0 JobState=COMPLETED ExitCode=0:0 NodeList=n1 "
        f"SubmitTime={stamp(now)}",
        f"JobId=22 ArrayJobId=11 ArrayTaskId=2 JobState=FAILED ExitCode=2:0 NodeList=n1 "
        f"SubmitTime={stamp(now - 3600)}",
        f"JobId=12 JobState=CANCELLED ExitCode=0:0 NodeList=(null) SubmitTime={stamp(now)}",
    ])
    states = {j.name: [(t.state, t.exit_code, t.reason, t.job_id) for t in j.tasks]
              for j in collect_status(run)}
    assert states["a"] == [("COMPLETED", 0, None, "10")]  # status file beats live RUNNING
    assert states["grid"] == [
        ("COMPLETED", 0, None, "11_0"),  # from jobcomp after SLURM forgot it
        ("CANCELLED", 0, "signal 9 (SIGKILL)", "11_1"),  # SLURM beats a stale RUNNING file
        ("UNKNOWN", None, "no record in SLURM, jobcomp or status files", "11_2"),  # stale id
    ]
    assert states["b"] == [("CANCELLED", None, "dependency failed (grid)", "12")]


def test_slurm_names_the_cause_of_a_recorded_failure(run: Run,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    submitted(run, {"a": "10"}, now)
    write_task_status(run.dir / "a", 0, "CANCELLED", "", exit_code=143)
    fake_sources(monkeypatch, live=[
        f"JobId=10 JobState=TIMEOUT ExitCode=0:15 NodeList=n1 SubmitTime={stamp(now)}"], done=[])
    state = collect_status(run)[0].tasks[0]
    assert (state.state, state.exit_code, state.reason) == ("TIMEOUT", 143,
                                                            "time limit (00:30:00)")


def test_a_failed_multi_node_task_names_the_node_that_failed_first(
        run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    submitted(run, {"a": "10"}, now)
    write_task_status(run.dir / "a", 0, "FAILED", "", exit_code=137)
    (run.dir / "a" / "logs" / "slurm-10.out").write_text(NODE_DIED)
    fake_sources(monkeypatch, live=[
        f"JobId=10 JobState=FAILED ExitCode=137:0 NodeList=n[1-2] SubmitTime={stamp(now)}"],
        done=[])
    state = collect_status(run)[0].tasks[0]
    assert (state.state, state.exit_code, state.reason) == (
        "FAILED", 137, "exit code 137 (SIGKILL); first failure: node n2 task 1 Killed (srun)")


def test_memory_kill_is_out_of_memory_never_completed(run: Run,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM 22.05 with OverMemoryKill: SIGKILL (status file left RUNNING, by a process that
    is gone), FAILED ExitCode=0:9, and slurmstepd's line in the log."""
    now = time.time()
    submitted(run, {"a": "10", "grid": "11"}, now)
    for name, task in (("a", 0), ("grid", 1)):
        write_task_status(run.dir / name, task, "COMPLETED", "", exit_code=0)
        status = json.loads((run.dir / name / "status" / f"{task}.json").read_text())
        status.update(state="RUNNING", exit_code=None, finished=None, pid=2 ** 22 + 1)
        (run.dir / name / "status" / f"{task}.json").write_text(json.dumps(status))
    (run.dir / "a" / "logs" / "slurm-10.out").write_text("fake clean task 0 starts\n"
                                                         + OVER_MEMORY)
    fake_sources(monkeypatch, live=[
        f"JobId=10 JobState=FAILED Reason=JobLaunchFailure ExitCode=0:9 NodeList=n1 "
        f"SubmitTime={stamp(now)}"], done=[])
    a, grid, b = collect_status(run)
    task = a.tasks[0]
    assert (task.state, task.reason, task.signal) == (  # jobacct_gather's 646041600 bytes
        "OUT_OF_MEMORY", "out of memory: used 616M of --mem=2G", "KILL")
    assert a.state == "OUT_OF_MEMORY"
    killed = grid.tasks[1]  # no SLURM record left, killed on this machine: not RUNNING
    assert (killed.state, killed.exit_code) == ("FAILED", None)
    assert killed.reason.startswith("killed (SIGKILL?)")
    assert grid.state == "FAILED"
    assert grid.reason.startswith("2 CANCELLED, 1 FAILED; task 1: killed (SIGKILL?)")
    assert (b.state, b.reason) == ("CANCELLED", "dependency failed (grid)")


def test_a_cgroup_oom_kill_reports_the_peak_job_sh_recorded(
        run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """cgroup enforcement kills lyricgen only: job.sh records FAILED 137 with the cgroup's
    peak, and the log names the OOM kill without a figure."""
    now = time.time()
    submitted(run, {"a": "10", "grid": "11"}, now)
    write_task_status(run.dir / "a", 0, "FAILED", "", exit_code=137)
    status = json.loads((run.dir / "a" / "status" / "0.json").read_text())
    status.update(peak_rss_bytes=2 ** 31, peak_rss_source="cgroup-v2")
    (run.dir / "a" / "status" / "0.json").write_text(json.dumps(status))
    (run.dir / "a" / "logs" / "slurm-10.out").write_text(
        "slurmstepd: error: Detected 1 oom_kill event in StepId=10.batch.\n")
    fake_sources(monkeypatch, live=[], done=[])
    task = collect_status(run)[0].tasks[0]
    assert (task.state, task.exit_code) == ("OUT_OF_MEMORY", 137)
    assert task.reason == "out of memory: used 2.0G of --mem=2G"
    assert (task.usage.peak_rss_bytes, task.usage.peak_rss_source, task.mem) == (
        2 ** 31, "cgroup-v2", "2G")


def test_a_lost_answer_takes_the_id_job_sh_recorded(run: Run,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM forgot the job (and jobcomp has no comments): the status file still names it."""
    run.update(lambda r: r["jobs"]["a"]["submissions"].append({
        "executor": "slurm", "job_id": None, "token": "jobctl:x/a:0", "tasks": [0],
        "submitted": time.time()}))
    write_task_status(run.dir / "a", 0, "COMPLETED", "", exit_code=0)
    status = json.loads((run.dir / "a" / "status" / "0.json").read_text())
    (run.dir / "a" / "status" / "0.json").write_text(json.dumps({**status, "slurm_job_id": 77}))
    fake_sources(monkeypatch, live=[], done=[])
    task = collect_status(run)[0].tasks[0]
    assert (task.state, task.job_id) == ("COMPLETED", "77")
