"""The online softmax and tiled attention against torch.softmax, logsumexp and PyTorch's SDPA; peak memory
on known cases; the check of FlashAttention's update against the reference, correct variants and the broken copy.

Shape legend: B batch, H heads, L query length, S key/value length, D head_dim, Dv value dim. Mask
polarity: ``attn_mask`` bool True = may attend (as SDPA), float = added to the scores.
"""
# ruff: noqa: E741 -- `l` is the running sum, the papers' ell (Milakov & Gimelshein 2018; Dao et al. 2022)
import doctest
import inspect
import math

import pytest
import torch
from torch.nn import functional as F

from attn_course import attention, flash
from attn_course.broken.flash_v2 import online_softmax_update_v2
from attn_course.checks import CheckFailure
from attn_course.checks.flash import check_online_softmax_update
from attn_course.flash import (
    online_softmax,
    online_softmax_finish,
    online_softmax_init,
    online_softmax_stats,
    online_softmax_update,
    peak_memory,
    tiled_attention,
)

from helpers import DEVICES, DTYPES, F32, F64, THOROUGH, draw, tol


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiles of 64 x 64 are too small to share between threads: on a busy CPU the threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def allowed_mask(g, shape, device="cpu"):
    """Bool mask, True = may attend, about half True, every row keeping at least one key."""
    mask = torch.rand(shape, generator=g) < 0.5
    mask.scatter_(-1, torch.randint(0, shape[-1], (*shape[:-1], 1), generator=g), True)
    return mask.to(device)


# ------------------------------------------------------------------------------------ the online softmax
INPUTS = ["random", "large", "with-inf"]


def softmax_input(kind, dtype, device):
    g = torch.Generator().manual_seed(3)
    x = draw(g, 4, 3, 11, dtype=dtype, device=device, scale=1e4 if kind == "large" else 2.0)   # (..., S)
    if kind == "with-inf":
        x[0, 0, ::3] = float("-inf")
        x[1, 2, 5:] = float("-inf")                     # -inf only in the later blocks
        x[2, 1, :7] = float("-inf")                     # -inf in the first blocks: the max starts at -inf
    return x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [1, 3, 11, 20], ids=["block1", "block3", "blockS", "block-over-S"])
@pytest.mark.parametrize("kind", INPUTS)
def test_online_softmax_equals_torch_softmax(kind, block_size, dtype, device):
    x = softmax_input(kind, dtype, device)
    torch.testing.assert_close(online_softmax(x, block_size), torch.softmax(x, dim=-1), **tol(dtype, device))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [1, 3, 11, 20], ids=["block1", "block3", "blockS", "block-over-S"])
@pytest.mark.parametrize("kind", INPUTS)
def test_online_softmax_stats_are_the_max_and_give_logsumexp(kind, block_size, dtype):
    x = softmax_input(kind, dtype, "cpu")
    m, l = online_softmax_stats(x, block_size)                                               # (..., 1) each
    assert m.shape == l.shape == (4, 3, 1)
    torch.testing.assert_close(m, x.amax(-1, keepdim=True), atol=0, rtol=0)
    torch.testing.assert_close(m + l.log(), torch.logsumexp(x, -1, keepdim=True), **tol(dtype))


def test_a_row_of_minus_inf_has_l_zero_and_softmax_nan_like_torch():
    x = torch.tensor([[float("-inf")] * 4, [0.0, 1.0, float("-inf"), 2.0]])
    m, l = online_softmax_stats(x, 3)
    assert m[0].item() == float("-inf") and l[0].item() == 0.0 and torch.isfinite(l).all()
    torch.testing.assert_close(online_softmax(x, 3), torch.softmax(x, -1), equal_nan=True)


@pytest.mark.parametrize("block_size", [0, -2, 2.5, True, None])
def test_online_softmax_rejects_bad_block_sizes(block_size):
    with pytest.raises(ValueError, match="block_size must be an int >= 1"):
        online_softmax(torch.zeros(3), block_size)


@pytest.mark.parametrize("x", [torch.tensor(1.0), torch.arange(3), [1.0, 2.0]], ids=["0-dim", "int", "list"])
def test_online_softmax_rejects_what_is_not_a_float_tensor(x):
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor \(\.\.\., S\)"):
        online_softmax_stats(x, 2)


# ------------------------------------------------------------------------------------ one update at a time
@pytest.mark.parametrize("dtype", DTYPES)
def test_updates_over_blocks_give_masked_softmax_attention_and_zeros_for_a_row_with_no_key(dtype):
    g = torch.Generator().manual_seed(5)
    attn_scores = draw(g, 2, 4, 10, dtype=dtype, scale=3.0)                                  # (B, L, S)
    attn_scores[0, 1] = float("-inf")                                                        # sees no key at all
    attn_scores[1, 2, :6] = float("-inf")                                                    # sees keys late
    value = draw(g, 2, 10, 3, dtype=dtype)                                                   # (B, S, Dv)
    m, l, acc = online_softmax_init((2, 4), 3, dtype=dtype)
    for j0 in range(0, 10, 4):
        m, l, acc = online_softmax_update(m, l, acc, attn_scores[..., j0:j0 + 4], value[:, j0:j0 + 4])
    expected = attention.masked_softmax(attn_scores) @ value
    torch.testing.assert_close(online_softmax_finish(l, acc), expected, **tol(dtype))
    assert m[0, 1].item() == float("-inf") and l[0, 1].item() == 0 and (acc[0, 1] == 0).all()
    torch.testing.assert_close(m, attn_scores.amax(-1, keepdim=True), atol=0, rtol=0)


def test_init_gives_the_documented_state():
    m, l, acc = online_softmax_init((2, 3), 5, dtype=F64)
    assert (m.shape, l.shape, acc.shape) == ((2, 3, 1), (2, 3, 1), (2, 3, 5))
    assert torch.isneginf(m).all() and (l == 0).all() and (acc == 0).all() and acc.dtype == F64


# ------------------------------------------------------------------------------------ tiled attention
# (B, H, L, S, D, Dv, block_q, block_k)
TILED_SHAPES = [
    pytest.param(2, 3, 37, 23, 16, 8, 5, 7, id="L37-S23-blocks5x7"),
    pytest.param(1, 2, 64, 64, 32, 32, 16, 32, id="L64-S64-divisible"),
    pytest.param(2, 1, 19, 45, 8, 4, 64, 64, id="L19-S45-one-tile"),
    pytest.param(1, 2, 50, 13, 8, 6, 8, 4, id="L50-S13-L-over-S"),
    pytest.param(2, 2, 1, 9, 4, 4, 1, 1, id="L1-blocks1"),
]
MASKS = ["none", "bool", "bool-2d", "float", "key-padding", "causal"]


def tiled_inputs(B, H, L, S, D, Dv, mask, dtype, device, seed=11):
    g = torch.Generator().manual_seed(seed + L + S)
    q, k = draw(g, B, H, L, D, dtype=dtype, device=device), draw(g, B, H, S, D, dtype=dtype, device=device)
    v = draw(g, B, H, S, Dv, dtype=dtype, device=device)
    attn_mask = {"none": None, "causal": None,
                 "bool": allowed_mask(g, (B, H, L, S), device),
                 "bool-2d": allowed_mask(g, (L, S), device),
                 "float": draw(g, B, 1, L, S, dtype=dtype, device=device).masked_fill(
                     ~allowed_mask(g, (B, 1, L, S), device), float("-inf")),
                 "key-padding": attention.key_padding_to_attn_mask(
                     attention.padding_mask(torch.randint(1, S + 1, (B,), generator=g), S)).unsqueeze(1).to(device),
                 }[mask]                                                                     # (B, 1, 1, S) for padding
    return q, k, v, attn_mask


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("B, H, L, S, D, Dv, block_q, block_k", TILED_SHAPES)
def test_tiled_attention_equals_torch_sdpa(B, H, L, S, D, Dv, block_q, block_k, mask, dtype, device):
    q, k, v, attn_mask = tiled_inputs(B, H, L, S, D, Dv, mask, dtype, device)
    causal = mask == "causal"
    got = tiled_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, block_q=block_q, block_k=block_k)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)
    torch.testing.assert_close(got, expected, **tol(dtype, device))


@pytest.mark.parametrize("mask", ["bool", "float", "causal"])
@pytest.mark.parametrize("B, H, L, S, D, Dv, block_q, block_k", TILED_SHAPES[:4])
def test_tiled_attention_gradients_equal_torch_sdpa(B, H, L, S, D, Dv, block_q, block_k, mask):
    q, k, v, attn_mask = tiled_inputs(B, H, L, S, D, Dv, mask, F64, "cpu", seed=12)
    weight = draw(torch.Generator().manual_seed(1), B, H, L, Dv, dtype=F64)                  # a generic linear loss
    grads = []
    for attend in (lambda *a, **kw: tiled_attention(*a, **kw, block_q=block_q, block_k=block_k),
                   F.scaled_dot_product_attention):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = attend(*leaves, attn_mask=attn_mask, is_causal=mask == "causal", scale=0.3)
        grads.append(torch.autograd.grad((out * weight).sum(), leaves))
    for name, mine, theirs in zip("qkv", *grads):
        torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=1e-10, msg=f"gradient of {name}")


def test_tiled_attention_in_float64_equals_a_float64_reference_to_1e_12():
    q, k, v, attn_mask = tiled_inputs(2, 2, 45, 31, 16, 8, "float", F64, "cpu")
    expected = attention.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    torch.testing.assert_close(tiled_attention(q, k, v, attn_mask, block_q=8, block_k=6), expected,
                               atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["bool", "float", "padding-length-0"])
def test_a_query_with_no_allowed_key_gets_zeros_and_finite_gradients(kind, device):
    g = torch.Generator().manual_seed(8)
    q, k, v = (draw(g, 2, 3, 9, 4, device=device) for _ in range(3))                        # (B, H, L=S=9, D)
    if kind == "padding-length-0":
        attn_mask = attention.key_padding_to_attn_mask(attention.padding_mask([0, 6], 9)).unsqueeze(1).to(device)
    else:
        attn_mask = allowed_mask(g, (2, 3, 9, 9), device)
        attn_mask[0, 1, 4] = False                                                           # query 4 sees nothing
        if kind == "float":
            attn_mask = torch.zeros(attn_mask.shape, device=device).masked_fill(~attn_mask, float("-inf"))
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = tiled_attention(*leaves, attn_mask=attn_mask, block_q=4, block_k=4)
    empty = (0, slice(None)) if kind == "padding-length-0" else (0, 1, 4)
    assert (out[empty] == 0).all()
    torch.testing.assert_close(out, attention.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask),
                               **tol(F32, device))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in leaves)


def test_causal_skips_key_blocks_above_the_diagonal_and_no_tile_exceeds_the_blocks(monkeypatch):
    tiles = []

    def spy(m, l, acc, attn_scores, value):
        tiles.append(tuple(attn_scores.shape[-2:]))
        return online_softmax_update(m, l, acc, attn_scores, value)

    monkeypatch.setattr(flash, "online_softmax_update", spy)
    q, k, v = (torch.randn(1, 2, 128, 8) for _ in range(3))
    tiled_attention(q, k, v, block_q=32, block_k=32)
    assert len(tiles) == 16
    tiles.clear()
    out = tiled_attention(q, k, v, is_causal=True, block_q=32, block_k=32)
    assert len(tiles) == 1 + 2 + 3 + 4                                                       # the lower triangle
    assert max(tiles) <= (32, 32)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("kwargs, match", [
    (dict(block_q=0), "block_q must be an int >= 1; got 0"),
    (dict(block_k=-3), "block_k must be an int >= 1; got -3"),
    (dict(block_k=2.0), "block_k must be an int >= 1; got 2.0"),
    (dict(block_q=True), "block_q must be an int >= 1; got True"),
    (dict(is_causal=True, attn_mask=torch.ones(4, 6, dtype=torch.bool)), "either attn_mask or is_causal"),
    (dict(attn_mask=torch.ones(5, 6, dtype=torch.bool)), r"broadcast to \(\.\.\., L, S\) = \(2, 4, 6\); got \(5, 6\)"),
    (dict(attn_mask=torch.ones(3, 4, 6, dtype=torch.bool)), r"broadcast to .*got \(3, 4, 6\)"),
    (dict(attn_mask=torch.ones(4, 6, dtype=torch.int64)), "bool .* or float .*; got torch.int64"),
])
def test_tiled_attention_rejects_bad_arguments(kwargs, match):
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match=match):
        tiled_attention(q, k, v, **kwargs)


@pytest.mark.parametrize("shapes, match", [
    (((2, 4, 8), (2, 6, 7), (2, 6, 3)), "same last dim"),
    (((2, 4, 8), (3, 6, 8), (3, 6, 3)), "share their batch dims"),
    (((2, 4, 8), (2, 6, 8), (2, 5, 3)), r"key \(\.\.\., S, D\) and value \(\.\.\., S, Dv\)"),
    (((8,), (6, 8), (6, 3)), "at least 2 dims"),
])
def test_tiled_attention_rejects_bad_shapes(shapes, match):
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        tiled_attention(q, k, v)


# ------------------------------------------------------------------------------------ peak memory
def naive_attention(q, k, v):
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])                           # (..., L, S)
    return torch.softmax(attn_scores, dim=-1) @ v                                            # (..., L, Dv)


def test_peak_memory_of_known_allocations():
    result, peak = peak_memory(torch.zeros, 1000, 1000)
    assert result.shape == (1000, 1000) and peak == 4_000_000
    assert 8000 <= peak_memory(lambda: (torch.ones(1000) * 2).sum())[1] < 8100            # two temporaries alive
    x, y = torch.ones(1000), torch.ones(1000)
    assert peak_memory(x.add_, y)[1] == 0                                                    # in place: nothing new


def test_peak_memory_ignores_frees_of_tensors_made_before_the_call():
    earlier = [torch.ones(1000), peak_memory(torch.ones, 1000)[0]]                         # the 2nd from a measurement

    def swap():
        earlier.clear()                                                                      # frees 8000 bytes
        return torch.ones(1000)

    assert peak_memory(swap)[1] == 4000


def test_peak_memory_agrees_with_the_public_profiler_and_repeats_exactly():
    q, k, v = (torch.randn(1, 1, 256, 64) for _ in range(3))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        naive_attention(q, k, v)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    alive = [0]
    for _, nbytes in events:
        alive.append(alive[-1] + nbytes)
    first, second = peak_memory(naive_attention, q, k, v)[1], peak_memory(naive_attention, q, k, v)[1]
    assert first == second == max(alive)


def test_peak_memory_falls_back_to_the_public_profiler_with_the_same_bytes(monkeypatch):
    q, k, v = (torch.randn(1, 2, 100, 16) for _ in range(3))
    fast = peak_memory(tiled_attention, q, k, v, block_q=32, block_k=16)[1]

    def refuses(*args):
        raise TypeError("another signature")

    monkeypatch.setattr(torch.autograd, "_enable_profiler", refuses)
    assert peak_memory(tiled_attention, q, k, v, block_q=32, block_k=16)[1] == fast > 0


def test_naive_attention_needs_the_weights_and_tiled_attention_far_less():
    naive, tiled = {}, {}
    for L in (1024, 2048):
        q, k, v = (torch.randn(1, 1, L, 64) for _ in range(3))
        naive[L] = peak_memory(naive_attention, q, k, v)[1]
        tiled[L] = peak_memory(tiled_attention, q, k, v, block_q=128, block_k=128)[1]
        assert tiled[L] == peak_memory(tiled_attention, q, k, v, block_q=128, block_k=128)[1]
    assert naive[1024] >= 1024 * 1024 * 4                                                    # the (L, S) weights
    assert tiled[2048] < naive[2048] / 10
    assert naive[2048] / naive[1024] > 3.5 and tiled[2048] / tiled[1024] < 2.5              # ~L^2 against ~L


def test_peak_memory_lets_an_exception_through_and_stops_profiling():
    def fails():
        torch.ones(10)
        raise KeyError("inside")
    with pytest.raises(KeyError, match="inside"):
        peak_memory(fails)
    assert peak_memory(torch.ones, 250)[1] == 1000


# ------------------------------------------------------------------------------------ the check
def update_normalised(m, l, acc, attn_scores, value):
    """FlashAttention-1's form (Dao et al. 2022, Algorithm 1, lines 10-12): O kept normalised, here converted."""
    o = acc / torch.where(l > 0, l, torch.ones_like(l))                                      # (..., L, Dv)
    m_blk = attn_scores.amax(dim=-1, keepdim=True)                                           # (..., L, 1)
    p = torch.exp(attn_scores - torch.where(torch.isinf(m_blk), torch.zeros_like(m_blk), m_blk))
    l_blk = p.sum(dim=-1, keepdim=True)
    m_new = torch.maximum(m, m_blk)
    m_ref = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
    alpha, beta = torch.exp(m - m_ref), torch.exp(m_blk - m_ref)
    l_new = alpha * l + beta * l_blk
    o_new = (l * alpha * o + beta * (p @ value)) / torch.where(l_new > 0, l_new, torch.ones_like(l_new))
    return m_new, l_new, o_new * l_new


def update_float64_clamped(m, l, acc, attn_scores, value):
    """In float64, with the most negative float64 instead of -inf as the max of a row with no key."""
    lowest = torch.finfo(torch.float64).min
    m64, l64, acc64, s64 = m.double(), l.double(), acc.double(), attn_scores.double()
    m_new = torch.maximum(m64, s64.amax(-1, keepdim=True)).clamp(min=lowest)
    p = torch.exp(s64 - m_new)
    scale_old = torch.exp(m64.clamp(min=lowest) - m_new)
    l_new = scale_old * l64 + p.sum(-1, keepdim=True)
    acc_new = scale_old * acc64 + torch.einsum("...ls,...sd->...ld", p, value.double())
    return m_new.to(m.dtype), l_new.to(l.dtype), acc_new.to(acc.dtype)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [online_softmax_update, update_normalised, update_float64_clamped])
def test_check_passes_the_reference_and_correct_variants(fn, thorough):
    check_online_softmax_update(fn, thorough=thorough)


@pytest.mark.parametrize("thorough", THOROUGH)
def test_check_catches_the_missing_rescale_of_acc(thorough):
    with pytest.raises(CheckFailure) as err:
        check_online_softmax_update(online_softmax_update_v2, thorough=thorough)
    assert err.value.kind == "values"
    assert "block 1" in str(err.value) and "must be multiplied by exp(" in str(err.value)
    assert "not rescaled" in str(err.value)


def update_without_safe_max(m, l, acc, attn_scores, value):
    m_new = torch.maximum(m, attn_scores.amax(dim=-1, keepdim=True))
    rescale, p = torch.exp(m - m_new), torch.exp(attn_scores - m_new)
    return m_new, rescale * l + p.sum(-1, keepdim=True), rescale * acc + p @ value


def update_without_keepdim(m, l, acc, attn_scores, value):
    m_new, l_new, acc_new = online_softmax_update(m, l, acc, attn_scores, value)
    return m_new.squeeze(-1), l_new, acc_new


def update_normalising_acc(m, l, acc, attn_scores, value):
    m_new, l_new, acc_new = online_softmax_update(m, l, acc, attn_scores, value)
    return m_new, l_new, online_softmax_finish(l_new, acc_new)


@pytest.mark.parametrize("fn, kind, words", [
    (update_without_safe_max, "finite", "exp(-inf - (-inf))"),
    (update_without_keepdim, "shape", "keepdim=True"),
    (update_normalising_acc, "values", "divide by l once"),
    (lambda m, l, acc, attn_scores, value: None, "type", "did you forget `return`"),
    (lambda m, l, acc, attn_scores, value: (m, l), "type", "of length 2"),
])
def test_check_names_each_mistake(fn, kind, words):
    with pytest.raises(CheckFailure) as err:
        check_online_softmax_update(fn)
    assert err.value.kind == kind and words in str(err.value)


def test_broken_copy_keeps_the_reference_signature_and_docstring_and_the_check_forbids_the_reference():
    assert online_softmax_update_v2.__doc__ == online_softmax_update.__doc__
    assert inspect.signature(online_softmax_update_v2) == inspect.signature(online_softmax_update)
    assert [label for label, _ in check_online_softmax_update.forbidden] == ["attn_course.flash.online_softmax_update"]


def test_docstring_examples_run():
    assert doctest.testmod(flash).failed == 0


def test_tripwire_fails_an_answer_that_calls_the_reference():
    from attn_course.checks import tripwire
    tripwire.enable()
    try:
        with pytest.raises(CheckFailure) as err:
            check_online_softmax_update(lambda *state_and_block: online_softmax_update(*state_and_block))
    finally:
        tripwire.enable(False)
    assert err.value.kind == "reference" and "online_softmax_update" in str(err.value)


def test_tiling_explorer_walks_the_loop_and_ends_exact():
    """The widget's loop state against PyTorch: after a query block's last tile its row equals SDPA."""
    from attn_course.widgets import TilingExplorer

    w = TilingExplorer(length=64, block=16)
    assert w.step_slider.max == 16 and w.text().startswith("L = S = 64, block = 16: 4 x 4 = 16 tiles, 0 skipped")
    w.step_slider.value = 8                                              # query block 1, its last key block
    state = w.state()
    assert state["tile"] == (1, 3) and len(state["gap_path"]) == 4
    q, k, v = w.query[:64], w.key[:64], w.value[:64]
    row = torch.nn.functional.scaled_dot_product_attention(q[None, 16:17], k[None], v[None])[0, 0]   # (Dv,)
    m, l, acc = flash.online_softmax_init((1,), v.shape[-1])
    scores = q[16:17] @ k.T / 4                                          # (1, 64), 1 / sqrt(D = 16)
    for j in range(0, 64, 16):
        m, l, acc = flash.online_softmax_update(m, l, acc, scores[:, j:j + 16], v[j:j + 16])
    torch.testing.assert_close(flash.online_softmax_finish(l, acc)[0], row, atol=1e-5, rtol=1e-5)
    assert state["gap"] < 1e-5 < state["gap_path"][0]                    # exact only after the last block
    w.causal_box.value = True                                            # 6 tiles above the diagonal skipped
    assert w.step_slider.max == 10 and w.step_slider.value == 8 and "6 skipped (causal: on)" in w.text()
    w.length_slider.value = 32                                           # 2 x 2 tiles, 1 skipped: the step clamps
    assert w.step_slider.max == 3 and w.step_slider.value == 3
