"""Benchmark: batched grid generation vs a per-sample loop, same generator, same cells.

A char GRU of realistic size (hidden 512, vocabulary of the DISCO train split read from
../shared) is freshly initialised; the grid is prompts x temperatures x samples (default
3 x 4 x 8 = 96 cells) of `--tokens` tokens each. "batched" generates the cells the way the
generate-grid kind does (`--batch-size` rows per call, one forward pass per step); "loop" calls
the same generator once per cell with one row. Rows never stop early (no end-marker stop), so
both modes generate exactly cells x tokens tokens; tokens/s counts generated tokens only.

    .venv/bin/python bench/grid_generation.py [--threads 1] [--device cpu] [--tokens 200]

Prints both rates and their ratio (goal: batched >= 10x the loop). Timings vary with the
machine's load: report it (uptime) with the numbers.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from lyricgen.grid import Cell, GridSpec, grid_cells
from lyricgen.rnn.model import ModelConfig, RnnLM, resolve_device
from lyricgen.rnn.sample import RnnGenerator
from lyricgen.rnn.vocab import Vocab

DISCO_TRAIN = Path(__file__).resolve().parents[1].parent / "shared/corpora/disco/train.txt"
PROMPTS = ["Bajo la luna de mi ciudad", "Te fuiste una mañana", "Canto para olvidar"]
TEMPERATURES = [0.5, 0.8, 1.0, 1.2]


def build_generator(corpus: Path, device: str, hidden: int, seed: int) -> RnnGenerator:
    """A freshly initialised char GRU over the character vocabulary of `corpus`."""
    vocab = Vocab.build(corpus.read_text(encoding="utf-8"), "char")
    torch.manual_seed(seed)
    config = ModelConfig(arch="gru", vocab_size=len(vocab), embedding_dim=64,
                         hidden_size=hidden)
    target = resolve_device(device)
    return RnnGenerator(RnnLM(config).to(target), vocab, target)


def timed(generator: RnnGenerator, cells: list[Cell], batch_size: int, tokens: int,
          seed: int) -> tuple[float, int]:
    """Seconds and generated characters for all cells in calls of `batch_size` rows."""
    sync = torch.cuda.synchronize if generator.device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    generated = 0
    for batch, start in enumerate(range(0, len(cells), batch_size)):
        rows = cells[start:start + batch_size]
        texts = generator.generate([c.prompt for c in rows], [c.temperature for c in rows],
                                   max_tokens=tokens, seed=seed + batch, stop_at_marker=False)
        generated += sum(len(text) for text in texts)
    sync()
    return time.perf_counter() - started, generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DISCO_TRAIN,
                        help="text whose characters make the vocabulary")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=96,
                        help="rows per batched call (generate-grid's batch_size)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = build_generator(args.corpus, args.device, args.hidden, args.seed)
    spec = GridSpec(model="-", prompts=tuple(PROMPTS), temperatures=tuple(TEMPERATURES),
                    top_p=None, top_k=None, max_tokens=args.tokens, samples=args.samples,
                    seed=args.seed, shards=1, batch_size=args.batch_size, device=args.device)
    cells = grid_cells(spec)
    timed(generator, cells[:4], 4, 10, args.seed)  # warm-up
    batched_s, batched_tokens = timed(generator, cells, args.batch_size, args.tokens, args.seed)
    loop_s, loop_tokens = timed(generator, cells, 1, args.tokens, args.seed)
    batched_rate, loop_rate = batched_tokens / batched_s, loop_tokens / loop_s
    print(f"device {generator.device}, threads {args.threads}, load {os.getloadavg()[0]:.2f}; "
          f"char GRU hidden {args.hidden}, vocab {len(generator.vocab)}")
    print(f"grid: {len(PROMPTS)} prompts x {len(TEMPERATURES)} temperatures x {args.samples} "
          f"samples = {len(cells)} cells x {args.tokens} tokens")
    print(f"batched (batch {args.batch_size}): {batched_tokens} tokens in {batched_s:.2f} s = "
          f"{batched_rate:,.0f} tokens/s")
    print(f"loop    (batch 1):  {loop_tokens} tokens in {loop_s:.2f} s = {loop_rate:,.0f} tokens/s")
    print(f"ratio batched/loop: {batched_rate / loop_rate:.1f}x")


if __name__ == "__main__":
    main()
