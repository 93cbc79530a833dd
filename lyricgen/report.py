"""The HTML report of a generation grid and its metrics-vs-temperature PNG.

`write_report(out_dir, grid)` writes `metrics_by_temperature.png` and a self-contained
`report.html` (the PNG embedded as base64): parameters, per-temperature means, and the whole
grid side by side (rows: prompts, columns: temperatures, samples stacked) with each cell's
metrics. Generated text is untrusted: the template is rendered with autoescape ON for every
name (select_autoescape would leave a `.j2` template unescaped) and StrictUndefined.

The `report` kind, which merges a sharded grid and calls `write_report`, is
lyricgen/grid_report.py (so that this module, which lyricgen.grid uses, needs nothing of it).
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.figure import Figure

from lyricgen.io import atomic_write_bytes, atomic_write_text

PLOT_NAME = "metrics_by_temperature.png"
REPORT_NAME = "report.html"
TEMPLATE = "report.html.j2"
SUMMARY_METRICS = ("words", "lines", "distinct_1", "distinct_2", "repeated_4gram_rate",
                   "rhyme_consecutive_any", "rhyme_alternate_any")
# (title, metrics, whether they are shares in [0, 1])
PANELS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("diversity and repetition",
     ("distinct_1", "distinct_2", "repeated_line_rate", "repeated_4gram_rate"), True),
    ("rhyme (share of line pairs)",
     ("rhyme_consecutive_consonant", "rhyme_consecutive_any", "rhyme_alternate_consonant",
      "rhyme_alternate_any"), True),
    ("length (mean per continuation)", ("words", "lines"), False),
)


def plot_metrics(grid: dict[str, Any]) -> bytes:
    """PNG bytes: mean metrics against temperature, one panel per group of PANELS."""
    rows = grid["aggregates"]["by_temperature"]
    temps = [row["temperature"] for row in rows]
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, len(PANELS), sharex=True)
    for axis, (title, names, shares) in zip(axes, PANELS, strict=True):
        for name in names:
            values = [row["mean"][name] for row in rows]
            axis.plot(temps, [math.nan if v is None else v for v in values], marker="o",
                      label=name)
        axis.set(title=title, xlabel="temperature")
        axis.set_ylim(*((-0.02, 1.02) if shares else (0, None)))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("lyricgen", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["num"] = _number
    env.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


def _grid_rows(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (prompts) x columns (temperatures), each a list of that cell's samples."""
    rows = [{"prompt": prompt, "columns": [[] for _ in grid["temperatures"]]}
            for prompt in grid["prompts"]]
    for cell in grid["cells"]:
        rows[cell["prompt_index"]]["columns"][cell["temperature_index"]].append(cell)
    return rows


def render_html(grid: dict[str, Any], png: bytes) -> str:
    """The report page for a complete grid (`png` from plot_metrics)."""
    return _environment().get_template(TEMPLATE).render(
        grid=grid, rows=_grid_rows(grid), summary_metrics=SUMMARY_METRICS,
        metric_names=list(grid["metric_definitions"]),
        png_base64=base64.b64encode(png).decode("ascii"), plot_name=PLOT_NAME)


def write_report(out_dir: Path, grid: dict[str, Any]) -> Path:
    """metrics_by_temperature.png and report.html in out_dir; returns the HTML path."""
    png = plot_metrics(grid)
    atomic_write_bytes(out_dir / PLOT_NAME, png)
    return atomic_write_text(out_dir / REPORT_NAME, render_html(grid, png))
