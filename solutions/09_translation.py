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
# name: 09_translation
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
# # Lesson 09 — Machine translation with attention
#
# **Learning goals.** After this lesson you can
# 1. say why an encoder-decoder that squeezes a sentence into one vector struggles with long
#    sentences (the *fixed-length bottleneck*), and how attention removes it;
# 2. write the additive attention step of Bahdanau et al. (2015) — score, masked softmax, weighted
#    sum — for a batch of padded sentences;
# 3. train a GRU encoder-decoder with and without attention on a real translation task and compare
#    them honestly, by exact match on sentences never seen in training, as a function of length;
# 4. decode greedily, and read alignment heatmaps: which source word each output word looked at;
# 5. find a bug that hands the decoder the wrong thing to attend to.
#
# Lessons 02–07 built attention from its parts. This lesson puts it back where it was born:
# neural machine translation.
#
# Shape legend (the same in every lesson): **B** batch, **L** target (query) length, **S** source
# (key/value) length, **E** embedding size, **H** hidden size, **A** the attention's hidden size,
# **V** vocabulary.

# %%
# %matplotlib inline
import inspect
import time

import matplotlib.pyplot as plt
import torch

import attn_course as ac
from attn_course import checks, plot
from attn_course.apps import translation
from attn_course.widgets import TranslationExplorer
from attn_course.data import number_words

torch.set_printoptions(precision=4, sci_mode=False)
torch.set_num_threads(1)   # small models: one thread is faster here, and the numbers are repeatable
device = ac.get_device()   # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)  # a seeded CPU generator: the same numbers on every device

# %% [markdown]
# ## 1. The task: English number words to French
#
# We translate numbers written in English words into French words. The pairs come from
# `num2words` (LGPL), which knows each language's real grammar, and French numbers have plenty:
# 97 is *quatre-vingt-dix-sept* (4 × 20 + 17), 21 is *vingt et un*, 200 is *deux cents* but 201
# is *deux cent un*, 80 is *quatre-vingts* but 80,000 is *quatre-vingt mille*, 1,000 is *mille*
# but 1,000,000 is *un million*. Tokens are words: "ninety-seven" is one English token,
# "quatre-vingt-dix-sept" one French token.

# %%
for n in [21, 97, 200, 201, 80_000, 1_000_000, 21_071_280]:
    _, english, french = number_words.pair(n)
    print(f"{n:>11,}  {' '.join(english):62s} -> {' '.join(french)}")

# %% [markdown]
# `number_words.splits` draws seeded, disjoint splits. All numbers 0–99 are in the training set
# (they are the vocabulary); every other number has 3 to 9 digits, and the validation and test
# sets hold the same count of numbers for each digit count, **none of them seen in training**.
# The longest English sentences have 16 tokens.

# %%
data = number_words.splits(max_digits=9, train_size=6000, val_size=350, test_size=1400, seed=0)
src_vocab = translation.build_vocab(en for _, en, _ in data["train"])   # English, V_src words
tgt_vocab = translation.build_vocab(fr for _, _, fr in data["train"])   # French, V_tgt words
train_batch = translation.encode_pairs(data["train"], src_vocab, tgt_vocab)
train_batch = {k: t.to(device) for k, t in train_batch.items()}
print({name: len(pairs) for name, pairs in data.items()}, f" V_src={len(src_vocab)}, V_tgt={len(tgt_vocab)}")
print("train src", tuple(train_batch["src"].shape), " tgt_in", tuple(train_batch["tgt_in"].shape),
      " (N, S) and (N, L): padded with id 0")
n, english, french = data["test"][-1]
print(f"a held-out example: {n:,}\n  {' '.join(english)}\n  {' '.join(french)}")

# %% [markdown]
# ## 2. The bottleneck and the fix
#
# An RNN **encoder** reads the source words $x_1 \dots x_S$ into states $h_1 \dots h_S$; a
# **decoder** writes the target words one at a time. In the first neural translators (Cho et al.
# 2014; Sutskever et al. 2014) the decoder saw the source only through *one* fixed-length vector $c$,
# the encoder's final state: a nine-digit number and "one" get the same 64 numbers to live in.
# Cho et al. (2014b) measured the result: translation quality falls as sentences get longer.
#
# Bahdanau, Cho & Bengio (2015) let the decoder look back at *every* encoder state, at every step.
# With decoder state $s_{t-1}$:
#
# $$e_{tj} = v^\top \tanh\left(W_q\, s_{t-1} + W_k\, h_j\right), \qquad
#   \alpha_{tj} = \frac{\exp e_{tj}}{\sum_{j'=1}^{S} \exp e_{tj'}}, \qquad
#   c_t = \sum_{j=1}^{S} \alpha_{tj}\, h_j .$$
#
# The three steps of every attention: **score** (here *additive*: a small one-layer network, lesson
# 02), **softmax** over the source positions (lesson 03), **weighted sum** of the values (here the
# encoder states are both keys and values). Then $s_t = \mathrm{GRU}([\mathrm{emb}(y_{t-1}); c_t],\,
# s_{t-1})$ and the next word's logits come from $[s_t; c_t; \mathrm{emb}(y_{t-1})]$. Padding
# positions must get weight 0: `key_padding_mask`, **True = padding** (lesson 07).
#
# The three steps for a batch of B=3 sentences (random states, S=5, the last two sentences padded),
# with the functions of lessons 02, 03 and 07 — `additive_scores`, `masked_softmax`, `weighted_sum`:

# %%
B, S, Dq, Dk, A = 3, 5, 8, 6, 4
query = ac.randn(B, Dq, generator=g)                                   # s_{t-1}: (B, Dq)
key = value = ac.randn(B, S, Dk, generator=g)                          # h_j: (B, S, Dk)
w_query, w_key, v = ac.randn(A, Dq, generator=g), ac.randn(A, Dk, generator=g), ac.randn(A, generator=g)
key_padding_mask = torch.arange(S)[None, :] >= torch.tensor([5, 3, 2])[:, None]   # (B, S), True = padding

attn_scores = ac.additive_scores(query[:, None, :], key, w_query, w_key, v)[:, 0]   # (B, 1, Dq), (B, S, Dk) -> (B, S)
attn_weights = ac.masked_softmax(attn_scores, ~key_padding_mask)                 # (B, S); its mask: True = may attend
context = ac.weighted_sum(attn_weights[:, None, :], value)[:, 0]                 # (B, 1, S) @ (B, S, Dk) -> (B, Dk)
print(attn_weights)
ref_context, ref_weights = translation.additive_attention(query, key, value, w_query, w_key, v, key_padding_mask)
checks.expect_tensor("attn_weights", attn_weights, ref_weights, legend="(B, S)")
checks.expect_tensor("context", context, ref_context, legend="(B, Dk)")
print("equal to translation.additive_attention: yes")

# %% [markdown]
# ### Exercise 1 — the additive attention step
#
# Write `additive_attention(query, key, value, w_query, w_key, v, key_padding_mask=None)` for
# `query (B, Dq)`, `key (B, S, Dk)`, `value (B, S, Dv)`, `w_query (A, Dq)`, `w_key (A, Dk)`, `v (A,)`
# and `key_padding_mask (B, S)` bool (True = padding) or None. Return `(context (B, Dv), attn_weights
# (B, S))`. Padding gets weight exactly 0; keep the input's dtype (float64 in, float64 out). Write
# it with tensor operations only, without the course's functions used above: one decoder step has one
# query per sentence, so `query` has no L axis.

# %% [raw]
# # BEGIN QUESTION
# name: q1_additive_attention
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def additive_attention(query, key, value, w_query, w_key, v, key_padding_mask=None):
    """Bahdanau attention for one decoder step: (context (B, Dv), attn_weights (B, S))."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write additive_attention")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    q = (query @ w_query.T).unsqueeze(1)                          # (B, Dq) -> (B, 1, A)
    k = key @ w_key.T                                             # (B, S, Dk) -> (B, S, A)
    attn_scores = torch.tanh(q + k) @ v                           # (B, S, A) -> (B, S)
    if key_padding_mask is not None:
        attn_scores = attn_scores.masked_fill(key_padding_mask, float("-inf"))
    attn_weights = torch.softmax(attn_scores, dim=-1)             # each row sums to 1 over S
    context = (attn_weights.unsqueeze(1) @ value).squeeze(1)      # (B, 1, S) @ (B, S, Dv) -> (B, Dv)
    return context, attn_weights
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(additive_attention):
    from attn_course.checks import check_additive_attention
    check_additive_attention(additive_attention)

test_q1_public(additive_attention)

# %%
# HIDDEN
def test_q1_hidden(additive_attention):
    from attn_course.checks import check_additive_attention
    check_additive_attention(additive_attention, thorough=True)

test_q1_hidden(additive_attention)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. The encoder-decoder
#
# `translation.Seq2Seq` is the model of the seed articles, rebuilt: an `Encoder` (embedding,
# bidirectional GRU: $h_j$ joins a left-to-right and a right-to-left state), a `Decoder` (GRU cell,
# output layer) and an `ac.AdditiveAttention` between them: Exercise 1 as a layer, its `w_query`,
# `w_key` and `v` held by `nn.Linear` layers (weights (A, Dq), (A, Dk), (1, A)), then `ac.attention_pool`.
# `attention=False` gives **the same model without attention**: its context is the encoder's final
# states at every step — the fixed-length vector. Both are small on purpose: 32 numbers per
# direction, so $c$ has 64.
#
# One decoder step, as the package writes it:

# %%
print(inspect.getsource(translation.Decoder.step))

# %%
def new_model(attention, seed=0):
    torch.manual_seed(seed)                                                # a repeatable start
    return translation.Seq2Seq(len(src_vocab), len(tgt_vocab), embed_dim=64, hidden_size=32,
                               attention=attention, attn_dim=64).to(device)

sizes = {attention: sum(p.numel() for p in new_model(attention).parameters()) for attention in (True, False)}
print(f"with attention {sizes[True]:,} parameters, without {sizes[False]:,}: "
      f"the attention's W_q, W_k and v are {sizes[True] - sizes[False]:,}")
model = new_model(attention=True)
sample = translation.encode_pairs(data["test"][:4], src_vocab, tgt_vocab)
with torch.no_grad():
    logits, weights = model(sample["src"].to(device), sample["key_padding_mask"].to(device), sample["tgt_in"].to(device))
print("src", tuple(sample["src"].shape), "-> logits", tuple(logits.shape), " attn_weights", tuple(weights.shape),
      " (B, S) -> (B, L, V_tgt), (B, L, S)")

# %% [markdown]
# The two models differ by the attention's parameters ($W_q$, $W_k$, $v$) and by nothing else.
#
# ## 4. Training both
#
# Teacher forcing: the decoder gets the true previous word $y_{t-1}$ and is scored by cross-entropy
# on $y_t$; Adam, 300 steps of 128 sentences, the same seed and data order for both models. This
# takes about 30 s (with attention) and 20 s (without) on one CPU thread; the cell asserts that both
# together stay under 90 s of CPU time (the wall clock runs longer when other programs share the CPU).

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
wall, cpu = time.perf_counter(), time.process_time()
attn_model = new_model(attention=True)
attn_losses = translation.train(attn_model, train_batch, steps=300, batch_size=128, lr=5e-3, desc="with attention")
plain_model = new_model(attention=False)
plain_losses = translation.train(plain_model, train_batch, steps=300, batch_size=128, lr=5e-3,
                                 desc="without attention")
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(f"both trainings: {wall:.0f} s wall clock, {cpu:.0f} s CPU time")
assert cpu < 90, f"both trainings should take under 90 s of CPU time; took {cpu:.0f} s"
print(f"final loss (mean of the last 50 steps): with attention {sum(attn_losses[-50:]) / 50:.4f}, "
      f"without {sum(plain_losses[-50:]) / 50:.4f}")

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
ax.plot(attn_losses, label="with attention", alpha=0.8)
ax.plot(plain_losses, label="without attention (fixed context)", alpha=0.8)
ax.set(xlabel="training step", ylabel="cross-entropy per word", yscale="log", title="training loss")
ax.legend()
plt.show()

# %% [markdown]
# ## 5. Exact match on numbers never seen in training
#
# A translation counts only if every word is right: "quatre-vingt-dix-sept" for
# "quatre-vingt-dix-huit" is wrong. Decoding is **greedy**: start from `<bos>`, feed back the most
# likely word at every step, stop at `<eos>` (section 6).
#
# Targets, and why: the attention model must reach **95 %** exact match on the test set — on this
# task the only errors left should be rare slips, since every test number is built from words seen
# in training. The baseline is the same model without attention, trained the same way. It is not
# broken: it should be nearly perfect on short numbers. What we expect to see is the bottleneck:
# its accuracy falls as the numbers get longer, while attention's does not.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
results = {}
for name, model in [("with attention", attn_model), ("without attention", plain_model)]:
    val_acc, _ = translation.exact_match(model, data["val"], src_vocab, tgt_vocab, device=device)
    test_acc, by_digits = translation.exact_match(model, data["test"], src_vocab, tgt_vocab, device=device)
    results[name] = by_digits
    print(f"{name:18s} validation {val_acc:.3f}  test {test_acc:.3f}   by digit count: "
          + " ".join(f"{d}:{a:.2f}" for d, a in by_digits.items()))
    if name == "with attention":
        attn_test_acc = test_acc
assert attn_test_acc >= 0.95, f"attention should reach 95 % exact match; got {attn_test_acc:.3f}"
assert min(results["without attention"][3], results["without attention"][4]) >= 0.9, "the baseline should learn short numbers"
assert results["with attention"][9] - results["without attention"][9] >= 0.3, "expected the bottleneck on 9-digit numbers"

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
lengths = {d: sum(len(en) for n, en, _ in data["test"] if len(str(n)) == d) / 200 for d in range(3, 10)}
fig, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
for name, by_digits in results.items():
    ax.plot(list(by_digits), list(by_digits.values()), "-o", label=name)
ax.set_xticks(range(3, 10), [f"{d}\n({lengths[d]:.0f} words)" for d in range(3, 10)])
ax.set(xlabel="digits (mean English length)", ylabel="exact match", ylim=(0, 1.05),
       title="held-out accuracy against input length")
ax.legend()
plt.show()

# %% [markdown]
# The picture of Bahdanau et al. (2015, figure 2), on a small scale: without attention the model
# is as good as attention on short inputs and falls off as they grow — the fixed 64 numbers must
# hold nine digits and their grammar. With attention the decoder looks up each group of digits
# when it needs it, and length hardly matters.
#
# Honest caveats. The gap depends on the budget: with a larger state or much longer training the
# model without attention does better on long numbers too, and up to six digits the gap is already
# small here. Attention costs about 1.6 times more time per step. Attention is not magic; it
# removes one specific bottleneck, which shows when the input is long compared with the state.
#
# ## 6. Greedy decoding
#
# At test time there is no true previous word. Called without `tgt_in`, the model runs the encoder
# once, then the decoder step by step, feeding back its own most likely word (a beam search would
# keep the *k* best prefixes instead); `translation.greedy_decode` does that and cuts each sentence
# at its `<eos>`. The attention weights of the steps, one row per output word, are the
# **alignment**. The decoder's loop, for both modes:

# %%
print(inspect.getsource(translation.Decoder.forward).split('"""')[2])

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
examples = [data["test"][i] for i in (0, 250, 700, 1100, 1399)]
hyps = {name: translation.translate_batch(m, examples, src_vocab, tgt_vocab, device=device)
        for name, m in [("attention", attn_model), ("no attention", plain_model)]}
for k, (n, english, french) in enumerate(examples):
    print(f"{n:,}: {' '.join(english)}\n   num2words:    {' '.join(french)}")
    for name, h in hyps.items():
        print(f"   {name + ':':13s} {' '.join(h[k]):70s} {'ok' if h[k] == french else 'WRONG'}")

# %% [markdown]
# ## 7. Alignments
#
# Each row is one French word (query), each column one English word (key); a row is that step's
# $\alpha_t$ and sums to 1. Look for the grammar: *quatre-vingt-dix-sept* reads "ninety-seven";
# *vingt et un* spends three steps on "twenty-one"; "and" and "," get no French word and little
# weight; *millions* and *mille* look at "million" and "thousand" — and at the words around them,
# since each $h_j$ also carries its neighbours (a bidirectional GRU). The titles say whether the
# translation is right: the rare mistakes sit on rare shapes, such as an empty group of thousands.
# A model's attention is a hint about what it uses, not a proof (lesson 06).

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
chosen = [21_071, 1_000_001, 280_000_201, 997_080_021]
train_numbers = {n for n, _, _ in data["train"]}
maps, titles, labels = [], [], []
explorer_for_maps = TranslationExplorer(attn_model, src_vocab, tgt_vocab, number=chosen[0], device=device)
for n in chosen:
    english, french, weights = explorer_for_maps.translate(n)
    ok = french == number_words.pair(n)[2]
    maps.append(weights)
    titles.append(f"{n:,} ({'seen in training' if n in train_numbers else 'unseen'}, {'correct' if ok else 'WRONG'})")
    labels.append((french + ["<eos>"])[:len(weights)])
fig, axes = plt.subplots(1, 4, figsize=(20, 5.2), layout="constrained", width_ratios=[1.5, 1.5, 2.3, 3])
for ax, n, w, title, fr in zip(axes, chosen, maps, titles, labels):
    plot.attention_heatmap(w, fr, number_words.pair(n)[1], ax=ax, title=title, annotate=False, colorbar=False)
plt.show()

# %% [markdown]
# ## 8. Try it
#
# Type a number (up to 999,999,999). The readout gives the English words, the translations of both
# models and `num2words`' answer; the picture is the attention model's alignment. Try long numbers,
# numbers with many zeros (1,000,001), and the French traps: 71, 80, 81, 91, 200, 201, 80,000.

# %% tags=["nbval-ignore-output", "otter_ignore"]
explorer = TranslationExplorer(attn_model, src_vocab, tgt_vocab, number=71_080_091, baseline=plain_model,
                               device=device)
explorer

# %% [markdown]
# The same from code (what typing does):

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
for number in ["1000001", "999,999,999", "twelve"]:
    explorer.set(number)
    print(explorer.text(), end="\n\n")
explorer.set(71_080_091)

# %% [markdown]
# ## 9. Bug hunt
#
# The seed articles' translator had a decoder that "is handed token ids as encoder outputs". Here is
# `Seq2Seq_v2`: the same class, its docstring word for word the reference's; it runs, and every
# shape is right. Give it the trained attention model's weights and look at its attention.

# %% tags=["otter_ignore"]
from attn_course.broken import Seq2Seq_v2

print(Seq2Seq_v2.__doc__.splitlines()[0])
suspect = Seq2Seq_v2(len(src_vocab), len(tgt_vocab), embed_dim=64, hidden_size=32, attn_dim=64).to(device)
suspect.load_state_dict(attn_model.state_dict())
suspect.eval()
probe = translation.encode_pairs([number_words.pair(909_909_909)], src_vocab, tgt_vocab)
probe = {k: t.to(device) for k, t in probe.items()}
with torch.no_grad():
    _, w_ref = attn_model(probe["src"], probe["key_padding_mask"], probe["tgt_in"])
    _, w_bad = suspect(probe["src"], probe["key_padding_mask"], probe["tgt_in"])

# %% [markdown]
# The source is "nine hundred and nine million, nine hundred and nine thousand, nine hundred and
# nine": every word occurs three times, once for the millions, once for the thousands, once for the
# units. Compare the weights each model gives the three copies of "hundred", at every step:

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
english = number_words.pair(909_909_909)[1]
copies = [j for j, word in enumerate(english) if word == "hundred"]                  # positions 1, 6, 11
for name, w in [("reference", w_ref), ("Seq2Seq_v2", w_bad)]:
    same = torch.allclose(w[0][:, copies], w[0][:, copies[:1]].expand(-1, len(copies)), atol=1e-6)
    print(f"{name:10s}: the three copies of 'hundred' get equal weight at every step: {same}")
fig, axes = plt.subplots(1, 2, figsize=(15, 4.4), layout="constrained")
french = number_words.pair(909_909_909)[2]
for ax, name, w in [(axes[0], "reference", w_ref), (axes[1], "Seq2Seq_v2", w_bad)]:
    plot.attention_heatmap(w[0], french + ["<eos>"], english, ax=ax, annotate=False, colorbar=False,
                           title=f"{name}, teacher-forced")
plt.show()
acc_bad, by_bad = translation.exact_match(suspect, data["test"], src_vocab, tgt_vocab, device=device)
print(f"Seq2Seq_v2 with the trained weights: exact match {acc_bad:.3f} (the reference: {attn_test_acc:.3f})")

# %% [markdown]
# Equal columns for equal words, whatever their place: the suspect's attention cannot tell the
# millions from the units. That is not a matter of training: it holds for any weights, because the
# keys it scores carry nothing but the word itself. And its translations fail: it sees the model's
# own trained weights, used the wrong way.
#
# <details><summary>Hint 1</summary>Attention scores keys. What must a key carry so that the
# two "nine"s of 909,000,009 differ? Which tensor in the model has that?</details>
# <details><summary>Hint 2</summary>Read <code>Seq2Seq_v2.forward</code> below: what is computed, and
# what is handed to the decoder? Is anything computed and then not used?</details>
# <details><summary>Hint 3</summary><code>enc_states</code> (B, S, 2H) and
# <code>self.encoder.embedding(src)</code> (B, S, E) have the same shape here because E = 2H = 64:
# the shapes cannot catch the mix-up.</details>
#
# ### Exercise 2 — fix it
#
# Write `fixed_forward(model, src, key_padding_mask, tgt_in=None)`, the forward pass of `Seq2Seq_v2`
# with the bug removed, returning `(logits (B, L, V), attn_weights (B, L, S))` — teacher-forced with
# `tgt_in`, greedy with `tgt_in=None` (the decoder handles both). `model` is a `Seq2Seq`: use
# `model.encoder` and `model.decoder`.

# %% tags=["otter_ignore"]
print(inspect.getsource(Seq2Seq_v2.forward))

# %% [raw]
# # BEGIN QUESTION
# name: q2_bug_hunt
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_forward(model, src, key_padding_mask, tgt_in=None):
    """Seq2Seq_v2.forward with the bug removed: (logits (B, L, V), attn_weights (B, L, S))."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: fix Seq2Seq_v2.forward")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    enc_states, summary = model.encoder(src, key_padding_mask)           # (B, S, 2H), (B, 2H)
    return model.decoder(tgt_in, enc_states, summary, key_padding_mask)  # attend to the encoder's states
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(fixed_forward):
    from attn_course.checks import check_seq2seq_forward
    check_seq2seq_forward(fixed_forward)

test_q2_public(fixed_forward)

# %%
# HIDDEN
def test_q2_hidden(fixed_forward):
    from attn_course.checks import check_seq2seq_forward
    check_seq2seq_forward(fixed_forward, thorough=True)

test_q2_hidden(fixed_forward)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# The fixed forward is `translation.Seq2Seq.forward`, the model trained in section 4.
#
# ## Summary
#
# - An encoder-decoder without attention passes the whole source through one fixed-length vector;
#   with a small state its accuracy falls with the input's length (here from nearly 100 % on
#   three-digit numbers to under 25 % on nine-digit ones).
# - Additive attention (Bahdanau et al. 2015) re-reads every encoder state at every decoder step:
#   score $v^\top \tanh(W_q s_{t-1} + W_k h_j)$, softmax over the source positions with padding
#   masked, weighted sum. The same small model then stays near 100 % at every length.
# - Greedy decoding feeds back the most likely word; the attention weights of the steps form the
#   alignment, readable as a heatmap.
# - The keys must be the encoder's states: attending to the word embeddings runs, keeps every shape,
#   and loses all context and position.
#
# **Next:** lesson 10 uses attention to pool a whole review into one vector for classification, and
# reads the weights as an explanation — with care.
#
# **References.** Bahdanau, Cho & Bengio (2015), *Neural Machine Translation by Jointly Learning to
# Align and Translate*, section 3.1, eqs. 4–6, appendix A.1.2, figure 2. Cho et al. (2014a),
# *Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation*.
# Cho et al. (2014b), *On the Properties of Neural Machine Translation: Encoder-Decoder Approaches*.
# Sutskever, Vinyals & Le (2014), *Sequence to Sequence Learning with Neural Networks*. Luong, Pham &
# Manning (2015), *Effective Approaches to Attention-based Neural Machine Translation*. The PyTorch
# tutorial *NLP From Scratch: Translation with a Sequence to Sequence Network and Attention*.
# `num2words` (LGPL-2.1), https://github.com/savoirfairelinux/num2words.
