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
# name: 05_self_attention
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
# # Lesson 05 — Self-attention: a sentence attends to itself
#
# **Learning goals.** After this lesson you can
# 1. compute queries, keys and values from *one* sequence, $Q = XW_Q$, $K = XW_K$, $V = XW_V$, and
#    read the $(L, L)$ self-attention matrix of a real sentence;
# 2. check a single-head `SelfAttention` module against `torch.nn.MultiheadAttention`, and feed
#    PyTorch's module a batch in the layout it expects (`batch_first`);
# 3. show that self-attention without positions does not see word order;
# 4. tell encoder self-attention (building a representation of the source) from decoder
#    cross-attention (queries from the decoder, keys and values from the encoder outputs,
#    weights of shape $(L, S)$);
# 5. measure how the $(L, L)$ matrix grows with the length;
# 6. find a decoder that never looks at the encoder.
#
# In lessons 02–03 queries, keys and values were three given tensors. Where do they come from?
# In **self-attention** all three come from the same sequence.
#
# Shape legend (the same in every lesson): **B** batch, **L** query length, **S** key/value length,
# **D** head_dim (the paper's $d_k$), **E** d_model, **V** vocabulary.

# %%
# %matplotlib inline
import inspect
import math
import time

import matplotlib.pyplot as plt
import torch
from torch import nn

import attn_course as ac
from attn_course import checks, data, plot
from attn_course.widgets import QueryPicker

torch.set_printoptions(precision=4, sci_mode=False)
device = ac.get_device()  # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)  # a seeded CPU generator: the same numbers on every device

# %% [markdown]
# ## 1. Queries, keys and values from the same sequence
#
# Take a sentence of $L$ tokens as a matrix $X \in \mathbb{R}^{L \times E}$, one embedding per row.
# Three learned matrices map every token to a query, a key and a value:
#
# $$Q = X W_Q,\quad K = X W_K,\quad V = X W_V,\qquad
# A = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}}\right) \in \mathbb{R}^{L \times L},\qquad
# Z = A V .$$
#
# $W_Q, W_K \in \mathbb{R}^{E \times d_k}$ and $W_V \in \mathbb{R}^{E \times d_v}$. Row $i$ of $A$
# says how much token $i$ reads from each token $j$ of the **same** sentence; the output $z_i$ is a
# new vector for token $i$, mixed from the whole sentence. Cheng, Dong & Lapata (2016) called it
# *intra-attention*; in the Transformer it is the encoder's *self-attention* (Vaswani et al. 2017,
# section 3.2.3 and eq. 1).
#
# A real sentence, one random embedding per word (lesson 01):

# %%
sentence = data.sentences()[0]                                  # Dickens, A Tale of Two Cities (1859)
tokens = data.tokenize(sentence)
vocab = data.Vocab([tokens])
ids = torch.tensor([vocab.encode(tokens)])                      # (B=1, L=14)
E, D = 16, 8                                                    # d_model, head_dim
embedding = nn.Embedding(len(vocab), E)
with torch.no_grad():
    embedding.weight.copy_(ac.randn(len(vocab), E, generator=g))
x = embedding(ids).detach().to(device)                          # (1, 14) -> (1, 14, E=16)
print(sentence)
print(tokens)
print("x:", tuple(x.shape))

# %% [markdown]
# Now the three projections, all applied to the same `x`, and attention as in lesson 03.

# %%
w_query = ac.randn(E, D, generator=g, device=device) / 4        # W_Q: E=16 -> D=8
w_key = ac.randn(E, D, generator=g, device=device) / 4          # W_K: E=16 -> D=8
w_value = ac.randn(E, D, generator=g, device=device) / 4        # W_V: E=16 -> D=8
query = x @ w_query                                             # (1, 14, 16) @ (16, 8) -> (1, 14, 8)
key = x @ w_key                                                 # the same x: (1, 14, 16) -> (1, 14, 8)
value = x @ w_value                                             # the same x again: (1, 14, 16) -> (1, 14, 8)
attn_scores = query @ key.transpose(-2, -1) / math.sqrt(D)      # (1, 14, 8) @ (1, 8, 14) -> (1, 14, 14)
attn_weights = torch.softmax(attn_scores, dim=-1)               # (1, 14, 14), each row sums to 1 over keys
context = attn_weights @ value                                  # (1, 14, 14) @ (1, 14, 8) -> (1, 14, 8)
print("attn_weights:", tuple(attn_weights.shape), "  context:", tuple(context.shape))

ref_context, ref_weights = ac.self_attention(x, w_query, w_key, w_value)   # the package reference
checks.expect_tensor("attn_weights", attn_weights, ref_weights, legend="(B, L, L)")
checks.expect_tensor("context", context, ref_context, legend="(B, L, D)")
print("equal to ac.self_attention(x, w_query, w_key, w_value): yes")

# %%
fig, ax = plt.subplots(figsize=(7.5, 6), layout="constrained")
plot.attention_heatmap(attn_weights[0], tokens, tokens, ax=ax, annotate=False, vmax=None,
                       title="self-attention weights on a real sentence (untrained weights)")
plt.show()

# %% [markdown]
# Queries down the rows, keys across the columns, every row summing to 1. Two things to notice:
#
# - "it", "was", "the", "of" and "times" each occur twice. Their two rows are **identical** (same
#   embedding, so same query) and so are their two columns (same key). The layer cannot tell the
#   first "it" from the second.
# - The pattern means nothing yet: the embeddings and $W_Q, W_K, W_V$ are random. A trained model
#   learns projections whose patterns do mean something: heads that attend to the previous word,
#   to the full stop, or from a verb to its object (Clark et al. 2019). Lesson 06 opens a real
#   pretrained model and looks.
#
# Nothing makes a token attend to itself either: $q_i \cdot k_i$ is large only if $W_Q$ and $W_K$
# make it so.

# %% [markdown]
# ## 2. A module, and PyTorch's own
#
# `ac.SelfAttention(d_model, head_dim)` holds $W_Q, W_K, W_V$ as three `nn.Linear` layers,
# `q_proj`, `k_proj`, `v_proj`. An `nn.Linear(E, D)` computes `x @ weight.T + bias`: its `weight`
# is $(D, E)$, the **transpose** of the paper's $W_Q$.

# %%
torch.manual_seed(0)
attn = ac.SelfAttention(d_model=E, head_dim=D).to(device)       # q_proj, k_proj, v_proj: Linear(16 -> 8)
print(attn)
context_m, attn_weights_m = attn(x)                             # (1, 14, 16) -> (1, 14, 8) and (1, 14, 14)
print("q_proj.weight:", tuple(attn.q_proj.weight.shape), "= W_Q transposed;  context:",
      tuple(context_m.shape), " attn_weights:", tuple(attn_weights_m.shape))

# %% [markdown]
# `torch.nn.MultiheadAttention` with `num_heads=1` is the same computation plus one more linear
# layer, `out_proj`, on the output. Its `in_proj_weight` $(3E, E)$ stacks the three projections.
# Copy them into our module and compare: self-attention is `mha(x, x, x)`, query = key = value.

# %%
torch.manual_seed(0)
mha = nn.MultiheadAttention(embed_dim=E, num_heads=1, batch_first=True).to(device)
ours = ac.SelfAttention(d_model=E, head_dim=E).to(device)       # one head: head_dim = embed_dim
with torch.no_grad():
    for i, proj in enumerate([ours.q_proj, ours.k_proj, ours.v_proj]):
        proj.weight.copy_(mha.in_proj_weight[i * E:(i + 1) * E])    # (3E, E) -> rows i*E..(i+1)*E: (E, E)
        proj.bias.copy_(mha.in_proj_bias[i * E:(i + 1) * E])        # (3E,) -> (E,)
    torch_output, torch_weights = mha(x, x, x)                  # (1, 14, 16), (1, 14, 14)
    context_1h, attn_weights_1h = ours(x)                       # (1, 14, 16), (1, 14, 14)
    checks.expect_tensor("output", mha.out_proj(context_1h), torch_output, legend="(B, L, E)")  # + out_proj
    checks.expect_tensor("attn_weights", attn_weights_1h, torch_weights, legend="(B, L, L)")
print("SelfAttention, then out_proj == nn.MultiheadAttention(num_heads=1): yes")

# %% [markdown]
# ### Which axis is the batch? `batch_first`
#
# Note the `batch_first=True` above. `nn.MultiheadAttention`, like `nn.TransformerEncoderLayer` and
# `nn.Transformer`, was written for the layout of PyTorch's recurrent layers, $(L, B, E)$: the tokens
# first, then the batch. Its default is `batch_first=False`. Hand it a batch of our shape $(B, L, E)$ and
# it raises no error: it reads $B$ as the number of tokens and $L$ as the number of sentences, so each
# token attends to the tokens at the same position in the *other sentences* of the batch. A batch of two
# sentences, Dickens's and one of 14 random embeddings; then we replace sentence 1 alone:

# %%
torch.manual_seed(0)
seq_first = nn.MultiheadAttention(E, num_heads=2).to(device)                 # batch_first=False, the default
batch_first = nn.MultiheadAttention(E, num_heads=2, batch_first=True).to(device)
batch_first.load_state_dict(seq_first.state_dict())                         # the same weights
g_batch = torch.Generator().manual_seed(5)                                  # its own seed: g keeps its numbers
batch = torch.cat([x, ac.randn(1, 14, E, generator=g_batch, device=device)])   # (B=2, L=14, E=16)
changed = batch.clone()
changed[1] = ac.randn(14, E, generator=g_batch, device=device)              # a new sentence 1; sentence 0 as it was
with torch.no_grad():
    for name, layer in [("batch_first=False (default)", seq_first), ("batch_first=True", batch_first)]:
        output, weights = layer(batch, batch, batch)                        # self-attention on (B, L, E)
        output_changed, _ = layer(changed, changed, changed)
        moved = (output_changed[0] - output[0]).abs().max().item()          # sentence 0's output
        print(f"{name:27s} attn_weights {tuple(weights.shape)}   sentence 0's output moved by {moved:.2f}")

# %% [markdown]
# With the default the weights come out $(14, 2, 2)$: 14 "sentences" of 2 "tokens", one token from
# each of our sentences. Sentence 0's output moved by 0.83 when only sentence 1 changed: what a sentence
# becomes depends on what it is batched with. With `batch_first=True` the weights are $(2, 14, 14)$ and
# sentence 0 stays put (0.00). The weights are the same; only the axes differ. `batch_first=True` equals
# the default layer fed `batch.transpose(0, 1)`, and gives sentence 0 the same output alone as in the batch:

# %%
with torch.no_grad():
    ours, _ = batch_first(batch, batch, batch)                                  # (B, L, E)
    theirs, _ = seq_first(*[batch.transpose(0, 1)] * 3)                         # (L, B, E), the layout it expects
    alone, _ = batch_first(x, x, x)                                             # sentence 0 in a batch of its own
torch.testing.assert_close(ours, theirs.transpose(0, 1))                        # (L, B, E) -> (B, L, E)
torch.testing.assert_close(ours[:1], alone)
print("batch_first=True == the default fed batch.transpose(0, 1); sentence 0 alone == in the batch: yes")

# %% [markdown]
# When a batch holds as many sentences as tokens ($B = L$), even the shape of the weights looks right,
# and with one sentence ($B = 1$) every token attends to itself alone. The probe that always works is
# the one above: change the other sentences, watch one. Lesson 08's catalogue has a suspect with this bug
# and a check that runs this probe.

# %% [markdown]
# ### Exercise 1 — self-attention from scratch
#
# Write `self_attention(x, w_query, w_key, w_value)` for `x (B, L, E)`, `w_query (E, D)`,
# `w_key (E, D)`, `w_value (E, Dv)`. Return the tuple `(context, attn_weights)` with
# `context (B, L, Dv)` and `attn_weights (B, L, L)`. The weights multiply on the right (`x @ w_query`).
# Divide the scores by $\sqrt{D}$, the size of a query (`w_query.shape[-1]`), not by $\sqrt{E}$.

# %% [raw]
# # BEGIN QUESTION
# name: q1_self_attention
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def self_attention(x, w_query, w_key, w_value):
    """Single-head self-attention; returns (context (B, L, Dv), attn_weights (B, L, L))."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write self_attention")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    q, k, v = x @ w_query, x @ w_key, x @ w_value              # (B, L, E) -> (B, L, D), (B, L, D), (B, L, Dv)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, L, D) @ (B, D, L) -> (B, L, L)
    weights = torch.softmax(scores, dim=-1)                    # over the keys
    return weights @ v, weights                                # (B, L, Dv), (B, L, L)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(self_attention):
    from attn_course.checks import check_self_attention
    check_self_attention(self_attention)

test_q1_public(self_attention)

# %%
# HIDDEN
def test_q1_hidden(self_attention):
    from attn_course.checks import check_self_attention
    check_self_attention(self_attention, thorough=True)

test_q1_hidden(self_attention)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. Self-attention does not see word order
#
# Shuffle the tokens. Every query, key and value moves with its token, and $q_i \cdot k_j$ does
# not depend on where $i$ and $j$ stand. So the output rows are the old rows, shuffled the same way:
#
# $$\mathrm{SelfAttention}(PX) = P\,\mathrm{SelfAttention}(X)\quad\text{for every permutation matrix } P.$$
#
# Self-attention is *permutation-equivariant* (Lee et al. 2019, section 3.1): to it a sentence is
# a bag of words. We check it on our sentence with the package's `ac.self_attention`.

# %%
perm = torch.randperm(len(tokens), generator=g)                 # a seeded shuffle of the 14 positions
shuffled = [tokens[i] for i in perm.tolist()]
context_s, attn_weights_s = ac.self_attention(x[:, perm], w_query, w_key, w_value)  # shuffled input
checks.expect_tensor("context", context_s, ref_context[:, perm])                    # rows moved with tokens
checks.expect_tensor("attn_weights", attn_weights_s, ref_weights[:, perm][:, :, perm])  # rows and columns moved
print("original:", " ".join(tokens))
print("shuffled:", " ".join(shuffled))
print("outputs of the shuffled sentence == the original outputs, shuffled: yes")

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 5.4), layout="constrained")
plot.attention_heatmap(ref_weights[0], tokens, tokens, ax=ax0, annotate=False, vmax=None,
                       colorbar=False, title="original order")
plot.attention_heatmap(attn_weights_s[0], shuffled, shuffled, ax=ax1, annotate=False, vmax=None,
                       title="shuffled: the same numbers, rows and columns reordered")
plt.show()

# %% [markdown]
# "it was the best of times" and "times the of best was it" give each word the same output vector.
# Word order matters in language, so a model must be *told* where each token stands: lesson 07
# adds positional encodings to the embeddings, and the symmetry breaks.

# %% [markdown]
# ## 4. Where does each token attend?
#
# **Try it.** Pick a query token. The left picture frames its row of the matrix; the bars show that
# row: the weights over all 14 keys, the three largest in orange. The readout names the top-3 keys
# and the entropy (0 nats: all weight on one key; $\log 14 = 2.64$: uniform). Pick both copies of
# "it": what do you see? Which token attends most sharply?

# %% tags=["nbval-ignore-output"]
query_picker = QueryPicker(ref_weights[0], tokens, title="self-attention (one head, untrained)")
query_picker

# %% [markdown]
# The same in numbers: picking "best", then both copies of "it".

# %%
for i in [3, 0, 7]:
    query_picker.dropdown.value = i                              # what picking in the dropdown does
    print(query_picker.text(), end="\n\n")

# %% [markdown]
# ## 5. Encoder side and decoder side
#
# A translation model has two halves (Bahdanau et al. 2015; Vaswani et al. 2017, section 3.2.3):
#
# | attention | queries from | keys and values from | attn_weights | what it is for |
# |---|---|---|---|---|
# | encoder self-attention | the source sentence $X$ | the source sentence $X$ | $(S, S)$ | **representation**: each source word reads its context |
# | decoder self-attention | the target so far $Y$ | the target so far $Y$, masked (lesson 07) | $(L, L)$ | the target reads its own past |
# | **cross-attention** (encoder–decoder) | the decoder states $Y$ | the **encoder outputs** $H$ | $(L, S)$ | **focusing**: each target position picks the source words it needs |
#
# Cross-attention plays the part of the attention of Bahdanau et al. (2015, section 3.1), where the
# decoder attends to the encoder's annotations (there with additive scores, lesson 02; here with
# scaled dot products):
#
# $$Q = Y W_Q \in \mathbb{R}^{L \times d_k},\quad K = H W_K,\quad V = H W_V \in \mathbb{R}^{S \times d_v},\qquad
# A = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) \in \mathbb{R}^{L \times S}.$$
#
# The two lengths differ: an English source of $S$ tokens, a French target of $L$ tokens.

# %%
english, french = data.sentences()[5], "Le chat s'est assis sur le tapis."   # a source and its translation
en_tokens, fr_tokens = data.tokenize(english), data.tokenize(french)
en_vocab = data.Vocab([en_tokens, data.tokenize("Call me Ishmael.")])        # two English sentences
fr_vocab = data.Vocab([fr_tokens])
torch.manual_seed(1)
embed_en, embed_fr = nn.Embedding(len(en_vocab), E), nn.Embedding(len(fr_vocab), E)  # random N(0, 1) rows
w_enc = [ac.randn(E, E, generator=g, device=device) / 4 for _ in range(3)]  # encoder's W_Q, W_K, W_V: 16 -> 16
w_q, w_k, w_v = [ac.randn(E, D, generator=g, device=device) / 4 for _ in range(3)]  # cross-attention's: 16 -> 8
with torch.no_grad():
    source = embed_en(torch.tensor([en_vocab.encode(en_tokens)])).to(device)           # (1, S=7) -> (1, 7, 16)
    decoder_states = embed_fr(torch.tensor([fr_vocab.encode(fr_tokens)])).to(device)   # (1, L=8) -> (1, 8, 16)
encoder_states, enc_weights = ac.self_attention(source, *w_enc)       # encoder: (1, 7, 16), weights (1, 7, 7)
cross_context, cross_weights = ac.cross_attention(decoder_states, encoder_states, w_q, w_k, w_v)  # (1,8,8), (1,8,7)
print(f"source S={len(en_tokens)}: {en_tokens}\ntarget L={len(fr_tokens)}: {fr_tokens}")
print("encoder self-attention:", tuple(enc_weights.shape), "  cross-attention:", tuple(cross_weights.shape))

# %% [markdown]
# Here the French embeddings stand in for the decoder states; in a real decoder they are the output
# of its masked self-attention over the French words produced so far.
#
# What does "reads its own past" look like at its simplest? Before any projection, let position $t$
# take the **average of positions $0..t$** (Karpathy, "Let's build GPT", 2023). A lower-triangular
# matrix of ones, each row divided by its sum, does it in one matrix product; and it is exactly softmax
# attention whose scores are all equal, with the future set to $-\infty$:

# %%
T = decoder_states.shape[1]
tril = torch.tril(torch.ones(T, T, device=device))                          # (T, T): 1 where key j <= query t
average_weights = tril / tril.sum(dim=1, keepdim=True)                      # (T, T): row t is 1/(t+1) on 0..t
by_matmul = average_weights @ decoder_states[0]                             # (T, T) @ (T, E) -> (T, E)
by_loop = torch.stack([decoder_states[0, :t + 1].mean(dim=0) for t in range(T)])   # the running mean, one by one
equal_scores = torch.zeros(T, T, device=device).masked_fill(tril == 0, float("-inf"))  # (T, T), future -inf
by_softmax = torch.softmax(equal_scores, dim=-1) @ decoder_states[0]        # (T, T) @ (T, E) -> (T, E)
torch.testing.assert_close(by_matmul, by_loop)
torch.testing.assert_close(by_softmax, by_loop)
print("row 3 of the weights:", [round(w, 2) for w in average_weights[3].tolist()])
print("tril average = running mean = softmax of equal scores with the future masked: checked")

# %% [markdown]
# Self-attention keeps the mask and replaces the equal scores by $q_t \cdot k_j / \sqrt{d_k}$: the
# weights of the past become learned and data-dependent instead of uniform. Lesson 07 builds that mask
# (`ac.causal_mask`) and the decoder block around it.

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained", width_ratios=[1, 1.1])
plot.attention_heatmap(enc_weights[0], en_tokens, en_tokens, ax=ax0, vmax=None,
                       title="encoder self-attention (S, S):\nEnglish reads English")
plot.attention_heatmap(cross_weights[0], fr_tokens, en_tokens, ax=ax1, vmax=None,
                       title="cross-attention (L, S):\nFrench queries, English keys")
ax1.set_ylabel("query (decoder position)")
ax1.set_xlabel("key (encoder position)")
plt.show()

# %% [markdown]
# Rows are French positions, columns English ones: the matrix is $8 \times 7$, not square. Every
# row still sums to 1, over the **source** positions. The weights are untrained, so the pattern is
# chance: both copies of "le" look hardest at "cat", and "tapis" hardly more at "mat" than at
# anything else. Lesson 09 trains a small translator (a GRU encoder-decoder with additive attention),
# and its attention over the source becomes the alignment between the two sentences. The
# `QueryPicker` works here too, one French query at a time:

# %%
fr_picker = QueryPicker(cross_weights[0], fr_tokens, en_tokens, query=1, title="cross-attention")
print(fr_picker.text())

# %% tags=["nbval-ignore-output"]
fr_picker

# %% [markdown]
# `ac.CrossAttention(d_model, head_dim)` is the module form: its `q_proj` reads the decoder states,
# its `k_proj` and `v_proj` the encoder outputs. With our matrices copied in (transposed, as
# `nn.Linear` stores them) it gives the same weights:

# %%
cross = ac.CrossAttention(d_model=E, head_dim=D, bias=False).to(device)
with torch.no_grad():
    for proj, w in [(cross.q_proj, w_q), (cross.k_proj, w_k), (cross.v_proj, w_v)]:
        proj.weight.copy_(w.T)                                  # (16, 8) -> (8, 16), nn.Linear's layout
    cross_context_m, cross_weights_m = cross(decoder_states, encoder_states)   # (1, 8, 8), (1, 8, 7)
checks.expect_tensor("attn_weights", cross_weights_m, cross_weights, legend="(B, L, S)")
checks.expect_tensor("context", cross_context_m, cross_context, legend="(B, L, D)")
print("CrossAttention with W_Q, W_K, W_V copied == ac.cross_attention: yes")

# %% [markdown]
# ### Exercise 2 — cross-attention
#
# Write `cross_attention(decoder_states, encoder_states, w_query, w_key, w_value)` for
# `decoder_states (B, L, E)`, `encoder_states (B, S, E)`, `w_query (E, D)`, `w_key (E, D)`,
# `w_value (E, Dv)`. Return `(context (B, L, Dv), attn_weights (B, L, S))`. Which states give the
# queries, and which the keys and values?

# %% [raw]
# # BEGIN QUESTION
# name: q2_cross_attention
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def cross_attention(decoder_states, encoder_states, w_query, w_key, w_value):
    """Single-head cross-attention; returns (context (B, L, Dv), attn_weights (B, L, S))."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write cross_attention")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    q = decoder_states @ w_query                               # the decoder asks: (B, L, E) -> (B, L, D)
    k, v = encoder_states @ w_key, encoder_states @ w_value    # the encoder answers: (B, S, D), (B, S, Dv)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)   # (B, L, S)
    return weights @ v, weights                                # (B, L, S) @ (B, S, Dv) -> (B, L, Dv)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(cross_attention):
    from attn_course.checks import check_cross_attention
    check_cross_attention(cross_attention)

test_q2_public(cross_attention)

# %%
# HIDDEN
def test_q2_hidden(cross_attention):
    from attn_course.checks import check_cross_attention
    check_cross_attention(cross_attention, thorough=True)

test_q2_hidden(cross_attention)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 6. The cost of an $(L, L)$ matrix
#
# Self-attention compares every token with every token: $L^2$ scores and weights per head, and
# about $L^2 d_k$ multiplications for $QK^\top$ and as many again for $AV$. Double the length and
# the matrix grows four times. A quick measurement on this machine (`d_model = head_dim = 64`, one
# CPU thread; timings vary from run to run and machine to machine):

# %% tags=["nbval-ignore-output"]
costs, threads = [], torch.get_num_threads()
torch.set_num_threads(1)                                         # one CPU thread: steadier timings
w64 = ac.randn(64, 64, generator=torch.Generator().manual_seed(0), device=device) / 8   # E=64 -> D=64
for L in [256, 512, 1024, 2048]:
    x_long = ac.randn(1, L, 64, generator=torch.Generator().manual_seed(L), device=device)  # (1, L, 64)
    ac.self_attention(x_long, w64, w64, w64)                     # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        _, attn_weights_long = ac.self_attention(x_long, w64, w64, w64)                      # (1, L, L)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / 5 * 1e3
    mib = attn_weights_long.numel() * attn_weights_long.element_size() / 2**20
    costs.append((L, mib, ms))
    print(f"L = {L:4d}   attn_weights: {L * L:>9,d} numbers = {mib:5.1f} MiB   time: {ms:7.2f} ms")
torch.set_num_threads(threads)
assert costs[-1][1] == 64 * costs[0][1]                          # 8 times the length, 64 times the memory
assert costs[-1][2] > costs[0][2]

# %% [markdown]
# At $L = 2048$ one head of one layer already holds 16 MiB of weights per sentence, and a model
# has many heads and layers. Fused kernels such as FlashAttention (Dao et al. 2022), used by
# `torch.nn.functional.scaled_dot_product_attention` on GPUs, compute the same result in tiles and
# never store the whole matrix; the $L^2$ work remains.

# %% [markdown]
# ## 7. Bug hunt
#
# A colleague wrote the decoder side of a translator with `cross_attention_v2(decoder_states,
# encoder_states, w_query, w_key, w_value)`. Its docstring (`help(cross_attention_v2)`) is word for
# word the reference's. It runs without an error on our sentence pair. Yet the translator built on it
# writes fluent French that has little to do with the English it was given.
#
# 1. Run it on our pair and compare the shapes with the reference `ac.cross_attention`.
# 2. Give it a *different* English sentence and see whether its output changes.
# 3. Read its source (`inspect.getsource`) and find the change.

# %%
from attn_course.broken import cross_attention_v2

good_context, good_weights = ac.cross_attention(decoder_states, encoder_states, w_q, w_k, w_v)
sus_context, sus_weights = cross_attention_v2(decoder_states, encoder_states, w_q, w_k, w_v)
print(f"L = {len(fr_tokens)} French positions, S = {len(en_tokens)} English positions")
print("reference          attn_weights:", tuple(good_weights.shape), " context:", tuple(good_context.shape))
print("cross_attention_v2 attn_weights:", tuple(sus_weights.shape), " context:", tuple(sus_context.shape))

# %%
other_tokens = data.tokenize("Call me Ishmael.")                # another source sentence
with torch.no_grad():
    other_source = embed_en(torch.tensor([en_vocab.encode(other_tokens)])).to(device)   # (1, S=4, 16)
other_encoder_states, _ = ac.self_attention(other_source, *w_enc)                        # (1, 4, 16)
for name, fn, before in [("reference", ac.cross_attention, good_context),
                         ("cross_attention_v2", cross_attention_v2, sus_context)]:
    after, _ = fn(decoder_states, other_encoder_states, w_q, w_k, w_v)                  # (1, 8, 8)
    print(f"{name:18s} context changed with the English sentence: {not torch.allclose(after, before)}")

# %% [markdown]
# <details><summary>Hint 1</summary><code>attn_weights</code> has one column per key. How many
# columns does <code>cross_attention_v2</code> return, and which sentence has that many tokens?</details>
# <details><summary>Hint 2</summary>The English sentence never reaches the output. Follow
# <code>encoder_states</code> through the source: which lines use it?</details>
# <details><summary>Hint 3</summary>In cross-attention the queries come from the decoder; the keys
# and the values come from the encoder outputs. This decoder attends to its own states.</details>
#
# ### Exercise 3 — fix it
#
# Write `fixed_cross_attention(decoder_states, encoder_states, w_query, w_key, w_value,
# key_padding_mask=None)`, returning `(context (B, L, Dv), attn_weights (B, L, S))`: the source of
# `cross_attention_v2` with the bug removed. Keep its `key_padding_mask` (True = padding, for a batch
# of English sentences of different lengths); its helpers are `ac.key_padding_to_attn_mask` and
# `ac.attention_weights`. You may drop the first line, `validate_inputs(...)`, which only checks shapes.

# %%
from attn_course.attention import attention_weights, key_padding_to_attn_mask   # the helpers it calls: the code you copy from below runs here as printed
from attn_course.self_cross import validate_inputs

print(inspect.getsource(cross_attention_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q3_bug_hunt
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_cross_attention(decoder_states, encoder_states, w_query, w_key, w_value, key_padding_mask=None):
    """Cross-attention: queries from decoder_states, keys and values from encoder_states."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 3: fix cross_attention_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    query = decoder_states @ w_query                  # (B, L, E) @ (E, D) -> (B, L, D)
    key = encoder_states @ w_key                      # the encoder outputs, not the decoder's: (B, S, D)
    value = encoder_states @ w_value                  # the encoder outputs, not the decoder's: (B, S, Dv)
    attn_mask = None if key_padding_mask is None else ac.key_padding_to_attn_mask(key_padding_mask)  # (B, 1, S)
    attn_weights = ac.attention_weights(query, key, attn_mask)       # (B, L, S)
    return attn_weights @ value, attn_weights                        # (B, L, Dv), (B, L, S)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q3_public(fixed_cross_attention):
    from attn_course.checks import check_cross_attention
    check_cross_attention(fixed_cross_attention)

test_q3_public(fixed_cross_attention)

# %%
# HIDDEN
def test_q3_hidden(fixed_cross_attention):
    from attn_course.checks import check_cross_attention
    check_cross_attention(fixed_cross_attention, thorough=True, key_padding=True)

test_q3_hidden(fixed_cross_attention)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# The check names both symptoms you saw: `attn_weights` of shape $(B, L, L)$ when $L \ne S$, and a
# context that does not change when `encoder_states` does (the only symptom left when the two
# sentences happen to have the same length). A real seq2seq decoder with this bug still trains: it
# becomes a language model of French that ignores the English, and its loss stalls where a
# translator's would keep falling.

# %% [markdown]
# ## Summary
#
# - Self-attention takes queries, keys and values from one sequence: $Q = XW_Q$, $K = XW_K$,
#   $V = XW_V$; `attn_weights` is $(B, L, L)$ and each output row mixes the whole sentence.
# - A single head equals `nn.MultiheadAttention(num_heads=1)` before its `out_proj`;
#   `nn.Linear` stores $W^\top$, and `in_proj_weight` stacks $W_Q^\top, W_K^\top, W_V^\top$.
# - `nn.MultiheadAttention` and PyTorch's transformer layers read $(L, B, E)$ unless built with
#   `batch_first=True`; fed $(B, L, E)$ they run without an error and attend across the batch.
# - Without positions, self-attention is permutation-equivariant: shuffle the tokens and the
#   outputs shuffle the same way. Word order must be added (lesson 07).
# - Encoder self-attention builds a representation of the source; cross-attention lets each
#   decoder position focus on encoder outputs: queries from the decoder ($L$), keys and values from
#   the encoder ($S$), `attn_weights` $(B, L, S)$.
# - The $(L, L)$ matrix costs $O(L^2)$ memory and time.
# - A decoder that takes its keys and values from its own states runs, and ignores the source:
#   probe it by changing the encoder input.
#
# **Next:** lesson 06 runs several heads side by side — multi-head attention, split and merged with
# `view` and `transpose` — and opens a real pretrained model (all-MiniLM-L6-v2) to see what its
# heads attend to. Lesson 07 adds masks and positions and builds a whole transformer block.
#
# **References.** Vaswani et al. (2017), *Attention Is All You Need*, section 3.2.1 (eq. 1) and
# section 3.2.3 (the three uses of attention). Bahdanau, Cho & Bengio (2015), *Neural Machine
# Translation by Jointly Learning to Align and Translate*, section 3.1. Cheng, Dong & Lapata (2016),
# *Long Short-Term Memory-Networks for Machine Reading* (intra-attention). Clark, Khandelwal, Levy &
# Manning (2019), *What Does BERT Look At? An Analysis of BERT's Attention*. Lee et al. (2019),
# *Set Transformer*, section 3.1 (permutation equivariance of self-attention). Dao et al. (2022),
# *FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness*. PyTorch,
# `torch.nn.MultiheadAttention`.
