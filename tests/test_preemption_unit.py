"""Preemption, fast parts: resources.signal_seconds checks, the #SBATCH lines, job.sh's
SIGUSR1 path under plain bash (fake lyricgen and fake scontrol), the status merge of
PREEMPTED / REQUEUED / requeued tasks, lyricgen.preempt, and the RNN loop stopping on a
signal and resuming to the uninterrupted losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from jobs.errors import InputError
from jobs.executors import ended_state
from jobs.executors.slurm import slurm_task_state
from jobs.manifest import load_pipeline
from jobs.render import render_script
from jobs.resources import time_limit_seconds, warning_seconds
from jobs.spec import JobSpec, Profile, Resources, Task
from kindspec.registry import KINDS
from lyricgen.preempt import EXIT_PREEMPTED, Preempted, StopSignals
from lyricgen.rnn import train as rnn_train
from lyricgen.rnn.config import TrainConfig

torch.set_num_threads(1)
DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"
TRAIN_RNN = "kind: train-rnn\nparams: {data: t.txt}\nresources:\n"

# Stands in for `python -m lyricgen ...`: on SIGUSR1 it exits $FAKE_PREEMPT_EXIT (default 75,
# like lyricgen after its checkpoint); with $FAKE_EXIT it exits at once.
FAKE_LYRICGEN = """#!/usr/bin/env bash
if [[ -n "${FAKE_EXIT:-}" ]]; then exit "$FAKE_EXIT"; fi
trap 'echo USR1 >>"$FAKE_OUT/got"; exit "${FAKE_PREEMPT_EXIT:-75}"' USR1
echo "$$" >"$FAKE_OUT/pid.tmp" && mv "$FAKE_OUT/pid.tmp" "$FAKE_OUT/pid"
sleep 60 &
wait $!
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
echo "$@" >>"$FAKE_OUT/scontrol"
if [[ -n "${FAKE_SCONTROL_FAIL:-}" ]]; then echo "$FAKE_SCONTROL_FAIL" >&2; exit 1; fi
"""


def spec(kind: str = "train-rnn", **resources: object) -> JobSpec:
    res = Resources(**{"cpus": 1, "mem": "2G", "time": "04:00:00", **resources})
    return JobSpec(name="train", kind=kind, profile="p", needs=(), resources=res,
                   tasks=(Task(0, {}),))


def header(job: JobSpec) -> list[str]:
    text = render_script(job, Profile(name="p", python="/usr/bin/python3"),
                         job_dir=Path("/r/run/train"), project_dir=Path("/r"))
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


# --- resources and header ----------------------------------------------------------------

def load_error(tmp_path: Path, text: str) -> InputError:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_pipeline(path, base_dir=tmp_path)
    return info.value


@pytest.mark.parametrize(("resources", "key", "fragment"), [
    ("  signal_seconds: 600\n  time: '00:10:00'\n", "resources.signal_seconds",
     "600 s must be less than the time limit (00:10:00 = 600 s)"),
    ("  signal_seconds: 70000\n", "resources.signal_seconds", "must be <= 65535"),
    ("  signal_seconds: -1\n", "resources.signal_seconds", "must be >= 0"),
    ("  signal_seconds: soon\n", "resources.signal_seconds", "expected an integer"),
    ("  extra: {signal: 'B:USR1@60'}\n", "resources.extra.signal",
     "use resources.signal_seconds instead of --signal"),
    ("  extra: {no-requeue: ''}\n", "resources.extra.no-requeue", "jobctl sets --no-requeue"),
])
def test_bad_signal_settings_are_one_line_errors(tmp_path, resources, key, fragment):
    error = load_error(tmp_path, TRAIN_RNN + resources)
    assert "\n" not in str(error) and str(error).startswith(f"{tmp_path / 'm.yaml'}:")
    assert error.key == key and fragment in error.message, str(error)


def test_signal_seconds_only_for_kinds_that_checkpoint(tmp_path):
    error = load_error(tmp_path, "kind: clean\nparams: {input: x.txt}\n"
                                 "resources: {signal_seconds: 60}\n")
    assert error.key == "resources.signal_seconds" and error.line == 3
    assert "kind clean does not checkpoint" in error.message
    assert "train-rnn, finetune-llama" in error.message


def test_warning_time_defaults_to_300s_at_most_a_tenth_of_the_limit():
    rnn = KINDS["train-rnn"]
    assert [time_limit_seconds(t) for t in ("30", "1:30", "02:00:00", "1-00", "1-2:3:4")] == \
        [1800, 90, 7200, 86400, 93784]
    assert warning_seconds(Resources(time="04:00:00"), rnn) == 300
    assert warning_seconds(Resources(time="00:10:00"), rnn) == 60
    assert warning_seconds(Resources(time="04:00:00", signal_seconds=900), rnn) == 900
    assert warning_seconds(Resources(time="04:00:00", signal_seconds=0), rnn) == 0
    assert warning_seconds(Resources(time="04:00:00"), KINDS["clean"]) == 0
    assert [k for k, kind in KINDS.items() if kind.checkpoints] == ["train-rnn",
                                                                    "finetune-llama"]


def test_header_asks_for_requeue_and_warning_only_for_kinds_that_checkpoint():
    assert header(spec())[-3:] == ["#SBATCH --requeue", "#SBATCH --open-mode=append",
                                   "#SBATCH --signal=B:USR1@300"]
    assert header(spec(signal_seconds=0))[-2:] == ["#SBATCH --requeue",
                                                   "#SBATCH --open-mode=append"]
    clean = header(spec("clean"))
    assert not [line for line in clean if "requeue" in line or "signal" in line]


def test_a_shorter_time_limit_than_the_warning_cannot_be_rendered():
    """`jobctl resubmit --time` changes the limit after signal_seconds was checked."""
    with pytest.raises(ValueError, match="signal_seconds=600 must be less than the time "
                                         "limit"):
        header(spec(time="00:05:00", signal_seconds=600))


# --- job.sh under plain bash -------------------------------------------------------------

@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    fake = tmp_path / "fake-lyricgen"
    fake.write_text(FAKE_LYRICGEN, encoding="utf-8")
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL, encoding="utf-8")
    (bin_dir / "scontrol").chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    return {"fake": fake, "bin": bin_dir, "out": out, "job_dir": tmp_path / "runs/r/train"}


def run_script(paths: dict[str, Path], kind: str = "train-rnn", signal_script: bool = True,
               **env: str) -> tuple[int, dict]:
    """Run job.sh of a `kind` job with the fake lyricgen; SIGUSR1 to job.sh once the fake
    runs (when `signal_script`). Returns (exit code, status file)."""
    text = render_script(spec(kind), Profile(name="p", python=str(paths["fake"])),
                         job_dir=paths["job_dir"], project_dir=paths["out"])
    script = paths["job_dir"] / "job.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(text, encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full_env = {**base, "FAKE_OUT": str(paths["out"]),
                "PATH": f"{paths['bin']}:{os.environ['PATH']}", **env}
    proc = subprocess.Popen(["bash", str(script)], env=full_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if signal_script and "FAKE_EXIT" not in env:
        deadline = time.monotonic() + 30
        while not (paths["out"] / "pid").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "fake never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGUSR1)
    code = proc.wait(timeout=30)
    status = json.loads((paths["job_dir"] / "status/0.json").read_text(encoding="utf-8"))
    return code, status


def test_usr1_without_slurm_records_preempted_with_exit_75(setup):
    code, status = run_script(setup, SLURM_JOB_ID="local-77")
    assert code == EXIT_PREEMPTED
    assert (status["state"], status["exit_code"], status["signal"]) == ("PREEMPTED", 75, "USR1")
    assert status["reason"] == ("stopped by SIGUSR1, checkpoint saved; not under SLURM, so not "
                                "requeued: jobctl resubmit --failed resumes it")
    assert (setup["out"] / "got").read_text() == "USR1\n"  # forwarded to lyricgen
    assert not (setup["out"] / "scontrol").exists()


def test_usr1_under_slurm_requeues_the_job_itself(setup):
    code, status = run_script(setup, SLURM_JOB_ID="4242", SLURM_ARRAY_JOB_ID="4240")
    assert (setup["out"] / "scontrol").read_text() == "requeue 4242\n"  # the task's own id
    assert (status["state"], status["exit_code"], status["requeues"]) == ("REQUEUED", 75, 0)
    assert status["reason"] == "stopped by SIGUSR1, checkpoint saved; requeued (scontrol requeue)"
    assert code == EXIT_PREEMPTED


def test_a_failed_requeue_is_recorded_as_preempted_with_slurms_words(setup):
    code, status = run_script(setup, SLURM_JOB_ID="4242",
                              FAKE_SCONTROL_FAIL='Requeue of "4242" is "disabled" \\ here')
    assert (code, status["state"]) == (75, "PREEMPTED")
    assert status["reason"] == ("stopped by SIGUSR1, checkpoint saved; scontrol requeue "
                                "failed: Requeue of 4242 is disabled  here; jobctl resubmit "
                                "--failed resumes it")


@pytest.mark.parametrize(("child", "state", "expected"), [
    ("0", "COMPLETED", 0),  # finished within the warning time
    ("2", "FAILED", 2),  # bad input: a requeue would fail the same way
    ("1", "REQUEUED", 1),  # e.g. torchrun after forwarding the signal
])
def test_what_lyricgen_answers_to_the_warning_decides(setup, child, state, expected):
    code, status = run_script(setup, SLURM_JOB_ID="9", FAKE_PREEMPT_EXIT=child)
    assert (code, status["state"], status["exit_code"]) == (expected, state, expected)
    if state == "REQUEUED":
        assert status["reason"].startswith("stopped by SIGUSR1 (exit code 1), resumes from its "
                                           "newest checkpoint")


def test_exit_75_without_a_signal_to_the_script_is_a_preemption_too(setup):
    code, status = run_script(setup, SLURM_JOB_ID="local-1", FAKE_EXIT="75")
    assert (code, status["state"], status["signal"]) == (75, "PREEMPTED", None)
    assert status["reason"].startswith("lyricgen stopped on a signal and saved a checkpoint")


def test_a_requeued_run_counts_its_restarts_and_other_kinds_are_cancelled(setup):
    code, status = run_script(setup, SLURM_JOB_ID="9", SLURM_RESTART_COUNT="2", FAKE_EXIT="0")
    assert (code, status["state"], status["requeues"], status["reason"]) == (0, "COMPLETED", 2,
                                                                              None)
    code, status = run_script(setup, kind="clean", SLURM_JOB_ID="9")
    assert (code, status["state"], status["signal"]) == (128 + 10, "CANCELLED", "USR1")


# --- status merge --------------------------------------------------------------------------

def test_status_reasons_for_preempted_and_requeued_tasks():
    preempted = {"state": "PREEMPTED", "exit_code": 75, "signal": "USR1", "requeues": 0,
                 "reason": "stopped by SIGUSR1, checkpoint saved; not under SLURM"}
    assert ended_state(preempted, 0, "local-1").reason == preempted["reason"]
    done = {"state": "COMPLETED", "exit_code": 0, "signal": None, "reason": None, "requeues": 1}
    assert ended_state(done, 0, "7").reason == "requeued 1x"
    old = {"state": "COMPLETED", "exit_code": 0, "signal": None}  # schema 1: no requeues key
    assert ended_state(old, 0, "7").reason is None
    waiting = slurm_task_state({"JobId": "7", "JobState": "PENDING", "Reason": "BeginTime",
                                "Restarts": "1", "NodeList": "(null)"}, 0, "7")
    assert (waiting.state, waiting.reason) == ("PENDING", "BeginTime; requeued 1x")


# --- lyricgen side -----------------------------------------------------------------------

def test_stop_signals_only_set_a_flag_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "USR1"  # the first signal wins
    assert signal.getsignal(signal.SIGUSR1) is before
    error = Preempted("train-rnn", "USR1", 12, "/x/last.pt")
    assert error.exit_code == 75 and "after step 12" in str(error) and "\n" not in str(error)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("disco")
    (folder / "train.txt").write_text((DISCO / "train.txt").read_text("utf-8")[:2500], "utf-8")
    (folder / "valid.txt").write_text((DISCO / "valid.txt").read_text("utf-8")[:600], "utf-8")
    return str(folder / "train.txt"), str(folder / "valid.txt")


class SignalledTrainer(rnn_train.Trainer):
    """Sends itself SIGUSR1 during step `at` (as job.sh would forward it)."""

    at = 7

    def _train_step(self, forward, inputs, targets):
        if self.state.step + 1 == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super()._train_step(forward, inputs, targets)


def test_rnn_stops_after_the_signalled_step_and_resumes_to_the_same_losses(corpus, tmp_path):
    config = TrainConfig.from_params(dict(
        data=corpus[0], valid_data=corpus[1], device="cpu", arch="gru", hidden_size=16,
        embedding_dim=8, batch_size=4, seq_len=16, epochs=1, warmup_steps=3, checkpoint_every=0,
        log_every=1, eval_every=15))
    whole = rnn_train.Trainer(config, tmp_path / "a", progress_bar=False).fit()
    first = SignalledTrainer(config, tmp_path / "b", progress_bar=False)
    stopped = first.fit()
    assert stopped.metrics["stop_reason"] == "preempted" and first.stop_signal == "USR1"
    assert len(stopped.step_losses) == SignalledTrainer.at  # the step in flight finished
    rest = rnn_train.Trainer(config, tmp_path / "b", progress_bar=False).fit()
    assert stopped.step_losses + rest.step_losses == whole.step_losses
    assert rest.metrics["final"] == whole.metrics["final"]
    assert rest.metrics["best"] == whole.metrics["best"]


def test_rnn_kind_raises_preempted_after_saving(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(rnn_train, "Trainer", SignalledTrainer)
    params = {"data": corpus[0], "arch": "gru", "hidden_size": 8, "embedding_dim": 4,
              "batch_size": 4, "seq_len": 16, "device": "cpu"}
    ctx = type("Ctx", (), {"out_dir": tmp_path})()
    with pytest.raises(Preempted, match=r"stopped by SIGUSR1 after step 7; checkpoint saved"):
        rnn_train.run(params, ctx)
    assert torch.load(tmp_path / "checkpoint/last.pt", weights_only=True)["step"] == 7
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["stop_reason"] == "preempted" and metrics["final"]["step"] == 7
