"""Benchmark: free vs constrained (rhyme scheme + meter) generation, same model, same grid.

The grid is the generate-grid kind's own (`lyricgen.grid.batch_texts`, one batch per mode):
PROMPTS x one temperature x `--samples` cells, once free (`--tokens` tokens per cell, about
the length of a sonnet) and once as verse (scheme `--scheme`, `--syllables` per line,
`--candidates` lines per cell and line). For each mode it prints, side by side:

- seconds for the whole grid and the ratio constrained / free;
- scheme share: lines in the rhyme the scheme asks with a line of their group (for free
  cells: their first lines judged against the same scheme), and meter share: lines of exactly
  `--syllables` metrical syllables (lyricgen.verse.scheme.annotate, this project's counter);
- distinct-2 (unique word bigrams / bigrams, over each text, averaged);
- the model's own mean log-probability per character of the kept text (prompt as context,
  temperature 1): a method that bought rhyme with nonsense would show it here.

    .venv/bin/python bench/verse_generation.py --model runs/<id>/train/out [--samples 4]
        [--temperature 0.8] [--candidates 8] [--threads 2]

Report the CPU (bf16 or not) and the load with the numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch

from lyricgen.evaluate import score_ids
from lyricgen.grid import GridSpec, batch_texts, grid_cells
from lyricgen.metrics import text_metrics
from lyricgen.rnn.sample import RnnGenerator
from lyricgen.verse.scheme import Scheme, annotate, parse_scheme

PROMPTS = ["Bajo la luna", "Amor, que", "En la noche", "Mi corazón", "Si el tiempo",
           "Canta la mar"]


def log_prob_per_char(generator: RnnGenerator, prompt: str, text: str) -> float:
    """Mean log-probability (nats) per character of `text` after `prompt`, temperature 1."""
    vocab = generator.vocab
    context = vocab.song_start_ids + vocab.encode(prompt)
    ids = vocab.encode(prompt + text)[len(vocab.encode(prompt)):]
    nll = score_ids(generator.model, ids, context, device=generator.device, streams=1)
    return -nll / max(1, len(text))


def run_mode(spec: GridSpec, generator: RnnGenerator, scheme: Scheme,
             syllables: int) -> dict[str, float]:
    """Generate the grid of `spec` (one batch) and measure it against `scheme`."""
    cells = grid_cells(spec)
    started = time.perf_counter()
    texts, forced = batch_texts(spec, cells, generator, spec.seed)
    seconds = time.perf_counter() - started
    verse = [annotate(c.prompt + t, scheme, syllables) for c, t in zip(cells, texts, strict=True)]
    return {
        "seconds": seconds,
        "chars": sum(len(t) for t in texts),
        "scheme_share": statistics.fmean(v["scheme_share"] or 0.0 for v in verse),
        "meter_share": statistics.fmean(v["meter_share"] or 0.0 for v in verse),
        "distinct_2": statistics.fmean(text_metrics(t)["distinct_2"] or 0.0 for t in texts),
        "logprob_per_char": statistics.fmean(log_prob_per_char(generator, c.prompt, t)
                                             for c, t in zip(cells, texts, strict=True)),
        "forced_lines": forced,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a train-rnn out dir")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--tokens", type=int, default=600, help="free cells' length")
    parser.add_argument("--scheme", default="ABBA ABBA CDC DCD")
    parser.add_argument("--syllables", type=int, default=11)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = RnnGenerator.from_checkpoint(args.model, device="cpu")
    common = {"model": str(args.model), "prompts": PROMPTS, "temperatures": [args.temperature],
              "samples": args.samples, "top_p": args.top_p, "seed": args.seed,
              "batch_size": len(PROMPTS) * args.samples, "device": "cpu"}
    free = GridSpec.from_params({**common, "max_tokens": args.tokens})
    verse = GridSpec.from_params({**common, "max_tokens": 200, "scheme": args.scheme,
                                  "syllables": args.syllables,
                                  "candidates": args.candidates})
    verse.verse_plan()  # the lexicon is loaded once, outside the timing
    scheme = parse_scheme(args.scheme)
    results = {mode: run_mode(spec, generator, scheme, args.syllables)
               for mode, spec in (("free", free), ("verse", verse))}
    print(f"model {args.model} ({generator.vocab.level}), {len(PROMPTS)} prompts x "
          f"{args.samples} samples at T={args.temperature}, top_p {args.top_p}; scheme "
          f"{args.scheme!r}, {args.syllables} syllables, {args.candidates} candidates; "
          f"threads {args.threads}, load {os.getloadavg()[0]:.1f}")
    print(f"{'':22}{'free':>10}{'verse':>10}")
    for key in ("seconds", "chars", "scheme_share", "meter_share", "distinct_2",
                "logprob_per_char", "forced_lines"):
        a, b = results["free"][key], results["verse"][key]
        print(f"{key:22}{a:10.3f}{b:10.3f}")
    ratio = results["verse"]["seconds"] / results["free"]["seconds"]
    print(f"time verse / free: {ratio:.2f}x; bits per char of the kept text: free "
          f"{-results['free']['logprob_per_char'] / math.log(2):.3f}, verse "
          f"{-results['verse']['logprob_per_char'] / math.log(2):.3f}")


if __name__ == "__main__":
    main()
