"""The run report page: templates/run_report.html.j2 (with run_report.css and run_report.js
inlined) rendered from the run's files, written atomically.

Self-contained: no network, no external file (styles, script and SVG inline), so it works
opened from file:// and copied anywhere; links to grid reports are relative to the page.
Everything shown that a run's input or a model produced (params, prompts, generated verse,
log lines) is escaped: autoescape is on for the whole template and it is StrictUndefined.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from jobs.render import TEMPLATE_DIR
from jobs.resources import format_bytes, format_duration
from jobs.runreport.charts import (
    curves_svg,
    dag_layout,
    timeline_share,
    timeline_ticks,
)
from jobs.runreport.grids import grid_summaries
from jobs.runreport.tasks import run_view
from jobs.runreport.training import differing_params, training_rows
from jobs.state import Run, atomic_write_bytes

REPORT_NAME = "report.html"
TEMPLATE = "run_report.html.j2"


def write_run_report(run: Run, out: Path | None = None, now: float | None = None) -> Path:
    """Write the report of `run` to `out` (default RUN_DIR/report.html); returns its path."""
    target = Path(out if out is not None else run.dir / REPORT_NAME).absolute()
    atomic_write_bytes(target, render_run_report(run, target.parent, now).encode("utf-8"),
                       mode=0o644)  # a page to open and share, not a private record
    return target


def render_run_report(run: Run, page_dir: Path, now: float | None = None) -> str:
    """The page's HTML; links are relative to `page_dir`, where it will be written."""
    view = run_view(run, now)
    training = training_rows(view)
    grids = grid_summaries(view)
    return _environment(str(page_dir)).get_template(TEMPLATE).render(
        view=view, dag=dag_layout(view.jobs), ticks=timeline_ticks(view),
        at=lambda moment: timeline_share(view, moment), training=training,
        params=differing_params(training), curves=curves_svg(training), grids=grids,
        grid_metrics=list(dict.fromkeys(name for grid in grids for name in grid.metrics)))


@functools.lru_cache(maxsize=8)
def _environment(page_dir: str) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(num=_number, size=_size, dur=_duration, when=_when, pct=_percent,
                       href=lambda path: quote(os.path.relpath(path, page_dir)),
                       value=_value)
    return env


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


def _size(value: int | None) -> str:
    return "–" if value is None else format_bytes(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 60 else format_duration(seconds)


def _when(moment: float | None) -> str:
    if moment is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _value(value: Any) -> str:
    """A param value as the manifest would spell it (strings bare, the rest as JSON-ish)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
