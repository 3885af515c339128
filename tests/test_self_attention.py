"""Self- and cross-attention (attn_course.self_cross) against PyTorch, float64 worked examples and symmetry;
the lesson 05 checks against correct code and real mistakes; the broken decoder; the QueryPicker widget.

Shape legend: B batch, L query (decoder) length, S key/value (encoder) length, E d_model, D head_dim,
Dv value dim. ``key_padding_mask``: True = padding, as in nn.MultiheadAttention; SDPA's bool
``attn_mask``: True = may attend.
"""
import html
import inspect
import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import attn_course as ac  # noqa: E402
from attn_course import checks, self_cross  # noqa: E402
from attn_course.broken import cross_attention_v2  # noqa: E402
from attn_course.checks import CheckFailure  # noqa: E402
from attn_course.self_cross import CrossAttention, SelfAttention, cross_attention, self_attention  # noqa: E402
from attn_course.widgets import QueryPicker  # noqa: E402

from helpers import DEVICES, DTYPES, THOROUGH, draw, tol  # noqa: E402


def sdpa_mask(key_padding_mask):
    """(B, S) True = padding -> SDPA's bool attn_mask (B, 1, S), True = may attend, written independently."""
    return key_padding_mask.logical_not().unsqueeze(1)


# ----------------------------------------------------------------- functional forms vs SDPA
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, L, E, D, Dv", [(1, 5, 6, 4, 4), (3, 7, 8, 4, 5), (2, 1, 6, 3, 3)])
@pytest.mark.parametrize("mask", ["none", "padding", "causal", "padding+causal"])
def test_self_attention_equals_torch_sdpa(B, L, E, D, Dv, mask, dtype, device):
    g = torch.Generator().manual_seed(0)
    x = draw(g, B, L, E, dtype=dtype, device=device)
    w_query, w_key, w_value = (draw(g, E, n, dtype=dtype, device=device) for n in (D, D, Dv))
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    key_padding_mask = ac.padding_mask(lengths, L).to(device) if "padding" in mask else None
    is_causal = "causal" in mask
    context, attn_weights = self_attention(x, w_query, w_key, w_value, key_padding_mask, is_causal)
    attn_mask = None
    if key_padding_mask is not None:
        attn_mask = sdpa_mask(key_padding_mask)
    if is_causal:
        causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
        attn_mask = causal if attn_mask is None else attn_mask & causal
    expected = F.scaled_dot_product_attention(x @ w_query, x @ w_key, x @ w_value, attn_mask=attn_mask)
    rows_with_a_key = attn_weights.sum(-1) > 0                    # padding + causal can empty a row
    torch.testing.assert_close(context[rows_with_a_key], expected[rows_with_a_key], **tol(dtype, device))
    assert attn_weights.shape == (B, L, L)
    if key_padding_mask is not None:
        assert (attn_weights.masked_select(key_padding_mask[:, None, :].expand(B, L, L)) == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, L, S, E, D, Dv", [(1, 3, 5, 6, 4, 4), (3, 4, 7, 8, 4, 5), (2, 6, 2, 8, 8, 3)])
@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
def test_cross_attention_equals_torch_sdpa(B, L, S, E, D, Dv, padded, dtype, device):
    g = torch.Generator().manual_seed(1)
    decoder_states, encoder_states = draw(g, B, L, E, dtype=dtype, device=device), draw(g, B, S, E, dtype=dtype, device=device)
    w_query, w_key, w_value = (draw(g, E, n, dtype=dtype, device=device) for n in (D, D, Dv))
    key_padding_mask = ac.padding_mask(torch.randint(1, S + 1, (B,), generator=g), S).to(device) if padded else None
    context, attn_weights = cross_attention(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask)
    expected = F.scaled_dot_product_attention(
        decoder_states @ w_query, encoder_states @ w_key, encoder_states @ w_value,
        attn_mask=None if key_padding_mask is None else sdpa_mask(key_padding_mask))
    assert context.shape == (B, L, Dv) and attn_weights.shape == (B, L, S)
    torch.testing.assert_close(context, expected, **tol(dtype, device))
    torch.testing.assert_close(attn_weights.sum(-1), torch.ones(B, L, dtype=dtype, device=device), **tol(dtype))


def test_self_attention_is_cross_attention_of_a_sequence_with_itself():
    g = torch.Generator().manual_seed(2)
    x, w = draw(g, 2, 5, 6), [draw(g, 6, 4) for _ in range(3)]
    for a, b in zip(self_attention(x, *w), cross_attention(x, x, *w)):
        torch.testing.assert_close(a, b)


def test_worked_example_float64():
    """Two tokens, E = D = 1: scores are products of numbers; the softmax is written out by hand."""
    x = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)                  # (1, 2, 1)
    w_query, w_key, w_value = (torch.tensor([[c]], dtype=torch.float64) for c in (1.0, 0.5, 3.0))
    context, attn_weights = self_attention(x, w_query, w_key, w_value)
    # q = (1, 2), k = (0.5, 1), v = (3, 6); scores q_i k_j / sqrt(1) = [[0.5, 1], [1, 2]]
    e = math.exp
    expected_w = torch.tensor([[[e(0.5), e(1.0)], [e(1.0), e(2.0)]]], dtype=torch.float64)
    expected_w = expected_w / expected_w.sum(-1, keepdim=True)
    torch.testing.assert_close(attn_weights, expected_w, **tol(torch.float64))
    torch.testing.assert_close(context, expected_w @ torch.tensor([[3.0], [6.0]], dtype=torch.float64),
                               **tol(torch.float64))


# ----------------------------------------------------------------- modules vs nn.MultiheadAttention
def copy_from_mha(ours, mha):
    E = mha.embed_dim
    with torch.no_grad():
        for i, proj in enumerate([ours.q_proj, ours.k_proj, ours.v_proj]):
            proj.weight.copy_(mha.in_proj_weight[i * E:(i + 1) * E])
            if proj.bias is not None:
                proj.bias.copy_(mha.in_proj_bias[i * E:(i + 1) * E])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
def test_self_attention_module_equals_multihead_attention_with_one_head(bias, padded, dtype, device):
    torch.manual_seed(0)
    E, B, L = 12, 3, 6
    mha = nn.MultiheadAttention(E, num_heads=1, bias=bias, batch_first=True).to(device, dtype)
    ours = SelfAttention(E, head_dim=E, bias=bias).to(device, dtype)
    copy_from_mha(ours, mha)
    g = torch.Generator().manual_seed(3)
    x = draw(g, B, L, E, dtype=dtype, device=device)
    key_padding_mask = ac.padding_mask([6, 4, 1], L).to(device) if padded else None
    expected, expected_weights = mha(x, x, x, key_padding_mask=key_padding_mask)
    context, attn_weights = ours(x, key_padding_mask=key_padding_mask)
    torch.testing.assert_close(mha.out_proj(context), expected, **tol(dtype, device))
    torch.testing.assert_close(attn_weights, expected_weights, **tol(dtype, device))


@pytest.mark.parametrize("device", DEVICES)
def test_self_attention_module_causal_equals_multihead_attention(device):
    torch.manual_seed(1)
    E, L = 8, 5
    mha = nn.MultiheadAttention(E, num_heads=1, batch_first=True).to(device)
    ours = SelfAttention(E, head_dim=E).to(device)
    copy_from_mha(ours, mha)
    x = draw(torch.Generator().manual_seed(4), 2, L, E, device=device)
    mha_mask = torch.ones(L, L, dtype=torch.bool, device=device).triu(1)    # nn.MHA: True = may NOT attend
    expected, expected_weights = mha(x, x, x, attn_mask=mha_mask)
    context, attn_weights = ours(x, is_causal=True)
    torch.testing.assert_close(mha.out_proj(context), expected, **tol(torch.float32, device))
    torch.testing.assert_close(attn_weights, expected_weights, **tol(torch.float32, device))
    assert (attn_weights.triu(1) == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L, S", [(3, 5), (6, 2), (4, 4)])
def test_cross_attention_module_equals_multihead_attention(L, S, device):
    torch.manual_seed(2)
    E = 10
    mha = nn.MultiheadAttention(E, num_heads=1, batch_first=True).to(device)
    ours = CrossAttention(E, head_dim=E).to(device)
    copy_from_mha(ours, mha)
    g = torch.Generator().manual_seed(5)
    decoder_states, encoder_states = draw(g, 2, L, E, device=device), draw(g, 2, S, E, device=device)
    key_padding_mask = ac.padding_mask([S, 1], S).to(device)
    expected, expected_weights = mha(decoder_states, encoder_states, encoder_states,
                                     key_padding_mask=key_padding_mask)
    context, attn_weights = ours(decoder_states, encoder_states, key_padding_mask)
    assert attn_weights.shape == (2, L, S)
    torch.testing.assert_close(mha.out_proj(context), expected, **tol(torch.float32, device))
    torch.testing.assert_close(attn_weights, expected_weights, **tol(torch.float32, device))


def test_modules_equal_functional_forms_with_transposed_weights():
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(6)
    x, y = draw(g, 2, 5, 8), draw(g, 2, 3, 8)
    attn, cross = SelfAttention(8, 4, bias=False), CrossAttention(8, 4, bias=False)
    for got, expected in zip(attn(x), self_attention(x, attn.q_proj.weight.T, attn.k_proj.weight.T,
                                                     attn.v_proj.weight.T)):
        torch.testing.assert_close(got, expected)
    for got, expected in zip(cross(y, x), cross_attention(y, x, cross.q_proj.weight.T, cross.k_proj.weight.T,
                                                          cross.v_proj.weight.T)):
        torch.testing.assert_close(got, expected)


def test_gradients_reach_every_projection_and_the_encoder():
    torch.manual_seed(4)
    cross = CrossAttention(6, 3)
    encoder_states = torch.randn(1, 4, 6, requires_grad=True)
    context, _ = cross(torch.randn(1, 2, 6), encoder_states)
    context.sum().backward()
    for name, p in cross.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert encoder_states.grad.abs().sum() > 0


# ----------------------------------------------------------------- symmetry: no notion of order
@pytest.mark.parametrize("dtype", DTYPES)
def test_self_attention_is_permutation_equivariant(dtype):
    g = torch.Generator().manual_seed(7)
    x, w = draw(g, 2, 9, 8, dtype=dtype), [draw(g, 8, 4, dtype=dtype) for _ in range(3)]
    perm = torch.randperm(9, generator=g)
    context, attn_weights = self_attention(x, *w)
    context_p, attn_weights_p = self_attention(x[:, perm], *w)
    torch.testing.assert_close(context_p, context[:, perm], **tol(dtype))
    torch.testing.assert_close(attn_weights_p, attn_weights[:, perm][:, :, perm], **tol(dtype))


def test_causal_self_attention_is_not_permutation_equivariant():
    g = torch.Generator().manual_seed(8)
    x, w = draw(g, 1, 6, 8), [draw(g, 8, 4) for _ in range(3)]
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    context, _ = self_attention(x, *w, is_causal=True)
    context_p, _ = self_attention(x[:, perm], *w, is_causal=True)
    assert not torch.allclose(context_p, context[:, perm], atol=1e-4)


def test_cross_attention_ignores_the_order_of_encoder_positions():
    g = torch.Generator().manual_seed(9)
    y, h, w = draw(g, 2, 3, 8), draw(g, 2, 6, 8), [draw(g, 8, 4) for _ in range(3)]
    perm = torch.randperm(6, generator=g)
    context, attn_weights = cross_attention(y, h, *w)
    context_p, attn_weights_p = cross_attention(y, h[:, perm], *w)
    torch.testing.assert_close(context_p, context)
    torch.testing.assert_close(attn_weights_p, attn_weights[:, :, perm])


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("call, fragments", [
    (lambda: self_attention(torch.zeros(4, 6), torch.zeros(6, 3), torch.zeros(6, 3), torch.zeros(6, 3)),
     ["x must be a tensor (B, L, E)", "(4, 6)"]),
    (lambda: self_attention(torch.zeros(1, 4, 6), torch.zeros(3, 6), torch.zeros(6, 3), torch.zeros(6, 3)),
     ["w_query must be (E, ·) with E = 6", "(3, 6)", ".T"]),
    (lambda: self_attention(torch.zeros(1, 4, 6), torch.zeros(6, 3), torch.zeros(6, 2), torch.zeros(6, 3)),
     ["must share D", "(6, 3)", "(6, 2)"]),
    (lambda: cross_attention(torch.zeros(2, 3, 6), torch.zeros(1, 5, 6), *[torch.zeros(6, 4)] * 3),
     ["must share B", "(2, 3, 6)", "(1, 5, 6)"]),
    (lambda: cross_attention(torch.zeros(1, 3, 6), torch.zeros(1, 5, 7), *[torch.zeros(6, 4)] * 3),
     ["encoder_states must be a tensor (B, length, E=6)", "(1, 5, 7)"]),
    (lambda: cross_attention(torch.zeros(1, 3, 6), torch.zeros(1, 5, 6), *[torch.zeros(6, 4)] * 3,
                             torch.zeros(1, 3, dtype=torch.bool)),
     ["key_padding_mask must have shape (B, S) = (1, 5)", "(1, 3)"]),
    (lambda: SelfAttention(8, 0), ["head_dim must be a positive int", "0"]),
    (lambda: SelfAttention(8, 4)(torch.zeros(1, 3, 6)), ["x must be a tensor (B, length, E=8)", "(1, 3, 6)"]),
    (lambda: CrossAttention(8, 4)(torch.zeros(2, 3, 8), torch.zeros(1, 3, 8)), ["must share B"]),
])
def test_bad_inputs_raise_value_errors_naming_the_shapes(call, fragments):
    with pytest.raises(ValueError) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value)


# ----------------------------------------------------------------- the broken decoder
def test_cross_attention_v2_keeps_the_reference_signature_and_docstring():
    assert cross_attention_v2.__doc__ == self_cross.cross_attention.__doc__
    assert inspect.signature(cross_attention_v2) == inspect.signature(self_cross.cross_attention)
    assert "v2" in cross_attention_v2.__name__ and "decoder" not in cross_attention_v2.__name__


def test_cross_attention_v2_ignores_the_encoder():
    g = torch.Generator().manual_seed(10)
    y, w = draw(g, 1, 3, 6), [draw(g, 6, 4) for _ in range(3)]
    context_a, attn_weights = cross_attention_v2(y, draw(g, 1, 5, 6), *w)
    context_b, _ = cross_attention_v2(y, draw(g, 1, 2, 6), *w)
    assert attn_weights.shape == (1, 3, 3)                        # (L, L), not (L, S)
    torch.testing.assert_close(context_a, context_b)             # the source sentence changes nothing
    h = draw(g, 1, 3, 6)                                          # equal lengths: the shapes hide the bug
    assert not torch.allclose(cross_attention_v2(y, h, *w)[0], cross_attention(y, h, *w)[0])


# ----------------------------------------------------------------- checks: lesson 05
def fails(check, fn, thorough, **kwargs):
    with pytest.raises(CheckFailure) as info:
        check(fn, thorough=thorough, **kwargs)
    return info.value


def sa_via_sdpa(x, w_query, w_key, w_value):
    q, k, v = x @ w_query, x @ w_key, x @ w_value
    attn_weights = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    return F.scaled_dot_product_attention(q, k, v), attn_weights


def sa_einsum(x, w_query, w_key, w_value):
    q, k, v = (torch.einsum("ble,ed->bld", x, w) for w in (w_query, w_key, w_value))
    attn_weights = torch.einsum("bld,bsd->bls", q, k).div(q.shape[-1] ** 0.5).softmax(-1)
    return torch.einsum("bls,bsv->blv", attn_weights, v), attn_weights


def sa_linear_layers(x, w_query, w_key, w_value):
    q, k, v = F.linear(x, w_query.T), F.linear(x, w_key.T), F.linear(x, w_value.T)
    attn_weights = torch.softmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, dim=2)
    return attn_weights @ v, attn_weights


def sa_scaled_by_d_model(x, w_query, w_key, w_value):
    q, k, v = x @ w_query, x @ w_key, x @ w_value
    attn_weights = torch.softmax(q @ k.mT / math.sqrt(x.shape[-1]), dim=-1)   # sqrt(E), not sqrt(D)
    return attn_weights @ v, attn_weights


def sa_unscaled(x, w_query, w_key, w_value):
    q, k, v = x @ w_query, x @ w_key, x @ w_value
    attn_weights = torch.softmax(q @ k.mT, dim=-1)
    return attn_weights @ v, attn_weights


def sa_one_projection_for_q_and_k(x, w_query, w_key, w_value):
    q, v = x @ w_query, x @ w_value
    attn_weights = torch.softmax(q @ q.mT / math.sqrt(q.shape[-1]), dim=-1)  # symmetric scores
    return attn_weights @ v, attn_weights


def sa_keys_times_queries(x, w_query, w_key, w_value):
    q, k, v = x @ w_query, x @ w_key, x @ w_value
    attn_weights = torch.softmax(k @ q.mT / math.sqrt(q.shape[-1]), dim=-1)
    return attn_weights @ v, attn_weights


def sa_softmax_over_queries(x, w_query, w_key, w_value):
    q, k, v = x @ w_query, x @ w_key, x @ w_value
    attn_weights = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-2)
    return attn_weights @ v, attn_weights


def sa_values_are_x(x, w_query, w_key, w_value):
    q, k = x @ w_query, x @ w_key
    attn_weights = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    return attn_weights @ x, attn_weights


def sa_values_from_w_key(x, w_query, w_key, w_value):
    q, k = x @ w_query, x @ w_key
    attn_weights = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    return attn_weights @ k, attn_weights


def sa_linear_layout(x, w_query, w_key, w_value):
    return self_attention(x, w_query.T, w_key.T, w_value.T)       # treats (E, D) as nn.Linear's (D, E)


def sa_returns_context_only(x, w_query, w_key, w_value):
    return self_attention(x, w_query, w_key, w_value)[0]


def sa_naive_exp(x, w_query, w_key, w_value):
    q, k, v = x @ w_query, x @ w_key, x @ w_value
    e = torch.exp(q @ k.mT / math.sqrt(q.shape[-1]))
    attn_weights = e / e.sum(-1, keepdim=True)
    return attn_weights @ v, attn_weights


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [self_attention, sa_via_sdpa, sa_einsum, sa_linear_layers], ids=lambda f: f.__name__)
def test_self_attention_check_passes_correct_code(fn, thorough):
    checks.check_self_attention(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, kind, fragments", [
    (sa_scaled_by_d_model, "scale", ["sqrt(d_model) = sqrt(6)", "sqrt(head_dim) = sqrt(4)"]),
    (sa_unscaled, "scale", ["forget to divide the scores by sqrt(head_dim)"]),
    (sa_one_projection_for_q_and_k, "values", ["x @ w_query", "keys must be x @ w_key"]),
    (sa_keys_times_queries, "values", ["K Q^T"]),
    (sa_softmax_over_queries, "normalisation", ["sum to 1 over the key axis", "query axis"]),
    (sa_values_are_x, "shape", ["(B, L, Dv) = (1, 5, 4)", "(1, 5, 6)", "values x @ w_value"]),
    (sa_values_from_w_key, "values", ["x @ w_key: use w_value"]),
    (sa_linear_layout, "error", ["sa_linear_layout", "ValueError", "w_query must be (E, ·)"]),
    (sa_returns_context_only, "type", ["tuple (context, attn_weights)", "Tensor"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_self_attention_check_names_each_mistake(fn, kind, fragments, thorough):
    err = fails(checks.check_self_attention, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err), str(err)


def test_self_attention_naive_exp_overflow_is_caught_only_when_thorough():
    checks.check_self_attention(sa_naive_exp, thorough=False)
    err = fails(checks.check_self_attention, sa_naive_exp, True)
    assert err.kind in ("finite", "normalisation") and "large inputs" in str(err)


def ca_via_sdpa(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask=None):
    q, k, v = decoder_states @ w_query, encoder_states @ w_key, encoder_states @ w_value
    mask = None if key_padding_mask is None else ~key_padding_mask[:, None, :]
    scores = (q @ k.mT / math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), scores.softmax(-1)


def ca_module_style(decoder_states, encoder_states, w_query, w_key, w_value):
    q = F.linear(decoder_states, w_query.T)
    k, v = F.linear(encoder_states, w_key.T), F.linear(encoder_states, w_value.T)
    attn_weights = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(dim=-1)
    return attn_weights @ v, attn_weights


def ca_values_from_decoder(decoder_states, encoder_states, w_query, w_key, w_value):
    q, k, v = decoder_states @ w_query, encoder_states @ w_key, decoder_states @ w_value
    attn_weights = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1)
    return attn_weights @ v, attn_weights


def ca_queries_from_encoder(decoder_states, encoder_states, w_query, w_key, w_value):
    return cross_attention(encoder_states, encoder_states, w_query, w_key, w_value)


def ca_scaled_by_d_model(decoder_states, encoder_states, w_query, w_key, w_value):
    q, k, v = decoder_states @ w_query, encoder_states @ w_key, encoder_states @ w_value
    attn_weights = torch.softmax(q @ k.mT / math.sqrt(decoder_states.shape[-1]), dim=-1)
    return attn_weights @ v, attn_weights


def ca_context_without_attention(decoder_states, encoder_states, w_query, w_key, w_value):
    _, attn_weights = cross_attention(decoder_states, encoder_states, w_query, w_key, w_value)
    return decoder_states @ w_value, attn_weights                 # weights right, context never reads them


def ca_ignores_padding(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask=None):
    return cross_attention(decoder_states, encoder_states, w_query, w_key, w_value)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [cross_attention, ca_via_sdpa, ca_module_style], ids=lambda f: f.__name__)
def test_cross_attention_check_passes_correct_code(fn, thorough):
    checks.check_cross_attention(fn, thorough=thorough)


@pytest.mark.parametrize("fn", [cross_attention, ca_via_sdpa], ids=lambda f: f.__name__)
def test_cross_attention_check_with_padding_passes_correct_code(fn):
    checks.check_cross_attention(fn, thorough=True, key_padding=True)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("key_padding", [False, True])
def test_cross_attention_check_catches_the_broken_decoder(thorough, key_padding):
    err = fails(checks.check_cross_attention, cross_attention_v2, thorough, key_padding=key_padding)
    assert err.kind == "shape"
    for fragment in ["(B, L, S) = (1, 3, 5)", "got (1, 3, 3)", "keys must come from encoder_states"]:
        assert fragment in str(err)


@pytest.fixture
def equal_lengths(monkeypatch):
    """Run check_cross_attention on one case with L == S, where taking keys from the decoder keeps every shape."""
    equal = [("L=S=4", 2, 4, 4, 8, 4, 4, 1.0, torch.float32, None)]
    monkeypatch.setattr(checks.self_cross, "_cross_attention_cases", lambda thorough, key_padding: iter(equal))


def test_cross_attention_check_probe_catches_the_broken_decoder_when_lengths_are_equal(equal_lengths):
    """With L == S the shapes are right; only the probe (change encoder_states) can tell."""
    err = fails(checks.check_cross_attention, cross_attention_v2, False)
    assert err.kind == "values"
    assert "did not change when encoder_states changed" in str(err) and "encoder_states @ w_key" in str(err)
    checks.check_cross_attention(cross_attention, thorough=False)   # the reference passes the same case


def test_cross_attention_check_names_values_taken_from_the_decoder(equal_lengths):
    err = fails(checks.check_cross_attention, ca_values_from_decoder, False)
    assert err.kind == "values" and "Your values come from decoder_states" in str(err), str(err)


@pytest.mark.parametrize("fn, thorough, kind, fragments", [
    (ca_values_from_decoder, False, "error", ["ca_values_from_decoder", "RuntimeError"]),
    (ca_queries_from_encoder, False, "shape", ["(B, L, S) = (1, 3, 5)", "(1, 5, 5)"]),
    (ca_scaled_by_d_model, False, "scale", ["sqrt(d_model) = sqrt(6)"]),
    (ca_context_without_attention, False, "values", ["did not change when encoder_states changed"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_cross_attention_check_names_each_mistake(fn, thorough, kind, fragments):
    err = fails(checks.check_cross_attention, fn, thorough)
    assert err.kind == kind, str(err)
    for fragment in fragments:
        assert fragment in str(err), str(err)


def test_cross_attention_check_with_padding_catches_an_ignored_mask():
    checks.check_cross_attention(ca_ignores_padding, thorough=True)   # no padded case without key_padding
    err = fails(checks.check_cross_attention, ca_ignores_padding, True, key_padding=True)
    assert err.kind == "values" and "padded encoder batch" in str(err) and "must get weight 0" in str(err)


def test_cross_attention_check_with_padding_rejects_a_function_without_the_mask_argument():
    err = fails(checks.check_cross_attention, ca_module_style, True, key_padding=True)
    assert err.kind == "error" and "TypeError" in str(err)


# ----------------------------------------------------------------- the QueryPicker widget
SELF_WEIGHTS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [1 / 3, 1 / 3, 1 / 3]])


def test_query_picker_readout_names_the_top_keys_and_entropy():
    picker = QueryPicker(SELF_WEIGHTS, ["cat", "sat", "mat"], query=1)
    assert picker.top(3) == [(2, "mat", 0.6), (1, "sat", 0.3), (0, "cat", 0.1)]
    text = picker.text()
    h = -(0.1 * math.log(0.1) + 0.3 * math.log(0.3) + 0.6 * math.log(0.6))
    assert "query 1 'sat'" in text and f"entropy = {h:.3f} nats" in text
    assert f"uniform over 3 keys: {math.log(3):.3f}" in text
    assert "'mat' (key 2) 0.600" in text.splitlines()[1]
    picker.dropdown.value = 2                                      # what the learner's click does
    assert f"entropy = {math.log(3):.3f}" in picker.text() and html.escape(picker.text()) in picker.readout.value


def test_query_picker_redraws_and_has_stable_css_classes():
    picker = QueryPicker(SELF_WEIGHTS, ["cat", "sat", "mat"])
    before = bytes(picker.image.value)
    assert before.startswith(b"\x89PNG")
    picker.dropdown.value = 1
    assert bytes(picker.image.value) != before
    assert "query-picker" in picker.dropdown._dom_classes
    assert "query-readout" in picker.readout._dom_classes
    assert "query-chart" in picker.image._dom_classes
    assert [label for label, _ in picker.dropdown.options] == ["0: cat", "1: sat", "2: mat"]


def test_query_picker_handles_cross_attention_and_repeated_tokens():
    weights = torch.softmax(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)), -1)
    picker = QueryPicker(weights, ["le", "chat", "le", "."], ["the", "cat", "sat", "on", "the", "mat"], query=2)
    assert picker.weights().shape == (6,)
    assert picker.dropdown.value == 2 and len(picker.dropdown.options) == 4
    torch.testing.assert_close(picker.weights(), weights[2])


@pytest.mark.parametrize("args, kwargs, fragment", [
    ((torch.ones(1, 3, 3) / 3, ["a", "b", "c"]), {}, "attn_weights[0]"),
    ((SELF_WEIGHTS, ["a", "b"]), {}, "query_labels needs 3 entries"),
    ((SELF_WEIGHTS, ["a", "b", "c"], ["x"]), {}, "key_labels needs 3 entries"),
    ((SELF_WEIGHTS, ["a", "b", "c"]), {"query": 3}, "query must be an int in 0..2"),
])
def test_query_picker_rejects_bad_input(args, kwargs, fragment):
    with pytest.raises(ValueError) as info:
        QueryPicker(*args, **kwargs)
    assert fragment in str(info.value)
