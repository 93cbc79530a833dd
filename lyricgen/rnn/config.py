"""TrainConfig: the resolved params of a train-rnn job.

The fields are the train-rnn params of kindspec.registry (TRAIN_RNN), whose defaults are the
recommended char-level recipe (`jobctl kinds train-rnn` prints them); `from_params` resolves and
checks them there, exactly as `jobctl validate` does. See lyricgen/rnn/train.py for what each
param does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lyricgen.params import build_config

# Params that may change between a run and its resumption: they never alter the trajectory.
RESUME_FREE = frozenset({"max_steps", "checkpoint_every", "log_every", "device"})


@dataclass(frozen=True)
class TrainConfig:
    data: str
    valid_data: str | None
    arch: str
    level: str
    vocab_size: int
    epochs: int
    hidden_size: int | None  # None: lyricgen.rnn.autoshape (resolved by the Trainer)
    embedding_dim: int
    ngram_order: int
    ngram_buckets: int
    num_layers: int
    dropout: float
    tie_weights: bool
    lr: float
    lr_schedule: str
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float
    adam_beta2: float
    grad_clip: float
    batch_size: int | None
    seq_len: int
    shuffle_songs: bool
    min_count: int
    lowercase: bool
    marker: str
    max_minutes: float | None
    max_steps: int | None
    patience: int
    eval_every: int
    checkpoint_every: int
    log_every: int
    seed: int
    device: str
    precision: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainConfig:
        """Build from a params dict (defaults from the schema); LyricgenInputError naming the
        offending key."""
        return build_config(cls, "train-rnn", params)
