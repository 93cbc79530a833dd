"""TrainConfig: the resolved params of a train-rnn job (mirrors jobs/kinds.py TRAIN_RNN).

jobctl validates params against its registry before writing config.json; `from_params` checks
again (unknown keys, types, enums) so a hand-written config.json fails with one clear line.
The defaults here equal the registry's (a test keeps them in step) and are the recommended
char-level recipe; see lyricgen/rnn/train.py for what each param does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from lyricgen.errors import LyricgenInputError
from lyricgen.rnn.model import ARCHS
from lyricgen.rnn.vocab import LEVELS, MARKER

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# Params that may change between a run and its resumption: they never alter the trajectory.
RESUME_FREE = frozenset({"max_steps", "checkpoint_every", "log_every", "device"})


@dataclass(frozen=True)
class TrainConfig:
    data: str
    valid_data: str | None = None
    arch: str = "lstm"
    level: str = "char"
    epochs: int = 30
    hidden_size: int = 384
    embedding_dim: int = 64
    num_layers: int = 1
    dropout: float = 0.1
    tie_weights: bool = False
    lr: float = 8e-3
    lr_schedule: str = "linear"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.05
    adam_beta2: float = 0.99
    grad_clip: float = 1.0
    batch_size: int = 16
    seq_len: int = 128
    shuffle_songs: bool = True
    min_count: int = 2
    lowercase: bool = False
    marker: str = MARKER
    max_minutes: float | None = None
    max_steps: int | None = None
    patience: int = 5
    eval_every: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainConfig:
        """Build from a params dict; LyricgenInputError naming the offending key."""
        known = {f.name: f for f in fields(cls)}
        for key in params:
            if key not in known:
                raise LyricgenInputError(f"params: {key}: unknown train-rnn param")
        if "data" not in params:
            raise LyricgenInputError("params: data: required (path of the training text)")
        values = {key: _coerce(key, value, known[key].type) for key, value in params.items()}
        config = cls(**values)
        config._check()
        return config

    def _check(self) -> None:
        enums = {"arch": ARCHS, "level": LEVELS, "lr_schedule": SCHEDULES,
                 "precision": PRECISIONS, "device": DEVICES}
        for key, allowed in enums.items():
            if getattr(self, key) not in allowed:
                raise LyricgenInputError(f"params: {key}: {getattr(self, key)!r} is not one of "
                                         f"{', '.join(allowed)}")
        positive = ("epochs", "hidden_size", "embedding_dim", "num_layers", "batch_size",
                    "seq_len", "min_count", "log_every", "lr")
        for key in positive:
            if getattr(self, key) <= 0:
                raise LyricgenInputError(f"params: {key}: must be > 0")
        if not 0.0 < self.adam_beta2 < 1.0:
            raise LyricgenInputError("params: adam_beta2: must be in (0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise LyricgenInputError("params: dropout: must be in [0, 1)")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise LyricgenInputError("params: max_minutes: must be > 0 (or null)")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    text = str(annotation)
    if value is None:
        if "None" not in text:
            raise LyricgenInputError(f"params: {key}: must not be null")
        return None
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if text.startswith(name):
            if kind is bool and not isinstance(value, bool):
                break
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                break
            if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
                break
            if kind is str and not isinstance(value, str):
                break
            return kind(value)
    raise LyricgenInputError(f"params: {key}: expected {text.split(' ')[0]}, got {value!r}")

