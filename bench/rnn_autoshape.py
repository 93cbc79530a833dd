"""Benchmark: train-rnn's auto shape vs the fixed recipe, for each precision path here.

For every precision this CPU (or GPU) can train in (fp32 always; bf16 where the cores have
bf16 instructions, or on CUDA), two `--minutes` runs on DISCO train, scored on valid.txt:

- fixed: hidden 384, batch 16 (the recipe tuned on an AVX512-BF16 CPU), or the shapes
  `--fixed HIDDEN:BATCH` names;
- auto: hidden_size and batch_size null: the probe (lyricgen/rnn/autoshape.py) and its
  tokens-per-parameter rule pick them for the precision and this machine.

Every other param is the kind's default (`epochs` 30 too: a fast GPU reaches it before the
budget) unless `--param KEY=VALUE` (a YAML value, repeatable) sets it for every run, e.g.
`--param level=bpe --param tie_weights=true`. `--vs KEY=VALUE` (repeatable) runs every
recipe a second time with those params on top, e.g. `--vs ngram_order=1` (the plain token
input) against the defaults. Prints, side by side, the chosen shape, steps, epochs, tokens/s,
valid bpc and why the run stopped, and the differences auto - fixed and vs - base per
precision. `--only auto` runs `precision: auto` (the probe then also picks the precision).

    .venv/bin/python bench/rnn_autoshape.py [--minutes 10] [--threads 2] [--only fp32]
        [--fixed HIDDEN:BATCH ...] [--skip-auto | --skip-fixed] [--param KEY=VALUE ...]
        [--vs KEY=VALUE ...] [--corpus DIR] [--json FILE]

Run it on a quiet machine (a busy one changes both the probe and the runs). It prints the
device it ran on (the CPU's model and whether it has bf16 instructions, or the GPU) with the
table; `--json` also writes the rows and that description. `--corpus` names a folder with
DISCO's train.txt and valid.txt (default ../shared/corpora/disco beside the checkout).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from lyricgen.precision import cpu_has_native_bf16
from lyricgen.rnn.autoshape import cpu_info
from lyricgen.rnn.config import TrainConfig
from lyricgen.rnn.train import Trainer

DISCO = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco"


def precisions() -> list[str]:
    usable = ["fp32"]
    if torch.cuda.is_available() or cpu_has_native_bf16():
        usable.append("bf16")
    return usable


def device_description() -> str:
    """The GPU's name, or the CPU's model and whether it computes bf16 natively."""
    if torch.cuda.is_available():
        return (f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, "
                f"torch {torch.__version__})")
    bf16 = "with" if cpu_has_native_bf16() else "without"
    model = cpu_info().get("model name") or platform.processor() or "CPU"
    return (f"{model}, {len(os.sched_getaffinity(0))} usable cores, {bf16} bf16 "
            f"instructions (torch {torch.__version__})")


def train(precision: str, minutes: float, shape: tuple[int, int] | None, corpus: Path,
          out: Path, params: dict[str, Any]) -> dict:
    """One run with the kind's defaults (epochs 30 included) but `params`; `shape` None: the
    auto shape."""
    sizes = {"hidden_size": shape[0], "batch_size": shape[1]} if shape else {}
    config = TrainConfig.from_params({
        "data": str(corpus / "train.txt"), "valid_data": str(corpus / "valid.txt"),
        "max_minutes": minutes, "precision": precision, "device": "auto", **params, **sizes})
    return Trainer(config, out, progress_bar=False).fit().metrics


def _number(value: float | None, spec: str) -> str:
    """A table cell: `value` formatted, or "-" (a run too short to log a speed)."""
    return "-" if value is None else format(value, spec)


def _difference(row: dict, base: dict) -> str:
    if row["valid_bpc"] is None or base["valid_bpc"] is None:
        return "-"
    return f"{row['valid_bpc'] - base['valid_bpc']:+.4f} bpc"


def fixed_shape(text: str) -> tuple[int, int]:
    hidden, batch = text.split(":")
    return int(hidden), int(batch)


def param(text: str) -> tuple[str, Any]:
    """KEY=VALUE with VALUE read as YAML (true, 0.2, bpe)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("fp32", "bf16", "fp16", "auto"), default=None)
    parser.add_argument("--corpus", type=Path, default=DISCO)
    parser.add_argument("--fixed", type=fixed_shape, action="append", metavar="HIDDEN:BATCH",
                        help="fixed shapes to run (repeatable; default 384:16, the recipe)")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-auto", action="store_true", help="run the fixed shapes only")
    skip.add_argument("--skip-fixed", action="store_true", help="run the auto shape only")
    parser.add_argument("--param", type=param, action="append", default=[],
                        metavar="KEY=VALUE", help="a train-rnn param for every run")
    parser.add_argument("--vs", type=param, action="append", default=[],
                        metavar="KEY=VALUE", help="also run every recipe with this param")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = device_description()
    print(f"device: {device}", flush=True)
    recipes = [] if args.skip_fixed else [("fixed", shape) for shape in args.fixed or [(384, 16)]]
    recipes += [] if args.skip_auto else [("auto", None)]
    params = dict(args.param)
    variants = [("base", params)]
    if args.vs:
        variants.append(("vs", {**params, **dict(args.vs)}))
    rows = []
    for precision in [args.only] if args.only else precisions():
        for (recipe, shape), (variant, variant_params) in itertools.product(recipes, variants):
            with tempfile.TemporaryDirectory() as folder:
                metrics = train(precision, args.minutes, shape, args.corpus, Path(folder),
                                variant_params)
            final = metrics["final"]
            rows.append({"asked": precision, "precision": metrics["precision"], "recipe": recipe,
                         "variant": variant, "asked_shape": shape,
                         "hidden": metrics["params"]["hidden_size"],
                         "batch": metrics["params"]["batch_size"], "steps": final["step"],
                         "epochs": round(final["epoch"], 2),
                         "tokens_per_s": metrics["tokens_per_s_median"],
                         "valid_bpc": metrics["best"]["bpc"], "stop": metrics["stop_reason"],
                         "reason": (metrics.get("auto_shape") or {}).get("reason", "")})
            print(rows[-1], flush=True)
    print(f"\n{device}: {args.minutes:g} min per run, threads {args.threads}, load "
          f"{os.getloadavg()[0]:.1f}{'; params ' + str(params) if params else ''}"
          f"{'; vs: ' + str(dict(args.vs)) if args.vs else ''}")
    print(f"{'precision':10}{'recipe':8}{'variant':8}{'hidden':>8}{'batch':>7}{'steps':>8}"
          f"{'epochs':>8}{'tok/s':>11}{'valid bpc':>11}  stop")
    for row in rows:
        print(f"{row['precision']:10}{row['recipe']:8}{row['variant']:8}{row['hidden']:>8}"
              f"{row['batch']:>7}"
              f"{row['steps']:>8}{row['epochs']:>8.2f}{_number(row['tokens_per_s'], ',.0f'):>11}"
              f"{_number(row['valid_bpc'], '.4f'):>11}  {row['stop']}")
    for asked, variant in dict.fromkeys((row["asked"], row["variant"]) for row in rows):
        runs = [row for row in rows if (row["asked"], row["variant"]) == (asked, variant)]
        auto = [row for row in runs if row["recipe"] == "auto"]
        for fixed in (row for row in runs if row["recipe"] == "fixed" and auto):
            print(f"{asked} {variant}: auto - fixed {fixed['hidden']}/{fixed['batch']} = "
                  f"{_difference(auto[0], fixed)}")
    for base, other in itertools.combinations(rows, 2):
        if (base["asked"], base["asked_shape"], base["variant"], other["variant"]) == (
                other["asked"], other["asked_shape"], "base", "vs"):
            print(f"{base['asked']} {base['recipe']}: vs - base = {_difference(other, base)}")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "minutes": args.minutes,
                                         "rows": rows}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
