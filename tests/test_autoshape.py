"""train-rnn's shape for the machine it lands on (lyricgen.rnn.autoshape): the rule is
deterministic given the probe, the choice is recorded, and resume never probes again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lyricgen.rnn import autoshape, train
from lyricgen.rnn.autoshape import Measured, Shape, choose
from lyricgen.rnn.config import TrainConfig
from lyricgen.rnn.train import Trainer

TEN_MINUTES = 600.0


def _measured(rates: dict[tuple[int, int, str], float]) -> list[Measured]:
    """Probe results with the real parameter counts of char LSTMs (vocabulary 120)."""
    params = {256: 359_000, 384: 745_000, 512: 1_240_000}
    return [Measured(Shape(h, b, p), rate, params[h]) for (h, b, p), rate in rates.items()]


def test_a_bf16_cpu_keeps_the_tuned_recipe() -> None:
    """The measured throughputs of this machine's AVX512-BF16 cores: LSTM 384, batch 16."""
    choice = choose(_measured({(256, 16, "bf16"): 80_000, (256, 32, "bf16"): 84_000,
                               (384, 16, "bf16"): 50_000, (384, 32, "bf16"): 52_000,
                               (512, 16, "bf16"): 25_000, (512, 32, "bf16"): 27_000,
                               (384, 16, "fp32"): 30_000}), TEN_MINUTES)
    assert choice.shape == Shape(384, 16, "bf16")
    assert "per parameter" in choice.reason and len(choice.table) == 7


def test_a_cpu_without_bf16_gets_a_smaller_model() -> None:
    """fp32 at 20 k tokens/s cannot feed 745 k parameters in 10 minutes: hidden 256."""
    choice = choose(_measured({(256, 16, "fp32"): 34_000, (256, 32, "fp32"): 36_000,
                               (384, 16, "fp32"): 20_000, (384, 32, "fp32"): 21_000,
                               (512, 16, "fp32"): 11_000, (512, 32, "fp32"): 12_000}),
                    TEN_MINUTES)
    assert choice.shape == Shape(256, 16, "fp32")


def test_a_bigger_batch_must_pay_in_speed() -> None:
    """A GPU at batch 16 idles: the smallest batch within 80 % of the fastest is taken."""
    rates = {(512, b, "bf16"): rate for b, rate in ((32, 100_000), (64, 190_000),
                                                    (128, 330_000), (256, 380_000))}
    params = {512: 1_240_000}
    measured = [Measured(Shape(h, b, p), r, params[h]) for (h, b, p), r in rates.items()]
    assert choose(measured, TEN_MINUTES).shape.batch == 128  # 330 k >= 0.8 x 380 k


def test_a_longer_budget_buys_a_bigger_model() -> None:
    rates = {(256, 16, "bf16"): 80_000, (384, 16, "bf16"): 50_000, (512, 16, "bf16"): 25_000}
    assert choose(_measured(rates), 60 * 60.0).shape.hidden == 512
    assert choose(_measured(rates), 2 * 60.0).shape.hidden == 256


def test_probe_is_cached_per_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LYRICGEN_CACHE", str(tmp_path))
    shapes = [Shape(16, 4, "fp32"), Shape(24, 4, "fp32")]
    monkeypatch.setattr(autoshape.os, "getloadavg", lambda: (99.0, 0.0, 0.0))
    autoshape.probe(shapes, 30, 8, 16, torch.device("cpu"),
                    lambda precision: torch.autocast("cpu", enabled=False))
    assert not list(tmp_path.glob("probe-*.json"))  # a busy machine's probe is not kept
    monkeypatch.setattr(autoshape.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    first = autoshape.probe(shapes, 30, 8, 16, torch.device("cpu"),
                            lambda precision: torch.autocast("cpu", enabled=False))
    assert [m.shape for m in first] == shapes and all(m.tokens_per_s > 0 for m in first)
    assert len(list(tmp_path.glob("probe-*.json"))) == 1

    def no_measuring(*args, **kwargs):
        raise AssertionError("a cached probe must not measure again")

    monkeypatch.setattr(autoshape, "_measure", no_measuring)
    again = autoshape.probe(shapes, 30, 8, 16, torch.device("cpu"), lambda p: None)
    assert again == first


@pytest.fixture
def fake_probe(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The probe answers at once: hidden 24 is the one the budget favours."""
    calls: list[int] = []

    def probe(shapes, vocab_size, embedding_dim, seq_len, device, autocast):
        calls.append(len(shapes))
        rates = {16: 900_000.0, 24: 500_000.0, 32: 100.0}
        return [Measured(Shape(h, b, p), rates.get(h, 1.0), 6 * h * h)
                for h, b, p in ((16, 4, "fp32"), (24, 4, "fp32"), (32, 4, "fp32"))]

    monkeypatch.setattr(train, "probe", probe)
    monkeypatch.setattr(train, "candidates", lambda device, precisions, world: [
        Shape(h, 4, "fp32") for h in (16, 24, 32)])
    # 500 k tokens/s x 60 s x 0.92 / (6 x 24 x 24) parameters: a target of 8000 picks 24
    monkeypatch.setattr(autoshape, "TOKENS_PER_PARAM", 8000.0)
    return calls


def test_trainer_takes_the_choice_records_it_and_resumes_without_probing(
        fake_probe: list[int], small_corpus: Path, tmp_path: Path) -> None:
    params = {"data": str(small_corpus), "valid_data": str(small_corpus), "device": "cpu",
              "max_minutes": 1.0, "embedding_dim": 8, "seq_len": 16,
              "max_steps": 3, "checkpoint_every": 0, "precision": "fp32"}
    first = Trainer(TrainConfig.from_params(params), tmp_path / "out", progress_bar=False)
    assert fake_probe == [3] and first.config.hidden_size == 24
    assert first.model_config.hidden_size == 24 and first.config.batch_size == 4
    first.fit()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text("utf-8"))
    assert metrics["auto_shape"]["hidden_size"] == 24 and metrics["params"]["hidden_size"] == 24
    assert "per parameter" in metrics["auto_shape"]["reason"]
    model = json.loads((tmp_path / "out" / "checkpoint" / "model.json").read_text("utf-8"))
    assert model["model_config"]["hidden_size"] == 24  # evaluate/generate read this
    resumed = Trainer(TrainConfig.from_params({**params, "max_steps": 5}), tmp_path / "out",
                      progress_bar=False)
    assert fake_probe == [3] and resumed.config.hidden_size == 24  # no second probe
    assert resumed.state.step == 3


def test_explicit_sizes_or_no_budget_never_probe(fake_probe: list[int],
                                                 small_corpus: Path, tmp_path: Path) -> None:
    base = {"data": str(small_corpus), "device": "cpu", "embedding_dim": 8, "seq_len": 16}
    explicit = Trainer(TrainConfig.from_params({**base, "hidden_size": 20, "batch_size": 2,
                                                "max_minutes": 1.0}), tmp_path / "a")
    no_budget = Trainer(TrainConfig.from_params(base), tmp_path / "b")
    assert fake_probe == []
    assert (explicit.config.hidden_size, explicit.config.batch_size) == (20, 2)
    assert (no_budget.config.hidden_size, no_budget.config.batch_size) == (384, 16)
