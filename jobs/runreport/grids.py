"""Every generation grid of a run: its mean metrics by mode and temperature, the model it
sampled (the training job of this run that made it, when there is one), a few verses side
by side, and a link to the grid's own full report (lyricgen/report.py).

Which grid.json (lyricgen/grid.py, schema 2) stands for a generate-grid job: that of the
`report` job that merged it (its `grid` param names the job's out dir), else the job's own
out/grid.json (a single task, which also writes report.html), else its shards'
out/<i>/grid.json, whose cells are pooled here (no report.html then: add a `report` job).
Means come from the grid's `aggregates` when it is whole, else from the pooled cells, as
lyricgen computes them: per metric over the cells that have a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.runreport.tasks import RunView, task_out_dir
from jobs.runreport.training import read_object

GRID_KINDS = ("generate-grid", "report")
# Shown per mode and temperature, in this order; the verse shares only with a scheme.
METRICS = ("words", "lines", "distinct_2", "rhyme_consecutive_any", "rhyme_alternate_any")
VERSE_METRICS = ("scheme_share", "meter_share")
SAMPLE_PROMPTS = 2  # prompts shown side by side
SAMPLE_LINES = 16  # lines of each sample shown


@dataclass(frozen=True)
class GridSummary:
    job: str  # the job whose grid this is (a report job's, or the generate-grid job's)
    source: str  # grid.json path(s) read
    model_path: str
    model_kind: str
    model_job: str | None  # the run's job (task) whose out dir holds the model
    scheme: str | None
    syllables: int | None
    metrics: tuple[str, ...]
    definitions: Mapping[str, str]
    rows: tuple[Mapping[str, Any], ...]  # {"mode", "temperature", "cells", "mean": {...}}
    columns: tuple[tuple[str, float], ...]  # (mode, temperature) of the sample table
    samples: tuple[tuple[str, tuple[Mapping[str, Any] | None, ...]], ...]  # prompt, cells
    report: Path | None  # the grid's full report.html


def grid_summaries(view: RunView) -> list[GridSummary]:
    """One summary per grid of the run (module docstring), in run order."""
    jobs = view.record["jobs"]
    merged = {str(Path(jobs[name]["spec"]["tasks"][0]["params"].get("grid", ""))): name
              for name in view.record["order"] if jobs[name]["kind"] == "report"}
    summaries = []
    for name in view.record["order"]:
        job = jobs[name]
        if job["kind"] == "generate-grid" and job["out_dir"] in merged:
            continue  # its report job shows it
        if job["kind"] in GRID_KINDS:
            summary = _summary(view, name, Path(job["out_dir"]))
            if summary is not None:
                summaries.append(summary)
    return summaries


def _summary(view: RunView, name: str, out: Path) -> GridSummary | None:
    whole = read_object(out / "grid.json")
    files = [out / "grid.json"] if whole else sorted(
        (p / "grid.json" for p in out.glob("[0-9]*") if (p / "grid.json").is_file()),
        key=lambda p: int(p.parent.name))
    grids = [whole] if whole else [g for g in (read_object(f) for f in files) if g]
    if not grids or any(g.get("kind") != "generate-grid" for g in grids):
        return None
    head = grids[0]
    cells = sorted((c for g in grids for c in g.get("cells", [])), key=lambda c: c["cell"])
    scheme = head.get("scheme")
    metrics = (*METRICS, *VERSE_METRICS) if scheme else METRICS
    rows = (head.get("aggregates", {}).get("by_temperature") if whole
            else _pooled_means(cells, head))
    columns = tuple((mode, t) for mode in head.get("modes", ["free"])
                    for t in head.get("temperatures", []))
    model = head.get("model") or {}
    report = out / "report.html"
    return GridSummary(
        job=name, source=", ".join(str(f) for f in files), model_path=str(model.get("path")),
        model_kind=str(model.get("kind")), model_job=_model_job(view, str(model.get("path"))),
        scheme=scheme, syllables=head.get("syllables"), metrics=metrics,
        definitions=head.get("metric_definitions", {}), rows=tuple(rows or ()),
        columns=columns, samples=_samples(cells, head.get("prompts", []), columns),
        report=report if report.is_file() else None)


def _pooled_means(cells: Sequence[Mapping[str, Any]],
                  head: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Means per (mode, temperature) over cells pooled from shards (module docstring)."""
    rows = []
    for mode in head.get("modes", ["free"]):
        for temperature in head.get("temperatures", []):
            picked = [c["metrics"] for c in cells
                      if c.get("mode", "free") == mode and c["temperature"] == temperature]
            if picked:
                names = dict.fromkeys(n for m in picked for n in m)
                mean = {n: _mean([m[n] for m in picked if m.get(n) is not None]) for n in names}
                rows.append({"mode": mode, "temperature": temperature, "cells": len(picked),
                             "mean": mean})
    return rows


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _samples(cells: Sequence[Mapping[str, Any]], prompts: Sequence[str],
             columns: Sequence[tuple[str, float]]
             ) -> tuple[tuple[str, tuple[Mapping[str, Any] | None, ...]], ...]:
    """The first sample of each column for the first SAMPLE_PROMPTS prompts, its text cut to
    SAMPLE_LINES lines: {"text", "lines" (verse annotation or None), "metrics", "file"}."""
    rows = []
    for index, prompt in enumerate(prompts[:SAMPLE_PROMPTS]):
        picked = []
        for mode, temperature in columns:
            cell = next((c for c in cells if c["prompt_index"] == index
                         and c.get("mode", "free") == mode and c["temperature"] == temperature),
                        None)
            picked.append(None if cell is None else _sample(cell))
        rows.append((prompt, tuple(picked)))
    return tuple(rows)


def _sample(cell: Mapping[str, Any]) -> dict[str, Any]:
    verse = cell.get("verse")
    lines = verse.get("lines")[:SAMPLE_LINES] if isinstance(verse, dict) else None
    text = "\n".join((cell["prompt"] + cell.get("text", "")).splitlines()[:SAMPLE_LINES])
    return {"text": text, "lines": lines, "metrics": cell.get("metrics", {}),
            "file": cell.get("file")}


def _model_job(view: RunView, model: str) -> str | None:
    """The run's task whose out dir holds `model` ("train", "sweep[1]"), else None."""
    for row in view.tasks:
        if Path(model).is_relative_to(task_out_dir(view.record, row.job, row.task)):
            return row.name
    return None
