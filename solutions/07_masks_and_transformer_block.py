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
# name: 07_masks_and_transformer_block
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
# # Lesson 07 — Masks and the transformer block
#
# **Learning goals.** After this lesson you can
# 1. draw padding and causal masks and say which keys each query may see;
# 2. convert between the two mask polarities — `attn_mask` of attention *functions* such as PyTorch's
#    SDPA (**True = may attend**) and the masks of attention *modules* such as `nn.MultiheadAttention`
#    (**True = ignore**) — and prove both give the same attention;
# 3. choose a fill value that works in float16, float32 and float64, and handle a query that may
#    attend to no key at all;
# 4. build the transformer block — residual connections, LayerNorm, the feed-forward layer — and
#    match `torch.nn.TransformerEncoderLayer` to the last digit;
# 5. give a model word order with sinusoidal or learned positional encodings, train a small
#    transformer on real number words, and hunt a bug that leaves it blind to word order.
#
# Lessons 05–06 built self-attention and multi-head attention. Two things are missing before we have
# a transformer: **masks** (which keys a query may see) and the **block** around the attention.
#
# Shape legend (the same in every lesson): **B** batch, **L** query length, **S** key/value length,
# **H** heads, **D** head_dim, **E** d_model, **V** vocabulary.

# %%
# %matplotlib inline
import inspect
import random

import matplotlib.pyplot as plt
import torch
from num2words import num2words
from torch import nn
from torch.nn import functional as F

import attn_course as ac
from attn_course import checks, data, plot, training, transformer
from attn_course.widgets import MaskExplorer

torch.set_printoptions(precision=4, sci_mode=False)
device = ac.get_device()  # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)  # a seeded CPU generator: the same numbers on every device

# %% [markdown]
# ## 1. Masks as pictures
#
# Sentences in a batch have different lengths. Lesson 01 padded them to one length $S$ and kept a
# **`key_padding_mask`** of shape `(B, S)`, **True = padding**. Attention must give padding no weight.
#
# A **causal mask** answers a different question: may token $i$ see token $j$? In a decoder that
# predicts the next word, token $i$ may see only tokens $0 \dots i$ — never the future
# (Vaswani et al. 2017, section 3.2.3). It is an `(L, S)` lower triangle, the same for every sentence.

# %%
texts = ["Call me Ishmael.", "The cat sat on the mat.", num2words(342)]   # the last: "three hundred and forty-two"
token_lists = [data.tokenize(t) for t in texts]
vocab = data.Vocab(token_lists)
ids, key_padding_mask = data.pad_batch([vocab.encode(t) for t in token_lists])   # (B=3, S=7) each
B, S = ids.shape
for tokens, row in zip(token_lists, key_padding_mask):
    print(f"{' '.join(tokens):32s} key_padding_mask: {row.int().tolist()}")
padded = [t + ["<pad>"] * (S - len(t)) for t in token_lists]               # labels for the pictures

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
plot.attention_heatmap(key_padding_mask.float(), ["sentence 0", "sentence 1", "sentence 2"], list(range(S)),
                       ax=axes[0], title="key_padding_mask (B, S): yellow = padding", colorbar=False, annotate=False)
axes[0].set(xlabel="position", ylabel="sentence in the batch")
pad_as_attn = ac.key_padding_to_attn_mask(key_padding_mask)[0].expand(S, S)   # sentence 0: (1, S) -> (S, S)
plot.attention_heatmap(pad_as_attn.float(), padded[0], padded[0], ax=axes[1], colorbar=False, annotate=False,
                       title="sentence 0 as attn_mask: yellow = may attend")
plot.attention_heatmap(ac.causal_mask(S).float(), padded[1], padded[1], ax=axes[2], colorbar=False,
                       annotate=False, title="causal_mask(7): yellow = may attend")
plt.show()

# %% [markdown]
# Read the middle picture row by row: every query of "call me ishmael ." may look at the four real
# tokens and at none of the three `<pad>` columns. Padding masks **keys** (columns); the padding
# *queries* (bottom rows) still compute something, and later code ignores those rows (section 7
# leaves them out of the average). In the causal mask row $i$ ends at the diagonal.
#
# Combined, a decoder over a padded batch uses both, in one polarity (True = may attend):
# `causal_mask(L, S) & ~key_padding_mask[:, None, :]`, which broadcasts to `(B, L, S)`.

# %%
combined = ac.causal_mask(S) & ac.key_padding_to_attn_mask(key_padding_mask)   # (S, S) & (B, 1, S) -> (B, S, S)
print("combined attn_mask:", tuple(combined.shape))
print(combined[0].int())

# %% [markdown]
# ## 2. Two polarities, one conversion
#
# The same information is written with opposite meanings in different APIs. Mixing them up runs
# without an error and silently attends to the padding.
#
# | where | argument | `True` (or 1) means |
# |---|---|---|
# | functions: `F.scaled_dot_product_attention`; `ac.scaled_dot_product_attention`, `ac.attention_weights`, `ac.masked_softmax` | `attn_mask` | **may attend** |
# | modules: `nn.MultiheadAttention`, `nn.TransformerEncoderLayer`; `ac.MultiHeadAttention`, `ac.TransformerBlock` | `attn_mask` / `src_mask`, `key_padding_mask` | **ignore** |
# | Hugging Face tokenizers and models | `attention_mask` (0/1) | 1 = real token (keep) |
#
# PyTorch itself uses both meanings of `attn_mask`: its function (SDPA) says *may attend*, its modules
# say *ignore*. The course follows PyTorch exactly rather than inventing a third convention: every
# function of `attn_course` reads `attn_mask` as SDPA does, and every module reads `attn_mask` and
# `key_padding_mask` as `nn.MultiheadAttention` does, so inside one module both masks mean *ignore*,
# and code written against the course's modules runs unchanged on PyTorch's. The rule to remember:
# **a function's mask says where to look; a module's masks say what to hide.** A float mask is added
# to the scores in both, so it means the same everywhere.
#
# The one conversion from a module's padding mask to a function's `attn_mask`,
# `ac.key_padding_to_attn_mask`, is a negation plus an axis for the queries:

# %%
attn_mask = ~key_padding_mask[:, None, :]                            # (B, S) -> (B, 1, S), True = may attend
checks.expect_tensor("attn_mask", attn_mask, ac.key_padding_to_attn_mask(key_padding_mask), legend="(B, 1, S)")
print("attn_mask:", tuple(attn_mask.shape), "broadcasts over the L queries; add .unsqueeze(1) for (B, H, L, S)")

# %% [markdown]
# Now the proof that both conventions give the same attention. We embed the batch, run PyTorch's
# `nn.MultiheadAttention` and our `MultiHeadAttention` (same weights) with the *same* module masks
# (True = ignore), and PyTorch's SDPA with the function's mask (True = may attend). Padding and causal
# masks together.

# %%
torch.manual_seed(0)
embedding = nn.Embedding(len(vocab), 16, padding_idx=vocab.pad_id)
torch_mha = nn.MultiheadAttention(16, num_heads=2, batch_first=True).eval()
ours = ac.MultiHeadAttention.from_torch(torch_mha).eval()
x = embedding(ids).detach().to(device)                                     # (B, S) -> (B, S, E=16)
torch_mha, ours = torch_mha.to(device), ours.to(device)
kpm, causal = key_padding_mask.to(device), ac.causal_mask(S, device=device)
with torch.no_grad():
    out_torch, w_torch = torch_mha(x, x, x, key_padding_mask=kpm, attn_mask=~causal,   # modules: True = ignore
                                   average_attn_weights=False)
    out_ours, w_ours = ours(x, key_padding_mask=kpm, attn_mask=~causal)               # the same masks
torch.testing.assert_close(out_ours, out_torch)
torch.testing.assert_close(w_ours, w_torch)
print("nn.MultiheadAttention == ac.MultiHeadAttention, same masks (True = ignore):",
      tuple(out_ours.shape), tuple(w_ours.shape))

# %%
q = k = v = x.view(B, S, 2, 8).transpose(1, 2)                                # (B, S, E) -> (B, H, S, D)
sdpa_mask = (causal & ~kpm[:, None, :]).unsqueeze(1)                       # (B, 1, S, S), True = may attend
torch.testing.assert_close(ac.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask),
                           F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask))
with torch.no_grad():
    _, w_wrong = torch_mha(x, x, x, key_padding_mask=~kpm, average_attn_weights=False)  # SDPA's polarity passed
print("right polarity, weight on padding keys of 'call me ishmael .':", round(w_ours[0, :, :4, 4:].sum().item(), 4))
print("wrong polarity, weight on padding keys of 'call me ishmael .':", round(w_wrong[0, :, :4, 4:].sum().item(), 4),
      "of", 2 * 4)

# %% [markdown]
# With the wrong polarity every real query of sentence 0 (4 queries, 2 heads) put *all* its weight on
# the three `<pad>` keys: 8 rows of weight 1. No error, no warning.
#
# ## 3. Fill values and float16
#
# A mask works by setting the forbidden scores to a number so negative that $\exp$ of it is 0. Which
# number? Many tutorials write `-1e9`. float16, the dtype of fast inference on GPUs, cannot hold it:
# its largest magnitude is 65504.

# %%
for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
    info = torch.finfo(dtype)
    print(f"{str(dtype):15s} min = {info.min:12.4g}   -1e9 becomes {torch.tensor(-1e9, dtype=dtype).item()}")
keep = torch.tensor([1.0, 0.0], dtype=torch.float16)                     # a float mask, 1 = may attend
print("additive fill (1 - keep) * -1e9 in float16:", ((1 - keep) * -1e9).tolist())
try:
    torch.zeros(2, dtype=torch.float16).masked_fill(keep == 0, -1e9)
except RuntimeError as err:
    print("masked_fill(-1e9) on float16:", err)

# %% [markdown]
# So the additive pattern `scores + (1 - keep) * -1e9` quietly turns into `-inf` in float16, and
# `masked_fill(mask, -1e9)` raises. `-inf` itself is a good fill —
# $\exp(-\infty) = 0$ exactly — until a query may attend to **no** key: then its whole row is
# `-inf`, and softmax computes $0/0$ = NaN. That happens for real: with left padding and a causal
# mask (batched text generation), the first queries of a short sequence see only padding.
# A NaN then spreads through every later layer.

# %%
attn_scores = ac.randn(2, 4, 4, generator=g).to(torch.float16)                   # (B=2, L=4, S=4)
allowed = ac.causal_mask(4) & torch.tensor([[True] * 4, [False, False, True, True]])[:, None]  # sequence 1: 2 left pads
fills = {"-inf": float("-inf"), "finfo.min": torch.finfo(torch.float16).min}
for name, fill in fills.items():
    w = torch.softmax(attn_scores.masked_fill(~allowed, fill), dim=-1)
    print(f"fill {name:9s} rows 0-1 of sequence 1:", w[1, :2].tolist())
w = ac.masked_softmax(attn_scores, allowed)
print("ac.masked_softmax rows 0-1 of sequence 1:", w[1, :2].tolist())

# %% [markdown]
# - `-inf`: NaN rows.
# - `torch.finfo(dtype).min` (what Hugging Face uses): no NaN, but the row becomes a *uniform*
#   distribution over keys the query must not see, and `min + score` can still overflow to `-inf`.
# - `ac.masked_softmax`: fills with `-inf`, then sets rows with no allowed key to **zeros** — the
#   convention of PyTorch's own SDPA. A query that sees nothing gets a zero context vector.
#
# The same weights in every dtype: the masks behave alike in float16, float32 and float64, with no NaN.

# %%
scores64 = ac.randn(B, 2, S, S, generator=g, dtype=torch.float64) * 3               # (B, H, L, S)
mask_pad_causal = combined.unsqueeze(1)                                           # (B, 1, L, S)
reference = ac.masked_softmax(scores64, mask_pad_causal)
for dtype, tol in ((torch.float16, 2e-3), (torch.float32, 1e-6), (torch.float64, 1e-12)):
    w = ac.masked_softmax(scores64.to(dtype).to(device), mask_pad_causal.to(device))
    err = (w.cpu().double() - reference).abs().max().item()
    masked_weight = w[~mask_pad_causal.expand_as(w).to(device)].sum().item()
    print(f"{str(dtype):14s} max |w - w_float64| < {tol:g}: {err < tol},  NaN: {torch.isnan(w).any().item()},  "
          f"weight on masked keys: {masked_weight}")

# %% [markdown]
# ### Exercise 1 — masked softmax
#
# Write `masked_softmax(attn_scores, attn_mask)` for scores `(..., L, S)` and a bool `attn_mask`
# broadcastable to them, **True = may attend**. Forbidden keys get weight exactly 0; the rest of each
# row sums to 1 over the keys; a row with no allowed key is all zeros (not NaN). It must work in
# float16 too, so no `-1e9`.

# %% [raw]
# # BEGIN QUESTION
# name: q1_masked_softmax
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def masked_softmax(attn_scores, attn_mask):
    """Softmax over the keys (dim=-1) where attn_mask is True (may attend); rows with no allowed key -> 0."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write masked_softmax")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    filled = attn_scores.masked_fill(~attn_mask, float("-inf"))         # forbidden: exp(-inf) = 0, any dtype
    attn_weights = torch.softmax(filled, dim=-1)                         # NaN where a whole row is -inf
    sees_nothing = ~attn_mask.any(dim=-1, keepdim=True)                 # (..., L, 1) queries with no key
    return attn_weights.masked_fill(sees_nothing, 0.0)                   # NaN rows -> zeros
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(masked_softmax):
    from attn_course.checks import check_masked_softmax
    check_masked_softmax(masked_softmax)

test_q1_public(masked_softmax)

# %%
# HIDDEN
def test_q1_hidden(masked_softmax):
    from attn_course.checks import check_masked_softmax
    check_masked_softmax(masked_softmax, thorough=True)

test_q1_hidden(masked_softmax)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. Mask toggles
#
# One sentence attends to itself (random query and key maps, as in lesson 03). The slider turns the
# last tokens into padding, the first box adds the causal mask, the second passes `key_padding_mask`
# where `attn_mask` is expected. Grey cells are masked.
#
# **Try it.** Where does the weight of the `<pad>` rows go? What happens to the row sums with the
# wrong polarity, and with the wrong polarity and no padding at all?

# %%
tokens = data.tokenize("The cat sat on the mat.") + ["<pad>", "<pad>"]              # S = 9
demo_vocab = data.Vocab([tokens[:-2]])
x_demo = ac.randn(len(demo_vocab), 16, generator=g)[demo_vocab.encode(tokens)]      # (S, E): one vector per word
W_q, W_k = ac.randn(16, 8, generator=g), ac.randn(16, 8, generator=g)              # E=16 -> D=8
demo_scores = ac.scaled_dot_scores(x_demo @ W_q, x_demo @ W_k) / 2                  # (S, D) x (S, D) -> (S, S)

# %% tags=["nbval-ignore-output"]
explorer = MaskExplorer(demo_scores, tokens, num_padding=2)
explorer

# %% [markdown]
# The same moves, made by code:

# %%
readouts = []
for num_padding, causal_on, wrong in [(2, False, False), (2, True, False), (2, False, True), (0, False, True)]:
    explorer.set(num_padding=num_padding, causal=causal_on, wrong_polarity=wrong)   # what the controls do
    readouts.append(explorer.text())
print("\n\n".join(readouts))
explorer.set(num_padding=2, causal=False, wrong_polarity=False)

# %% [markdown]
# ## 5. The transformer block
#
# A transformer layer wraps self-attention and a small per-position network, the **feed-forward
# layer** (Vaswani et al. 2017, eq. 2), each in a **residual connection** (He et al. 2016) and a
# **LayerNorm** (Ba et al. 2016):
#
# $$\text{post-LN (the paper):}\quad x \leftarrow \mathrm{LN}(x + \mathrm{SelfAttn}(x)), \qquad x \leftarrow \mathrm{LN}(x + \mathrm{FFN}(x))$$
# $$\text{pre-LN (GPT-2 and most models since):}\quad x \leftarrow x + \mathrm{SelfAttn}(\mathrm{LN}(x)), \qquad x \leftarrow x + \mathrm{FFN}(\mathrm{LN}(x))$$
# $$\mathrm{FFN}(x) = \max(0,\, x W_1 + b_1)\, W_2 + b_2 \quad (E \to d_{ff} \to E), \qquad \mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta .$$
#
# - **Residual**: each sublayer computes a *change* added to its input, so a deep stack starts close
#   to the identity and gradients reach early layers unhindered.
# - **LayerNorm**: $\mu, \sigma^2$ are taken over the $E$ features of *one* position (not over the
#   batch), so it works the same for any batch size and length.
# - **Feed-forward**: attention mixes information *between* positions; the FFN transforms each position
#   on its own. Pre-LN trains more stably without learning-rate warm-up (Xiong et al. 2020).
#
# LayerNorm by hand, checked against `nn.LayerNorm`:

# %%
h = ac.randn(2, 5, 16, generator=g, device=device) * 3 + 1                  # (B, L, E)
norm = nn.LayerNorm(16).to(device)
mu = h.mean(dim=-1, keepdim=True)                                          # (B, L, 1): one mean per position
var = h.var(dim=-1, unbiased=False, keepdim=True)                          # (B, L, 1)
h_norm = (h - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias    # (B, L, E)
checks.expect_tensor("h_norm", h_norm, norm(h), legend="(B, L, E)")
mean, std = h_norm.mean(-1), h_norm.std(-1, unbiased=False)                  # (B, L) each
print(f"every position: |mean| <= {mean.abs().max().item():.4f}, std in "
      f"[{std.min().item():.4f}, {std.max().item():.4f}]")

# %% [markdown]
# `attn_course.transformer.TransformerBlock` puts the pieces together: `self_attn` (our
# `MultiHeadAttention`), `norm1`, `norm2`, and `feed_forward` (`linear1` -> ReLU or GELU -> `linear2`).
# `TransformerBlock.from_torch` copies the weights of a `torch.nn.TransformerEncoderLayer`; then the
# two agree — post-LN and pre-LN, ReLU and GELU, with padding and causal masks. Both are modules, so
# both take the same masks (True = ignore): the causal one is `~causal`, True above the diagonal.

# %%
x_batch = ac.randn(3, S, 16, generator=g, device=device)                        # (B, L, E)
report = []
for norm_first in (False, True):
    for activation in ("relu", "gelu"):
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(16, 2, 64, activation=activation, batch_first=True,
                                           norm_first=norm_first).to(device).eval()
        block = transformer.TransformerBlock.from_torch(layer).eval()
        with torch.no_grad():
            expected = layer(x_batch, src_mask=~causal, src_key_padding_mask=kpm)   # True = ignore
            got = block(x_batch, attn_mask=~causal, key_padding_mask=kpm)         # the same masks
        torch.testing.assert_close(got, expected)
        report.append(f"norm_first={norm_first!s:5s} {activation}: TransformerBlock == nn.TransformerEncoderLayer")
print("\n".join(report))

# %% [markdown]
# ### Exercise 2 — the block's forward
#
# Write `transformer_block_forward(block, x, attn_mask, key_padding_mask)` for `x (B, L, E)` and the
# block's masks (both True = ignore: pass them on as they are), using the block's parts:
# `block.self_attn(h, attn_mask=..., key_padding_mask=...)` returns `(attn_output, attn_weights)`; `block.norm1`, `block.norm2`, `block.feed_forward`. Post-LN when
# `block.norm_first` is False, pre-LN when it is True (the formulas above). Ignore dropout (the
# check runs in eval mode).

# %% [raw]
# # BEGIN QUESTION
# name: q2_transformer_block
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def transformer_block_forward(block, x, attn_mask=None, key_padding_mask=None):
    """One transformer block on x (B, L, E): post-LN if not block.norm_first, else pre-LN."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write transformer_block_forward")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    def self_attention(h):                                               # (B, L, E) -> (B, L, E)
        return block.self_attn(h, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0]
    if block.norm_first:                                                 # pre-LN: normalise each sublayer's input
        x = x + self_attention(block.norm1(x))
        return x + block.feed_forward(block.norm2(x))
    x = block.norm1(x + self_attention(x))                               # post-LN: normalise after each residual
    return block.norm2(x + block.feed_forward(x))
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(transformer_block_forward):
    from attn_course.checks import check_transformer_block
    check_transformer_block(transformer_block_forward)

test_q2_public(transformer_block_forward)

# %%
# HIDDEN
def test_q2_hidden(transformer_block_forward):
    from attn_course.checks import check_transformer_block
    check_transformer_block(transformer_block_forward, thorough=True)

test_q2_hidden(transformer_block_forward)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 6. Positions
#
# Lesson 05 showed that self-attention is permutation-equivariant: shuffle the tokens and the
# outputs shuffle the same way. The whole block is too — LayerNorm and the FFN act on each position
# alone. Average the outputs, and "the dog bit the man" becomes "the man bit the dog".

# %%
perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])                                       # a shuffle of the 7 positions
with torch.no_grad():
    out = block(x_batch)                                                     # (B, L, E), no mask
    out_shuffled = block(x_batch[:, perm])                                   # shuffle the input tokens
torch.testing.assert_close(out_shuffled, out[:, perm])
print("block(shuffled x) == shuffled block(x): the block cannot see order")

# %% [markdown]
# So we add to each token's embedding a vector that depends on its **position**. Vaswani et al.
# (2017, section 3.5) use fixed sines and cosines of geometrically spaced wavelengths:
#
# $$PE_{(pos,\,2i)} = \sin\!\left(pos / 10000^{2i/E}\right), \qquad PE_{(pos,\,2i+1)} = \cos\!\left(pos / 10000^{2i/E}\right).$$
#
# Each column pair is a clock hand turning at its own speed; together they give every position a
# distinct code, and $PE_{pos+k}$ is a fixed rotation of $PE_{pos}$, so relative offsets are easy to
# read. The alternative is a **learned** vector per position (`nn.Embedding(max_len, E)`, as in BERT
# and GPT-2); the paper found both work about equally well.

# %%
def sinusoidal(seq_len, d_model):
    pos = torch.arange(seq_len, dtype=torch.float64)[:, None]                # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)                 # (E/2,)
    angle = pos / 10000 ** (two_i / d_model)                                 # (L, 1) / (E/2,) -> (L, E/2)
    pe = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)          # (L, E/2, 2): sin, cos pairs
    return pe.reshape(seq_len, d_model).float()                              # (L, E): columns 2i, 2i+1

pe = sinusoidal(50, 32)
checks.expect_tensor("pe", pe, transformer.sinusoidal_positional_encoding(50, 32), legend="(L, E)")
print("pe:", tuple(pe.shape), " position 0:", pe[0, :6].tolist())

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
im = ax0.imshow(pe.T.numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
ax0.set(xlabel="position", ylabel="dimension (2i = sin, 2i+1 = cos)",
        title="sinusoidal positional encodings (E = 32)")
fig.colorbar(im, ax=ax0, shrink=0.8)
im = ax1.imshow((pe @ pe.T).numpy(), cmap="viridis", aspect="equal")
ax1.set(xlabel="position", ylabel="position", title="similarity PE[p] · PE[q]: depends on |p - q|")
fig.colorbar(im, ax=ax1, shrink=0.8)
plt.show()

# %% [markdown]
# Left: fast clocks in the first dimensions, slow ones further down. Right: the dot product of two
# encodings is largest on the diagonal and falls off with the distance between the positions, the
# same all along each diagonal.
#
# ## 7. A transformer that must read word order
#
# A real task, in real English from `num2words`: is the statement true?
#
# > *seventy-three is more than forty-two* &nbsp;&nbsp;→ true
# > *forty-two is more than seventy-three* &nbsp;&nbsp;→ false
#
# Both statements have the same words; only their **order** decides. A model blind to order sees
# each statement and its mirror as the same input, so on a test set that contains both it scores
# exactly 50 %. We use every pair of numbers 0–99, hold out 20 % of the pairs (in both orders) for
# testing, and train `attn_course.transformer.TextTransformer`: embedding + positions → 2 blocks →
# average over the non-padding tokens → 2 logits.

# %%
words = {n: data.tokenize(num2words(n)) for n in range(100)}                  # 42 -> ['forty', '-', 'two']
def statement(a, b):
    return words[a] + ["is", "more", "than"] + words[b]

pairs = [(a, b) for a in range(100) for b in range(a + 1, 100)]                # 4950 pairs a < b
random.Random(0).shuffle(pairs)
both_orders = lambda ps: [p for a, b in ps for p in ((a, b), (b, a))]
train_pairs, test_pairs = both_orders(pairs[990:]), both_orders(pairs[:990])   # no test pair seen in training
task_vocab = data.Vocab([statement(a, b) for a, b in train_pairs])
def encode(ps):
    ids, _ = data.pad_batch([task_vocab.encode(statement(a, b)) for a, b in ps])  # (N, T), pad id 0
    return ids, torch.tensor([int(a > b) for a, b in ps])                          # label 1 = true
train_ids, train_labels = encode(train_pairs)
test_ids, test_labels = encode(test_pairs)
print(f"train {tuple(train_ids.shape)}, test {tuple(test_ids.shape)}, vocabulary V={len(task_vocab)}")
for a, b in test_pairs[:4]:
    print(f"  {' '.join(statement(a, b)):45s} -> {a > b}")

# %%
torch.set_num_threads(1)          # tiny tensors: extra CPU threads only add synchronisation

def new_model(positional, seed=0):
    torch.manual_seed(seed)
    return transformer.TextTransformer(len(task_vocab), d_model=32, num_heads=2, d_ff=64, num_layers=2,
                                       num_classes=2, max_len=16, positional=positional).to(device)

def accuracy(model, ids, labels):
    model.eval()
    with torch.no_grad():
        return (model(ids.to(device)).argmax(-1).cpu() == labels).float().mean().item()

def train(model, steps=100, batch_size=128, lr=5e-3, every=20):
    """AdamW on random mini-batches (`training.fit`); returns the loss per step and (step, held-out
    accuracy) every `every` steps."""
    g_train = torch.Generator().manual_seed(0)

    def batches(epoch):          # an "epoch" here: `every` random batches, then one test of accuracy
        return [torch.randint(0, len(train_ids), (batch_size,), generator=g_train) for _ in range(every)]

    def batch_loss(batch):       # batch: (batch_size,) example indices
        logits = model(train_ids[batch].to(device))                            # (batch_size, T) -> (batch_size, 2)
        return F.cross_entropy(logits, train_labels[batch].to(device))

    history = training.fit(model, batches, batch_loss, torch.optim.AdamW(model.parameters(), lr=lr),
                           epochs=steps // every, evaluate=lambda: accuracy(model, test_ids, test_labels),
                           progress=False)
    return history.step_loss, [(every * (i + 1), acc) for i, acc in enumerate(history.evaluations)]

# %% tags=["nbval-ignore-output"]
results = {}
for positional in ("sinusoidal", "learned"):
    model = new_model(positional)
    results[positional] = (model, *train(model))
    print(f"{positional:10s} held-out accuracy after 100 steps: {results[positional][2][-1][1]:.3f}")
    assert results[positional][2][-1][1] > 0.85, "the model should learn the task"

# %% tags=["nbval-ignore-output"]
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained")
for positional, (_, losses, curve) in results.items():
    ax0.plot(losses, label=positional, alpha=0.8)
    ax1.plot(*zip(*curve), "-o", ms=3, label=positional)
ax0.set(xlabel="training step", ylabel="cross-entropy loss", title="training loss", yscale="log")
ax1.axhline(0.5, color="gray", linestyle="--", linewidth=1)
ax1.set(xlabel="training step", ylabel="accuracy", title="held-out accuracy (chance = 0.5)", ylim=(0.4, 1.0))
ax0.legend()
ax1.legend()
plt.show()

# %% [markdown]
# Both encodings learn the task in a few seconds, from about 0.65 to about 0.95 on statements never
# seen in either order. What does the trained model look at? Below are the four attention maps
# (2 layers x 2 heads) of the sinusoidal model on one held-out statement. Look for columns that light
# up for many queries: number words and the hyphens that separate tens from units. With positions
# added, "fifty" before "is more than" and "fifty" after it are different inputs. Maps of a small
# model are a hint, not an explanation (lesson 06).

# %% tags=["nbval-ignore-output"]
model = results["sinusoidal"][0].eval()
a, b = next((a, b) for a, b in test_pairs if a > b > 20 and a // 10 != b // 10 and a % 10 and b % 10)
example = statement(a, b)
with torch.no_grad():
    logits, all_weights = model(torch.tensor([task_vocab.encode(example)], device=device), need_weights=True)
print(f"'{' '.join(example)}' -> P(true) = {logits.softmax(-1)[0, 1].item():.3f} (answer: {a > b})")
maps = [w[0, head] for w in all_weights for head in range(2)]                    # 4 x (L, L)
titles = [f"layer {layer + 1}, head {head + 1}" for layer in range(2) for head in range(2)]
plot.attention_grid(maps, titles, example, example, ncols=4, annotate=False, panel_size=(3.6, 3.6))
plt.show()

# %% [markdown]
# ## 8. Bug hunt
#
# The first article classifies text with a `TextTransformer`: an embedding, a positional encoding,
# PyTorch's encoder layers, and a linear layer on the output of the last position. Two of its lines, as
# written:
#
# ```python
# self.positional_encoding = nn.Parameter(torch.randn(1, 1, embed_dim))   # in __init__
# x = self.embedding(x) + self.positional_encoding                        # in forward
# ...
# out = out[:, -1, :]                                                     # the last position, for the classifier
# ```
#
# The parameter has shape `(1, 1, E)`: it broadcasts over the batch *and over the positions*, so every
# position receives the same learned vector, and the vector says nothing about where a token is. And in
# a right-padded batch the last position of a short sentence is `<pad>`. Run both lines on section 1's
# batch, with an untrained PyTorch encoder layer and, as in the article, no mask:

# %%
torch.manual_seed(0)
positional_encoding = nn.Parameter(torch.randn(1, 1, 16, device=device))          # the article's line: (1, 1, E)
article_layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).to(device).eval()

def article_features(ids):
    """The article's forward up to the classifier: (B, L) -> (B, E), the encoder's output at position -1."""
    x = embedding(ids).to(device) + positional_encoding                            # (B, L, E) + (1, 1, E)
    return article_layer(x)[:, -1, :]                                              # no mask; out[:, -1, :]

call = vocab.encode(token_lists[0])                                                # "call me ishmael ."
with torch.no_grad():
    added = positional_encoding.expand(B, S, 16)                                   # what positions add: (1, 1, E) -> (B, S, E)
    distinct = added.reshape(B * S, 16).unique(dim=0).shape[0]
    reordered = torch.tensor([[call[1], call[0], call[2], call[3]]])              # "me call ishmael ."
    alone, batched = article_features(torch.tensor([call]))[0], article_features(ids)[0]
    order_blind = torch.allclose(alone, article_features(reordered)[0], atol=1e-6)
print(f"distinct positional vectors over the {B} x {S} positions of the batch: {distinct}")
print("'call me ishmael .' and 'me call ishmael .' give the same features:", order_blind)
print("the token at position -1 of each padded sentence:", [vocab.itos[i] for i in ids[:, -1].tolist()])
print(f"'call me ishmael .' alone vs in the padded batch: features differ by up to {(alone - batched).abs().max().item():.3f}")

# %% [markdown]
# One positional vector for all 21 positions: the model is blind to word order (any two words may
# swap places, except the last), and the classifier reads a `<pad>` token for two of the three
# sentences: "call me ishmael ." gets features that differ by up to 2.118 depending on which sentences
# share its batch, so possibly another class. The course's
# `TextTransformer` adds a table of one vector per position (`LearnedPositionalEncoding` or the
# sinusoidal one) and pools the outputs of the real tokens only (masked mean pooling), so neither
# happens.
#
# The same kind of bug can hide in a table of positions too. The suspect `SinusoidalPositionalEncoding_v2`
# below has the reference's docstring (`help(SinusoidalPositionalEncoding_v2)`), it runs, and every
# shape is right. Train section 7's model with it.

# %%
from attn_course.broken import SinusoidalPositionalEncoding_v2

print(SinusoidalPositionalEncoding_v2.__doc__.splitlines()[0])

# %% tags=["nbval-ignore-output"]
suspect = new_model(SinusoidalPositionalEncoding_v2(16, 32))
suspect_losses, suspect_curve = train(suspect)
print(f"held-out accuracy: {suspect_curve[-1][1]:.3f}  (the reference: {results['sinusoidal'][2][-1][1]:.3f})")
assert abs(suspect_curve[-1][1] - 0.5) < 0.02, "the suspect should be stuck at chance"
fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.plot(*zip(*results["sinusoidal"][2]), "-o", ms=3, label="reference SinusoidalPositionalEncoding")
ax.plot(*zip(*suspect_curve), "-o", ms=3, label="SinusoidalPositionalEncoding_v2")
ax.set(xlabel="training step", ylabel="held-out accuracy", ylim=(0.4, 1.0), title="same model, same data")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Chance, to the test example. Probe it the way the task suggests: give a fresh (untrained) model a
# statement and its mirror — the same tokens in another order, the opposite answer. Does the output
# change?

# %%
probe = torch.tensor([task_vocab.encode(statement(73, 42)), task_vocab.encode(statement(42, 73))],
                     device=device)                                               # (2, T=9): a statement, its mirror
for name, positional in [("reference", "sinusoidal"), ("suspect", SinusoidalPositionalEncoding_v2(16, 32))]:
    m = new_model(positional).eval()
    with torch.no_grad():
        logits = m(probe)                                                         # (2, 2)
    print(f"{name:9s}: statement and mirror get the same logits: {torch.allclose(logits[0], logits[1], atol=1e-6)}")

# %% [markdown]
# <details><summary>Hint 1</summary>The suspect treats a sentence as a bag of words. Which part of the
# model is supposed to tell positions apart? Call it on zeros, <code>enc(torch.zeros(1, 5, 32))</code>,
# and compare the rows.</details>
# <details><summary>Hint 2</summary>Every position receives the same vector. Which row of
# <code>self.pe</code> is it? Compare it with <code>enc.pe[0, 5]</code>.</details>
# <details><summary>Hint 3</summary>Look at the slice in <code>forward</code> character by character:
# <code>self.pe</code> is <code>(1, max_len, E)</code>; which expression picks rows <code>0 .. L-1</code>?</details>
#
# ### Exercise 3 — fix it
#
# Write the `forward` of `FixedSinusoidalPositionalEncoding`: the same module with the bug removed,
# `x (B, L, E) -> x + PE[:L]`, keeping `x`'s dtype. The source of the suspect is below.

# %%
from attn_course.transformer import sinusoidal_positional_encoding, validate_positions   # the helpers it calls: the code you copy from below runs here as printed

print(inspect.getsource(SinusoidalPositionalEncoding_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q3_bug_hunt
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
class FixedSinusoidalPositionalEncoding(nn.Module):
    """SinusoidalPositionalEncoding_v2 with the bug removed: x (B, L, E) -> x + PE[:L]."""

    def __init__(self, max_len, d_model):
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        table = transformer.sinusoidal_positional_encoding(max_len, d_model)          # (max_len, E)
        self.register_buffer("pe", table[None], persistent=False)                     # (1, max_len, E)

    def forward(self, x):
        """ # BEGIN PROMPT
        raise NotImplementedError("Exercise 3: fix the forward of SinusoidalPositionalEncoding_v2")
        """ # END PROMPT
        # BEGIN SOLUTION NO PROMPT
        return x + self.pe[:, :x.shape[1]].to(x.dtype)   # (B, L, E) + (1, L, E): row l for position l
        # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q3_public(FixedSinusoidalPositionalEncoding):
    from attn_course.checks import check_positional_encoding
    check_positional_encoding(FixedSinusoidalPositionalEncoding)

test_q3_public(FixedSinusoidalPositionalEncoding)

# %%
# HIDDEN
def test_q3_hidden(FixedSinusoidalPositionalEncoding):
    from attn_course.checks import check_positional_encoding
    check_positional_encoding(FixedSinusoidalPositionalEncoding, thorough=True)

test_q3_hidden(FixedSinusoidalPositionalEncoding)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# The fixed module is the package's `transformer.SinusoidalPositionalEncoding`, the encoding of the
# model that learned the task in section 7.
#
# ## Summary
#
# - A `key_padding_mask` (B, S) hides padding keys; a causal mask (L, S) hides the future. Combine
#   them with `&` after converting to one polarity.
# - Functions (SDPA, `ac.scaled_dot_product_attention`): `attn_mask` **True = may attend**. Modules
#   (`nn.MultiheadAttention`, `nn.TransformerEncoderLayer`, `ac.MultiHeadAttention`,
#   `ac.TransformerBlock`): `attn_mask` and `key_padding_mask` **True = ignore**.
#   `key_padding_to_attn_mask` converts, once.
# - Fill masked scores with `-inf`, never `-1e9` (it does not fit in float16); then give a query
#   that may see no key a row of zeros instead of NaN.
# - The block: post-LN `LN(x + SelfAttn(x))`, `LN(x + FFN(x))`, or pre-LN `x + SelfAttn(LN(x))`,
#   `x + FFN(LN(x))`; ours equals `nn.TransformerEncoderLayer` with copied weights.
# - Attention is blind to order. Add sinusoidal or learned positional encodings — and check that
#   position $l$ really gets row $l$: one broadcast position leaves the model at chance on any task
#   where order matters.
#
# **Next:** lesson 08 lines up every bug of lessons 01-07 against the check that catches it; then
# lessons 09-15 put the pieces to work on applications: translation with alignment heatmaps, text
# classification with token weights, and more.
#
# **References.** Vaswani et al. (2017), *Attention Is All You Need*, sections 3.1–3.5 and eq. 2.
# He et al. (2016), *Deep Residual Learning for Image Recognition*. Ba, Kiros & Hinton (2016),
# *Layer Normalization*. Xiong et al. (2020), *On Layer Normalization in the Transformer
# Architecture*. Gehring et al. (2017), *Convolutional Sequence to Sequence Learning* (learned
# positions). Devlin et al. (2019), *BERT*. PyTorch, `torch.nn.functional.scaled_dot_product_attention`,
# `torch.nn.MultiheadAttention`, `torch.nn.TransformerEncoderLayer`.
