"""`python -m lyricgen KIND --config config.json [--task N]`, plus utility subcommands.

Exit codes: 0 success, 1 failure (an output that could not be written, e.g. a full disk: one
line naming the file), 2 bad input (one line on stderr, no traceback), 75 stopped by
SIGUSR1/SIGTERM after saving a checkpoint (lyricgen.preempt; run it again to resume).
The task index defaults to $SLURM_ARRAY_TASK_ID, then 0.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from lyricgen.context import load_config, write_provenance
from lyricgen.errors import LyricgenInputError, LyricgenWriteError
from lyricgen.gpu_usage import record_gpu_peak
from lyricgen.kinds import ENTRY_POINTS, load_runner
from lyricgen.preempt import Preempted
from lyricgen.threads import apply_threads


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """lyricgen: Spanish lyrics corpus, RNN and LLaMA steps (each job kind is a subcommand)."""


def _make_kind_command(kind: str) -> click.Command:
    @click.command(name=kind, help=f"Run the `{kind}` step from a jobctl config.json.")
    @click.option("--config", "config_path", required=True,
                  type=click.Path(path_type=Path), help="config.json written by jobctl")
    @click.option("--task", type=int, default=None,
                  help="array task index (default: $SLURM_ARRAY_TASK_ID or 0)")
    def command(config_path: Path, task: int | None) -> None:
        if task is None and os.environ.get("SLURM_ARRAY_TASK_ID", "").isdigit():
            task = int(os.environ["SLURM_ARRAY_TASK_ID"])
        config_kind, params, ctx = load_config(config_path, task)
        if config_kind != kind:
            raise LyricgenInputError(f"{config_path}: kind: is {config_kind!r}, not {kind!r}")
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        threads, reason = apply_threads()  # before the kind's module imports torch
        click.echo(f"lyricgen: {kind}: threads {reason}")  # stdout: errors keep stderr
        try:
            extra = load_runner(kind)(params, ctx)
        finally:
            record_gpu_peak()  # for job.sh's status file, when CUDA was used
        if os.environ.get("RANK", "0") == "0":  # torchrun/srun: only rank 0 writes
            record = {"threads": {"threads": threads, "reason": reason}}
            write_provenance(ctx, params, {**record, **(extra if isinstance(extra, dict) else {})})

    return command


for _kind in ENTRY_POINTS:
    cli.add_command(_make_kind_command(_kind))


@cli.command(name="merge")
@click.option("--base", type=click.Path(path_type=Path), default=None,
              help="local base model dir (default: the adapter's base_model_name_or_path)")
@click.option("--adapter", required=True, type=click.Path(path_type=Path),
              help="LoRA adapter dir (finetune-llama's out/adapter)")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="directory for the merged full model")
@click.option("--dtype", default="auto",
              type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="merge dtype; auto: the dtype the base was saved in")
def merge_command(base: Path | None, adapter: Path, out_dir: Path, dtype: str) -> None:
    """Merge a LoRA adapter into an unquantized copy of its base model."""
    from lyricgen.llama.merge import merge_adapter

    click.echo(merge_adapter(adapter, out_dir, base, dtype=dtype))


@cli.command(name="import-model")
@click.option("--gguf", "gguf_path", required=True, type=click.Path(path_type=Path),
              help="GGUF file of a Llama-family model (general.architecture llama)")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="new model directory (must not exist, or be empty)")
@click.option("--dtype", default="float32", type=click.Choice(["float32", "bfloat16"]),
              help="dtype of the saved (dequantised) weights")
def import_model_command(gguf_path: Path, out_dir: Path, dtype: str) -> None:
    """Import a GGUF (llama.cpp / Ollama export) as a local model directory."""
    import time

    from lyricgen.llama.import_gguf import import_gguf, output_bytes

    started = time.perf_counter()
    out = import_gguf(gguf_path, out_dir, dtype=dtype)
    click.echo(f"{out}: {output_bytes(out) / 1e6:.0f} MB, imported in "
               f"{time.perf_counter() - started:.0f} s")


@cli.command(name="evaluate")
@click.option("--model", "--checkpoint", "model", required=True, type=click.Path(path_type=Path),
              help="train-rnn out dir, its checkpoint/ dir or a .pt file; or a LLaMA model dir "
                   "(config.json) or LoRA adapter dir (adapter_config.json)")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="text file in the marker format")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--window", type=click.IntRange(min=2), default=None,
              help="LLaMA: tokens per forward pass (default min(1024, max positions))")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="LLaMA: new tokens scored per window (default window / 2)")
@click.option("--base", type=click.Path(path_type=Path), default=None,
              help="LLaMA adapter: base model dir (default: the adapter's recorded base)")
def evaluate_command(model: Path, data: Path, as_json: bool, device: str, window: int | None,
                     stride: int | None, base: Path | None) -> None:
    """Bits per character and perplexity of an RNN or LLaMA model on a text file (one scale
    for every family: see lyricgen/evaluate.py)."""
    from lyricgen.evaluate import evaluate_model, format_report

    report = evaluate_model(model, data, device, window=window, stride=stride, base=base)
    click.echo(format_report(report, as_json))


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="lyricgen", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("lyricgen: interrupted", err=True)
        sys.exit(130)
    except (LyricgenInputError, LyricgenWriteError) as exc:
        click.echo(f"lyricgen: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Preempted as exc:
        click.echo(f"lyricgen: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
