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
# name: 03_softmax_and_context
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
# # Lesson 03 — Softmax, weighted sums and the output layer
#
# **Learning goals.** After this lesson you can
# 1. turn a row of attention scores into attention weights with softmax, and say why they form a
#    probability distribution over the keys;
# 2. explain what the softmax temperature does, and measure it with entropy;
# 3. compute context vectors as weighted sums of the values;
# 4. put an output layer on top of the context, as in Luong et al. (2015);
# 5. find a bug that leaves every shape right and every number wrong.
#
# Lesson 02 produced `attn_scores`: one number per (query, key) pair, any real value. This lesson
# turns them into something we can average with.
#
# Shape legend (the same in every lesson): **B** batch, **L** query length, **S** key/value length,
# **D** head_dim (the paper's $d_k$), **E** d_model, **V** vocabulary.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from torch import nn

import attn_course as ac
from attn_course import checks, data, plot
from attn_course.widgets import TemperatureExplorer

torch.set_printoptions(precision=4, sci_mode=False)
device = ac.get_device()  # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)  # a seeded CPU generator: the same numbers on every device

# %% [markdown]
# ## 1. From scores to weights
#
# For one query $q$ and keys $k_1, \dots, k_S$ the scaled dot-product scores are
# $e_j = q \cdot k_j / \sqrt{d_k}$. Softmax turns them into **attention weights**
#
# $$\alpha_j = \frac{\exp(e_j)}{\sum_{j'=1}^{S} \exp(e_{j'})}, \qquad \alpha_j > 0,\quad \sum_j \alpha_j = 1 .$$
#
# The weights are a probability distribution over the keys (Bahdanau et al. 2015, eq. 6;
# Vaswani et al. 2017, eq. 1). Softmax keeps the order of the scores and is differentiable, so the
# model can learn where to look by gradient descent.
#
# We take a real sentence, give each token a random embedding (lesson 01), map the embeddings to
# queries and keys with two random linear maps (lesson 02), and let every token attend to every
# token of the same sentence.

# %%
tokens = data.tokenize("The cat sat on the mat.")
vocab = data.Vocab([tokens])
ids = torch.tensor([vocab.encode(tokens)])                      # (B=1, S=7)
embedding = nn.Embedding(len(vocab), 16)                        # V=8 rows of E=16 numbers
with torch.no_grad():
    embedding.weight.copy_(ac.randn(len(vocab), 16, generator=g))
x = embedding(ids).detach().to(device)                          # (1, 7) -> (1, 7, E=16)
W_q = ac.randn(16, 8, generator=g, device=device) / 4           # E=16 -> D=8
W_k = ac.randn(16, 8, generator=g, device=device) / 4
query, key = x @ W_q, x @ W_k                                   # (1, 7, 16) -> (1, 7, 8) each
attn_scores = ac.scaled_dot_scores(query, key)                  # (1, 7, 8) x (1, 7, 8) -> (1, 7, 7)
print(tokens)
print("attn_scores of the query 'sat':", attn_scores[0, 2].cpu())

# %%
attn_weights = torch.softmax(attn_scores, dim=-1)               # (1, 7, 7), softmax over the keys
print("attn_weights of 'sat':", attn_weights[0, 2].cpu())
print("row sums:", attn_weights.sum(dim=-1).cpu().round(decimals=4))  # every query's weights sum to 1
print("all positive:", bool((attn_weights > 0).all()))

# %% [markdown]
# Every row sums to 1, over the **key** axis `dim=-1`; the columns do not. Look at the two rows of
# "the": they are identical, because both copies of "the" have the same embedding and so the same
# query. Nothing here knows *where* a token is; lesson 07 adds positions.

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
plot.attention_heatmap(attn_scores[0], tokens, tokens, ax=ax0, vmin=None, vmax=None,
                       title="attn_scores (any real number)")
plot.attention_heatmap(attn_weights[0], tokens, tokens, ax=ax1,
                       title="attn_weights = softmax over keys")
plt.show()

# %% [markdown]
# ## 2. Temperature
#
# Dividing the scores by a **temperature** $T$ before the softmax changes how peaked the
# distribution is (Hinton et al. 2015, eq. 1):
#
# $$\alpha_j(T) = \frac{\exp(e_j / T)}{\sum_{j'} \exp(e_{j'} / T)} .$$
#
# $T \to 0$ puts all weight on the largest score (argmax, *hard* attention, lesson 04);
# $T \to \infty$ gives the uniform distribution. Dividing by $\sqrt{d_k}$ in lesson 02 is a
# temperature of $\sqrt{d_k}$. We measure peakedness with the **entropy**
# $H(\alpha) = -\sum_j \alpha_j \log \alpha_j$, in nats: 0 for a one-hot row, $\log S$ for a uniform one.
#
# **Try it.** Move the slider. Watch the bars and the entropy readout. Which temperature makes the
# query "sat" look at one token only? At which does it stop caring?

# %% tags=["nbval-ignore-output"]
explorer = TemperatureExplorer(attn_scores[0, 2].cpu(), tokens)
explorer

# %% [markdown]
# The same in numbers: the entropy of the weights of "sat" at a few temperatures.

# %%
for t in [0.1, 0.3, 1.0, 2.0, 5.0]:
    explorer.slider.value = t                                    # what moving the slider does
    print(explorer.text().splitlines()[0])
explorer.slider.value = 1.0
print(f"uniform over S={len(tokens)} keys: log S = {math.log(len(tokens)):.3f} nats")

# %% [markdown]
# ### Exercise 1 — softmax with a temperature
#
# Write `softmax_with_temperature(attn_scores, temperature)` for scores of shape `(..., L, S)`:
# divide by the temperature, then a softmax over the **key** axis. Do it by hand with `torch.exp`
# rather than `torch.softmax`, and make it safe for large scores: subtract each row's maximum
# before `exp` (the result does not change, since $\exp(e_j - m) / \sum \exp(e_{j'} - m)$ is the
# same fraction, but nothing overflows). The check below refuses an answer that calls a softmax
# (`torch.softmax`, `F.softmax`, `Tensor.softmax`, `nn.Softmax`, their log versions, or the package's
# `ac.softmax_with_temperature`), here exactly as when your notebook is graded.

# %% [raw]
# # BEGIN QUESTION
# name: q1_softmax_with_temperature
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def softmax_with_temperature(attn_scores, temperature=1.0):
    """Softmax of attn_scores / temperature over the key axis (dim=-1); shape (..., L, S) kept."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write softmax_with_temperature")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    scaled = attn_scores / temperature                                   # (..., L, S)
    shifted = scaled - scaled.max(dim=-1, keepdim=True).values           # largest score per row -> 0
    exp = torch.exp(shifted)
    return exp / exp.sum(dim=-1, keepdim=True)                           # each row sums to 1 over S
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(softmax_with_temperature):
    from attn_course.checks import check_softmax_with_temperature
    check_softmax_with_temperature(softmax_with_temperature)

test_q1_public(softmax_with_temperature)

# %%
# HIDDEN
def test_q1_hidden(softmax_with_temperature):
    from attn_course.checks import check_softmax_with_temperature
    check_softmax_with_temperature(softmax_with_temperature, thorough=True)

test_q1_hidden(softmax_with_temperature)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. Weighted sums: context vectors
#
# The weights say *where* to look; the **values** say *what* is found there. Each query's
# **context vector** is the weighted average of the values:
#
# $$c_i = \sum_{j=1}^{S} \alpha_{ij}\, v_j, \qquad C = A V \in \mathbb{R}^{L \times D_v}.$$
#
# Because the weights are non-negative and sum to 1, $c_i$ lies inside the cloud of the values:
# a soft choice between them. With one weight near 1 it *is* that value (Bahdanau et al. 2015,
# eq. 5; Vaswani et al. 2017, eq. 1).

# %%
value = x                                                        # (1, S=7, Dv=16)
context = ac.weighted_sum(attn_weights, value)                   # (1, 7, 7) @ (1, 7, 16) -> (1, 7, 16)
print("context:", tuple(context.shape))
checks.expect_tensor("context", context, ac.scaled_dot_product_attention(query, key, value),
                     legend="(B, L, Dv)")
print("equal to scaled_dot_product_attention(query, key, value): yes")

# %% [markdown]
# A picture in two dimensions: four values $v_j$ (dots), and the context of one query as the
# temperature grows. At low $T$ it sits on the best-matching value; at high $T$ it moves to the
# plain average of all four (the cross).

# %%
values_2d = torch.tensor([[0.0, 0.0], [4.0, 0.5], [1.0, 3.0], [3.5, 3.5]])   # (S=4, Dv=2)
scores_2d = torch.tensor([2.0, 1.0, 0.5, -1.0])                              # one query's scores (S,)
path = torch.stack([ac.softmax_with_temperature(scores_2d, t) @ values_2d     # (S,) @ (S, 2) -> (2,)
                    for t in torch.logspace(-1, 1.3, 40).tolist()])
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
ax.scatter(*values_2d.T, s=80, c="C1", zorder=3, label="values $v_j$")
for j, (vx, vy) in enumerate(values_2d.tolist()):
    ax.annotate(f"$v_{j}$ (score {scores_2d[j]:.1f})", (vx, vy), textcoords="offset points", xytext=(6, 6))
ax.plot(*path.T, "-o", ms=3, c="C0", label="context as T grows 0.1 -> 20")
ax.scatter(*values_2d.mean(0), marker="x", s=80, c="k", label="plain average")
ax.set_xlabel("value dim 0")
ax.set_ylabel("value dim 1")
ax.set_xlim(-0.5, 5.5)
ax.set_ylim(-0.5, 4.2)
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
plt.show()

# %% [markdown]
# ### Exercise 2 — attention from scratch
#
# Write `attend(query, key, value)` for `query (..., L, D)`, `key (..., S, D)`,
# `value (..., S, Dv)`. Return the tuple `(context, attn_weights)`:
# scores $QK^\top / \sqrt{d_k}$ of shape `(..., L, S)`, softmax over the keys, weighted sum of the
# values. Use `key.transpose(-2, -1)`, never `.T` (on 3-D tensors `.T` reverses every axis).

# %% [raw]
# # BEGIN QUESTION
# name: q2_attend
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def attend(query, key, value):
    """Scaled dot-product attention; returns (context (..., L, Dv), attn_weights (..., L, S))."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write attend")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    d_k = query.shape[-1]
    attn_scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)        # (..., L, D) @ (..., D, S) -> (..., L, S)
    attn_weights = torch.softmax(attn_scores, dim=-1)                   # rows sum to 1 over S
    context = attn_weights @ value                                      # (..., L, S) @ (..., S, Dv) -> (..., L, Dv)
    return context, attn_weights
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(attend):
    from attn_course.checks import check_attention
    check_attention(attend)

test_q2_public(attend)

# %%
# HIDDEN
def test_q2_hidden(attend):
    from attn_course.checks import check_attention
    check_attention(attend, thorough=True)

test_q2_hidden(attend)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ### Attention before neural networks: Nadaraya-Watson kernel regression
#
# A softmax and a weighted sum are older than attention. To predict $y$ at a new $x$ from noisy
# observations $(x_i, y_i)$, Nadaraya (1964) and Watson (1964) average the observed $y_i$, weighting
# each by a kernel of the distance $x - x_i$ (Zhang et al., *Dive into Deep Learning*, §11.2). With a
# Gaussian kernel of width $w$ that is attention, as above: the **query** is $x$, the **keys** are the
# $x_i$, the **values** the $y_i$, and the score is $-(x - x_i)^2 / 2w^2$: the closer the key, the higher.
#
# $$\hat y(x) = \sum_i \mathrm{softmax}_i\!\left(-\frac{(x - x_i)^2}{2 w^2}\right) y_i
# = \frac{\sum_i K(x - x_i)\, y_i}{\sum_j K(x - x_j)}, \qquad K(u) = e^{-u^2 / 2w^2}.$$
#
# Nothing is learned but $w$, and $w$ plays the part of the temperature of section 2.

# %%
gen = torch.Generator().manual_seed(3)
truth = lambda x: 2 * torch.sin(x) + x ** 0.8                           # the curve behind the data
x_train = torch.sort(torch.rand(50, generator=gen) * 5).values          # (50,) keys: where we observed
y_train = truth(x_train) + 0.5 * torch.randn(50, generator=gen)         # (50,) values: noisy observations
x_query = torch.arange(0.0, 5.0, 0.1)                                   # (50,) queries: where we predict
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
ax0.scatter(x_train, y_train, s=10, color="grey", label="observations")
ax0.plot(x_query, truth(x_query), "k--", label="true curve")
for width in (0.1, 0.5, 2.0):
    nw_scores = -(x_query[:, None] - x_train[None, :]) ** 2 / (2 * width ** 2)   # (50 queries, 50 keys)
    nw_weights = torch.softmax(nw_scores, dim=-1)                        # rows sum to 1 over the keys
    y_hat = nw_weights @ y_train                                         # (50, 50) @ (50,) -> (50,)
    kernel = torch.exp(nw_scores.double())                               # K(x - x_i), float64
    torch.testing.assert_close(y_hat.double(), kernel @ y_train.double() / kernel.sum(-1), atol=1e-5, rtol=1e-5)
    error = (y_hat - truth(x_query)).pow(2).mean().sqrt().item()
    print(f"width w = {width}: root-mean-square error against the true curve {error:.3f}")
    ax0.plot(x_query, y_hat, label=f"w = {width}")
    if width == 0.5:
        plot.attention_heatmap(nw_weights, ax=ax1, annotate=False, vmax=None,
                               title="attn_weights, w = 0.5: each query looks at nearby keys")
        ax1.set_xticks(range(0, 50, 10), [f"{x_train[i]:.1f}" for i in range(0, 50, 10)])
        ax1.set_yticks(range(0, 50, 10), [f"{x_query[i]:.1f}" for i in range(0, 50, 10)])
        ax1.set_xlabel("key: the observation's x_i")
        ax1.set_ylabel("query: x")
ax0.set_xlabel("x")
ax0.legend(fontsize=8)
ax0.set_title("Nadaraya-Watson: softmax-weighted average of observations")
plt.show()
print("the softmax-weighted sum equals the kernel-weighted average: checked")

# %% [markdown]
# The width acts as a temperature. $w = 2.0$ spreads every query's weight over almost all the keys and
# draws a nearly flat line (error 0.887 against the true curve). $w = 0.5$ is smooth and close, but
# rounds off the peak and the start (0.309). $w = 0.1$ attends to the two or three nearest observations
# only: it copies their noise and wiggles, yet here it lands closest (0.252). Which width is right is a
# question for held-out data, as with any temperature. Attention in the rest of the course is this
# weighted average with *learned* queries, keys and scores.

# %% [markdown]
# ## 4. The output layer
#
# Attention gives each position a context vector. A model still has to *say* something: in Luong
# et al. (2015, eqs. 5–6) the decoder joins the context $c_t$ to its own state $h_t$, and a linear
# layer and a softmax over the vocabulary turn it into the next word's distribution:
#
# $$\tilde h_t = \tanh\!\left(W_c [c_t ; h_t]\right), \qquad p(y_t \mid \cdot) = \mathrm{softmax}(W_s \tilde h_t).$$
#
# Below, the query plays $h_t$. The layers are untrained, so the distribution is still close to
# uniform; lesson 07 trains a whole transformer. Watch the shapes.

# %%
E, V = x.shape[-1], len(vocab)
torch.manual_seed(0)
W_c = nn.Linear(2 * E, E).to(device)                            # [c; h] (2E) -> E
W_s = nn.Linear(E, V).to(device)                                # E -> one logit per word of the vocabulary
with torch.no_grad():
    h_tilde = torch.tanh(W_c(torch.cat([context, x], dim=-1)))  # [c; h]: (1, 7, 2E) -> (1, 7, E)
    logits = W_s(h_tilde)                                       # (1, 7, E) -> (1, 7, V)
    next_word = torch.softmax(logits, dim=-1)                   # a distribution over V=8 words per position
print("h_tilde:", tuple(h_tilde.shape), " logits:", tuple(logits.shape))
print("each position's distribution sums to", next_word.sum(-1).cpu().round(decimals=4))
print(f"entropy after 'sat': {ac.entropy(next_word[0, 2]).item():.2f} nats; "
      f"uniform over V={V} words: {math.log(V):.2f} (untrained: nearly uniform)")

# %% [markdown]
# ## 5. Bug hunt
#
# A colleague wrote `attention_weights_v2(query, key)`. Its docstring (`help(attention_weights_v2)`;
# the source printed below leaves it out) is word for word the reference's. Every shape is right and
# it runs without an error. Something is wrong.
#
# 1. Run it on our sentence and look at the picture and the row sums.
# 2. Compare with the reference `ac.attention_weights`.
# 3. Read its source (`inspect.getsource`) and find the one change.

# %%
import inspect

from attn_course.broken import attention_weights_v2

suspect = attention_weights_v2(query, key)                             # (1, 7, 7)
print("row sums (over keys):      ", suspect.sum(dim=-1).cpu().round(decimals=4))
print("column sums (over queries):", suspect.sum(dim=-2).cpu().round(decimals=4))
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
plot.attention_heatmap(ac.attention_weights(query, key)[0], tokens, tokens, ax=ax0, title="reference")
plot.attention_heatmap(suspect[0], tokens, tokens, ax=ax1, title="attention_weights_v2")
plt.show()

# %% [markdown]
# <details><summary>Hint 1</summary>Which sums are 1: the rows or the columns? Which should be?</details>
# <details><summary>Hint 2</summary>Look at the <code>dim</code> argument of the softmax.</details>
#
# ### Exercise 3 — fix it
#
# Write `fixed_attention_weights(query, key, attn_mask=None, is_causal=False, scale=None)`, returning
# `attn_weights (..., L, S)`: the same code with the bug removed. `inspect.getsource(attention_weights_v2)`
# shows where to start; the cell imports the helpers it calls, so you may copy it as it is.

# %%
from attn_course.attention import causal_mask, masked_softmax            # the helpers it calls: the code you copy from below runs here as printed
from attn_course.scoring import validate_query_key

print(inspect.getsource(attention_weights_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q3_bug_hunt
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    """attn_weights (..., L, S) = softmax(query key^T * scale + mask) over the key axis."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 3: fix attention_weights_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    validate_query_key(query, key, same_dim=True)
    L, S = query.shape[-2], key.shape[-2]
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as in PyTorch's SDPA)")
    if is_causal:
        attn_mask = causal_mask(L, S, device=query.device)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    attn_scores = query @ key.transpose(-2, -1) * scale  # (..., L, D) @ (..., D, S) -> (..., L, S)
    return masked_softmax(attn_scores, attn_mask, dim=-1)   # over the keys (dim=-1), not the queries
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q3_public(fixed_attention_weights):
    from attn_course.checks import check_attention_weights
    check_attention_weights(fixed_attention_weights)

test_q3_public(fixed_attention_weights)

# %%
# HIDDEN
def test_q3_hidden(fixed_attention_weights):
    from attn_course.checks import check_attention_weights
    check_attention_weights(fixed_attention_weights, thorough=True)

test_q3_hidden(fixed_attention_weights)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Summary
#
# - Softmax over the **key** axis (`dim=-1`) turns scores into weights: positive, each row summing to 1.
# - Temperature $T$ sharpens ($T<1$) or flattens ($T>1$) the weights; entropy measures it, from 0
#   (one key) to $\log S$ (uniform). $1/\sqrt{d_k}$ is a fixed temperature.
# - The context vector is the weights' average of the values: `attn_weights @ value`, `(..., L, Dv)`.
# - An output layer $\mathrm{softmax}(W_s \tanh(W_c[c; h]))$ turns context into a prediction.
# - A softmax over the wrong axis runs, keeps every shape, and is wrong: check that rows sum to 1.
#
# **Next:** lesson 04 lets the temperature go to zero — hard attention, which picks one position,
# and the tricks (REINFORCE, Gumbel-softmax) that train it anyway.
#
# **References.** Bahdanau, Cho & Bengio (2015), *Neural Machine Translation by Jointly Learning to
# Align and Translate*, eqs. 5–6. Luong, Pham & Manning (2015), *Effective Approaches to
# Attention-based Neural Machine Translation*, eqs. 5–6. Vaswani et al. (2017), *Attention Is All
# You Need*, eq. 1. Hinton, Vinyals & Dean (2015), *Distilling the Knowledge in a Neural Network*.
