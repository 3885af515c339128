# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [raw]
# # ASSIGNMENT CONFIG
# name: 16_attention_at_scale
# init_cell: true
# check_all_cell: false
# export_cell: false
# run_tests: true
# solutions_pdf: false
# template_pdf: false
# tests:
#   files: false
#   ok_format: false
# generate:
#   pdf: false
#   show_stdout: true

# %% [markdown]
# # Lesson 16 — Attention at scale: memory, the online softmax, the KV cache and grouped-query attention
#
# **Learning goals.** After this lesson you can
# 1. measure why plain attention is **quadratic in memory**: the $(L, S)$ weights, in bytes, against $L$;
# 2. derive the **online softmax** (Milakov & Gimelshein 2018) and use it, as **FlashAttention** does
#    (Dao et al. 2022), to compute *exact* attention tile by tile without ever holding the $(L, S)$ matrix;
# 3. build a **KV cache** for the course's causal transformer, prove that cached decoding gives the same
#    logits, and measure what it saves;
# 4. explain **grouped-query** and **multi-query attention** (Ainslie et al. 2023; Shazeer 2019) and the
#    cache memory they save, and **sliding-window attention** as a mask (Beltagy et al. 2020; Jiang et al. 2023);
# 5. find three bugs that real implementations of these ideas have shipped.
#
# Shape legend (the same in every lesson): **B** batch, **L** query length, **S** key/value length,
# **H** query heads, **H_kv** key/value heads, **D** head_dim, **E** d_model, **V** vocabulary.
# Nothing here trains: every figure is measured on the CPU in a few seconds.

# %%
# %matplotlib inline
import math
import time

import matplotlib.pyplot as plt
import torch
from torch.nn import functional as F

import attn_course as ac
from attn_course import flash, gqa, kv_cache
from attn_course.apps import generation
from attn_course.widgets import TilingExplorer

torch.set_printoptions(precision=4, sci_mode=False)
torch.set_num_threads(1)   # small tiles and one token at a time: one thread is faster on 2 cores (measured)
device = ac.get_device()   # ATTN_COURSE_DEVICE = cpu | cuda | auto; the memory measurements run on the CPU
g = ac.seed_everything(0)

# %% [markdown]
# ## 1. What plain attention costs
#
# Lesson 03 computed attention as written in the paper:
# $\mathrm{softmax}(QK^\top/\sqrt{D})\,V$. The scores and the weights are $(L, S)$ matrices: for one
# head and $L = S = 4096$ that is $4096^2 \times 4$ bytes $= 64$ MiB of float32, *per matrix*, per head,
# per sequence. Doubling the context quadruples it.
#
# We measure rather than believe. `flash.peak_memory(fn, ...)` runs `fn` and reports the most bytes
# PyTorch's CPU allocator had handed out at once while it ran (it reads the allocator's own events
# through `torch.profiler`). We compare the course's `ac.scaled_dot_product_attention`, which builds the
# matrices, with two functions that do not: `flash.tiled_attention` (section 3, ours) and PyTorch's fused
# `F.scaled_dot_product_attention`. One head, $D = 64$, float32.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
lengths = [256, 512, 1024, 2048, 4096]
memory = {"plain (ac.scaled_dot_product_attention)": [], "tiled (flash.tiled_attention)": [],
          "fused (F.scaled_dot_product_attention)": []}
for L in lengths:
    q, k, v = (torch.randn(1, 1, L, 64, generator=g) for _ in range(3))         # (B, H, L, D), on the CPU
    for name, fn, kwargs in [("plain (ac.scaled_dot_product_attention)", ac.scaled_dot_product_attention, {}),
                             ("tiled (flash.tiled_attention)", flash.tiled_attention, {"block_q": 128, "block_k": 128}),
                             ("fused (F.scaled_dot_product_attention)", F.scaled_dot_product_attention, {})]:
        memory[name].append(flash.peak_memory(fn, q, k, v, **kwargs)[1])
print(f"{'L = S':>6s} {'(L, S) float32':>15s}" + "".join(f"{name.split()[0]:>12s}" for name in memory))
for i, L in enumerate(lengths):
    print(f"{L:6d} {4 * L * L / 2**20:12.2f} MiB" + "".join(f"{memory[name][i] / 2**20:8.2f} MiB" for name in memory))
for i, L in enumerate(lengths):                     # plain: three (L, S) float32 matrices, and a few bytes more
    assert 3 * 4 * L * L <= memory["plain (ac.scaled_dot_product_attention)"][i] < 3 * 4 * L * L + 2**16
assert max(memory["tiled (flash.tiled_attention)"]) < 4 * 2**20 > max(memory["fused (F.scaled_dot_product_attention)"])

# %% [markdown]
# Plain attention's peak is three $(L, S)$ float32 matrices at every length (the notebook asserts it:
# the scaled scores, the weights, and one temporary of the same size on the way): 192 MiB at
# $L = 4096$, for one head of one sentence. The tiled version needs 3.09 MiB there, PyTorch's fused kernel
# 1.58 MiB (on 2 CPU cores with PyTorch 2.13; the exact bytes of the last two vary a little with the
# version and the number of threads). On a log-log plot a power law $y = c L^p$ is a straight line of
# slope $p$:

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(6.4, 3.8))
slopes = {}
for name, values in memory.items():
    x, y = torch.tensor(lengths).log2(), torch.tensor(values, dtype=torch.float64).log2()
    slopes[name] = (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()   # least squares
    ax.loglog(lengths, values, marker="o", label=f"{name}: slope {slopes[name]:.2f}")
ax.set_xscale("log", base=2)
ax.set_xticks(lengths, [str(L) for L in lengths])
ax.minorticks_off()
ax.set_xlabel("sequence length L = S")
ax.set_ylabel("peak bytes")
ax.set_title("Peak memory of one attention call (one head, D = 64, float32)")
ax.legend(fontsize=8)
plt.show()
for name, slope in slopes.items():
    print(f"{name}: peak bytes grow as L^{slope:.2f}")
assert slopes["plain (ac.scaled_dot_product_attention)"] > 1.95 and slopes["tiled (flash.tiled_attention)"] < 1.1

# %% [markdown]
# Plain attention grows as $L^{2.00}$: quadratic. Tiled attention grows as $L^{0.81}$ over this range, and
# at most linearly: its memory is the output and the running state, linear in $L$, plus tiles of a fixed
# $128 \times 128$, which still weigh at $L = 256$ and flatten the start of the line. Between 2048 and 4096
# it doubles with $L$. The slope is the lesson; but how does a softmax get computed without its whole row?
#
# ## 2. The online softmax
#
# A softmax row needs its maximum (for stability, lesson 03) and its sum before any weight is known:
# $\mathrm{softmax}(x)_j = e^{x_j - m} / \ell$ with $m = \max_j x_j$ and $\ell = \sum_j e^{x_j - m}$.
# **Milakov & Gimelshein (2018)** noticed that both can be kept *running*, in one pass. Read the row in
# blocks; after each block, with $m$ and $\ell$ the statistics so far and $m' = \max(m, \max \text{block})$:
#
# $$\ell' = e^{m - m'}\,\ell + \sum_{j \in \text{block}} e^{x_j - m'}.$$
#
# When the maximum grows, everything summed so far was computed against the old, smaller $m$: the factor
# $e^{m - m'} < 1$ re-expresses it against the new one. At the end $m$ is the row's maximum and $\ell$ its
# sum. Watch it on eight numbers read three at a time:

# %%
x = torch.tensor([1.0, 0.5, 2.0, -1.0, 4.0, 3.5, 0.0, 4.5])
m, l = torch.tensor(float("-inf")), torch.tensor(0.0)
for start in range(0, len(x), 3):
    block = x[start:start + 3]
    m_new = torch.maximum(m, block.max())
    l = torch.exp(m - m_new) * l + torch.exp(block - m_new).sum()
    print(f"block {block.tolist()}: max {m.item():5.2f} -> {m_new.item():4.2f}, rescale the old sum by "
          f"exp({m.item():.2f} - {m_new.item():.2f}) = {torch.exp(m - m_new).item():.4f}; running sum l = {l.item():.4f}")
    m = m_new
print(f"one pass: m = {m.item()}, l = {l.item():.4f};  m + log l = {(m + l.log()).item():.6f}, "
      f"torch.logsumexp = {torch.logsumexp(x, 0).item():.6f}")
torch.testing.assert_close(flash.online_softmax(x, block_size=3), torch.softmax(x, dim=0))
print("flash.online_softmax(x, block_size=3) equals torch.softmax(x): True")

# %% [markdown]
# FlashAttention goes one step further. Attention does not need the weights themselves, only
# $\sum_j w_j v_j$. So it also keeps a running **unnormalised output** $\mathrm{acc} = \sum_j e^{x_j - m} v_j$,
# rescaled by the same factor whenever $m$ grows, and divides by $\ell$ once at the end
# (FlashAttention-2, Dao 2023, Algorithm 1). For one block of scores $s$ (shape $(L_b, S_b)$) and values
# $v$ ($(S_b, D_v)$):
#
# $$m' = \max(m, \mathrm{rowmax}\, s), \quad p = e^{s - m'}, \quad \ell' = e^{m - m'} \ell + \mathrm{rowsum}\, p,
# \quad \mathrm{acc}' = e^{m - m'}\, \mathrm{acc} + p\, v.$$
#
# ### Exercise 1 — one block of the online softmax
#
# Write `online_softmax_update(m, l, acc, attn_scores, value)` for running max `m` $(\dots, L, 1)$,
# running sum `l` $(\dots, L, 1)$, output `acc` $(\dots, L, D_v)$, a block's `attn_scores`
# $(\dots, L, S_b)$ (already scaled and masked with $-\infty$) and its `value` $(\dots, S_b, D_v)$,
# returning the new `(m, l, acc)`. The start is $m = -\infty$, $\ell = 0$, $\mathrm{acc} = 0$.
# One trap: a row whose scores so far are all $-\infty$ (masked) has $m' = -\infty$, and
# $e^{-\infty - (-\infty)}$ is NaN. Subtract `torch.where(torch.isneginf(m_new), 0.0, m_new)` instead of
# `m_new`: such a row then keeps $\ell = 0$ and $\mathrm{acc} = 0$.

# %% [raw]
# # BEGIN QUESTION
# name: q1_online_softmax_update
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def online_softmax_update(m, l, acc, attn_scores, value):
    """Fold one key block into the running (m, l, acc): returns (m_new (..., L, 1), l_new (..., L, 1), acc_new (..., L, Dv))."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write online_softmax_update")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    m_new = torch.maximum(m, attn_scores.amax(dim=-1, keepdim=True))   # (..., L, 1)
    m_safe = torch.where(torch.isneginf(m_new), 0.0, m_new)             # a fully masked row subtracts 0
    rescale = torch.exp(m - m_safe)                                     # (..., L, 1): exp(old max - new max)
    p = torch.exp(attn_scores - m_safe)                                 # (..., L, Sb)
    l_new = rescale * l + p.sum(dim=-1, keepdim=True)                   # (..., L, 1)
    acc_new = rescale * acc + p @ value                                 # (..., L, Sb) @ (..., Sb, Dv) -> (..., L, Dv)
    return m_new, l_new, acc_new
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(online_softmax_update):
    from attn_course.checks import check_online_softmax_update
    check_online_softmax_update(online_softmax_update)

test_q1_public(online_softmax_update)

# %%
# HIDDEN
def test_q1_hidden(online_softmax_update):
    from attn_course.checks import check_online_softmax_update
    check_online_softmax_update(online_softmax_update, thorough=True)

test_q1_hidden(online_softmax_update)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. FlashAttention's tiling
#
# `flash.tiled_attention` is FlashAttention's loop (Dao et al. 2022, Algorithm 1, in the order of
# FlashAttention-2): for each block of `block_q` queries, start from $m = -\infty, \ell = 0, \mathrm{acc} = 0$;
# for each block of `block_k` keys, compute that tile's scores, mask them, and fold them in with the
# package's `flash.online_softmax_update` (the reference of Exercise 1; your function is not needed from
# here on); finally divide by $\ell$. With a causal mask the key blocks entirely above the diagonal are
# never read. Its loop fits on one screen:

# %%
import inspect

source = inspect.getsource(flash.tiled_attention)
print(source[source.index("    q = query"):])

# %% [markdown]
# It is *exact*, not an approximation: equal to PyTorch's `F.scaled_dot_product_attention` to float32
# rounding, with block sizes that do not divide the lengths, with a causal mask, and with a padding mask.

# %%
B, H, L, S, D = 2, 4, 300, 300, 32
q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (L, S, S))
key_padding_mask = ac.padding_mask([300, 217], S)                       # (B, S), True = padding
attn_mask = ac.key_padding_to_attn_mask(key_padding_mask)[:, None]      # (B, 1, 1, S), True = may attend
for case, kwargs in [("no mask", {}), ("causal", {"is_causal": True}), ("padding", {"attn_mask": attn_mask})]:
    ours = flash.tiled_attention(q, k, v, block_q=64, block_k=48, **kwargs)
    theirs = F.scaled_dot_product_attention(q, k, v, **kwargs)
    print(f"{case:8s}: largest |tiled - F.scaled_dot_product_attention| = {(ours - theirs).abs().max().item():.1e}")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

# %% [markdown]
# Memory was section 1's table. Time is another matter. Our loop runs in Python, one small matrix
# product per tile; PyTorch's fused kernel runs the same idea in C++ with vectorised tiles. One run,
# three functions, the same inputs (the ratios vary from machine to machine; the order does not):

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
def seconds(fn, *args, repeat=3, **kwargs):
    fn(*args, **kwargs)                                                  # warm up
    start = time.perf_counter()
    for _ in range(repeat):
        fn(*args, **kwargs)
    return (time.perf_counter() - start) / repeat

for L in [1024, 4096]:
    q, k, v = (torch.randn(1, 1, L, 64, generator=g) for _ in range(3))
    t = {"plain": seconds(ac.scaled_dot_product_attention, q, k, v),
         "tiled": seconds(flash.tiled_attention, q, k, v, block_q=128, block_k=128),
         "fused": seconds(F.scaled_dot_product_attention, q, k, v)}
    print(f"L = {L}: plain {t['plain'] * 1e3:.0f} ms, tiled {t['tiled'] * 1e3:.0f} ms, fused {t['fused'] * 1e3:.0f} ms;"
          f"  tiled / fused = {t['tiled'] / t['fused']:.0f}x, plain / fused = {t['plain'] / t['fused']:.0f}x")

# %% [markdown]
# Read the three times printed above (they change from run to run and machine to machine). Our loop
# pays Python's overhead once per tile: 64 tiles at $L = 1024$, 1,024 at $L = 4096$. Plain attention
# pays for writing and reading its $(L, S)$ matrices, 12 MiB at $L = 1024$ and 192 MiB at $L = 4096$,
# which grows faster; so the longer the sequence, the better the tiled loop fares against it. PyTorch's
# fused kernel is the same tiling in C++, without the Python overhead. On a GPU the memory traffic is the
# whole point of FlashAttention: attention is limited by reads and writes of the GPU's memory, not by
# arithmetic, and tiles that stay in the chip's fast on-chip memory save the $(L, S)$ round trips (Dao et
# al. 2022, §3: "IO-aware").
#
# ## 4. Walk the tiles yourself
#
# Move **tiles read** to step through the loop; change the length, the block size, and the causal switch.
# The left chart shows the scores of the tiles read so far (the orange frame is the current one, hatched
# tiles are skipped by the causal loop). The right one follows the first row of the current query block:
# how far its output so far, $\mathrm{acc}/\ell$, is from the exact output after each key block. It falls
# to rounding error at the block's last tile, never before: every key can change every weight.

# %% tags=["nbval-ignore-output", "otter_ignore"]
explorer = TilingExplorer(length=64, block=16)
explorer

# %% [markdown]
# The widget is plain Python underneath; setting its controls is what moving them does:

# %% tags=["otter_ignore"]
explorer.step_slider.value = 6
print(explorer.text())
with explorer.hold():
    explorer.causal_box.value = True
    explorer.step_slider.value = explorer.step_slider.max
print(explorer.text())

# %% [markdown]
# ## 5. The KV cache
#
# A causal language model generates one token at a time (lesson 15). Without a cache every step runs the
# whole context again: at step $t$ it recomputes the keys and values of positions $0..t-1$, although the
# causal mask guarantees they cannot have changed (no position sees the future). A **KV cache** keeps
# each layer's keys and values; each step computes $q, k, v$ for the *new* position only, appends $k, v$,
# and lets the one new query attend to everything cached (Pope et al. 2022, §3.1). Attention per step
# drops from $O(t^2)$ to $O(t)$, the projections and feed-forward layers from $O(t)$ to $O(1)$.
#
# `kv_cache.KVCache` preallocates, per layer, keys and values of shape $(B, H_{kv}, \text{max\_len}, D)$ and
# fills them as decoding goes; `generation.decode_step(model, ids_new, cache)` runs lesson 15's
# `CharTransformer` on the new ids only. We use an untrained model with a long context: speed and equality
# do not depend on training.

# %% tags=["otter_ignore"]
torch.manual_seed(0)
lm = generation.CharTransformer(vocab_size=65, d_model=128, num_heads=4, num_layers=4, max_len=1024).eval()
ids = torch.randint(0, 65, (2, 40), generator=g)                         # (B=2, 40) token ids
with torch.no_grad():
    full = lm(ids)                                                       # (B, 40, V): the whole context at once
    cache = generation.new_cache(lm, batch_size=2)
    steps = [generation.decode_step(lm, ids[:, :30], cache)]             # prefill: the 30-token prompt
    for t in range(30, 40):
        steps.append(generation.decode_step(lm, ids[:, t:t + 1], cache))  # then one token at a time
cached = torch.cat(steps, dim=1)                                         # (B, 40, V)
print(f"cache length {cache.length}; largest |cached logits - full logits| = {(cached - full).abs().max().item():.1e}")
torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)

# %% [markdown]
# The same logits, so the same text: generation with and without the cache gives identical ids with the
# same seeded generator. And the time per token:

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
prompt = torch.randint(0, 65, (1, 8), generator=g)
same = torch.equal(generation.generate(lm, prompt, 60, generator=torch.Generator().manual_seed(1)),
                   generation.generate(lm, prompt, 60, generator=torch.Generator().manual_seed(1), use_cache=True))
print(f"60 sampled tokens, with and without the cache: identical ids: {same}")
speed = generation.decoding_speed(lm, lengths=(128, 512, 1024), new_tokens=16)
for row in speed:
    print(f"context {row['tokens']:5d}: {row['no_cache']:7.1f} tokens/s without the cache, "
          f"{row['cache']:7.1f} with it: {row['speedup']:5.1f}x")
assert same and all(row["same_ids"] for row in speed)
assert speed[1]["speedup"] >= 3, "the cache should be at least 3x faster at a context of 512 tokens"

# %% [markdown]
# Each row times the last 16 tokens of a generation that reaches 128, 512 or 1024 tokens of context
# (the cached run pays for reading its prompt too): what a long generation slows down to. Without the cache each token costs a forward pass over the whole context, so
# tokens per second fall as the context grows; with it a token costs one position's projections and one
# row of attention. The printed speed-ups change from run to run, but the cache's work per token grows
# with the context and the full pass's grows faster, so the gap widens with the context; the notebook
# asserts at least 3x at 512 tokens.
#
# The price is memory. For every layer, the keys and the values of every head and position:
#
# $$\text{bytes} = 2 \times \text{layers} \times \text{batch} \times H_{kv} \times D \times \text{length} \times \text{bytes per number}.$$

# %% tags=["otter_ignore"]
formula = kv_cache.kv_cache_bytes(num_layers=4, kv_heads=4, head_dim=32, length=1024, batch=2)
tensors = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
print(f"formula: 2 x 4 layers x 2 sequences x 4 heads x 32 x 1024 positions x 4 bytes = {formula:,} bytes")
print(f"the cache's own tensors: {tensors:,} bytes;  cache.nbytes = {cache.nbytes:,}")
assert formula == tensors == cache.nbytes

# %% [markdown]
# 8 MiB for our toy. For a real model the same formula gives gigabytes. Llama 3 8B has 32 layers,
# 32 query heads of $D = 128$ and **8** key/value heads; at 8,192 tokens in 16-bit floats:

# %%
for name, kv_heads in [("multi-head (H_kv = 32)", 32), ("grouped-query (H_kv = 8), as shipped", 8), ("multi-query (H_kv = 1)", 1)]:
    size = kv_cache.kv_cache_bytes(num_layers=32, kv_heads=kv_heads, head_dim=128, length=8192, dtype=torch.float16)
    print(f"{name:38s}: {size / 2**30:5.2f} GiB per sequence")

# %% [markdown]
# ### Exercise 2 — one cached decoding step
#
# The heart of a cached step: `cached_attention(query, key_all, value_all, past_length)` for $L_{new}$
# new queries `query` $(B, H, L_{new}, D)$ at positions `past_length` $..$ `past_length` $+ L_{new} - 1$,
# and all keys and values so far, `key_all`, `value_all` $(B, H, S, D)$ with $S = $ `past_length` $+ L_{new}$.
# New query $i$ may attend to keys $0 ..$ `past_length` $+ i$ (the causal mask, aligned **bottom-right**).
# Return the context $(B, H, L_{new}, D)$. Build the boolean `attn_mask` $(L_{new}, S)$, True = may attend,
# and call `ac.scaled_dot_product_attention` (or PyTorch's) with it. Think before you reach for
# `is_causal=True`: where does PyTorch put the diagonal when $L \ne S$?

# %% [raw]
# # BEGIN QUESTION
# name: q2_cached_attention
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def cached_attention(query, key_all, value_all, past_length):
    """New queries (B, H, L_new, D) at positions past_length.. over all cached keys/values (B, H, S, D) -> (B, H, L_new, D)."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write cached_attention")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    L_new, S = query.shape[-2], key_all.shape[-2]
    positions = torch.arange(past_length, past_length + L_new, device=query.device)   # (L_new,) where each query sits
    attn_mask = torch.arange(S, device=query.device) <= positions[:, None]             # (L_new, S), True = may attend
    return ac.scaled_dot_product_attention(query, key_all, value_all, attn_mask=attn_mask)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(cached_attention):
    from attn_course.checks import check_cached_attention
    check_cached_attention(cached_attention)

test_q2_public(cached_attention)

# %%
# HIDDEN
def test_q2_hidden(cached_attention):
    from attn_course.checks import check_cached_attention
    check_cached_attention(cached_attention, thorough=True)

test_q2_hidden(cached_attention)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 6. Grouped-query and multi-query attention
#
# Most of that cache is keys and values, one pair per head. **Multi-query attention** (Shazeer 2019)
# keeps $H$ query heads but a single key/value head shared by all; **grouped-query attention** (Ainslie
# et al. 2023) takes the middle road: $H_{kv}$ key/value heads, each shared by a group of
# $r = H / H_{kv}$ consecutive query heads. Query head $h$ reads key/value head $\lfloor h / r \rfloor$.
# The cache shrinks by $H / H_{kv}$ (4x for Llama 3 8B above), and so does the memory traffic of every
# decoding step.
#
# In code, the key/value heads are repeated to line up with the query heads, `repeat_kv`
# (`repeat_interleave` on the head axis), then attention runs as usual. PyTorch does the same inside
# `F.scaled_dot_product_attention(..., enable_gqa=True)`, and so, since this lesson, does the course's
# `ac.scaled_dot_product_attention`, which also broadcasts batch dimensions as PyTorch does:

# %%
q = torch.randn(2, 8, 5, 16, generator=g)                                # (B, H=8, L, D)
k, v = (torch.randn(2, 2, 7, 16, generator=g) for _ in range(2))         # (B, H_kv=2, S, D)
ours = ac.scaled_dot_product_attention(q, k, v, enable_gqa=True)
theirs = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
by_hand = ac.scaled_dot_product_attention(q, gqa.repeat_kv(k, 4), gqa.repeat_kv(v, 4))
print(f"enable_gqa=True: ours vs PyTorch {(ours - theirs).abs().max().item():.1e}; "
      f"repeat_kv by hand vs PyTorch {(by_hand - theirs).abs().max().item():.1e}")
torch.testing.assert_close(ours, theirs)
torch.testing.assert_close(by_hand, theirs)
shared = torch.randn(8, 5, 16, generator=g)                             # (H, L, D): one query set for every sentence
print("broadcast: query", tuple(shared.shape), "with key", tuple(q.shape), "->",
      tuple(ac.scaled_dot_product_attention(shared, q, q).shape))
torch.testing.assert_close(ac.scaled_dot_product_attention(shared, q, q), F.scaled_dot_product_attention(shared, q, q))

# %% [markdown]
# `gqa.GroupedQueryAttention(d_model, num_heads, num_kv_heads)` is the module: `k_proj` and `v_proj` map
# $E$ to $H_{kv} D$ instead of $H D$. We check it against PyTorch on its own projections, and count what
# it saves:

# %%
for num_kv_heads in [8, 2, 1]:
    torch.manual_seed(0)
    attn = gqa.GroupedQueryAttention(d_model=128, num_heads=8, num_kv_heads=num_kv_heads)
    x = torch.randn(2, 10, 128, generator=g)                              # (B, L, E)
    out, _ = attn(x, is_causal=True)
    qh = attn.q_proj(x).view(2, 10, 8, 16).transpose(1, 2)               # (B, H, L, D)
    kh, vh = (p(x).view(2, 10, num_kv_heads, 16).transpose(1, 2) for p in (attn.k_proj, attn.v_proj))
    expected = attn.out_proj(F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, enable_gqa=True)
                             .transpose(1, 2).reshape(2, 10, 128))
    torch.testing.assert_close(out, expected)
    kv_params = sum(p.numel() for p in (*attn.k_proj.parameters(), *attn.v_proj.parameters()))
    cache_bytes = kv_cache.kv_cache_bytes(num_layers=1, kv_heads=num_kv_heads, head_dim=16, length=1024)
    print(f"H = 8, H_kv = {num_kv_heads}: equal to PyTorch's enable_gqa; key/value parameters {kv_params:6,}; "
          f"cache per layer at 1024 tokens {cache_bytes / 2**10:5.0f} KiB (/{8 // num_kv_heads})")

# %% [markdown]
# ## 7. Sliding-window attention: a mask, and how far information travels
#
# Another way to bound the cost: let each position attend only to the last $W$ positions
# (Longformer's local attention, Beltagy et al. 2020; Mistral 7B uses $W = 4096$, Jiang et al. 2023).
# It is just a mask, so everything above works unchanged, tiled attention included. Memory and time per
# layer become $O(L W)$. What is lost? Within one layer position $i$ sees $i - W + 1 .. i$ only. But layer
# 2 reads layer 1's outputs, which already mixed their own windows: after $n$ layers information can come
# from up to $n (W - 1)$ positions back. We compute that "who can influence whom" matrix: the boolean
# product of the mask with itself, once per layer.

# %%
L, W = 24, 4
window = ac.causal_mask(L) & ~ac.causal_mask(L).tril(-W)                  # (L, L): keys i-W+1 .. i, True = may attend
q, k, v = (torch.randn(1, 1, L, 8, generator=g) for _ in range(3))
torch.testing.assert_close(flash.tiled_attention(q, k, v, attn_mask=window, block_q=8, block_k=8),
                           F.scaled_dot_product_attention(q, k, v, attn_mask=window))
reach, reaches = window.clone(), {}
for layers in range(1, 5):
    reaches[layers] = reach.clone()
    reach = (reach.float() @ window.float() > 0)                           # one more layer: reach through any key
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for ax, (layers, r) in zip(axes, reaches.items()):
    ax.imshow(r.numpy(), cmap="Blues")
    ax.set_title(f"{layers} layer{'s' if layers > 1 else ''}: back {int((r[-1]).sum()) - 1} positions", fontsize=9)
    ax.set_xlabel("position j that can reach i")
axes[0].set_ylabel("position i")
plt.suptitle(f"Sliding window W = {W}: after n layers, which positions j can influence position i")
plt.show()
for layers, r in reaches.items():
    print(f"{layers} layer(s): the last position is reached from {int(r[-1].sum())} positions "
          f"(n (W - 1) + 1 = {layers * (W - 1) + 1})")
    assert int(r[-1].sum()) == layers * (W - 1) + 1

# %% [markdown]
# The reach grows by $W - 1 = 3$ positions per layer: 4, 7, 10, 13. With Mistral's $W = 4096$ and 32
# layers, the last layer can in principle draw on about 131,000 positions back while no layer ever holds
# more than 4,096 keys per query, and the KV cache can stop at $W$ positions (a rolling buffer).
#
# ## 8. Bug hunt
#
# Three colleagues implemented this lesson's ideas. Each function has the docstring of the reference,
# word for word, and runs without an error.
#
# 1. `online_softmax_update_v2`: tiled attention built on it;
# 2. `cached_attention_v2`: cached decoding built on it;
# 3. `repeat_kv_v2`: grouped-query attention built on it.
#
# Compare each with the reference on the same inputs:

# %% tags=["otter_ignore"]
from attn_course.broken import cached_attention_v2, online_softmax_update_v2, repeat_kv_v2

q, k, v = (torch.randn(1, 1, 64, 16, generator=g) for _ in range(3))    # (B, H, L = S = 64, D = 16)
scores = q @ k.transpose(-2, -1) / 4                                     # (1, 1, 64, 64), 1 / sqrt(16) = 1/4
m, l, acc = flash.online_softmax_init((1, 1, 64), 16)                    # (1, 1, 64, 1), (1, 1, 64, 1), (1, 1, 64, 16)
m2, l2, acc2 = m, l, acc                                                 # the suspect starts from the same state
for j in range(0, 64, 16):                                               # four key blocks of 16
    m, l, acc = flash.online_softmax_update(m, l, acc, scores[..., j:j + 16], v[..., j:j + 16, :])
    m2, l2, acc2 = online_softmax_update_v2(m2, l2, acc2, scores[..., j:j + 16], v[..., j:j + 16, :])
exact = F.scaled_dot_product_attention(q, k, v)                          # (1, 1, 64, 16)
print(f"1. tiled, reference vs exact: {(acc / l - exact).abs().max().item():.1e};  "
      f"suspect vs exact: {(acc2 / l2 - exact).abs().max().item():.2f}")

q_new = torch.randn(1, 4, 1, 16, generator=g)                            # (B, H, L_new = 1, D): the query at position 8
k_all, v_all = (torch.randn(1, 4, 9, 16, generator=g) for _ in range(2))  # (B, H, S = 9, D): positions 0..8
gap = kv_cache.cached_attention(q_new, k_all, v_all, 8) - cached_attention_v2(q_new, k_all, v_all, 8)   # (1, 4, 1, 16)
print(f"2. one new query after 8 cached positions: reference vs suspect {gap.abs().max().item():.2f}")

labels = torch.arange(2.0).view(1, 2, 1, 1)                              # (B, H_kv = 2, S = 1, D = 1): heads 0 and 1
print(f"3. repeat_kv(x, 2) heads read:   {[int(h) for h in gqa.repeat_kv(labels, 2).flatten()]};"
      f"  repeat_kv_v2(x, 2): {[int(h) for h in repeat_kv_v2(labels, 2).flatten()]}")

# %% [markdown]
# Three wrong answers, no error. Investigate each:
#
# 1. Print `m2` and `l2` next to `m` and `l`: which of the three running quantities is still right?
#    Read `inspect.getsource(online_softmax_update_v2)`.
# 2. For one new query at position 8, which keys does the suspect let it see? Try
#    `F.scaled_dot_product_attention(q, k, v, is_causal=True)` with $L = 1$, $S = 9$ and value = the
#    identity, and look at the weights. Read `inspect.getsource(cached_attention_v2)`.
# 3. `labels` holds the number of each key/value head (0 and 1): which query heads read which?
#
# <details><summary>Hint 1</summary><code>l2</code> is right and <code>m2</code> is right; only the output is
# not. When the max grows, the old <code>acc</code> was computed against the old max: it needs the same
# factor <code>exp(m - m_new)</code> as <code>l</code>.</details>
# <details><summary>Hint 2</summary>With <code>is_causal=True</code> PyTorch builds
# <code>torch.ones(L, S).tril()</code>: the mask is aligned to the <em>top-left</em>. For L = 1 that row
# allows key 0 only. A cached query at position 8 must see keys 0..8: align the mask bottom-right (build it
# from positions, as in Exercise 2).</details>
# <details><summary>Hint 3</summary><code>repeat_kv_v2</code> gives 0, 1, 0, 1: <code>Tensor.repeat</code>
# tiles the whole head axis (like <code>numpy.tile</code>). Grouped-query attention needs 0, 0, 1, 1: each
# head repeated in place, <code>repeat_interleave</code> (what <code>numpy.repeat</code> means).</details>
#
# ### Exercise 3 — fix it
#
# Write `repeat_kv(x, n_rep)` for keys or values `x` $(B, H_{kv}, S, D)$: return $(B, H_{kv} \cdot r, S, D)$
# where query head $h$ reads key/value head $\lfloor h / r \rfloor$, with $r$ = `n_rep` (Hugging Face's name).
# The check compares which head each query head reads with `F.scaled_dot_product_attention(..., enable_gqa=True)`'s
# convention.

# %% tags=["otter_ignore"]
print(inspect.getsource(repeat_kv_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q3_bug_hunt
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def repeat_kv(x, n_rep):
    """(B, H_kv, S, D) -> (B, H_kv * n_rep, S, D): query head h reads key/value head h // n_rep."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 3: fix repeat_kv_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    return x.repeat_interleave(n_rep, dim=1)                             # heads 0, 0, 1, 1, ... for n_rep = 2
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q3_public(repeat_kv):
    from attn_course.checks import check_repeat_kv
    check_repeat_kv(repeat_kv)

test_q3_public(repeat_kv)

# %%
# HIDDEN
def test_q3_hidden(repeat_kv):
    from attn_course.checks import check_repeat_kv
    check_repeat_kv(repeat_kv, thorough=True)

test_q3_hidden(repeat_kv)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Summary
#
# - Plain attention holds $(L, S)$ matrices: its peak memory grows as $L^{2.00}$ (192 MiB for one head at
#   $L = 4096$ here). Tiled attention grows at most linearly (3.09 MiB there), and it is exact.
# - The **online softmax** keeps a running max $m$ and sum $\ell$; when $m$ grows, everything gathered so far
#   is rescaled by $e^{m - m'}$. FlashAttention applies the same factor to a running output and divides by
#   $\ell$ once, at the end. In Python the tiles cost interpreter overhead; fused into one kernel, as
#   PyTorch's is, they do not.
# - The **KV cache** makes each generated token cost one position's work instead of the whole context's;
#   it gives the same logits and costs $2 \times \text{layers} \times H_{kv} \times D \times \text{length}$
#   numbers per sequence. Its new query's causal mask is aligned bottom-right, not top-left.
# - **Grouped-query attention** shares each key/value head among $r = H / H_{kv}$ query heads (grouped, in
#   order: `repeat_interleave`, not `repeat`), dividing the cache by $r$; multi-query attention is $H_{kv} = 1$.
# - **Sliding-window attention** is a mask: $O(L W)$ per layer, and a reach of $n (W - 1)$ positions after
#   $n$ layers.
#
# **Next:** lesson 15's `generation.generate` now takes `use_cache=True`: generate *Hamlet* with it and time
# the difference on the trained model. Lesson 08's catalogue gathers the course's other bugs.
#
# **References.** Vaswani et al. (2017), *Attention Is All You Need*, §3.2.1. Milakov & Gimelshein (2018),
# *Online normalizer calculation for softmax*. Dao, Fu, Ermon, Rudra & Ré (2022), *FlashAttention: Fast and
# Memory-Efficient Exact Attention with IO-Awareness*; Dao (2023), *FlashAttention-2*. Pope et al. (2022),
# *Efficiently Scaling Transformer Inference* (the KV cache and its size). Shazeer (2019), *Fast Transformer
# Decoding: One Write-Head is All You Need* (multi-query attention). Ainslie et al. (2023), *GQA: Training
# Generalized Multi-Query Transformer Models from Multi-Head Checkpoints*. Beltagy, Peters & Cohan (2020),
# *Longformer*; Jiang et al. (2023), *Mistral 7B* (sliding-window attention, rolling buffer cache).
# Grattafiori et al. (2024), *The Llama 3 Herd of Models* (32 layers, 8 key/value heads for the 8B model).
# Raschka, *Build a Large Language Model (From Scratch)*, bonus material on the KV cache and GQA.
