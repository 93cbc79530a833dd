"""Benchmark: train-rnn's auto shape vs the fixed recipe, for each precision path here.

For every precision this CPU (or GPU) can train in (fp32 always; bf16 where the cores have
bf16 instructions, or on CUDA), two `--minutes` runs on DISCO train, scored on valid.txt:

- fixed: hidden 384, batch 16 (the recipe tuned on an AVX512-BF16 CPU);
- auto: hidden_size and batch_size null: the probe (lyricgen/rnn/autoshape.py) and its
  tokens-per-parameter rule pick them for the precision and this machine.

Every other param is the kind's default. Prints, side by side, the chosen shape, steps,
tokens/s and valid bpc, and the difference auto - fixed per precision.

    .venv/bin/python bench/rnn_autoshape.py [--minutes 10] [--threads 2] [--only fp32]

Run it on a quiet machine (a busy one changes both the probe and the runs): report
`uptime` and `grep -o avx512_bf16 /proc/cpuinfo | head -1` with the numbers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from lyricgen.precision import cpu_has_native_bf16
from lyricgen.rnn.config import TrainConfig
from lyricgen.rnn.train import Trainer

DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"


def precisions() -> list[str]:
    usable = ["fp32"]
    if torch.cuda.is_available() or cpu_has_native_bf16():
        usable.append("bf16")
    return usable


def train(precision: str, minutes: float, auto: bool, out: Path) -> dict:
    sizes = {} if auto else {"hidden_size": 384, "batch_size": 16}
    config = TrainConfig.from_params({
        "data": str(DISCO / "train.txt"), "valid_data": str(DISCO / "valid.txt"),
        "max_minutes": minutes, "epochs": 1000, "precision": precision, "device": "auto",
        **sizes})
    return Trainer(config, out, progress_bar=False).fit().metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("fp32", "bf16"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for precision in [args.only] if args.only else precisions():
        for auto in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                metrics = train(precision, args.minutes, auto, Path(folder))
            shape = metrics.get("auto_shape") or {}
            rows.append((precision, "auto" if auto else "fixed", metrics["params"]["hidden_size"],
                         metrics["params"]["batch_size"], metrics["final"]["step"],
                         metrics["tokens_per_s_median"], metrics["best"]["bpc"],
                         shape.get("reason", "")))
            print(rows[-1], flush=True)
    print(f"\n{args.minutes:g} min per run, threads {args.threads}, load "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'precision':10}{'recipe':8}{'hidden':>8}{'batch':>7}{'steps':>8}{'tok/s':>9}"
          f"{'valid bpc':>11}")
    for precision, recipe, hidden, batch, steps, speed, bpc, _ in rows:
        print(f"{precision:10}{recipe:8}{hidden:>8}{batch:>7}{steps:>8}{speed:>9,.0f}"
              f"{bpc:>11.4f}")
    for precision in dict.fromkeys(row[0] for row in rows):
        fixed, auto = (row[6] for row in rows if row[0] == precision)
        print(f"{precision}: auto - fixed = {auto - fixed:+.4f} bpc")


if __name__ == "__main__":
    main()
