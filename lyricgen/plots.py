"""Small PNG line plots (matplotlib Agg, no pyplot global state), written atomically.

`save_curves(path, panels)` draws one subplot per panel side by side; a panel is
(ylabel, {series label: (xs, ys)}). Series with no points are skipped; NaN values leave gaps.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lyricgen.io import atomic_write_bytes

Series = tuple[Sequence[float], Sequence[float]]
Panel = tuple[str, Mapping[str, Series]]


def save_curves(path: str | Path, panels: Sequence[Panel], *, xlabel: str = "step",
                title: str | None = None) -> Path:
    """Write a PNG with one line-plot panel per entry of `panels`; returns the path."""
    figure = Figure(figsize=(5.5 * max(1, len(panels)), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (ylabel, series) in zip(axes, panels, strict=False):
        for label, (xs, ys) in series.items():
            if len(xs):
                ax.plot(list(xs), list(ys), label=label, marker="." if len(xs) < 30 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if any(len(xs) for xs, _ in series.values()):
            ax.legend()
    if title:
        figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())
