"""lyricgen.rnn.sample.RnnGenerator: batched == per-row greedy, ragged prompts, marker stop,
bpe prompt healing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lyricgen.rnn.config import TrainConfig
from lyricgen.rnn.model import ModelConfig, RnnLM
from lyricgen.rnn.sample import RnnGenerator
from lyricgen.rnn.train import Trainer
from lyricgen.rnn.vocab import MARKER, Vocab

torch.set_num_threads(1)
DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"
PROMPTS = ["Amor", "", "¿Qué es esto, Entendimiento? ¿Qué revuelta", "y"]


def random_generator(level: str, arch: str = "lstm", seed: int = 0,
                     ngram_order: int = 1) -> RnnGenerator:
    text = (DISCO / "valid.txt").read_text(encoding="utf-8")[:4000]
    vocab = Vocab.build(text, level, min_count=1, vocab_size=300)
    torch.manual_seed(seed)
    model = RnnLM(ModelConfig(arch, len(vocab), 8, 16, num_layers=2, ngram_order=ngram_order,
                              ngram_buckets=97))
    with torch.no_grad():  # sharper, chaotic random weights: greedy paths depend on prompts
        model.decoder.weight.mul_(20)
        for weight in model.rnn.parameters():
            weight.mul_(4)
        for table in model.ngrams:  # trained tables are not zero
            table.weight.normal_()
    return RnnGenerator(model, vocab, torch.device("cpu"))


@pytest.mark.parametrize("level", ["char", "bpe", "word"])
@pytest.mark.parametrize("arch, ngram_order", [("rnn", 1), ("gru", 1), ("lstm", 1),
                                               ("gru", 3), ("lstm", 4)])
def test_batched_greedy_equals_each_prompt_alone(level, arch, ngram_order):
    generator = random_generator(level, arch, ngram_order=ngram_order)
    together = generator.generate(PROMPTS, [0.0] * len(PROMPTS), max_tokens=25,
                                  stop_at_marker=False)
    alone = [generator.generate([prompt], [0.0], max_tokens=25, stop_at_marker=False)[0]
             for prompt in PROMPTS]
    assert together == alone
    assert len(set(together)) > 1  # different prompts, different continuations


def test_mixed_temperatures_keep_greedy_rows_greedy():
    generator = random_generator("char")
    greedy = generator.generate(PROMPTS, [0.0] * 4, max_tokens=20, stop_at_marker=False)
    mixed = generator.generate(PROMPTS, [0.0, 1.5, 0.0, 1.5], max_tokens=20,
                               stop_at_marker=False)
    assert mixed[0] == greedy[0] and mixed[2] == greedy[2]
    assert mixed[1] != greedy[1] or mixed[3] != greedy[3]


def test_seed_reproducible_and_unk_never_sampled():
    generator = random_generator("word")
    with torch.no_grad():
        generator.model.decoder.bias[0] = 100.0  # <unk> would win every draw
    args = (["hola"] * 3, [1.0, 1.0, 1.0])
    first = generator.generate(*args, max_tokens=15, top_k=50, top_p=0.9, seed=3)
    assert first == generator.generate(*args, max_tokens=15, top_k=50, top_p=0.9, seed=3)
    assert all("<unk>" not in text for text in first)


def test_word_marker_stops_each_row():
    generator = random_generator("word")
    marker = generator.vocab.stoi[MARKER]
    with torch.no_grad():
        generator.model.decoder.bias[marker] = 100.0
    assert generator.generate(["a", "b"], [0.0, 1.0], max_tokens=10) == ["", ""]
    kept = generator.generate(["a"], [0.0], max_tokens=3, stop_at_marker=False)[0]
    assert kept.split() == [MARKER] * 3


def bpe_generator(favourite: str) -> RnnGenerator:
    """A random bpe model whose every step strongly prefers the token `favourite`."""
    vocab = Vocab.build("Bajo la luna lunera, la luz.\n" * 50 + MARKER + "\n", "bpe",
                        vocab_size=60)
    model = RnnLM(ModelConfig("gru", len(vocab), 8, 16))
    with torch.no_grad():
        model.decoder.bias[vocab.stoi[favourite]] = 100.0
    return RnnGenerator(model, vocab, torch.device("cpu"))


@pytest.mark.parametrize("prompt, expected", [
    ("Bajo la lu", "na luna"),  # " lu" taken back: " luna" redone, then " luna" again
    ("Bajo la ", "luna luna"),
    ("Bajo la luna", " luna luna"),  # no longer token begins with " luna": nothing to heal
])
def test_bpe_heals_a_prompt_that_stops_inside_a_token(prompt, expected):
    generator = bpe_generator(" luna")
    assert generator.vocab.tokenize("Bajo la luna")[-1] == " luna"
    assert generator.generate([prompt], [0.0], max_tokens=2, stop_at_marker=False) == [expected]


def test_bpe_healing_keeps_the_prompt_when_nothing_extends_it():
    generator = bpe_generator(",")
    assert generator.generate(["la luz."], [0.0], max_tokens=1, stop_at_marker=False) == [","]


@pytest.fixture(scope="module")
def refrain(tmp_path_factory) -> Path:
    """A char model trained on one short song repeated: it learns to end it with the marker."""
    folder = tmp_path_factory.mktemp("refrain")
    (folder / "train.txt").write_text(f"la la\n\n{MARKER}\n" * 300, encoding="utf-8")
    config = TrainConfig.from_params(dict(
        data=str(folder / "train.txt"), device="cpu", arch="gru", hidden_size=32,
        embedding_dim=8, batch_size=8, seq_len=32, epochs=8, lr=1e-2, warmup_steps=0,
        dropout=0.0, checkpoint_every=0))
    Trainer(config, folder / "out", progress_bar=False).fit()
    return folder / "out"


def test_char_rows_stop_at_the_marker(refrain):
    generator = RnnGenerator.from_checkpoint(refrain, device="cpu")
    assert generator.model_kind == "rnn"
    outputs = generator.generate(["", "la"], [0.0, 0.0], max_tokens=40)
    assert outputs == ["la la", " la"]
    endless = generator.generate([""], [0.0], max_tokens=40, stop_at_marker=False)[0]
    assert endless.startswith(f"la la\n\n{MARKER}\nla la")


def test_argument_checks():
    generator = random_generator("char")
    with pytest.raises(ValueError):
        generator.generate(["a", "b"], [1.0], max_tokens=5)
    with pytest.raises(ValueError):
        generator.generate([], [], max_tokens=5)
    assert generator.generate(["a"], [1.0], max_tokens=0) == [""]
