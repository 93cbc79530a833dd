"""Char-level validation bits per character after a fixed wall-clock budget, side by side.

    python bench/rnn_quality.py --minutes 10        (the benchmark: about 2 x 10 minutes)
    python bench/rnn_quality.py --minutes 1         (a smoke run)

Trains on ../shared/corpora/disco/train.txt and validates on valid.txt (markers count), one
recipe after the other on the same CPU threads (default 2; never run two at once):
- ours: the train-rnn kind's defaults (its recommended char recipe) with max_minutes set,
  so its learning-rate schedule ends when the budget does;
- anchor: a plain GRU (hidden 512, embedding 64, batch 64 x 128 TBPTT), Adam 2e-3 at a
  constant rate, no dropout, no weight decay, gradient clipping at 1.0, fp32, file order.
Both go through lyricgen.rnn.train.Trainer (the kind's code path): the budget covers data
loading, training and the per-epoch validations; the final validation runs once the budget
is spent. Reported: the valid bpc of the model at the end of the budget (and the best seen),
steps, tokens/s and epochs. Wall-clock results depend on the machine and on anything else
running: compare recipes only within one run of this script, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch

from lyricgen.rnn.config import TrainConfig
from lyricgen.rnn.train import Trainer

DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"


def recipes(data: Path, valid: Path, minutes: float) -> dict[str, TrainConfig]:
    ours = TrainConfig.from_params(dict(data=str(data), valid_data=str(valid),
                                        max_minutes=minutes, epochs=1000, device="cpu"))
    anchor = dataclasses.replace(
        ours, arch="gru", hidden_size=512, embedding_dim=64, num_layers=1, dropout=0.0,
        lr=2e-3, lr_schedule="constant", warmup_steps=0, weight_decay=0.0, grad_clip=1.0,
        batch_size=64, seq_len=128, patience=0, precision="fp32", shuffle_songs=False)
    return {"ours": ours, "anchor": anchor}


def describe(config: TrainConfig, precision: str) -> str:
    layers = f"{config.num_layers}x" if config.num_layers > 1 else ""
    return (f"{config.arch} {layers}{config.hidden_size} emb {config.embedding_dim}, "
            f"{config.batch_size}x{config.seq_len}, lr {config.lr:g} {config.lr_schedule}, "
            f"dropout {config.dropout:g}, wd {config.weight_decay:g}, {precision}"
            f"{', songs shuffled' if config.shuffle_songs else ''}")


def run_recipe(config: TrainConfig, out_dir: Path) -> dict[str, Any]:
    metrics = Trainer(config, out_dir).fit().metrics
    return {"steps": metrics["final"]["step"], "epochs": metrics["final"]["epoch"],
            "tokens_per_s": metrics["tokens_seen"] / metrics["elapsed_s"],
            "final_bpc": metrics["final"]["val_bpc"],
            "best_bpc": metrics["best"]["bpc"] if metrics["best"] else None,
            "elapsed_s": metrics["elapsed_s"], "precision": metrics["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="budget per recipe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("ours", "anchor"), default=None)
    parser.add_argument("--data-dir", type=Path, default=DISCO,
                        help="folder with train.txt and valid.txt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = recipes(args.data_dir / "train.txt", args.data_dir / "valid.txt", args.minutes)
    if args.only:
        chosen = {args.only: chosen[args.only]}
    print(f"char-level valid bpc after {args.minutes:g} min on DISCO, {args.threads} threads")
    print(f"{'recipe':8} {'final bpc':>9} {'best bpc':>9} {'steps':>7} {'epochs':>7} "
          f"{'tok/s':>8}  configuration", flush=True)
    results = {}
    for name, config in chosen.items():
        with tempfile.TemporaryDirectory(prefix=f"rnn-quality-{name}-") as out:
            result = results[name] = run_recipe(config, Path(out))
        print(f"{name:8} {result['final_bpc']:9.4f} {result['best_bpc']:9.4f} "
              f"{result['steps']:7d} {result['epochs']:7.2f} {result['tokens_per_s']:8.0f}  "
              f"{describe(config, result['precision'])}", flush=True)
    if len(results) == 2:
        gain = results["anchor"]["final_bpc"] - results["ours"]["final_bpc"]
        print(f"ours - anchor: {-gain:+.4f} bpc (goal: ours <= 1.85 after 10 minutes)")


if __name__ == "__main__":
    main()
