"""lyricgen.precision: the dtype policy train-rnn and the LLaMA kinds share."""

from __future__ import annotations

import pytest
import torch

from lyricgen import precision
from lyricgen.precision import compute_dtype, short_name


@pytest.mark.parametrize("name", ["bf16", "bfloat16"])
def test_both_spellings_name_one_dtype(name: str) -> None:
    assert compute_dtype(name, "cpu", cpu_auto_bf16=False) is torch.bfloat16
    assert short_name(compute_dtype(name, "cuda", cpu_auto_bf16=True)) == "bf16"


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_is_bf16_where_the_gpu_has_it(monkeypatch: pytest.MonkeyPatch, bf16: bool,
                                                   expected: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    for allowed in (True, False):
        assert compute_dtype("auto", "cuda", cpu_auto_bf16=allowed) is expected


@pytest.mark.parametrize(("native", "allowed", "expected"), [
    (True, True, torch.bfloat16), (True, False, torch.float32), (False, True, torch.float32)])
def test_auto_on_cpu_is_bf16_only_when_allowed_and_native(monkeypatch: pytest.MonkeyPatch,
                                                          native: bool, allowed: bool,
                                                          expected: torch.dtype) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert compute_dtype("auto", "cpu", cpu_auto_bf16=allowed) is expected


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="must be auto or one of"):
        compute_dtype("fp8", "cpu", cpu_auto_bf16=True)
