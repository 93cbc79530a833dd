"""Which module implements each job kind, and its config class.

`python -m lyricgen KIND` imports the kind's module lazily; every module exposes
`run(params: dict, ctx: RunContext) -> dict | None` (the returned dict, if any, is added to
provenance.json). Each kind's config class (`CONFIGS`) is built from the one param schema in
kindspec.registry by its `from_params` (lyricgen.params.build_config).
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
CONFIGS: dict[str, str] = {
    "scrape": "lyricgen.corpus.scrape:ScrapeParams",
    "clean": "lyricgen.corpus.clean:CleanParams",
    "train-rnn": "lyricgen.rnn.config:TrainConfig",
    "generate-grid": "lyricgen.grid:GridSpec",
    "report": "lyricgen.grid_report:ReportParams",
    "finetune-llama": "lyricgen.llama.params:FinetuneParams",
}


def load_runner(kind: str) -> Callable[..., Any]:
    return importlib.import_module(ENTRY_POINTS[kind]).run


def config_class(kind: str) -> Any:
    """The kind's config dataclass (its fields are the kind's params)."""
    module, name = CONFIGS[kind].split(":")
    return getattr(importlib.import_module(module), name)
