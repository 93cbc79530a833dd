"""Merge a LoRA adapter into full weights: `lyricgen merge --base DIR --adapter DIR --out DIR`.

The base is always reloaded UNQUANTIZED (in `dtype`: "auto" is the dtype the base checkpoint
was saved in, fp32 when it does not say) and on CPU by default, the adapter applied and
`merge_and_unload()` folds it in; the result is saved with the tokenizer (the adapter's copy,
else the base's). Never merge into 4-bit weights: re-quantizing the sum loses the adapter's
small deltas, which is why a QLoRA run reloads the base here instead of reusing its model.
Pitfall: merging an 8B model in bf16 needs about 16 GB of RAM (32 GB in fp32).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lyricgen.errors import LyricgenInputError
from lyricgen.io import publish_dir
from lyricgen.llama.load import (
    DTYPES,
    Precision,
    adapter_base,
    check_model_dir,
    is_adapter_dir,
    load_model,
    tokenizer_dir,
)


def saved_dtype(model_dir: Path) -> str:
    """The dtype name a model directory's config.json records, "float32" when unknown."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype")
    return name if name in DTYPES else "float32"


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base_dir: str | Path | None = None,
                  dtype: str = "auto", device: str = "cpu") -> Path:
    """Write base + adapter as one full model (safetensors + tokenizer) to `out_dir`, atomically;
    base_dir defaults to the adapter's recorded base. Returns out_dir."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    base = check_model_dir(base_dir if base_dir is not None else adapter_base(adapter_dir),
                           key="base")
    if not is_adapter_dir(adapter_dir):
        raise LyricgenInputError(f"{adapter_dir}: not a LoRA adapter dir (no adapter_config.json)")
    name = saved_dtype(base) if dtype == "auto" else dtype
    if name not in DTYPES:
        raise LyricgenInputError(f"dtype: must be auto or one of {sorted(DTYPES)}, got {dtype!r}")
    precision = Precision(device=device, quantize_4bit=False, dtype=DTYPES[name])
    model = PeftModel.from_pretrained(load_model(base, precision), str(adapter_dir))
    merged = model.merge_and_unload()
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(tokenizer_dir(adapter_dir, base)),
                                  local_files_only=True).save_pretrained(str(tmp))
    return publish_dir(tmp, out_dir)
