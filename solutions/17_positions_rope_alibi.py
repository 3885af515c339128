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
# name: 17_positions_rope_alibi
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
# # Lesson 17 — Where a token is: sinusoidal, learned, rotary (RoPE) and ALiBi positions, and length generalisation
#
# **Learning goals.** After this lesson you can
# 1. say why positions *added to the tokens* (lesson 07: sinusoidal or learned) reach the attention score
#    mixed with content, and why the score then depends on where two tokens are, not only on how far apart;
# 2. derive **rotary position embeddings** (RoPE; Su et al. 2021): turn each pair of query and key features
#    by an angle proportional to the position, so that $q_m \cdot k_n$ depends only on $m - n$; check it
#    numerically and against Hugging Face's Llama; name the two pairings (interleaved and half-split);
# 3. explain **ALiBi** (Press et al. 2022): no position in the tokens, a fixed per-head penalty on distance
#    added to the scores, with slopes $1/2, 1/4, \dots, 1/256$ for 8 heads;
# 4. run a **length-generalisation** experiment: five position schemes, trained on sequences of 16 tokens and
#    tested on 16 to 128, read position by position, and explain each result;
# 5. find a pairing bug that runs, keeps every shape and breaks a trained model, and convert weights trained
#    with one pairing for code that applies the other, as Hugging Face's Llama conversion script does.
#
# Shape legend (the same in every lesson): **B** batch, **L** query length, **S** key/value length,
# **H** heads, **D** head_dim, **E** d_model, **V** vocabulary. Sections 6 and 7 train six small models
# (about 5-10 s each on one CPU core).

# %%
# %matplotlib inline
import inspect
import math

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display
from torch import nn
from torch.nn import functional as F

import attn_course as ac
from attn_course import checks, rotary, transformer
from attn_course.apps import positions
from attn_course.plot import figure_png
from attn_course.widgets import RotaryExplorer

torch.set_printoptions(precision=4, sci_mode=False)
torch.set_num_threads(1)   # small models: one thread trains them faster than two on 2 cores (measured)
device = ac.get_device()   # ATTN_COURSE_DEVICE = cpu | cuda | auto; sections 1-5 run on the CPU
g = ac.seed_everything(0)

# %% [markdown]
# ## 1. Positions added to the tokens, and what the score sees
#
# Attention alone cannot see order (lesson 07: shuffle the tokens and the outputs shuffle the same way).
# Lesson 07 therefore added a positional encoding $p_m$ to the embedding $x_m$ of the token at position
# $m$: the sinusoidal table of Vaswani et al. (2017, §3.5) or a learned one (BERT, GPT-2). The score of a
# query at $m$ and a key at $n$ becomes
#
# $$(x_m + p_m) W_Q \cdot (x_n + p_n) W_K
#   = \underbrace{x_m W_Q \cdot x_n W_K}_{\text{content}} + x_m W_Q \cdot p_n W_K + p_m W_Q \cdot x_n W_K
#   + \underbrace{p_m W_Q \cdot p_n W_K}_{\text{position}}.$$
#
# Positions and content are mixed in four terms, and even the purely positional one is a function of $m$
# and $n$, not of $m - n$. The sinusoidal table has the property alone: $PE_m \cdot PE_n = \sum_i \cos((m - n)
# \omega_i)$ (lesson 07's picture). Through a query and a key projection it is gone. We measure how far
# each matrix is from "a function of $m - n$": the largest spread of its values along one diagonal
# $m - n = \text{const}$ (0 for a function of the offset alone).

# %%
def diagonal_spread(scores):
    """Largest max - min along any diagonal m - n = const of an (L, L) matrix: 0 iff it depends on m - n only."""
    L = scores.shape[0]
    return max((d.max() - d.min()).item() for d in (torch.diagonal(scores, k) for k in range(-L + 1, L)))

pe = transformer.sinusoidal_positional_encoding(64, 32, dtype=torch.float64)     # (L=64, E=32)
w_q, w_k = (torch.randn(32, 16, generator=g, dtype=torch.float64) for _ in range(2))  # (E, D): one head's W_Q, W_K
table = pe @ pe.T                                                                  # (L, L): PE_m . PE_n
added = (pe @ w_q) @ (pe @ w_k).T                                                  # (L, D) @ (D, L) -> (L, L)
print(f"PE_m . PE_n:              spread along a diagonal {diagonal_spread(table):.1e}")
print(f"p_m W_Q . p_n W_K:        spread along a diagonal {diagonal_spread(added):.2f} "
      f"(values from {added.min().item():.1f} to {added.max().item():.1f})")

# %% [markdown]
# The table is a function of the offset to rounding error; the projected scores are not, by a wide margin.
# A model with added positions can still learn to read offsets, but it has to learn it, and only for the
# positions it saw in training (section 6 measures what that costs).
#
# ## 2. RoPE: turn the query and the key instead of adding
#
# **Su et al. (2021)** put the position into the score *by construction*. Take two features of a query,
# a point $q = (q_a, q_b)$ in the plane, and turn it by the angle $m\theta$ when the query is at position $m$;
# turn the key's pair by $n\theta$. With the rotation matrix $R(\varphi)$, and since $R(\alpha)^\top =
# R(-\alpha)$ and $R(\alpha) R(\beta) = R(\alpha + \beta)$:
#
# $$q_m \cdot k_n = (R(m\theta)\, q)^\top R(n\theta)\, k = q^\top R((n - m)\theta)\, k.$$
#
# Only $m - n$ is left. Lengths are unchanged (a rotation), and position 0 is the identity. For $D$
# features RoPE makes $D/2$ pairs, each turning at its own frequency $\theta_i = \text{base}^{-2i/D}$,
# $i = 0, \dots, D/2 - 1$, base 10000: lesson 07's sinusoidal frequencies, fast for pair 0 and ever
# slower. It acts on $q$ and $k$ after the projections, in every head of every layer; the values are not
# turned. In the 2-D case by hand, with $\theta = 0.7$:

# %%
def rotation(phi):
    """The 2 x 2 rotation matrix R(phi), float64."""
    return torch.tensor([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]], dtype=torch.float64)

q2, k2 = torch.tensor([1.0, 0.5], dtype=torch.float64), torch.tensor([0.3, -1.2], dtype=torch.float64)  # (2,) each
theta = 0.7
for m, n in [(3, 1), (10, 8), (52, 50), (3, 2)]:
    q_m, k_n = rotation(m * theta) @ q2, rotation(n * theta) @ k2                # (2,) each
    print(f"m = {m:2d}, n = {n:2d} (m - n = {m - n}): q_m = {q_m.numpy().round(4)}, k_n = {k_n.numpy().round(4)}, "
          f"q_m . k_n = {(q_m @ k_n).item():+.6f}")
# rotary.apply_rotary with D = 2 has one pair, theta_0 = base ** 0 = 1: position 3 * 0.7 turns by 2.1 rad
torch.testing.assert_close(rotary.apply_rotary(q2[None], torch.tensor([3 * theta]))[0], rotation(3 * theta) @ q2)
print("rotary.apply_rotary(q, position 2.1), D = 2, equals R(2.1) q: True")

# %% [markdown]
# Three different places, one offset of 2, one score; offset 1 gives another. Now the frequencies. The
# models of section 6 have $E = 32$ and $H = 2$ heads, so $D = 16$: eight pairs. The table lists each
# pair's $\theta_i$ and the largest angle between a query and a key it meets in training (offset 15, in
# sequences of 16 tokens) and at a test length of 128 (offset 127), in turns of the circle:

# %%
D = 16                                                                           # head_dim of section 6's models
angles = rotary.rotary_angles(torch.arange(128), D, dtype=torch.float64)         # (L=128, D/2): m * theta_i
thetas = angles[1]                                                               # (D/2,): theta_i, radians per position
print(" pair i   theta_i (rad/position)   offset 15 (trained)   offset 127 (tested)")
for i, th in enumerate(thetas.tolist()):
    print(f"{i:6d} {th:16.6f} {15 * th / (2 * math.pi):17.3f} turns {127 * th / (2 * math.pi):14.3f} turns")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained", width_ratios=[1, 2])
ax0.semilogy(range(D // 2), thetas.numpy(), "o-")
ax0.set(xlabel="pair i", ylabel="theta_i (rad per position)", title=f"RoPE frequencies, D = {D}, base 10000")
im = ax1.imshow(angles.cos().T.numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
ax1.axvline(15.5, color="k", linestyle="--", linewidth=1)
ax1.text(16.5, 7.3, "beyond the training length", fontsize=8)
ax1.set(xlabel="position (or offset) m", ylabel="pair i", title="cos(m theta_i): each pair a clock hand at its speed")
fig.colorbar(im, ax=ax1, shrink=0.8)
plt.show()

# %% [markdown]
# Within the 16 positions of training, pair 0 goes round 2.387 times and pair 1 three quarters of a turn
# (0.755): training shows them (almost) every angle of their circle. From pair 2 on, training only ever
# shows an arc: pair 2 less than a quarter turn (0.239), pair 4 a fortieth (0.024). At offset 127 pair 2
# has gone round twice (2.021 turns) and pair 3 reaches 0.639 turns, angles that no query and key met in
# training. Keep this table for section 6.
#
# ## 3. The relative property, an independent check, and the two pairings
#
# First the property itself, on $D = 16$ random features: the score of the same $q$ and $k$ at $(m, n)$
# and at $(m + t, n + t)$, for 2,000 random positions up to 4,096 and shifts up to 4,096; then the whole
# $64 \times 64$ table of $q_m \cdot k_n$, beside the added-position scores of section 1.

# %%
q_vec, k_vec = (torch.randn(1, D, generator=g, dtype=torch.float64) for _ in range(2))   # (1, D) each
m, n, t = (torch.randint(0, 4096, (2000,), generator=g) for _ in range(3))        # (2000,) each


def score(m, n):
    """q_m . k_n for each pair of positions (m[j], n[j]): (N,)."""
    q_m = rotary.apply_rotary(q_vec.expand(len(m), D), m)                        # (N, D): row j at position m[j]
    k_n = rotary.apply_rotary(k_vec.expand(len(n), D), n)                        # (N, D)
    return (q_m * k_n).sum(-1)


before, after = score(m, n), score(m + t, n + t)                                  # (2000,) each
gap = (before - after).abs().max().item()
print(f"2,000 pairs (m, n) and shifts t: largest |q_m . k_n - q_(m+t) . k_(n+t)| = {gap:.1e}"
      f"  (scores from {before.min().item():.2f} to {before.max().item():.2f})")
torch.testing.assert_close(before, after, atol=1e-9, rtol=1e-9)
rope_table = (rotary.apply_rotary(q_vec.expand(64, D), torch.arange(64))         # (64, D): q at positions 0..63
              @ rotary.apply_rotary(k_vec.expand(64, D), torch.arange(64)).T)     # @ (D, 64) -> (64, 64): q_m . k_n
print(f"q_m . k_n for m, n = 0..63: spread along a diagonal {diagonal_spread(rope_table):.1e}")
assert diagonal_spread(rope_table) < 1e-9

fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for ax, matrix, title in [(axes[0], added, "added positions: p_m W_Q . p_n W_K"),
                          (axes[1], rope_table, "RoPE: q_m . k_n")]:
    im = ax.imshow(matrix.numpy(), cmap="viridis")
    ax.set(xlabel="key position n", ylabel="query position m", title=title)
    fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# RoPE's table is constant along every diagonal: a *Toeplitz* matrix, one value per offset. The left one
# has no such structure.
#
# **An independent implementation.** Hugging Face's Llama computes the same thing its own way:
# `LlamaRotaryEmbedding` builds the cosines and sines from the positions, `apply_rotary_pos_emb` applies
# them with its `rotate_half`. Same tensors, positions with gaps, one row of positions per sequence:

# %%
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

B, H, L = 2, 3, 7
q, k = (torch.randn(B, H, L, D, generator=g) for _ in range(2))                 # (B, H, L, D) each
position_ids = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [5, 9, 10, 11, 40, 41, 100]])   # (B, L)
config = LlamaConfig(hidden_size=H * D, num_attention_heads=H, head_dim=D, rope_theta=10000.0,
                     max_position_embeddings=128)
cos, sin = LlamaRotaryEmbedding(config=config)(q, position_ids)                 # (B, L, D) each
q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)                                # (B, H, L, D) each
q_ours = rotary.apply_rotary(q, position_ids[:, None, :])                        # positions (B, 1, L), broadcast over H
k_ours = rotary.apply_rotary(k, position_ids[:, None, :])
print(f"largest |ours - Hugging Face|: queries {(q_ours - q_hf).abs().max().item():.1e}, "
      f"keys {(k_ours - k_hf).abs().max().item():.1e}")
torch.testing.assert_close(q_ours, q_hf, atol=2e-5, rtol=1e-5)   # HF computes the angles in float32, ours in float64
torch.testing.assert_close(k_ours, k_hf, atol=2e-5, rtol=1e-5)

# %% [markdown]
# **Two pairings.** Which two features form a pair is a convention, and there are two. The paper, GPT-J
# and Meta's original Llama code pair *neighbours*, $(2i, 2i + 1)$: **interleaved** (Meta writes it with
# complex numbers: each neighbouring pair is one complex number, multiplied by $e^{i m \theta_i}$).
# GPT-NeoX and Hugging Face's Llama pair feature $i$ with feature $i + D/2$: **half-split** ("rotate half").
# Turn each single feature of $D = 8$ by position 1 and see which other feature it moves into:

# %%
D8 = 8
one_hot = torch.eye(D8, dtype=torch.float64)[:, None, :]                         # (8, L=1, 8): row j is feature j alone
for interleaved, name in [(True, "interleaved (RoFormer, GPT-J, Meta's Llama)"),
                          (False, "half-split (GPT-NeoX, HF Llama)")]:
    turned = rotary.apply_rotary(one_hot, torch.tensor([1]), interleaved=interleaved)[:, 0]   # (8, 8)
    partners = [tuple(row.abs().gt(1e-12).nonzero().flatten().tolist()) for row in turned]
    print(f"{name:44s} pairs: {sorted(set(partners))}")
x8 = torch.randn(2, 5, D8, generator=g, dtype=torch.float64)                       # (B, L=5, D=8)
complex_pairs = torch.view_as_complex(x8.reshape(2, 5, D8 // 2, 2))                 # (B, L, D/2): neighbours as a + ib
phase = rotary.rotary_angles(torch.arange(5), D8, dtype=torch.float64)              # (L, D/2): m * theta_i
turn = torch.polar(torch.ones_like(phase), phase)                                   # (L, D/2): e^(i m theta_i)
torch.testing.assert_close(torch.view_as_real(complex_pairs * turn).flatten(-2),   # (B, L, D/2, 2) -> (B, L, D)
                           rotary.apply_rotary(x8, torch.arange(5), interleaved=True))
print("Meta's complex multiplication equals interleaved=True: True")
order = [0, 4, 1, 5, 2, 6, 3, 7]                                                 # half-split's pairs, laid side by side
torch.testing.assert_close(rotary.apply_rotary(x8[..., order], torch.arange(5), interleaved=True),
                           rotary.apply_rotary(x8, torch.arange(5))[..., order])
print(f"half-split(x) = interleaved(x with its features in the order {order}), read back in that order: True")

# %% [markdown]
# The two conventions are the same rotation of differently *ordered* features. Both have the relative
# property. But a model's query and key projections learn which features turn together: weights trained
# under one pairing, run under the other, give other scores (section 7).
#
# ### Exercise 1 — RoPE, half-split
#
# Write `apply_rotary(x, positions, base=10000.0)` for queries or keys `x` $(\dots, L, D)$, $D$ even, and
# `positions` $(L,)$ or broadcastable to $(\dots, L)$ (any integers, not necessarily $0..L-1$): return a
# tensor of `x`'s shape and dtype in which pair $i$, the features $(x_{\dots, i},\ x_{\dots, i + D/2})$, is
# turned by the angle $p \cdot \theta_i$, $\theta_i = \text{base}^{-2i/D}$:
#
# $$(x_a, x_b) \mapsto (x_a \cos p\theta_i - x_b \sin p\theta_i,\ \ x_b \cos p\theta_i + x_a \sin p\theta_i).$$
#
# Compute the angles in float64 and cast `cos` and `sin` to `x.dtype`. The check tests position 0 (the
# identity), lengths, the relative property, then the values; it tells the interleaved pairing apart.

# %% [raw]
# # BEGIN QUESTION
# name: q1_apply_rotary
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def apply_rotary(x, positions, base=10000.0):
    """RoPE, half-split pairs (i, i + D/2): x (..., L, D) turned by positions (L,) or (..., L) -> (..., L, D)."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write apply_rotary")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    D = x.shape[-1]
    freqs = base ** (-torch.arange(0, D, 2, dtype=torch.float64, device=x.device) / D)   # (D/2,): theta_i
    phase = positions.to(x.device, torch.float64)[..., None] * freqs                     # (..., L, 1) * (D/2,) -> (..., L, D/2)
    c, s = phase.cos().to(x.dtype), phase.sin().to(x.dtype)
    first, second = x[..., :D // 2], x[..., D // 2:]                                     # (..., L, D/2) each: pair i = (i, i + D/2)
    return torch.cat((first * c - second * s, second * c + first * s), dim=-1)          # (..., L, D)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(apply_rotary):
    from attn_course.checks import check_apply_rotary
    check_apply_rotary(apply_rotary)

test_q1_public(apply_rotary)

# %%
# HIDDEN
def test_q1_hidden(apply_rotary):
    from attn_course.checks import check_apply_rotary
    check_apply_rotary(apply_rotary, thorough=True)

test_q1_hidden(apply_rotary)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. Turn them yourself
#
# The widget draws one feature pair of a query at position $m$ and a key at position $n$ (dashed: both at
# position 0), turned by `rotary.apply_rotary` (half-split), and on the right the score $q_m \cdot k_n$ over
# all $D = 8$ features against the offset $m - n$. Your function is not needed from here on.
#
# **Try it.**
# - Press **move both by +1** a few times: both arrows turn, the readout's two scores do not change.
# - Move only $m$: the marked point walks along the score curve; the curve itself never changes.
# - Pick pair 3 and base 10000: the arrows barely move over 32 positions. Pick base 100: they turn
#   visibly. Large bases keep the slow pairs slow (Llama 3 uses 500000).

# %% tags=["nbval-ignore-output", "otter_ignore"]
explorer = RotaryExplorer(m=5, n=2, pair=0, base=10000.0)
explorer

# %% [markdown]
# For a reader without live widgets: the same explorer moved by code, its readout and its chart.

# %% tags=["otter_ignore"]
explorer.set(m=7, n=4, pair=1)
print(explorer.text())
first = explorer.state()
explorer.shift(20)
print(explorer.text())
assert abs(explorer.state()["score"] - first["score"]) < 1e-9 and explorer.state()["angle_query"] != first["angle_query"]
display(Image(figure_png(explorer.figure())))

# %% [markdown]
# ## 5. ALiBi: a penalty on distance instead of a position
#
# **Press et al. (2022)** add nothing to the tokens and turn nothing. Each head $h$ adds a fixed penalty
# proportional to the distance to every score before the softmax:
#
# $$\text{attn\_scores}_{h}(i, j) = \frac{q_i \cdot k_j}{\sqrt{D}} - m_h\,(i - j), \qquad j \le i,$$
#
# with slopes $m_h$ that are not trained: a geometric sequence starting at $2^{-8/H}$, so for $H = 8$
# heads $m_h = 2^{-h}$, $h = 1 .. 8$. `rotary.alibi_slopes` and `rotary.alibi_bias` compute them (the
# package's slopes equal BLOOM's `build_alibi_tensor` for every number of heads tested, 1 to 20,
# `tests/test_rotary.py`):

# %%
slopes = rotary.alibi_slopes(8)                                                  # (H=8,) float64
print("ALiBi slopes, 8 heads:", ", ".join(f"1/{round(1 / s)}" for s in slopes.tolist()))
torch.testing.assert_close(slopes, torch.tensor([2.0 ** -h for h in range(1, 9)], dtype=torch.float64))
L = 12
bias = rotary.alibi_bias(8, torch.arange(L), torch.arange(L))                    # (H, L, S): -m_h |i - j|
shown = bias.masked_fill(~ac.causal_mask(L), float("nan"))                       # above the diagonal: masked anyway
fig, axes = plt.subplots(1, 8, figsize=(14, 2.4), layout="constrained")
for h, ax in enumerate(axes):
    im = ax.imshow(shown[h].numpy(), cmap="magma", vmin=-5.5, vmax=0)
    ax.set_title(f"head {h + 1}: m = 1/{round(1 / slopes[h].item())}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
axes[0].set(ylabel="query i", xlabel="key j")
fig.colorbar(im, ax=axes, shrink=0.8, label="bias -m (i - j)")
plt.show()

# %% [markdown]
# Head 1 penalises one step back by $1/2$: after 11 steps its bias is $-5.5$ and the far keys fade. Head 8
# barely cares about distance ($-0.043$ after 11 steps). With equal content scores, the weight on the key
# $d$ steps back is proportional to $e^{-m_h d}$: half as large every $\ln 2 / m_h$ steps. ALiBi holds no
# weights: `MultiHeadAttention(..., positional=rotary.ALiBi(H))` adds the bias in every head. The course's
# module, on its own projections, equals PyTorch's SDPA with the bias and the causal mask as one float mask:

# %%
torch.manual_seed(0)
mha = ac.MultiHeadAttention(32, 8, positional=rotary.ALiBi(8)).eval()           # E = 32, H = 8, D = 4
x = torch.randn(2, L, 32, generator=g)                                           # (B, L, E)
with torch.no_grad():
    out, _ = mha(x, is_causal=True)
    q, k, v = (p(x).view(2, L, 8, 4).transpose(1, 2) for p in (mha.q_proj, mha.k_proj, mha.v_proj))  # (B, H, L, D)
    float_mask = bias.masked_fill(~ac.causal_mask(L), float("-inf"))              # (H, L, S): bias, -inf above the diagonal
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=float_mask)       # (B, H, L, D)
    expected = mha.out_proj(context.transpose(1, 2).reshape(2, L, 32))            # (B, H, L, D) -> (B, L, E)
torch.testing.assert_close(out, expected)
print("MultiHeadAttention(positional=ALiBi(8)) equals F.scaled_dot_product_attention with the ALiBi bias: True")
print("half-life ln 2 / m_h in positions:", [round(math.log(2) / s, 1) for s in slopes.tolist()])
print("the slopes of section 6's models (H = 2):",
      ", ".join(f"1/{round(1 / s)}" for s in rotary.alibi_slopes(2).tolist()))

# %% [markdown]
# With $H = 2$ the slopes are $1/16$ and $1/256$: gentle. Whatever the slopes, the bias is the same for
# every key at one distance and falls as the distance grows: it can make a head prefer *recent* keys, and
# it never makes a key 3 back outrank the keys 0, 1 and 2 back.
#
# ## 6. Length generalisation: trained at 16 tokens, tested up to 128
#
# **The task.** `positions.offset_copy_batch` draws sequences of random tokens (a vocabulary of 16); at every
# position $t \ge 3$ the model must output the token at $t - 3$. The answer depends only on *where* a token
# is relative to the current one, never on what the tokens are, so the task isolates positional
# information. The first 3 positions have no target (`-100`, ignored by the loss):

# %%
ids, targets = positions.offset_copy_batch(2, 12, generator=torch.Generator().manual_seed(0))   # (B=2, L=12) each
print("ids:    ", ids[0].tolist())
print("targets:", targets[0].tolist())
for kind in positions.KINDS:
    model = positions.PositionModel(kind)
    in_heads = type(model.blocks[0].self_attn.positional).__name__
    print(f"PositionModel({kind!r:12s}): {sum(p.numel() for p in model.parameters()):6,} parameters; "
          f"positions: {type(model.positions).__name__}, in the heads: {in_heads}")

# %% [markdown]
# **The models.** `positions.PositionModel(kind)` is the same small causal transformer for every kind: an
# embedding, 2 pre-LayerNorm blocks with $H = 2$ heads of $D = 16$ ($E = 32$), a LayerNorm and the output
# layer. Only the position scheme differs: `"none"` (the causal mask only), `"sinusoidal"` and `"learned"`
# (added to the embeddings, lesson 07; the learned table has 128 rows, one per position), `"rope"` (every
# head's queries and keys turned, half-split) and `"alibi"` (the distance penalty in every head). The learned
# table is the only extra weight. Each trains for 400 steps of AdamW on fresh batches of 64 sequences of
# **16** tokens; then `positions.copy_accuracy` scores 256 fresh sequences of 16, 32, 64 and 128 tokens:
# the share of positions $t \ge 3$ whose most likely token is the one 3 back. Chance is $1/16 = 0.0625$.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
models, losses = {}, {}
for kind in positions.KINDS:
    torch.manual_seed(0)
    models[kind] = positions.PositionModel(kind).to(device)                      # built on the CPU, then moved
    losses[kind] = positions.train_position_model(models[kind], steps=400, batch_size=64, length=16)
    print(f"{kind:10s}: training loss {losses[kind][0]:.3f} -> {losses[kind][-1]:.3f}")

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
test_lengths = [16, 32, 64, 128]
accuracy = {kind: [positions.copy_accuracy(model, length) for length in test_lengths] for kind, model in models.items()}
print("accuracy of 'the token 3 back'; trained at length 16; chance 0.0625")
print(f"{'test length':12s}" + "".join(f"{length:>8d}" for length in test_lengths))
for kind, row in accuracy.items():
    print(f"{kind:12s}" + "".join(f"{a:8.3f}" for a in row))
for kind in ("sinusoidal", "learned", "rope"):
    assert accuracy[kind][0] > 0.99, f"{kind} should learn the task at the training length"
for kind in ("none", "alibi"):
    assert accuracy[kind][0] < 0.5, f"{kind} should not be able to single out the token 3 back"
assert accuracy["rope"][1] > max(accuracy["sinusoidal"][1], accuracy["learned"][1]) + 0.2

fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
for kind, row in accuracy.items():
    ax.plot(test_lengths, row, "o-", label=kind)
ax.axhline(1 / 16, color="0.5", linestyle=":", label="chance, 1/16")
ax.axvline(16, color="0.7", linewidth=0.8)
ax.set_xscale("log", base=2)
ax.set_xticks(test_lengths, [str(length) for length in test_lengths])
ax.minorticks_off()
ax.set(xlabel="test sequence length (trained at 16)", ylabel="accuracy", ylim=(0, 1.05),
       title="Offset copy: one model, five position schemes")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Read the table as measured:
#
# | trained at 16 | 16 | 32 | 64 | 128 |
# |---|---|---|---|---|
# | none | 0.248 | 0.239 | 0.203 | 0.163 |
# | sinusoidal | 1.000 | 0.532 | 0.299 | 0.185 |
# | learned | 1.000 | 0.491 | 0.272 | 0.168 |
# | rope | 1.000 | 0.921 | 0.603 | 0.353 |
# | alibi | 0.264 | 0.246 | 0.225 | 0.212 |
#
# Three schemes learn the task at the training length; two do not learn it at all. Only RoPE keeps most of
# it at 32 tokens, and even RoPE loses most of it by 128. But each number averages over positions
# $3 .. L - 1$, and the first 13 of them were seen in training: at length 32, 13 of the 29 scored positions
# are old ones. Position by position, on 256 sequences of 128 tokens:

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
ids, targets = positions.offset_copy_batch(256, 128, generator=torch.Generator().manual_seed(1))   # (256, 128) each
per_position = {}
with torch.no_grad():
    for kind, model in models.items():
        predicted = model(ids.to(device)).argmax(-1).cpu()                      # (B, L): the most likely token
        per_position[kind] = (predicted == targets).float().mean(0)             # (L,): accuracy at each position t
ranges = [(3, 16), (16, 17), (17, 32), (32, 64), (64, 128)]
print("accuracy at positions    " + "".join(f"{f'{a}-{b - 1}' if b - a > 1 else str(a):>9s}" for a, b in ranges))
for kind, acc in per_position.items():
    print(f"{kind:24s}" + "".join(f"{acc[a:b].mean().item():9.3f}" for a, b in ranges))
assert per_position["learned"][16:].mean() < 0.15 and per_position["rope"][16:32].mean() > 0.5

fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
for kind, acc in per_position.items():
    ax.plot(range(3, 128), acc[3:].numpy(), label=kind, linewidth=1.2)
ax.axhline(1 / 16, color="0.5", linestyle=":", label="chance, 1/16")
ax.axvspan(0, 15.5, color="0.9", zorder=0)
ax.text(1, 1.01, "trained positions 0-15", fontsize=8)
ax.set(xlabel="position t in a sequence of 128 tokens", ylabel="accuracy at t", ylim=(0, 1.08),
       title="Offset copy, position by position (trained at length 16)")
ax.legend(fontsize=8, loc="upper right")
plt.show()

# %% [markdown]
# Now each result has an explanation.
#
# - **learned**: 1.000 at positions 3-15, then 0.051 at position 16, at once, and about chance from there on
#   (0.072 over 17-31). Rows 16..127 of the learned table were never trained: no gradient reached them, they
#   hold their random initial values (shrunk by about 1 % by AdamW's weight decay), and the layers have
#   never seen them.
# - **sinusoidal**: the same cliff one step later: 0.938 at position 16, 0.104 over 17-31. Its encodings
#   of positions beyond 16 are well defined, but they are combinations of sines and cosines the layers never
#   saw, and what the model knows about them is what 16 positions taught it. That $PE_{m+k}$ is a fixed
#   rotation of $PE_m$ (lesson 07) does not mean the trained model uses it.
# - **rope**: relative by construction, and the only scheme past the cliff: 1.000 at position 16, 0.842
#   over 17-31, 0.311 over 32-63, 0.118 over 64-127. The score of the key 3 back is the same at every
#   position; what changes is the *other* keys: a query at position 100 also sees keys 16 to 100 places
#   back, at angles that training never showed the slow pairs (section 2's table). The next cell shows
#   which keys take the weight.
# - **alibi**: 0.264 at length 16, barely above "none", and nearly flat with length (0.212 at 128). As
#   section 5 said, its bias falls with distance and cannot single out "exactly 3 back"; the tokens are
#   random, so content cannot help. ALiBi was made for language modelling, where recent tokens matter most,
#   and there Press et al. found it extrapolates; this task asks for something a recency prior cannot give.
#   Nothing it learned depends on the length, so it loses little as the sequences grow.
# - **none**: only the causal mask, and 0.248 at length 16: far from copying, but 4 times chance. The mask
#   leaks a little about position (a query at $t$ averages over $t + 1$ keys); Kazemnejad et al. (2023) show
#   that a decoder without positional encoding can recover absolute positions this way, counting from a
#   beginning-of-sequence token. Our sequences have none, and our model did not learn to.
#
# Where does the trained RoPE model's last block put its weight? For each offset $d$, the mean weight a
# query gives the key $d$ places back (both heads), at the trained positions and over queries 64-127; and,
# for the offsets that take the most weight, the angle of the four fastest pairs there, in turns (mod 1):

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
with torch.no_grad():
    _, all_weights = models["rope"](ids.to(device), need_weights=True)          # per block: (B, H, L, L)
attn_weights = all_weights[-1].cpu()                                             # the last block: (256, 2, 128, 128)
on_key = [torch.diagonal(attn_weights, offset=-d, dim1=-2, dim2=-1) for d in range(65)]   # d: (B, H, L - d), query t, key t - d
trained = on_key[3][..., :13].mean().item()                                     # queries 3..15
late = torch.tensor([w[..., 64 - d:].mean().item() for d, w in enumerate(on_key)])   # (65,): queries 64..127
print(f"queries  3-15: weight on the key 3 back {trained:.3f}")
print(f"queries 64-127: weight on the key 3 back {late[3]:.3f}; the offsets with the most weight:")
for d in late.topk(4).indices.tolist():
    turns = rotary.rotary_angles(torch.tensor([d]), D, dtype=torch.float64)[0] / (2 * math.pi) % 1   # (D/2,)
    print(f"  d = {d:2d}: weight {late[d]:.3f};  pairs 0-3 at {turns[:4].numpy().round(3)} turns")
print("rope's accuracy at positions 21, 22, 40, 41:",
      "  ".join(f"{per_position['rope'][t].item():.3f}" for t in (21, 22, 40, 41)))
assert trained > 0.9 and late.argmax() != 3

# %% [markdown]
# At the trained positions the last block puts 0.992 of its weight on the key 3 back. Over queries 64-127
# it puts only 0.141 there, and more on the keys 41 and 60 back (0.496 and 0.167); 22 back gets 0.117.
# Look at their angles: pair 0, the fastest, sits within 0.08 of a turn of its angle at offset 3 (0.477) at
# all three, and pair 1 within 0.14 of a turn of its own (0.151). Offset 22 is 19 positions further than 3,
# about 3 turns of pair 0 and one of pair 1; 41 and 60 add 19 again. Within 16 positions only the two fast
# pairs turn through most or all of their circle, and the model learned to find offset 3 mostly through
# them; pairs 2 and 3, which tell these offsets apart, sit there at angles it never saw (0.653 and 0.206
# turns at offset 41). The accuracy position by position says the same: 1.000 at position 21, 0.883 at 22
# (the first query with a key 22 back), 0.645 at 40 and 0.316 at 41 (the first with a key 41 back).
# The rotation did its job (offset 3 scores as before); offsets the model never met impersonate it.
# Remedies used in practice keep long contexts within the angles seen in training, by rescaling the
# positions (position interpolation, Chen et al. 2023), or simply train on longer sequences.
#
# ## 7. Bug hunt
#
# A colleague wrote the inference code for a RoPE checkpoint. Their rotary, `apply_rotary_v2`, has the
# docstring of `rotary.apply_rotary` word for word (`help(apply_rotary_v2)`), the same signature, and
# runs without an error. Put it into section 6's trained RoPE model: a module like `rotary.Rotary`, calling
# the suspect, in both blocks.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
from attn_course.broken import apply_rotary_v2


class RotaryV2(nn.Module):
    """rotary.Rotary with the colleague's apply_rotary_v2: keys at 0..S-1, queries the last L of them."""

    def forward(self, query, key):                                               # (B, H, L, D), (B, H, S, D)
        L, S = query.shape[-2], key.shape[-2]
        key_positions = torch.arange(S, device=key.device)                       # (S,)
        return apply_rotary_v2(query, key_positions[S - L:]), apply_rotary_v2(key, key_positions), None


rope_model = models["rope"]
ids16, targets16 = positions.offset_copy_batch(256, 16, generator=torch.Generator().manual_seed(2))   # (256, 16) each
for name, positional in [("rotary.Rotary()", rotary.Rotary()), ("RotaryV2()", RotaryV2())]:
    for block in rope_model.blocks:
        block.self_attn.positional = positional
    with torch.no_grad():
        logits = rope_model(ids16.to(device))                                    # (B, L, V)
    loss = F.cross_entropy(logits.flatten(0, 1), targets16.to(device).flatten(), ignore_index=-100).item()
    print(f"{name:16s}: logits {tuple(logits.shape)}, loss {loss:.3f}, accuracy at length 16 "
          f"{positions.copy_accuracy(rope_model, 16):.3f}")
for block in rope_model.blocks:
    block.self_attn.positional = rotary.Rotary()                                 # the reference again

# %% [markdown]
# The same shapes, no error, and a model that no longer works: a loss of 7.420 instead of 0.001 (worse than
# a uniform guess, $\ln 16 = 2.773$) and an accuracy of 0.133, near chance. Investigate:
#
# 1. Section 3 found each feature's partner with one-hot rows. Do the same with `apply_rotary_v2`.
# 2. Check the relative property on the suspect: does $q_m \cdot k_n$ still depend only on $m - n$?
# 3. Read `inspect.getsource(apply_rotary_v2)`, both branches.
#
# <details><summary>Hint 1</summary>With <code>interleaved=False</code> (the default, what
# <code>RotaryV2</code> asks for), <code>apply_rotary_v2</code> turns feature 0 with feature 1, feature 2 with
# feature 3: the neighbours. The checkpoint was trained with half-split pairs, 0 with 8, 1 with 9.</details>
# <details><summary>Hint 2</summary>It does: the suspect is a perfectly good RoPE, the interleaved one. That
# is why nothing looks broken until trained weights meet it. Each convention alone is self-consistent;
# only the weights know which features were turned together in training.</details>
# <details><summary>Hint 3</summary>The two branches are swapped: <code>interleaved=False</code> runs Meta's
# complex-number code (neighbouring pairs), <code>interleaved=True</code> the "rotate half" code. This is
# the classic checkpoint-conversion bug: code and weights from the two conventions mixed.</details>
#
# The check names the property. The suspect is package code and the check's tripwire (which refuses
# answers that call the package's reference) is armed by default; it is not what is on trial here:

# %% tags=["otter_ignore"]
with checks.tripwire.disarmed():
    try:
        checks.check_apply_rotary(apply_rotary_v2)
        verdict = None
    except checks.CheckFailure as err:
        verdict = err
print(f"kind: {verdict.kind}")
print(verdict)
assert verdict is not None and verdict.kind == "pairing"

# %% [markdown]
# ### Exercise 2 — fix it
#
# Here the fix is in the code: swap the two branches back. The same mismatch happens with correct code when
# the *checkpoint* comes from the other convention: Meta's Llama checkpoints were trained with interleaved
# pairs, and Hugging Face's Llama code applies half-split pairs. Instead of changing the code, the
# conversion reorders the **weights**: within each head, the query and key projection rows
# that produced features $(2i, 2i + 1)$ move to rows $i$ and $i + D/2$. Scores are sums over features,
# $q \cdot k = \sum_d q_d k_d$: reordering the features of both $q$ and $k$ the same way changes no score,
# and after the reordering half-split RoPE turns together exactly the features interleaved RoPE turned
# together. The values and the output projection are not turned and stay as they are.
#
# Write `interleaved_to_half_split(weight, num_heads)` for a projection `weight` $(H \cdot D, \dots)$ (a
# `nn.Linear` weight $(H \cdot D, E)$, or its bias $(H \cdot D,)$), heads stacked along dim 0: return a new
# tensor of the same shape in which each head's rows $0, 1, 2, \dots, D - 1$ come in the order
# $0, 2, 4, \dots, D - 2, 1, 3, \dots, D - 1$. Do not modify `weight`.

# %% [raw]
# # BEGIN QUESTION
# name: q2_bug_hunt
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def interleaved_to_half_split(weight, num_heads):
    """(H * D, ...) -> (H * D, ...): each head's rows 0, 1, 2, ... reordered to 0, 2, 4, ..., 1, 3, 5, ... (a copy)."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write interleaved_to_half_split")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    head_rows = weight.reshape(num_heads, weight.shape[0] // num_heads, *weight.shape[1:])   # (H, D, ...)
    evens_then_odds = torch.cat((head_rows[:, 0::2], head_rows[:, 1::2]), dim=1)             # (H, D, ...): a new tensor
    return evens_then_odds.reshape(weight.shape)                                             # (H * D, ...)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(interleaved_to_half_split):
    from attn_course.checks import check_interleaved_to_half_split
    check_interleaved_to_half_split(interleaved_to_half_split)

test_q2_public(interleaved_to_half_split)

# %%
# HIDDEN
def test_q2_hidden(interleaved_to_half_split):
    from attn_course.checks import check_interleaved_to_half_split
    check_interleaved_to_half_split(interleaved_to_half_split, thorough=True)

test_q2_hidden(interleaved_to_half_split)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# Now the whole conversion, with the package's `rotary.interleaved_to_half_split` (the reference of Exercise
# 2; your function is not needed). A fresh RoPE model trained as in section 6, but with the interleaved
# pairing in both blocks: a "Meta-style" checkpoint. We score it under its own code, under half-split code
# with its weights unchanged, and under half-split code after converting `q_proj` and `k_proj`, weights and
# biases, in every block.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
meta_style = positions.PositionModel("rope").to(device)
for block in meta_style.blocks:
    block.self_attn.positional = rotary.Rotary(interleaved=True)                 # trained with neighbouring pairs
positions.train_position_model(meta_style, steps=400, batch_size=64, length=16)
scores = {"interleaved code (as trained)": [positions.copy_accuracy(meta_style, n) for n in test_lengths]}
for block in meta_style.blocks:
    block.self_attn.positional = rotary.Rotary()                                 # half-split code, weights unchanged
scores["half-split code, weights as trained"] = [positions.copy_accuracy(meta_style, n) for n in test_lengths]
with torch.no_grad():
    for block in meta_style.blocks:
        attn = block.self_attn
        for proj in (attn.q_proj, attn.k_proj):                                  # v_proj and out_proj: not rotated
            proj.weight.copy_(rotary.interleaved_to_half_split(proj.weight, attn.num_heads))   # (E, E), rows permuted
            proj.bias.copy_(rotary.interleaved_to_half_split(proj.bias, attn.num_heads))       # (E,)
scores["half-split code, converted weights"] = [positions.copy_accuracy(meta_style, n) for n in test_lengths]
print(f"{'accuracy at test length':38s}" + "".join(f"{n:>8d}" for n in test_lengths))
for name, row in scores.items():
    print(f"{name:38s}" + "".join(f"{a:8.3f}" for a in row))
trained, unconverted, converted = scores.values()
assert max(abs(a - b) for a, b in zip(trained, converted)) < 1e-4, "the conversion must keep every prediction"
assert unconverted[0] < 0.5 < trained[0]

# %% [markdown]
# Under its own code the interleaved checkpoint copies perfectly at length 16 (1.000) and generalises much
# like section 6's RoPE model (0.966 at 32 against 0.921: another training run of the same scheme). Under
# half-split code, weights unchanged, it falls to 0.172, a little above chance. After the conversion it gives
# the same accuracy as before at every length (the notebook asserts it): no weight changed value, only place.
# `rotary.interleaved_to_half_split` is the `permute` of Hugging Face's `convert_llama_weights_to_hf.py`
# ("permute for sliced rotary"), which does exactly this to `wq` and `wk` when it converts Meta's Llama
# checkpoints.
#
# ## Summary
#
# - Positions **added** to the tokens (sinusoidal, learned; lesson 07) reach the score mixed with content,
#   and the score depends on where the two tokens are: the positional part of a projected score spread
#   over 291.81 along one diagonal here.
# - **RoPE** turns each pair of query and key features by $p\,\theta_i$, $\theta_i = 10000^{-2i/D}$; the
#   score $q_m \cdot k_n$ depends only on $m - n$ (to $5.1 \times 10^{-13}$ over 2,000 random pairs and
#   shifts), and ours equals Hugging Face's Llama. Two pairings exist, **interleaved** $(2i, 2i + 1)$
#   (RoFormer, GPT-J, Meta's Llama) and **half-split** $(i, i + D/2)$ (GPT-NeoX, Hugging Face's Llama):
#   the same rotation of reordered features, so weights convert by reordering the rows of $W_Q$ and $W_K$
#   per head.
# - **ALiBi** adds $-m_h (i - j)$ to the scores, slopes $2^{-8h/H}$ ($1/2 \dots 1/256$ for 8 heads): a
#   fixed recency prior per head, no weights.
# - Trained at 16 tokens on offset copy, learned and sinusoidal positions fail at position 16 or 17;
#   RoPE carries on (0.921 at length 32) and fades as keys at offsets it never met, whose fast pairs
#   repeat the angles of offset 3, draw the weight (0.353 at 128); ALiBi (0.264) and no positions (0.248)
#   never learn an exact offset.
# - A pairing mismatch runs, keeps every shape, and turns a perfect model into a guesser (section 7).
#
# **Next:** to go further, train `PositionModel("rope")` at length 32 and test it again, or raise the base to 500000
# (`rotary.Rotary(base=500000.0)`) and see what slower pairs do to length generalisation.
#
# **References.** Vaswani et al. (2017), *Attention Is All You Need*, §3.5 (sinusoidal positions). Su, Lu,
# Pan, Murtadha, Wen & Liu (2021), *RoFormer: Enhanced Transformer with Rotary Position Embedding*, §3.2
# and eq. (34) of §3.4.2. Press, Smith & Lewis (2022), *Train Short, Test Long: Attention with Linear Biases
# Enables Input Length Extrapolation* (ALiBi), §3. Kazemnejad, Padhi, Natesan Ramamurthy, Das & Reddy
# (2023), *The Impact of Positional Encoding on Length Generalization in Transformers* (decoders without
# positional encoding, NoPE). Chen, Wong, Chen & Tian (2023), *Extending Context Window of Large Language
# Models via Positional Interpolation*. Hugging Face transformers: `models/llama/modeling_llama.py`
# (`LlamaRotaryEmbedding`, `apply_rotary_pos_emb`, `rotate_half`) and
# `models/llama/convert_llama_weights_to_hf.py` (`permute`).
