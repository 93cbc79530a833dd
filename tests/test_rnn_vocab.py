"""lyricgen.rnn.vocab: char/bpe/word tokenisation, detokenisation, JSON round trips."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from lyricgen.rnn.vocab import MARKER, UNK, Vocab, detokenize_words

DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"

SONG = ("¡Hola, mundo! ¿Qué tal?\n«Bien» -dijo él; (muy) bien...\n"
        "Dijo: \"ven\" y 'vino' qu'el ámbar-gris.\n\n" + MARKER + "\n")


def test_char_round_trip_on_real_text():
    text = (DISCO / "valid.txt").read_text(encoding="utf-8")
    vocab = Vocab.build(text, "char")
    assert vocab.itos[0] == UNK
    assert vocab.decode(vocab.encode(text)) == text
    assert len(vocab.encode(text)) == len(text)
    assert vocab.encode("☃")[0] == 0  # unseen character -> <unk>
    assert len(vocab.marker_ids) == len(MARKER)


def test_bpe_round_trip_and_compression_on_real_text():
    train = (DISCO / "train.txt").read_text(encoding="utf-8")[:400_000]
    valid = (DISCO / "valid.txt").read_text(encoding="utf-8")
    vocab = Vocab.build(train, "bpe", vocab_size=512)
    assert len(vocab) == 512 and vocab.itos[:2] == [UNK, MARKER]
    ids = vocab.encode(valid)
    assert "".join(vocab.tokenize(valid)) == valid  # unknown characters stay themselves
    known = "".join(ch for ch in valid if ch in vocab.stoi or ch == "\n")
    assert vocab.decode(vocab.encode(known)) == known
    assert len(valid) / len(ids) > 2.0  # what makes the level pay: fewer steps per character
    assert vocab.marker_ids == [1] and vocab.song_start_ids == [1, vocab.stoi["\n"]]
    assert vocab.encode("☃") == [0]
    songs = train.split(MARKER)[:50]
    assert vocab.encode_all(songs) == [vocab.encode(song) for song in songs]


def test_bpe_pieces_never_cross_words_or_lines():
    vocab = Vocab.build(SONG * 20, "bpe", vocab_size=200)
    tokens = vocab.tokenize(SONG)
    assert all(" " not in token.rstrip(" ")[1:] for token in tokens)  # at most a leading space
    assert all(token == "\n" or "\n" not in token for token in tokens)
    assert MARKER in tokens  # the marker is one token
    assert vocab.decode(vocab.encode(SONG)) == SONG


def test_bpe_prefix_of_ids_decodes_to_prefix_of_text():
    vocab = Vocab.build(SONG * 5, "bpe", vocab_size=120)
    ids = vocab.encode(SONG)
    assert all(SONG.startswith(vocab.decode(ids[:cut])) for cut in range(len(ids) + 1))


def test_bpe_json_round_trip_needs_no_training_text():
    vocab = Vocab.build(SONG * 5, "bpe", vocab_size=100, lowercase=True)
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again.itos == vocab.itos and again.level == "bpe" and again.lowercase
    assert again.encode("HOLA mundo\n" + MARKER) == vocab.encode("hola mundo\n" + MARKER)
    assert again.encode(SONG) == vocab.encode(SONG)
    assert again.encode_all(["HOLA mundo", SONG]) == [vocab.encode("hola mundo"),
                                                      vocab.encode(SONG)]
    assert "".join(vocab.tokenize("HOLA")) == "hola"  # tokens cover the lowercased text


def test_bpe_build_is_deterministic():
    text = (DISCO / "valid.txt").read_text(encoding="utf-8")
    assert (Vocab.build(text, "bpe", vocab_size=300).to_dict()
            == Vocab.build(text, "bpe", vocab_size=300).to_dict())


def test_word_tokens_marker_lines_punctuation():
    vocab = Vocab.build(SONG, "word")
    tokens = vocab.tokenize(SONG)
    assert tokens[:5] == ["¡", "Hola", ",", "mundo", "!"]
    assert tokens.count(MARKER) == 1 and tokens.count("\n") == 5
    assert "qu'el" in tokens and "ámbar-gris" in tokens
    assert vocab.marker_ids == [vocab.stoi[MARKER]]
    assert vocab.decode(vocab.encode(SONG)) == SONG


def test_word_detokenise_normalises_irregular_spacing():
    vocab = Vocab("word", [UNK])
    assert vocab.detokenize(vocab.tokenize("no ,  sé  !")) == "no, sé!"


def test_word_round_trip_rate_on_real_text():
    text = (DISCO / "valid.txt").read_text(encoding="utf-8")
    vocab = Vocab.build(text, "word")
    lines = text.split("\n")
    exact = sum(vocab.detokenize(vocab.tokenize(line)) == line for line in lines)
    assert exact / len(lines) > 0.98


def test_min_count_frequency_order_and_unk():
    text = "a a a b b c\nd d\n"
    vocab = Vocab.build(text, "word", min_count=2)
    assert vocab.itos == [UNK, "a", "\n", "b", "d"]  # by count, ties alphabetical
    assert vocab.encode("c a") == [0, vocab.stoi["a"]]
    assert vocab.decode(vocab.encode("c a")) == "<unk> a"
    assert Vocab.build(text, "char", min_count=5).stoi["c"] > 0  # char level keeps all


def test_lowercase_keeps_the_marker():
    vocab = Vocab.build("Hola Mundo\n" + MARKER + "\n", "word", lowercase=True)
    assert vocab.tokenize("HOLA\n" + MARKER) == ["hola", "\n", MARKER]


def test_json_round_trip():
    vocab = Vocab.build(SONG, "word", min_count=1, lowercase=True)
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again.itos == vocab.itos and again.level == "word" and again.lowercase
    assert again.encode(SONG) == vocab.encode(SONG)


TOKENS = st.lists(st.sampled_from(["a", "b", ",", ".", "¡", "¿", "«", "»", "\"", "'", "-",
                                   "\n", MARKER, "(", ")", "!"]), max_size=30)


@given(TOKENS)
def test_detokenise_is_prefix_stable(tokens):
    full = detokenize_words(tokens)
    for cut in range(len(tokens) + 1):
        assert full.startswith(detokenize_words(tokens[:cut]))
