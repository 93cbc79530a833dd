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
