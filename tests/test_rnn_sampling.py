"""lyricgen.sampling: top-k / top-p masks, greedy rows, per-row temperature."""

from __future__ import annotations

import math

import pytest
import torch

from lyricgen.sampling import filter_logits, sample_next

torch.set_num_threads(1)


def _finite(row: torch.Tensor) -> set[int]:
    return {i for i, v in enumerate(row.tolist()) if math.isfinite(v)}


def test_top_k_keeps_the_k_largest_per_row():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    out = filter_logits(logits, top_k=2)
    assert _finite(out[0]) == {1, 3}
    assert _finite(out[1]) == {0, 1}
    assert torch.equal(out[0, [1, 3]], logits[0, [1, 3]])


def test_top_p_keeps_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert _finite(filter_logits(logits, top_p=0.5)[0]) == {0}
    assert _finite(filter_logits(logits, top_p=0.75)[0]) == {0, 1}
    assert _finite(filter_logits(logits, top_p=0.81)[0]) == {0, 1, 2}
    assert _finite(filter_logits(logits, top_p=1.0)[0]) == {0, 1, 2, 3}
    # unsorted order and the top token always survives
    shuffled = logits[:, [2, 0, 3, 1]]
    assert _finite(filter_logits(shuffled, top_p=0.75)[0]) == {1, 3}
    assert _finite(filter_logits(shuffled, top_p=0.01)[0]) == {1}


def test_top_k_and_top_p_combine():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert _finite(filter_logits(logits, top_k=3, top_p=0.99)[0]) == {0, 1, 2}


@pytest.mark.parametrize("bad", [{"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_bad_filter_arguments_raise(bad):
    with pytest.raises(ValueError):
        filter_logits(torch.zeros(1, 3), **bad)


def test_zero_temperature_rows_are_greedy_others_sample():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    temps = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    gen = torch.Generator().manual_seed(1)
    ids = sample_next(logits, temps, None, None, gen)
    assert ids.shape == (6,) and ids.dtype == torch.long
    assert torch.equal(ids[[0, 2, 4]], logits[[0, 2, 4]].argmax(-1))


def test_sampled_frequencies_follow_tempered_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    gen = torch.Generator().manual_seed(42)
    for temperature in (1.0, 0.5):
        ids = sample_next(logits, torch.full((4000,), temperature), None, None, gen)
        freq = torch.bincount(ids, minlength=4).float() / 4000
        expected = torch.softmax(logits[0] / temperature, -1)
        assert torch.allclose(freq, expected, atol=0.03)


def test_samples_never_leave_the_filtered_set():
    torch.manual_seed(3)
    logits = torch.randn(64, 30)
    gen = torch.Generator().manual_seed(5)
    ids = sample_next(logits, torch.full((64,), 2.0), 3, None, gen)
    top3 = torch.topk(logits, 3, dim=-1).indices
    assert bool((top3 == ids.unsqueeze(-1)).any(-1).all())


def test_same_seed_same_draws_and_shape_check():
    logits = torch.randn(8, 20)
    temps = torch.ones(8)
    a = sample_next(logits, temps, 5, 0.9, torch.Generator().manual_seed(7))
    b = sample_next(logits, temps, 5, 0.9, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        sample_next(logits, torch.ones(3), None, None, torch.Generator())
