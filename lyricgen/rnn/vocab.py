"""Character- and word-level vocabularies for the RNN language models, saved as JSON.

Char level: every character of the training text is a token (the song marker `<|fin|>` is just
its seven characters). Word level: the text is split into the song marker (one token), line
breaks (`"\\n"`, one token each), words (`\\w+`, inner apostrophes and hyphens kept:
`qu'el`, `ámbar-gris`) and single punctuation characters; spaces are not tokens, `detokenize`
puts them back by rule: no space before `, . ; : ! ? ) ] } » ” …`, none after `¡ ¿ ( [ { « “`
or a dash (`- – —`, dialogue style: `-Sí`), none inside straight quotes (`"…"` / `'…'`,
alternating open/close), none around line breaks. Text written with those conventions
round-trips exactly (99.3 % of the DISCO train lines do); irregular spacing (a space before a
comma, ` - ` used as a pause) comes back normalised.

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

UNK = "<unk>"
MARKER = "<|fin|>"
LEVELS = ("char", "word")
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
    """Token <-> id mapping for one level; id 0 is always `<unk>`."""

    level: str
    itos: list[str]
    marker: str = MARKER
    lowercase: bool = False
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if not self.itos or self.itos[0] != UNK:
            raise ValueError("itos[0] must be <unk>")
        self.stoi = {token: index for index, token in enumerate(self.itos)}
        self._pattern = _word_pattern(self.marker)

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, text: str, level: str, min_count: int = 1, marker: str = MARKER,
              lowercase: bool = False) -> Vocab:
        """Vocabulary of `text`: tokens by falling frequency (ties alphabetical) after `<unk>`.
        min_count applies to word level only."""
        probe = cls(level, [UNK], marker, lowercase)
        counts = Counter(probe.tokenize(text))
        threshold = min_count if level == "word" else 1
        kept = sorted((t for t, n in counts.items() if n >= threshold and t != UNK),
                      key=lambda t: (-counts[t], t))
        return cls(level, [UNK, *kept], marker, lowercase)

    def tokenize(self, text: str) -> list[str]:
        if self.lowercase:
            text = self.marker.join(part.lower() for part in text.split(self.marker))
        if self.level == "char":
            return list(text)
        return self._pattern.findall(text)

    def detokenize(self, tokens: Iterable[str]) -> str:
        return "".join(tokens) if self.level == "char" else detokenize_words(tokens)

    def encode(self, text: str) -> list[int]:
        get = self.stoi.get
        return [get(token, 0) for token in self.tokenize(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.detokenize(self.itos[i] for i in ids)

    @property
    def marker_ids(self) -> list[int]:
        """Ids of the song marker (one id at word level, one per character at char level)."""
        return self.encode(self.marker)

    @property
    def song_start_ids(self) -> list[int]:
        """The context that precedes a song in the data (marker, line break): models are
        conditioned on it before a text is scored or a prompt continued."""
        return self.encode(self.marker + "\n")

    def to_dict(self) -> dict[str, Any]:
        return {"format": "lyricgen-vocab/1", "level": self.level, "marker": self.marker,
                "lowercase": self.lowercase, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        if data.get("format") != "lyricgen-vocab/1":
            raise ValueError(f"not a lyricgen vocabulary (format {data.get('format')!r})")
        return cls(data["level"], list(data["itos"]), data["marker"], bool(data["lowercase"]))
