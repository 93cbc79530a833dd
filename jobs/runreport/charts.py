"""Pictures of the run report: the layout of the job DAG (drawn as SVG by the template), the
timeline's geometry, and the learning curves of every training task in one figure
(matplotlib, inline SVG: no image files, no network)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from jobs.runreport.tasks import JobRow, RunView
from jobs.runreport.training import TrainingRow

NODE_W, NODE_H, LAYER_GAP, ROW_GAP, MARGIN = 176, 54, 64, 16, 8


@dataclass(frozen=True)
class Node:
    job: JobRow
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    path: str  # SVG path data, from the need's right side to the job's left side


@dataclass(frozen=True)
class Dag:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int


def dag_layout(jobs: Sequence[JobRow]) -> Dag:
    """Jobs in columns by layer (jobs.runreport.tasks: longest path of needs), in run order
    within a column; an edge per need."""
    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for job in jobs:
        row = rows.get(job.layer, 0)
        rows[job.layer] = row + 1
        nodes[job.name] = Node(job, MARGIN + job.layer * (NODE_W + LAYER_GAP),
                               MARGIN + row * (NODE_H + ROW_GAP))
    edges = []
    for node in nodes.values():
        for need in node.job.needs:
            source = nodes[need]
            x1, y1 = source.x + NODE_W, source.y + NODE_H // 2
            x2, y2 = node.x - 6, node.y + NODE_H // 2
            middle = (x1 + x2) // 2
            edges.append(Edge(f"M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}"))
    layers = max((job.layer for job in jobs), default=0) + 1
    return Dag(tuple(nodes.values()), tuple(edges),
               2 * MARGIN + layers * NODE_W + (layers - 1) * LAYER_GAP,
               2 * MARGIN + max(rows.values(), default=1) * (NODE_H + ROW_GAP) - ROW_GAP)


def timeline_share(view: RunView, moment: float | None) -> float:
    """Where a moment sits on the timeline, in percent of its width (clamped to 0..100)."""
    if moment is None:
        return 100.0
    share = (moment - view.start) / (view.end - view.start) * 100
    return min(100.0, max(0.0, share))


def timeline_ticks(view: RunView, count: int = 6) -> list[tuple[float, float]]:
    """(percent, seconds since the start) for about `count` round ticks."""
    span = view.end - view.start
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
                             14400, 43200, 86400) if span / s <= count), 86400 * 7)
    return [(t / span * 100, float(t)) for t in range(0, int(span) + 1, step)]


def curves_svg(rows: Sequence[TrainingRow]) -> str | None:
    """One figure, two panels, every training task a colour: held-out bits per character and
    training loss (nats per token) against the optimizer step. None when no task has a
    point. The SVG's own ids are salted with a fixed string, so the page is reproducible."""
    plotted = [row for row in rows if row.valid[0] or row.train[0]]
    if not plotted:
        return None
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.hashsalt": "jobctl-report", "svg.fonttype": "none"}):
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        valid, train = fig.subplots(1, 2)
        for colour, row in enumerate(plotted):
            style = {"color": f"C{colour % 10}", "label": row.task.name, "marker": "o",
                     "markersize": 3, "linewidth": 1.4}
            valid.plot(*row.valid, **style)
            train.plot(*row.train, **style)
        valid.set(title="held-out bits per character (lower is better)",
                  xlabel="optimizer step", ylabel="bpc")
        train.set(title="training loss", xlabel="optimizer step", ylabel="nats per token")
        for axis in (valid, train):
            axis.grid(alpha=0.3)
        valid.legend(fontsize="small")
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]
