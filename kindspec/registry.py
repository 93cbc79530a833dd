"""The job kinds: each kind's params schema, default resources and named outputs.

Outputs are paths relative to the job's `out/` directory, which a later job can use as
`{{ needs.JOB.outputs.NAME }}`. A kind is listed here only once `python -m lyricgen KIND`
implements it; asking for any other kind is a clear error, never a stub. `jobctl kinds [KIND]`
prints this registry. The combined checks below are the only hand-written param checks: they
span several params (or the world size), and run at `jobctl validate` and in the job alike.
"""

from __future__ import annotations

from typing import Any

from kindspec.schema import NO_DEFAULT, Kind, Param

MARKER = "<|fin|>"
NONBLANK = r"(?s).*\S.*"
_ONE_LINE = {"pattern": r"\S(?:[^\r\n]*\S)?",
             "pattern_help": "one line without leading or trailing blanks"}


def _genius_needs_artists(params: dict[str, Any], world_size: int) -> tuple[str, str] | None:
    if params["source"] == "genius" and not params["artists"]:
        return "artists", "at least one artist for source: genius"
    return None


def _files_need_path(params: dict[str, Any], world_size: int) -> tuple[str, str] | None:
    if params["source"] == "files" and params["path"] is None:
        return "path", "required when source is files (a directory of .txt or .json files)"
    return None


def _splits_leave_training_data(params: dict[str, Any], world_size: int
                                ) -> tuple[str, str] | None:
    if params["valid_fraction"] + params["test_fraction"] >= 1:
        return "test_fraction", "valid_fraction + test_fraction must be < 1 (no train split left)"
    return None


def _syllables_need_a_scheme(params: dict[str, Any], world_size: int) -> tuple[str, str] | None:
    if params["syllables"] is not None and params["scheme"] is None:
        return "syllables", ("needs a scheme (the number of lines); for unrhymed lines use "
                             "'-' letters, e.g. scheme: \"-------- --------\"")
    return None


def _batch_splits_over_processes(params: dict[str, Any], world_size: int
                                 ) -> tuple[str, str] | None:
    if params["batch_size"] is not None and params["batch_size"] % world_size:
        return "batch_size", (f"{params['batch_size']} does not split evenly over {world_size} "
                              "processes (batch_size is the global batch)")
    return None


def _p(type_: str, default: Any = NO_DEFAULT, help: str = "", **kw: Any) -> Param:
    return Param(type_, default, help, **kw)


SCRAPE = Kind(
    name="scrape",
    summary="Download lyrics from Genius (lyricsgenius) or import local files into songs.jsonl",
    params={
        "source": _p("str", "genius", "genius: the Genius API; files: a local directory",
                     choices=("genius", "files")),
        "artists": _p("str_list", [], "artist names to search on Genius", pattern=NONBLANK,
                       pattern_help="a non-blank artist name"),
        "max_songs": _p("int", 20, "songs per artist (those already in songs.jsonl count)",
                        min=1, max=10000),
        "sort": _p("str", "popularity", "Genius song order", choices=("popularity", "title")),
        "token_env": _p("str", "GENIUS_ACCESS_TOKEN",
                        "upper-case NAME of the environment variable holding the token "
                        "(never the token)", pattern=r"[A-Z_][A-Z0-9_]*",
                        pattern_help="the upper-case NAME of an environment variable (e.g. "
                                     "GENIUS_ACCESS_TOKEN), not the token", redact=True),
        "path": _p("path", None, "source: files: directory of .txt or lyricsgenius .json files",
                   nullable=True, input="dir"),
        "max_retries": _p("int", 6, "retries per request on 429/5xx/timeouts/connection "
                          "errors, and per throttled (empty) lyrics page", min=0, max=50),
        "backoff_seconds": _p("float", 2.0, "first backoff delay, doubled per retry", min=0),
        "sleep_seconds": _p("float", 0.5, "pause between requests (politeness)", min=0),
        "timeout_seconds": _p("float", 15.0, "HTTP timeout", min=0.1),
    },
    outputs={"songs": "songs.jsonl", "report": "scrape_report.json"},
    resources={"cpus": 1, "mem": "2G", "time": "02:00:00"},
    combined_checks=(_genius_needs_artists, _files_need_path),
)

CLEAN = Kind(
    name="clean",
    summary="Clean, deduplicate, split and describe a lyrics corpus",
    params={
        "input": _p("path", help="songs.jsonl from scrape, a .txt corpus with <|fin|> markers, "
                                 "or a directory of .txt songs", input="file_or_dir"),
        "outputs": _p("path", None, "optional directory the clean files are also exported to",
                      nullable=True, writes=True),
        "valid_fraction": _p("float", 0.05, "share of songs in the valid split", min=0, max=0.5),
        "test_fraction": _p("float", 0.05, "share of songs in the test split", min=0, max=0.5),
        "min_lines": _p("int", 2, "drop songs with fewer lines", min=1),
        "marker": _p("str", MARKER, "end-of-song marker line", **_ONE_LINE),
        "seed": _p("int", 42, "split seed"),
    },
    outputs={
        "corpus": "corpus.txt",
        "train": "train.txt",
        "valid": "valid.txt",
        "test": "test.txt",
        "jsonl": "train_lyrics.jsonl",
        "valid_jsonl": "valid_lyrics.jsonl",
        "stats": "stats.json",
        "test_jsonl": "test_lyrics.jsonl",
        "report": "cleaning_report.json",
    },
    resources={"cpus": 1, "mem": "2G", "time": "00:30:00"},
    combined_checks=(_splits_leave_training_data,),
)

GENERATE_GRID = Kind(
    name="generate-grid",
    summary="Sample prompts x temperatures x samples from a trained model, with text metrics "
            "and an HTML report (shards > 1: an array job, merged by the `report` kind)",
    params={
        "model": _p("path", help="train-rnn out dir, its checkpoint/ dir or a .pt file; or a "
                                 "LLaMA dir (merged model, or one with adapter_config.json)",
                     input="model"),
        "prompts": _p("str_list", help="prompts (rows of the grid); \"\" starts a new song",
                       min_items=1),
        "temperatures": _p("float_list", [0.5, 0.8, 1.1],
                           "sampling temperatures (columns of the grid); 0 = greedy", min=0,
                           min_items=1, unique=True),
        "top_p": _p("float", None, "nucleus sampling mass in (0, 1]; null: off", nullable=True,
                    min=0, min_open=True, max=1),
        "top_k": _p("int", None, "keep the k most likely tokens; null or 0: off", nullable=True,
                    min=0),
        "max_tokens": _p("int", 200, "tokens generated per cell", min=1, max=100000),
        "samples": _p("int", 2, "samples per prompt and temperature", min=1, max=1000),
        "seed": _p("int", 42, "batch b of the fixed batches is sampled with seed + b"),
        "shards": _p("int", 1, "array tasks sharing the batches (jobctl makes one task each)",
                     min=1, max=1000),
        "batch_size": _p("int", 64, "max rows per batched generate call", min=1, max=4096),
        "device": _p("str", "auto", "auto: CUDA when available", choices=("auto", "cpu", "cuda")),
        "scheme": _p("str", None, "rhyme scheme: letters are rhyme groups (upper case: `rhyme`, "
                                  "lower case: assonant), '-' a free line, spaces stanza "
                                  "breaks, e.g. \"ABBA ABBA CDC DCD\"; null: free text",
                     nullable=True, pattern=r"(?=[A-Za-z -]{1,400}$)[A-Za-z-]+(?: [A-Za-z-]+)*",
                     pattern_help="letters, '-' and single spaces between stanzas (at most "
                                  "400 characters)"),
        "syllables": _p("int", None, "metrical syllables of every line (11: hendecasyllables, "
                                     "8: octosyllables); null: free length; needs a scheme",
                        nullable=True, min=1, max=30),
        "rhyme": _p("str", "consonant", "the rhyme of the scheme's upper-case letters",
                    choices=("consonant", "assonant")),
        "candidates": _p("int", 8, "candidate lines sampled per cell and line (the time of a "
                                   "verse line grows about linearly with it)", min=1, max=256),
        "lexicon": _p("path", None, "text file (or directory of .txt) whose line-final words "
                                    "may end verse lines; null: the embedded DISCO sonnets",
                      nullable=True, input="file_or_dir"),
        "compare_free": _p("bool", False, "with a scheme, also sample every cell freely, "
                                          "side by side in the grid and report"),
    },
    outputs={"grid": "grid.json", "report": "report.html", "plot": "metrics_by_temperature.png",
             "dir": "."},
    resources={"cpus": 2, "mem": "8G", "time": "01:00:00"},
    shards_param="shards",
    gpu_capable=True,
    combined_checks=(_syllables_need_a_scheme,),
)

REPORT = Kind(
    name="report",
    summary="Merge a generate-grid job's shards into one grid.json and HTML report",
    params={
        "grid": _p("path", help="a generate-grid out dir (`{{ needs.JOB.outputs.dir }}`) "
                                "or its grid.json", input="grid"),
    },
    outputs={"grid": "grid.json", "report": "report.html", "plot": "metrics_by_temperature.png"},
    resources={"cpus": 1, "mem": "2G", "time": "00:15:00"},
)

TRAIN_RNN = Kind(
    name="train-rnn",
    summary="Train a char-, BPE-subword- or word-level RNN/LSTM/GRU language model "
            "(truncated BPTT); the defaults are the recommended char-level recipe",
    params={
        "data": _p("path", help="training text: songs separated by a blank line + marker line",
                    input="file"),
        "valid_data": _p("path", None, "validation text (same format); null: no validation",
                         nullable=True, input="file"),
        "arch": _p("str", "lstm", "recurrent cell", choices=("rnn", "lstm", "gru")),
        "level": _p("str", "char", "token level: characters, BPE subwords learned from data, or "
                                   "words", choices=("char", "bpe", "word")),
        "vocab_size": _p("int", 1024, "bpe level: subword vocabulary size (the marker, the "
                                      "characters seen, then learned merges)", min=8),
        "epochs": _p("int", 30, "passes over the data (each token once per pass)", min=1),
        "hidden_size": _p("int", None, "recurrent state size; null: 384, or with max_minutes at "
                                       "char/bpe level the size a short probe of this machine "
                                       "favours for the budget (README)", nullable=True,
                          min=1),
        "embedding_dim": _p("int", 64, "token embedding size", min=1),
        "ngram_order": _p("int", 4, "input: each token's embedding plus hashed embeddings of "
                                    "the 2..N-grams ending at it (1: the token alone)",
                          min=1, max=8),
        "ngram_buckets": _p("int", 8192, "rows of each n-gram order's hashed table", min=1),
        "num_layers": _p("int", 1, "stacked recurrent layers", min=1, max=16),
        "dropout": _p("float", 0.1, "locked dropout (one mask per sequence) on embeddings and "
                                    "outputs; per-element between stacked layers",
                      min=0, max=0.95),
        "tie_weights": _p("bool", False, "share embedding and output weights (a projection is "
                                         "added when hidden_size != embedding_dim)"),
        "lr": _p("float", 8e-3, "peak AdamW learning rate", min=0, min_open=True),
        "lr_schedule": _p("str", "linear", "decay after warmup; follows the wall clock when "
                                           "max_minutes is set",
                          choices=("cosine", "linear", "constant")),
        "warmup_steps": _p("int", 100, "linear warmup steps", min=0),
        "min_lr_ratio": _p("float", 0.02, "final learning rate as a fraction of lr", min=0,
                           max=1),
        "weight_decay": _p("float", 0.05, "AdamW decoupled weight decay (matrices only)", min=0),
        "adam_beta2": _p("float", 0.99, "AdamW second-moment decay (0.99 adapts faster than "
                                        "torch's 0.999 to a small model's changing gradients)",
                         min=0, min_open=True, max=0.9999),
        "grad_clip": _p("float", 1.0, "max global gradient norm; 0: no clipping", min=0),
        "batch_size": _p("int", None, "parallel contiguous streams in all, split evenly over "
                                      "torchrun's processes; null: 16 (where a bf16 LSTM runs "
                                      "fastest per token on CPU), or chosen with hidden_size",
                         nullable=True, min=1),
        "seq_len": _p("int", 128, "truncated BPTT window (tokens)", min=1),
        "shuffle_songs": _p("bool", True, "concatenate the songs in a new seeded order every "
                                          "epoch (each token still once per epoch)"),
        "min_count": _p("int", 2, "word level: rarer words become <unk>", min=1),
        "lowercase": _p("bool", False, "lowercase the text (bpc then describes lowercased text)"),
        "marker": _p("str", MARKER, "end-of-song marker line (one token at bpe and word level)",
                     **_ONE_LINE),
        "max_minutes": _p("float", None, "wall-clock budget; the LR schedule follows it",
                          nullable=True, min=0, min_open=True),
        "max_steps": _p("int", None, "stop (pause) after this many optimizer steps",
                        nullable=True, min=1),
        "patience": _p("int", 5, "validations without a new best before stopping; 0: never",
                       min=0),
        "eval_every": _p("int", 0, "also validate every N steps; 0: once per epoch", min=0),
        "checkpoint_every": _p("int", 500, "write checkpoint/last.pt every N steps; 0: only at "
                                           "validations", min=0),
        "log_every": _p("int", 50, "metrics.csv row every N steps", min=1),
        "seed": _p("int", 42, "seed for initialisation and dropout"),
        "device": _p("str", "auto", "auto: CUDA when available", choices=("auto", "cpu", "cuda")),
        "precision": _p("str", "auto", "auto: bf16 (or fp16) autocast on CUDA; on CPU bf16 "
                                       "where the cores have bf16 instructions, else fp32",
                        choices=("auto", "fp32", "bf16", "fp16")),
    },
    outputs={"checkpoint": "checkpoint", "metrics": "metrics.json"},
    resources={"cpus": 4, "mem": "8G", "time": "04:00:00"},
    gpu_capable=True,
    distributed=True,
    checkpoints=True,
    combined_checks=(_batch_splits_over_processes,),
)

FINETUNE_LLAMA = Kind(
    name="finetune-llama",
    summary="LoRA / QLoRA fine-tuning of a local LLaMA model on the clean step's songs "
            "(4-bit NF4 on CUDA by default; torchrun for several GPUs)",
    params={
        "model_path": _p("path", help="LOCAL base model directory (config.json, weights, "
                                      "tokenizer), e.g. models/Meta-Llama-3-8B; never a Hub id",
                          input="model_dir"),
        "data_path": _p("path", help="train_lyrics.jsonl from clean (one song per line, "
                                     "key text)", input="file"),
        "valid_path": _p("path", None, "valid_lyrics.jsonl for eval loss / perplexity",
                         nullable=True, input="file"),
        "epochs": _p("int", 1, "passes over the train data (unless max_steps)", min=1),
        "max_steps": _p("int", None, "optimizer steps; null: epochs decide", nullable=True,
                        min=1),
        "max_minutes": _p("float", None, "wall-clock budget (loading included): the LR decay "
                                         "follows the clock and the run stops, evaluates and "
                                         "saves when it is spent; null: steps decide",
                          nullable=True, min=0, min_open=True),
        "batch_size": _p("int", 4, "examples per micro-batch per process", min=1),
        "grad_accum": _p("int", 4, "micro-batches per optimizer step", min=1),
        "block_size": _p("int", 512, "tokens per example", min=2),
        "lr": _p("float", 2.0e-4, "peak AdamW learning rate (linear warmup, linear decay to 0 "
                                  "over the steps or max_minutes)", min=0),
        "warmup_steps": _p("int", 0, "linear warmup steps", min=0),
        "max_grad_norm": _p("float", 1.0, "gradient clipping norm", min=0),
        "dropout": _p("float", None, "LoRA dropout; null: 0.05 on CUDA, 0 on CPU (its "
                                     "per-element masks cost a CPU step 10-40 %)",
                      nullable=True, min=0, max=0.99),
        "lora_r": _p("int", 16, "LoRA rank", min=1),
        "lora_alpha": _p("int", 32, "LoRA alpha (scale alpha / r)", min=1),
        "target_modules": _p("str_list", ["all-linear"],
                             "modules that get LoRA; [all-linear]: every linear but lm_head",
                             min_items=1, pattern=r"[A-Za-z0-9_.*-]+",
                             pattern_help="a module name"),
        "packing": _p("bool", True, "concatenate songs into full blocks (false: one song per "
                                    "example, padded)"),
        "load_in_4bit": _p("bool", None, "NF4 4-bit base (QLoRA); null: on CUDA yes, CPU no",
                           nullable=True),
        "dtype": _p("str", "auto", "compute / unquantized weights dtype; auto: bf16 on CUDA "
                                   "(fp16 without bf16 support), on CPU bf16 where the cores "
                                   "have bf16 instructions (AVX512-BF16, AMX), else fp32",
                    choices=("auto", "float32", "bfloat16", "float16")),
        "eval_every": _p("int", 100, "valid loss every N optimizer steps (and at the end)",
                         min=1),
        "save_every": _p("int", 100, "checkpoint every N optimizer steps (and at the end)",
                         min=1),
        "keep_checkpoints": _p("int", 2, "newest checkpoints kept (at least 2, so a torn newest "
                                         "one has a fallback)", min=2),
        "gradient_checkpointing": _p("bool", None, "recompute activations (less memory, "
                                                   "about 1/3 more compute); null: on CUDA "
                                                   "yes, on CPU no", nullable=True),
        "seed": _p("int", 42, "LoRA init, data order and dropout seed", min=0),
        "device": _p("str", "auto", "auto: CUDA when available", choices=("auto", "cpu", "cuda")),
        "merge": _p("bool", False, "also write full merged weights to merged/"),
    },
    outputs={"adapter": "adapter", "merged": "merged"},
    resources={"gpus": 1, "cpus": 8, "mem": "32G", "time": "12:00:00"},
    gpu_capable=True,
    distributed=True,
    checkpoints=True,
)

KINDS: dict[str, Kind] = {k.name: k for k in (SCRAPE, CLEAN, GENERATE_GRID, REPORT, TRAIN_RNN,
                                                FINETUNE_LLAMA)}


def get_kind(name: str) -> Kind:
    """The registered kind; KeyError for unknown names (callers turn it into an InputError
    with a did-you-mean hint)."""
    return KINDS[name]
