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
# name: 08_bug_hunt
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
# # Lesson 08 — Bug hunt: the catalogue
#
# **Learning goals.** After this lesson you can
# 1. name the property a silent attention bug breaks — shape, normalisation, scale, mask,
#    causality, gradient, or plain values — and pick the probe that shows it;
# 2. run a **causality probe** (change the future, watch the past) and read an influence matrix;
# 3. check that a pad vector learns nothing, and why zeroing it once is not enough;
# 4. fix four bugs that shipped in real code: a dropout scale, a causal mask, an embedding without
#    `padding_idx`, and a global variable read inside a function;
# 5. use the course's checks as a diagnosis: their *kind* says where to look.
#
# Every core lesson ended with one suspect. Here is the whole line-up. Each suspect in
# `attn_course.broken` keeps the signature and the docstring of the reference it copies, word for
# word, runs without an error and keeps every shape right. None of their names gives the bug away.
#
# Shape legend (the same in every lesson): **B** batch, **L** query length, **S** key/value length,
# **D** head_dim (the paper's $d_k$), **E** d_model, **V** vocabulary.

# %%
# %matplotlib inline
import inspect
import math

import matplotlib.pyplot as plt
import torch
from torch import nn

import attn_course as ac
from attn_course import broken, checks, data, plot
from attn_course.checks.probes import influence_matrix, pad_row_gradient
from attn_course.widgets import SuspectExplorer

torch.set_printoptions(precision=4, sci_mode=False)
device = ac.get_device()  # ATTN_COURSE_DEVICE = cpu | cuda | auto

# %% [markdown]
# ## 1. A method: property first, code second
#
# Reading the code of a suspect line by line is slow, and our eyes skip the one wrong character.
# Start from what the function *promises* and test each promise with a probe:
#
# | property | promise | probe |
# |---|---|---|
# | shape | `(..., L, S)` weights, `(..., L, Dv)` output | print shapes; L != S catches many swaps |
# | normalisation | each row of weights sums to 1 over the **keys** | `attn_weights.sum(-1)` |
# | scale | scores divided by $\sqrt{d_k}$, softmax at the stated temperature | entropy against the reference, at several $d_k$ |
# | mask | no weight on a forbidden key; True means what the docstring says | weights at masked positions |
# | causality | output $i$ depends on positions $\le i$ only; a sentence depends on itself, not on the rest of its batch | change position $j > i$ (or another sentence), watch output $i$ |
# | gradient | what must learn gets a gradient, what must not gets none | `.grad` after one backward pass |
# | values | equal to an independent reference | `torch.testing.assert_close` against PyTorch's module |
#
# The course's checks run these probes for you, and a failure carries its `kind`. Here is every
# suspect of the core lessons against the check of the function it copies, in the quick mode a
# learner sees:

# %%
LINEUP = {  # suspect -> the check of the function it copies
    "pad_batch_v2": checks.check_pad_batch,
    "token_embedding_v2": checks.check_token_embedding,
    "scaled_dot_scores_v2": checks.check_scaled_dot_scores,
    "additive_scores_v2": checks.check_additive_scores,
    "softmax_with_temperature_v2": checks.check_softmax_with_temperature,
    "attention_weights_v2": checks.check_attention_weights,
    "attention_weights_v3": checks.check_attention_weights,
    "scaled_dot_product_attention_v2": checks.check_scaled_dot_product_attention,
    "hard_attention_v2": checks.check_hard_attention,
    "cross_attention_v2": checks.check_cross_attention,
    "split_heads_v2": checks.check_split_heads,
    "merge_heads_v2": checks.check_merge_heads,
    "multi_head_attention_v2": checks.check_multi_head_attention,
    "MultiHeadAttention_v2": checks.check_multi_head_attention_module,
    "MultiHeadAttention_v3": checks.check_multi_head_attention_module,
    "causal_mask_v2": checks.check_causal_mask,
    "masked_softmax_v2": checks.check_masked_softmax,
    "masked_softmax_v3": checks.check_masked_softmax,
    "masked_softmax_v4": checks.check_masked_softmax,
    "SinusoidalPositionalEncoding_v2": checks.check_positional_encoding,
}
torch.manual_seed(0)
with checks.tripwire.disarmed():   # the suspects may call PyTorch's softmax: that is not what is on trial here
    for name, check in LINEUP.items():
        try:
            check(getattr(broken, name))
            verdict = "passed (!)"
        except checks.CheckFailure as err:
            verdict = f"{err.kind:13s} {str(err).split(': ', 1)[-1][:70]}..."
        print(f"{name:32s} {verdict}")

# %% [markdown]
# Every suspect fails, and the kind already narrows the search: a `scale` failure says "right up to
# a constant factor", a `mask` failure "weight where there should be none", a `causality` failure "an
# output moved when only what it must not see changed" (a later token, or another sentence of the
# batch). The rest of this lesson takes four suspects the core lessons did not show, one property each,
# and makes their symptom visible *before* reading their code. That is the skill: in your own code there will be no check
# written in advance.
#
# ## 2. A line-up you can move
#
# The explorer draws a suspect's weights next to the reference's, for 7 tokens, with random queries
# and keys of `head_dim` features. Move `head_dim`; for the softmax and SDPA suspects move the knob
# (temperature, dropout probability). Which suspect is right at one setting and wrong at the
# others? Which one's rows do not sum to 1?

# %% tags=["nbval-ignore-output"]
tokens = data.tokenize("The cat sat on the mat.")
explorer = SuspectExplorer({
    "attention_weights_v2": ("attention_weights", broken.attention_weights_v2, ac.attention_weights),
    "attention_weights_v3": ("attention_weights", broken.attention_weights_v3, ac.attention_weights),
    "softmax_with_temperature_v2": ("softmax_with_temperature", broken.softmax_with_temperature_v2,
                                    ac.softmax_with_temperature),
    "scaled_dot_product_attention_v2": ("scaled_dot_product_attention", broken.scaled_dot_product_attention_v2,
                                        ac.scaled_dot_product_attention),
    "causal_mask_v2": ("causal_mask", broken.causal_mask_v2, ac.causal_mask),
}, tokens)
explorer

# %% [markdown]
# The same comparisons in print, so they can be read without the widget (and checked by the tests):

# %%
for name in ["attention_weights_v3", "softmax_with_temperature_v2", "scaled_dot_product_attention_v2"]:
    explorer.dropdown.value = name
    print(explorer.text(), end="\n\n")
explorer.dropdown.value = "attention_weights_v2"                               # back to the first suspect

# %% [markdown]
# ## 3. Case 1 — a dropout that does not keep its average
#
# Dropout on the attention weights zeroes each weight with probability $p$ during training. (It is not
# in the paper's text: Vaswani et al. 2017, §5.4, drop each sub-layer's output and the embeddings; the
# attention dropout comes from their tensor2tensor code and BERT's `attention_probs_dropout_prob`,
# Devlin et al. 2019.) To keep the expected output unchanged, the survivors are multiplied by $1/(1-p)$
# during training: "inverted dropout", what `torch.nn.functional.dropout` does. Srivastava et al. (2014)
# scaled the other way, multiplying the weights by $1-p$ at test time; the expectation is the same.
#
# $$\tilde a_{ij} = a_{ij}\,\frac{m_{ij}}{1-p},\quad m_{ij}\sim\mathrm{Bernoulli}(1-p)
# \qquad\Rightarrow\qquad \mathbb{E}[\tilde a_{ij}] = a_{ij}.$$
#
# **Probe.** With `value` the identity matrix, `attn_weights @ value` *is* the weights after
# dropout, so we can look at them. Average many draws: the reference returns to the weights
# without dropout; the suspect does not.

# %%
g = torch.Generator().manual_seed(1)
query, key = torch.randn(1, 6, 16, generator=g), torch.randn(1, 6, 16, generator=g)   # (1, L, D), (1, S, D)
eye = torch.eye(6).unsqueeze(0)                                                        # value = I: (1, S, S)
clean = ac.attention_weights(query, key)[0]                                            # (L, S), no dropout
torch.manual_seed(0)
avg_ref = torch.stack([ac.scaled_dot_product_attention(query, key, eye, dropout_p=0.25)[0]
                       for _ in range(2000)]).mean(0)                                  # (L, S)
torch.manual_seed(0)
avg_sus = torch.stack([broken.scaled_dot_product_attention_v2(query, key, eye, dropout_p=0.25)[0]
                       for _ in range(2000)]).mean(0)
print("row sums without dropout:              ", clean.sum(-1))
print("row sums, reference, mean of 2000 draws:", avg_ref.sum(-1))
print("row sums, suspect,   mean of 2000 draws:", avg_sus.sum(-1))
print(f"suspect / reference on average: {(avg_sus.sum() / avg_ref.sum()).item():.3f}")

# %% [markdown]
# <details><summary>Hint 1</summary>The rows of the suspect sum to about 3 on average at p = 0.25.
# Which number is 3 when p = 0.25?</details>
# <details><summary>Hint 2</summary>A fraction 1 − p of the weights survive. To keep the average, by
# what must each survivor be multiplied? And what does the suspect multiply by?</details>
# <details><summary>Hint 3</summary>Look at the line after <code>keep = ...</code>.</details>
#
# ### Exercise 1 — fix it
#
# Write `fixed_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)` returning
# `attn_output (..., L, Dv)`: the suspect's code with the bug removed. Use `ac.attention_weights`
# for the weights (it takes `attn_mask` and `is_causal`) and draw the dropout mask with
# `torch.rand_like`.

# %%
print(inspect.getsource(broken.scaled_dot_product_attention_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q1_dropout
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False):
    """attn_output (..., L, Dv) = dropout(softmax(Q K^T / sqrt(d_k) + mask)) V, survivors scaled by 1 / (1 - p)."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: fix scaled_dot_product_attention_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    attn_weights = ac.attention_weights(query, key, attn_mask, is_causal)      # (..., L, S)
    if dropout_p > 0.0:
        keep = torch.rand_like(attn_weights) >= dropout_p                      # True with probability 1 - p
        attn_weights = attn_weights * keep / (1.0 - dropout_p)                 # not / p
    return attn_weights @ value                                                # (..., L, Dv)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(fixed_sdpa):
    from attn_course.checks import check_scaled_dot_product_attention
    check_scaled_dot_product_attention(fixed_sdpa)

test_q1_public(fixed_sdpa)

# %%
# HIDDEN
def test_q1_hidden(fixed_sdpa):
    from attn_course.checks import check_scaled_dot_product_attention
    check_scaled_dot_product_attention(fixed_sdpa, thorough=True)

test_q1_hidden(fixed_sdpa)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. Case 2 — a causal mask that leaks
#
# A decoder predicts token $i+1$ from tokens $0..i$. Its self-attention must not look ahead:
# `causal_mask(L)` is True (may attend) on and below the diagonal. If it leaks, a language model
# reads the answer: its training loss falls beautifully and its samples are garbage.
#
# **Probe.** The influence matrix: change the key and value at position $j$ only, and record how much
# output $i$ moves. A causal layer gives a **lower-triangular** matrix: nothing above the diagonal.

# %%
L = 7
probes = {"reference: ac.causal_mask": ac.causal_mask, "suspect: causal_mask_v2": broken.causal_mask_v2}
influence = {title: influence_matrix(lambda q, k, v, fn=fn: ac.scaled_dot_product_attention(q, k, v, attn_mask=fn(L)), L)
             for title, fn in probes.items()}                                   # (L, L) each
for title, m in influence.items():
    leaks = [(i, j) for i in range(L) for j in range(i + 1, L) if m[i, j] > 1e-9]
    print(f"{title:26s} outputs that moved when only the future changed: {leaks}")
fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for ax, (title, m) in zip(axes, influence.items()):
    plot.attention_heatmap((m > 1e-9).float(), tokens, tokens, ax=ax, title=title + "\n1 = output moved", annotate=True)
    ax.set_xlabel("position changed (key and value)")
    ax.set_ylabel("output that moved")
plt.show()

# %% [markdown]
# <details><summary>Hint 1</summary>Which cells above the diagonal light up? By how many positions
# does each query look ahead?</details>
# <details><summary>Hint 2</summary>Print <code>broken.causal_mask_v2(4).int()</code> next to
# <code>ac.causal_mask(4).int()</code>.</details>
# <details><summary>Hint 3</summary>What does the <code>diagonal</code> argument of
# <code>torch.tril</code> do?</details>
#
# ### Exercise 2 — fix it
#
# Write `fixed_causal_mask(L, S=None, device=None)` returning a bool `attn_mask (L, S)`,
# **True = may attend**: query $i$ sees keys $0..i$.

# %%
print(inspect.getsource(broken.causal_mask_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q2_causal_mask
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_causal_mask(L, S=None, device=None):
    """Causal attn_mask (L, S) of bools, True = may attend: query i sees keys 0..i."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: fix causal_mask_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    S = L if S is None else S
    return torch.ones(L, S, dtype=torch.bool, device=device).tril()            # diagonal=0: no look-ahead
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(fixed_causal_mask):
    from attn_course.checks import check_causal_mask
    check_causal_mask(fixed_causal_mask)

test_q2_public(fixed_causal_mask)

# %%
# HIDDEN
def test_q2_hidden(fixed_causal_mask):
    from attn_course.checks import check_causal_mask
    check_causal_mask(fixed_causal_mask, thorough=True)

test_q2_hidden(fixed_causal_mask)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 5. Case 3 — a pad vector that learns
#
# Lesson 01 built `nn.Embedding(V, E, padding_idx=pad_id)`: the pad row starts at zero **and gets no
# gradient**, so padding never learns. `data.token_embedding(V, E, pad_id, generator)` builds such a
# table from a seed. The suspect `token_embedding_v2` zeroes the pad row too. Look at the table:
# row 0 is zero in both.
#
# **Probe.** One backward pass on a padded batch, then one step of SGD.

# %%
vocab = data.Vocab([data.tokenize(s) for s in data.sentences()])
ids, key_padding_mask = data.pad_batch([vocab.encode(data.tokenize(s)) for s in data.sentences()[:3]],
                                       pad_id=vocab.pad_id)                     # (B=3, T)
print("padding per sentence:", key_padding_mask.sum(-1).tolist())
target = torch.randn(*ids.shape, 8, generator=torch.Generator().manual_seed(1))  # (B, T, E): a stand-in loss
for name, build in [("reference", data.token_embedding), ("suspect", broken.token_embedding_v2)]:
    emb = build(len(vocab), 8, vocab.pad_id, torch.Generator().manual_seed(0))  # weight (V, E=8)
    grad = pad_row_gradient(emb, ids, vocab.pad_id)                             # (E,), before any step
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    opt.zero_grad()
    (emb(ids) * target).sum().backward()                                        # any loss that reads every position
    opt.step()
    print(f"{name:9s} padding_idx={emb.padding_idx}  |grad| on the pad row: {grad.norm().item():.3f}  "
          f"pad row after one step: {[round(x, 4) for x in emb.weight[vocab.pad_id, :3].tolist()]}")

# %% [markdown]
# <details><summary>Hint 1</summary>The reference's pad row gets a zero gradient; the suspect's does
# not. Which attribute of the two embeddings differs?</details>
# <details><summary>Hint 2</summary>Zeroing a row once sets its value; what stops the optimizer
# from changing it afterwards?</details>
#
# ### Exercise 3 — fix it
#
# Write `fixed_token_embedding(vocab_size, embed_dim, pad_id=0, generator=None)` returning an
# `nn.Embedding`: the same table as the suspect (drawn with `torch.randn(V, E, generator=generator)`,
# pad row zero), whose pad row never learns.

# %%
print(inspect.getsource(broken.token_embedding_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q3_padding_idx
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_token_embedding(vocab_size, embed_dim, pad_id=0, generator=None):
    """nn.Embedding (V, E) drawn from N(0, 1) with generator; pad row zero with zero gradient."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 3: fix token_embedding_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    weight = torch.randn(vocab_size, embed_dim, generator=generator)           # (V, E)
    embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)        # padding_idx: no gradient
    with torch.no_grad():
        embedding.weight.copy_(weight)
        embedding.weight[pad_id] = 0.0
    return embedding
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q3_public(fixed_token_embedding):
    from attn_course.checks import check_token_embedding
    check_token_embedding(fixed_token_embedding)

test_q3_public(fixed_token_embedding)

# %%
# HIDDEN
def test_q3_hidden(fixed_token_embedding):
    from attn_course.checks import check_token_embedding
    check_token_embedding(fixed_token_embedding, thorough=True)

test_q3_hidden(fixed_token_embedding)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 6. Case 4 — right at one size, wrong at every other
#
# `attention_weights_v3` passes a test written with 64-wide heads. The explorer of section 2 already
# showed it: at `head_dim = 64` its weights equal the reference's. **Probe:** measure the entropy of
# the weights against the reference's while the head size changes. A scale bug shows as a gap that
# depends on $d_k$; the check reports it with kind `scale`.

# %%
g = torch.Generator().manual_seed(2)
print(" d_k   entropy ref   entropy suspect   max |diff|")
for d in [4, 16, 64, 256]:
    q, k = torch.randn(1, 6, d, generator=g), torch.randn(1, 6, d, generator=g)   # (1, L, D), (1, S, D)
    ref, sus = ac.attention_weights(q, k), broken.attention_weights_v3(q, k)      # (1, L, S) each
    print(f"{d:4d}   {ac.entropy(ref).mean().item():11.3f}   {ac.entropy(sus).mean().item():15.3f}"
          f"   {(ref - sus).abs().max().item():10.4f}")
try:
    with checks.tripwire.disarmed():
        checks.check_attention_weights(broken.attention_weights_v3)
except checks.CheckFailure as err:
    print("\nthe check says:", err)

# %% [markdown]
# <details><summary>Hint 1</summary>The suspect is too flat below d_k = 64 and too sharp above. Which
# number is the same for every input in its scale?</details>
# <details><summary>Hint 2</summary>Where does <code>d_k</code> in the suspect's code come from? It is
# not a parameter.</details>
#
# ### Exercise 4 — fix it
#
# Write `fixed_attention_weights(query, key, attn_mask=None, is_causal=False, scale=None)` returning
# `attn_weights (..., L, S)`: the suspect with the global variable replaced by what it should read.
# `ac.causal_mask` and `ac.masked_softmax` are yours to use.

# %%
print(inspect.getsource(broken.attention_weights_v3))
print("the module-level d_k the suspect reads:", broken.v2.d_k)

# %% [raw]
# # BEGIN QUESTION
# name: q4_global
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    """attn_weights (..., L, S) = softmax(query key^T * scale + mask), scale = 1 / sqrt(query.shape[-1])."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 4: fix attention_weights_v3")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    L, S = query.shape[-2], key.shape[-2]
    if is_causal:
        attn_mask = ac.causal_mask(L, S, device=query.device)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale      # the query's own d_k
    attn_scores = query @ key.transpose(-2, -1) * scale                        # (..., L, S)
    return ac.masked_softmax(attn_scores, attn_mask)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q4_public(fixed_attention_weights):
    from attn_course.checks import check_attention_weights
    check_attention_weights(fixed_attention_weights)

test_q4_public(fixed_attention_weights)

# %%
# HIDDEN
def test_q4_hidden(fixed_attention_weights):
    from attn_course.checks import check_attention_weights
    check_attention_weights(fixed_attention_weights, thorough=True)

test_q4_hidden(fixed_attention_weights)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 7. Bug hunt — on your own
#
# Two suspects remain without a case file. For each, write down the property you expect to fail
# *before* running its check, then run it (uncomment) and compare.
#
# - `additive_scores_v2(query, key, w_query, w_key, v)` — lesson 02's additive score. Probe: for
#   every query, rank the keys by score. What do you notice across the queries?
# - `softmax_with_temperature_v2(attn_scores, temperature)` — lesson 03's temperature. Probe: the
#   entropy at T = 0.5, 1 and 2.

# %%
g = torch.Generator().manual_seed(7)
q, k = torch.randn(5, 4, generator=g), torch.randn(6, 4, generator=g)             # (L, Dq), (S, Dk)
w_q, w_k, v = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g), torch.randn(8, generator=g)
for name, fn in [("reference", ac.additive_scores), ("suspect", broken.additive_scores_v2)]:
    print(f"{name:9s} best key per query: {fn(q, k, w_q, w_k, v).argmax(-1).tolist()}")
scores = torch.randn(6, generator=g)                                              # (S,): one query's scores
for name, fn in [("reference", ac.softmax_with_temperature), ("suspect", broken.softmax_with_temperature_v2)]:
    print(f"{name:9s} entropy at T = 0.5, 1, 2:", [round(ac.entropy(fn(scores, t)).item(), 3) for t in (0.5, 1, 2)])
# with checks.tripwire.disarmed():   # a suspect may call torch.softmax; the check is after its other bug
#     checks.check_additive_scores(broken.additive_scores_v2)
#     checks.check_softmax_with_temperature(broken.softmax_with_temperature_v2)

# %% [markdown]
# <details><summary>Hint (additive)</summary>Without the tanh, the score is a query part plus a key
# part: <code>v·W_q q + v·W_k k</code>. The key part alone decides the ranking.</details>
# <details><summary>Hint (temperature)</summary>Raising T should flatten the weights and raise the
# entropy.</details>
#
# ## Summary
#
# - A silent bug breaks a property, not a shape. Name the property, then probe it: row sums
#   (normalisation), entropy against $d_k$ or T (scale), weights at masked keys (mask), the influence
#   matrix (causality), `.grad` on what must not learn (gradient), an independent reference (values).
# - Inverted dropout divides by $1-p$; a causal mask is `tril()` with `diagonal=0`; a pad row needs
#   `padding_idx`, not just a zero; a function reads its sizes from its arguments, never from globals.
# - The course's checks report a `kind`; every deliberately broken implementation in
#   `attn_course.broken` fails its check, and correct code written another way (einsum, loops,
#   PyTorch's fused SDPA, float64) passes — the test suite proves both.
#
# **Next:** lesson 09 puts attention to work: translation with alignments, where a decoder that
# attends to the wrong tensor is the first bug to hunt.
#
# **References.** Vaswani et al. (2017), *Attention Is All You Need*, sections 3.2.1, 3.2.3 (masking),
# 3.4 and 5.4 (residual and embedding dropout). Devlin et al. (2019), *BERT* (attention dropout,
# `attention_probs_dropout_prob`). Srivastava et al. (2014), *Dropout: A Simple Way to Prevent Neural
# Networks from Overfitting* (scaling at test time). Bahdanau, Cho & Bengio (2015), appendix A.1.2. PyTorch documentation of
# `torch.nn.Embedding` (`padding_idx`) and `torch.nn.functional.scaled_dot_product_attention`.
