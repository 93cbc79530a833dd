"""Which module implements each job kind: `python -m lyricgen KIND` imports it lazily.

Every entry's module exposes `run(params: dict, ctx: RunContext) -> dict | None` (the returned
dict, if any, is added to provenance.json). Keep in step with jobs/kinds.py (params schema).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

ENTRY_POINTS: dict[str, str] = {
    "scrape": "lyricgen.corpus.scrape",
    "clean": "lyricgen.corpus.clean",
    "train-rnn": "lyricgen.rnn.train",
    "generate-grid": "lyricgen.grid",
    "report": "lyricgen.grid_report",
    "finetune-llama": "lyricgen.llama.finetune",
}


def load_runner(kind: str) -> Callable[..., Any]:
    return importlib.import_module(ENTRY_POINTS[kind]).run
