"""Every training task of a run side by side: the params that differ between them, held-out
bits per character and perplexity, speed, length, time; the best one; their learning curves.

Sources (lyricgen writes them; read leniently, a missing file leaves blanks):
- train-rnn: out[/<task>]/metrics.json (`best` {step, bpc, ppl} on valid_data, `final`,
  `elapsed_s`, `tokens_per_s_median`, `stop_reason`, `parameters`) and metrics.csv (one row
  per log interval and per validation: step, train_loss, val_bpc, ...).
- finetune-llama: out/metrics.json (summary + `history`, one row per optimizer step: loss,
  valid_loss, valid_ppl and, where lyricgen computes it, valid_bpc).
The params are the task's resolved params from run.json (defaults included).

Best row: the lowest held-out bpc (comparable across char, word and LLaMA models); when no
task has one, the lowest perplexity (comparable only within one tokenisation).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jobs.runreport.tasks import RunView, TaskRow, rows_of, task_out_dir
from jobs.state import read_json

TRAINING_KINDS = ("train-rnn", "finetune-llama")

Series = tuple[list[float], list[float]]  # (steps, values)


@dataclass(frozen=True)
class TrainingRow:
    task: TaskRow
    params: Mapping[str, Any]
    bpc: float | None = None  # best held-out bits per character
    ppl: float | None = None  # best held-out perplexity (per token of the model's own)
    unit: str = "token"  # what a perplexity token is: char, word, token
    train_loss: float | None = None  # last training loss, nats per token
    tokens_per_s: float | None = None
    epochs: float | None = None
    steps: int | None = None
    seconds: float | None = None
    stop_reason: str | None = None
    parameters: int | None = None  # trainable parameters (train-rnn)
    valid: Series = field(default_factory=lambda: ([], []))  # held-out bpc per step
    train: Series = field(default_factory=lambda: ([], []))  # training loss per step
    best: bool = False


def training_rows(view: RunView) -> list[TrainingRow]:
    """One row per training task of the run (cached ones included), the best one marked."""
    rows = [_row(view, task) for task in rows_of(view, TRAINING_KINDS)]
    return mark_best(rows)


def differing_params(rows: Sequence[TrainingRow]) -> list[str]:
    """Names of the params whose values are not the same in every row (a param one row lacks
    counts as differing), in first-seen order."""
    names = list(dict.fromkeys(name for row in rows for name in row.params))
    return [name for name in names
            if len({json.dumps(row.params.get(name), sort_keys=True) for row in rows}) > 1]


def _row(view: RunView, task: TaskRow) -> TrainingRow:
    params = view.record["jobs"][task.job]["spec"]["tasks"][task.task]["params"]
    out = task_out_dir(view.record, task.job, task.task)
    if task.kind == "train-rnn":
        return _rnn_row(task, params, out)
    return _llama_row(task, params, out)


def _rnn_row(task: TaskRow, params: Mapping[str, Any], out: Path) -> TrainingRow:
    metrics = read_object(out / "metrics.json")
    best, final = metrics.get("best") or {}, metrics.get("final") or {}
    rows = _read_csv(out / "metrics.csv")
    return TrainingRow(
        task, params, bpc=_num(best.get("bpc")), ppl=_num(best.get("ppl")),
        unit=str(params.get("level", "char")), train_loss=_num(final.get("train_loss")),
        tokens_per_s=_num(metrics.get("tokens_per_s_median")), epochs=_num(final.get("epoch")),
        steps=_int(final.get("step")), seconds=_num(metrics.get("elapsed_s")),
        stop_reason=metrics.get("stop_reason"), parameters=_int(metrics.get("parameters")),
        valid=_series(rows, "val_bpc"), train=_series(rows, "train_loss"))


def _llama_row(task: TaskRow, params: Mapping[str, Any], out: Path) -> TrainingRow:
    metrics = read_object(out / "metrics.json")
    history = [r for r in metrics.get("history") or [] if isinstance(r, dict)]
    bpcs = [_num(r.get("valid_bpc")) for r in history]
    ppls = [_num(r.get("valid_ppl")) for r in history]
    last = history[-1] if history else {}
    return TrainingRow(
        task, params, bpc=min((b for b in bpcs if b is not None), default=None),
        ppl=min((p for p in ppls if p is not None), default=None), unit="token",
        train_loss=_num(metrics.get("final_loss")),
        tokens_per_s=_num(metrics.get("tokens_per_second")), epochs=_num(last.get("epoch")),
        steps=_int(metrics.get("steps")), seconds=_num(metrics.get("run_seconds")),
        valid=_series(history, "valid_bpc"), train=_series(history, "loss"))


def mark_best(rows: list[TrainingRow]) -> list[TrainingRow]:
    """The rows with `best` set on the lowest bpc, else the lowest perplexity."""
    for key in ("bpc", "ppl"):
        scored = [row for row in rows if getattr(row, key) is not None]
        if scored:
            best = min(scored, key=lambda row: getattr(row, key))
            return [replace(row, best=row is best) for row in rows]
    return rows


def _series(rows: Sequence[Mapping[str, Any]], column: str) -> Series:
    steps, values = [], []
    for row in rows:
        step, value = _num(row.get("step")), _num(row.get(column))
        if step is not None and value is not None:
            steps.append(step)
            values.append(value)
    return steps, values


def _num(value: Any) -> float | None:
    """A finite number from JSON or CSV text; None for blanks and anything else."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def read_object(path: Path) -> dict[str, Any]:
    """A JSON object file, {} when it is missing, torn or not an object."""
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
