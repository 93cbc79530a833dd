"""Training metrics files: metrics.csv (one row per optimizer step), metrics.json (summary and
history) and loss.png (train loss per step, valid loss at each evaluation), all atomic.
valid_loss is nats per token, valid_ppl its exp, valid_bpc the same pass in bits per character
of the scored text (lyricgen.llama.data), the scale `lyricgen evaluate` shares with the RNNs."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from lyricgen.io import atomic_write_json, atomic_write_text

COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "tokens", "valid_loss", "valid_ppl",
           "valid_bpc")


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def plot_losses(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """Train loss per step and valid loss at each evaluation, one panel (lyricgen.plots)."""
    from lyricgen.plots import save_curves

    evals = [r for r in history if r.get("valid_loss") is not None]
    series = {"train": ([r["step"] for r in history], [r["loss"] for r in history]),
              "valid": ([r["step"] for r in evals], [r["valid_loss"] for r in evals])}
    save_curves(path, [("loss (nats/token)", series)], xlabel="optimizer step", title=title)


def write_all(out_dir: Path, history: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """metrics.csv, metrics.json and (when there is a step) loss.png in out_dir."""
    write_csv(out_dir / "metrics.csv", history)
    atomic_write_json(out_dir / "metrics.json", {**summary, "history": history})
    if history:
        plot_losses(out_dir / "loss.png", history, "finetune-llama")
