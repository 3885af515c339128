"""Lesson 16: the KV cache, cached attention with a bottom-right causal mask, incremental decoding, its check."""
import math

import pytest
import torch
from torch.nn import functional as F

from attn_course import kv_cache
from attn_course.apps import generation as gen
from attn_course.attention import causal_mask
from attn_course.broken.kv_cache_v2 import cached_attention_v2
from attn_course.checks import CheckFailure
from attn_course.checks.kv_cache import check_cached_attention
from attn_course.kv_cache import KVCache, cached_attention, cached_self_attention, kv_cache_bytes

torch.set_num_threads(1)


def make_model(num_layers=2, num_heads=2, positional="learned", max_len=12, dtype=torch.float32, seed=0,
               norm_first=True):
    """A CharTransformer with weights large enough that every position matters (N(0, 0.3))."""
    torch.manual_seed(seed)
    model = gen.CharTransformer(vocab_size=11, d_model=16, num_heads=num_heads, num_layers=num_layers,
                                max_len=max_len, positional=positional).to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    for block in model.blocks:
        block.norm_first = norm_first
    return model


def decode_in_chunks(model, ids, chunks):
    """Logits of ``ids`` read through a KV cache in chunks of the given lengths (prefill first)."""
    cache, logits, start = gen.new_cache(model, ids.shape[0]), [], 0
    for n in chunks:
        logits.append(gen.decode_step(model, ids[:, start:start + n], cache))
        start += n
    assert cache.length == start == ids.shape[1]
    return torch.cat(logits, dim=1)                                            # (B, L, V)


# ------------------------------------------------------------------------------ cached attention

@pytest.mark.parametrize("past_length, L_new", [(5, 1), (0, 4), (6, 3), (1, 1), (0, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cached_attention_is_the_last_rows_of_causal_attention_over_all_positions(past_length, L_new, dtype):
    g = torch.Generator().manual_seed(past_length * 10 + L_new)
    S = past_length + L_new
    q_all, key_all = (torch.randn(2, 3, S, 8, generator=g, dtype=dtype) for _ in range(2))   # (B, H, S, D)
    value_all = torch.randn(2, 3, S, 5, generator=g, dtype=dtype)                           # (B, H, S, Dv)
    expected = F.scaled_dot_product_attention(q_all, key_all, value_all, is_causal=True)[:, :, past_length:]
    got = cached_attention(q_all[:, :, past_length:], key_all, value_all, past_length)
    torch.testing.assert_close(got, expected)
    assert got.shape == (2, 3, L_new, 5) and got.dtype == dtype


def test_cached_attention_worked_example():
    # one new query at position 2 over keys 0..2, all scores equal: the mean of the three values.
    value_all = torch.tensor([[0.0], [3.0], [6.0]])                               # (S, Dv)
    got = cached_attention(torch.zeros(1, 4), torch.zeros(3, 4), value_all, past_length=2)
    torch.testing.assert_close(got, torch.tensor([[3.0]]))


def test_is_causal_true_aligns_top_left_so_one_new_query_sees_only_key_0():
    g = torch.Generator().manual_seed(1)
    query, key_all, value_all = torch.randn(1, 2, 1, 8, generator=g), *torch.randn(2, 1, 2, 6, 8, generator=g)
    wrong = F.scaled_dot_product_attention(query, key_all, value_all, is_causal=True)     # (1, 2, 1, 8)
    torch.testing.assert_close(wrong, value_all[:, :, :1])                         # key 0's value, nothing else
    assert not torch.allclose(wrong, cached_attention(query, key_all, value_all, past_length=5), atol=1e-3)
    torch.testing.assert_close(cached_attention_v2(query, key_all, value_all, 5), wrong)
    # PyTorch's own bottom-right variant agrees with ours.
    from torch.nn.attention.bias import causal_lower_right
    lower_right = F.scaled_dot_product_attention(query, key_all, value_all, attn_mask=causal_lower_right(1, 6))
    torch.testing.assert_close(cached_attention(query, key_all, value_all, 5), lower_right)


def test_top_left_mask_gives_different_logits_after_the_prefill(monkeypatch):
    model, ids = make_model(), torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(2))
    expected = model(ids)
    monkeypatch.setattr(kv_cache, "cached_attention", cached_attention_v2)
    with torch.no_grad():
        got = decode_in_chunks(model, ids, [4] + [1] * 5)
    torch.testing.assert_close(got[:, :4], expected[:, :4], atol=1e-5, rtol=1e-4)   # prefill: past_length = 0
    assert (got[:, 4:] - expected[:, 4:]).abs().amax(-1).min() > 1e-2               # every later step is wrong


def test_cached_attention_rejects_a_key_length_that_is_not_past_plus_new():
    with pytest.raises(ValueError, match=r"past_length \+ L_new = 4 \+ 1.*S = 6"):
        cached_attention(torch.randn(1, 1, 1, 4), torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4), past_length=4)


# ------------------------------------------------------------------------------------ the cache

def test_cache_append_writes_in_place_and_returns_everything_so_far():
    cache = KVCache(num_layers=2, batch_size=2, kv_heads=3, head_dim=4, max_len=7)
    k1, v1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    key_all, value_all = cache.append(0, k1, v1)
    assert key_all.shape == (2, 3, 4, 4) and cache.length == 0                    # length moves on advance only
    assert key_all.data_ptr() == cache.keys[0].data_ptr()                        # a view, no copy
    cache.append(1, k1 * 2, v1 * 2)
    cache.advance(4)
    k2, v2 = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    key_all, value_all = cache.append(0, k2, v2)
    torch.testing.assert_close(key_all, torch.cat([k1, k2], dim=2))
    torch.testing.assert_close(value_all, torch.cat([v1, v2], dim=2))
    torch.testing.assert_close(cache.keys[1][:, :, :4], k1 * 2)                   # the other layer untouched
    assert cache.keys[0].shape == (2, 3, 7, 4)                                   # preallocated, fixed


def test_cache_size_formula_equals_the_bytes_of_the_tensors():
    for dtype in (torch.float32, torch.float64, torch.float16):
        cache = KVCache(num_layers=3, batch_size=2, kv_heads=4, head_dim=8, max_len=10, dtype=dtype)
        held = sum(t.nbytes for t in cache.keys + cache.values)
        assert cache.nbytes == held == kv_cache_bytes(3, 4, 8, 10, batch=2, dtype=dtype)
        assert held == 2 * 3 * 2 * 4 * 8 * 10 * torch.empty((), dtype=dtype).element_size()
    # the lesson's model: 4 layers x 4 heads x 32 dims x 1024 positions x 2 x 4 bytes = 4 MiB
    assert kv_cache_bytes(num_layers=4, kv_heads=4, head_dim=32, length=1024) == 4 * 2 ** 20
    assert gen.new_cache(gen.CharTransformer(65, 128, 4, 4, max_len=1024), 1).nbytes == 4 * 2 ** 20


def test_cache_errors():
    cache = KVCache(num_layers=2, batch_size=1, kv_heads=2, head_dim=4, max_len=5)
    cache.append(0, torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4))               # exactly full: fine
    cache.advance(5)
    with pytest.raises(ValueError, match=r"full: 5 positions cached \+ 1 new > max_len=5"):
        cache.append(0, torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
    with pytest.raises(ValueError, match="cannot advance"):
        cache.advance(1)
    cache = KVCache(num_layers=2, batch_size=1, kv_heads=2, head_dim=4, max_len=5)
    with pytest.raises(ValueError, match=r"\(B, H_kv, L_new, D\) = \(1, 2, L_new, 4\)"):
        cache.append(0, torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4))
    with pytest.raises(ValueError, match="key and value must both"):
        cache.append(0, torch.randn(1, 2, 1, 4), torch.randn(1, 2, 2, 4))
    with pytest.raises(ValueError, match="dtype torch.float32; got torch.float64"):
        cache.append(0, torch.randn(1, 2, 1, 4, dtype=torch.float64), torch.randn(1, 2, 1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"layer must lie in 0..1; got 2"):
        cache.append(2, torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
    with pytest.raises(ValueError, match="positive ints"):
        KVCache(num_layers=0, batch_size=1, kv_heads=2, head_dim=4, max_len=5)


def test_cached_self_attention_equals_causal_multi_head_attention():
    model = make_model()
    attn, x = model.blocks[0].self_attn, torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(3))
    expected, _ = attn(x, is_causal=True)
    cache = KVCache(num_layers=1, batch_size=2, kv_heads=2, head_dim=8, max_len=7)
    outputs = []
    for start, stop in [(0, 3), (3, 4), (4, 7)]:
        outputs.append(cached_self_attention(attn, x[:, start:stop], cache, layer=0))
        cache.advance(stop - start)
    torch.testing.assert_close(torch.cat(outputs, dim=1), expected, atol=1e-5, rtol=1e-4)


# -------------------------------------------------------------------------- incremental decoding

CONFIGS = [  # (num_layers, num_heads, positional, batch, chunks), chunks[0] the prefill
    (1, 1, "learned", 1, [1] * 12),
    (2, 2, "learned", 3, [5] + [1] * 7),
    (3, 4, "sinusoidal", 2, [5] + [1] * 7),
    (2, 2, "sinusoidal", 1, [12]),
    (2, 4, "learned", 2, [3, 1, 4, 1, 1, 2]),
]


@pytest.mark.parametrize("num_layers, num_heads, positional, batch, chunks", CONFIGS)
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_cached_logits_equal_the_full_forward_position_by_position(num_layers, num_heads, positional, batch,
                                                                    chunks, dtype, atol):
    model = make_model(num_layers, num_heads, positional, dtype=dtype)
    ids = torch.randint(0, 11, (batch, sum(chunks)), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(ids)                                                  # (B, L, V)
        got = decode_in_chunks(model, ids, chunks)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, atol=atol, rtol=atol)


def test_cached_logits_equal_the_full_forward_for_post_ln_blocks():
    model = make_model(norm_first=False)
    ids = torch.randint(0, 11, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(decode_in_chunks(model, ids, [4] + [1] * 6), model(ids), atol=1e-5, rtol=1e-4)


def test_new_cache_follows_the_model():
    model = make_model(num_layers=3, num_heads=4, dtype=torch.float64)
    cache = gen.new_cache(model, batch_size=2)
    assert (cache.num_layers, cache.max_len, cache.dtype, cache.length) == (3, 12, torch.float64, 0)
    assert cache.keys[0].shape == (2, 4, 12, 4)
    assert gen.new_cache(model, 1, max_len=5, dtype=torch.float32).keys[2].shape == (1, 4, 5, 4)


def test_decode_step_refuses_positions_past_max_len():
    model = make_model(max_len=6)
    cache = gen.new_cache(model, 1)
    with torch.no_grad():
        gen.decode_step(model, torch.zeros(1, 6, dtype=torch.long), cache)
        with pytest.raises(ValueError, match=r"cache.length \+ L_new <= max_len=6.*after 6 cached"):
            gen.decode_step(model, torch.zeros(1, 1, dtype=torch.long), cache)


@pytest.mark.parametrize("positional, seed", [("learned", 0), ("sinusoidal", 2)])  # seeds whose greedy text varies
@pytest.mark.parametrize("temperature, top_k", [(1.0, 1), (1.0, None), (0.8, 5)])
def test_generate_with_the_cache_gives_the_same_ids(positional, seed, temperature, top_k):
    model = make_model(positional=positional, max_len=16, seed=seed)
    prompt = torch.randint(0, 11, (2, 3), generator=torch.Generator().manual_seed(6))
    runs = [gen.generate(model, prompt, 14, temperature, top_k, torch.Generator().manual_seed(7), use_cache=c)
            for c in (False, True)]
    assert runs[0].shape == (2, 17)
    assert torch.equal(runs[0], runs[1])
    assert len(set(runs[0][:, 3:].flatten().tolist())) > 1                     # not one id repeated


def test_generate_with_the_cache_refuses_more_than_max_len_positions():
    model, prompt = make_model(max_len=8), torch.zeros(1, 3, dtype=torch.long)
    assert gen.generate(model, prompt, 6, top_k=1, use_cache=True).shape == (1, 9)   # reads 3 + 6 - 1 = 8: fits
    with pytest.raises(ValueError, match=r"prompt \+ max_new_tokens - 1 = 9 positions, more than max_len=8"):
        gen.generate(model, prompt, 7, top_k=1, use_cache=True)
    assert gen.generate(model, prompt, 7, top_k=1).shape == (1, 10)              # the sliding window goes on
    assert torch.equal(gen.generate(model, prompt, 0, use_cache=True), prompt)


def test_decoding_speed_reports_both_ways_and_the_same_ids():
    rows = gen.decoding_speed(make_model(max_len=16), lengths=(8, 16), new_tokens=None)
    assert [r["tokens"] for r in rows] == [8, 16] and all(r["same_ids"] for r in rows)
    for r in rows:
        assert r["no_cache"] > 0 and r["cache"] > 0
        assert math.isclose(r["speedup"], r["cache"] / r["no_cache"], rel_tol=1e-9)
    assert gen.decoding_speed(make_model(max_len=16), lengths=(16,), new_tokens=4)[0]["new_tokens"] == 4
    with pytest.raises(ValueError, match="max_len=16"):
        gen.decoding_speed(make_model(max_len=16), lengths=(17,))
    with pytest.raises(ValueError, match="new_tokens=0"):
        gen.decoding_speed(make_model(max_len=16), lengths=(8,), new_tokens=0)


# ------------------------------------------------------------------------------------ the check

def cached_attention_shifted_causal_mask(query, key_all, value_all, past_length):
    S = key_all.shape[-2]
    attn_mask = causal_mask(S)[past_length:]                                     # rows past..S-1 of (S, S)
    attn_scores = query @ key_all.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (..., L_new, S)
    attn_weights = torch.softmax(attn_scores.masked_fill(~attn_mask, float("-inf")), dim=-1)
    return attn_weights @ value_all                                              # (..., L_new, Dv)


def cached_attention_loop_float64(query, key_all, value_all, past_length):
    rows = []
    for i in range(query.shape[-2]):                                             # new query i sees 0..past+i
        keys, values = key_all[..., :past_length + i + 1, :].double(), value_all[..., :past_length + i + 1, :].double()
        scores = (query[..., i:i + 1, :].double() @ keys.transpose(-2, -1)) / math.sqrt(query.shape[-1])
        rows.append(torch.softmax(scores, dim=-1) @ values)                      # (..., 1, Dv)
    return torch.cat(rows, dim=-2).to(query.dtype)


@pytest.mark.parametrize("fn", [cached_attention, cached_attention_shifted_causal_mask, cached_attention_loop_float64])
def test_check_passes_correct_implementations(fn):
    for thorough in (False, True):
        check_cached_attention(fn, thorough=thorough)


def test_check_catches_the_top_left_mask_and_says_which_keys():
    for thorough in (False, True):
        with pytest.raises(CheckFailure) as info:
            check_cached_attention(cached_attention_v2, thorough=thorough)
        assert info.value.kind == "mask"
        message = str(info.value)
        assert "the new query at position 5 should attend to keys 0..5" in message
        assert "attending to key 0 only" in message and "top-left" in message and "is_causal=True" in message


def test_check_messages_for_other_mistakes():
    def no_mask(query, key_all, value_all, past_length):
        return F.scaled_dot_product_attention(query, key_all, value_all)

    def every_position(query, key_all, value_all, past_length):
        return F.scaled_dot_product_attention(key_all, key_all, value_all, is_causal=True)

    def too_sharp(query, key_all, value_all, past_length):
        return cached_attention(query * 2, key_all, value_all, past_length)

    check_cached_attention(no_mask)                         # one new query may see every key: quick case passes
    with pytest.raises(CheckFailure, match=r"\[mask\].*position 6 should attend to keys 0..6.*keys 0..8, later"):
        check_cached_attention(no_mask, thorough=True)
    with pytest.raises(CheckFailure, match=r"\[shape\].*one row per key"):
        check_cached_attention(every_position)
    with pytest.raises(CheckFailure, match=r"\[scale\].*multiplied by 2"):
        check_cached_attention(too_sharp)


def test_check_forbids_the_reference():
    assert [label for label, _ in check_cached_attention.forbidden] == ["attn_course.kv_cache.cached_attention"]
