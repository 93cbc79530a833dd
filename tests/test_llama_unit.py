"""lyricgen.llama units: params, data packing/padding, batch schedule, precision policy, model
dir checks. Fast: no model is trained here (tests/test_llama_e2e.py runs the real CLI)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from lyricgen.errors import LyricgenInputError, LyricgenWriteError
from lyricgen.llama import checkpoint
from lyricgen.llama.data import (
    IGNORE_INDEX,
    SONG_END_CHARS,
    EncodedSongs,
    Schedule,
    encode_songs,
    pack,
    pad_truncate,
    read_texts,
    token_chars,
)
from lyricgen.llama.load import check_model_dir, resolve_precision
from lyricgen.llama.params import FinetuneParams

torch.set_num_threads(1)


@pytest.fixture
def inputs(tmp_path):
    """A model dir and a data file, so params pass the input checks."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (tmp_path / "d").write_text("{}\n", encoding="utf-8")
    return {"model_path": str(tmp_path / "m"), "data_path": str(tmp_path / "d")}


@pytest.mark.parametrize("params, message", [
    ({"model_path": None}, "model_path: missing required param"),
    ({"lr": "fast"}, "lr: expected a number"),
    ({"batch_size": 0}, "batch_size: must be >= 1"),
    ({"packing": 1}, "packing: expected true or false"),
    ({"device": "tpu"}, "device: expected one of"),
    ({"lora_rank": 8}, "lora_rank: unknown param for kind 'finetune-llama'; did you mean"),
    ({"target_modules": []}, "target_modules: expected at least 1 item"),
])
def test_bad_params_are_one_line_errors(inputs, params, message):
    given = {**inputs, **params}
    given = {key: value for key, value in given.items() if value is not None}
    with pytest.raises(LyricgenInputError, match=message) as info:
        FinetuneParams.from_params(given)
    assert "\n" not in str(info.value)


def test_target_modules_all_linear_is_peft_string(inputs):
    p = FinetuneParams.from_params(inputs)
    assert p.peft_targets() == "all-linear"
    q = FinetuneParams.from_params({**inputs, "target_modules": ["q_proj", "v_proj"]})
    assert q.peft_targets() == ["q_proj", "v_proj"]
    assert "eval_every" not in p.resume_key() and p.resume_key()["lr"] == p.lr


class _Tok:
    """Minimal tokenizer: one id per character + 10, BOS 1 prepended, EOS 2."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 2

    def __call__(self, texts, add_special_tokens=True, return_offsets_mapping=False):
        return {"input_ids": [[1] + [ord(c) % 50 + 10 for c in t] for t in texts],
                "offset_mapping": [[(0, 0)] + [(i, i + 1) for i in range(len(t))]
                                   for t in texts]}


def test_every_song_ends_with_eos_and_starts_with_bos():
    songs = encode_songs(["ab", "c"], _Tok())
    assert [s[0] for s in songs.ids] == [1, 1] and [s[-1] for s in songs.ids] == [2, 2]
    assert [len(s) for s in songs.ids] == [4, 3]
    assert songs.chars == [[0, 1, 1, SONG_END_CHARS], [0, 1, SONG_END_CHARS]]


def test_token_chars_give_split_characters_to_the_completing_token():
    # "añb": byte-level tokens "a", first byte of "ñ" (offsets (1, 2)), second byte (1, 2), "b"
    assert token_chars([(0, 0), (0, 1), (1, 2), (1, 2), (2, 3), (0, 0)], 3 + 10) == \
        [0, 1, 1, 0, 1, 10]
    # a trailing space no offset covers (trimmed offsets) goes to the last token (EOS)
    assert token_chars([(0, 2), (0, 0)], 3 + 10) == [2, 11]


def _songs(*seqs: list[int]) -> EncodedSongs:
    return EncodedSongs([list(s) for s in seqs], [[10 * t for t in s] for s in seqs])


def test_packing_cuts_full_blocks_and_drops_the_tail():
    examples = pack(_songs([1, 5, 6, 2], [1, 7, 2], [1, 8, 9, 10, 2]), block_size=4)
    assert examples.input_ids.tolist() == [[1, 5, 6, 2], [1, 7, 2, 1], [8, 9, 10, 2]]
    assert bool(examples.attention_mask.all()) and torch.equal(examples.labels,
                                                                examples.input_ids)
    assert examples.target_count(torch.tensor([0, 2])) == 6
    assert examples.char_count(torch.tensor([0, 2])) == 10 * (5 + 6 + 2 + 9 + 10 + 2)
    with pytest.raises(LyricgenInputError, match="fewer than block_size"):
        pack(_songs([1, 2]), block_size=4)


def test_padding_masks_labels_even_when_pad_equals_eos():
    examples = pad_truncate(_songs([1, 5, 2], [1, 5, 6, 7, 8, 2]), block_size=4, pad_id=2)
    assert examples.input_ids.tolist() == [[1, 5, 2, 2], [1, 5, 6, 7]]
    assert examples.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert examples.labels.tolist() == [[1, 5, 2, IGNORE_INDEX], [1, 5, 6, 7]]
    assert examples.target_count(torch.tensor([0, 1])) == 2 + 3
    assert examples.char_count(torch.tensor([0, 1])) == 10 * (5 + 2 + 5 + 6 + 7)


def test_read_texts_names_file_line_and_key(tmp_path):
    path = tmp_path / "train_lyrics.jsonl"
    path.write_text(json.dumps({"text": "uno"}) + "\n\n" + json.dumps({"title": "x"}) + "\n",
                    encoding="utf-8")
    with pytest.raises(LyricgenInputError, match=r"train_lyrics.jsonl:3: text: missing"):
        read_texts(path)
    path.write_text('{"text": "uno"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(LyricgenInputError, match=r"train_lyrics.jsonl:2: invalid JSON"):
        read_texts(path)
    path.write_text('{"text": "uno"}\n{"text": "dos"}\n', encoding="utf-8")
    assert read_texts(path) == ["uno", "dos"]
    with pytest.raises(LyricgenInputError, match="no such file"):
        read_texts(tmp_path / "missing.jsonl")


def test_two_ranks_see_exactly_the_examples_of_one_rank_with_double_batch():
    one = Schedule(examples=50, batch_size=4, grad_accum=2, world_size=1, seed=7, epochs=2)
    two = Schedule(examples=50, batch_size=2, grad_accum=2, world_size=2, seed=7, epochs=2)
    assert one.total_steps == two.total_steps == 2 * (50 // 8)
    for step in range(one.total_steps):
        single = torch.cat(one.micro_batches(step, 0))
        split = torch.cat(two.micro_batches(step, 0) + two.micro_batches(step, 1))
        assert sorted(single.tolist()) == sorted(split.tolist())
        assert len(set(single.tolist())) == 8


def test_schedule_is_a_pure_function_of_seed_epoch_and_step():
    a = Schedule(examples=30, batch_size=3, grad_accum=1, world_size=1, seed=1, epochs=3)
    b = Schedule(examples=30, batch_size=3, grad_accum=1, world_size=1, seed=1, epochs=3)
    assert [a.step_indices(s).tolist() for s in range(a.total_steps)] == \
           [b.step_indices(s).tolist() for s in reversed(range(b.total_steps))][::-1]
    epoch0 = torch.cat([a.step_indices(s) for s in range(a.steps_per_epoch)])
    assert sorted(epoch0.tolist()) == list(range(30))
    assert not torch.equal(a.order(0), a.order(1))
    assert Schedule(30, 3, 1, 1, 1, epochs=3, max_steps=25).total_steps == 25


def test_precision_policy_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plain = resolve_precision("auto")
    assert (plain.device, plain.quantize_4bit, plain.dtype) == ("cpu", False, torch.float32)
    assert plain.describe() == "precision: cpu float32 weights, LoRA fp32"
    qlora = resolve_precision("auto", load_in_4bit=True)
    assert qlora.quantize_4bit and qlora.dtype == torch.float32
    assert "NF4 4-bit, double quant" in qlora.describe()
    assert resolve_precision("cpu", dtype="bfloat16").autocast
    with pytest.raises(LyricgenInputError, match="device: cuda asked"):
        resolve_precision("cuda")


@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_precision_policy_on_cuda_is_4bit_with_bf16_or_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    precision = resolve_precision("auto", local_rank=1)
    assert (precision.device, precision.quantize_4bit, precision.dtype) == \
        ("cuda:1", True, expected)
    name = str(expected).removeprefix("torch.")
    assert precision.describe() == \
        f"precision: cuda:1 NF4 4-bit, double quant, compute {name}, LoRA fp32"
    assert not resolve_precision("cuda", load_in_4bit=False).quantize_4bit


def test_4bit_without_bitsandbytes_is_an_input_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(LyricgenInputError, match="load_in_4bit: 4-bit needs bitsandbytes"):
        resolve_precision("cpu", load_in_4bit=True)
    assert not resolve_precision("cpu").quantize_4bit


def test_model_dir_checks(tmp_path):
    with pytest.raises(LyricgenInputError, match="looks like a Hugging Face Hub id"):
        check_model_dir("meta-llama/Meta-Llama-3-8B")
    with pytest.raises(LyricgenInputError, match="nope: does not exist"):
        check_model_dir(tmp_path / "nope")
    with pytest.raises(LyricgenInputError, match="no config.json"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"schema": 1, "kind": "train-rnn"}',
                                          encoding="utf-8")  # a jobctl job dir
    with pytest.raises(LyricgenInputError, match="config.json has no model_type"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    assert check_model_dir(tmp_path) == tmp_path


class _Adapter:
    """Stands in for a PeftModel: save_pretrained writes an adapter file."""

    def save_pretrained(self, directory: str) -> None:
        (Path(directory) / checkpoint.ADAPTER_FILE).write_bytes(b"weights")


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_older_ones(tmp_path, monkeypatch,
                                                                         error):
    root = tmp_path / "checkpoints"
    for step in (1, 2):
        checkpoint.save(root, step, _Adapter(), {"history": []}, keep=1)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # the disk reports the error when state.pt is synced
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".state.pt."):
            raise OSError(error, os.strerror(error))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(LyricgenWriteError) as raised:
        checkpoint.save(root, 3, _Adapter(), {"history": []}, keep=1)
    assert str(raised.value) == (f"{root / 'step-00000003'}: cannot write checkpoint "
                                 f"({os.strerror(error)}); nothing partial was left and the "
                                 "older checkpoints are intact")
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001", "step-00000002"]
    state = torch.load(root / "step-00000002" / "state.pt", weights_only=True)
    assert state["step"] == 2  # keep=1 still keeps two: a fallback for a torn newest one
