"""The `generate-grid` kind: sample prompts x temperatures x samples from one model, score every
text (lyricgen.metrics) and write cells/*.txt, grid.json, metrics.json and, when the job is a
single task, the HTML report (lyricgen.report).

Cells, batches, seeds and shards:
- cell c = (mode m, prompt i, temperature j, sample k) with c = ((m * P + i) * T + j) * S + k.
  Modes: "free" (plain sampling, `max_tokens` tokens) without a `scheme`; with one, "verse"
  (lyricgen.verse.compose: the scheme's rhymes and `syllables` enforced line by line,
  `max_tokens` capping each line), plus "free" too when `compare_free` is set. Every cell of
  a grid with a scheme is also judged against it (lyricgen.verse.scheme.annotate), so verse
  and free cells compare.
- the cells are cut into FIXED batches of `batch_size` consecutive cells; batch b is one
  batched `generate()` call per mode in it, seeded with `seed + b`.
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

from lyricgen import threads
from lyricgen.context import RunContext
from lyricgen.errors import LyricgenInputError
from lyricgen.generation import TextGenerator, load_generator, model_kind_of
from lyricgen.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from lyricgen.metrics import METRIC_DEFINITIONS, mean_metrics, text_metrics
from lyricgen.params import build_config
from lyricgen.verse.compose import VersePlan, compose
from lyricgen.verse.lexicon import EMBEDDED_VERSE, RhymeLexicon
from lyricgen.verse.scheme import Scheme, annotate, parse_scheme

GRID_SCHEMA = 2  # 2: cells have a mode (verse | free) and, with a scheme, a verse record
VERSE, FREE = "verse", "free"
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
    scheme: str | None
    syllables: int | None
    rhyme: str
    candidates: int
    lexicon: str | None
    compare_free: bool

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> GridSpec:
        """Check types and ranges; LyricgenInputError names the offending `params: KEY`."""
        return build_config(cls, "generate-grid", params)

    @property
    def modes(self) -> tuple[str, ...]:
        """"verse" (scheme and meter enforced) and/or "free" cells, in cell order."""
        if self.scheme is None:
            return (FREE,)
        return (VERSE, FREE) if self.compare_free else (VERSE,)

    def parsed_scheme(self) -> Scheme | None:
        return None if self.scheme is None else parse_scheme(self.scheme, self.rhyme)

    def verse_plan(self) -> VersePlan:
        """What `compose` needs (loads the lexicon: seconds, cached per process)."""
        scheme = self.parsed_scheme()
        if scheme is None:
            raise ValueError("a verse plan needs a scheme")
        paths = (Path(self.lexicon),) if self.lexicon else (EMBEDDED_VERSE,)
        return VersePlan(scheme, self.syllables, self.candidates, RhymeLexicon.load(paths))

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
        if self.lexicon:
            data["lexicon_files"] = _model_stamp(Path(self.lexicon))
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
    mode: str = FREE

    @property
    def file(self) -> str:
        """Path of the cell's text, relative to the out dir (only [A-Za-z0-9_.-] characters)."""
        label = repr(self.temperature).replace("+", "")
        suffix = "_verse" if self.mode == VERSE else ""
        return f"cells/p{self.prompt_index}_t{label}_s{self.sample}{suffix}.txt"


def grid_cells(spec: GridSpec) -> list[Cell]:
    """All cells in index order: mode-major (verse cells first), then prompt, temperature,
    sample."""
    cells = [(mode, i, prompt, j, temperature, k) for mode in spec.modes
             for i, prompt in enumerate(spec.prompts)
             for j, temperature in enumerate(spec.temperatures)
             for k in range(spec.samples)]
    return [Cell(index, i, j, k, prompt, temperature, mode)
            for index, (mode, i, prompt, j, temperature, k) in enumerate(cells)]


def task_batches(n_cells: int, batch_size: int, task_index: int, task_count: int
                 ) -> list[int]:
    """Indices of the fixed batches that array task `task_index` of `task_count` generates."""
    n_batches = -(-n_cells // batch_size)
    return list(range(task_index, n_batches, task_count))


def _load_progress(path: Path, fingerprint: str) -> dict[int, dict[str, Any]]:
    try:
        records = read_jsonl(path, repair=True)
    except ValueError as exc:
        raise LyricgenInputError(f"{exc} (delete the file to generate again)") from exc
    return {r["batch"]: r for r in records if r.get("fingerprint") == fingerprint}


def generate_texts(spec: GridSpec, cells: list[Cell], batch_ids: list[int],
                   generator: Callable[[], TextGenerator], progress: Path
                   ) -> tuple[dict[int, str], int]:
    """Cell index -> continuation for the given batches, resuming from `progress` (JSONL),
    and the number of verse lines kept although no candidate finished (lyricgen.verse.compose).

    `generator` is called only when a batch is missing, so a finished task loads no model.
    """
    fingerprint = spec.fingerprint()
    done = _load_progress(progress, fingerprint)
    texts: dict[int, str] = {}
    forced = 0
    total = sum(len(cells[b * spec.batch_size:(b + 1) * spec.batch_size]) for b in batch_ids)
    with tqdm(total=total, desc="generate-grid", unit="cell") as bar:
        for batch in batch_ids:
            rows = cells[batch * spec.batch_size:(batch + 1) * spec.batch_size]
            record = done.get(batch)
            if record is None:
                out, lines_forced = batch_texts(spec, rows, generator(), spec.seed + batch)
                record = {"fingerprint": fingerprint, "batch": batch, "texts": out,
                          "forced": lines_forced}
                append_jsonl(progress, record)
            texts.update((cell.index, text)
                         for cell, text in zip(rows, record["texts"], strict=True))
            forced += record.get("forced", 0)
            bar.update(len(rows))
    return texts, forced


def batch_texts(spec: GridSpec, rows: list[Cell], generator: TextGenerator, seed: int
                 ) -> tuple[list[str], int]:
    """One batch's texts: its free rows in one `generate` call, its verse rows in one
    `compose` call (max_tokens then caps each line), both seeded with `seed`."""
    texts: list[str] = [""] * len(rows)
    forced = 0
    for mode in spec.modes:
        picked = [i for i, cell in enumerate(rows) if cell.mode == mode]
        if not picked:
            continue
        prompts = [rows[i].prompt for i in picked]
        temperatures = [rows[i].temperature for i in picked]
        if mode == VERSE:
            out, stats = compose(generator.line_model(), prompts, temperatures,
                                 spec.verse_plan(), max_line_tokens=spec.max_tokens,
                                 top_k=spec.top_k or None, top_p=spec.top_p, seed=seed)
            forced += stats.forced
        else:
            out = generator.generate(prompts, temperatures, max_tokens=spec.max_tokens,
                                     top_k=spec.top_k or None, top_p=spec.top_p, seed=seed)
        if len(out) != len(picked):
            raise RuntimeError(f"generator returned {len(out)} texts for {len(picked)} rows")
        for i, text in zip(picked, out, strict=True):
            texts[i] = text
    return texts, forced


def cell_record(cell: Cell, text: str, spec: GridSpec,
                scheme: Scheme | None = None) -> dict[str, Any]:
    """One cell of grid.json: where it sits, how it was sampled, its text and metrics. With a
    scheme (verse and free cells alike) also `verse`: lyricgen.verse.scheme.annotate of the
    poem, whose first line starts with the prompt's last line, and its shares as metrics."""
    batch = cell.index // spec.batch_size
    record = {"cell": cell.index, "mode": cell.mode, "prompt_index": cell.prompt_index,
              "temperature_index": cell.temperature_index, "sample": cell.sample,
              "prompt": cell.prompt, "temperature": cell.temperature, "batch": batch,
              "seed": spec.seed + batch, "file": cell.file, "text": text,
              "metrics": text_metrics(text)}
    if scheme is not None:
        verse = annotate(cell.prompt.rsplit("\n", 1)[-1] + text, scheme, spec.syllables)
        record["verse"] = verse
        record["metrics"].update(scheme_share=verse["scheme_share"],
                                 meter_share=verse["meter_share"])
    return record


def aggregate(cells: list[dict[str, Any]], temperatures: list[float],
              modes: list[str]) -> dict[str, Any]:
    """Mean metrics per mode and temperature (only those that have cells)."""
    rows = []
    for mode in modes:
        for temperature in temperatures:
            metrics = [c["metrics"] for c in cells
                       if c["temperature"] == temperature and c.get("mode", FREE) == mode]
            if metrics:
                rows.append({"mode": mode, "temperature": temperature, "cells": len(metrics),
                             "mean": mean_metrics(metrics)})
    return {"by_temperature": rows}


def assemble(header: dict[str, Any], cells: list[dict[str, Any]],
             shard: dict[str, int] | None) -> dict[str, Any]:
    """A grid.json document from its header (schema..cells_total), cells and shard info."""
    cells = sorted(cells, key=lambda c: c["cell"])
    return {**header, "shard": shard, "cells": cells,
            "aggregates": aggregate(cells, header["temperatures"], header["modes"]),
            "metric_definitions": METRIC_DEFINITIONS}


def grid_header(spec: GridSpec, model_kind: str) -> dict[str, Any]:
    return {"schema": GRID_SCHEMA, "kind": "generate-grid",
            "model": {"path": spec.model, "kind": model_kind}, "seed": spec.seed,
            "params": spec.to_params(), "prompts": list(spec.prompts),
            "temperatures": list(spec.temperatures), "samples": spec.samples,
            "modes": list(spec.modes), "scheme": spec.scheme, "syllables": spec.syllables,
            "cells_total": len(spec.modes) * len(spec.prompts) * len(spec.temperatures)
            * spec.samples}


HEADER_KEYS = ("schema", "kind", "model", "seed", "params", "prompts", "temperatures", "samples",
               "modes", "scheme", "syllables", "cells_total")


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
    texts, forced = generate_texts(spec, cells, batch_ids, generator,
                                   ctx.path("progress.jsonl"))
    seconds = time.perf_counter() - started
    scheme = spec.parsed_scheme()
    records = [cell_record(c, texts[c.index], spec, scheme) for c in cells if c.index in texts]
    shard = {"index": ctx.task_index, "count": ctx.task_count} if ctx.task_count > 1 else None
    grid = assemble(grid_header(spec, kind), records, shard)
    write_grid(ctx.out_dir, grid)
    summary = {"model_kind": kind, "cells": len(records), "batches": len(batch_ids),
               "chars": sum(len(t) for t in texts.values()), "seconds": round(seconds, 3),
               "verse_lines_forced": forced, **{f"threads_{k}": v for k, v in
                                                threads.applied().items()}}
    atomic_write_json(ctx.out_dir / "metrics.json", {**summary, **grid["aggregates"]})
    if shard is None:
        from lyricgen.report import write_report  # matplotlib + Jinja only where needed

        write_report(ctx.out_dir, grid)
    return summary
