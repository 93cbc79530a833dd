"""The `report` kind: one grid and its HTML report from a generate-grid job's output.

Params: `grid`, a generate-grid out dir or grid.json. The shard grids of an array job
(`out/<i>/grid.json`) are merged into one grid.json + cells/ + report (lyricgen.report) in this
job's out dir; for a single-task grid the same files are rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyricgen.context import RunContext
from lyricgen.grid import load_grids, merge_grids, write_grid
from lyricgen.io import atomic_write_json
from lyricgen.params import build_config
from lyricgen.report import write_report


@dataclass(frozen=True)
class ReportParams:
    """The report kind's params (kindspec.registry REPORT)."""

    grid: Path

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ReportParams:
        return build_config(cls, "report", params)


def run(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """The `report` kind: merge a generate-grid job's grid(s) and write the report."""
    source = ReportParams.from_params(params).grid
    grids = load_grids(source)
    grid = merge_grids(grids, source)
    write_grid(ctx.out_dir, grid)
    write_report(ctx.out_dir, grid)
    summary = {"shards": len(grids), "cells": len(grid["cells"])}
    atomic_write_json(ctx.out_dir / "metrics.json", {**summary, **grid["aggregates"]})
    return summary
