"""The HTML report of a generation grid and its metrics-vs-temperature PNG.

`write_report(out_dir, grid)` writes `metrics_by_temperature.png` and a self-contained
`report.html` (the PNG embedded as base64): parameters, per-mode-and-temperature means, and the
whole grid side by side (rows: prompts, columns: mode x temperature, samples stacked) with
each cell's metrics. In a grid with a rhyme scheme every cell shows its lines with their
scheme letter and metrical syllables, coloured by rhyme group (red: a missed rhyme or meter),
so verse and free cells compare at a glance. Generated text is untrusted: the template is
rendered with autoescape ON for every name (select_autoescape would leave a `.j2` template
unescaped) and StrictUndefined.

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
VERSE_METRICS = ("scheme_share", "meter_share")
# Rhyme-group backgrounds, by the group's order of appearance in the scheme.
GROUP_COLOURS = ("#fde2e2", "#e2ecfd", "#e3f6e3", "#fdf3d7", "#efe2fd", "#d9f4f4", "#f6e3d3",
                 "#e9e9e9")
# (title, metrics, whether they are shares in [0, 1])
PANELS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("diversity and repetition",
     ("distinct_1", "distinct_2", "repeated_line_rate", "repeated_4gram_rate"), True),
    ("rhyme (share of line pairs)",
     ("rhyme_consecutive_consonant", "rhyme_consecutive_any", "rhyme_alternate_consonant",
      "rhyme_alternate_any"), True),
    ("length (mean per continuation)", ("words", "lines"), False),
)
VERSE_PANEL = ("verse (share of the scheme's lines)", VERSE_METRICS, True)


def plot_metrics(grid: dict[str, Any]) -> bytes:
    """PNG bytes: mean metrics against temperature, one panel per group of PANELS (and the
    verse shares when the grid has a scheme); free cells dashed when verse cells are there."""
    panels = (*PANELS, VERSE_PANEL) if grid.get("scheme") else PANELS
    fig = Figure(figsize=(4.4 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True)
    for mode in grid.get("modes", ["free"]):
        rows = [row for row in grid["aggregates"]["by_temperature"]
                if row.get("mode", "free") == mode]
        temps = [row["temperature"] for row in rows]
        style = "--" if mode == "free" and len(grid.get("modes", ())) > 1 else "-"
        for axis, (_, names, _) in zip(axes, panels, strict=True):
            for colour, name in enumerate(names):
                values = [row["mean"][name] for row in rows]
                axis.plot(temps, [math.nan if v is None else v for v in values], marker="o",
                          linestyle=style, color=f"C{colour}", label=f"{name} ({mode})")
    for axis, (title, _, shares) in zip(axes, panels, strict=True):
        axis.set(title=title, xlabel="temperature")
        axis.set_ylim(*((-0.02, 1.02) if shares else (0, None)))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small")
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


def _columns(grid: dict[str, Any]) -> list[tuple[str, float]]:
    return [(mode, t) for mode in grid.get("modes", ["free"]) for t in grid["temperatures"]]


def _grid_rows(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (prompts) x columns (mode, temperature), each a list of that cell's samples."""
    columns = _columns(grid)
    rows = [{"prompt": prompt, "columns": [[] for _ in columns]} for prompt in grid["prompts"]]
    for cell in grid["cells"]:
        column = columns.index((cell.get("mode", "free"), cell["temperature"]))
        rows[cell["prompt_index"]]["columns"][column].append(cell)
    return rows


def _letters(scheme: str | None) -> tuple[dict[str, str], dict[str, str], set[int]]:
    """CSS class and colour of each rhyme letter of `scheme`, and the line indices that end a
    stanza (but the last)."""
    if not scheme:
        return {}, {}, set()
    letters = [c for c in dict.fromkeys(scheme.replace(" ", "")) if c != "-"]
    classes = {c: (c if c.isupper() else f"l{c}") for c in letters}
    colours = {c: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, c in enumerate(letters)}
    sizes = [len(stanza) for stanza in scheme.split(" ")]
    ends = {sum(sizes[:i + 1]) - 1 for i in range(len(sizes) - 1)}
    return classes, colours, ends


def render_html(grid: dict[str, Any], png: bytes) -> str:
    """The report page for a complete grid (`png` from plot_metrics)."""
    classes, colours, ends = _letters(grid.get("scheme"))
    summary = (*SUMMARY_METRICS, *VERSE_METRICS) if grid.get("scheme") else SUMMARY_METRICS
    return _environment().get_template(TEMPLATE).render(
        grid=grid, rows=_grid_rows(grid), columns=_columns(grid), summary_metrics=summary,
        metric_names=list(grid["metric_definitions"]), letter_classes=classes,
        letter_colours=colours, stanza_ends=ends,
        png_base64=base64.b64encode(png).decode("ascii"), plot_name=PLOT_NAME)


def write_report(out_dir: Path, grid: dict[str, Any]) -> Path:
    """metrics_by_temperature.png and report.html in out_dir; returns the HTML path."""
    png = plot_metrics(grid)
    atomic_write_bytes(out_dir / PLOT_NAME, png)
    return atomic_write_text(out_dir / REPORT_NAME, render_html(grid, png))
