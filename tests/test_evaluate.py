"""lyricgen.evaluate: exact bpc on a uniform model, chunked scoring, trained model, CLI paths."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lyricgen.errors import LyricgenInputError
from lyricgen.evaluate import evaluate_checkpoint, evaluate_text, format_report, score_ids
from lyricgen.rnn.config import TrainConfig
from lyricgen.rnn.model import ModelConfig, RnnLM
from lyricgen.rnn.train import Trainer
from lyricgen.rnn.vocab import Vocab

torch.set_num_threads(1)
DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"


@pytest.fixture(scope="module")
def text() -> str:
    return (DISCO / "valid.txt").read_text(encoding="utf-8")[:3000]


def uniform_model(vocab_size: int) -> RnnLM:
    model = RnnLM(ModelConfig("gru", vocab_size, 4, 6))
    nn.init.zeros_(model.decoder.weight)
    nn.init.zeros_(model.decoder.bias)
    return model


@pytest.mark.parametrize("level", ["char", "bpe", "word"])
@pytest.mark.parametrize("streams", [1, 32])
def test_uniform_model_gives_log2_vocab_per_token(text, level, streams):
    vocab = Vocab.build(text, level, min_count=1)
    result = evaluate_text(uniform_model(len(vocab)), vocab, text, streams=streams)
    tokens = len(vocab.encode(text))
    assert result.tokens == tokens and result.chars == len(text)
    assert result.bpc == pytest.approx(math.log2(len(vocab)) * tokens / len(text), rel=1e-6)
    assert result.perplexity == pytest.approx(len(vocab), rel=1e-6)


class Bigram(nn.Module):
    """Logits depend on the current input token only: scores are independent of chunking."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, tokens, hidden=None):
        return self.table(tokens), hidden


def test_chunked_scoring_counts_every_token_once_with_its_predecessor():
    torch.manual_seed(0)
    model = Bigram(9)
    ids = torch.randint(0, 9, (500,)).tolist()
    context = [3, 4]
    full = context + ids
    log_probs = torch.log_softmax(model.table.weight.detach(), -1)
    expected = -sum(float(log_probs[full[i - 1], full[i]]) for i in range(2, len(full)))
    for streams, burn_in, window in [(1, 0, 64), (7, 0, 13), (32, 50, 256), (600, 5, 3)]:
        got = score_ids(model, ids, context, streams=streams, burn_in=burn_in, window=window)
        assert got == pytest.approx(expected, rel=1e-6)


def test_burn_in_brings_chunked_score_close_to_single_stream(text):
    torch.manual_seed(0)
    vocab = Vocab.build(text, "char")
    model = RnnLM(ModelConfig("lstm", len(vocab), 8, 16))
    ids = vocab.encode(text)
    exact = score_ids(model, ids, vocab.song_start_ids, streams=1)
    chunked = score_ids(model, ids, vocab.song_start_ids, streams=16, burn_in=256)
    assert chunked == pytest.approx(exact, rel=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("evaluate")
    train = folder / "train.txt"
    train.write_text((DISCO / "train.txt").read_text(encoding="utf-8")[:8000], encoding="utf-8")
    config = TrainConfig.from_params(dict(
        data=str(train), valid_data=str(train), device="cpu", arch="gru", hidden_size=48,
        embedding_dim=16, batch_size=8, seq_len=32, epochs=4, lr=1e-2, warmup_steps=0,
        dropout=0.0, checkpoint_every=0))
    Trainer(config, folder / "out", progress_bar=False).fit()
    return folder / "out", train


def test_trained_model_beats_uniform_on_its_train_text(trained):
    out, train = trained
    report = evaluate_checkpoint(out, train, device="cpu")
    vocab_size = len(Vocab.from_dict(torch.load(out / "checkpoint/best.pt",
                                                weights_only=True)["vocab"]))
    tokens = report["tokens"]
    uniform = math.log2(vocab_size) * tokens / report["chars"]
    assert report["bpc"] < uniform - 1.0
    assert report["level"] == "char" and report["tokens"] == report["chars"]


def test_checkpoint_paths_all_resolve_to_the_same_figure(trained):
    out, train = trained
    figures = {round(evaluate_checkpoint(path, train, "cpu")["bpc"], 12)
               for path in (out, out / "checkpoint", out / "checkpoint/best.pt")}
    assert len(figures) == 1
    last = evaluate_checkpoint(out / "checkpoint/last.pt", train, "cpu")
    assert last["checkpoint"].endswith("last.pt")
    assert '"bpc"' in format_report(last, as_json=True)
    assert "bpc" in format_report(last, as_json=False)


def test_evaluate_matches_the_recorded_best_validation(trained):
    out, train = trained
    best = torch.load(out / "checkpoint/best.pt", weights_only=True)["best"]
    assert evaluate_checkpoint(out, train, "cpu")["bpc"] == pytest.approx(best["bpc"], rel=1e-9)


def test_bad_inputs_are_one_line_errors(trained, tmp_path):
    out, train = trained
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("canción".encode("latin-1"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cases = [(out, tmp_path / "missing.txt", "data: file not found"),
             (out, tmp_path / "empty.txt", "data: empty file"),
             (out, tmp_path / "latin1.txt", "data: not UTF-8"),
             (tmp_path / "nowhere", train, "checkpoint: no best.pt"),
             (tmp_path / "junk.pt", train, "checkpoint: not a readable")]
    for checkpoint, data, message in cases:
        with pytest.raises(LyricgenInputError, match=message) as info:
            evaluate_checkpoint(checkpoint, data, "cpu")
        assert "\n" not in str(info.value)



def test_unknown_words_are_charged_their_spelling():
    """Vocabulary characters {l, a, u, n, newline, <, |, f, i, >}: K = 10 + end + escape = 12.
    "sol" spells 3 characters + end, two of them (s, o) outside the alphabet; "ñu" 2 + end,
    one outside."""
    from lyricgen.evaluate import CODE_POINT_BITS, unk_spelling_bits

    vocab = Vocab("word", ["<unk>", "la", "luna", "\n", "<|fin|>"])
    text = "la sol\nluna ñu\n"
    expected = 4 * math.log2(12) + 2 * CODE_POINT_BITS + 3 * math.log2(12) + CODE_POINT_BITS
    bits, description = unk_spelling_bits(vocab, text)
    assert bits == pytest.approx(expected)
    assert "log2(12)" in description
    model = uniform_model(len(vocab))
    result = evaluate_text(model, vocab, text)
    assert result.unk_bits == pytest.approx(expected)
    assert result.unk_rate == pytest.approx(2 / 6)
    assert result.bpc == pytest.approx((result.nll_bits + expected) / len(text))
    assert result.nll_bits == pytest.approx(6 * math.log2(len(vocab)))
    assert unk_spelling_bits(vocab, "la luna\n")[0] == 0.0


def test_word_model_report_names_its_unk_charge(text):
    """A word vocabulary from half the text leaves unknown words in the other half: the
    report's bpc is the model's NLL plus their spelling, and says which charge it used."""
    from lyricgen.evaluate import result_of

    vocab = Vocab.build(text[: len(text) // 2], "word", min_count=1)
    result = evaluate_text(uniform_model(len(vocab)), vocab, text)
    assert result.unk_rate > 0.05 and result.unk_bits > 0
    unknown = sum(1 for i in vocab.encode(text) if i == 0)
    optimistic = result_of(result.nll_bits * math.log(2), tokens=result.tokens,
                           chars=result.chars, unknown=unknown)
    assert result.bpc > optimistic.bpc + 0.1
    report = {"model": "m", "data": "d", "level": "word", **result.to_dict()}
    assert "the <unk> spelling charge" in format_report(report, as_json=False)
