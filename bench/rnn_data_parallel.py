"""train-rnn throughput: one process with a thread per core vs torchrun with one single-thread
process per core, at the same global batch, side by side.

    python bench/rnn_data_parallel.py [--steps 300] [--repeats 2] [--processes 2]

Both sides run the real CLI (`python -m lyricgen train-rnn --config ...`; the data-parallel
side behind `python -m torch.distributed.run --standalone --nproc-per-node=P`) with the kind's
default char recipe on ../shared/corpora/disco/train.txt for --steps optimizer steps
(no validation), in alternation (one, data-parallel, one, ...) so load from other processes
hits both alike. Printed per run and as the best of --repeats: tokens/s over the training
steps (metrics.json's median of 50-step intervals) and the ratio data-parallel / one process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DISCO = REPO.parent / "shared/corpora/disco"


def write_config(directory: Path, steps: int) -> Path:
    params = {"data": str(DISCO / "train.txt"), "valid_data": None, "max_steps": steps,
              "checkpoint_every": 0, "device": "cpu"}
    config = {"schema": 1, "kind": "train-rnn", "job": "bench", "run_id": "bench",
              "job_dir": str(directory), "out_dir": str(directory / "out"),
              "tasks": [{"index": 0, "params": params, "matrix": {}}]}
    path = directory / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def tokens_per_second(processes: int, threads: int, steps: int) -> float:
    """Median training tokens/s of one fresh run (1 process or torchrun with `processes`)."""
    with tempfile.TemporaryDirectory(prefix="rnn-dp-") as tmp:
        config = write_config(Path(tmp), steps)
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     f"--nproc-per-node={processes}"] if processes > 1 else [sys.executable])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        env.pop("SLURM_CPUS_PER_TASK", None)
        subprocess.run([*launcher, "-m", "lyricgen", "train-rnn", "--config", str(config)],
                       cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        metrics = json.loads((Path(tmp) / "out/metrics.json").read_text(encoding="utf-8"))
        return float(metrics["tokens_per_s_median"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2,
                        help="torchrun processes (one thread each); the single process gets "
                             "this many threads")
    args = parser.parse_args()
    single, parallel = [], []
    for _ in range(args.repeats):
        single.append(tokens_per_second(1, args.processes, args.steps))
        parallel.append(tokens_per_second(args.processes, 1, args.steps))
    print(f"train-rnn defaults (global batch 16 x 128), {args.steps} steps, best of "
          f"{args.repeats}, alternating")
    print(f"{'':34}{'tokens/s':>10}")
    print(f"{f'1 process x {args.processes} threads':34}{max(single):>10,.0f}")
    print(f"{f'{args.processes} processes x 1 thread (DDP)':34}{max(parallel):>10,.0f}")
    print(f"{'ratio DDP / 1 process':34}{max(parallel) / max(single):>10.3f}")
    print(f"all runs: 1 process {[round(x) for x in single]}, "
          f"DDP {[round(x) for x in parallel]}")


if __name__ == "__main__":
    main()
