"""lyricgen.rnn training: TBPTT coverage, schedule, resume identity, budgets, early stopping."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
from pathlib import Path

import pytest
import torch

from lyricgen.errors import LyricgenInputError
from lyricgen.rnn.checkpoint import load_checkpoint
from lyricgen.rnn.config import TrainConfig
from lyricgen.rnn.data import TbpttBatches, split_songs
from lyricgen.rnn.metrics import MetricsCsv
from lyricgen.rnn.train import Trainer
from lyricgen.schedule import LrSchedule, progress

torch.set_num_threads(1)
DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, str]:
    """A few KB of real DISCO text: (train path, valid path)."""
    folder = tmp_path_factory.mktemp("disco")
    train = (DISCO / "train.txt").read_text(encoding="utf-8")[:6000]
    valid = (DISCO / "valid.txt").read_text(encoding="utf-8")[:1500]
    (folder / "train.txt").write_text(train, encoding="utf-8")
    (folder / "valid.txt").write_text(valid, encoding="utf-8")
    return str(folder / "train.txt"), str(folder / "valid.txt")


def tiny(corpus: tuple[str, str], **changes) -> TrainConfig:
    base = TrainConfig.from_params(dict(
        data=corpus[0], valid_data=corpus[1], device="cpu", arch="gru", hidden_size=24,
        embedding_dim=8, batch_size=4, seq_len=16, epochs=2, dropout=0.2, warmup_steps=5,
        checkpoint_every=0, log_every=3))
    return dataclasses.replace(base, **changes)


def test_tbptt_windows_cover_each_token_once():
    ids = torch.arange(103)
    batches = TbpttBatches(ids, batch_size=4, seq_len=6)
    seen: list[int] = []
    for index in range(batches.n_windows):
        inputs, targets = batches.window(index)
        assert torch.equal(targets, inputs + 1)  # each target follows its input in the data
        seen.extend(targets.flatten().tolist())
    assert sorted(seen) == list(range(1, 4 * batches.stream_len + 1))
    assert len(ids) - 1 - 4 * batches.stream_len < 4  # only a tail shorter than B is unused
    first, _ = batches.window(0)
    second, _ = batches.window(1)
    assert torch.equal(second[:, 0], first[:, -1] + 1)  # windows are contiguous per stream


def test_split_songs_keeps_every_character():
    text = "a b\n\n<|fin|>\nc\n\n<|fin|>\nd <|fin|>\n<|fin|>x\n"
    pieces = split_songs(text, "<|fin|>")
    assert "".join(pieces) == text
    assert pieces == ["a b\n\n<|fin|>\n", "c\n\n<|fin|>\n", "d <|fin|>\n<|fin|>x\n"]
    assert split_songs("no marker", "<|fin|>") == ["no marker"]


def test_shuffled_epochs_cover_each_token_once_in_a_seeded_order():
    songs = [torch.arange(start, start + length) for start, length in
             ((0, 7), (100, 3), (200, 11), (300, 5), (400, 9), (500, 4))]
    batches = TbpttBatches(songs, batch_size=3, seq_len=4, shuffle_seed=42)
    span = batches.stream_len

    def epoch_targets(epoch: int) -> tuple[list[int], list[int]]:
        batches.set_epoch(epoch)
        stream = torch.cat([batches.streams[b, :span] for b in range(3)]).tolist()
        targets = [t for i in range(batches.n_windows) for t in batches.window(i)[1].flatten()]
        return stream, sorted(int(t) for t in targets)

    orders = []
    for epoch in range(4):
        stream, targets = epoch_targets(epoch)
        song_starts = [token for token in stream if token % 100 == 0]
        orders.append(song_starts)
        everything = sorted(torch.cat(songs).tolist())
        assert set(targets) <= set(everything) and len(targets) == len(set(targets)) == 3 * span
    assert len({tuple(order) for order in orders}) > 1  # the song order changes
    assert epoch_targets(2) == epoch_targets(2)  # and is a function of (seed, epoch)
    unshuffled = TbpttBatches(songs, batch_size=3, seq_len=4)
    unshuffled.set_epoch(5)
    assert torch.equal(unshuffled.streams[0, :4], torch.tensor([0, 1, 2, 3]))


def test_tbptt_rejects_too_little_data():
    with pytest.raises(ValueError):
        TbpttBatches(torch.arange(4), batch_size=8, seq_len=2)


def test_schedule_warmup_cosine_and_clock():
    schedule = LrSchedule(1.0, "cosine", warmup_steps=10, min_ratio=0.1)
    assert schedule.lr(0, 0.0) == pytest.approx(0.1)
    assert schedule.lr(9, 0.0) == pytest.approx(1.0)
    assert schedule.lr(100, 0.5) == pytest.approx(0.55)
    assert schedule.lr(100, 1.0) == pytest.approx(0.1)
    assert LrSchedule(2.0, "linear").lr(5, 0.25) == pytest.approx(1.5)
    assert LrSchedule(2.0, "constant").lr(5, 0.9) == 2.0
    assert progress(10, 100, elapsed=30.0, budget_seconds=60.0) == pytest.approx(0.5)
    assert progress(10, 100, elapsed=30.0, budget_seconds=None) == pytest.approx(0.1)
    assert progress(500, 100, elapsed=0.0, budget_seconds=None) == 1.0


@pytest.mark.parametrize("pause_at", [11, 100])  # in the first epoch; in the second (94 windows)
def test_resume_continues_identically(corpus, tmp_path, pause_at):
    config = tiny(corpus, eval_every=25)
    whole = Trainer(config, tmp_path / "a", progress_bar=False).fit()
    total = len(whole.step_losses)
    assert total == whole.metrics["final"]["step"] > pause_at
    first = Trainer(dataclasses.replace(config, max_steps=pause_at), tmp_path / "b",
                    progress_bar=False).fit()
    assert len(first.step_losses) == pause_at and first.metrics["stop_reason"] == "max_steps"
    rest = Trainer(config, tmp_path / "b", progress_bar=False).fit()
    resumed = first.step_losses + rest.step_losses
    assert resumed == pytest.approx(whole.step_losses, abs=1e-6)
    a = load_checkpoint(tmp_path / "a/checkpoint/last.pt")
    b = load_checkpoint(tmp_path / "b/checkpoint/last.pt")
    for name, tensor in a["model_state"].items():
        assert torch.allclose(tensor, b["model_state"][name], atol=1e-6), name
    assert a["best"] == pytest.approx(b["best"])
    rows_a, rows_b = (MetricsCsv(tmp_path / name / "metrics.csv").read() for name in "ab")
    def validations(rows):
        return [(r["step"], r["val_bpc"], r["val_ppl"]) for r in rows if r["val_bpc"]]

    assert validations(rows_b) == validations(rows_a)
    train_steps = [int(r["step"]) for r in rows_b if r["train_loss"]]
    assert train_steps == sorted(set(train_steps))  # no row written twice


def test_resume_refuses_changed_params_or_data(corpus, tmp_path):
    data = tmp_path / "train.txt"
    data.write_text(Path(corpus[0]).read_text(encoding="utf-8"), encoding="utf-8")
    config = tiny(corpus, data=str(data), max_steps=2)
    Trainer(config, tmp_path / "out", progress_bar=False).fit()
    with pytest.raises(LyricgenInputError, match="hidden_size"):
        Trainer(dataclasses.replace(config, hidden_size=32), tmp_path / "out")
    Trainer(dataclasses.replace(config, max_steps=3), tmp_path / "out", progress_bar=False)
    data.write_text(data.read_text(encoding="utf-8") + "más\n", encoding="utf-8")
    with pytest.raises(LyricgenInputError, match="data: the file changed"):
        Trainer(config, tmp_path / "out")


def test_max_minutes_stops_validates_and_checkpoints(corpus, tmp_path):
    config = tiny(corpus, epochs=10_000, max_minutes=0.002)
    metrics = Trainer(config, tmp_path, progress_bar=False).fit().metrics
    assert metrics["stop_reason"] == "max_minutes"
    assert metrics["final"]["val_bpc"] is not None
    payload = load_checkpoint(tmp_path / "checkpoint/last.pt")
    assert payload["step"] == metrics["final"]["step"] and payload["stop_reason"] == "max_minutes"
    assert payload["last_val_step"] == payload["step"]
    again = Trainer(config, tmp_path, progress_bar=False).fit()  # budget spent: no more steps
    assert again.step_losses == [] and again.metrics["final"]["step"] == payload["step"]


def test_early_stopping_after_patience(corpus, tmp_path):
    frozen = tiny(corpus, lr=1e-30, lr_schedule="constant", warmup_steps=0, weight_decay=0.0,
                  eval_every=1, patience=2, epochs=50)
    metrics = Trainer(frozen, tmp_path, progress_bar=False).fit().metrics
    assert metrics["stop_reason"] == "early_stopping"
    assert metrics["final"]["step"] == 3 and metrics["best"]["step"] == 1
    assert (tmp_path / "checkpoint/best.pt").is_file()


def test_outputs_and_checkpoint_contents(corpus, tmp_path):
    metrics = Trainer(tiny(corpus, epochs=1, checkpoint_every=4), tmp_path,
                      progress_bar=False).fit().metrics
    for name in ("metrics.csv", "metrics.json", "curves.png", "checkpoint/last.pt",
                 "checkpoint/best.pt", "checkpoint/vocab.json", "checkpoint/model.json"):
        assert (tmp_path / name).is_file(), name
    assert not list((tmp_path / "checkpoint").glob(".*.tmp"))
    payload = load_checkpoint(tmp_path / "checkpoint/best.pt")
    for key in ("model_config", "vocab", "optimizer_state", "rng", "step", "epoch", "window",
                "best", "params", "elapsed"):
        assert key in payload
    assert payload["params"]["hidden_size"] == 24 and metrics["best"]["step"] == payload["step"]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == "step,epoch,train_loss,lr,tokens_per_s,val_bpc,val_ppl,elapsed"
    assert math.isfinite(metrics["final"]["val_bpc"])


def test_word_level_trains_and_reports_bpc(corpus, tmp_path):
    metrics = Trainer(tiny(corpus, level="word", arch="lstm", epochs=1, min_count=1), tmp_path,
                      progress_bar=False).fit().metrics
    assert metrics["vocab_size"] > 100 and metrics["final"]["val_bpc"] > 0


def test_bpe_level_reads_fewer_tokens_and_reports_bpc_per_character(corpus, tmp_path):
    metrics = Trainer(tiny(corpus, level="bpe", vocab_size=150, epochs=1), tmp_path,
                      progress_bar=False).fit().metrics
    text = Path(corpus[0]).read_text(encoding="utf-8")
    assert metrics["vocab_size"] == 150 and metrics["tokens_per_epoch"] < len(text) / 1.5
    assert 0 < metrics["final"]["val_bpc"] < math.log2(150)  # per character, not per token
    vocab = json.loads((tmp_path / "checkpoint/vocab.json").read_text(encoding="utf-8"))
    assert vocab["level"] == "bpe" and vocab["tokenizer"]  # evaluate never trains it again


def test_bpe_run_resumes_identically_with_its_stored_tokenizer(corpus, tmp_path):
    config = tiny(corpus, level="bpe", vocab_size=150, epochs=1, max_steps=12)
    whole = Trainer(config, tmp_path / "a", progress_bar=False).fit()
    first = Trainer(dataclasses.replace(config, max_steps=5), tmp_path / "b",
                    progress_bar=False).fit()
    rest = Trainer(config, tmp_path / "b", progress_bar=False)
    stored = json.loads((tmp_path / "b/checkpoint/vocab.json").read_text(encoding="utf-8"))
    assert rest.vocab.tokenizer == stored["tokenizer"]  # read back, not trained again
    resumed = first.step_losses + rest.fit().step_losses
    assert resumed == pytest.approx(whole.step_losses, abs=1e-6)


@pytest.mark.parametrize("params, key", [
    ({"data": "x", "hidden": 3}, "hidden"),
    ({"data": "x", "arch": "transformer"}, "arch"),
    ({"data": "x", "epochs": "3"}, "epochs"),
    ({"data": "x", "dropout": 1.5}, "dropout"),
    ({"arch": "gru"}, "data"),
    ({"data": "x", "batch_size": 0}, "batch_size"),
])
def test_bad_params_name_the_key(params, key):
    with pytest.raises(LyricgenInputError, match=rf"params: {key}:"):
        TrainConfig.from_params(params)


def test_missing_or_too_small_data(tmp_path):
    with pytest.raises(LyricgenInputError, match="params: data: .*nope.txt: does not exist"):
        TrainConfig.from_params({"data": str(tmp_path / "nope.txt")})
    (tmp_path / "small.txt").write_text("ab\n", encoding="utf-8")
    with pytest.raises(LyricgenInputError, match="small.txt: data:"):
        Trainer(TrainConfig.from_params({"data": str(tmp_path / "small.txt")}), tmp_path / "out")


def test_cpu_precision_follows_native_bf16(monkeypatch):
    from lyricgen import precision
    from lyricgen.rnn import train

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert train.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert train.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(LyricgenInputError, match="bf16 needs a CPU with bf16 instructions"):
        train.resolve_precision("bf16", cpu)
    with pytest.raises(LyricgenInputError, match="fp16 needs a CUDA device"):
        train.resolve_precision("fp16", cpu)


def test_resume_falls_back_to_the_previous_checkpoint_when_last_does_not_load(corpus, tmp_path,
                                                                              capsys):
    config = tiny(corpus, checkpoint_every=5)
    whole = Trainer(config, tmp_path / "a", progress_bar=False).fit()
    first = Trainer(dataclasses.replace(config, max_steps=12), tmp_path / "b",
                    progress_bar=False).fit()
    ckpt = tmp_path / "b/checkpoint"
    assert load_checkpoint(ckpt / "previous.pt")["step"] == 10  # the last.pt before step 12
    torn = (ckpt / "last.pt").read_bytes()
    (ckpt / "last.pt").write_bytes(torn[:len(torn) // 2])
    capsys.readouterr()
    rest = Trainer(config, tmp_path / "b", progress_bar=False).fit()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"train-rnn: warning: {ckpt / 'last.pt'}: checkpoint: not a readable torch checkpoint")
    assert warnings[0].endswith("; trying an older checkpoint")
    assert first.step_losses[:10] + rest.step_losses == pytest.approx(whole.step_losses,
                                                                      abs=1e-6)
    assert [p.name.split("-")[0] for p in ckpt.glob("last.pt.bad-*")] == ["last.pt.bad"]
    assert load_checkpoint(ckpt / "last.pt")["step"] == whole.metrics["final"]["step"]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_a_failed_checkpoint_write_is_one_line_exit_1_and_keeps_the_previous(
        corpus, tmp_path, monkeypatch, capsys, error):
    """The OSError is injected where the disk reports it: fsync of the new last.pt."""
    from lyricgen.__main__ import main

    out = tmp_path / "out"
    params = {"data": corpus[0], "arch": "gru", "hidden_size": 8, "embedding_dim": 4,
              "batch_size": 4, "seq_len": 16, "device": "cpu", "checkpoint_every": 3,
              "max_steps": 8}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "schema": 1, "kind": "train-rnn", "job": "train", "run_id": "r", "job_dir": str(tmp_path),
        "out_dir": str(out), "tasks": [{"index": 0, "params": params, "matrix": {}}]}))
    real_fsync, saves = os.fsync, []

    def fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.pt."):
            saves.append(fd)
            if len(saves) == 2:
                raise OSError(error, os.strerror(error))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SystemExit) as ended:
        main(["train-rnn", "--config", str(config)])
    assert ended.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (f"lyricgen: error: {out / 'checkpoint/last.pt'}: cannot write "
                         f"({os.strerror(error)}); nothing partial was left and its previous "
                         "version, if any, is intact")
    assert not [line for line in lines[:-1] if "Traceback" in line or "Error" in line]
    assert load_checkpoint(out / "checkpoint/last.pt")["step"] == 3
    assert not list((out / "checkpoint").glob(".*"))
