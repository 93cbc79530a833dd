"""LLaMA steps: QLoRA/LoRA fine-tuning (finetune-llama kind), adapter merging and generation.

Modules: load (precision policy, offline model/tokenizer loading), params (the kind's params),
data (songs -> token blocks, batch schedule), step (one optimizer step), dist (torch.distributed
setup), checkpoint (resumable training state), metrics (CSV/JSON/PNG), finetune (the kind),
merge (adapter -> full weights), generate (LlamaGenerator). Importing this package is cheap;
torch/transformers are imported by the submodules.
"""
