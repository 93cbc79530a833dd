"""`lyricgen import-model --gguf FILE --out DIR`: a GGUF of a Llama model -> a local model dir.

DIR then holds what `finetune-llama`'s `model_path`, `generate-grid`'s `model` and
`lyricgen evaluate` load: config.json, generation_config.json, model.safetensors (the weights,
dequantised, in `dtype`), the tokenizer (tokenizer.json, tokenizer_config.json, chat template)
and provenance.json (the source file's path, size and sha256, its GGUF metadata, the dtype,
package versions, the time).

Order of work: everything cheap is checked before anything is dequantised, each failure one
line naming the file (exit 2): the file exists and starts with the GGUF magic; its metadata
(read by `gguf.GGUFReader`, memory-mapped) names the architecture `llama`, the only GGUF
architecture transformers turns into LlamaForCausalLM (Llama 1-3, SmolLM, TinyLlama...; Qwen,
Gemma, Phi... are refused); DIR is absent or empty; the free disk beside DIR holds the estimate
`parameters x dtype bytes + 64 MiB`. Then transformers loads the file with
`GgufConfig(dequantize=True)`: dense weights whether or not the `kernels` package is present,
and no quantizer left on the model, so it saves as a plain one (the default GGUF load keeps
the weights' quantizer and refuses `save_pretrained`; rebuilding the model from its config
without `quantization_config` is then needed, and costs a second copy in memory). It is saved
with the tokenizer transformers builds from the GGUF metadata.

DIR is built in `.DIR.tmp` beside it and renamed into place complete, so it is never
half-written; a killed import leaves only the temp dir, which the next import replaces.
Pitfalls: the GGUF's quantisation rounding (Q4_1...) is baked into the weights: the import is
exactly the GGUF model, not the original fp16 one. `bfloat16` rounds the dequantised fp32 values
once more. An 8B model needs about 32 GB of RAM and disk in float32 (16 GB in bfloat16).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lyricgen.context import package_versions
from lyricgen.errors import LyricgenInputError
from lyricgen.io import atomic_write_json, sha256_file
from lyricgen.llama.checkpoint import publish_dir
from lyricgen.llama.load import DTYPES

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHITECTURES = ("llama",)
IMPORT_DTYPES = ("float32", "bfloat16")
DISK_MARGIN = 64 << 20  # tokenizer, configs and provenance, generously
PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class GgufInfo:
    """What the metadata of a GGUF says, read without dequantising anything."""

    architecture: str
    name: str | None
    file_type: str | None
    tensors: int
    parameters: int
    tensor_types: dict[str, int]


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_gguf_info(path: Path) -> GgufInfo:
    """The architecture and size of a GGUF file; LyricgenInputError for anything else."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError as exc:
        raise LyricgenInputError(f"{path}: gguf: no such file") from exc
    except OSError as exc:
        raise LyricgenInputError(f"{path}: gguf: cannot read ({exc.strerror})") from exc
    if magic != GGUF_MAGIC:
        raise LyricgenInputError(f"{path}: gguf: not a GGUF file (it starts with {magic!r}, "
                                 f"not {GGUF_MAGIC!r})")
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(path)
    except (ValueError, KeyError, IndexError, OSError) as exc:
        raise LyricgenInputError(f"{path}: gguf: unreadable GGUF ({type(exc).__name__}: "
                                 f"{str(exc)[:120]})") from exc
    architecture = _field(reader, "general.architecture")
    if not isinstance(architecture, str):
        raise LyricgenInputError(f"{path}: general.architecture: missing from the GGUF metadata")
    file_type = _field(reader, "general.file_type")
    try:
        type_name = None if file_type is None else LlamaFileType(int(file_type)).name
    except ValueError:
        type_name = str(file_type)
    counts: dict[str, int] = {}
    for tensor in reader.tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return GgufInfo(architecture=architecture, name=_field(reader, "general.name"),
                    file_type=type_name, tensors=len(reader.tensors),
                    parameters=sum(int(t.n_elements) for t in reader.tensors),
                    tensor_types=counts)


def check_architecture(path: Path, info: GgufInfo) -> None:
    if info.architecture not in SUPPORTED_ARCHITECTURES:
        raise LyricgenInputError(
            f"{path}: general.architecture: {info.architecture!r} is not supported (only "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}: GGUFs that transformers loads as "
            "LlamaForCausalLM)")


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise LyricgenInputError(f"{out_dir}: out: exists and is not an empty directory "
                                 "(remove it or choose another)")


def estimated_bytes(info: GgufInfo, dtype: str) -> int:
    """Output size estimate: every GGUF parameter stored once in `dtype`, plus a margin."""
    return info.parameters * DTYPES[dtype].itemsize + DISK_MARGIN


def check_disk(out_dir: Path, needed: int) -> None:
    """LyricgenInputError when the file system that will hold out_dir has < `needed` free."""
    parent = out_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise LyricgenInputError(
            f"{out_dir}: out: too little disk: the import needs about {needed / 2**30:.2f} GiB, "
            f"{parent} has {free / 2**30:.2f} GiB free")


def load_gguf_model(path: Path, dtype: str) -> tuple[Any, Any]:
    """(model, tokenizer) from the GGUF via transformers, on CPU, weights dequantised to
    `dtype`. With `GgufConfig(dequantize=True)` transformers keeps no quantizer on the model,
    so it saves like any other (the default GGUF load keeps one and refuses
    `save_pretrained`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = path.absolute()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                              local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=DTYPES[dtype], local_files_only=True,
        quantization_config=GgufConfig(dequantize=True))
    model.eval()
    return model, tokenizer


def import_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Import `gguf_path` into the model directory `out_dir` (see the module doc); returns it."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if dtype not in IMPORT_DTYPES:
        raise LyricgenInputError(f"dtype: must be one of {', '.join(IMPORT_DTYPES)}, got {dtype!r}")
    info = read_gguf_info(gguf_path)
    check_architecture(gguf_path, info)
    check_out_dir(out_dir)
    needed = estimated_bytes(info, dtype)
    check_disk(out_dir, needed)
    record = {"kind": "import-model", "started": time.time()}
    stages = tqdm(total=4, desc="import-model", unit="stage", file=sys.stderr)
    stages.set_postfix_str("sha256")
    record["source"] = {"path": str(gguf_path.absolute()), "name": gguf_path.name,
                        "size": gguf_path.stat().st_size,
                        "sha256": sha256_file(gguf_path, progress=True)}
    stages.update()
    stages.set_postfix_str("load + dequantise")
    model, tokenizer = _load_checked(gguf_path, dtype)
    record.update(gguf=asdict(info), dtype=dtype, model_class=type(model).__name__,
                  parameters=sum(p.numel() for p in model.parameters()),
                  estimated_bytes=needed, versions=package_versions())
    stages.update()
    stages.set_postfix_str("save")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / PROVENANCE, {**record, "finished": time.time()})
        stages.update()
        stages.set_postfix_str("publish")
        check_out_dir(out_dir)
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stages.update()
    stages.close()
    return out_dir


def _load_checked(gguf_path: Path, dtype: str) -> tuple[Any, Any]:
    """load_gguf_model, its failures on a file that passed the metadata checks (a tokenizer
    type or tensor layout transformers does not handle) as one-line input errors."""
    try:
        model, tokenizer = load_gguf_model(gguf_path, dtype)
    except (ValueError, KeyError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise LyricgenInputError(f"{gguf_path}: gguf: transformers cannot load it "
                                 f"({type(exc).__name__}: {first})") from exc
    if model.config.model_type != "llama":
        raise LyricgenInputError(f"{gguf_path}: general.architecture: transformers made a "
                                 f"{type(model).__name__}, not LlamaForCausalLM")
    return model, tokenizer


def output_bytes(out_dir: Path) -> int:
    """Total size of the files under out_dir."""
    return sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
