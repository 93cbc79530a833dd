"""Character-, subword- and word-level vocabularies for the RNN language models, saved as JSON.

Char level: every character of the training text is a token (the song marker `<|fin|>` is just
its seven characters). Word level: the text is split into the song marker (one token), line
breaks (`"\\n"`, one token each), words (`\\w+`, inner apostrophes and hyphens kept:
`qu'el`, `ámbar-gris`) and single punctuation characters; spaces are not tokens, `detokenize`
puts them back by rule: no space before `, . ; : ! ? ) ] } » ” …`, none after `¡ ¿ ( [ { « “`
or a dash (`- – —`, dialogue style: `-Sí`), none inside straight quotes (`"…"` / `'…'`,
alternating open/close), none around line breaks. Text written with those conventions
round-trips exactly (99.3 % of the DISCO train lines do); irregular spacing (a space before a
comma, ` - ` used as a pause) comes back normalised.

Subword level (`bpe`): byte-pair encoding learned from the training text by the `tokenizers`
library (`vocab_size` tokens: `<unk>`, the marker as one token, the characters seen, then the
merges). Text is first split into pieces that merges never cross: a line break, a run of spaces,
or one space followed by a run of letters, of digits or of other symbols (`" corazón"`,
`" ¿"`); anything else is a piece of its own. So a token is a whole word with its leading space
or a piece of one, and it is the exact text it covers: decoding is concatenation, every text of
characters seen in training round-trips, and a prefix of the tokens decodes to a prefix of the
text, as at char level. The learned merges travel in the vocabulary's JSON (`tokenizer`), so
encoding never depends on training again. DISCO verse reads about 2.5 characters per token
(1024 tokens): the recurrence runs 2.5 times fewer steps per character; on a small corpus the
model also overfits sooner (README, "Subword level").

Case is kept by default (`lowercase=False`): lowercasing shrinks the word vocabulary but the
model then describes a different text, so its bits per character are not comparable with a
char model's; when `lowercase=True` the evaluation text is lowercased too (documented, not
hidden). Word level drops words seen fewer than `min_count` times in the training text to
`<unk>` (char level keeps every character seen). Unseen tokens map to `<unk>` (id 0), which
makes bits per character on text with unknown words optimistic: `<unk>` is one cheap token.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

UNK = "<unk>"
MARKER = "<|fin|>"
LEVELS = ("char", "bpe", "word")
# Pieces BPE merges never cross (see the module doc); Rust regex syntax, Unicode-aware.
BPE_PIECES = r"\n| ?[^\W\d_]+| ?\d+| ?[^\w\s]+| +"
_NO_SPACE_BEFORE = frozenset(",.;:!?)]}»”…")
_NO_SPACE_AFTER = frozenset("¡¿([{«“-–—")
_QUOTES = frozenset("\"'")


def _word_pattern(marker: str) -> re.Pattern[str]:
    return re.compile(re.escape(marker) + r"|\n|\w+(?:['-]\w+)*|[^\w\s]")


def detokenize_words(tokens: Iterable[str]) -> str:
    """Join word-level tokens into text, putting spaces back by the rules in the module doc.

    The space before a token depends only on the tokens before it, so detokenising a prefix
    gives a prefix of the full text (generators rely on this to split off a continuation).
    """
    parts: list[str] = []
    attach = True  # no space before the next token
    open_quotes: set[str] = set()
    for token in tokens:
        if token == "\n":
            parts.append("\n")
            attach = True
            continue
        closing = token in _QUOTES and token in open_quotes
        if not attach and not closing and token not in _NO_SPACE_BEFORE:
            parts.append(" ")
        parts.append(token)
        if token in _QUOTES:
            (open_quotes.discard if closing else open_quotes.add)(token)
            attach = not closing
        else:
            attach = token in _NO_SPACE_AFTER
    return "".join(parts)


@dataclass
class Vocab:
    """Token <-> id mapping for one level; id 0 is always `<unk>`. A bpe vocabulary also holds
    its trained tokenizer (`tokenizer`, the `tokenizers` JSON), whose ids are this `itos`."""

    level: str
    itos: list[str]
    marker: str = MARKER
    lowercase: bool = False
    tokenizer: str | None = None
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if not self.itos or self.itos[0] != UNK:
            raise ValueError("itos[0] must be <unk>")
        if (self.level == "bpe") != (self.tokenizer is not None):
            raise ValueError("a bpe vocabulary needs its tokenizer, other levels have none")
        self.stoi = {token: index for index, token in enumerate(self.itos)}
        self._pattern = _word_pattern(self.marker)
        self._bpe = Tokenizer.from_str(self.tokenizer) if self.tokenizer else None

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, text: str, level: str, min_count: int = 1, marker: str = MARKER,
              lowercase: bool = False, vocab_size: int = 1024) -> Vocab:
        """Vocabulary of `text`: char and word level, tokens by falling frequency (ties
        alphabetical) after `<unk>`, min_count applying to word level only; bpe level,
        `vocab_size` tokens learned by BPE (fewer when the text has fewer merges to offer)."""
        if level == "bpe":
            return cls._build_bpe(text, marker, lowercase, vocab_size)
        probe = cls(level, [UNK], marker, lowercase)
        counts = Counter(probe.tokenize(text))
        threshold = min_count if level == "word" else 1
        kept = sorted((t for t, n in counts.items() if n >= threshold and t != UNK),
                      key=lambda t: (-counts[t], t))
        return cls(level, [UNK, *kept], marker, lowercase)

    @classmethod
    def _build_bpe(cls, text: str, marker: str, lowercase: bool, vocab_size: int) -> Vocab:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(BPE_PIECES), behavior="isolated")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[UNK, marker],
                                      show_progress=False)
        text = _lowercase(text, marker) if lowercase else text
        tokenizer.train_from_iterator(text.split(marker), trainer)
        itos = [tokenizer.id_to_token(index) for index in range(tokenizer.get_vocab_size())]
        return cls("bpe", itos, marker, lowercase, tokenizer.to_str())

    def tokenize(self, text: str) -> list[str]:
        """The text's tokens as the text they cover (an unknown character stays itself)."""
        if self.lowercase:
            text = _lowercase(text, self.marker)
        if self.level == "char":
            return list(text)
        if self._bpe is not None:
            return [text[start:stop] for start, stop in self._bpe.encode(text).offsets]
        return self._pattern.findall(text)

    def detokenize(self, tokens: Iterable[str]) -> str:
        return detokenize_words(tokens) if self.level == "word" else "".join(tokens)

    def encode(self, text: str) -> list[int]:
        if self._bpe is not None:
            return self.encode_all([text])[0]
        get = self.stoi.get
        return [get(token, 0) for token in self.tokenize(text)]

    def encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        """`[encode(text) for text in texts]`; at bpe level on all cores at once."""
        if self._bpe is None:
            return [self.encode(text) for text in texts]
        lowered = [_lowercase(text, self.marker) for text in texts] if self.lowercase else texts
        return [encoding.ids for encoding in self._bpe.encode_batch(list(lowered))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.detokenize(self.itos[i] for i in ids)

    @property
    def marker_ids(self) -> list[int]:
        """Ids of the song marker (one id at word and bpe level, one per character at char
        level)."""
        return self.encode(self.marker)

    @property
    def song_start_ids(self) -> list[int]:
        """The context that precedes a song in the data (marker, line break): models are
        conditioned on it before a text is scored or a prompt continued."""
        return self.encode(self.marker + "\n")

    def to_dict(self) -> dict[str, Any]:
        data = {"format": "lyricgen-vocab/1", "level": self.level, "marker": self.marker,
                "lowercase": self.lowercase, "itos": list(self.itos)}
        if self.tokenizer is not None:
            data["tokenizer"] = self.tokenizer
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        if data.get("format") != "lyricgen-vocab/1":
            raise ValueError(f"not a lyricgen vocabulary (format {data.get('format')!r})")
        return cls(data["level"], list(data["itos"]), data["marker"], bool(data["lowercase"]),
                   data.get("tokenizer"))


def _lowercase(text: str, marker: str) -> str:
    """`text` lowercased except for the marker (which may contain capitals)."""
    return marker.join(part.lower() for part in text.split(marker))
