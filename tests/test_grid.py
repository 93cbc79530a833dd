"""generate-grid and report kinds with a deterministic fake generator: params checks, cells,
files, escaping, sharding + merge, resume; and model-path dispatch."""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bigram_lines import BigramLines

import lyricgen.grid as grid_mod
from lyricgen import grid_report
from lyricgen.context import RunContext
from lyricgen.errors import LyricgenInputError
from lyricgen.generation import TextGenerator, model_kind_of
from lyricgen.grid import GridSpec, grid_cells, merge_grids, task_batches
from lyricgen.verse.lexicon import EMBEDDED_VERSE

WORDS = ("luna", "cuna", "camino", "destino", "boca", "sola", "amor", "corazón", "canción",
         "mar", "noche", "cielo", "suelo", "vida", "herida")


class FakeGenerator:
    """Deterministic: a row's text depends on (seed, row position, prompt, temperature)."""

    model_kind = "rnn"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def generate(self, prompts: list[str], temperatures: list[float], *, max_tokens: int,
                 top_k: int | None = None, top_p: float | None = None,
                 seed: int = 42) -> list[str]:
        self.calls.append({"rows": len(prompts), "seed": seed, "top_k": top_k, "top_p": top_p,
                           "max_tokens": max_tokens})
        texts = []
        for row, (prompt, temperature) in enumerate(zip(prompts, temperatures, strict=True)):
            rng = random.Random(f"{seed}|{row}|{prompt}|{temperature}")
            lines = [" ".join(rng.choice(WORDS) for _ in range(4)) for _ in range(6)]
            texts.append("\n" + "\n".join(lines) + "\n<b>&</b>")
        return texts

    def line_model(self) -> BigramLines:
        return bigram_of_embedded_verse()


@functools.lru_cache(maxsize=1)
def bigram_of_embedded_verse() -> BigramLines:
    return BigramLines(EMBEDDED_VERSE.read_text(encoding="utf-8"))


class ExplodingGenerator:
    model_kind = "rnn"

    def generate(self, *args: Any, **kwargs: Any) -> list[str]:
        raise AssertionError("no batch should be generated again")


PROMPTS = ["Bajo la luna", "<script>alert('x')</script>", "Mi corazón"]


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    """Looks like a train-rnn out dir (the fake generator replaces loading)."""
    (tmp_path / "model" / "checkpoint").mkdir(parents=True)
    (tmp_path / "model" / "checkpoint" / "last.pt").write_bytes(b"x")
    return tmp_path / "model"


def _params(model_dir: Path, **overrides: Any) -> dict[str, Any]:
    params = {"model": str(model_dir), "prompts": PROMPTS, "temperatures": [0.5, 1.0],
              "top_p": 0.9, "top_k": 0, "max_tokens": 50, "samples": 2, "seed": 7,
              "shards": 1, "batch_size": 5, "device": "cpu"}
    return {**params, **overrides}


def _run(params: dict[str, Any], out: Path, generator: Any, monkeypatch: pytest.MonkeyPatch,
         task: int = 0, count: int = 1) -> dict[str, Any]:
    monkeypatch.setattr(grid_mod, "load_generator", lambda path, device: generator)
    ctx = RunContext(kind="generate-grid", out_dir=out, task_index=task, task_count=count)
    out.mkdir(parents=True, exist_ok=True)
    return grid_mod.run(params, ctx)


def test_fake_generator_satisfies_protocol() -> None:
    assert isinstance(FakeGenerator(), TextGenerator)


@pytest.mark.parametrize(("override", "key"), [
    ({"temperatures": [0.5, -1.0]}, "params.temperatures[1]"),
    ({"temperatures": [0.5, 0.5]}, "params.temperatures[1]"),
    ({"temperatures": "hot"}, "params.temperatures"),
    ({"prompts": []}, "params.prompts"),
    ({"prompts": ["ok", 3]}, "params.prompts[1]"),
    ({"top_p": 0}, "params.top_p"),
    ({"top_k": -2}, "params.top_k"),
    ({"samples": 0}, "params.samples"),
    ({"batch_size": True}, "params.batch_size"),
    ({"device": "tpu"}, "params.device"),
    ({"temprature": 1}, "params.temprature"),
])
def test_bad_params_name_their_key(model_dir: Path, override: dict[str, Any], key: str) -> None:
    with pytest.raises(LyricgenInputError) as info:
        GridSpec.from_params(_params(model_dir, **override))
    assert str(info.value).startswith(key.replace("params.", "params: ") + ":")
    assert "\n" not in str(info.value)


def test_cells_and_batches_cover_everything_once(model_dir: Path) -> None:
    spec = GridSpec.from_params(_params(model_dir))
    cells = grid_cells(spec)
    assert [c.index for c in cells] == list(range(12))
    assert (cells[7].prompt_index, cells[7].temperature_index, cells[7].sample) == (1, 1, 1)
    assert cells[7].file == "cells/p1_t1.0_s1.txt"
    shards = [task_batches(12, 5, t, 2) for t in range(2)]
    assert shards == [[0, 2], [1]]
    covered = sorted(c for b in shards[0] + shards[1] for c in range(b * 5, min(b * 5 + 5, 12)))
    assert covered == list(range(12))
    assert task_batches(12, 64, 1, 2) == []


def test_grid_end_to_end(model_dir: Path, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGenerator()
    out = tmp_path / "out"
    summary = _run(_params(model_dir), out, fake, monkeypatch)
    assert summary["cells"] == 12 and summary["model_kind"] == "rnn"
    assert [c["rows"] for c in fake.calls] == [5, 5, 2]
    assert [c["seed"] for c in fake.calls] == [7, 8, 9]
    assert fake.calls[0]["top_k"] is None and fake.calls[0]["top_p"] == 0.9
    grid = json.loads((out / "grid.json").read_text("utf-8"))
    assert grid["params"]["seed"] == 7 and grid["model"] == {"path": str(model_dir),
                                                             "kind": "rnn"}
    assert [c["cell"] for c in grid["cells"]] == list(range(12))
    for cell in grid["cells"]:
        text = (out / cell["file"]).read_text("utf-8")
        assert text == cell["prompt"] + cell["text"]
        assert cell["metrics"]["lines"] == 7 and cell["metrics"]["words"] == 26
    assert len(list((out / "cells").iterdir())) == 12
    temps = [row["temperature"] for row in grid["aggregates"]["by_temperature"]]
    assert temps == [0.5, 1.0]
    assert all(row["cells"] == 6 for row in grid["aggregates"]["by_temperature"])
    assert (out / "metrics_by_temperature.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text("utf-8")
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#39;x&#39;)" in html
    assert "<b>&</b>" not in html and "&lt;b&gt;&amp;&lt;/b&gt;" in html
    assert html.count('class="sample"') == 12
    assert "data:image/png;base64," in html
    assert json.loads((out / "metrics.json").read_text("utf-8"))["cells"] == 12


def test_same_seed_same_grid_other_seed_other_texts(model_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    first = _run(_params(model_dir), tmp_path / "a", FakeGenerator(), monkeypatch)
    second = _run(_params(model_dir), tmp_path / "b", FakeGenerator(), monkeypatch)
    assert first["cells"] == second["cells"]
    a, b, c = ((tmp_path / d / "grid.json").read_text("utf-8") for d in ("a", "b", "a"))
    assert a == b == c
    _run(_params(model_dir, seed=8), tmp_path / "c", FakeGenerator(), monkeypatch)
    other = json.loads((tmp_path / "c" / "grid.json").read_text("utf-8"))
    assert [x["text"] for x in other["cells"]] != [x["text"] for x in json.loads(a)["cells"]]


def test_two_shards_merge_to_the_single_task_grid(model_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    params = _params(model_dir, shards=2)
    _run(params, tmp_path / "single", FakeGenerator(), monkeypatch)
    job_out = tmp_path / "sharded"
    for task in range(2):
        _run(params, job_out / str(task), FakeGenerator(), monkeypatch, task=task, count=2)
    parts = [json.loads((job_out / str(t) / "grid.json").read_text("utf-8")) for t in range(2)]
    assert sorted(c["cell"] for p in parts for c in p["cells"]) == list(range(12))
    assert not (job_out / "0" / "report.html").exists()

    merged_out = tmp_path / "report"
    merged_out.mkdir()
    summary = grid_report.run({"grid": str(job_out)}, RunContext(kind="report", out_dir=merged_out))
    assert summary == {"shards": 2, "cells": 12}
    single = tmp_path / "single"
    assert (json.loads((merged_out / "grid.json").read_text("utf-8"))
            == json.loads((single / "grid.json").read_text("utf-8")))
    assert (merged_out / "report.html").read_bytes() == (single / "report.html").read_bytes()
    for cell in parts[0]["cells"] + parts[1]["cells"]:
        assert (merged_out / cell["file"]).read_text("utf-8") == cell["prompt"] + cell["text"]


def test_report_refuses_incomplete_shards(model_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    job_out = tmp_path / "sharded"
    _run(_params(model_dir), job_out / "0", FakeGenerator(), monkeypatch, task=0, count=2)
    ctx = RunContext(kind="report", out_dir=tmp_path / "r")
    with pytest.raises(LyricgenInputError, match=r"expected shards 0\.\.1, found \[0\]"):
        grid_report.run({"grid": str(job_out)}, ctx)
    with pytest.raises(LyricgenInputError, match="nowhere: does not exist"):
        grid_report.run({"grid": str(tmp_path / "nowhere")}, ctx)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(LyricgenInputError, match="no grid.json"):
        grid_report.run({"grid": str(tmp_path / "nothing")}, ctx)
    (tmp_path / "bad.json").write_text("{", "utf-8")
    with pytest.raises(LyricgenInputError, match="not valid JSON"):
        grid_report.run({"grid": str(tmp_path / "bad.json")}, ctx)
    grid = json.loads((job_out / "0" / "grid.json").read_text("utf-8"))
    with pytest.raises(LyricgenInputError, match="different params"):
        merge_grids([grid, {**grid, "seed": 1}], job_out)


def test_resume_reuses_finished_batches(model_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    _run(_params(model_dir), out, FakeGenerator(), monkeypatch)
    before = (out / "grid.json").read_text("utf-8")
    # a kill mid-append leaves a partial last line: it is dropped, the batches before it kept
    with open(out / "progress.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"fingerprint": "tru')
    _run(_params(model_dir), out, ExplodingGenerator(), monkeypatch)
    assert (out / "grid.json").read_text("utf-8") == before
    # changed params never reuse old texts
    fresh = FakeGenerator()
    _run(_params(model_dir, max_tokens=51), out, fresh, monkeypatch)
    assert len(fresh.calls) == 3


def test_model_kind_dispatch(tmp_path: Path, model_dir: Path) -> None:
    assert model_kind_of(model_dir) == "rnn"
    assert model_kind_of(model_dir / "checkpoint") == "rnn"
    assert model_kind_of(model_dir / "checkpoint" / "last.pt") == "rnn"
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "adapter_config.json").write_text("{}", "utf-8")
    assert model_kind_of(llama) == "llama"
    with pytest.raises(LyricgenInputError, match="empty: is no model"):
        (tmp_path / "empty").mkdir()
        model_kind_of(tmp_path / "empty")
    with pytest.raises(LyricgenInputError, match="does not exist"):
        model_kind_of(tmp_path / "missing")


# --- with a real tiny char GRU (lyricgen.rnn) -------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
DISCO_VALID = REPO.parent / "shared/corpora/disco/valid.txt"


@pytest.fixture(scope="module")
def tiny_rnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A char GRU trained for 3 steps on real verse (DISCO valid split): a train-rnn out dir."""
    import torch

    from lyricgen.rnn.train import run as train_rnn

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("rnn") / "train"
    params = {"data": str(DISCO_VALID), "arch": "gru", "hidden_size": 32, "embedding_dim": 16,
              "batch_size": 8, "seq_len": 32, "max_steps": 3, "epochs": 1, "warmup_steps": 0,
              "device": "cpu"}
    out.mkdir()
    train_rnn(params, RunContext(kind="train-rnn", out_dir=out))
    return out


@pytest.mark.slow
def test_a_bpe_rnn_writes_free_text_and_verse(tmp_path: Path) -> None:
    """A subword RNN (3 steps on real verse) through the kind: free cells, and verse whose
    every finished line scans (its tokens are the exact text they cover, as a LLaMA's)."""
    import torch

    from lyricgen.rnn.train import run as train_rnn

    torch.set_num_threads(1)
    model = tmp_path / "bpe"
    model.mkdir()
    train_rnn({"data": str(DISCO_VALID), "level": "bpe", "vocab_size": 300, "arch": "gru",
               "hidden_size": 32, "embedding_dim": 16, "batch_size": 8, "seq_len": 32,
               "max_steps": 3, "epochs": 1, "warmup_steps": 0, "device": "cpu"},
              RunContext(kind="train-rnn", out_dir=model))
    free = _params(model, temperatures=[0.0, 1.0], samples=1, max_tokens=20, batch_size=64)
    summary = grid_mod.run(free, RunContext(kind="generate-grid", out_dir=tmp_path / "free"))
    grid = json.loads((tmp_path / "free" / "grid.json").read_text("utf-8"))
    assert summary["model_kind"] == "rnn" and summary["cells"] == 6
    assert any(c["text"] for c in grid["cells"])
    assert all("<unk>" not in c["text"] for c in grid["cells"])
    verse = _params(model, temperatures=[0.8], samples=1, max_tokens=40, scheme="AA bb",
                    syllables=6, candidates=3, prompts=["Bajo la luna", ""])
    summary = grid_mod.run(verse, RunContext(kind="generate-grid", out_dir=tmp_path / "verse"))
    grid = json.loads((tmp_path / "verse" / "grid.json").read_text("utf-8"))
    forced = summary["verse_lines_forced"]
    for cell in grid["cells"]:
        assert cell["verse"]["counts"]["text_lines"] == 4, cell["text"]
        assert cell["verse"]["counts"]["on_meter"] >= 4 - forced


def _write_config(path: Path, kind: str, out_dir: Path, params: list[dict[str, Any]]) -> Path:
    tasks = [{"index": i, "params": p, "matrix": {}} for i, p in enumerate(params)]
    path.write_text(json.dumps({"schema": 1, "kind": kind, "job": kind, "run_id": "test",
                                "job_dir": str(path.parent), "out_dir": str(out_dir),
                                "tasks": tasks}), "utf-8")
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "lyricgen", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_cli_generate_grid_with_a_real_rnn(tiny_rnn: Path, tmp_path: Path) -> None:
    params = _params(tiny_rnn, temperatures=[0.0, 0.8, 1.2], max_tokens=60, batch_size=64,
                     top_p=None, top_k=None)
    config = _write_config(tmp_path / "config.json", "generate-grid", tmp_path / "out", [params])
    done = _cli("generate-grid", "--config", str(config))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    grid = json.loads((out / "grid.json").read_text("utf-8"))
    assert grid["model"]["kind"] == "rnn" and len(grid["cells"]) == 18
    greedy = [c["text"] for c in grid["cells"]
              if c["temperature"] == 0.0 and c["prompt_index"] == 0]
    assert greedy[0] == greedy[1]  # temperature 0 is greedy: both samples agree
    assert all(0 < len(c["text"]) <= 60 for c in grid["cells"] if c["temperature"] > 0)
    html = (out / "report.html").read_text("utf-8")
    assert "&lt;script&gt;alert" in html and "<script>" not in html
    provenance = json.loads((out / "provenance.json").read_text("utf-8"))
    assert provenance["cells"] == 18 and provenance["params"]["seed"] == 7


@pytest.mark.slow
def test_real_rnn_shards_merge_to_the_single_task_grid(tiny_rnn: Path, tmp_path: Path) -> None:
    """Fixed batches make each cell's text independent of the sharding, with a real model."""
    params = _params(tiny_rnn, max_tokens=40, batch_size=4, shards=3)
    single = _write_config(tmp_path / "single.json", "generate-grid", tmp_path / "single",
                           [params])
    assert _cli("generate-grid", "--config", str(single)).returncode == 0
    sharded = _write_config(tmp_path / "sharded.json", "generate-grid", tmp_path / "sharded",
                            [params] * 3)
    for task in range(3):
        done = _cli("generate-grid", "--config", str(sharded), "--task", str(task))
        assert done.returncode == 0, done.stderr
    merge = _write_config(tmp_path / "report.json", "report", tmp_path / "merged",
                          [{"grid": str(tmp_path / "sharded")}])
    done = _cli("report", "--config", str(merge))
    assert done.returncode == 0, done.stderr
    merged = json.loads((tmp_path / "merged" / "grid.json").read_text("utf-8"))
    assert merged == json.loads((tmp_path / "single" / "grid.json").read_text("utf-8"))
    assert ((tmp_path / "merged" / "report.html").read_bytes()
            == (tmp_path / "single" / "report.html").read_bytes())


def test_cli_bad_params_one_line_exit_2(model_dir: Path, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "config.json", "generate-grid", tmp_path / "out",
                           [_params(model_dir, temperatures=[0.7, -1])])
    done = _cli("generate-grid", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == "lyricgen: error: params: temperatures[1]: must be >= 0, got -1"
    missing = _write_config(tmp_path / "missing.json", "generate-grid", tmp_path / "out",
                            [_params(tmp_path / "no-model")])
    done = _cli("generate-grid", "--config", str(missing))
    assert done.returncode == 2 and "params: model: " in done.stderr
    assert "no-model: does not exist" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_grid_with_a_tiny_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The llama branch of load_generator, through the kind (random tiny LLaMA, no download)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch
    from tiny_llama import build_tiny_llama

    torch.set_num_threads(1)
    model = build_tiny_llama(tmp_path)
    assert model_kind_of(model) == "llama"
    params = _params(model, temperatures=[0.0, 1.0], samples=1, max_tokens=12, batch_size=64)
    ctx = RunContext(kind="generate-grid", out_dir=tmp_path / "out")
    summary = grid_mod.run(params, ctx)
    assert summary["model_kind"] == "llama" and summary["cells"] == 6
    grid = json.loads((tmp_path / "out" / "grid.json").read_text("utf-8"))
    assert grid["model"]["kind"] == "llama"
    assert all(isinstance(c["text"], str) for c in grid["cells"])
    assert (tmp_path / "out" / "report.html").is_file()
    verse = _params(model, temperatures=[0.8], samples=1, max_tokens=40, scheme="AA bb",
                    syllables=6, candidates=3, prompts=["Bajo la luna", ""])
    summary = grid_mod.run(verse, RunContext(kind="generate-grid", out_dir=tmp_path / "verse"))
    grid = json.loads((tmp_path / "verse" / "grid.json").read_text("utf-8"))
    assert summary["cells"] == 2 and grid["modes"] == ["verse"]
    forced = summary["verse_lines_forced"]
    for cell in grid["cells"]:  # a random tiny LLaMA, yet every finished line scans
        assert cell["verse"]["counts"]["text_lines"] == 4, cell["text"]
        assert cell["verse"]["counts"]["on_meter"] >= 4 - forced


@pytest.mark.parametrize("manifest", ["generate-grid.yaml", "demo.yaml"])
def test_example_manifests_validate_on_both_sides(manifest: str, model_dir: Path) -> None:
    """jobctl accepts the manifest, and lyricgen accepts the generate-grid params it resolves."""
    from jobs.manifest import load_pipeline

    pipeline = load_pipeline(REPO / "manifests" / manifest, base_dir=REPO,
                             check_inputs=False)  # generate-grid.yaml's model is to be edited
    grids = [job for job in pipeline.jobs if job.kind == "generate-grid"]
    assert len(grids) == 1
    params = {**grids[0].tasks[0].params, "model": str(model_dir)}
    spec = GridSpec.from_params(params)
    assert spec.prompts and spec.temperatures
    if manifest == "demo.yaml":
        assert [job.kind for job in pipeline.jobs] == ["clean", "train-rnn", "generate-grid",
                                                       "report"]
        assert pipeline.job("report").tasks[0].params["grid"] == \
            "{{ needs.generate.outputs.dir }}"


def test_a_retrained_model_is_not_resumed(model_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    _run(_params(model_dir), out, FakeGenerator(), monkeypatch)
    (model_dir / "checkpoint" / "last.pt").write_bytes(b"retrained")
    fresh = FakeGenerator()
    _run(_params(model_dir), out, fresh, monkeypatch)
    assert len(fresh.calls) == 3


def test_a_verse_grid_enforces_the_scheme_beside_free_cells(model_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    params = _params(model_dir, scheme="ABAB", syllables=8, candidates=4, compare_free=True,
                     samples=1, temperatures=[0.8], batch_size=4, max_tokens=120)
    out = tmp_path / "out"
    summary = _run(params, out, FakeGenerator(), monkeypatch)
    grid = json.loads((out / "grid.json").read_text("utf-8"))
    assert grid["modes"] == ["verse", "free"] and grid["cells_total"] == 6
    assert [c["mode"] for c in grid["cells"]] == ["verse"] * 3 + ["free"] * 3
    verse = [c for c in grid["cells"] if c["mode"] == "verse"]
    assert all(c["file"].endswith("_verse.txt") and (out / c["file"]).is_file() for c in verse)
    forced = summary["verse_lines_forced"]
    for cell in verse:  # every line kept from a finished candidate rhymes and scans
        counts = cell["verse"]["counts"]
        assert counts["text_lines"] == 4
        assert counts["on_meter"] >= 4 - forced and counts["following"] >= 4 - 2 * forced
        assert cell["metrics"]["meter_share"] == counts["on_meter"] / 4
    free = [c for c in grid["cells"] if c["mode"] == "free"]
    assert all(c["verse"]["scheme"] == "ABAB" and c["metrics"]["scheme_share"] is not None
               for c in free)  # free cells are judged against the scheme too
    assert [(r["mode"], r["temperature"]) for r in grid["aggregates"]["by_temperature"]] == [
        ("verse", 0.8), ("free", 0.8)]
    page = (out / "report.html").read_text("utf-8")
    assert page.count('<table class="verse">') == 6 and "Scheme <code>ABAB</code>" in page
    assert '<td class="tag">A 8</td>' in page and "verse, temperature 0.8" in page


def test_syllables_without_a_scheme_is_refused(model_dir: Path) -> None:
    with pytest.raises(LyricgenInputError, match="params: syllables: needs a scheme"):
        GridSpec.from_params(_params(model_dir, syllables=11))
