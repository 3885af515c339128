"""Rotary position embeddings and ALiBi against independent references.

References: Hugging Face transformers' Llama rotary (``LlamaRotaryEmbedding`` + ``apply_rotary_pos_emb``,
half-split pairs) and GPT-J's (``create_sinusoidal_positions`` + ``apply_rotary_pos_emb``, interleaved
pairs); Meta's original Llama formulation with complex numbers (``torch.view_as_complex``); the relative
property ``q_m . k_n = f(m - n)``; BLOOM's ``build_alibi_tensor`` for the ALiBi slopes; the paper's
worked slopes for 8 heads.
"""
import doctest

import pytest
import torch

from attn_course import rotary
from attn_course.rotary import alibi_bias, alibi_slopes, apply_rotary, rotary_angles

F32, F64 = torch.float32, torch.float64
DTYPES = [pytest.param(F32, id="f32"), pytest.param(F64, id="f64")]


def tol(dtype):
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == F32 else {"atol": 1e-12, "rtol": 1e-12}


def draw(g, *shape, dtype=F64):
    return torch.randn(*shape, generator=g, dtype=F64).to(dtype)


def test_docstring_examples_run():
    assert doctest.testmod(rotary).failed == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_half_split_equals_transformers_llama(base, dtype):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    g = torch.Generator().manual_seed(0)
    B, H, L, D = 2, 3, 7, 16
    q, k = draw(g, B, H, L, D, dtype=dtype), draw(g, B, H, L, D, dtype=dtype)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [5, 9, 10, 11, 40, 41, 100]])   # (B, L), with gaps
    config = LlamaConfig(hidden_size=H * D, num_attention_heads=H, head_dim=D, rope_theta=base,
                         max_position_embeddings=128)
    cos, sin = LlamaRotaryEmbedding(config=config).to(dtype)(q, positions)           # (B, L, D) each
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos.to(dtype), sin.to(dtype))          # (B, H, L, D)
    ours_q = apply_rotary(q, positions[:, None, :], base=base)                      # positions broadcast over H
    ours_k = apply_rotary(k, positions[:, None, :], base=base)
    looser = {"atol": 2e-5, "rtol": 1e-5}   # HF computes the angles in float32 whatever the dtype (p * theta, p <= 100)
    torch.testing.assert_close(ours_q, q_ref, **looser)
    torch.testing.assert_close(ours_k, k_ref, **looser)


@pytest.mark.parametrize("dtype", DTYPES)
def test_interleaved_equals_transformers_gptj(dtype):
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb, create_sinusoidal_positions

    g = torch.Generator().manual_seed(1)
    B, L, H, D = 2, 9, 2, 8
    x = draw(g, B, L, H, D, dtype=dtype)                                             # GPT-J's layout (B, L, H, D)
    positions = torch.arange(L)
    table = create_sinusoidal_positions(64, D).to(dtype)                             # (64, D): sin | cos
    sin, cos = table[positions].chunk(2, dim=-1)                                     # (L, D/2) each
    expected = apply_rotary_pos_emb(x, sin[None].expand(B, L, D // 2), cos[None].expand(B, L, D // 2))
    got = apply_rotary(x.transpose(1, 2), positions, interleaved=True).transpose(1, 2)   # ours on (B, H, L, D)
    torch.testing.assert_close(got, expected, atol=2e-5 if dtype == F32 else 1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_interleaved_equals_complex_multiplication(dtype):
    """Meta's Llama code: consecutive feature pairs as complex numbers, times exp(i p theta)."""
    g = torch.Generator().manual_seed(2)
    L, D = 11, 12
    x = draw(g, 4, L, D, dtype=F64)
    positions = torch.arange(3, 3 + L)
    theta = 10000.0 ** (-torch.arange(0, D, 2, dtype=F64) / D)                      # (D/2,)
    turn = torch.polar(torch.ones(L, D // 2, dtype=F64), positions[:, None].double() * theta)  # (L, D/2) complex
    expected = torch.view_as_real(torch.view_as_complex(x.reshape(4, L, D // 2, 2)) * turn).reshape(4, L, D)
    torch.testing.assert_close(apply_rotary(x.to(dtype), positions, interleaved=True), expected.to(dtype), **tol(dtype))


@pytest.mark.parametrize("interleaved", [False, True], ids=["half-split", "interleaved"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_scores_depend_only_on_the_offset(interleaved, dtype):
    """q_m . k_n is a function of m - n: the same vectors placed at (m, n) and (m + t, n + t) score alike."""
    g = torch.Generator().manual_seed(3)
    D = 16
    q, k = draw(g, 1, D, dtype=dtype), draw(g, 1, D, dtype=dtype)
    gen = torch.Generator().manual_seed(4)
    for _ in range(50):
        m, n, shift = (int(v) for v in torch.randint(0, 2000, (3,), generator=gen))
        score = apply_rotary(q, torch.tensor([m]), interleaved=interleaved) @ \
            apply_rotary(k, torch.tensor([n]), interleaved=interleaved).T
        moved = apply_rotary(q, torch.tensor([m + shift]), interleaved=interleaved) @ \
            apply_rotary(k, torch.tensor([n + shift]), interleaved=interleaved).T
        torch.testing.assert_close(score, moved, atol=5e-4 if dtype == F32 else 1e-9, rtol=1e-4)


def test_the_two_pairings_disagree_and_break_the_relative_property_when_mixed():
    """Weights trained under one pairing read with the other: the scores change, and q rotated one way
    against k rotated the other no longer depends on the offset alone (the conversion bug)."""
    g = torch.Generator().manual_seed(5)
    q, k = draw(g, 1, 16), draw(g, 1, 16)
    half = apply_rotary(q, torch.tensor([7]))
    inter = apply_rotary(q, torch.tensor([7]), interleaved=True)
    assert (half - inter).abs().max() > 0.1

    def mixed(m, n):
        return (apply_rotary(q, torch.tensor([m])) @ apply_rotary(k, torch.tensor([n]), interleaved=True).T).item()
    assert abs(mixed(5, 2) - mixed(105, 102)) > 1e-3


def test_position_zero_is_the_identity_and_norms_are_kept():
    g = torch.Generator().manual_seed(6)
    x = draw(g, 2, 5, 8)
    for interleaved in (False, True):
        torch.testing.assert_close(apply_rotary(x, torch.zeros(5, dtype=torch.long), interleaved=interleaved), x)
        rotated = apply_rotary(x, torch.arange(5) * 13, interleaved=interleaved)
        torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))


def test_odd_and_float_positions_and_dtype_kept():
    g = torch.Generator().manual_seed(7)
    x = draw(g, 3, 4, 6, dtype=F32)
    a = apply_rotary(x, torch.tensor([1, 3, 5, 7]))
    b = apply_rotary(x, torch.tensor([1.0, 3.0, 5.0, 7.0]))
    assert a.dtype == F32 and a.shape == x.shape
    torch.testing.assert_close(a, b)
    angles = rotary_angles(torch.tensor([1, 3]), 6)
    torch.testing.assert_close(angles[1], 3 * angles[0])


@pytest.mark.parametrize("call, words", [
    (lambda: apply_rotary(torch.zeros(2, 5), torch.arange(2)), ["D even", "(2, 5)"]),
    (lambda: apply_rotary(torch.zeros(3, 4), torch.arange(2)), ["sequence length 3", "(2,)"]),
    (lambda: apply_rotary(torch.zeros(3, 4, dtype=torch.long), torch.arange(3)), ["floating"]),
    (lambda: rotary_angles(torch.arange(3), 5), ["even", "5"]),
    (lambda: alibi_slopes(0), ["positive int", "0"]),
    (lambda: alibi_bias(2, torch.zeros(2, 2), torch.arange(3)), ["1-D", "(2, 2)"]),
])
def test_bad_input_says_what_was_expected_and_what_came(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_alibi_slopes_of_the_paper_for_eight_heads():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -k for k in range(1, 9)], dtype=F64))


@pytest.mark.parametrize("num_heads", [1, 2, 3, 5, 6, 8, 12, 16, 20])
def test_alibi_slopes_equal_bloom(num_heads):
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    alibi = build_alibi_tensor(torch.ones(1, 4, dtype=torch.long), num_heads, F32)   # (H, 1, 4): slope * position
    torch.testing.assert_close(alibi_slopes(num_heads).float(), alibi[:, 0, 1])


def test_alibi_bias_is_minus_slope_times_distance():
    bias = alibi_bias(4, torch.arange(2, 5), torch.arange(6), dtype=F64)            # (H, L=3, S=6), queries at 2..4
    slopes = alibi_slopes(4)
    assert bias.shape == (4, 3, 6)
    for h in range(4):
        for i, q in enumerate(range(2, 5)):
            for j in range(6):
                assert bias[h, i, j].item() == pytest.approx(-slopes[h].item() * abs(q - j))
    assert (bias[:, torch.arange(3), torch.arange(2, 5)] == 0).all()                 # a query's own position: 0


# ----------------------------------------------------------------- in the course's modules
def _projections(mha, x):
    B, L, E = x.shape
    H, D = mha.num_heads, mha.head_dim
    return [p(x).view(B, L, H, D).transpose(1, 2) for p in (mha.q_proj, mha.k_proj, mha.v_proj)]   # (B, H, L, D)


@pytest.mark.parametrize("interleaved", [False, True], ids=["half-split", "interleaved"])
def test_multi_head_attention_with_rotary_equals_torch_sdpa_on_rotated_heads(interleaved):
    from torch.nn import functional as F

    from attn_course import MultiHeadAttention
    from attn_course.rotary import Rotary
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, positional=Rotary(base=100.0, interleaved=interleaved)).double().eval()
    x = draw(torch.Generator().manual_seed(8), 2, 6, 16)
    q, k, v = _projections(mha, x)
    positions = torch.arange(6)
    q, k = (apply_rotary(t, positions, 100.0, interleaved) for t in (q, k))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 6, 16)
    with torch.no_grad():
        got, _ = mha(x, is_causal=True)
    torch.testing.assert_close(got, mha.out_proj(expected))
    assert set(mha.state_dict()) == set(MultiHeadAttention(16, 4).state_dict())     # no weights added


def test_multi_head_attention_with_alibi_equals_torch_sdpa_with_the_bias_and_masks():
    from torch.nn import functional as F

    from attn_course import MultiHeadAttention, padding_mask
    from attn_course.rotary import ALiBi
    torch.manual_seed(1)
    mha = MultiHeadAttention(16, 4, positional=ALiBi(4)).double().eval()
    x = draw(torch.Generator().manual_seed(9), 2, 5, 16)
    key_padding_mask = padding_mask([5, 3], 5)                                      # (B, S), True = padding
    q, k, v = _projections(mha, x)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril() & ~key_padding_mask[:, None, None, :]   # (B, 1, L, S)
    bias = alibi_bias(4, torch.arange(5), torch.arange(5), dtype=F64)                # (H, L, S)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~allowed, float("-inf")))
    with torch.no_grad():
        got, weights = mha(x, is_causal=True, key_padding_mask=key_padding_mask)
    torch.testing.assert_close(got, mha.out_proj(expected.transpose(1, 2).reshape(2, 5, 16)))
    assert (weights[1, :, :, 3:] == 0).all()


def test_alibi_needs_its_number_of_heads():
    from attn_course.rotary import ALiBi
    with pytest.raises(ValueError, match="H=4"):
        ALiBi(4)(torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8))


def test_rotary_block_scores_depend_on_offsets_only():
    """A TransformerBlock with RoPE and no absolute positions: a sequence shifted right by padding-free
    repetition gives the causal block the same outputs at the same offsets (translation invariance)."""
    from attn_course.rotary import Rotary
    from attn_course.transformer import TransformerBlock
    torch.manual_seed(2)
    block = TransformerBlock(16, 2, 32, positional=Rotary()).double().eval()
    x = draw(torch.Generator().manual_seed(10), 1, 8, 16)
    with torch.no_grad():
        _, w = block(x, is_causal=True, need_weights=True)
        _, w_alone = block(x[:, 3:], is_causal=True, need_weights=True)               # the same tokens, 3 places earlier
    assert not torch.allclose(w[0, :, 3:, 3:], w_alone[0])                          # the first 3 tokens still count
    with torch.no_grad():
        scores_full = block.self_attn.positional(*_projections(block.self_attn, block.norm1(x) if block.norm_first else x)[:2])
        scores_alone = block.self_attn.positional(*_projections(block.self_attn, x[:, 3:])[:2])
    full = scores_full[0] @ scores_full[1].transpose(-1, -2)                          # (1, H, 8, 8)
    alone = scores_alone[0] @ scores_alone[1].transpose(-1, -2)                       # (1, H, 5, 5)
    torch.testing.assert_close(full[..., 3:, 3:], alone)
