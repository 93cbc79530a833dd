"""Build a tiny random-weight LLaMA model directory for the LLaMA tests (no download).

`build_tiny_llama(root)` writes `root/tiny-llama/` once (later calls reuse it): a byte-level BPE
tokenizer (vocab ~1000) trained with `tokenizers` on a slice of the real DISCO corpus read from
../shared/corpora/disco beside the checkout, and a LlamaForCausalLM (hidden 64, 2 layers, 4 heads,
2 KV heads like LLaMA 3's grouped-query attention) with seeded random weights, saved with its
tokenizer. Like LLaMA 3's tokenizer it prepends BOS to every encoded text; EOS and PAD are set.

Pitfall: the directory is complete only once `.complete` exists (written last), so an
interrupted build is rebuilt rather than half-used.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "disco"
SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>"}


def disco_texts(split: str = "train", limit: int | None = None) -> list[str]:
    """Poem texts from the DISCO corpus (`split` is train or valid), first `limit` of them."""
    texts = []
    with open(CORPUS_DIR / f"{split}.jsonl", encoding="utf-8") as handle:
        for line in handle:
            texts.append(json.loads(line)["text"])
            if limit is not None and len(texts) >= limit:
                break
    return texts


def _train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=SPECIAL["eos"],
                                   pad_token=SPECIAL["pad"])


def build_tiny_llama(root: Path, vocab_size: int = 1000, poems: int = 400) -> Path:
    """The tiny model directory under `root` (built on first call, reused afterwards)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(root) / "tiny-llama"
    if (out / ".complete").exists():
        return out
    tokenizer = _train_tokenizer(disco_texts("train", poems), vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / ".complete").write_text("ok\n", encoding="utf-8")
    return out


def _permute_for_gguf(weight, heads: int):
    """llama.cpp's row order for q/k projections (rotary halves interleaved); transformers
    undoes it when it loads a llama GGUF."""
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_gguf(model_dir: Path, path: Path, quant: str = "F32", arch: str = "llama") -> Path:
    """Write the model in `model_dir` (tiny LLaMA: byte-level BPE tokenizer) as a GGUF the way
    llama.cpp's converter does: llama tensor names, q/k rows permuted, tokenizer as gpt2-type
    metadata. quant "F32" keeps the weights exact; "Q8_0" quantizes the 2-D weights. `arch`
    is written as general.architecture as given (to craft unsupported files)."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny-llama")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    vocab = tokenizer["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = {t["content"] for t in tokenizer["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL
                            for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m)
                             for m in tokenizer["model"]["merges"]])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    for name, tensor in load_file(str(model_dir / "model.safetensors")).items():
        data = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            data = _permute_for_gguf(data, heads)
        elif name.endswith("k_proj.weight"):
            data = _permute_for_gguf(data, kv_heads)
        target = names.get_name(name, try_suffixes=(".weight",))
        if quant == "Q8_0" and data.ndim == 2:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(target, packed, raw_shape=packed.shape,
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(target, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
