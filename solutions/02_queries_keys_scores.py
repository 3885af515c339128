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
# name: 02_queries_keys_scores
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
# # Lesson 02 — Queries, keys, values and scores
#
# **Learning goals.** After this lesson you can
# 1. multiply batches of matrices with `torch.bmm` and `@`, and predict the result's shape,
#    broadcasting included;
# 2. make queries, keys and values from token embeddings with linear maps, and say what each one is for;
# 3. compute five content-based scoring rules on the same inputs — concat, additive (Bahdanau), dot,
#    scaled dot, general (Luong) — explain why a linear layer that scores each key from $[q; k]$ lets
#    the query change nothing, and recognise the second article's "sum of tanh" as the additive rule;
# 4. build the second article's `Attn`, location-based attention (Luong et al. 2015, eq. 9): one
#    weight per *position*, decided by the query; measure where it works and where it fails beside a
#    content-based rule;
# 5. explain, with a measurement, why the transformer divides its scores by $\sqrt{d_k}$;
# 6. find a bug that changes no shape and raises no error.
#
# Lesson 01 turned a sentence into embeddings of shape `(B, T, E)`. This lesson turns embeddings
# into `attn_scores`: one number per (query, key) pair saying how well they match. Lesson 03 turns
# the scores into weights and the weights into context vectors.
#
# Shape legend (the same in every lesson): **B** batch, **L** query length, **S** key/value length,
# **D** head_dim (the paper's $d_k$), **E** d_model, **V** vocabulary. PyTorch calls d_model
# `embed_dim`, Hugging Face `hidden_size`.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from torch import nn

import attn_course as ac
from attn_course import checks, data, plot, training
from attn_course.widgets import ScaleExplorer

torch.set_printoptions(precision=4, sci_mode=False)
device = ac.get_device()  # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)  # a seeded CPU generator: the same numbers on every device

# %% [markdown]
# ## 1. Batched matrix products: `torch.bmm` and `@`
#
# Attention is mostly matrix products, done for every sentence of a batch at once.
# `torch.bmm(a, b)` multiplies B pairs of matrices: `(B, n, m) @ (B, m, p) -> (B, n, p)`. The inner
# sizes `m` must agree; the batch size B must be the same on both sides. Entry `[b, i, j]` is the dot
# product of row `i` of `a[b]` with column `j` of `b[b]`.

# %%
a = ac.randn(2, 3, 4, generator=g, device=device)              # (B=2, n=3, m=4)
b = ac.randn(2, 4, 5, generator=g, device=device)              # (B=2, m=4, p=5)
c = torch.bmm(a, b)                                             # (2, 3, 4) @ (2, 4, 5) -> (2, 3, 5)
print("torch.bmm:", tuple(a.shape), "@", tuple(b.shape), "->", tuple(c.shape))
one_by_one = torch.stack([a[i] @ b[i] for i in range(2)])       # two (3, 4) @ (4, 5) -> (2, 3, 5)
checks.expect_tensor("torch.bmm(a, b)", c, one_by_one, legend="(B, n, p)")
print("equal to one matrix product per batch element: yes")
row_dot_column = (a[0, 1] * b[0, :, 2]).sum()                   # row 1 of a[0] . column 2 of b[0]
print(f"c[0, 1, 2] = {c[0, 1, 2].item():.3f} = row 1 of a[0] . column 2 of b[0] = {row_dot_column.item():.3f}")

# %% [markdown]
# The operator `@` (`torch.matmul`) does the same and more: it treats every dimension but the last
# two as batch dimensions and **broadcasts** them, as `+` does. A weight matrix without a batch
# dimension is shared by the whole batch, and a size-1 dimension stretches to match. `torch.bmm`
# accepts exactly three dimensions and equal batch sizes, nothing else.

# %%
weight = ac.randn(4, 5, generator=g, device=device)             # (m=4, p=5): no batch dim
print("a @ weight:     ", tuple((a @ weight).shape))            # (2, 3, 4) @ (4, 5) -> (2, 3, 5)
q_heads = ac.randn(2, 8, 3, 4, generator=g, device=device)      # (B=2, H=8, L=3, D=4)
k_heads = ac.randn(2, 8, 6, 4, generator=g, device=device)      # (B=2, H=8, S=6, D=4)
per_head = q_heads @ k_heads.transpose(-2, -1)                  # (2, 8, 3, 4) @ (2, 8, 4, 6) -> (2, 8, 3, 6)
print("q @ k^T per head:", tuple(per_head.shape))
left = ac.randn(2, 1, 3, 4, generator=g, device=device)         # (2, 1, 3, 4)
right = ac.randn(1, 6, 4, 5, generator=g, device=device)        # (1, 6, 4, 5)
stretched = left @ right                                        # batch dims (2, 1) and (1, 6) -> (2, 6): (2, 6, 3, 5)
print("broadcast 1s:   ", tuple(stretched.shape))
try:
    torch.bmm(a, weight)                                        # (2, 3, 4) with (4, 5): not 3-D
except RuntimeError as err:
    print("torch.bmm(a, weight) raises", type(err).__name__, "- bmm does not broadcast")

# %% [markdown]
# `k_heads.transpose(-2, -1)` swaps the last two axes only: `(B, H, S, D) -> (B, H, D, S)`. Never
# `.T` on a tensor of more than two dimensions: it reverses *all* axes.
#
# ## 2. Queries, keys and values
#
# Attention was born in translation (Bahdanau et al. 2015). An **encoder** reads the source
# sentence into one state per word; a **decoder** writes the translation one word at a time. At
# each step the decoder
#
# - asks a **query**: "what do I need now?" (from its own state),
# - matches it against a **key** per source word: "what do I contain?" — one score per pair,
# - and gets back a mix of the **values**: "what I hand over if chosen", weighted by the scores.
#
# It is a soft dictionary lookup. A Python `dict` returns the one value whose key equals the query
# exactly; attention returns a blend of all values, weighted by how well each key matches.

# %%
dict_keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # (S=3, D=2): three keys
dict_values = torch.tensor([[10.0], [20.0], [30.0]])               # (S=3, Dv=1): what each key holds
probe = torch.tensor([[0.5, 3.0]])                                 # (L=1, D=2): a query close to key 1
attn_scores = probe @ dict_keys.transpose(-2, -1)                  # (1, 2) @ (2, 3) -> (1, 3)
attn_weights = torch.softmax(attn_scores, dim=-1)                  # (1, 3), sums to 1 over the keys
print("attn_scores: ", attn_scores.round(decimals=3))
print("attn_weights:", attn_weights.round(decimals=3))
answer = attn_weights @ dict_values                                # (1, 3) @ (3, 1) -> (1, 1)
print("answer:      ", answer.round(decimals=2), "(the value of key 1 is 20)")

# %% [markdown]
# Where do queries, keys and values come from? From the embeddings, through three learned linear
# maps (Vaswani et al. 2017, section 3.2.2):
#
# $$Q = X W_Q, \qquad K = X W_K, \qquad V = X W_V, \qquad X \in \mathbb{R}^{T \times E},\; W_Q, W_K, W_V \in \mathbb{R}^{E \times D}.$$
#
# The same word gets three different vectors, one per role. We take a real sentence (Dickens), give
# each token a seeded random embedding (lesson 01), and build the three maps with `nn.Linear`. Its
# weights are set so that queries and keys have entries of variance about 1; section 5 shows why
# that matters.

# %%
tokens = data.tokenize(data.sentences()[0])                     # Dickens, A Tale of Two Cities
vocab = data.Vocab([tokens])
ids = torch.tensor([vocab.encode(tokens)])                      # (B=1, T=14)
E, D = 32, 16                                                   # d_model, head_dim (= d_k)
embedding = nn.Embedding(len(vocab), E)                         # V rows of E numbers
q_proj, k_proj, v_proj = (nn.Linear(E, D, bias=False) for _ in range(3))  # E -> D, three roles
with torch.no_grad():
    embedding.weight.copy_(ac.randn(len(vocab), E, generator=g))
    for proj in (q_proj, k_proj, v_proj):
        proj.weight.copy_(ac.randn(D, E, generator=g) / math.sqrt(E))   # (D, E): entries of variance 1/E
    q_proj, k_proj, v_proj = q_proj.to(device), k_proj.to(device), v_proj.to(device)
    x = embedding(ids).to(device)                               # (1, 14) -> (1, 14, E=32)
    query, key, value = q_proj(x), k_proj(x), v_proj(x)         # (1, 14, 32) -> (1, 14, D=16) each
print(tokens)
print("x:", tuple(x.shape), "-> query, key, value:", tuple(query.shape), tuple(key.shape), tuple(value.shape))
checks.expect_tensor("query", query, x @ q_proj.weight.transpose(0, 1), legend="(B, T, D)")
print("nn.Linear(x) equals x @ W^T: yes;  std of query entries:", round(query.std().item(), 2))

# %% [markdown]
# Here all three come from the same sentence: every word asks about every word (self-attention,
# lesson 05), so L = S = 14. In translation the queries come from the decoder and the keys and
# values from the encoder, and L ≠ S. Three decoder states ask about the 14 source words:

# %%
decoder_states = ac.randn(1, 3, E, generator=g, device=device)  # (B=1, L=3, E): three decoder steps
with torch.no_grad():
    dec_query = q_proj(decoder_states)                          # (1, 3, E) -> (1, 3, D)
cross_scores = torch.bmm(dec_query, key.transpose(1, 2))        # (1, 3, D) @ (1, D, 14) -> (1, 3, 14)
cross_context = torch.softmax(cross_scores, dim=-1) @ value     # (1, 3, 14) @ (1, 14, D) -> (1, 3, D)
print("scores:", tuple(cross_scores.shape), "= one per (decoder step, source word)")
print("what each step gets back:", tuple(cross_context.shape), "= one mix of values per query")

# %% [markdown]
# ## 3. Five scoring rules
#
# A scoring rule maps a query $q_i$ and a key $k_j$ to one number $e_{ij}$. Over all pairs it turns
# `query (B, L, Dq)` and `key (B, S, Dk)` into `attn_scores (B, L, S)`. The classic rules:
#
# | rule | $e_{ij}$ | parameters | source |
# |---|---|---|---|
# | concat | $w^\top [q_i ; k_j] + b$ | $w \in \mathbb{R}^{D_q + D_k}$ | one linear layer on the concatenation |
# | additive | $v^\top \tanh(W_q q_i + W_k k_j)$ | $W_q, W_k \in \mathbb{R}^{A \times D}$, $v \in \mathbb{R}^A$ | Bahdanau et al. 2015, appendix A.1.2 |
# | dot | $q_i^\top k_j$ | none | Luong et al. 2015, eq. 8 |
# | scaled dot | $q_i^\top k_j / \sqrt{d_k}$ | none | Vaswani et al. 2017, eq. 1 |
# | general | $q_i^\top W k_j$ | $W \in \mathbb{R}^{D_q \times D_k}$ | Luong et al. 2015, eq. 8 |
#
# The additive rule is the concat rule with a $\tanh$ and a second layer: $W_q q + W_k k = W[q; k]$
# with $W = [W_q\; W_k]$. (Luong et al. call that tanh version "concat"; here "concat" is the plain
# linear layer, one output per key.) All five are **content-based**: key $j$'s score is computed
# from what key $j$ holds. `attn_course.AttentionScore(method, query_dim)` wraps all five behind one
# interface; we run them on the same queries and keys. Their parameters are random: nothing is
# trained yet.

# %%
methods = ["concat", "additive", "dot", "scaled_dot", "general"]
torch.manual_seed(0)                                            # AttentionScore draws its parameters
rules = {m: ac.AttentionScore(m, query_dim=D).to(device) for m in methods}
with torch.no_grad():
    rule_scores = {m: rule(query, key)[0] for m, rule in rules.items()}   # (1, 14, D) x (1, 14, D) -> (14, 14)
rule_weights = {m: torch.softmax(s, dim=-1) for m, s in rule_scores.items()}  # (14, 14), rows sum to 1
print(f"{'rule':>10} | parameters | attn_scores | score std | mean max weight")
for m in methods:
    n_params = sum(p.numel() for p in rules[m].parameters())
    print(f"{m:>10} | {n_params:10d} | {tuple(rule_scores[m].shape)!s:>11} | {rule_scores[m].std().item():9.2f} "
          f"| {rule_weights[m].max(dim=-1).values.mean().item():.3f}")
checks.expect_tensor("scaled_dot", rule_scores["scaled_dot"], rule_scores["dot"] / math.sqrt(D))
W = rules["general"].weight                                     # (D, D)
checks.expect_tensor("general", rule_scores["general"], query[0] @ W @ key[0].transpose(0, 1))  # (14, 14)
print("scaled_dot = dot / sqrt(D) and general = q W k^T: checked")

# %% [markdown]
# Every rule gives a `(14, 14)` matrix, but of very different spreads: the untrained concat and
# additive rules give small scores and nearly uniform weights; dot and general, the largest. Below
# are the attention weights (softmax over each row), each panel on its own colour scale so that its
# pattern shows. Rows are queries, columns keys.

# %%
titles = [r"concat: $w^\top[q;k]+b$", r"additive: $v^\top\tanh(W_q q+W_k k)$", r"dot: $q^\top k$",
          r"scaled dot: $q^\top k/\sqrt{d_k}$", r"general: $q^\top W k$"]
fig = plot.attention_grid([rule_weights[m] for m in methods], titles, tokens, tokens, ncols=3,
                          share_scale=False, panel_size=(4.6, 4.0))
fig.suptitle("attn_weights of five scoring rules on the same queries and keys (each panel its own colour scale)")
plt.show()

# %% [markdown]
# Two things to see:
#
# - The rows of "it", "was", "the", "of", "times" appear twice, identical: the same token has the
#   same embedding and so the same query. Nothing here knows *where* a token is (lesson 07).
# - **Every row of the concat panel is the same.** Whatever the query, concat ranks the keys the
#   same way. Why? $w^\top [q_i ; k_j] + b = w_q^\top q_i + w_k^\top k_j + b$: a query part plus a
#   key part. The query's part $w_q^\top q_i$ is the same for every key $j$, and softmax ignores
#   anything added to a whole row: the query shifts its row of scores but changes none of the
#   weights, which are the same for every query. (The second article's first rule, `softmax(Linear([q; k]))`, looks the same in code but has
#   one output per *position*, not one per key; there the query does decide the weights: section 4.)
#   The additive rule applies its tanh *before* the sum over its $A$ features, so a query term
#   and a key term no longer separate: in principle that fixes it. Its panel, untrained, looks almost
#   as striped; the numbers below say why.

# %%
w_concat = rules["concat"].linear.weight[0]                     # (Dq + Dk,) = [w_q ; w_k]
w_q, w_k = w_concat[:D], w_concat[D:]                           # (D,), (D,)
with torch.no_grad():
    query_term = query[0] @ w_q                                 # (14, D) @ (D,) -> (14,): one number per query
    key_term = key[0] @ w_k                                     # (14, D) @ (D,) -> (14,): one number per key
    bias = rules["concat"].linear.bias                         # (1,)
    split = query_term[:, None] + key_term[None, :] + bias      # (14, 1) + (1, 14) -> (14, 14)
checks.expect_tensor("concat scores", rule_scores["concat"], split)
print("concat scores = query term + key term + b: checked")
for m in ("concat", "additive"):
    spread = (rule_weights[m] - rule_weights[m][0]).abs().max().item()   # largest gap to row 0
    print(f"{m:>8}: largest difference between two rows of attn_weights = {spread:.3f}")

# %% [markdown]
# How much of a score matrix depends on the query and the key *together*? Remove from the scores
# $(L, S)$ everything a row term plus a column term can explain (the row means and the column means);
# what is left is the **interaction**. For concat it is exactly zero. For additive, look at the tanh's
# inputs $z = W_q q_i + W_k k_j$: where $|z| < 1$, $\tanh z$ stays within 24 % of $z$, nearly a
# straight line, and a straight line is the concat rule again.

# %%
def interaction_share(attn_scores):
    """Share of the variance of (L, S) scores that no row term + column term explains."""
    rest = attn_scores - attn_scores.mean(1, keepdim=True) - attn_scores.mean(0, keepdim=True) + attn_scores.mean()
    return (rest.var() / attn_scores.var()).item()

additive = rules["additive"]
with torch.no_grad():
    z = (query[0] @ additive.w_query.weight.T)[:, None] + (key[0] @ additive.w_key.weight.T)[None]  # (14, 14, A)
    print(f"additive, untrained: tanh inputs z with |z| < 1: {(z.abs() < 1).float().mean().item():.0%}")
    print(f"  concat             : interaction share of the scores {interaction_share(rule_scores['concat']):.3f}")
    for factor in (1, 4):
        s_f = ac.additive_scores(query, key, additive.w_query.weight * factor, additive.w_key.weight * factor,
                                 additive.v.weight[0])[0]                    # (14, 14)
        w_f = torch.softmax(s_f, dim=-1)
        print(f"  additive, W_q, W_k x{factor}: interaction share {interaction_share(s_f):.3f}; "
              f"largest difference between two rows of attn_weights {(w_f - w_f[0]).abs().max().item():.3f}")

# %% [markdown]
# Untrained, 81 % of the tanh's inputs lie where it is nearly linear, so the additive rule is close to
# a concat rule: only 3.3 % of its score variance is interaction, and its rows differ by 0.015 at most.
# With $W_q$ and $W_k$ four times larger the inputs reach the bend of the tanh: the interaction grows
# to 21 % and the rows to 0.047 apart. Training moves the weights there when the task needs it
# (lesson 09 trains an additive attention that aligns words); the tanh makes it *possible*, and a
# linear layer that scores each key from $[q; k]$ can never do it, whatever its weights.
#
# The second article writes the additive rule as a **sum of tanh**,
# $e_{ij} = \sum_{a=1}^{A} \tanh(W_q q_i + W_k k_j)_a$. That is the additive rule with
# $v = \mathbf{1} = (1, \dots, 1)$, since $\mathbf{1}^\top x = \sum_a x_a$: no learned $v$, every feature
# counts with weight +1, and every score lies within $\pm A$.

# %%
A = additive.w_query.weight.shape[0]                            # the width of the scoring layer
with torch.no_grad():
    sum_of_tanh = torch.tanh(z).sum(dim=-1)                     # (14, 14, A) -> (14, 14): the article's rule
    v_ones = ac.additive_scores(query, key, additive.w_query.weight, additive.w_key.weight,
                                torch.ones(A, device=device))[0]   # v = 1: (1, 14, 14) -> (14, 14)
torch.testing.assert_close(sum_of_tanh, v_ones)
print(f"sum of tanh = additive scores with v = (1, ..., 1), A = {A}: checked;  "
      f"largest |score| {sum_of_tanh.abs().max().item():.2f} (bound A = {A})")

# %% [markdown]
# One more connection. The transformer scores with a dot product of *projected* vectors:
# $(x_i W_Q) \cdot (x_j W_K) = x_i^\top (W_Q W_K^\top)\, x_j$. That is the general rule on the
# embeddings, with a $W$ of rank at most D. Two small maps do the work of one big $E \times E$ matrix.

# %%
with torch.no_grad():
    W_general = q_proj.weight.transpose(0, 1) @ k_proj.weight   # (E, D) @ (D, E) -> (E, E)
    checks.expect_tensor("general scores on x", ac.general_scores(x, x, W_general), ac.dot_scores(query, key),
                         legend="(B, L, S)", atol=1e-4)
print("dot(x W_q, x W_k) = general(x, x, W_q W_k^T): checked;  rank of W:",
      torch.linalg.matrix_rank(W_general.cpu()).item(), "of", E)

# %% [markdown]
# ### Exercise 1 — scaled dot-product scores
#
# Write `scaled_dot_scores(query, key)` for `query (..., L, D)` and `key (..., S, D)`, returning
# `attn_scores (..., L, S)` with $e_{ij} = q_i \cdot k_j / \sqrt{d_k}$, where $d_k$ is the last
# dimension of `query`. Use `@` and `key.transpose(-2, -1)`, so any leading batch dimensions work.

# %% [raw]
# # BEGIN QUESTION
# name: q1_scaled_dot_scores
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def scaled_dot_scores(query, key):
    """attn_scores (..., L, S) = query key^T / sqrt(d_k), d_k = query.shape[-1]."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write scaled_dot_scores")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    d_k = query.shape[-1]
    return query @ key.transpose(-2, -1) / math.sqrt(d_k)      # (..., L, D) @ (..., D, S) -> (..., L, S)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(scaled_dot_scores):
    from attn_course.checks import check_scaled_dot_scores
    check_scaled_dot_scores(scaled_dot_scores)

test_q1_public(scaled_dot_scores)

# %%
# HIDDEN
def test_q1_hidden(scaled_dot_scores):
    from attn_course.checks import check_scaled_dot_scores
    check_scaled_dot_scores(scaled_dot_scores, thorough=True)

test_q1_hidden(scaled_dot_scores)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ### Exercise 2 — additive (Bahdanau) scores
#
# Write `additive_scores(query, key, w_query, w_key, v)` with
# $e_{ij} = v^\top \tanh(W_q q_i + W_k k_j)$ for `query (..., L, Dq)`, `key (..., S, Dk)`,
# `w_query (A, Dq)`, `w_key (A, Dk)`, `v (A,)`, returning `attn_scores (..., L, S)`.
#
# No loop over i and j: project once, then let broadcasting build every pair (section 1).
# `query @ w_query.T` is `(..., L, A)`; with `unsqueeze` make it `(..., L, 1, A)` and the keys'
# `(..., 1, S, A)`. Their sum is `(..., L, S, A)`; `tanh`, then `@ v` leaves `(..., L, S)`.

# %% [raw]
# # BEGIN QUESTION
# name: q2_additive_scores
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def additive_scores(query, key, w_query, w_key, v):
    """attn_scores (..., L, S) = v . tanh(W_q q_i + W_k k_j) for every query i and key j."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write additive_scores")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    q = (query @ w_query.T).unsqueeze(-2)                       # (..., L, Dq) -> (..., L, 1, A)
    k = (key @ w_key.T).unsqueeze(-3)                           # (..., S, Dk) -> (..., 1, S, A)
    return torch.tanh(q + k) @ v                                # (..., L, S, A) @ (A,) -> (..., L, S)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(additive_scores):
    from attn_course.checks import check_additive_scores
    check_additive_scores(additive_scores)

test_q2_public(additive_scores)

# %%
# HIDDEN
def test_q2_hidden(additive_scores):
    from attn_course.checks import check_additive_scores
    check_additive_scores(additive_scores, thorough=True)

test_q2_hidden(additive_scores)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. Scoring positions instead of keys: the second article's `Attn`
#
# The second article's first rule looks like concat: `softmax(Linear([q; k]))`. But its linear layer
# has `value_size1` outputs, **one per position** of the values, where concat has one output per key.
# It is the attention of the PyTorch tutorial's `AttnDecoderRNN` ("Translation with a Sequence to
# Sequence Network and Attention"): `attn = nn.Linear(2 * hidden_size, max_length)` reads the
# decoder's input word (the article's Q) and its previous hidden state (K, one vector, not a key per
# word) and gives one weight to each of `max_length` encoder positions. Luong et al. (2015, section
# 3.1, eq. 9) call this **location-based** attention: $a_t = \mathrm{softmax}(W_a h_t)$, weights computed
# from the decoder's state alone; here $[q; k]$ plays the part of $h_t$. The query matters: it decides
# the weights. What the rule never consults is the *content* of the positions it weighs.
#
# The article's `Attn` in three steps, with its sizes (`query_size = key_size = 32`,
# `value_size1 = 32` positions, `value_size2 = 64`, `output_size = 64`):
#
# 1. `attn_weights = softmax(attn([q; k]))`: $a = \mathrm{softmax}(W_a [q; k] + b_a)$, one weight per position;
# 2. `attn_applied = bmm(attn_weights.unsqueeze(0), V)`: $c = \sum_s a_s v_s$, the weighted sum of the values;
# 3. `output = attn_combine([q; attn_applied])`: $o = W_c [q; c] + b_c$.
#
# `ac.LocationAttention` is the article's class, with its constructor arguments and its layer names
# `attn` and `attn_combine`. The cell writes the three steps inline and checks them against it.

# %%
g_loc = torch.Generator().manual_seed(2)                        # this section's own random numbers
torch.manual_seed(0)                                            # the two nn.Linear layers draw their weights
attn = ac.LocationAttention(query_size=32, key_size=32, value_size1=32, value_size2=64, output_size=64).to(device)
Q = ac.randn(1, 1, 32, generator=g_loc, device=device)          # (1, 1, 32): the decoder's input word
K = ac.randn(1, 1, 32, generator=g_loc, device=device)          # (1, 1, 32): its previous state, one vector
V = ac.randn(1, 32, 64, generator=g_loc, device=device)         # (1, 32, 64): 32 positions of 64 numbers
with torch.no_grad():
    attn_scores = attn.attn(torch.cat((Q[0], K[0]), 1))         # (1, 32) ; (1, 32) -> (1, 64) -> (1, 32): one per position
    attn_weights = torch.softmax(attn_scores, dim=1)            # (1, 32), sums to 1 over the 32 positions
    attn_applied = torch.bmm(attn_weights.unsqueeze(0), V)      # (1, 1, 32) @ (1, 32, 64) -> (1, 1, 64)
    output = attn.attn_combine(torch.cat((Q[0], attn_applied[0]), 1)).unsqueeze(0)  # (1, 96) -> (1, 64) -> (1, 1, 64)
    reference_output, reference_weights = attn(Q, K, V)         # the package's LocationAttention
checks.expect_tensor("attn_weights", attn_weights, reference_weights, legend="(1, value_size1)")
checks.expect_tensor("output", output, reference_output, legend="(1, 1, output_size)")
for name, t in [("Q", Q), ("K", K), ("V", V), ("attn_weights", attn_weights), ("attn_applied", attn_applied),
                ("output", output)]:
    print(f"{name:>12}: {tuple(t.shape)}")
print("the three steps equal ac.LocationAttention: checked")

# %% [markdown]
# The weights are a function of $[q; k]$ alone. Give the same query other values, or the same values
# in reverse order, and the weights stay put; give it another query and they move. And the layer has
# exactly 32 outputs: a sentence of another length does not fit.

# %%
with torch.no_grad():
    other_values = attn(Q, K, ac.randn(1, 32, 64, generator=g_loc, device=device))[1]   # (1, 32)
    reversed_values = attn(Q, K, V.flip(1))[1]                  # the same 32 values, last one first
    other_query = attn(ac.randn(1, 1, 32, generator=g_loc, device=device), K, V)[1]
for what, w in [("other values", other_values), ("the values reversed", reversed_values),
                ("another query", other_query)]:
    print(f"{what:>20}: largest change of a weight {(w - attn_weights).abs().max().item():.3f} "
          f"(the uniform weight is 1/32 = {1 / 32:.3f})")
try:
    attn(Q, K, V[:, :20])                                       # a sentence of 20 positions
except ValueError as err:
    print("20 positions:", err)

# %% [markdown]
# Other values, or the same values reversed: no weight changes (0.000). Another query: a weight moves
# by 0.070, more than twice the uniform weight 1/32 = 0.031. Twenty positions: a `ValueError`.
#
# Where does that help, and where not? Two toy tasks over S = 8 positions, each a lookup with one
# right position $t$:
#
# - **attend to position p**: the query is a code for a position (one of 8 fixed random vectors); the
#   8 keys hold random content. The right position follows from the query alone.
# - **find the matching key**: 8 random keys; the query is one of them, blurred with noise of std 0.5,
#   and it sits at a random position. The right position follows from the content.
#
# Beside the location rule (its K set to zeros: there is no previous state here) we put a
# content-based rule, the general score $q^\top W k_j$ of section 3. Each rule is trained for 30
# steps of 256 examples to put its weight on the right position (loss $-\log a_t$), then measured
# on 1000 fresh examples: the mean weight on the right position (chance: 1/8 = 0.125).

# %%
S_toy, D_toy = 8, 16
position_code = ac.randn(S_toy, D_toy, generator=g_loc)         # (8, 16): the query that means "position p"
TASKS = ("attend to position p", "find the matching key")

def toy_batch(task, n, gen):
    """n examples: query (n, 1, D), key (n, S, D) = the values, the right position (n,)."""
    key = ac.randn(n, S_toy, D_toy, generator=gen)              # (n, 8, 16): random content
    target = torch.randint(S_toy, (n,), generator=gen)          # (n,)
    if task == TASKS[0]:
        query = position_code[target]                           # (n, 16): the code of position t
    else:
        query = key[torch.arange(n), target] + 0.5 * ac.randn(n, D_toy, generator=gen)  # key t, blurred
    return query[:, None], key, target                          # (n, 1, 16), (n, 8, 16), (n,)

# %%
def toy_weights(rule, query, key):
    """attn_weights (n, 8): location from [q; 0] over 8 positions; content from q . W k_j per key."""
    if isinstance(rule, ac.LocationAttention):
        return rule(query, torch.zeros_like(query), key)[1]     # never reads what the keys hold
    return torch.softmax(rule(query, key)[:, 0], dim=-1)        # (n, 1, 8) -> (n, 8)

def train_toy(rule, task, steps=30, n=256):
    """Train rule to put its weight on the right position: loss -log attn_weights[t]."""
    query, key, target = toy_batch(task, steps * n, torch.Generator().manual_seed(1))
    def batch_loss(idx):                                        # idx (n,): which examples
        attn_weights = toy_weights(rule, query[idx], key[idx])  # (n, 8)
        return -attn_weights[torch.arange(len(idx)), target[idx]].log().mean()
    training.fit(rule, list(torch.arange(steps * n).split(n)), batch_loss,
                 torch.optim.Adam(rule.parameters(), lr=0.05), progress=False)
    return rule

# %%
RULES = {"location": lambda: ac.LocationAttention(D_toy, D_toy, S_toy, D_toy, D_toy),   # tiny: on the CPU
         "content": lambda: ac.AttentionScore("general", query_dim=D_toy)}
trained, right_weight, toy_val = {}, {}, {}
for task in TASKS:
    toy_val[task] = toy_batch(task, 1000, torch.Generator().manual_seed(3))   # fresh examples
    for name, make in RULES.items():
        torch.manual_seed(0)
        trained[task, name] = train_toy(make(), task)
        with torch.no_grad():
            w = toy_weights(trained[task, name], *toy_val[task][:2])           # (1000, 8)
        right_weight[task, name] = w[torch.arange(1000), toy_val[task][2]].mean().item()
print(f"mean weight on the right position (chance 1/{S_toy} = {1 / S_toy:.3f})")
print(f"{'task':>22} | {'location':>8} | {'content':>7}")
for task in TASKS:
    print(f"{task:>22} | {right_weight[task, 'location']:8.3f} | {right_weight[task, 'content']:7.3f}")

# %%
rows = {task: torch.stack([(toy_val[task][2] == p).nonzero()[0, 0] for p in range(S_toy)]) for task in TASKS}
with torch.no_grad():                                           # 8 fresh examples per task, right positions 0..7
    panels = [toy_weights(trained[task, name], toy_val[task][0][rows[task]], toy_val[task][1][rows[task]])
              for task in TASKS for name in RULES]              # four (8 examples, 8 positions)
titles = [f"{name}, {task}: {right_weight[task, name]:.3f}" for task in TASKS for name in RULES]
fig = plot.attention_grid(panels, titles, [f"t = {p}" for p in range(S_toy)], [str(p) for p in range(S_toy)],
                          ncols=2, vmin=0.0, vmax=1.0, annotate=False, panel_size=(4.6, 3.8))
fig.suptitle("attn_weights on 8 fresh examples whose right positions are 0..7: a rule that finds them lights the diagonal")
plt.show()

# %% [markdown]
# Now move the content and keep the query. Take one example of "find the matching key" and roll its
# 8 keys 3 positions on (`roll`: the last three wrap round to the front). The matching key now sits
# 3 places later; the query is unchanged.

# %%
query_1, key_1, target_1 = (x[:1] for x in toy_val[TASKS[1]])   # one example: (1, 1, 16), (1, 8, 16), (1,)
right, moved_to = target_1.item(), (target_1.item() + 3) % S_toy
with torch.no_grad():
    for name in RULES:
        before = toy_weights(trained[TASKS[1], name], query_1, key_1)[0]                  # (8,)
        after = toy_weights(trained[TASKS[1], name], query_1, key_1.roll(3, dims=1))[0]   # keys 3 places on
        print(f"{name:>8}: weight on the match at position {right}: {before[right].item():.3f};  keys rolled, "
              f"on the match now at {moved_to}: {after[moved_to].item():.3f};  "
              f"largest change of a weight {(after - before).abs().max().item():.3f}")

# %% [markdown]
# Each rule wins the task the other loses. On "attend to position p" the location rule puts on
# average 0.996 of its weight on the right position and the content rule 0.127, about chance: its
# keys carry no position. On "find the matching key" it is the other way round: content 0.931,
# location 0.126. Rolling the keys changes none of the location rule's weights (0.000): its weight
# on the match goes from 0.078 to 0.172 only because the match moved to position 1, which this
# query's weights happen to favour, whatever the keys hold. The content rule's 0.962 moves with the
# key.
#
# So the article's rule works where the right place is fixed or follows from the query alone: in
# the tutorial, short French-English pairs run almost word for word in step, and the decoder's state
# knows how far it has got. It fails where the answer depends on what is where (reordered words, a
# name to look up), and it cannot read a sentence longer than `max_length` (shorter ones are padded,
# and the padding still gets weight). Content-based rules take any S and find a key wherever it
# sits; what they lack is the position, which the transformer adds to its keys with positional
# encodings (lesson 07).

# %% [markdown]
# ## 5. Why divide by $\sqrt{d_k}$?
#
# Vaswani et al. (2017, section 3.2.1) scale the dot product by $1/\sqrt{d_k}$. Their footnote 4
# gives the reason: if the entries of $q$ and $k$ are independent with mean 0 and variance 1, then
#
# $$q \cdot k = \sum_{i=1}^{d_k} q_i k_i \quad\text{has mean 0 and variance } d_k .$$
#
# A sum of $d_k$ terms of variance 1 each. So the scores' standard deviation grows like
# $\sqrt{d_k}$: at $d_k = 64$ typical scores are ±8, at $d_k = 1024$ ±32. Large scores push softmax
# into **saturation**: nearly all weight on the largest score. There its gradient is nearly zero,
# and the model stops learning where to look. In the paper's words: the dot products "grow large
# in magnitude, pushing the softmax function into regions where it has extremely small gradients".
#
# How small? The Jacobian of $p = \mathrm{softmax}(e)$ is $\partial p_i / \partial e_j = p_i(\delta_{ij} - p_j)$,
# i.e. $J = \mathrm{diag}(p) - p p^\top$. The gradient reaching the scores (and, through them, $W_Q$
# and $W_K$) is $J^\top$ times the gradient arriving at $p$. For a one-hot $p$, $J = 0$.
# First, the formula against autograd:

# %%
scores_row = ac.randn(5, generator=g)                           # (S=5,): one query's scores
p = torch.softmax(scores_row, dim=-1)                           # (5,)
jacobian = torch.diag(p) - torch.outer(p, p)                    # (5,) -> (5, 5): diag(p) - p p^T
by_autograd = torch.autograd.functional.jacobian(lambda e: torch.softmax(e, dim=-1), scores_row)  # (5, 5)
torch.testing.assert_close(jacobian, by_autograd)
print("diag(p) - p p^T equals autograd's Jacobian of softmax: yes")
one_hot_ish = torch.softmax(scores_row * 50, dim=-1)            # the same scores, 50 times larger
print(f"Frobenius norm of the Jacobian: {torch.linalg.matrix_norm(jacobian).item():.3f} at these scores, "
      f"{torch.linalg.matrix_norm(torch.diag(one_hot_ish) - torch.outer(one_hot_ish, one_hot_ish)).item():.3f} "
      f"at 50 times these scores (weights {one_hot_ish.max().item():.3f} on one key)")

# %% [markdown]
# Now the measurement. For each $d_k$ in 4 … 1024 we draw 300 queries and, for each, 16 keys with
# independent standard-normal entries, score them with and without the division by $\sqrt{d_k}$,
# and record four statistics: the std of the scores, the mean largest weight, the mean entropy of
# the weights (in nats; uniform over 16 keys: $\log 16 = 2.77$), and the mean Frobenius norm of the
# softmax Jacobian.

# %%
d_ks, num_queries, S = [4, 16, 64, 256, 1024], 300, 16
stats = {False: [], True: []}                                   # scaled? -> one row of statistics per d_k
for d_k in d_ks:
    q = ac.randn(num_queries, 1, d_k, generator=g, device=device)   # (N=300, 1, d_k): unit-variance queries
    k = ac.randn(num_queries, S, d_k, generator=g, device=device)   # (N, S=16, d_k): 16 keys per query
    raw = torch.bmm(q, k.transpose(1, 2))                           # (N, 1, d_k) @ (N, d_k, S) -> (N, 1, S)
    for scaled, attn_scores in ((False, raw), (True, raw / math.sqrt(d_k))):
        attn_weights = torch.softmax(attn_scores, dim=-1)           # (N, 1, S)
        p = attn_weights.unsqueeze(-1)                              # (N, 1, S, 1)
        jac = torch.diag_embed(attn_weights) - p * p.transpose(-2, -1)  # diag(p) - p p^T: (N, 1, S, S)
        stats[scaled].append([attn_scores.std().item(), attn_weights.max(dim=-1).values.mean().item(),
                              ac.entropy(attn_weights).mean().item(),
                              torch.linalg.matrix_norm(jac).mean().item()])
names = ["score std", "max weight", "entropy (nats)", "|Jacobian|_F"]
print(f"{'':5} | " + " | ".join(f"{n:^15}" for n in names))
print(f"{'d_k':>5} | " + " | ".join(f"{'q.k':>7} {'scaled':>7}" for n in names))
for i, d_k in enumerate(d_ks):
    print(f"{d_k:5d} | " + " | ".join(f"{stats[False][i][c]:7.2f} {stats[True][i][c]:7.2f}" for c in range(4)))

# %%
fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), layout="constrained")
titles = ["std of attn_scores", "mean largest attention weight", "mean entropy of attn_weights (nats)",
          "mean Frobenius norm of the softmax Jacobian"]
for c, (ax, title) in enumerate(zip(axes.flat, titles)):
    ax.plot(d_ks, [row[c] for row in stats[False]], "o-", color="C3", label=r"$q\cdot k$ (not scaled)")
    ax.plot(d_ks, [row[c] for row in stats[True]], "s-", color="C0", label=r"$q\cdot k/\sqrt{d_k}$")
    ax.set_xscale("log", base=2)
    ax.set_xticks(d_ks, [str(d) for d in d_ks])
    ax.set_title(title)
    ax.set_xlabel(r"$d_k$ (head_dim), log scale")
axes[0, 0].plot(d_ks, [math.sqrt(d) for d in d_ks], color="gray", linewidth=6, alpha=0.35, zorder=0,
               label=r"$\sqrt{d_k}$ (footnote 4)")
axes[0, 1].axhline(1 / S, color="gray", linestyle=":", label=f"uniform: 1/S = 1/{S}")
axes[1, 0].axhline(math.log(S), color="gray", linestyle=":", label=f"uniform: log S = {math.log(S):.2f}")
for c, ax in enumerate(axes.flat):
    ax.set_ylim(bottom=0 if c else None)
    ax.legend(fontsize=8)
fig.suptitle(f"Softmax saturation: {num_queries} random queries x {S} keys per $d_k$")
plt.show()

# %% [markdown]
# Without scaling the std follows $\sqrt{d_k}$ exactly, the largest weight climbs towards 1, the
# entropy falls towards 0 and the Jacobian — the gradient's path back to $W_Q$ and $W_K$ — shrinks
# more than fivefold between $d_k = 4$ and $d_k = 1024$. With scaling all four curves are flat: the
# softmax sees scores of std 1 at every head size. Vaswani et al. note that additive attention
# beats the *unscaled* dot product at large $d_k$ (Britz et al. 2017): its tanh keeps every score
# below $\lVert v \rVert_1$, however long the vectors. The division gives the dot product the same
# protection, and it stays one fast matrix product.
#
# **Try it.** One query, eight keys, entries of variance 1. Move $d_k$ from 1 to 1024 with the
# switch off, then on. At which $d_k$ does the unscaled softmax put (nearly) everything on one key?
# What does the switch do to the score std?

# %% tags=["nbval-ignore-output"]
explorer = ScaleExplorer(num_keys=8, d_k=64, scaled=False)
explorer

# %% [markdown]
# The same in numbers, one line per setting. One query is noisy (its eight scores may happen to
# lie close together); the measurement above averages 300.

# %%
for scaled in [False, True]:
    explorer.checkbox.value = scaled                            # what ticking the box does
    for d_k in [1, 16, 256, 1024]:
        explorer.slider.value = d_k                             # what moving the slider does
        print(explorer.text().splitlines()[0])
explorer.slider.value, explorer.checkbox.value = 64, False

# %% [markdown]
# ## 6. Bug hunt
#
# A colleague's model trains, but its attention never seems to settle on anything. Their scoring
# function is `scaled_dot_scores_v2(query, key)`. Its docstring (`help(scaled_dot_scores_v2)`; the
# source printed below leaves it out) is word for word the reference's; every shape is right and it
# raises no error.
#
# 1. Compare it with the reference `ac.scaled_dot_scores` on random unit-variance queries and keys
#    of growing $d_k$: the std of the scores, and the entropy of their softmax.
# 2. Look at both on our sentence.
# 3. Read its source and find the one change.

# %%
import inspect

from attn_course.broken import scaled_dot_scores_v2

g_bug = torch.Generator().manual_seed(1)
print(f"{'d_k':>5} | {'score std: reference':>20} {'v2':>6} | {'entropy: reference':>18} {'v2':>6}")
for d_k in [1, 4, 16, 64, 256]:
    q = ac.randn(200, 1, d_k, generator=g_bug, device=device)   # (N=200, L=1, d_k)
    k = ac.randn(200, 16, d_k, generator=g_bug, device=device)  # (N, S=16, d_k)
    reference, suspect = ac.scaled_dot_scores(q, k), scaled_dot_scores_v2(q, k)   # (N, 1, 16) each
    h_ref, h_sus = (ac.entropy(torch.softmax(s, dim=-1)).mean().item() for s in (reference, suspect))
    print(f"{d_k:5d} | {reference.std().item():20.3f} {suspect.std().item():6.3f} | {h_ref:18.3f} {h_sus:6.3f}")
print(f"entropy in nats; uniform weights over 16 keys: log 16 = {math.log(16):.3f}")

# %%
with torch.no_grad():
    pair = [torch.softmax(fn(query, key)[0], dim=-1)            # (1, 14, 14) -> (14, 14) each
            for fn in (ac.scaled_dot_scores, scaled_dot_scores_v2)]
fig = plot.attention_grid(pair, ["reference: ac.scaled_dot_scores", "scaled_dot_scores_v2"], tokens, tokens,
                          ncols=2, share_scale=True, vmin=0.0, panel_size=(5.2, 4.4))
fig.suptitle(f"softmax of the scores on our sentence, d_k = {D} (one colour scale)")
plt.show()

# %% [markdown]
# <details><summary>Hint 1</summary>At d_k = 1 the two columns agree exactly. At d_k = 4, 16, 64,
# 256, by what factor is v2's std smaller than the reference's? Write that factor as a function of
# d_k.</details>
# <details><summary>Hint 2</summary>The factor is 1/sqrt(d_k). The reference divides q·k by
# sqrt(d_k); v2 divides by sqrt(d_k) once more. What is sqrt(d_k) · sqrt(d_k)?</details>
# <details><summary>Hint 3</summary>Look at the line that sets <code>scale</code> when none is
# given: <code>1.0 / query.shape[-1]</code> is 1/d_k, not 1/sqrt(d_k). The scores' std becomes
# 1/sqrt(d_k) instead of 1, so the weights flatten towards uniform as d_k grows, and the model
# cannot look anywhere in particular.</details>
#
# ### Exercise 3 — fix it
#
# Write `fixed_scaled_dot_scores(query, key, scale=None)`, returning `attn_scores (..., L, S)`: the
# same code with the bug removed (`scale=None` means the paper's default).
# `inspect.getsource(scaled_dot_scores_v2)` shows where to start.

# %%
from attn_course.scoring import validate_query_key                      # the helpers it calls: the code you copy from below runs here as printed

print(inspect.getsource(scaled_dot_scores_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q3_bug_hunt
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_scaled_dot_scores(query, key, scale=None):
    """attn_scores (..., L, S) = query key^T * scale, scale = 1 / sqrt(d_k) by default."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 3: fix scaled_dot_scores_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale  # sqrt(d_k), not d_k
    return query @ key.transpose(-2, -1) * scale                # (..., L, D) @ (..., D, S) -> (..., L, S)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q3_public(fixed_scaled_dot_scores):
    from attn_course.checks import check_scaled_dot_scores
    check_scaled_dot_scores(fixed_scaled_dot_scores)

test_q3_public(fixed_scaled_dot_scores)

# %%
# HIDDEN
def test_q3_hidden(fixed_scaled_dot_scores):
    from attn_course.checks import check_scaled_dot_scores
    check_scaled_dot_scores(fixed_scaled_dot_scores, thorough=True)

test_q3_hidden(fixed_scaled_dot_scores)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# The check that grades Exercise 3 would have caught v2, and says how:

# %%
try:
    checks.check_scaled_dot_scores(scaled_dot_scores_v2)
except checks.CheckFailure as failure:
    print(failure)

# %% [markdown]
# ## Summary
#
# - `torch.bmm`: `(B, n, m) @ (B, m, p) -> (B, n, p)`, three dimensions exactly. `@` also
#   broadcasts batch dimensions: `(B, H, L, D) @ (B, H, D, S) -> (B, H, L, S)`, a shared weight
#   `(m, p)` for the whole batch. Swap the last two axes with `transpose(-2, -1)`, never `.T`.
# - Queries, keys and values are three linear maps of the input, `(B, T, E) -> (B, T, D)`:
#   a query asks, keys are matched against it, values are what comes back.
# - A content-based scoring rule gives `attn_scores (B, L, S)`, one score per key. A linear layer on
#   $[q_i; k_j]$ (concat) is a query part plus a key part: every query gets the same weights.
#   Additive's tanh lets query and key interact once its inputs leave tanh's nearly linear range (3 %
#   interaction untrained, 21 % with 4x weights); the second article's "sum of tanh" is additive with
#   $v = \mathbf{1}$. Dot, scaled dot and general are products; the transformer's dot product of
#   projections is a general rule of rank D on the inputs.
# - The second article's `Attn` (the PyTorch tutorial's `AttnDecoderRNN`, `ac.LocationAttention`) is
#   location-based (Luong et al., eq. 9): `softmax(Linear([q; k]))` gives one weight per *position*,
#   decided by the query, never by the content there. It learns "attend to position p" (0.996, chance
#   0.125) and cannot "find the matching key" (0.126, the content rule 0.931); it takes exactly
#   `value_size1` positions.
# - For unit-variance entries, $q \cdot k$ has std $\sqrt{d_k}$. Unscaled, softmax saturates as
#   $d_k$ grows: largest weight → 1, entropy → 0, Jacobian → 0, learning stalls. Dividing by
#   $\sqrt{d_k}$ keeps the scores at std 1 for every head size.
# - Scaling by the wrong power of $d_k$ runs and keeps every shape: measure the scores' std.
#
# **Next:** lesson 03 turns scores into attention weights with softmax, explores the softmax
# temperature (of which $\sqrt{d_k}$ is one), and sums the values into context vectors.
#
# **References.** Vaswani et al. (2017), *Attention Is All You Need*, section 3.2.1, eq. 1 and
# footnote 4; section 3.2.2 (projections). Bahdanau, Cho & Bengio (2015), *Neural Machine Translation
# by Jointly Learning to Align and Translate*, appendix A.1.2 (additive scores). Luong, Pham &
# Manning (2015), *Effective Approaches to Attention-based Neural Machine Translation*, section 3.1,
# eq. 8 (dot, general, concat) and eq. 9 (location-based). PyTorch tutorial *NLP From Scratch:
# Translation with a Sequence to Sequence Network and Attention* (`AttnDecoderRNN`, the second
# article's `Attn`). Britz, Goldie, Luong & Le (2017), *Massive Exploration of Neural Machine
# Translation Architectures* (additive vs dot-product attention). PyTorch documentation of
# `torch.bmm` and `torch.matmul` (broadcasting).
