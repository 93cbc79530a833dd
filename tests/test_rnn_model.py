"""lyricgen.rnn.model: shapes for all architectures, weight tying, packed prompts."""

from __future__ import annotations

import pytest
import torch

from lyricgen.rnn.model import (
    ARCHS,
    LockedDropout,
    ModelConfig,
    RnnLM,
    count_parameters,
    detach_hidden,
)

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



def _states(hidden):
    return hidden if isinstance(hidden, tuple) else (hidden,)


def _with_random_ngrams(config: ModelConfig, seed: int) -> RnnLM:
    torch.manual_seed(seed)
    model = RnnLM(config).eval()
    with torch.no_grad():  # trained tables are not zero: make them matter
        for table in model.ngrams:
            table.weight.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_ngram_model_gives_the_same_logits_however_a_text_is_cut(arch):
    """The last N-1 tokens travel in the hidden state, so calls of any length agree."""
    model = _with_random_ngrams(ModelConfig(arch, 20, 6, 10, num_layers=2, ngram_order=4,
                                            ngram_buckets=64), seed=2)
    tokens = torch.randint(0, 20, (3, 11))
    whole, hidden = model(tokens)
    assert hidden[-1].tolist() == tokens[:, -3:].t().tolist()  # the 3 latest, oldest first
    pieces, state = [], None
    for start, stop in ((0, 1), (1, 3), (3, 4), (4, 11)):
        logits, state = model(tokens[:, start:stop], state)
        pieces.append(logits)
    assert torch.allclose(torch.cat(pieces, dim=1), whole, atol=1e-5)
    for left, right in zip(_states(hidden), _states(state), strict=True):
        assert torch.allclose(left.float(), right.float(), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_ngram_model_packed_rows_match_rows_run_alone(arch):
    model = _with_random_ngrams(ModelConfig(arch, 20, 6, 10, ngram_order=3, ngram_buckets=50),
                                seed=3)
    tokens = torch.randint(1, 20, (3, 8))
    lengths = torch.tensor([8, 1, 5])  # a row shorter than the n-gram history too
    logits, hidden = model(tokens, None, lengths)
    for row, length in enumerate(lengths.tolist()):
        alone, alone_hidden = model(tokens[row:row + 1, :length])
        assert torch.allclose(logits[row, :length], alone[0], atol=1e-5)
        for batch_state, row_state in zip(_states(hidden), _states(alone_hidden), strict=True):
            assert torch.allclose(batch_state[:, row].float(), row_state[:, 0].float(),
                                  atol=1e-5)
    assert hidden[-1][:, 1].tolist() == [0, tokens[1, 0].item()]  # id 0 before the first


def test_ngram_input_reads_exactly_the_last_n_tokens():
    model = _with_random_ngrams(ModelConfig("lstm", 20, 6, 10, ngram_order=3,
                                            ngram_buckets=1000), seed=4)
    tokens = torch.randint(0, 20, (1, 9))
    recent = torch.zeros(2, 1, dtype=torch.long)

    def embed(tokens: torch.Tensor) -> torch.Tensor:
        return model._embed(tokens, torch.cat([recent.t(), tokens], dim=1))

    base = embed(tokens)
    for position, changes_position_6 in ((3, False), (4, True), (6, True)):
        changed = tokens.clone()
        changed[0, position] = (changed[0, position] + 1) % 20
        differs = not torch.allclose(embed(changed)[0, 6], base[0, 6])
        assert differs == changes_position_6, position  # the trigram ending at 6 is 4..6


def test_ngram_tables_start_at_zero_and_cost_no_compute_parameters():
    plain = RnnLM(ModelConfig("lstm", 20, 6, 10)).eval()
    with_tables = RnnLM(ModelConfig("lstm", 20, 6, 10, ngram_order=4, ngram_buckets=100)).eval()
    missing, unexpected = with_tables.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == [f"ngrams.{i}.weight" for i in range(3)]
    tokens = torch.randint(0, 20, (2, 7))
    assert torch.allclose(with_tables(tokens)[0], plain(tokens)[0], atol=1e-6)
    assert with_tables.compute_parameters() == plain.compute_parameters() == \
        count_parameters(plain)
    assert count_parameters(with_tables) == count_parameters(plain) + 3 * 100 * 6
