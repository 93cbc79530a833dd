"""lyricgen.rnn.model: shapes for all architectures, weight tying, packed prompts."""

from __future__ import annotations

import pytest
import torch

from lyricgen.rnn.model import ARCHS, LockedDropout, ModelConfig, RnnLM, detach_hidden

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tie", [False, True])
def test_shapes_all_archs(arch, tie):
    torch.manual_seed(0)
    model = RnnLM(ModelConfig(arch, 30, 8, 12, num_layers=2, dropout=0.1, tie_weights=tie))
    logits, hidden = model(torch.randint(0, 30, (3, 5)))
    assert logits.shape == (3, 5, 30)
    states = hidden if arch == "lstm" else (hidden,)
    for state in states:
        assert state.shape == (2, 3, 12)
    logits, _ = model(torch.randint(0, 30, (3, 4)), detach_hidden(hidden))
    assert logits.shape == (3, 4, 30)
    if tie:
        assert model.decoder.weight is model.embedding.weight
        assert model.projection is not None  # hidden 12 != embedding 8


def test_tying_without_projection_when_sizes_match():
    model = RnnLM(ModelConfig("gru", 10, 16, 16, tie_weights=True))
    assert model.projection is None and model.decoder.weight is model.embedding.weight


def test_locked_dropout_shares_one_mask_over_time():
    torch.manual_seed(0)
    drop = LockedDropout(0.5)
    out = drop(torch.ones(4, 9, 64))
    assert torch.equal(out, out[:, :1].expand_as(out))  # the same mask at every time step
    assert set(out.unique().tolist()) == {0.0, 2.0}  # dropped, or scaled by 1 / keep
    assert 0.3 < (out[:, 0] == 0).float().mean() < 0.7
    drop.eval()
    x = torch.randn(2, 3, 5)
    assert torch.equal(drop(x), x)


def test_bad_arch_rejected():
    with pytest.raises(ValueError):
        ModelConfig("transformer", 10, 4, 4)


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_rows_match_rows_run_alone(arch):
    torch.manual_seed(1)
    model = RnnLM(ModelConfig(arch, 20, 6, 10, num_layers=2)).eval()
    rows = [torch.randint(1, 20, (n,)) for n in (7, 3, 5)]
    padded = torch.zeros(3, 7, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, :len(row)] = row
    logits, hidden = model(padded, None, torch.tensor([7, 3, 5]))
    for i, row in enumerate(rows):
        alone, alone_hidden = model(row.unsqueeze(0))
        assert torch.allclose(logits[i, :len(row)], alone[0], atol=1e-5)
        pairs = zip(hidden, alone_hidden, strict=True) if arch == "lstm" else [
            (hidden, alone_hidden)]
        for batch_state, row_state in pairs:
            assert torch.allclose(batch_state[:, i], row_state[:, 0], atol=1e-5)

