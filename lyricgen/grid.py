"""The `generate-grid` kind: sample prompts x temperatures x samples from one model, score every
text (lyricgen.metrics) and write cells/*.txt, grid.json, metrics.json and, when the job is a
single task, the HTML report (lyricgen.report).

Cells, batches, seeds and shards:
- cell c = (prompt i, temperature j, sample k) with c = (i * T + j) * S + k.
- the cells are cut into FIXED batches of `batch_size` consecutive cells; batch b is one
  batched `generate()` call with seed `seed + b`.
- array task t of n (ctx.task_index / ctx.task_count; jobctl makes n = params.shards tasks)
  takes the batches b with b % n == t. Striping whole batches rather than single cells keeps
  every batch, hence every cell's text, independent of the number of shards: merging the n
  shard grids (`merge_grids`, the `report` kind) gives exactly the single-task grid. The price
  is coarser balance: a grid of fewer than n batches leaves some tasks without work.
- a task writes into its own out dir (`out/<t>/` when n > 1, see lyricgen.context).

Resume: every finished batch is appended to progress.jsonl with a fingerprint of the params; a
rerun in the same out dir skips those batches and ends with the same grid as an uninterrupted
run. Changed params (another fingerprint) never reuse old texts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lyricgen.context import RunContext
from lyricgen.errors import LyricgenInputError
from lyricgen.generation import TextGenerator, load_generator, model_kind_of
from lyricgen.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from lyricgen.metrics import METRIC_DEFINITIONS, mean_metrics, text_metrics
from lyricgen.params import build_config

GRID_SCHEMA = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridSpec:
    """The generate-grid params (kindspec.registry GENERATE_GRID: defaults and checks there)."""

    model: str
    prompts: tuple[str, ...]
    temperatures: tuple[float, ...]
    top_p: float | None
    top_k: int | None
    max_tokens: int
    samples: int
    seed: int
    shards: int
    batch_size: int
    device: str

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> GridSpec:
        """Check types and ranges; LyricgenInputError names the offending `params: KEY`."""
        return build_config(cls, "generate-grid", params)

    def to_params(self) -> dict[str, Any]:
        """The resolved params as JSON-ready values."""
        data = asdict(self)
        data["prompts"], data["temperatures"] = list(self.prompts), list(self.temperatures)
        return data

    def fingerprint(self) -> str:
        """Identifies what a batch's texts depend on: every param but `shards`, and the size
        and mtime of the model's files (so a retrained model never reuses old texts)."""
        data = {k: v for k, v in self.to_params().items() if k != "shards"}
        data["model_files"] = _model_stamp(Path(self.model))
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _model_stamp(path: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of the model file, or of the files in the model dir and its
    direct subdirs (checkpoint/, adapter/...)."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in [*path.glob("*"), *path.glob("*/*")] if p.is_file())
    return [(str(p.relative_to(path) if p != path else p.name), p.stat().st_size,
             p.stat().st_mtime_ns) for p in files]


@dataclass(frozen=True)
class Cell:
    index: int
    prompt_index: int
    temperature_index: int
    sample: int
    prompt: str
    temperature: float

    @property
    def file(self) -> str:
        """Path of the cell's text, relative to the out dir (only [A-Za-z0-9_.-] characters)."""
        label = repr(self.temperature).replace("+", "")
        return f"cells/p{self.prompt_index}_t{label}_s{self.sample}.txt"


def grid_cells(spec: GridSpec) -> list[Cell]:
    """All cells in index order: prompt-major, then temperature, then sample."""
    return [Cell(len(spec.temperatures) * spec.samples * i + spec.samples * j + k, i, j, k,
                 prompt, temperature)
            for i, prompt in enumerate(spec.prompts)
            for j, temperature in enumerate(spec.temperatures)
            for k in range(spec.samples)]


def task_batches(n_cells: int, batch_size: int, task_index: int, task_count: int
                 ) -> list[int]:
    """Indices of the fixed batches that array task `task_index` of `task_count` generates."""
    n_batches = -(-n_cells // batch_size)
    return list(range(task_index, n_batches, task_count))


def _load_progress(path: Path, fingerprint: str) -> dict[int, list[str]]:
    try:
        records = read_jsonl(path, repair=True)
    except ValueError as exc:
        raise LyricgenInputError(f"{exc} (delete the file to generate again)") from exc
    return {r["batch"]: r["texts"] for r in records if r.get("fingerprint") == fingerprint}


def generate_texts(spec: GridSpec, cells: list[Cell], batch_ids: list[int],
                   generator: Callable[[], TextGenerator], progress: Path) -> dict[int, str]:
    """Cell index -> continuation for the given batches, resuming from `progress` (JSONL).

    `generator` is called only when a batch is missing, so a finished task loads no model.
    """
    fingerprint = spec.fingerprint()
    done = _load_progress(progress, fingerprint)
    texts: dict[int, str] = {}
    total = sum(len(cells[b * spec.batch_size:(b + 1) * spec.batch_size]) for b in batch_ids)
    with tqdm(total=total, desc="generate-grid", unit="cell") as bar:
        for batch in batch_ids:
            rows = cells[batch * spec.batch_size:(batch + 1) * spec.batch_size]
            out = done.get(batch)
            if out is None:
                out = generator().generate(
                    [c.prompt for c in rows], [c.temperature for c in rows],
                    max_tokens=spec.max_tokens, top_k=spec.top_k or None, top_p=spec.top_p,
                    seed=spec.seed + batch)
                if len(out) != len(rows):
                    raise RuntimeError(f"generator returned {len(out)} texts for {len(rows)} rows")
                append_jsonl(progress, {"fingerprint": fingerprint, "batch": batch,
                                        "texts": list(out)})
            texts.update((cell.index, text) for cell, text in zip(rows, out, strict=True))
            bar.update(len(rows))
    return texts


def cell_record(cell: Cell, text: str, spec: GridSpec) -> dict[str, Any]:
    """One cell of grid.json: where it sits, how it was sampled, its text and metrics."""
    batch = cell.index // spec.batch_size
    return {"cell": cell.index, "prompt_index": cell.prompt_index,
            "temperature_index": cell.temperature_index, "sample": cell.sample,
            "prompt": cell.prompt, "temperature": cell.temperature, "batch": batch,
            "seed": spec.seed + batch, "file": cell.file, "text": text,
            "metrics": text_metrics(text)}


def aggregate(cells: list[dict[str, Any]], temperatures: list[float]) -> dict[str, Any]:
    """Mean metrics per temperature (only temperatures that have cells)."""
    rows = []
    for temperature in temperatures:
        metrics = [c["metrics"] for c in cells if c["temperature"] == temperature]
        if metrics:
            rows.append({"temperature": temperature, "cells": len(metrics),
                         "mean": mean_metrics(metrics)})
    return {"by_temperature": rows}


def assemble(header: dict[str, Any], cells: list[dict[str, Any]],
             shard: dict[str, int] | None) -> dict[str, Any]:
    """A grid.json document from its header (schema..cells_total), cells and shard info."""
    cells = sorted(cells, key=lambda c: c["cell"])
    return {**header, "shard": shard, "cells": cells,
            "aggregates": aggregate(cells, header["temperatures"]),
            "metric_definitions": METRIC_DEFINITIONS}


def grid_header(spec: GridSpec, model_kind: str) -> dict[str, Any]:
    return {"schema": GRID_SCHEMA, "kind": "generate-grid",
            "model": {"path": spec.model, "kind": model_kind}, "seed": spec.seed,
            "params": spec.to_params(), "prompts": list(spec.prompts),
            "temperatures": list(spec.temperatures), "samples": spec.samples,
            "cells_total": len(spec.prompts) * len(spec.temperatures) * spec.samples}


HEADER_KEYS = ("schema", "kind", "model", "seed", "params", "prompts", "temperatures", "samples",
               "cells_total")


def merge_grids(grids: list[dict[str, Any]], source: Path) -> dict[str, Any]:
    """One complete grid from a single-task grid or all shards of one job.

    Checks that the shards share one header (same model and params), that every shard
    0..n-1 is there, and that every cell appears exactly once; LyricgenInputError otherwise.
    """
    header = {key: grids[0].get(key) for key in HEADER_KEYS}
    for grid in grids[1:]:
        if {key: grid.get(key) for key in HEADER_KEYS} != header:
            raise LyricgenInputError(f"{source}: grid: shards come from different params/models")
    shards = [g["shard"] for g in grids if g.get("shard")]
    if shards:
        count = shards[0]["count"]
        found = sorted(s["index"] for s in shards)
        if len(shards) != len(grids) or found != list(range(count)):
            raise LyricgenInputError(f"{source}: grid: expected shards 0..{count - 1}, "
                                     f"found {found} (did every array task finish?)")
    cells = [cell for grid in grids for cell in grid["cells"]]
    indices = sorted(c["cell"] for c in cells)
    if indices != list(range(header["cells_total"])):
        raise LyricgenInputError(f"{source}: grid: cells are missing or repeated "
                                 f"({len(indices)} of {header['cells_total']})")
    return assemble(header, cells, None)


def load_grids(path: Path) -> list[dict[str, Any]]:
    """grid.json documents of a generate-grid out dir: `path` itself if a file, else
    `path/grid.json`, else the shards' `path/<i>/grid.json`."""
    path = Path(path)
    if path.is_dir() and (path / "grid.json").is_file():
        files = [path / "grid.json"]
    elif path.is_dir():
        files = sorted((p / "grid.json" for p in path.iterdir()
                        if p.name.isdigit() and (p / "grid.json").is_file()),
                       key=lambda p: int(p.parent.name))
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise LyricgenInputError(f"{path}: grid: no grid.json here or in numbered shard dirs")
    grids = []
    for file in files:
        try:
            grids.append(json.loads(file.read_text(encoding="utf-8")))
        except (ValueError, UnicodeDecodeError) as exc:
            raise LyricgenInputError(f"{file}: grid: not valid JSON ({exc})") from exc
        if grids[-1].get("schema") != GRID_SCHEMA or grids[-1].get("kind") != "generate-grid":
            raise LyricgenInputError(f"{file}: grid: not a generate-grid grid.json")
    return grids


def write_grid(out_dir: Path, grid: dict[str, Any]) -> None:
    """cells/*.txt (prompt + continuation) and grid.json, atomically."""
    for cell in grid["cells"]:
        atomic_write_text(out_dir / cell["file"], cell["prompt"] + cell["text"])
    atomic_write_json(out_dir / "grid.json", grid)


def run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Generate this task's batches; write cells, grid.json, metrics.json (and the report)."""
    spec = GridSpec.from_params(params)
    kind = model_kind_of(Path(spec.model))
    cells = grid_cells(spec)
    batch_ids = task_batches(len(cells), spec.batch_size, ctx.task_index, ctx.task_count)
    if not batch_ids:
        log.warning("task %d of %d has no batch (%d cells, batch_size %d)", ctx.task_index,
                    ctx.task_count, len(cells), spec.batch_size)
    loaded: list[TextGenerator] = []

    def generator() -> TextGenerator:
        if not loaded:
            loaded.append(load_generator(Path(spec.model), spec.device))
        return loaded[0]

    started = time.perf_counter()
    texts = generate_texts(spec, cells, batch_ids, generator, ctx.path("progress.jsonl"))
    seconds = time.perf_counter() - started
    records = [cell_record(c, texts[c.index], spec) for c in cells if c.index in texts]
    shard = {"index": ctx.task_index, "count": ctx.task_count} if ctx.task_count > 1 else None
    grid = assemble(grid_header(spec, kind), records, shard)
    write_grid(ctx.out_dir, grid)
    summary = {"model_kind": kind, "cells": len(records), "batches": len(batch_ids),
               "chars": sum(len(t) for t in texts.values()), "seconds": round(seconds, 3)}
    atomic_write_json(ctx.out_dir / "metrics.json", {**summary, **grid["aggregates"]})
    if shard is None:
        from lyricgen.report import write_report  # matplotlib + Jinja only where needed

        write_report(ctx.out_dir, grid)
    return summary
