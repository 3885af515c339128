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
# name: 01_input_representation
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
# # Lesson 01 — Input representation: from sentences to vectors
#
# **Learning goals.** After this lesson you can
# 1. turn real sentences into tokens, and tokens into ids with a vocabulary;
# 2. read the course's shape legend, and follow a batch from ids `(B, T)` to embeddings `(B, T, E)`;
# 3. pad sentences of different lengths into one tensor, and build the `key_padding_mask` that tells
#    attention which positions are padding;
# 4. explain an embedding lookup as a row selection, `one_hot(ids) @ weight`, and what
#    `padding_idx` does to the pad row and its gradient;
# 5. find a bug in a padding function that keeps every shape right.
#
# Attention (lessons 02–07) mixes vectors. A sentence is text. This lesson builds the bridge:
# **text → tokens → ids → vectors**, for a whole batch of sentences at once.

# %% [markdown]
# ## The shape legend
#
# Every lesson, docstring and shape comment in this course uses the same letters:
#
# | symbol | meaning | names you will meet |
# |---|---|---|
# | **B** | batch size: sentences processed together | `batch_size` |
# | **T** | tokens per sentence, after padding | `seq_len` |
# | **L** | query length: positions that ask | |
# | **S** | key/value length: positions that are looked at | |
# | **H** | attention heads (lesson 06) | `num_heads` |
# | **D** | head_dim, the paper's $d_k$ | `head_dim` |
# | **E** | d_model: the width of every token vector, $E = H \cdot D$ | PyTorch: `embed_dim`; Hugging Face: `hidden_size` |
# | **V** | vocabulary size: how many different tokens exist | `num_embeddings`, `vocab_size` |
#
# In self-attention every token is both a query and a key, so $L = S = T$. A comment such as
# `# (B, T) -> (B, T, E)` at the end of a line says how that line changes a shape.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.nn import functional as F

import attn_course as ac
from attn_course import checks, data, plot
from attn_course.widgets import PaddingExplorer

torch.set_printoptions(precision=4, sci_mode=False, linewidth=120)
ac.seed_everything(0)  # layers are built on the CPU after torch.manual_seed, then moved: same numbers everywhere
device = ac.get_device()  # ATTN_COURSE_DEVICE = cpu | cuda | auto

# %% [markdown]
# ## 1. Text → tokens
#
# Our text is real: the opening lines of five public-domain novels, and the sentence every
# language-model tutorial starts with.

# %%
for text, source in data.SENTENCES:
    print(f"{text}\n    — {source}")

# %% [markdown]
# A **tokenizer** cuts text into tokens. Ours is the simplest that works: lower-case words and
# punctuation marks, one regular expression (`data.tokenize`). Real models use *subword* tokenizers
# (BPE, Sennrich et al. 2016; WordPiece in BERT) that split rare words into frequent pieces, so that
# no word is ever unknown; everything after this step is the same.

# %%
sentences = data.sentences()
token_lists = [data.tokenize(s) for s in sentences]              # 6 str -> 6 lists of tokens
for tokens in token_lists:
    print(f"{len(tokens):2d} tokens: {tokens}")

# %% [markdown]
# ## 2. Tokens → ids
#
# A model computes with numbers, so every distinct token gets an integer **id**. `data.Vocab` numbers
# the tokens in order of first appearance, after two special ones: id 0 is `<pad>` (padding,
# section 3) and id 1 is `<unk>`, which stands for any token the vocabulary has never seen.
# Our vocabulary is tiny; BERT's WordPiece vocabulary has V = 30,522 tokens, GPT-2's BPE one 50,257.

# %%
vocab = data.Vocab(token_lists)
V = len(vocab)                                                   # vocabulary size
print(f"V = {V};  the first ids: {list(enumerate(vocab.itos[:8]))}")
token_ids = [vocab.encode(tokens) for tokens in token_lists]      # 6 lists of tokens -> 6 lists of ints
print(token_lists[1], "->", token_ids[1])
unseen = vocab.encode(data.tokenize("Call me Ahab."))            # "ahab" is not in the vocabulary
print("'Call me Ahab.' ->", unseen, "->", vocab.decode(unseen))

# %% [markdown]
# ## 3. A batch: padding and `key_padding_mask`
#
# Hardware is fast on rectangles: to process B sentences at once we stack their ids into one
# tensor of shape `(B, T)`. But our sentences have 4 to 26 tokens. The usual fix is to
# **right-pad** every sentence with the pad id up to the longest length T, and to keep a boolean
# **`key_padding_mask`** of the same shape that says which positions are padding.
#
# The course follows `torch.nn.MultiheadAttention`: in `key_padding_mask`, **True = padding
# (ignore)**. Beware of the other conventions you will meet: PyTorch's
# `scaled_dot_product_attention` takes an `attn_mask` with True = *may attend*
# (`ac.key_padding_to_attn_mask` converts), and Hugging Face tokenizers return an `attention_mask`
# with 1 = *real token*.

# %%
ids, key_padding_mask = data.pad_batch(token_ids, pad_id=vocab.pad_id)   # 6 lists -> (B, T), (B, T)
B, T = ids.shape
print(f"ids {tuple(ids.shape)} {ids.dtype};  key_padding_mask {tuple(key_padding_mask.shape)} "
      f"{key_padding_mask.dtype}")
print("ids[:2] =", ids[:2], sep="\n")
print("key_padding_mask[:2] as 0/1 (1 = padding) =", key_padding_mask[:2].int(), sep="\n")
print("padding per sentence:", key_padding_mask.sum(dim=1).tolist(),
      f"= {key_padding_mask.sum()} of B*T = {B * T} positions")

# %% [markdown]
# The same batch as a picture: one row per sentence, the token above its id, padding shaded.

# %%
plot.token_grid(ids, [vocab.decode(row) for row in ids], key_padding_mask,
                title=f"ids (B={B}, T={T}): token above, id below; grey = padding (key_padding_mask True)")
plt.show()

# %% [markdown]
# Almost half of this batch is padding: work spent on nothing, decided by one long sentence.
# Training code therefore groups sentences of similar length into the same batch ("bucketing"),
# and tokenizers cut sentences to a maximum length (truncation).
#
# **Try it.** Choose sentences (Ctrl- or Cmd-click for several) and move the truncation slider.
# Which sentence decides T? How much padding is left when you drop it? What does `max_len = 8` do to
# the mask of "Call me Ishmael."?

# %% tags=["nbval-ignore-output"]
explorer = PaddingExplorer(sentences, vocab, embedding_dim=8)   # E = 8, as in section 4
explorer

# %% [markdown]
# The same in text: the full batch, two short sentences, and all six cut to 8 tokens.

# %%
print(explorer.text(), end="\n\n")
explorer.set(selected=[1, 5])                        # choose "Call me Ishmael." and "The cat sat on the mat."
print(explorer.text(), end="\n\n")
explorer.set(selected=range(len(sentences)), max_len=8)   # all six, cut to at most 8 tokens each
print(explorer.text())
explorer.set(max_len=explorer.max_len.max)           # back to no truncation

# %% [markdown]
# ### Exercise 1 — pad a batch
#
# Write `pad_batch(sequences, pad_id)` for a list of B lists of token ids (lengths may differ, and a
# sentence may be an empty list: its row is then all padding). Return the tuple `(ids, key_padding_mask)`:
# - `ids`: `(B, T)` int64, T the longest length, each sentence on the left and `pad_id` after it;
# - `key_padding_mask`: `(B, T)` bool, **True at the padded positions**, False at the real tokens.
#
# `torch.full` makes a tensor filled with one value; `torch.arange(T) >= lengths[:, None]`
# compares every position with every length at once. Build the mask from the lengths, not with
# `ids == pad_id`: where the pad id is also a real token (GPT-2 has no pad token, and code often pads
# with its end-of-text token) that would hide real tokens. Do not call `data.pad_batch`: it is the
# reference the check compares with, and the check refuses an answer that calls it. That rule holds in
# every exercise of the course, in the notebook exactly as when graded: each exercise names what you
# are asked to write yourself, and calling it (the package's version or PyTorch's) fails the check.

# %% [raw]
# # BEGIN QUESTION
# name: q1_pad_batch
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def pad_batch(sequences, pad_id=0):
    """Right-pad B id lists to (B, T); return (ids int64, key_padding_mask bool, True = padding)."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write pad_batch")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    lengths = torch.tensor([len(seq) for seq in sequences])              # (B,)
    max_len = int(lengths.max())                                         # T
    padded = torch.full((len(sequences), max_len), pad_id, dtype=torch.long)   # (B, T), all padding
    for b, seq in enumerate(sequences):
        padded[b, :len(seq)] = torch.tensor(seq, dtype=torch.long)       # the real tokens go first
    is_padding = torch.arange(max_len) >= lengths[:, None]               # (T,) vs (B, 1) -> (B, T)
    return padded, is_padding
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(pad_batch):
    from attn_course.checks import check_pad_batch
    check_pad_batch(pad_batch)

test_q1_public(pad_batch)

# %%
# HIDDEN
def test_q1_hidden(pad_batch):
    from attn_course.checks import check_pad_batch
    check_pad_batch(pad_batch, thorough=True)

test_q1_hidden(pad_batch)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. Ids → vectors: `nn.Embedding`
#
# An id is a name, not a quantity: id 13 is not "more" than id 12. An **embedding** gives every id
# a vector of E learned numbers: a table `weight` of shape `(V, E)`, one row per token of the
# vocabulary (Bengio et al. 2003; Vaswani et al. 2017, section 3.4). `nn.Embedding(V, E)` holds that
# table; applied to ids of shape `(B, T)` it returns `(B, T, E)`: every id replaced by its row.
#
# E is d_model, the width that every attention layer after this keeps (PyTorch: `embed_dim`,
# Hugging Face: `hidden_size`). Real models use E = 384 (all-MiniLM-L6-v2), 512 (the original
# Transformer) or 768 (BERT-base); we use E = 8 so that the numbers fit on the screen. The table
# starts random; training moves it (section 7). `padding_idx` is the topic of section 5.

# %%
E = 8                                                            # d_model
torch.manual_seed(0)                                             # nn.Embedding draws its table on the CPU
embedding = nn.Embedding(V, E, padding_idx=vocab.pad_id).to(device)   # weight (V, E)
ids, key_padding_mask = ids.to(device), key_padding_mask.to(device)
x = embedding(ids)                                               # (B, T) -> (B, T, E)
print(f"embedding.weight {tuple(embedding.weight.shape)};  ids {tuple(ids.shape)} -> x {tuple(x.shape)}")
b, t = 1, 2                                                      # sentence 1, position 2
token_id = ids[b, t].item()
print(f"ids[{b}, {t}] = {token_id} ({vocab.itos[token_id]!r})")
print(f"x[{b}, {t}]         =", x[b, t].detach().cpu())
print(f"weight[{token_id}]      =", embedding.weight[token_id].detach().cpu())

# %% [markdown]
# Position `(1, 2)` of `x` is row 13 of the table, and nothing else: an embedding **looks up rows**.
# The same token gets the same vector wherever it stands ("of" in sentences 0, 3 and 4 alike):
# the vector says *what* a token is, not *where*. Lesson 07 adds positions.
#
# ### Exercise 2 — an embedding lookup by hand
#
# Write `embedding_lookup(ids, weight)` for `ids (B, T)` int64 and `weight (V, E)`, returning
# `(B, T, E)`: row `ids[b, t]` of `weight` at every position. Do not use `nn.Embedding` or
# `F.embedding`. One line is enough: a tensor can be indexed with a tensor of ids of any shape.

# %% [raw]
# # BEGIN QUESTION
# name: q2_embedding_lookup
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def embedding_lookup(ids, weight):
    """Rows of weight (V, E) picked by ids (B, T): returns (B, T, E)."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write embedding_lookup")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    return weight[ids]                                       # (B, T) -> (B, T, E): row ids[b, t] of weight
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(embedding_lookup):
    from attn_course.checks import check_embedding_lookup
    check_embedding_lookup(embedding_lookup)

test_q2_public(embedding_lookup)

# %%
# HIDDEN
def test_q2_hidden(embedding_lookup):
    from attn_course.checks import check_embedding_lookup
    check_embedding_lookup(embedding_lookup, thorough=True)

test_q2_hidden(embedding_lookup)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ### A lookup is a matrix product
#
# Write id $i$ as a **one-hot** vector $e_i \in \{0, 1\}^V$: a 1 at position $i$, 0 elsewhere. Then
# $e_i^\top W$ is row $i$ of $W$, so for a whole batch
#
# $$\mathrm{embedding}(\mathrm{ids}) = \mathrm{one\_hot}(\mathrm{ids})\, W, \qquad (B, T, V) \cdot (V, E) \to (B, T, E).$$
#
# An embedding is a linear layer without bias fed one-hot vectors, and it trains like one.
# `nn.Embedding` just skips the $V - 1$ multiplications by zero per token: with V = 30,522 that is
# the difference between a lookup and a matrix product with 30,522 rows.

# %%
one_hot = F.one_hot(ids, num_classes=V).float()                 # (B, T) -> (B, T, V), a single 1 per row
by_matmul = one_hot @ embedding.weight                           # (B, T, V) @ (V, E) -> (B, T, E)
print(f"one_hot {tuple(one_hot.shape)}; every row sums to {one_hot.sum(dim=-1).unique().tolist()}")
checks.expect_tensor("one_hot(ids) @ weight", by_matmul, x, legend="(B, T, E)")
checks.expect_tensor("F.embedding(ids, weight)", F.embedding(ids, embedding.weight), x, legend="(B, T, E)")
print("one_hot(ids) @ weight == F.embedding(ids, weight) == embedding(ids): yes")

# %% [markdown]
# The picture: the table on the left, the four rows that "Call me Ishmael." selects framed, and the
# `(T=4, E)` result on the right. Row 0, the pad row, is all zeros (section 5).

# %%
weight, rows = embedding.weight.detach().cpu(), ids[1, :4].cpu().tolist()   # (V, E); ids of "call me ishmael ."
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7.5, 6), layout="constrained", width_ratios=[1, 1.6])
ax0.imshow(weight, cmap="RdBu_r", vmin=-2.5, vmax=2.5)
for k, i in enumerate(sorted(rows)):                                         # labels in id order: no crossing lines
    ax0.add_patch(plt.Rectangle((-0.5, i - 0.5), E, 1, fill=False, edgecolor="black", linewidth=1.5))
    ax0.annotate(f"id {i}: {vocab.itos[i]!r}", (E - 0.5, i), xytext=(E + 2, 2 + 7 * k), va="center",
                 arrowprops={"arrowstyle": "-", "linewidth": 0.8})
ax0.set(title=f"embedding.weight\n(V={V}, E={E})", xlabel="dimension", ylabel="token id")
im = ax1.imshow(x[1, :4].detach().cpu(), cmap="RdBu_r", vmin=-2.5, vmax=2.5)   # (T=4, E)
ax1.set_yticks(range(4), [f"t={t}: {vocab.itos[i]!r}" for t, i in enumerate(rows)])
ax1.set(title=f"embedding(ids[1, :4])  (T=4, E={E}):\nrows {rows} of the table", xlabel="dimension")
fig.colorbar(im, ax=ax1, location="bottom", shrink=0.8, label="value")
plt.show()

# %% [markdown]
# ## 5. `padding_idx`: the pad vector stays zero and learns nothing
#
# The pad id is not a word. With `nn.Embedding(V, E, padding_idx=0)` the pad row starts at zero
# and its **gradient is always zero**, so training never moves it, however much padding a batch
# holds. Without `padding_idx` the pad row is random and learns from padding, that is from how the
# batches happened to be put together.
#
# We take the stand-in loss `embedding(ids).sum()`. Its gradient with respect to row $i$ of the
# table is the number of times id $i$ occurs in the batch, in every dimension.

# %%
torch.manual_seed(1)
no_padding_idx = nn.Embedding(V, E).to(device)                   # the same layer without padding_idx
for name, layer in [("padding_idx=0", embedding), ("no padding_idx", no_padding_idx)]:
    layer.zero_grad()
    layer(ids).sum().backward()                                  # (B, T) -> (B, T, E) -> a scalar
    grad = layer.weight.grad                                     # (V, E), like weight
    print(f"{name}:\n  weight[<pad>]  = {layer.weight[0].detach().cpu()}\n"
          f"  grad[<pad>]    = {grad[0].cpu()}\n"
          f"  grad['the']    = {grad[vocab.stoi['the']].cpu()}")
print(f"'the' occurs {(ids == vocab.stoi['the']).sum()} times; padding fills {key_padding_mask.sum()} positions")

# %% [markdown]
# ## 6. Why attention needs `key_padding_mask`
#
# Self-attention lets every token take a weighted average over all T positions of its row
# (lessons 02–05). In our batch "call me ishmael ." has 4 real tokens and 22 pad positions. The pad
# vectors are zero, but zero is not nothing: a zero key still gets a finite score (0, plus a bias),
# softmax gives it weight, and the result for "ishmael" then depends on how long the *other*
# sentences of the batch were. `key_padding_mask` tells attention to give those keys a score of
# $-\infty$, hence a weight of exactly 0 (the details are in lesson 07).
#
# We run PyTorch's own `nn.MultiheadAttention` (lesson 06 builds it) with one head on `x`, and
# compare with the same sentence alone, unpadded.

# %%
torch.manual_seed(0)
self_attn = nn.MultiheadAttention(E, num_heads=1, batch_first=True).to(device)
with torch.no_grad():
    alone = embedding(ids[1:2, :4])                                        # "call me ishmael ." unpadded: (1, 4, E)
    out_alone, _ = self_attn(alone, alone, alone)                          # (1, 4, E)
    out_unmasked, w_unmasked = self_attn(x, x, x)                          # (B, T, E), attn_weights (B, T, T)
    out_masked, w_masked = self_attn(x, x, x, key_padding_mask=key_padding_mask)   # True = padding
print("weight on padding of the 4 real queries, no mask:  ", w_unmasked[1, :4, 4:].sum(-1).cpu().round(decimals=4))
print("weight on padding of the 4 real queries, with mask:", w_masked[1, :4, 4:].sum(-1).cpu().round(decimals=4))
print("output equal to the sentence alone, no mask:  ", torch.allclose(out_unmasked[1, :4], out_alone[0], atol=1e-5))
print("output equal to the sentence alone, with mask:", torch.allclose(out_masked[1, :4], out_alone[0], atol=1e-5))

# %%
key_labels = vocab.decode(ids[1])                                # 4 tokens, then 22 x <pad>
fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(11, 5.2), layout="constrained")
plot.attention_heatmap(w_unmasked[1, :4], key_labels[:4], key_labels, ax=ax0,
                       title="no mask: the 4 real tokens spread their attention over 22 pad positions")
plot.attention_heatmap(w_masked[1, :4], key_labels[:4], key_labels, ax=ax1,
                       title="key_padding_mask (True = padding): pad positions get weight 0")
plt.show()

# %% [markdown]
# The pad positions are queries too (rows 4–25 of `w_masked[1]`, not drawn): they still compute
# something, and later steps ignore it, e.g. a loss that skips padded positions. What the mask must
# prevent is a real token *reading* padding.
#
# ## 7. What do the vectors mean?
#
# Nothing yet. The **cosine similarity** $\cos(a, b) = a \cdot b \,/\, (\lVert a \rVert \lVert b \rVert)$
# is 1 for vectors pointing the same way and near 0 for unrelated ones. In a *trained* embedding,
# tokens used in similar contexts point in similar directions (the distributional hypothesis,
# Harris 1954; word2vec, Mikolov et al. 2013). In our random table the nearest neighbours are chance,
# and in only E = 8 dimensions chance alone gives cosines of 0.5 and more: random vectors are nearly
# orthogonal only when E is large.

# %%
def nearest(word, weight, k=3):
    """The k tokens whose rows of weight (V, E) have the highest cosine similarity with word's row."""
    unit = F.normalize(weight.detach().cpu(), dim=-1)            # (V, E), rows of length 1 (<pad> stays 0)
    cos = unit @ unit[vocab.stoi[word]]                          # (V, E) @ (E,) -> (V,)
    cos[[vocab.pad_id, vocab.stoi[word]]] = -2.0                 # leave out <pad> and the word itself
    values, idx = cos.topk(k)
    return ", ".join(f"{vocab.itos[i]} ({c:.2f})" for i, c in zip(idx.tolist(), values.tolist()))

for word in ["best", "worst", "happy"]:
    print(f"untrained, nearest to {word!r:8}: {nearest(word, embedding.weight)}")

# %% [markdown]
# A tiny demonstration that training gives the directions meaning: teach a fresh table to predict
# each token's neighbours (up to 2 positions away), the skip-gram task of word2vec, on our six
# sentences. "best" and "worst" occur in the same context, "it was the ___ of times", so they
# should end up close.

# %%
pairs = [(center, s[j]) for s in token_ids for i, center in enumerate(s)          # (center, neighbour) ids
         for j in range(max(0, i - 2), min(len(s), i + 3)) if j != i]
center, neighbour = torch.tensor(pairs).T.to(device)                                # (N, 2) -> two (N,)
torch.manual_seed(0)
word_vectors = nn.Embedding(V, E, padding_idx=vocab.pad_id).to(device)             # a fresh table (V, E)
predict = nn.Linear(E, V).to(device)                                                # E -> one logit per token
optimizer = torch.optim.Adam([*word_vectors.parameters(), *predict.parameters()], lr=0.1)
for step in range(60):
    logits = predict(word_vectors(center))                                          # (N,) -> (N, E) -> (N, V)
    loss = F.cross_entropy(logits, neighbour)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"N = {len(pairs)} pairs; loss {loss.item():.2f} (a uniform guess: log V = {torch.tensor(V).log():.2f})")
for word in ["best", "worst", "happy"]:
    print(f"trained,   nearest to {word!r:8}: {nearest(word, word_vectors.weight)}")

# %% [markdown]
# "best" and "worst" are now each other's nearest neighbour: not because the model knows they are
# opposites, but because they share their contexts; "happy" has moved next to the words around it,
# "all happy families are". Six sentences are too few for much more: most other neighbours are
# still accidents. Trained on billions of tokens, the same idea gives
# embeddings in which neighbours are meaningful. Lesson 06 loads a real pretrained table,
# all-MiniLM-L6-v2's (V = 30,522 WordPiece tokens, E = 384), and runs its attention heads.
#
# ## 8. Bug hunt
#
# A colleague wrote `pad_batch_v2(sequences, pad_id)`. Its docstring is the reference's, word for
# word; it runs, and every shape is right. Something is wrong.
#
# 1. Run it on our batch: compare its ids with the reference, and count.
# 2. Give its mask to the attention of section 6 and look where "call me ishmael ." looks.
# 3. Read its source (`inspect.getsource`) and find the one change.

# %%
import inspect

from attn_course.broken import pad_batch_v2

ids_v2, mask_v2 = pad_batch_v2(token_ids, pad_id=vocab.pad_id)          # (B, T) each
print("ids equal to the reference:", torch.equal(ids_v2, data.pad_batch(token_ids, vocab.pad_id)[0]))
print("pad ids per row:         ", (ids_v2 == vocab.pad_id).sum(dim=1).tolist())
print("True in the mask per row:", mask_v2.sum(dim=1).tolist())
with torch.no_grad():
    _, w_v2 = self_attn(x, x, x, key_padding_mask=mask_v2.to(device))   # attn_weights (B, T, T)
print("'call me ishmael .': weight on its own 4 tokens:", w_v2[1, :4, :4].sum(-1).cpu().round(decimals=4))
print("the Austen sentence, row 3: any NaN in its weights?", bool(w_v2[3].isnan().any()))
plot.token_grid(ids_v2, [vocab.decode(row) for row in ids_v2], mask_v2,
                title="ids_v2, shaded where pad_batch_v2's key_padding_mask is True")
plt.show()

# %% [markdown]
# <details><summary>Hint 1</summary>Which positions does the mask of <code>pad_batch_v2</code> mark
# True? Which should it mark, in the convention of <code>torch.nn.MultiheadAttention</code>?
# A sentence without padding then has every key masked, and a softmax over nothing is NaN.</details>
# <details><summary>Hint 2</summary>Look at what the mask starts as (<code>torch.zeros</code> or
# <code>torch.ones</code>) and what is written over each sentence's real tokens.</details>
#
# ### Exercise 3 — fix it
#
# Write `fixed_pad_batch(sequences, pad_id)`, returning `(ids (B, T) int64, key_padding_mask (B, T)
# bool)`: the same code with the bug removed. Start from its source:

# %%
print(inspect.getsource(pad_batch_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q3_bug_hunt
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_pad_batch(sequences, pad_id=0):
    """Right-pad B id lists to (B, T); return (ids int64, key_padding_mask bool, True = padding)."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 3: fix pad_batch_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), pad_id, dtype=torch.long)      # (B, T)
    mask = torch.ones(len(sequences), longest, dtype=torch.bool)               # (B, T), True = padding ...
    for b, seq in enumerate(sequences):
        out[b, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[b, :len(seq)] = False                                             # ... except the real tokens
    return out, mask
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q3_public(fixed_pad_batch):
    from attn_course.checks import check_pad_batch
    check_pad_batch(fixed_pad_batch)

test_q3_public(fixed_pad_batch)

# %%
# HIDDEN
def test_q3_hidden(fixed_pad_batch):
    from attn_course.checks import check_pad_batch
    check_pad_batch(fixed_pad_batch, thorough=True)

test_q3_hidden(fixed_pad_batch)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Summary
#
# - Text → tokens (`data.tokenize`) → ids (`data.Vocab`, with `<pad>` = 0 and `<unk>` = 1).
# - Shapes: B batch, T tokens, L queries, S keys/values, H heads, D head_dim, E d_model
#   (`embed_dim`, `hidden_size`), V vocabulary. A batch goes `ids (B, T) -> embeddings (B, T, E)`.
# - Sentences of different lengths are right-padded to T; `key_padding_mask (B, T)` says where,
#   **True = padding**, as `torch.nn.MultiheadAttention` expects. Without it, real tokens attend to
#   padding and their outputs depend on the rest of the batch.
# - An embedding looks up rows of a `(V, E)` table: `embedding(ids) == one_hot(ids) @ weight`.
#   `padding_idx` keeps the pad row at zero, with zero gradient.
# - Untrained embeddings are random: their nearest neighbours mean nothing until training.
# - An inverted mask keeps every shape and every id right, and makes attention read only padding:
#   count the True entries.
#
# **Next:** lesson 02 maps these embeddings to queries, keys and values with linear layers, and
# scores every query against every key.
#
# **References.** Bengio, Ducharme, Vincent & Jauvin (2003), *A Neural Probabilistic Language Model*,
# JMLR 3. Mikolov, Chen, Corrado & Dean (2013), *Efficient Estimation of Word Representations in
# Vector Space* (skip-gram). Harris (1954), *Distributional Structure*, Word 10. Sennrich, Haddow &
# Birch (2016), *Neural Machine Translation of Rare Words with Subword Units*. Vaswani et al. (2017),
# *Attention Is All You Need*, section 3.4. PyTorch documentation of `torch.nn.Embedding`
# (`padding_idx`) and `torch.nn.MultiheadAttention` (`key_padding_mask`).
# Sentences: Charles Dickens, *A Tale of Two Cities* (1859); Herman Melville, *Moby-Dick* (1851);
# Leo Tolstoy, *Anna Karenina* (1878, tr. Constance Garnett); Jane Austen, *Pride and Prejudice*
# (1813); Lewis Carroll, *Alice's Adventures in Wonderland* (1865), all in the public domain.
