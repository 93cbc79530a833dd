"""The run report (jobs.runreport, `jobctl report`): the data it shows equals the status and
metrics files, failed tasks show their log, and, in a real browser (Debian's chromium,
headless, driven by selenium through Debian's chromedriver: nothing is downloaded), the page of
a real demo-sized run loads from file:// without console errors, sorts on a click and renders.

The real run (`demo_run`, module scope, about a minute on 2 cores): clean -> train-rnn (tiny
LSTM, 30 steps) -> generate-grid (a verse scheme beside free text) -> report, all local."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.cli import cli
from jobs.runreport import write_run_report
from jobs.runreport.grids import grid_summaries
from jobs.runreport.page import render_run_report
from jobs.runreport.tasks import run_view
from jobs.runreport.training import TrainingRow, differing_params, mark_best, training_rows
from jobs.state import Run, find_run
from jobs.taskstatus import TaskUsage

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def jobctl(*args: str) -> str:
    """jobctl's stdout (exit code 0, or 1 for a run with a failed job)."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    return result.stdout


def status_of(run: Run, job: str, task: int = 0) -> dict:
    return json.loads((run.dir / job / "status" / f"{task}.json").read_text())


# --- a run of fake jobs: tasks, usage, failures ------------------------------------------

FAKE_PIPELINE = """\
jobs:
  - {kind: clean, name: prep, params: {input: ok.txt}, resources: {mem: 100M}}
  - {kind: clean, name: sweep, needs: [prep], params: {input: sweep.txt},
     matrix: {seed: [1, 2]}}
  - {kind: clean, name: after, needs: [sweep], params: {input: ok.txt}}
"""


@pytest.fixture
def fake_run(tmp_path: Path, fake_profile: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """prep holds 120 MiB with --mem=100M, sweep[1] fails with exit 3, after never runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.txt").write_text("alloc 120\n")
    (tmp_path / "sweep.txt").write_text("fail-seeds 2 3\n")
    (tmp_path / "p.yaml").write_text(f"profile: {fake_profile}\n{FAKE_PIPELINE}")
    output = jobctl("run", "p.yaml")
    run = find_run(tmp_path / "runs", None)
    assert f"run report: {run.dir / 'report.html'}" in output
    return run


def test_tasks_show_what_the_status_files_say(fake_run: Run) -> None:
    view = run_view(fake_run)
    rows = {row.name: row for row in view.tasks}
    assert list(rows) == ["prep", "sweep[0]", "sweep[1]", "after"]
    for name, job, task in (("prep", "prep", 0), ("sweep[0]", "sweep", 0),
                            ("sweep[1]", "sweep", 1)):
        status = status_of(fake_run, job, task)
        assert rows[name].usage == TaskUsage.from_status(status)
        assert (rows[name].state, rows[name].exit_code) == (status["state"], status["exit_code"])
        assert rows[name].attempts[-1].started == status["started"]
    prep = rows["prep"]
    assert prep.mem == "100M" and prep.usage.peak_rss_bytes >= 120 << 20
    assert prep.usage.peak_rss_source == "rusage" and prep.log_tail is None
    failed = rows["sweep[1]"]
    assert failed.reason == "exit code 3" and failed.label == "seed=2"
    assert "fake failure 3" in failed.log_tail and failed.log_path.endswith("local-1.out")
    after = rows["after"]
    assert (after.state, after.reason, after.attempts[-1].started) == (
        "CANCELLED", "dependency failed (sweep)", None)
    assert [(job.name, job.layer) for job in view.jobs] == [("prep", 0), ("sweep", 1),
                                                           ("after", 2)]
    assert not view.active and view.start <= prep.attempts[-1].started <= view.end


def test_the_page_shows_them_escaped_and_self_contained(fake_run: Run) -> None:
    page = (fake_run.dir / "report.html").read_text()
    assert "fake failure 3" in page and "exit code 3" in page and "dependency failed" in page
    assert 'id="job-sweep"' in page and 'href="#job-sweep"' in page
    for needle in ("http://", "https://", "<link", "src=\"http", "@import"):
        assert needle not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script>" in page and "table.sortable" in page  # script and styles inline
    assert "Training" not in page  # no training task: no section


def test_a_failure_for_memory_says_used_of_asked(fake_run: Run) -> None:
    """Locally nothing enforces --mem; a task that failed after reaching it says so."""
    status = status_of(fake_run, "sweep", 1)
    (fake_run.dir / "sweep" / "status" / "1.json").write_text(json.dumps(
        {**status, "exit_code": 137, "peak_rss_bytes": 2 << 30}))
    table = jobctl("status", str(fake_run.dir))
    line = next(line for line in table.splitlines() if line.split()[:2] == ["sweep", "1"])
    assert "2.0G/2G" in line and "exit code 137 (SIGKILL); used 2.0G of --mem=2G" in line
    data = json.loads(jobctl("status", "--json", str(fake_run.dir)))
    task = data["jobs"][1]["tasks"][1]
    assert task["usage"]["peak_rss_bytes"] == 2 << 30 and task["mem"] == "2G"
    assert task["usage"]["wall_s"] == status["wall_s"]


def test_status_writes_nothing_and_report_rewrites_on_demand(fake_run: Run,
                                                             tmp_path: Path) -> None:
    page = fake_run.dir / "report.html"
    page.unlink()
    jobctl("status", str(fake_run.dir))
    assert not page.exists()
    out = tmp_path / "elsewhere" / "r.html"
    assert jobctl("report", fake_run.id, "--out", str(out), "--runs-dir",
                  str(fake_run.dir.parent)).strip() == str(out)
    assert "fake failure 3" in out.read_text()
    (tmp_path / "file").write_text("")
    refused = CliRunner().invoke(cli, ["report", str(fake_run.dir), "--out",
                                       str(tmp_path / "file" / "r.html")])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert "cannot write the report" in refused.output


def test_a_resubmitted_task_keeps_its_earlier_attempt_on_the_timeline(fake_run: Run) -> None:
    (fake_run.dir.parent.parent / "sweep.txt").write_text("")
    output = jobctl("resubmit", "--failed", str(fake_run.dir))
    assert "run report:" in output
    row = next(row for row in run_view(fake_run).tasks if row.name == "sweep[1]")
    assert [(a.state, a.current) for a in row.attempts] == [("FAILED", False),
                                                            ("COMPLETED", True)]
    assert row.attempts[0].finished <= row.attempts[1].started
    assert 'class="tl-run s-FAILED earlier"' in (fake_run.dir / "report.html").read_text()


def test_params_that_differ_and_the_best_row(fake_run: Run) -> None:
    view = run_view(fake_run)
    task = view.tasks[0]
    rows = [TrainingRow(task, {"arch": "gru", "lr": 0.01, "data": "x"}, bpc=2.1),
            TrainingRow(task, {"arch": "lstm", "lr": 0.01, "data": "x"}, bpc=1.9),
            TrainingRow(task, {"arch": "rnn", "data": "x"})]
    assert differing_params(rows) == ["arch", "lr"]  # a missing lr differs too
    assert [row.best for row in mark_best(rows)] == [False, True, False]
    by_ppl = [TrainingRow(task, {}, ppl=9.0), TrainingRow(task, {}, ppl=7.5)]
    assert [row.best for row in mark_best(by_ppl)] == [False, True]


TRAINING_PIPELINE = """\
jobs:
  - {kind: train-rnn, name: rnn, params: {data: ok.txt}, matrix: {arch: [gru, lstm]}}
  - {kind: finetune-llama, name: llama, params: {model_path: base, data_path: ok.txt}}
"""


def test_training_rows_of_both_kinds_from_their_metrics_files(
        tmp_path: Path, fake_profile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics files as train-rnn and finetune-llama write them (jobs only reads them), in
    the out dirs of a run that was only planned (`submit --dry-run`)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.txt").write_text("")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "t.yaml").write_text(f"profile: {fake_profile}\n{TRAINING_PIPELINE}")
    jobctl("submit", "--dry-run", "t.yaml")
    run = find_run(tmp_path / "runs", None)
    for task, (bpc, ppl) in enumerate([(2.5, 5.6), (2.25, 4.8)]):
        out = run.dir / "rnn" / "out" / str(task)
        out.mkdir()
        (out / "metrics.json").write_text(json.dumps({
            "best": {"step": 20, "bpc": bpc, "ppl": ppl}, "stop_reason": "epochs",
            "final": {"step": 40, "epoch": 2.0, "train_loss": 1.5},
            "elapsed_s": 12.5, "tokens_per_s_median": 900.0, "parameters": 1234}))
        (out / "metrics.csv").write_text(
            "step,epoch,train_loss,lr,tokens_per_s,val_bpc,val_ppl,elapsed\n"
            f"10,0.5,2.0,0.01,800,,,1.0\n20,1.0,,,,{bpc},{ppl},2.0\n")
    (run.dir / "llama" / "out" / "metrics.json").write_text(json.dumps({
        "steps": 3, "final_loss": 2.0, "tokens_per_second": 150.5, "run_seconds": 30.0,
        "history": [{"step": 1, "epoch": 0.5, "loss": 3.0, "valid_loss": None},
                    {"step": 3, "epoch": 1.5, "loss": 2.0, "valid_loss": 2.2,
                     "valid_ppl": 9.03, "valid_bpc": 2.0}]}))
    rows = training_rows(run_view(run))
    assert [(r.task.name, r.bpc, r.ppl, r.unit, r.best) for r in rows] == [
        ("rnn[0]", 2.5, 5.6, "char", False), ("rnn[1]", 2.25, 4.8, "char", False),
        ("llama", 2.0, 9.03, "token", True)]
    gru, _, llama = rows
    assert (gru.steps, gru.epochs, gru.seconds, gru.tokens_per_s, gru.parameters) == (
        40, 2.0, 12.5, 900.0, 1234)
    assert gru.valid == ([20.0], [2.5]) and gru.train == ([10.0], [2.0])
    assert (llama.steps, llama.epochs, llama.seconds, llama.tokens_per_s) == (3, 1.5, 30.0,
                                                                              150.5)
    assert llama.valid == ([3.0], [2.0]) and llama.train == ([1.0, 3.0], [3.0, 2.0])
    assert "arch" in differing_params(rows) and "model_path" in differing_params(rows)
    page = render_run_report(run, run.dir)
    assert "★ llama" in page and "held-out bits per character" in page


# --- a real demo-sized run ---------------------------------------------------------------

DEMO = """\
name: report-demo
profile: laptop
jobs:
  - kind: clean
    name: clean
    resources: {{cpus: 1, mem: 1G, time: "00:05:00"}}
    params: {{input: {songs}, valid_fraction: 0.2, test_fraction: 0.05}}
  - kind: train-rnn
    name: train
    needs: [clean]
    resources: {{cpus: 1, mem: 2G, time: "00:10:00"}}
    params:
      data: "{{{{ needs.clean.outputs.train }}}}"
      valid_data: "{{{{ needs.clean.outputs.valid }}}}"
      hidden_size: 32
      embedding_dim: 16
      seq_len: 32
      batch_size: 4
      max_steps: 30
      eval_every: 10
      log_every: 5
      warmup_steps: 5
      device: cpu
  - kind: generate-grid
    name: generate
    needs: [train]
    resources: {{cpus: 1, mem: 2G, time: "00:10:00"}}
    params:
      model: "{{{{ needs.train.outputs.checkpoint }}}}"
      prompts: ["Bajo la luna", "Mi <corazón>"]
      temperatures: [0.7, 1.0]
      samples: 1
      max_tokens: 30
      scheme: "ABAB"
      syllables: 8
      candidates: 2
      compare_free: true
      batch_size: 8
      device: cpu
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("demo")
    (base / "demo.yaml").write_text(DEMO.format(
        songs=REPO / "lyricgen/data/sample/songs.jsonl"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)  # the laptop profile's cache_dir is relative
        output = jobctl("run", "demo.yaml", "--runs-dir", str(base / "runs"))
    run = find_run(base / "runs", None)
    assert "run report:" in output and (run.dir / "report.html").is_file(), output
    yield run


@pytest.mark.slow
def test_training_numbers_equal_the_metrics_files(demo_run: Run) -> None:
    (row,) = training_rows(run_view(demo_run))
    out = demo_run.dir / "train" / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert (row.bpc, row.ppl) == (metrics["best"]["bpc"], metrics["best"]["ppl"])
    assert row.tokens_per_s == metrics["tokens_per_s_median"]
    assert (row.steps, row.epochs) == (metrics["final"]["step"], metrics["final"]["epoch"])
    assert (row.seconds, row.stop_reason) == (metrics["elapsed_s"], "max_steps")
    assert row.best and row.unit == "char" and row.params["hidden_size"] == 32
    with (out / "metrics.csv").open() as handle:
        validations = [r for r in csv.DictReader(handle) if r["val_bpc"]]
    assert row.valid == ([float(r["step"]) for r in validations],
                         [float(r["val_bpc"]) for r in validations])
    assert len(row.train[0]) == 30 // 5


@pytest.mark.slow
def test_grid_numbers_equal_grid_json(demo_run: Run) -> None:
    (grid,) = grid_summaries(run_view(demo_run))
    data = json.loads((demo_run.dir / "generate" / "out" / "grid.json").read_text())
    assert list(grid.rows) == data["aggregates"]["by_temperature"]
    assert grid.model_job == "train" and grid.scheme == "ABAB" and grid.syllables == 8
    assert grid.metrics[-2:] == ("scheme_share", "meter_share")
    assert grid.report == demo_run.dir / "generate" / "out" / "report.html"
    assert [prompt for prompt, _ in grid.samples] == ["Bajo la luna", "Mi <corazón>"]
    assert grid.columns == (("verse", 0.7), ("verse", 1.0), ("free", 0.7), ("free", 1.0))


@pytest.mark.slow
def test_shards_without_a_report_job_pool_their_cells(demo_run: Run, tmp_path: Path) -> None:
    """The same cells in two shard files give the merged grid's means."""
    grid = json.loads((demo_run.dir / "generate" / "out" / "grid.json").read_text())
    copy = tmp_path / "run"
    shutil.copytree(demo_run.dir, copy)
    out = copy / "generate" / "out"
    (out / "grid.json").unlink()
    (out / "report.html").unlink()
    for shard in (0, 1):
        cells = grid["cells"][shard::2]
        (out / str(shard)).mkdir()
        (out / str(shard) / "grid.json").write_text(json.dumps({**grid, "cells": cells}))
    record = json.loads((copy / "run.json").read_text())
    for job in record["jobs"].values():
        job.update({k: job[k].replace(str(demo_run.dir), str(copy))
                    for k in ("job_dir", "out_dir")})
    (copy / "run.json").write_text(json.dumps(record))
    (pooled,) = grid_summaries(run_view(Run(copy)))
    assert pooled.report is None
    for row, expected in zip(pooled.rows, grid["aggregates"]["by_temperature"], strict=True):
        assert (row["mode"], row["temperature"], row["cells"]) == (
            expected["mode"], expected["temperature"], expected["cells"])
        assert row["mean"] == pytest.approx(expected["mean"])


@pytest.mark.slow
def test_demo_page_holds_the_numbers_and_escapes_the_prompt(demo_run: Run) -> None:
    page = render_run_report(demo_run, demo_run.dir)
    metrics = json.loads((demo_run.dir / "train" / "out" / "metrics.json").read_text())
    assert f"{metrics['best']['bpc']:.4f}" in page and "★ train" in page
    assert "Mi &lt;corazón&gt;" in page and "Mi <corazón>" not in page
    assert 'href="generate/out/report.html"' in page
    assert "held-out bits per character" in page  # the learning curves' SVG


# --- in a real browser --------------------------------------------------------------------

def browser_skip_reason() -> str | None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return "Debian chromium and chromium-driver are not installed (.ci/run installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    reason = browser_skip_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must never download
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def column(driver: object, table: str, index: int, sort_key: bool = False) -> list[str]:
    """The cells of a column of a table on the page, in row order: text, or data-sort."""
    return driver.execute_script(textwrap.dedent("""
        return Array.from(document.querySelectorAll(arguments[0] + " tbody tr")).map(row =>
            arguments[2] ? row.cells[arguments[1]].dataset.sort
                         : row.cells[arguments[1]].textContent.trim());"""),
        f"#{table}", index, sort_key)


@pytest.mark.slow
def test_the_page_loads_sorts_and_renders_in_chromium(demo_run: Run, browser: object,
                                                      tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By

    page = write_run_report(demo_run)
    browser.get(page.as_uri())
    problems = [entry for entry in browser.get_log("browser") if entry["level"] != "INFO"]
    assert problems == []
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Run {demo_run.id}"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.dag a")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, ".tl-track .tl-run")) == 3

    header = browser.find_element(By.CSS_SELECTOR, "#tasks-table thead th:nth-child(6)")
    assert header.text.startswith("elapsed")
    header.click()
    elapsed = [float(v) for v in column(browser, "tasks-table", 5, sort_key=True)]
    assert elapsed == sorted(elapsed) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    descending = [float(v) for v in column(browser, "tasks-table", 5, sort_key=True)]
    assert descending == sorted(elapsed, reverse=True)

    temperature = browser.find_element(By.CSS_SELECTOR,
                                       "#generation-table thead th:nth-child(4)")
    temperature.click()
    assert column(browser, "generation-table", 3) == ["0.7", "0.7", "1.0", "1.0"]
    assert browser.find_elements(By.CSS_SELECTOR, "#training-table tr.best")
    assert browser.get_log("browser") == []

    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, boxes, bars: not blank
