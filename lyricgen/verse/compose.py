"""Verse that rhymes and scans: line-by-line constrained sampling for any token-level LM.

`compose(model, prompts, temperatures, plan, ...)` writes one poem per row, following a rhyme
scheme (lyricgen.verse.scheme) and a metrical length, with every model call batched across
all rows and candidates. For each line of the scheme:

1. every row's state is copied K times (`plan.candidates`): K candidate lines per row in one
   batch;
2. each candidate samples the line's BODY as usual (its temperature, top-k, top-p), never a
   line break;
3. when it starts a new word (its sampled token begins with a space after a letter) it
   measures its prefix (metrical syllables so far, lyricgen.verse.meter). Once the syllables
   left fit a last word of about its preferred length (PREFERRED_SPANS), it drops that token
   and enters the FINAL phase: the next tokens are sampled from the model restricted to a
   token trie of the lexicon words (lyricgen.verse.lexicon) that rhyme as the scheme asks
   (consonant or assonant with the group's rhyme word; for the line that sets a group's rhyme,
   words with enough partners; any word for a free line) AND bring the line to exactly the
   target syllables; then at most MAX_PUNCTUATION punctuation tokens and the line break. A
   body that passes the target at a word boundary fails;
4. once half of every row's candidates have finished (the slowest bodies are dropped then),
   each row keeps, among its candidates that finished and repeat no earlier line, the one
   with the highest mean log-probability per character under the model itself (temperature
   1, no filter); its state carries on. When all K fail the row keeps its most likely
   candidate, broken off with a line break where it stopped (`ComposeStats.forced` counts
   these lines: they may miss rhyme or meter).

Why: at temperature 0.8 a 10-minute char LSTM ends fewer than 1 line in 100 on a consonant
rhyme with a given partner, so sampling whole lines and re-ranking would need hundreds of
candidates per line; constraining only the last word, where rhyme and meter are decided,
makes both hold by construction, while the body and the choice among the allowed words stay
the model's. Cost: K times the rows for each line, plus Python work at word boundaries and in
the last word. Without a syllable target, candidate k aims at FREE_LENGTHS[k % 6] syllables.

Pitfalls: all rows and candidates share one torch.Generator (a row's text depends on its
batch, as everywhere in generate-grid); rhyme and meter are this project's spelling-based
counters (synalepha always), so another counter may disagree on licences such as dialefa.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from lyricgen.sampling import sample_next
from lyricgen.verse.lexicon import RhymeLexicon
from lyricgen.verse.meter import scan_words, word_sound
from lyricgen.verse.rhyme import same_word_key, words
from lyricgen.verse.scheme import Scheme

PREFERRED_SPANS = (2, 3, 4)  # candidate k ends on a word adding about this many syllables
FREE_LENGTHS = (7, 8, 9, 10, 11, 12)
MAX_PUNCTUATION = 2  # tokens of punctuation allowed between the last word and the line break
BODY, FINAL, DONE, FAILED = range(4)
_LINE_END = re.compile(r"[,.;:!?…»\"')]{0,3}\n")
_PUNCTUATION = re.compile(r"[,.;:!?…»\"')]{1,3}")


class LineModel(Protocol):
    """What `compose` needs from a generator backend (lyricgen.rnn.sample, llama.generate).

    A state holds one row per batch row. `advance` feeds one token per row and leaves the rows
    where `active` is False exactly as they were (their logits are then meaningless);
    `select` gathers rows (repeats allowed) into a NEW state, leaving the old one usable.
    """

    device: torch.device

    def pieces(self) -> list[str]:
        """The text each token id appends in the middle of a line (list index = id)."""
        ...

    def banned_ids(self) -> list[int]:
        """Ids never to sample (an unknown-word token, the song marker...)."""
        ...

    def encode_ending(self, text: str) -> list[int] | None:
        """Ids that append `text` (" amor") after a word; None if the model cannot spell it."""
        ...

    def start(self, prompts: list[str]) -> tuple[Any, torch.Tensor]:
        """The state after each prompt and the next-token logits [B, V]."""
        ...

    def advance(self, state: Any, tokens: torch.Tensor, active: torch.Tensor
                ) -> tuple[Any, torch.Tensor]: ...

    def select(self, state: Any, rows: torch.Tensor) -> Any: ...

    def decode(self, ids: list[int]) -> str:
        """The text of ids generated inside a line (no prompt context)."""
        ...

    def continuation(self, row: int, ids: list[int]) -> str:
        """The text that `ids`, generated after prompt `row` of `start`, add to it."""
        ...


@dataclass(frozen=True)
class VersePlan:
    """What to write: a parsed scheme, the metrical syllables per line (None: free), the
    candidates per row and line, and the lexicon of allowed last words."""

    scheme: Scheme
    syllables: int | None
    candidates: int
    lexicon: RhymeLexicon


@dataclass
class ComposeStats:
    lines: int = 0
    forced: int = 0  # lines kept although none of their candidates finished


class _Trie:
    """A token-id trie of last words; `word` is set where a word ends."""

    __slots__ = ("children", "word")

    def __init__(self) -> None:
        self.children: dict[int, _Trie] = {}
        self.word: str | None = None

    def add(self, ids: Sequence[int], word: str) -> None:
        node = self
        for token in ids:
            node = node.children.setdefault(token, _Trie())
        node.word = word


@dataclass
class _Tokens:
    """Token classes of a model's vocabulary (bool tensors over ids, or id lists)."""

    newline_id: int  # the piece "\n"
    newline: torch.Tensor  # pieces holding a line break: never inside a line's body
    opens_word: torch.Tensor  # " " or pieces starting with a space then a letter
    ends_letter: torch.Tensor  # pieces whose last character is a letter
    line_end: list[int]  # optional punctuation + one line break
    punctuation: list[int]
    banned: list[int]

    @classmethod
    def of(cls, model: LineModel) -> _Tokens:
        pieces = model.pieces()
        if "\n" not in pieces:
            raise ValueError("the model has no line-break token")

        def flags(test: Any) -> torch.Tensor:
            return torch.tensor([bool(test(p)) for p in pieces], device=model.device)

        return cls(newline_id=pieces.index("\n"), newline=flags(lambda p: "\n" in p),
                   opens_word=flags(lambda p: p[:1] == " " and (p[1:2].isalpha() or p == " ")),
                   ends_letter=flags(lambda p: p[-1:].isalpha()),
                   line_end=[i for i, p in enumerate(pieces) if _LINE_END.fullmatch(p)],
                   punctuation=[i for i, p in enumerate(pieces) if _PUNCTUATION.fullmatch(p)],
                   banned=list(model.banned_ids()))


@dataclass
class _Row:
    """One poem in progress."""

    head: str  # the prompt after its last line break: the start of the first line
    ids: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    rhyme_word: dict[int, str] = field(default_factory=dict)  # group's first line -> its word
    used_ends: set[str] = field(default_factory=set)  # same_word_key of every line's end
    seen_lines: set[str] = field(default_factory=set)  # line keys, to refuse repeats

    def line_head(self) -> str:
        """What the current line starts with before any generated token."""
        return "" if self.lines else self.head


@dataclass
class _Candidate:
    row: _Row
    target: int  # metrical syllables
    span: int  # preferred syllables of the last word
    phase: int = BODY
    ids: list[int] = field(default_factory=list)
    nodes: list[_Trie] = field(default_factory=list)
    word: str | None = None
    punctuation: int = 0


# LineModel -> its token classes, word spellings and, per lexicon, its tries: built once per
# model and process (a LLaMA vocabulary takes seconds to classify), reused by every batch.
_MEMO: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


class _Composer:
    """One `compose` call: the model, the plan, sampling settings and trie caches."""

    def __init__(self, model: LineModel, plan: VersePlan, top_k: int | None,
                 top_p: float | None, seed: int, max_line_tokens: int) -> None:
        self.model, self.plan = model, plan
        self.top_k, self.top_p, self.max_line_tokens = top_k, top_p, max_line_tokens
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        memo = _MEMO.setdefault(model, {})  # per model: tries and token classes are reused
        self.tokens = memo.get("tokens") or memo.setdefault("tokens", _Tokens.of(model))
        self.spellings: dict[str, list[int] | None] = memo.setdefault("spellings", {})
        # keyed by id, and the lexicon kept alive with its tries so that no id is reused
        _, self.tries = memo.setdefault(id(plan.lexicon), (plan.lexicon, {}))
        self.stats = ComposeStats()

    # --- the allowed last words -----------------------------------------------------------

    def _trie(self, key: tuple[Any, ...], choices: Sequence[str], span: int,
              opens: bool) -> _Trie:
        """The trie of the `choices` that add `span` syllables and open with a vowel or not."""
        if (*key, span, opens) not in self.tries:
            trie, entries = _Trie(), self.plan.lexicon.entries
            for word in choices:
                entry = entries.get(word)
                if entry is None or entry.span != span or entry.opens_with_vowel != opens:
                    continue
                if word not in self.spellings:
                    self.spellings[word] = self.model.encode_ending(" " + word)
                if self.spellings[word]:
                    trie.add(self.spellings[word], word)
            self.tries[(*key, span, opens)] = trie
        return self.tries[(*key, span, opens)]

    def _choices(self, row: _Row, line: int) -> tuple[tuple[Any, ...], Sequence[str]]:
        """(cache key, lexicon words) that may end line `line` of `row`, rhyme-wise."""
        spec, lexicon = self.plan.scheme.lines[line], self.plan.lexicon
        if not spec.rhymed:
            return ("free",), tuple(lexicon.entries)
        if spec.first in row.rhyme_word:
            word = row.rhyme_word[spec.first]
            return ("rhyme", spec.kind, word), lexicon.rhymes(word, spec.kind)
        partners = len(spec.group) - 1
        return ("set", spec.kind, partners), lexicon.setters(spec.kind, partners)

    # --- one line --------------------------------------------------------------------------

    def line(self, state: Any, logits: torch.Tensor, temps: torch.Tensor, rows: list[_Row],
             line: int) -> tuple[Any, torch.Tensor]:
        """Write line `line` for every row (K candidates each, one batch); returns the state
        and logits of the kept candidates, one row per row."""
        k = self.plan.candidates
        expand = torch.arange(len(rows), device=self.model.device).repeat_interleave(k)
        state, logits, temps = self.model.select(state, expand), logits[expand], temps[expand]
        target = self.plan.syllables
        cands = [_Candidate(row=row, span=PREFERRED_SPANS[j % len(PREFERRED_SPANS)],
                            target=target or FREE_LENGTHS[j % len(FREE_LENGTHS)])
                 for row in rows for j in range(k)]
        letter = torch.tensor([c.row.line_head()[-1:].isalpha() for c in cands],
                              device=self.model.device)
        logp = torch.zeros(len(cands), dtype=torch.float64, device=self.model.device)
        enough = max(1, (k + 1) // 2)
        for _ in range(self.max_line_tokens):
            if not any(c.phase in (BODY, FINAL) for c in cands) or all(
                    sum(c.phase == DONE for c in cands[r * k:(r + 1) * k]) >= enough
                    for r in range(len(rows))):
                break
            tokens = self._sample(logits, temps, cands, line, letter)
            fed = torch.tensor([c.phase in (BODY, FINAL) and self._take(c, int(t))
                                for c, t in zip(cands, tokens.tolist(), strict=True)],
                               device=self.model.device)
            chosen = torch.log_softmax(logits.float(), -1).gather(1, tokens[:, None])[:, 0]
            logp += torch.where(fed, chosen.double(), torch.zeros_like(logp))
            letter = torch.where(fed, self.tokens.ends_letter[tokens], letter)
            state, logits = self._advance(state, logits, tokens, fed)
        for cand in cands:
            if cand.phase in (BODY, FINAL):
                cand.phase = FAILED
        picks = [self._pick(cands[r * k:(r + 1) * k], logp[r * k:(r + 1) * k]) + r * k
                 for r in range(len(rows))]
        return self._commit(rows, [cands[i] for i in picks], line,
                            self.model.select(state, torch.tensor(picks,
                                                                  device=self.model.device)),
                            logits[picks])

    def _advance(self, state: Any, logits: torch.Tensor, tokens: torch.Tensor,
                 fed: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Feed `tokens` to the rows in `fed`; the other rows keep their state AND their
        next-token logits (a finished candidate's are what its line continues from)."""
        state, new = self.model.advance(state, tokens, fed)
        return state, torch.where(fed[:, None], new, logits)

    def _sample(self, logits: torch.Tensor, temps: torch.Tensor, cands: list[_Candidate],
                line: int, letter: torch.Tensor) -> torch.Tensor:
        """One token per candidate: the body freely (no line break), the last word and line
        end from their allowed sets. A body candidate that reaches its last word switches to
        FINAL here and draws that word's first token instead of the one it sampled."""
        masked = logits.float().clone()
        masked[:, self.tokens.banned] = float("-inf")
        body = torch.tensor([c.phase == BODY for c in cands], device=masked.device)
        masked[body.nonzero()[:, :1], self.tokens.newline.nonzero()[:, 0]] = float("-inf")
        final = [i for i, c in enumerate(cands) if c.phase == FINAL]
        self._restrict(masked, final, cands)
        tokens = sample_next(masked, temps, self.top_k, self.top_p, self.generator)
        boundary = (body & letter & self.tokens.opens_word[tokens]).nonzero()[:, 0].tolist()
        entered = [i for i in boundary if self._enter(cands[i], line)]
        if entered:
            again = logits.float().clone()
            self._restrict(again, entered, cands)
            index = torch.tensor(entered, device=masked.device)
            tokens[index] = sample_next(again[index], temps[index], self.top_k, self.top_p,
                                        self.generator)
        return tokens

    def _restrict(self, masked: torch.Tensor, indices: list[int],
                  cands: list[_Candidate]) -> None:
        """Keep only each listed FINAL candidate's allowed tokens in its row (in place)."""
        for i in indices:
            allowed = self._allowed(cands[i])
            keep = masked[i, allowed].clone()
            masked[i] = float("-inf")
            masked[i, allowed] = keep

    def _allowed(self, cand: _Candidate) -> list[int]:
        if cand.word is not None:  # the word is complete: punctuation, then the line break
            more = self.tokens.punctuation if cand.punctuation < MAX_PUNCTUATION else []
            return self.tokens.line_end + more
        return sorted({token for node in cand.nodes for token in node.children})

    def _enter(self, cand: _Candidate, line: int) -> bool:
        """At a word boundary: enter FINAL when the syllables left fit a last word of about
        the candidate's preferred length; FAILED when the body already reached the target."""
        tokens = words(cand.row.line_head() + self.model.decode(cand.ids))
        if not tokens or tokens[-1] == "y":  # a "y" joins by the word after it: wait
            return False
        meter, sound = scan_words(tokens), word_sound(tokens[-1])
        if meter is None or sound is None:
            return False
        left = cand.target - (meter.phonological - meter.synalephas)
        if left <= 0:
            cand.phase = FAILED
            return False
        if left > cand.span:
            return False
        key, choices = self._choices(cand.row, line)
        roots = [self._trie(key, choices, left, False),  # synalepha takes a syllable off
                 self._trie(key, choices, left + sound.closes_with_vowel, True)]
        roots = [root for root in roots if root.children]
        if roots:
            cand.phase, cand.nodes = FINAL, roots
        return bool(roots)

    def _take(self, cand: _Candidate, token: int) -> bool:
        """Append `token` to the candidate; whether the model must be fed it."""
        if len(cand.ids) >= self.max_line_tokens:
            cand.phase = FAILED
            return False
        cand.ids.append(token)
        if cand.phase == FINAL and cand.word is None:
            cand.nodes = [node.children[token] for node in cand.nodes if token in node.children]
            ended = [node.word for node in cand.nodes if node.word is not None
                     and same_word_key(node.word) not in cand.row.used_ends]
            if ended:
                cand.word = ended[0]
            elif not any(node.children for node in cand.nodes):
                cand.phase = FAILED  # every allowed word here was used already
        elif cand.phase == FINAL:
            if token in self.tokens.line_end:
                cand.phase = DONE
            else:
                cand.punctuation += 1
        return True

    def _pick(self, cands: list[_Candidate], logp: torch.Tensor) -> int:
        """The index (within `cands`, one row's) of the candidate to keep."""
        best, best_failed = None, None
        for i, cand in enumerate(cands):
            text = self.model.decode(cand.ids)
            score = float(logp[i]) / max(1, len(text))
            ok = cand.phase == DONE and " ".join(words(text)) not in cand.row.seen_lines
            if ok and (best is None or score > best[0]):
                best = (score, i)
            if best_failed is None or score > best_failed[0]:
                best_failed = (score, i)
        if best is None:
            self.stats.forced += 1
            best = best_failed
        return best[1]

    def _commit(self, rows: list[_Row], kept: list[_Candidate], line: int, state: Any,
                logits: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Record each row's kept line; a broken-off one gets its line break fed here."""
        broken = torch.tensor([c.phase != DONE for c in kept], device=self.model.device)
        if bool(broken.any()):
            newline = torch.full((len(rows),), self.tokens.newline_id, device=self.model.device)
            state, logits = self._advance(state, logits, newline, broken)
        first = self.plan.scheme.lines[line].first
        for row, cand in zip(rows, kept, strict=True):
            ids = cand.ids + ([self.tokens.newline_id] if cand.phase != DONE else [])
            text = (row.line_head() + self.model.decode(ids)).strip()
            row.ids.extend(ids)
            row.lines.append(text)
            found = words(text)
            row.seen_lines.add(" ".join(found))
            if found:
                row.used_ends.add(same_word_key(found[-1]))
                if first is not None and first not in row.rhyme_word:
                    row.rhyme_word[first] = found[-1]
        self.stats.lines += len(rows)
        return state, logits


def compose(model: LineModel, prompts: list[str], temperatures: list[float], plan: VersePlan,
            *, max_line_tokens: int, top_k: int | None = None, top_p: float | None = None,
            seed: int = 42) -> tuple[list[str], ComposeStats]:
    """One poem per (prompt, temperature) row following `plan`; the texts are continuations
    (the prompt excluded), stanzas separated by a blank line. See the module docstring."""
    if len(prompts) != len(temperatures) or not prompts:
        raise ValueError("need one temperature per prompt (>= 1 row)")
    composer = _Composer(model, plan, top_k, top_p, seed, max_line_tokens)
    temps = torch.tensor(temperatures, dtype=torch.float32, device=model.device)
    rows = [_Row(head=prompt.rsplit("\n", 1)[-1]) for prompt in prompts]
    state, logits = model.start(prompts)
    sizes = plan.scheme.stanza_sizes
    stanza_ends = {sum(sizes[:i + 1]) - 1 for i in range(len(sizes) - 1)}
    everyone = torch.ones(len(rows), dtype=torch.bool, device=model.device)
    newline = torch.full((len(rows),), composer.tokens.newline_id, device=model.device)
    for line in range(len(plan.scheme)):
        state, logits = composer.line(state, logits, temps, rows, line)
        if line in stanza_ends:  # a blank line between stanzas
            state, logits = model.advance(state, newline, everyone)
            for row in rows:
                row.ids.append(composer.tokens.newline_id)
    return [model.continuation(r, row.ids) for r, row in enumerate(rows)], composer.stats
