"""Corpus statistics: per-song table (stats.csv), totals (stats.json) and length histograms.

Definitions (the same as ../shared/corpora/disco/README.md's word counts): lines are non-blank
lines, stanzas are blocks separated by blank lines, words are whitespace-separated tokens,
characters are len(text) without the marker; the vocabulary is the set of distinct lower-cased
letter-only word forms (apostrophes inside a word allowed). Plots use matplotlib's Figure
(Agg canvas, no pyplot state), written atomically.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from lyricgen.io import atomic_write_bytes, atomic_write_json, atomic_write_text

COUNT_COLUMNS = ("lines", "words", "characters", "stanzas")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def text_counts(text: str) -> dict[str, int]:
    """lines, words, characters and stanzas of one song."""
    lines = [line for line in text.split("\n") if line.strip()]
    stanzas = [block for block in re.split(r"\n\s*\n", text) if block.strip()]
    return {"lines": len(lines), "words": len(text.split()), "characters": len(text),
            "stanzas": len(stanzas)}


def song_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per song: the given fields (id, title, artist, split, text) plus the counts."""
    records = [{**{k: v for k, v in row.items() if k != "text"}, **text_counts(row["text"])}
               for row in rows]
    return pd.DataFrame.from_records(records)


def vocabulary(texts: Sequence[str]) -> set[str]:
    """Distinct lower-cased word forms."""
    words: set[str] = set()
    for text in texts:
        words.update(_WORD.findall(text.lower()))
    return words


def summary(table: pd.DataFrame, texts: Sequence[str]) -> dict[str, Any]:
    """Totals, means, medians, vocabulary size and per-split counts (plain JSON types)."""
    columns = list(COUNT_COLUMNS)
    splits = table.groupby("split")[columns].sum()
    per_split = {name: {"songs": int((table["split"] == name).sum()),
                        **{c: int(splits.loc[name, c]) if name in splits.index else 0
                           for c in columns}}
                 for name in ("train", "valid", "test")}
    return {
        "songs": len(table),
        "totals": {c: int(table[c].sum()) for c in columns},
        "mean": {c: round(float(table[c].mean()), 3) for c in columns},
        "median": {c: float(table[c].median()) for c in columns},
        "min": {c: int(table[c].min()) for c in columns},
        "max": {c: int(table[c].max()) for c in columns},
        "vocabulary_size": len(vocabulary(texts)),
        "splits": per_split,
    }


def histogram_png(values: Sequence[int], title: str, xlabel: str) -> bytes:
    """A histogram as PNG bytes."""
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    axes.hist(values, bins=min(40, max(5, len(set(values)))), color="#4C72B0", edgecolor="white")
    median = float(pd.Series(values).median())
    axes.axvline(median, color="#C44E52", linestyle="--", label=f"median {median:g}")
    axes.legend()
    axes.set(title=title, xlabel=xlabel, ylabel="songs")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_stats(out_dir: Path, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Write stats.csv, stats.json, hist_words.png and hist_lines.png; return the summary."""
    table = song_table(rows)
    atomic_write_text(out_dir / "stats.csv", table.to_csv(index=False))
    result = summary(table, [row["text"] for row in rows])
    atomic_write_json(out_dir / "stats.json", result)
    atomic_write_bytes(out_dir / "hist_words.png",
                       histogram_png(table["words"].tolist(), "Words per song", "words"))
    atomic_write_bytes(out_dir / "hist_lines.png",
                       histogram_png(table["lines"].tolist(), "Lines per song", "lines"))
    return result
