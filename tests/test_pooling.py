"""Attention pooling (attn_course.pooling): against PyTorch's SDPA, float64 loops and hand formulas;
padding, all-padding rows, gradients, errors; mean pooling; the additive scorer.

Shape legend: B batch, S positions, Dv value size, Dq / Dk query / key sizes, A attn_dim.
``key_padding_mask`` True = padding.
"""
import doctest
import math

import pytest
import torch
from torch.nn import functional as F

from attn_course import pooling, scoring
from attn_course.pooling import AdditiveAttention, attention_pool, mean_pool

from helpers import DEVICES, DTYPES, F64, draw, tol

BATCHES = [pytest.param((4,), id="B4"), pytest.param((2, 3), id="B2x3"), pytest.param((1,), id="B1")]


def padding(g, batch, S, device="cpu"):
    """key_padding_mask (..., S), True = padding, about a third padded, position 0 never padded."""
    mask = torch.rand(*batch, S, generator=g) < 0.33
    mask[..., 0] = False
    return mask.to(device)


def loop_reference(attn_scores, value, key_padding_mask):
    """The definition, one row at a time in float64: softmax over the real positions, then the weighted sum."""
    S, Dv = value.shape[-2:]
    scores, values = attn_scores.double().reshape(-1, S), value.double().reshape(-1, S, Dv)
    mask = key_padding_mask.reshape(-1, S)
    weights, contexts = torch.zeros_like(scores), torch.zeros(len(scores), Dv, dtype=F64)
    for r in range(len(scores)):
        real = [s for s in range(S) if not mask[r, s]]
        if not real:
            continue                                                         # all padding: zeros
        top = max(float(scores[r, s]) for s in real)
        exps = {s: math.exp(float(scores[r, s]) - top) for s in real}
        total = sum(exps.values())
        for s in real:
            weights[r, s] = exps[s] / total
            contexts[r] += weights[r, s] * values[r, s]
    return contexts.reshape(*value.shape[:-2], Dv), weights.reshape(attn_scores.shape)


# ----------------------------------------------------------------- attention_pool
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "key_padding_mask"])
def test_attention_pool_equals_sdpa_with_one_query_whose_dot_products_are_the_scores(device, dtype, batch, masked):
    g = torch.Generator().manual_seed(0)
    S, E, Dv = 7, 8, 5
    query, key = draw(g, *batch, 1, E, dtype=dtype), draw(g, *batch, S, E, dtype=dtype)
    value = draw(g, *batch, S, Dv, dtype=dtype)
    key_padding_mask = padding(g, batch, S) if masked else None
    attn_scores = (key @ query.transpose(-2, -1)).squeeze(-1)                  # (..., S, E) @ (..., E, 1) -> (..., S)
    context, attn_weights = attention_pool(attn_scores.to(device), value.to(device),
                                           None if key_padding_mask is None else key_padding_mask.to(device))
    expected = F.scaled_dot_product_attention(
        query, key, value, scale=1.0,
        attn_mask=None if key_padding_mask is None else ~key_padding_mask.unsqueeze(-2)).squeeze(-2)
    assert context.shape == (*batch, Dv) and attn_weights.shape == (*batch, S)
    assert context.dtype == attn_weights.dtype == dtype
    torch.testing.assert_close(context.cpu(), expected, **tol(dtype, device))
    torch.testing.assert_close(attn_weights.sum(-1).cpu(), torch.ones(batch, dtype=dtype), **tol(dtype, device))
    if masked:
        assert (attn_weights.cpu()[key_padding_mask] == 0).all()


@pytest.mark.parametrize("batch", BATCHES)
def test_attention_pool_equals_a_float64_loop(batch):
    g = torch.Generator().manual_seed(1)
    S, Dv = 9, 4
    attn_scores, value = draw(g, *batch, S, scale=5.0), draw(g, *batch, S, Dv)
    key_padding_mask = padding(g, batch, S)
    key_padding_mask.view(-1, S)[-1] = True                                   # one row with every position padded
    context, attn_weights = attention_pool(attn_scores.double(), value.double(), key_padding_mask)
    ref_context, ref_weights = loop_reference(attn_scores, value, key_padding_mask)
    torch.testing.assert_close(attn_weights, ref_weights, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(context, ref_context, atol=1e-12, rtol=1e-12)


def test_attention_pool_worked_example():
    attn_scores = torch.tensor([[0.0, math.log(3.0), 50.0]], dtype=F64)         # weights 1/4, 3/4 and padding
    value = torch.tensor([[[4.0, 0.0], [0.0, 8.0], [1e3, 1e3]]], dtype=F64)
    context, attn_weights = attention_pool(attn_scores, value, torch.tensor([[False, False, True]]))
    torch.testing.assert_close(attn_weights, torch.tensor([[0.25, 0.75, 0.0]], dtype=F64))
    torch.testing.assert_close(context, torch.tensor([[1.0, 6.0]], dtype=F64))


def test_all_padding_rows_give_zeros_not_nan_and_finite_gradients():
    attn_scores = torch.zeros(2, 3, requires_grad=True)
    value = torch.ones(2, 3, 4, requires_grad=True)
    context, attn_weights = attention_pool(attn_scores, value, torch.tensor([[True, True, True], [False, True, False]]))
    assert torch.isfinite(context).all() and torch.isfinite(attn_weights).all()
    torch.testing.assert_close(attn_weights, torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.5]]))
    torch.testing.assert_close(context[0], torch.zeros(4))
    context.sum().backward()
    assert torch.isfinite(attn_scores.grad).all() and torch.isfinite(value.grad).all()
    assert (attn_scores.grad[0] == 0).all() and (value.grad[0] == 0).all()   # nothing flows into padding


@pytest.mark.parametrize("dtype", DTYPES)
def test_more_padding_appended_changes_nothing(dtype):
    g = torch.Generator().manual_seed(2)
    B, S, Dv, more = 3, 6, 5, 4
    attn_scores, value = draw(g, B, S, dtype=dtype), draw(g, B, S, Dv, dtype=dtype)
    key_padding_mask = torch.arange(S) >= torch.tensor([6, 2, 4])[:, None]
    context, attn_weights = attention_pool(attn_scores, value, key_padding_mask)
    longer = attention_pool(torch.cat([attn_scores, torch.full((B, more), 80.0, dtype=dtype)], 1),
                            torch.cat([value, torch.full((B, more, Dv), 1e4, dtype=dtype)], 1),
                            torch.cat([key_padding_mask, torch.ones(B, more, dtype=torch.bool)], 1))
    torch.testing.assert_close(longer[0], context, **tol(dtype))
    torch.testing.assert_close(longer[1][:, :S], attn_weights, **tol(dtype))
    assert (longer[1][:, S:] == 0).all()


def test_gradients_flow_to_every_real_score_and_match_finite_differences():
    g = torch.Generator().manual_seed(3)
    attn_scores = draw(g, 2, 5, dtype=F64).requires_grad_(True)
    value = draw(g, 2, 5, 3, dtype=F64).requires_grad_(True)
    key_padding_mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    assert torch.autograd.gradcheck(lambda s, v: attention_pool(s, v, key_padding_mask)[0], (attn_scores, value))
    (grad,) = torch.autograd.grad(attention_pool(attn_scores, value, key_padding_mask)[0].sum(), attn_scores)
    assert grad[~key_padding_mask].abs().min() > 0                             # every real score gets a gradient
    assert (grad[key_padding_mask] == 0).all()


def test_value_batch_dims_broadcast_against_the_scores():
    g = torch.Generator().manual_seed(4)
    attn_scores, value = draw(g, 3, 4, 6), draw(g, 6, 2)                       # one value table for every row
    context, attn_weights = attention_pool(attn_scores, value)
    torch.testing.assert_close(context, torch.softmax(attn_scores, -1) @ value)


@pytest.mark.parametrize("args, message", [
    ((torch.zeros(2, 3), torch.zeros(2, 4, 5)), r"must share S; got attn_scores \(2, 3\) and value \(2, 4, 5\)"),
    ((torch.zeros(2, 3), torch.zeros(3)), r"must share S; got attn_scores \(2, 3\) and value \(3,\)"),
    ((torch.zeros(2, 3), torch.zeros(4, 3, 5)), r"batch dims .* \(2, 3\) .* \(4, 3, 5\) must broadcast"),
    ((torch.zeros(2, 3), torch.zeros(2, 3, 5), torch.zeros(2, 3)), r"must be a bool tensor, True = padding; got torch.float32"),
    ((torch.zeros(2, 3), torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.bool)),
     r"must broadcast to attn_scores \(\.\.\., S\) \(2, 3\); got \(2, 4\)"),
    ((torch.zeros(3), torch.zeros(3, 5), torch.zeros(2, 3, dtype=torch.bool)),
     r"must broadcast to attn_scores \(\.\.\., S\) \(3,\); got \(2, 3\)"),
], ids=["S", "value-rank", "batch", "mask-dtype", "mask-S", "mask-larger"])
def test_attention_pool_errors_name_the_offending_shapes(args, message):
    with pytest.raises(ValueError, match=message):
        attention_pool(*args)


# ----------------------------------------------------------------- mean_pool
def test_mean_pool_is_the_mean_of_the_real_positions():
    value = torch.arange(24.0).view(2, 2, 3, 2)                               # (..., S=3, Dv=2), two batch dims
    key_padding_mask = torch.tensor([[[False, False, False], [False, True, True]],
                                     [[True, False, True], [True, True, True]]])
    context, attn_weights = mean_pool(value, key_padding_mask)
    expected = torch.stack([value[0, 0].mean(0), value[0, 1, 0], value[1, 0, 1], torch.zeros(2)]).view(2, 2, 2)
    torch.testing.assert_close(context, expected)
    torch.testing.assert_close(attn_weights.sum(-1), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(mean_pool(value)[0], value.mean(-2))


def test_mean_pool_is_attention_pool_with_equal_scores():
    g = torch.Generator().manual_seed(5)
    value = draw(g, 4, 7, 3)
    key_padding_mask = torch.arange(7) >= torch.tensor([7, 1, 4, 5])[:, None]
    torch.testing.assert_close(mean_pool(value, key_padding_mask),
                               attention_pool(torch.zeros(4, 7), value, key_padding_mask))


def test_mean_pool_errors():
    with pytest.raises(ValueError, match=r"key_padding_mask a bool tensor \(\.\.\., S\)"):
        mean_pool(torch.zeros(2, 3, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"got value \(2, 3, 4\)"):
        mean_pool(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.bool))


# ----------------------------------------------------------------- AdditiveAttention, the additive scorer
def _additive(g, B=3, S=6, Dq=4, Dk=5, Dv=7, A=8):
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    attn = AdditiveAttention(Dq, Dk, A).double()
    return attn, draw(g, B, Dq, dtype=F64), draw(g, B, S, Dk, dtype=F64), draw(g, B, S, Dv, dtype=F64)


def test_additive_scores_are_the_hand_formula():
    g = torch.Generator().manual_seed(6)
    attn, query, key, _ = _additive(g)
    W_q, W_k, v = (p.detach() for p in (attn.w_query.weight, attn.w_key.weight, attn.v.weight[0]))  # (A, Dq), (A, Dk), (A,)
    assert W_q.shape == (8, 4) and W_k.shape == (8, 5) and v.shape == (8,)
    expected = torch.tensor([[float(v @ torch.tanh(W_q @ query[b] + W_k @ key[b, j])) for j in range(6)]
                             for b in range(3)], dtype=F64)
    torch.testing.assert_close(attn.attn_scores(query, key), expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(attn.attn_scores(query, key),                     # lesson 02's rule, one query
                               scoring.additive_scores(query[:, None], key, W_q, W_k, v)[:, 0])


def test_additive_attention_is_scores_then_attention_pool_and_reuses_projected_keys():
    g = torch.Generator().manual_seed(7)
    attn, query, key, value = _additive(g)
    key_padding_mask = torch.arange(6) >= torch.tensor([6, 3, 0])[:, None]    # the last row: all padding
    context, attn_weights = attn(query, key, value, key_padding_mask)
    ref = attention_pool(attn.attn_scores(query, key), value, key_padding_mask)
    torch.testing.assert_close((context, attn_weights), ref, atol=0, rtol=0)
    again = attn(query, None, value, key_padding_mask, projected_key=attn.w_key(key))
    torch.testing.assert_close(again, (context, attn_weights), atol=0, rtol=0)
    assert (attn_weights[2] == 0).all() and (context[2] == 0).all()
    context.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn.parameters())


def test_additive_attention_has_the_parameters_of_attention_score():
    torch.manual_seed(0)
    ours = AdditiveAttention(4, 5, 3)
    torch.manual_seed(0)
    theirs = scoring.AttentionScore("additive", query_dim=4, key_dim=5, attn_dim=3)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["w_query.weight", "w_key.weight", "v.weight"]
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, theirs.state_dict()[name])                   # same layout, same init


def test_additive_attention_errors():
    attn = AdditiveAttention(4, 5, 3)
    with pytest.raises(ValueError, match=r"query must be \(\.\.\., Dq=4\) and key \(\.\.\., S, Dk=5\); got query \(2, 3\)"):
        attn(torch.zeros(2, 3), torch.zeros(2, 6, 5), torch.zeros(2, 6, 1))
    with pytest.raises(ValueError, match=r"got query \(2, 4\) and key \(2, 6, 4\)"):
        attn(torch.zeros(2, 4), torch.zeros(2, 6, 4), torch.zeros(2, 6, 1))
    with pytest.raises(ValueError, match="must share S"):
        attn(torch.zeros(2, 4), torch.zeros(2, 6, 5), torch.zeros(2, 5, 1))


def test_docstring_examples():
    assert doctest.testmod(pooling).failed == 0
