"""Metrical syllable counts of a verse corpus and the speed of lyricgen.verse.

    python bench/verse_meter.py                      (DISCO's valid split)
    python bench/verse_meter.py --corpus FILE.txt    (any text, one verse per line)

Prints the distribution of metrical syllables per line (lyricgen.verse.meter; marker lines and
blank lines dropped), then the speed of `scan_line`, of a `LineJudge` scoring every line as a
candidate, and of `annotate` on each poem (text between `<|fin|>` markers) against the sonnet
scheme: cold (word caches emptied) and warm (second pass), in CPU time of this process, so that
other work on the machine changes the figures less. The load average is printed with them.
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from collections.abc import Callable
from pathlib import Path

from lyricgen.verse import meter, rhyme
from lyricgen.verse.scheme import LineJudge, annotate, parse_scheme

DISCO_VALID = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco/valid.txt"
SONNET = "ABBA ABBA CDC DCD"


def rates(work: Callable[[], object], items: int) -> tuple[float, float]:
    """Items per CPU second, cold (caches emptied) and warm."""
    meter.clear_caches()
    result = []
    for _ in range(2):
        start = time.process_time()
        work()
        result.append(items / max(time.process_time() - start, 1e-9))
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DISCO_VALID)
    args = parser.parse_args()
    text = args.corpus.read_text(encoding="utf-8")
    lines = [line for block in rhyme.stanzas(text) for line in block]
    poems = [poem for poem in text.split("<|fin|>") if poem.strip()]
    counts = collections.Counter(meter.metrical_syllables(line) for line in lines)
    print(f"{args.corpus}: {len(lines)} lines, {len(poems)} poems; load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| metrical syllables | lines | share |\n|---:|---:|---:|")
    for syllables, number in sorted(counts.items(), key=lambda item: (item[0] is None, item)):
        print(f"| {syllables} | {number} | {number / len(lines):.1%} |")
    scheme = parse_scheme(SONNET)
    judge = LineJudge.at(scheme, lines[:3])
    print("\n| operation | cold /s | warm /s |\n|---|---:|---:|")
    for name, work, items in (
            ("scan_line (lines)", lambda: [meter.scan_line(line) for line in lines], len(lines)),
            ("LineJudge (candidates)", lambda: [judge(line) for line in lines], len(lines)),
            (f"annotate {SONNET} (poems)", lambda: [annotate(poem, scheme, 11) for poem in poems],
             len(poems))):
        cold, warm = rates(work, items)
        print(f"| {name} | {cold:,.0f} | {warm:,.0f} |")


if __name__ == "__main__":
    main()
