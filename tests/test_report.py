"""The HTML report and PNG of a grid built from hand-written texts (no model), and the
`report` kind's params checks."""

from __future__ import annotations

import html.parser
import re
from pathlib import Path

import pytest

from lyricgen.context import RunContext
from lyricgen.errors import LyricgenInputError
from lyricgen.grid import GridSpec, assemble, cell_record, grid_cells, grid_header
from lyricgen.grid_report import run
from lyricgen.report import plot_metrics, render_html, write_report

TEXTS = {
    (0, 0): "\nque duerme en la cuna\ny canta el camino\nsu viejo destino\n",
    (0, 1): "\n</pre><script>alert(1)</script>\n&amp; más",
    (1, 0): "",  # an empty continuation: metrics are None, the report still renders
    (1, 1): "\nsola\nboca\n",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the grid's model would be (a checkpoint file is all the input check needs)."""
    folder = tmp_path_factory.mktemp("gru")
    (folder / "best.pt").write_bytes(b"")
    return str(folder)


def _grid(model: str) -> dict:
    spec = GridSpec.from_params({"model": model, "prompts": ["Bajo la luna", "Mi <b>"],
                                 "temperatures": [0.5, 1.0], "samples": 1})
    cells = [cell_record(c, TEXTS[c.prompt_index, c.temperature_index], spec)
             for c in grid_cells(spec)]
    return assemble(grid_header(spec, "rnn"), cells, None)


class _Cells(html.parser.HTMLParser):
    """Collects the text of each <td> of the grid table, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.in_grid = False
        self.cells: list[str] = []
        self.current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.in_grid = ("class", "grid") in attrs
        if tag == "td" and self.in_grid:
            self.current = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.current is not None:
            self.cells.append("".join(self.current))
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current is not None:
            self.current.append(data)


def test_report_escapes_and_lays_out_the_grid(model: str) -> None:
    grid = _grid(model)
    page = render_html(grid, plot_metrics(grid))
    assert "<script>" not in page and "Mi <b>" not in page and "Mi &lt;b&gt;" in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp;amp; más" in page
    parser = _Cells()
    parser.feed(page)
    # rows are prompts, columns temperatures: cell (prompt 0, T=1.0) is the second td
    assert len(parser.cells) == 4
    assert "que duerme en la cuna" in parser.cells[0]
    assert "<script>alert(1)</script>" in parser.cells[1]  # shown as text, not run
    assert "sola" in parser.cells[3] and "Mi <b>" in parser.cells[3]
    headers = re.findall(r"<th>free, temperature ([0-9.]+)</th>", page)
    assert headers == ["0.5", "1.0"]


def test_parameters_and_metrics_are_shown(model: str) -> None:
    grid = _grid(model)
    page = render_html(grid, plot_metrics(grid))
    assert "<th>top_p</th><td><code>null</code></td>" in page
    assert '<code>[&#34;Bajo la luna&#34;, &#34;Mi &lt;b&gt;&#34;]</code>' in page
    first = grid["cells"][0]["metrics"]
    assert first["rhyme_consecutive_consonant"] == 0.5  # cuna/camino no, camino/destino yes
    assert "rhyme_consecutive_any 0.500" in page
    assert re.search(r"<th title=\"[^\"]+\">distinct_1</th>\s*<td class=\"n\">1.000</td>", page)
    assert "words 0 · lines 0 · distinct_1 –" in page  # the empty continuation


def test_plot_is_a_png_even_with_missing_values(model: str) -> None:
    grid = _grid(model)
    assert grid["aggregates"]["by_temperature"][0]["mean"]["distinct_2"] is not None
    png = plot_metrics(grid)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_metrics(grid) == png  # deterministic bytes


def test_write_report_files(tmp_path: Path, model: str) -> None:
    path = write_report(tmp_path, _grid(model))
    assert path == tmp_path / "report.html"
    assert (tmp_path / "metrics_by_temperature.png").stat().st_size > 1000
    assert 'href="cells/p0_t0.5_s0.txt"' in path.read_text("utf-8")


@pytest.mark.parametrize(("params", "message"), [
    ({}, "params: grid: missing required param"),
    ({"grid": "x", "title": "t"}, "params: title: unknown param"),
    ({"grid": "/nowhere/x"}, "params: grid: /nowhere/x: does not exist"),
])
def test_report_kind_params(tmp_path: Path, params: dict, message: str) -> None:
    with pytest.raises(LyricgenInputError, match=message):
        run(params, RunContext(kind="report", out_dir=tmp_path))
