"""metrics.csv of a training run: one row per log interval and per validation.

Columns: step, epoch (fractional), train_loss (mean nats/token over the interval), lr,
tokens_per_s (training tokens over the interval's training time), val_bpc, val_ppl, elapsed
(seconds). Empty cells where a value does not apply. Rows are appended and flushed as they
come; on resume `truncate_after(step)` drops rows that a killed run wrote after its last
checkpoint, so the file describes exactly one trajectory.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lyricgen.io import append_error, atomic_write_text

COLUMNS = ("step", "epoch", "train_loss", "lr", "tokens_per_s", "val_bpc", "val_ppl",
           "elapsed")


class MetricsCsv:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8", newline="") as handle:
            return [row for row in csv.DictReader(handle) if row.get("step", "").isdigit()]

    def truncate_after(self, step: int) -> None:
        """Keep only rows with step <= `step` (rewrites the file atomically, header included)."""
        rows = [row for row in self.read() if int(row["step"]) <= step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())

    def append(self, **values: Any) -> None:
        """Append one row (LyricgenWriteError naming the file when the disk refuses it)."""
        row = {key: _cell(values.get(key)) for key in COLUMNS}
        try:
            with self.path.open("a", encoding="utf-8", newline="") as handle:
                csv.DictWriter(handle, COLUMNS).writerow(row)
        except OSError as exc:
            raise append_error(self.path, exc) from exc


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
