"""Attention against PyTorch's own SDPA and nn.MultiheadAttention, float64 references and worked examples.

Shape legend: B batch, L query length, S key/value length, H heads, D head_dim, Dv value dim,
E d_model (= H*D). Mask polarity: ours and SDPA's bool ``attn_mask`` True = may attend;
nn.MultiheadAttention's bool ``attn_mask`` True = may NOT attend; ``key_padding_mask`` True = padding
everywhere.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from attn_course.attention import (
    MultiHeadAttention,
    attention_weights,
    causal_mask,
    entropy,
    key_padding_to_attn_mask,
    masked_softmax,
    padding_mask,
    scaled_dot_product_attention,
    softmax_with_temperature,
    weighted_sum,
)

from helpers import DEVICES, DTYPES, F64, draw, tol


def random_bool_mask(g, shape):
    """Bool mask, True = may attend, about half True, every row keeping at least one key."""
    mask = torch.rand(shape, generator=g) < 0.5
    keep = torch.randint(0, shape[-1], shape[:-1], generator=g)
    mask.scatter_(-1, keep.unsqueeze(-1), True)
    return mask


def random_float_mask(g, shape, dtype):
    """Additive float mask: random finite biases, -inf at about a third of positions (never a whole row)."""
    bias = torch.randn(shape, generator=g, dtype=dtype)
    forbid = ~random_bool_mask(g, shape) & (torch.rand(shape, generator=g) < 0.6)
    return bias.masked_fill(forbid, float("-inf"))


# ----------------------------------------------------------------- SDPA vs PyTorch
SHAPES = [pytest.param(3, 5, 4, 6, id="L3-S5-D4-Dv6"), pytest.param(5, 2, 8, 3, id="L5-S2-D8-Dv3")]
BATCHES = [pytest.param((), id="nobatch"), pytest.param((2,), id="B2"), pytest.param((2, 3), id="B2x3")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [None, 0.3], ids=["scale-default", "scale-0.3"])
@pytest.mark.parametrize("mask", ["none", "bool", "bool-2d", "float", "causal"])
@pytest.mark.parametrize("L, S, D, Dv", SHAPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_sdpa_matches_torch(batch, L, S, D, Dv, mask, scale, dtype, device):
    g = torch.Generator().manual_seed(100 + L * 10 + S + len(batch))
    query = draw(g, *batch, L, D, dtype=dtype, device=device)
    key = draw(g, *batch, S, D, dtype=dtype, device=device)
    value = draw(g, *batch, S, Dv, dtype=dtype, device=device)
    kwargs = {"scale": scale}
    if mask == "bool":
        kwargs["attn_mask"] = random_bool_mask(g, (*batch, L, S)).to(device)
    elif mask == "bool-2d":
        kwargs["attn_mask"] = random_bool_mask(g, (L, S)).to(device)  # broadcast over batch dims
    elif mask == "float":
        kwargs["attn_mask"] = random_float_mask(g, (*batch, L, S), dtype).to(device)
    elif mask == "causal":
        kwargs["is_causal"] = True
    expected = F.scaled_dot_product_attention(query, key, value, **kwargs)
    attn_output = scaled_dot_product_attention(query, key, value, **kwargs)
    assert attn_output.shape == (*batch, L, Dv)
    assert attn_output.dtype == dtype and attn_output.device.type == device
    torch.testing.assert_close(attn_output, expected, **tol(dtype, device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", ["bool", "float"])
def test_sdpa_fully_masked_rows_give_zeros_like_torch(mask, dtype, device):
    g = torch.Generator().manual_seed(7)
    query, key, value = draw(g, 2, 4, 8, dtype=dtype), draw(g, 2, 6, 8, dtype=dtype), draw(g, 2, 6, 5, dtype=dtype)
    allowed = random_bool_mask(g, (2, 4, 6))
    allowed[0, 1] = False   # query 1 of batch 0 sees no key
    allowed[1, 3] = False   # query 3 of batch 1 sees no key
    attn_mask = allowed if mask == "bool" else torch.zeros(2, 4, 6, dtype=dtype).masked_fill(~allowed, float("-inf"))
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)  # PyTorch, on the CPU
    assert torch.equal(expected[0, 1], torch.zeros(5, dtype=dtype))
    assert torch.equal(expected[1, 3], torch.zeros(5, dtype=dtype))
    attn_output = scaled_dot_product_attention(query.to(device), key.to(device), value.to(device),
                                               attn_mask=attn_mask.to(device))
    assert torch.isfinite(attn_output).all()
    torch.testing.assert_close(attn_output.cpu(), expected, **tol(dtype, device))
    assert torch.equal(attn_output[0, 1].cpu(), torch.zeros(5, dtype=dtype))


def test_sdpa_float64_reference_by_hand():
    # softmax(Q K^T / sqrt(D)) V computed with explicit loops in float64.
    g = torch.Generator().manual_seed(8)
    query, key, value = draw(g, 3, 4, dtype=F64), draw(g, 5, 4, dtype=F64), draw(g, 5, 2, dtype=F64)
    expected = torch.zeros(3, 2, dtype=F64)
    for i in range(3):
        scores = [sum(query[i, d].item() * key[j, d].item() for d in range(4)) / 2.0 for j in range(5)]
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        for j in range(5):
            expected[i] += exps[j] / sum(exps) * value[j]
    torch.testing.assert_close(scaled_dot_product_attention(query, key, value), expected)


def test_sdpa_worked_example():
    # D = 1, scale 1: scores (0, ln 2, ln 5) -> exp (1, 2, 5) -> weights (1/8, 2/8, 5/8);
    # values (8, 0, 16): context = 1 + 0 + 10 = 11.
    query = torch.tensor([[1.0]], dtype=F64)
    key = torch.tensor([[0.0], [math.log(2)], [math.log(5)]], dtype=F64)
    value = torch.tensor([[8.0], [0.0], [16.0]], dtype=F64)
    torch.testing.assert_close(scaled_dot_product_attention(query, key, value), torch.tensor([[11.0]], dtype=F64))
    # masking key 2 leaves (1/3, 2/3, 0): context = 8/3
    attn_mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(scaled_dot_product_attention(query, key, value, attn_mask=attn_mask),
                               torch.tensor([[8.0 / 3.0]], dtype=F64))


# ----------------------------------------------------------------- attention_weights
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", ["none", "bool", "float", "causal"])
@pytest.mark.parametrize("batch", BATCHES)
def test_attention_weights_are_softmax_of_hand_built_scores(batch, mask, device):
    g = torch.Generator().manual_seed(9)
    L, S, D = 4, 6, 5
    query, key = draw(g, *batch, L, D, dtype=F64), draw(g, *batch, S, D, dtype=F64)
    attn_scores = torch.einsum("...ld,...sd->...ls", query, key) / math.sqrt(D)  # (..., L, S)
    kwargs = {}
    if mask == "bool":
        kwargs["attn_mask"] = random_bool_mask(g, (*batch, L, S))
        attn_scores = attn_scores.masked_fill(~kwargs["attn_mask"], float("-inf"))
    elif mask == "float":
        kwargs["attn_mask"] = random_float_mask(g, (*batch, L, S), F64)
        attn_scores = attn_scores + kwargs["attn_mask"]
    elif mask == "causal":
        kwargs["is_causal"] = True
        future = torch.arange(S)[None, :] > torch.arange(L)[:, None]  # key j > query i
        attn_scores = attn_scores.masked_fill(future, float("-inf"))
    expected = attn_scores.exp() / attn_scores.exp().sum(-1, keepdim=True)
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    attn_weights = attention_weights(query.to(device), key.to(device), **moved)
    assert attn_weights.shape == (*batch, L, S)
    torch.testing.assert_close(attn_weights.sum(-1).cpu(), torch.ones(*batch, L, dtype=F64))
    torch.testing.assert_close(attn_weights.cpu(), expected)


def test_attention_weights_scale_argument():
    g = torch.Generator().manual_seed(10)
    query, key = draw(g, 3, 4, dtype=F64), draw(g, 5, 4, dtype=F64)
    expected = torch.softmax(torch.einsum("ld,sd->ls", query, key) * 0.1, dim=-1)
    torch.testing.assert_close(attention_weights(query, key, scale=0.1), expected)


def test_attention_weights_worked_example():
    # scores (0, ln 2, ln 5) -> (0.125, 0.25, 0.625)
    key = torch.tensor([[0.0], [math.log(2)], [math.log(5)]], dtype=F64)
    torch.testing.assert_close(attention_weights(torch.ones(1, 1, dtype=F64), key),
                               torch.tensor([[0.125, 0.25, 0.625]], dtype=F64))


# ----------------------------------------------------------------- masked_softmax
def test_masked_softmax_exact_zeros_and_renormalised():
    g = torch.Generator().manual_seed(11)
    attn_scores = draw(g, 2, 4, 6, dtype=F64)
    attn_mask = random_bool_mask(g, (2, 4, 6))
    attn_weights = masked_softmax(attn_scores, attn_mask)
    assert (attn_weights[~attn_mask] == 0).all()
    assert (attn_weights[attn_mask] > 0).all()
    torch.testing.assert_close(attn_weights.sum(-1), torch.ones(2, 4, dtype=F64))
    # the allowed weights keep their ratios: w_j / w_k = exp(s_j - s_k)
    e = attn_scores.exp() * attn_mask
    torch.testing.assert_close(attn_weights, e / e.sum(-1, keepdim=True))


def test_masked_softmax_worked_example():
    # zeros over 4 keys, key 2 masked: (1/3, 1/3, 0, 1/3)
    attn_weights = masked_softmax(torch.zeros(1, 4), torch.tensor([[True, True, False, True]]))
    torch.testing.assert_close(attn_weights, torch.tensor([[1 / 3, 1 / 3, 0.0, 1 / 3]]))
    assert attn_weights[0, 2].item() == 0.0


def test_masked_softmax_no_mask_is_softmax():
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)
    # exp(1, 2, 3) / (e + e^2 + e^3) = (0.09003057, 0.24472847, 0.66524096)
    torch.testing.assert_close(masked_softmax(x), torch.tensor([[0.09003057317038046, 0.24472847105479767,
                                                                 0.6652409557748219]], dtype=F64))


def test_masked_softmax_float_mask_equals_bool_mask():
    g = torch.Generator().manual_seed(12)
    attn_scores = draw(g, 3, 5, dtype=F64)
    allowed = random_bool_mask(g, (3, 5))
    additive = torch.zeros(3, 5, dtype=F64).masked_fill(~allowed, float("-inf"))
    torch.testing.assert_close(masked_softmax(attn_scores, additive), masked_softmax(attn_scores, allowed))


def test_masked_softmax_fully_masked_row_is_zero_not_nan():
    attn_mask = torch.tensor([[True, False], [False, False]])
    attn_weights = masked_softmax(torch.tensor([[0.3, 0.1], [0.2, 0.4]]), attn_mask)
    assert torch.equal(attn_weights, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


@pytest.mark.parametrize("device", DEVICES)
def test_masked_softmax_float16_stays_finite(device):
    g = torch.Generator().manual_seed(13)
    attn_scores = (draw(g, 4, 6) * 5).half().to(device)
    attn_mask = random_bool_mask(g, (4, 6))
    attn_mask[2] = False  # one fully masked row
    attn_mask = attn_mask.to(device)
    # The pitfall: -1e9 does not exist in float16. masked_fill refuses it; added, it becomes -inf,
    # and a fully masked row becomes softmax of all -inf = NaN.
    scores_cpu, mask_cpu = attn_scores.cpu(), attn_mask.cpu()
    assert torch.isneginf(torch.tensor(-1e9, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="overflow"):
        scores_cpu.masked_fill(~mask_cpu, -1e9)
    pitfall = torch.softmax(scores_cpu + (~mask_cpu).half() * -1e9, dim=-1)
    assert torch.isnan(pitfall[2]).all()
    attn_weights = masked_softmax(attn_scores, attn_mask)
    assert attn_weights.dtype == torch.float16
    assert torch.isfinite(attn_weights).all()
    assert (attn_weights[~attn_mask] == 0).all()
    expected = masked_softmax(attn_scores.double().cpu(), attn_mask.cpu())  # float64 reference
    torch.testing.assert_close(attn_weights.cpu().double(), expected, atol=2e-3, rtol=0)


# ----------------------------------------------------------------- temperature and entropy
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0, 2.0, 10.0])
def test_softmax_with_temperature_matches_torch(temperature):
    g = torch.Generator().manual_seed(14)
    attn_scores = draw(g, 2, 3, 7, dtype=F64)
    torch.testing.assert_close(softmax_with_temperature(attn_scores, temperature),
                               torch.softmax(attn_scores / temperature, dim=-1))
    torch.testing.assert_close(softmax_with_temperature(attn_scores, temperature, dim=-2),
                               torch.softmax(attn_scores / temperature, dim=-2))


def test_softmax_with_temperature_worked_example():
    # scores (0, 2 ln 3) at T = 2: (0, ln 3) -> exp (1, 3) -> (0.25, 0.75)
    attn_weights = softmax_with_temperature(torch.tensor([0.0, 2 * math.log(3)], dtype=F64), 2.0)
    torch.testing.assert_close(attn_weights, torch.tensor([0.25, 0.75], dtype=F64))


def test_softmax_with_temperature_limits():
    g = torch.Generator().manual_seed(15)
    attn_scores = draw(g, 5, 8, dtype=F64)
    one_hot = F.one_hot(attn_scores.argmax(-1), 8).to(F64)
    torch.testing.assert_close(softmax_with_temperature(attn_scores, 1e-3), one_hot, atol=1e-6, rtol=0)
    uniform = torch.full((5, 8), 1 / 8, dtype=F64)
    torch.testing.assert_close(softmax_with_temperature(attn_scores, 1e5), uniform, atol=1e-4, rtol=0)
    # monotone in between: the largest weight shrinks as T grows
    tops = [softmax_with_temperature(attn_scores, T).max(-1).values for T in (0.25, 0.5, 1.0, 2.0, 4.0)]
    for sharper, flatter in zip(tops, tops[1:]):
        assert (sharper > flatter).all()


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_softmax_with_temperature_rejects_non_positive(temperature):
    with pytest.raises(ValueError, match=f"got {temperature}"):
        softmax_with_temperature(torch.zeros(3), temperature)


def test_entropy_against_float64_hand_computation():
    g = torch.Generator().manual_seed(16)
    attn_weights = torch.softmax(draw(g, 3, 5, dtype=F64) * 2, dim=-1)
    expected = torch.tensor([-sum(p * math.log(p) for p in row) for row in attn_weights.tolist()], dtype=F64)
    torch.testing.assert_close(entropy(attn_weights), expected)
    # over another axis
    cols = attn_weights.T / attn_weights.T.sum(-1, keepdim=True)  # (5, 3), rows sum to 1
    expected_cols = torch.tensor([-sum(p * math.log(p) for p in row) for row in cols.tolist()], dtype=F64)
    torch.testing.assert_close(entropy(cols.T.contiguous(), dim=0), expected_cols)


@pytest.mark.parametrize("S", [1, 2, 7, 64])
def test_entropy_uniform_and_one_hot(S):
    uniform = torch.full((3, S), 1.0 / S, dtype=F64)
    torch.testing.assert_close(entropy(uniform), torch.full((3,), math.log(S), dtype=F64))
    one_hot = F.one_hot(torch.tensor([0, S - 1, S // 2]), S).to(F64)
    ent = entropy(one_hot)
    assert torch.isfinite(ent).all()
    torch.testing.assert_close(ent, torch.zeros(3, dtype=F64))


def test_entropy_worked_example_with_zero_weight():
    # (1/2, 1/4, 1/4, 0): 1/2 ln 2 + 2 * 1/4 ln 4 + 0 = 1.5 ln 2 = 1.0397207708399179
    ent = entropy(torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=F64))
    torch.testing.assert_close(ent, torch.tensor(1.0397207708399179, dtype=F64))


# ----------------------------------------------------------------- masks and weighted sums
def test_causal_mask_worked_examples():
    assert causal_mask(3).dtype == torch.bool
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    assert torch.equal(causal_mask(2, 4), torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool))
    assert torch.equal(causal_mask(4, 2), torch.tensor([[1, 0], [1, 1], [1, 1], [1, 1]], dtype=torch.bool))


@pytest.mark.parametrize("L, S", [(3, 3), (2, 5), (5, 2)])
def test_causal_mask_is_what_torch_is_causal_means(L, S):
    # PyTorch's SDPA with is_causal=True equals SDPA with our causal_mask, also for L != S.
    g = torch.Generator().manual_seed(17)
    query, key, value = draw(g, 2, L, 4, dtype=F64), draw(g, 2, S, 4, dtype=F64), draw(g, 2, S, 3, dtype=F64)
    torch.testing.assert_close(F.scaled_dot_product_attention(query, key, value, attn_mask=causal_mask(L, S)),
                               F.scaled_dot_product_attention(query, key, value, is_causal=True))


@pytest.mark.parametrize("device", DEVICES)
def test_causal_mask_device(device):
    assert causal_mask(2, 3, device=device).device.type == device


def test_padding_mask_worked_examples():
    assert torch.equal(padding_mask([2, 3]), torch.tensor([[False, False, True], [False, False, False]]))
    assert torch.equal(padding_mask(torch.tensor([1, 0]), max_len=3),
                       torch.tensor([[False, True, True], [True, True, True]]))
    assert padding_mask([4]).shape == (1, 4)


@pytest.mark.parametrize("lengths, max_len, shown", [([2, 5], 4, "[2, 5]"), ([-1, 2], None, "[-1, 2]")])
def test_padding_mask_rejects_bad_lengths(lengths, max_len, shown):
    with pytest.raises(ValueError) as info:
        padding_mask(lengths, max_len)
    assert shown in str(info.value)


def test_key_padding_to_attn_mask_worked_example():
    key_padding_mask = torch.tensor([[False, False, True], [False, True, True]])  # True = padding
    attn_mask = key_padding_to_attn_mask(key_padding_mask)
    assert attn_mask.shape == (2, 1, 3)
    assert torch.equal(attn_mask, torch.tensor([[[True, True, False]], [[True, False, False]]]))
    # it broadcasts against (B, L, S) scores and masks the padded keys for every query
    attn_weights = masked_softmax(torch.zeros(2, 4, 3), attn_mask)
    torch.testing.assert_close(attn_weights[0], torch.tensor([[0.5, 0.5, 0.0]] * 4))
    torch.testing.assert_close(attn_weights[1], torch.tensor([[1.0, 0.0, 0.0]] * 4))


@pytest.mark.parametrize("bad", [torch.zeros(2, 3), torch.zeros(2, 1, 3, dtype=torch.bool)], ids=["float", "3d"])
def test_key_padding_to_attn_mask_rejects_bad_masks(bad):
    with pytest.raises(ValueError, match=str(tuple(bad.shape)).replace("(", r"\(").replace(")", r"\)")):
        key_padding_to_attn_mask(bad)


def test_weighted_sum_worked_example():
    # row 0: 0.25 * (0, 2) + 0.75 * (4, 6) = (3, 5);  row 1: 1 * (0, 2) + 0 * (4, 6) = (0, 2)
    attn_weights = torch.tensor([[0.25, 0.75], [1.0, 0.0]], dtype=F64)
    value = torch.tensor([[0.0, 2.0], [4.0, 6.0]], dtype=F64)
    torch.testing.assert_close(weighted_sum(attn_weights, value), torch.tensor([[3.0, 5.0], [0.0, 2.0]], dtype=F64))


def test_weighted_sum_batched_against_einsum():
    g = torch.Generator().manual_seed(18)
    attn_weights, value = torch.softmax(draw(g, 2, 3, 4, 5, dtype=F64), -1), draw(g, 2, 3, 5, 6, dtype=F64)
    context = weighted_sum(attn_weights, value)
    assert context.shape == (2, 3, 4, 6)
    torch.testing.assert_close(context, torch.einsum("...ls,...sv->...lv", attn_weights, value))


def test_weighted_sum_rejects_different_s():
    with pytest.raises(ValueError) as info:
        weighted_sum(torch.ones(3, 4), torch.ones(5, 2))
    assert "(3, 4)" in str(info.value) and "(5, 2)" in str(info.value)


# ----------------------------------------------------------------- dropout
def test_sdpa_dropout_entries_are_zero_or_rescaled():
    # With value = I (S x S) the output is the attention weights themselves, after dropout.
    g = torch.Generator().manual_seed(19)
    p, N, L, S = 0.3, 2000, 3, 4
    query, key = draw(g, 1, L, 8, dtype=F64).expand(N, L, 8), draw(g, 1, S, 8, dtype=F64).expand(N, S, 8)
    value = torch.eye(S, dtype=F64).expand(N, S, S)
    attn_weights = attention_weights(query[:1], key[:1])  # (1, L, S), no dropout
    torch.manual_seed(0)
    dropped = scaled_dot_product_attention(query, key, value, dropout_p=p)  # (N, L, S)
    kept = dropped != 0
    rescaled = (attn_weights / (1 - p)).expand(N, L, S)
    torch.testing.assert_close(dropped[kept], rescaled[kept])          # survivors scaled by 1/(1-p)
    assert abs((~kept).double().mean().item() - p) < 0.02              # about p of them dropped
    torch.testing.assert_close(dropped.mean(0), attn_weights[0], atol=0.03, rtol=0)  # unbiased


def test_sdpa_dropout_expected_value_is_no_dropout_output():
    g = torch.Generator().manual_seed(20)
    N = 20000
    query, key, value = draw(g, 1, 3, 4, dtype=F64), draw(g, 1, 5, 4, dtype=F64), draw(g, 1, 5, 2, dtype=F64)
    expected = F.scaled_dot_product_attention(query, key, value)[0]  # (L, Dv), no dropout
    torch.manual_seed(1)
    draws = scaled_dot_product_attention(query.expand(N, 3, 4), key.expand(N, 5, 4), value.expand(N, 5, 2),
                                         dropout_p=0.5)
    assert not torch.allclose(draws[0], expected)  # one draw is not the mean
    torch.testing.assert_close(draws.mean(0), expected, atol=0.05, rtol=0)


def test_sdpa_dropout_is_reproducible_with_manual_seed():
    g = torch.Generator().manual_seed(21)
    query, key, value = draw(g, 2, 3, 4), draw(g, 2, 5, 4), draw(g, 2, 5, 6)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(scaled_dot_product_attention(query, key, value, dropout_p=0.4))
    torch.testing.assert_close(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_sdpa_dropout_zero_is_deterministic():
    g = torch.Generator().manual_seed(22)
    query, key, value = draw(g, 2, 3, 4), draw(g, 2, 5, 4), draw(g, 2, 5, 6)
    torch.testing.assert_close(scaled_dot_product_attention(query, key, value, dropout_p=0.0),
                               F.scaled_dot_product_attention(query, key, value))


@pytest.mark.parametrize("dropout_p", [-0.1, 1.0, 1.5])
def test_sdpa_dropout_outside_unit_interval_raises(dropout_p):
    with pytest.raises(ValueError, match=f"got {dropout_p}"):
        scaled_dot_product_attention(torch.ones(2, 4), torch.ones(3, 4), torch.ones(3, 5), dropout_p=dropout_p)


# ----------------------------------------------------------------- SDPA bad input
@pytest.mark.parametrize("query_shape, key_shape, value_shape, named", [
    ((3, 4), (5, 4), (6, 2), ["(5, 4)", "(6, 2)"]),             # S differs between key and value
    ((2, 3, 4), (2, 5, 4), (3, 5, 2), ["(2, 5, 4)", "(3, 5, 2)"]),  # key/value batch dims differ
    ((3, 4), (5, 6), (5, 2), ["(3, 4)", "(5, 6)"]),             # D differs
    ((2, 3, 4), (3, 5, 4), (3, 5, 2), ["(2, 3, 4)", "(3, 5, 4)"]),  # query/key batch dims differ
    ((4,), (5, 4), (5, 2), ["(4,)"]),                           # query rank 1
    ((3, 4), (5, 4), (5,), ["(5,)"]),                           # value rank 1
], ids=["S", "kv-batch", "D", "qk-batch", "query-rank", "value-rank"])
def test_sdpa_bad_shapes_raise_value_error_naming_shapes(query_shape, key_shape, value_shape, named):
    with pytest.raises(ValueError) as info:
        scaled_dot_product_attention(torch.ones(query_shape), torch.ones(key_shape), torch.ones(value_shape))
    for shape in named:
        assert shape in str(info.value)


def test_sdpa_attn_mask_with_is_causal_raises():
    with pytest.raises(ValueError, match="is_causal"):
        scaled_dot_product_attention(torch.ones(3, 4), torch.ones(3, 4), torch.ones(3, 4),
                                     attn_mask=causal_mask(3), is_causal=True)


# ----------------------------------------------------------------- SDPA: batch dims that broadcast, enable_gqa
BROADCAST = [  # (query, key, value) shapes that PyTorch's SDPA accepts; L=3, S=5, D=6, Dv=4
    pytest.param((4, 3, 6), (2, 4, 5, 6), (2, 4, 5, 4), id="q(H)-kv(B,H)"),
    pytest.param((2, 1, 3, 6), (2, 4, 5, 6), (2, 4, 5, 4), id="q(B,1)-kv(B,H)"),
    pytest.param((3, 6), (2, 5, 6), (2, 5, 4), id="q-unbatched"),
    pytest.param((2, 3, 6), (5, 6), (5, 4), id="kv-unbatched"),
    pytest.param((2, 4, 3, 6), (2, 4, 5, 6), (5, 4), id="v-unbatched"),
    pytest.param((2, 4, 3, 6), (2, 1, 5, 6), (2, 4, 5, 4), id="k(B,1)-v(B,H)"),
    pytest.param((2, 4, 3, 6), (1, 4, 5, 6), (2, 1, 5, 4), id="k(1,H)-v(B,1)"),
    pytest.param((3, 3, 6), (2, 1, 5, 6), (1, 3, 5, 4), id="all-three"),
]
GQA = [  # (query, key, value) shapes with enable_gqa=True: dim -3 is the head axis
    pytest.param((2, 8, 3, 6), (2, 2, 5, 6), (2, 2, 5, 4), id="Hq8-Hkv2"),
    pytest.param((2, 4, 3, 6), (2, 1, 5, 6), (2, 1, 5, 4), id="Hq4-Hkv1"),
    pytest.param((2, 4, 3, 6), (2, 4, 5, 6), (2, 4, 5, 4), id="Hq4-Hkv4"),
    pytest.param((8, 3, 6), (2, 5, 6), (2, 5, 4), id="unbatched-Hq8-Hkv2"),
    pytest.param((2, 8, 3, 6), (2, 2, 5, 6), (2, 4, 5, 4), id="Hk2-Hv4"),
    pytest.param((1, 8, 3, 6), (3, 2, 5, 6), (3, 2, 5, 4), id="batch-broadcast-Hq8-Hkv2"),
]


def sdpa_inputs(g, q_shape, k_shape, v_shape, mask, dtype, device, out_batch):
    """query, key, value drawn with the given shapes, and the mask keyword: bool over the output's
    batch dims, float (L, S) broadcast over them, or is_causal."""
    query, key, value = (draw(g, *shape, dtype=dtype, device=device) for shape in (q_shape, k_shape, v_shape))
    L, S = q_shape[-2], k_shape[-2]
    kwargs = {}
    if mask == "bool":
        kwargs["attn_mask"] = random_bool_mask(g, (*out_batch, L, S)).to(device)
    elif mask == "float":
        kwargs["attn_mask"] = random_float_mask(g, (L, S), dtype).to(device)
    elif mask == "causal":
        kwargs["is_causal"] = True
    return query, key, value, kwargs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", ["none", "bool", "float", "causal"])
@pytest.mark.parametrize("q_shape, k_shape, v_shape", BROADCAST)
def test_sdpa_broadcasts_batch_dims_like_torch(q_shape, k_shape, v_shape, mask, dtype, device):
    g = torch.Generator().manual_seed(31)
    out_batch = torch.broadcast_shapes(q_shape[:-2], k_shape[:-2], v_shape[:-2])
    query, key, value, kwargs = sdpa_inputs(g, q_shape, k_shape, v_shape, mask, dtype, device, out_batch)
    expected = F.scaled_dot_product_attention(query, key, value, **kwargs)
    attn_output = scaled_dot_product_attention(query, key, value, **kwargs)
    assert attn_output.shape == expected.shape == (*out_batch, 3, 4)
    torch.testing.assert_close(attn_output, expected, **tol(dtype, device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", ["none", "bool", "float", "causal"])
@pytest.mark.parametrize("q_shape, k_shape, v_shape", GQA)
def test_sdpa_enable_gqa_like_torch(q_shape, k_shape, v_shape, mask, dtype, device):
    g = torch.Generator().manual_seed(32)
    out_batch = torch.broadcast_shapes(q_shape[:-2], k_shape[:-3] + q_shape[-3:-2], v_shape[:-3] + q_shape[-3:-2])
    query, key, value, kwargs = sdpa_inputs(g, q_shape, k_shape, v_shape, mask, dtype, device, out_batch)
    expected = F.scaled_dot_product_attention(query, key, value, enable_gqa=True, **kwargs)
    attn_output = scaled_dot_product_attention(query, key, value, enable_gqa=True, **kwargs)
    assert attn_output.shape == expected.shape == (*out_batch, 3, 4)
    torch.testing.assert_close(attn_output, expected, **tol(dtype, device))


@pytest.mark.parametrize("mask", ["bool", "causal"])
@pytest.mark.parametrize("q_shape, k_shape, v_shape, enable_gqa",
                         [(*p.values, False) for p in BROADCAST] + [(*p.values, True) for p in GQA],
                         ids=[p.id for p in BROADCAST] + [f"gqa-{p.id}" for p in GQA])
def test_sdpa_broadcast_and_gqa_gradients_like_torch(q_shape, k_shape, v_shape, enable_gqa, mask):
    # d(sum(out * w))/d(query, key, value): a broadcast or repeated input collects the gradient of every copy.
    g = torch.Generator().manual_seed(33)
    ours = [t.requires_grad_() for t in (draw(g, *shape, dtype=F64) for shape in (q_shape, k_shape, v_shape))]
    theirs = [t.detach().clone().requires_grad_() for t in ours]
    L, S = q_shape[-2], k_shape[-2]
    kwargs = {"is_causal": True} if mask == "causal" else {"attn_mask": random_bool_mask(g, (L, S))}
    expected = F.scaled_dot_product_attention(*theirs, enable_gqa=enable_gqa, **kwargs)
    weight = draw(g, *expected.shape, dtype=F64)
    (expected * weight).sum().backward()
    (scaled_dot_product_attention(*ours, enable_gqa=enable_gqa, **kwargs) * weight).sum().backward()
    for name, mine, reference in zip(("query", "key", "value"), ours, theirs):
        assert mine.grad.shape == mine.shape, name
        torch.testing.assert_close(mine.grad, reference.grad, **tol(F64), msg=lambda m, name=name: f"{name}: {m}")


def test_sdpa_enable_gqa_worked_example():
    # Hq=4 query heads, Hkv=2 key/value heads: query heads 0, 1 read head 0 and heads 2, 3 read head 1.
    # Each key/value head g holds the value g + 1 at every key, so query head h returns h // 2 + 1.
    query, key = torch.zeros(1, 4, 2, 3, dtype=F64), torch.zeros(1, 2, 5, 3, dtype=F64)
    value = torch.tensor([1.0, 2.0], dtype=F64).view(1, 2, 1, 1).expand(1, 2, 5, 1)
    attn_output = scaled_dot_product_attention(query, key, value, enable_gqa=True)  # (1, 4, 2, 1)
    assert attn_output.flatten().tolist() == [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]


@pytest.mark.parametrize("query_shape, key_shape, value_shape, enable_gqa, fragments", [
    ((2, 4, 3, 6), (2, 2, 5, 6), (2, 2, 5, 4), False, ["broadcast", "(2, 4, 3, 6)", "(2, 2, 5, 6)"]),
    ((2, 8, 3, 6), (2, 3, 5, 6), (2, 3, 5, 4), True, ["multiple", "(2, 8, 3, 6)", "(2, 3, 5, 6)"]),
    ((2, 8, 3, 6), (2, 2, 5, 6), (2, 3, 5, 4), True, ["multiple", "(2, 3, 5, 4)"]),
    ((2, 2, 3, 6), (2, 8, 5, 6), (2, 8, 5, 4), True, ["multiple", "(2, 2, 3, 6)", "(2, 8, 5, 6)"]),
    ((3, 6), (5, 6), (5, 4), True, ["at least 3 dims", "enable_gqa", "(3, 6)"]),
    ((2, 8, 3, 6), (3, 2, 5, 6), (3, 2, 5, 4), True, ["broadcast", "(2, 8, 3, 6)", "(3, 2, 5, 6)"]),
    ((2, 3, 6), (2, 5, 6), (3, 5, 4), False, ["broadcast", "(3, 5, 4)"]),
], ids=["heads-no-gqa", "Hq-not-multiple-of-Hk", "Hq-not-multiple-of-Hv", "Hkv>Hq", "gqa-rank-2",
        "gqa-batch", "value-batch"])
def test_sdpa_rejects_what_torch_rejects_with_value_errors(query_shape, key_shape, value_shape, enable_gqa, fragments):
    query, key, value = torch.ones(query_shape), torch.ones(key_shape), torch.ones(value_shape)
    with pytest.raises((RuntimeError, IndexError)):
        F.scaled_dot_product_attention(query, key, value, enable_gqa=enable_gqa)
    with pytest.raises(ValueError) as info:
        scaled_dot_product_attention(query, key, value, enable_gqa=enable_gqa)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("mask_shape", [(2, 3, 5), (3, 4), (2, 1, 1, 5)], ids=["adds-a-dim", "wrong-S", "rank-4"])
def test_sdpa_attn_mask_must_broadcast_to_the_weights(mask_shape):
    # PyTorch broadcasts the mask to the weights (..., L, S), never the weights to the mask.
    query, key, value = torch.ones(3, 6), torch.ones(5, 6), torch.ones(5, 4)
    attn_mask = torch.ones(mask_shape, dtype=torch.bool)
    with pytest.raises(RuntimeError):
        F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
    with pytest.raises(ValueError) as info:
        scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
    assert "(3, 5)" in str(info.value) and str(mask_shape) in str(info.value)


# ----------------------------------------------------------------- multi-head attention vs PyTorch
E, H = 12, 3


def make_torch_mha(bias, dtype, device, seed=0, dropout=0.0):
    """nn.MultiheadAttention built on the CPU with every parameter random (biases included), then moved."""
    mha = nn.MultiheadAttention(E, H, dropout=dropout, bias=bias, batch_first=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    return mha.to(device=device, dtype=dtype).eval()


def copy_by_hand(mha):
    """Our module with nn.MultiheadAttention's weights, sliced from in_proj_weight here, not by from_torch."""
    bias = mha.in_proj_bias is not None
    ours = MultiHeadAttention(E, H, bias=bias).to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)  # (3E, E) -> 3 x (E, E)
    with torch.no_grad():
        ours.q_proj.weight.copy_(w_q)
        ours.k_proj.weight.copy_(w_k)
        ours.v_proj.weight.copy_(w_v)
        ours.out_proj.weight.copy_(mha.out_proj.weight)
        if bias:
            b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
            ours.q_proj.bias.copy_(b_q)
            ours.k_proj.bias.copy_(b_k)
            ours.v_proj.bias.copy_(b_v)
            ours.out_proj.bias.copy_(mha.out_proj.bias)
    return ours.eval()


MHA_MASKS = ["none", "key_padding", "attn_bool", "attn_float", "attn_bool+key_padding",
             "attn_float+key_padding", "causal", "causal+key_padding"]


MHA_CASES = ([pytest.param("from_torch", mask, id=f"from_torch-{mask}") for mask in MHA_MASKS]
             + [pytest.param("by_hand", mask, id=f"by_hand-{mask}")
                for mask in ("none", "attn_bool+key_padding", "causal")])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", ["self", "cross"])
@pytest.mark.parametrize("copy, mask", MHA_CASES)
def test_mha_matches_torch(copy, mask, kind, bias, dtype, device):
    g = torch.Generator().manual_seed(30)
    B, L = 2, 4
    S = L if kind == "self" else 6
    mha = make_torch_mha(bias, dtype, device)
    ours = MultiHeadAttention.from_torch(mha).eval() if copy == "from_torch" else copy_by_hand(mha)
    query = draw(g, B, L, E, dtype=dtype, device=device)
    if kind == "self":
        key = value = query
    else:
        key, value = draw(g, B, S, E, dtype=dtype, device=device), draw(g, B, S, E, dtype=dtype, device=device)

    ours_kw, torch_kw = {}, {}
    if "key_padding" in mask:
        key_padding_mask = padding_mask([S, S - 2], max_len=S).to(device)  # True = padding; key 0 never padded
        ours_kw["key_padding_mask"] = key_padding_mask
        torch_kw["key_padding_mask"] = key_padding_mask
    if mask.startswith("attn_bool"):
        allowed = random_bool_mask(g, (L, S))
        allowed[:, 0] = True  # no row fully masked, with padding either
        ours_kw["attn_mask"] = (~allowed).to(device)   # both modules: True = ignore, the same mask
        torch_kw["attn_mask"] = (~allowed).to(device)
    if mask.startswith("attn_float"):
        additive = random_float_mask(g, (L, S), dtype)
        additive[:, 0] = 0.0
        ours_kw["attn_mask"] = additive.to(device)
        torch_kw["attn_mask"] = additive.to(device)
        if "key_padding" in mask:  # torch wants both masks of one type
            torch_kw["key_padding_mask"] = torch.zeros(B, S, dtype=dtype, device=device).masked_fill(
                ours_kw["key_padding_mask"], float("-inf"))
    if mask.startswith("causal"):
        ours_kw["is_causal"] = True
        torch_kw["attn_mask"] = ~causal_mask(L, S, device=device)  # torch needs the mask with the hint
        torch_kw["is_causal"] = True

    with torch.no_grad():
        attn_output, attn_weights = ours(query, key, value, **ours_kw)
        expected, expected_per_head = mha(query, key, value, need_weights=True, average_attn_weights=False,
                                          **torch_kw)
        _, expected_mean = mha(query, key, value, need_weights=True, average_attn_weights=True, **torch_kw)
    assert attn_output.shape == (B, L, E) and attn_weights.shape == (B, H, L, S)
    assert torch.isfinite(attn_output).all()
    torch.testing.assert_close(attn_output, expected, **tol(dtype, device))
    torch.testing.assert_close(attn_weights, expected_per_head, **tol(dtype, device))
    torch.testing.assert_close(attn_weights.mean(1), expected_mean, **tol(dtype, device))
    if "key_padding" in mask:
        assert (attn_weights[1, :, :, S - 2:] == 0).all()


def test_mha_default_key_and_value():
    mha = make_torch_mha(True, F64, "cpu", seed=3)
    ours = MultiHeadAttention.from_torch(mha)
    g = torch.Generator().manual_seed(31)
    query, key = draw(g, 2, 3, E, dtype=F64), draw(g, 2, 5, E, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(ours(query)[0], mha(query, query, query)[0])  # key = value = query
        torch.testing.assert_close(ours(query, key)[0], mha(query, key, key)[0])  # value = key


def test_mha_need_weights_false():
    mha = make_torch_mha(True, F64, "cpu", seed=4)
    ours = MultiHeadAttention.from_torch(mha)
    g = torch.Generator().manual_seed(32)
    query, key = draw(g, 2, 3, E, dtype=F64), draw(g, 2, 5, E, dtype=F64)
    attn_output, attn_weights = ours(query, key, key, need_weights=False)
    assert attn_weights is None
    torch.testing.assert_close(attn_output, mha(query, key, key)[0])


def test_mha_from_torch_keeps_dtype_bias_and_dropout():
    mha = make_torch_mha(False, F64, "cpu", dropout=0.25)
    ours = MultiHeadAttention.from_torch(mha)
    assert ours.q_proj.weight.dtype == F64
    assert ours.q_proj.bias is None and ours.out_proj.bias is None
    assert ours.dropout == 0.25
    assert (ours.num_heads, ours.head_dim, ours.d_model) == (H, E // H, E)


def test_mha_eval_ignores_dropout_like_torch():
    mha = make_torch_mha(True, F64, "cpu", dropout=0.5)
    ours = MultiHeadAttention.from_torch(mha).eval()
    query = draw(torch.Generator().manual_seed(33), 2, 4, E, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(ours(query)[0], mha(query, query, query)[0])
        ours.train()
        torch.manual_seed(0)
        assert not torch.allclose(ours(query)[0], mha(query, query, query)[0])  # dropout acts in training


def test_mha_from_torch_rejects_different_kdim():
    mha = nn.MultiheadAttention(E, H, kdim=5, vdim=7, batch_first=True)
    with pytest.raises(ValueError, match="kdim"):
        MultiHeadAttention.from_torch(mha)


@pytest.mark.parametrize("option", ["add_bias_kv", "add_zero_attn"])
def test_mha_from_torch_refuses_or_reproduces_extra_keys(option):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, batch_first=True, **{option: True}).double().eval()
    query = draw(torch.Generator().manual_seed(34), 2, 4, E, dtype=F64)
    try:
        ours = MultiHeadAttention.from_torch(mha)
    except ValueError:
        return  # refusing such a module is a correct answer
    with torch.no_grad():
        torch.testing.assert_close(ours(query)[0], mha(query, query, query)[0])


def test_mha_split_heads_is_per_head_sdpa():
    # head h of our output equals SDPA on head h's slice of the projections.
    torch.manual_seed(0)
    ours = MultiHeadAttention(E, H).double()
    query = draw(torch.Generator().manual_seed(35), 2, 5, E, dtype=F64)
    D = E // H
    with torch.no_grad():
        _, attn_weights = ours(query)
        q, k = ours.q_proj(query), ours.k_proj(query)
        for h in range(H):
            expected = torch.softmax(q[..., h * D:(h + 1) * D] @ k[..., h * D:(h + 1) * D].transpose(1, 2)
                                     / math.sqrt(D), dim=-1)
            torch.testing.assert_close(attn_weights[:, h], expected)


# ----------------------------------------------------------------- multi-head attention: bad input
def test_mha_d_model_not_divisible():
    with pytest.raises(ValueError, match=r"d_model=10.*num_heads=3"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="num_heads=0"):
        MultiHeadAttention(8, 0)


@pytest.mark.parametrize("query_shape, key_shape, value_shape, named", [
    ((3, E), None, None, ["(3, 12)"]),                                       # query rank 2
    ((2, 3, E), (2, 5, E, 1), None, ["(2, 5, 12, 1)"]),                      # key rank 4
    ((2, 3, 8), None, None, ["(2, 3, 8)", "d_model=12"]),                    # wrong E
    ((2, 3, E), (3, 5, E), (3, 5, E), ["(2, 3, 12)", "(3, 5, 12)"]),         # batch sizes differ
    ((2, 3, E), (2, 5, E), (2, 6, E), ["(2, 5, 12)", "(2, 6, 12)"]),         # key/value lengths differ
], ids=["query-rank", "key-rank", "wrong-E", "batch", "kv-length"])
def test_mha_bad_shapes_raise_value_error_naming_shapes(query_shape, key_shape, value_shape, named):
    ours = MultiHeadAttention(E, H)
    key = None if key_shape is None else torch.ones(key_shape)
    value = None if value_shape is None else torch.ones(value_shape)
    with pytest.raises(ValueError) as info:
        ours(torch.ones(query_shape), key, value)
    for shape in named:
        assert shape in str(info.value)


@pytest.mark.parametrize("kpm_shape", [(2, 4), (3, 5), (5,), (2, 1, 5)])
def test_mha_key_padding_mask_wrong_shape(kpm_shape):
    ours = MultiHeadAttention(E, H)
    with pytest.raises(ValueError) as info:
        ours(torch.ones(2, 3, E), torch.ones(2, 5, E), key_padding_mask=torch.zeros(kpm_shape, dtype=torch.bool))
    assert "(2, 5)" in str(info.value) and str(kpm_shape) in str(info.value)


def test_mha_attn_mask_with_is_causal_raises():
    with pytest.raises(ValueError, match="is_causal"):
        MultiHeadAttention(E, H)(torch.ones(2, 3, E), attn_mask=causal_mask(3), is_causal=True)


# ----------------------------------------------------------------- gradients
@pytest.mark.parametrize("device", DEVICES)
def test_mha_gradients_flow(device):
    torch.manual_seed(0)
    ours = MultiHeadAttention(E, H).to(device)
    g = torch.Generator().manual_seed(36)
    query = draw(g, 2, 4, E, device=device).requires_grad_()
    key = draw(g, 2, 6, E, device=device)
    attn_output, _ = ours(query, key, key_padding_mask=padding_mask([6, 3]).to(device), is_causal=True)
    attn_output.sum().backward()
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        grad = getattr(ours, name).weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0


def test_sdpa_gradients_match_torch():
    g = torch.Generator().manual_seed(37)
    inputs = [draw(g, 2, 3, 4, dtype=F64), draw(g, 2, 5, 4, dtype=F64), draw(g, 2, 5, 6, dtype=F64)]
    ours = [t.clone().requires_grad_() for t in inputs]
    ref = [t.clone().requires_grad_() for t in inputs]
    attn_mask = random_bool_mask(g, (2, 3, 5))
    (scaled_dot_product_attention(*ours, attn_mask=attn_mask) ** 2).sum().backward()
    (F.scaled_dot_product_attention(*ref, attn_mask=attn_mask) ** 2).sum().backward()
    for a, b in zip(ours, ref):
        assert a.grad.abs().sum() > 0
        torch.testing.assert_close(a.grad, b.grad)
