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
# name: 04_soft_and_hard_attention
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
# # Lesson 04 — Soft and hard attention
#
# **Learning goals.** After this lesson you can
# 1. pool a sequence into one vector with **soft attention** — a learned score vector, a softmax over
#    the positions, a weighted sum — and show that gradients reach every score;
# 2. write **hard attention**: pick one position, the highest-scoring one (argmax) or one drawn from
#    the attention weights;
# 3. show that argmax and sampling pass **no gradient** to the scores;
# 4. train hard attention anyway, with **REINFORCE** and with the **straight-through Gumbel-softmax**,
#    next to soft attention, on a task where picking the right position is everything;
# 5. find a bug in a hard-attention function that runs and returns the right shapes.
#
# Lesson 03 ended with a temperature: as $T \to 0$ the softmax puts all its weight on the largest
# score. This lesson takes that limit seriously.
#
# Shape legend: **B** batch, **S** sequence length (the positions to choose from), **E** d_model,
# **Dv** value size. Here one row of scores `(B, S)` is one distribution over positions; lessons
# 02–03 had a query axis L as well.

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.nn import functional as F

import attn_course as ac
from attn_course import checks, data, hard, plot
from attn_course.widgets import GumbelExplorer

torch.set_printoptions(precision=4, sci_mode=False)
torch.set_num_threads(1)   # the tensors here are tiny: one CPU thread is faster than several
device = ac.get_device()   # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)  # a seeded CPU generator: the same numbers on every device

# %% [markdown]
# ## 1. Soft attention: a learned score vector over a sequence
#
# The simplest attention has no query at all. A learned **score vector** $w$ rates each position's
# features $x_j$; a softmax turns the scores into weights; the weighted sum is one vector for the
# whole sequence (Yang et al. 2016, eqs. 5–7; the name "soft attention" is Xu et al. 2015's, §4.2):
#
# $$e_j = w \cdot x_j, \qquad \alpha_j = \frac{\exp(e_j)}{\sum_{j'} \exp(e_{j'})}, \qquad c = \sum_{j=1}^{S} \alpha_j x_j .$$
#
# $w$ plays a query that is the same for every input: "what does this model look for?". Xu et al.'s
# soft attention scores each image position against the caption decoder's current state instead, so
# its query changes with every word (lesson 12 builds it); here the query is fixed. The package
# has it as `hard.SoftAttentionPooling(d_model)`: an `nn.Linear(d_model, 1, bias=False)` (a bias
# would add the same number to every score and cancel in the softmax).

# %%
tokens = data.tokenize("The cat sat on the mat.")
vocab = data.Vocab([tokens])
ids = torch.tensor([vocab.encode(tokens)])                      # (B=1, S=7)
embedding = nn.Embedding(len(vocab), 16)
with torch.no_grad():
    embedding.weight.copy_(ac.randn(len(vocab), 16, generator=g))
torch.manual_seed(0)                                            # build modules on the CPU, then move
pool = hard.SoftAttentionPooling(16)
with torch.no_grad():
    pool.score.weight.copy_(ac.randn(1, 16, generator=g) / 4)  # a score vector w with some opinions
embedding, pool = embedding.to(device), pool.to(device)
x = embedding(ids.to(device))                                   # (1, 7) -> (1, 7, E=16), part of the graph
print(tokens)

# %% [markdown]
# The idea in four lines, checked against the package:

# %%
w = pool.score.weight[0]                                        # (1, E) -> (E,), the score vector
attn_scores = x @ w                                             # (1, 7, 16) @ (16,) -> (1, 7)
attn_weights = torch.softmax(attn_scores, dim=-1)               # (1, 7), a distribution over positions
context = (attn_weights.unsqueeze(-2) @ x).squeeze(-2)          # (1, 1, 7) @ (1, 7, 16) -> (1, 1, 16) -> (1, 16)
ref_context, ref_weights = pool(x)
checks.expect_tensor("attn_weights", attn_weights, ref_weights, legend="(B, S)")
checks.expect_tensor("context", context, ref_context, legend="(B, E)")
print("attn_scores: ", attn_scores[0].detach().cpu())
print("attn_weights:", attn_weights[0].detach().cpu(), " sum:", round(attn_weights.sum().item(), 4))
print("context:", tuple(context.shape), "- the same as pool(x)")

# %% [markdown]
# Soft attention is differentiable end to end. Take any loss of the context — here the squared
# distance to a target vector — and the gradient reaches **every** score, and through the scores
# the score vector $w$: the model can learn where to look. (`ac.attention_pool(attn_scores, value)`
# is the softmax and the weighted sum above, with an optional padding mask: the pooling of every
# application lesson.)

# %%
target = ac.randn(1, 16, generator=g, device=device)
attn_scores = pool.attn_scores(x)                               # (1, 7)
context, attn_weights = ac.attention_pool(attn_scores, x)       # (1, 16), (1, 7)
loss = (context - target).pow(2).sum()
grad_scores, grad_w = torch.autograd.grad(loss, (attn_scores, pool.score.weight))
print("d loss / d attn_scores:", grad_scores[0].cpu())
print(f"every score gets a gradient: {bool((grad_scores != 0).all())};  |d loss / d w| = "
      f"{grad_w.norm().item():.3f}")

# %% [markdown]
# ## 2. Hard attention: pick one position
#
# **Hard** attention looks at exactly one position (Xu et al. 2015, §4.1, "stochastic hard
# attention"). Either the highest score,
#
# $$j^* = \arg\max_j e_j, \qquad \alpha = \mathrm{onehot}(j^*), \qquad c = x_{j^*},$$
#
# or a position **drawn** from the attention weights, $j \sim \mathrm{Categorical}(\alpha)$, so that
# position $j$ comes up with probability $\alpha_j$. The context is no longer a blend: it *is* one
# of the inputs. Argmax first:

# %%
index = attn_scores.argmax(dim=-1)                              # (1, 7) -> (1,)
hard_weights = F.one_hot(index, len(tokens)).float()            # (1,) -> (1, 7), one 1.0
hard_context = (hard_weights.unsqueeze(-2) @ x).squeeze(-2)     # (1, 1, 7) @ (1, 7, 16) -> (1, 16)
print(f"argmax: position {index.item()} ({tokens[index.item()]!r});  attn_weights:", hard_weights[0].cpu())
print("context equals that position's vector:", torch.equal(hard_context[0], x[0, index.item()]))

# %% [markdown]
# And drawing: `hard.hard_attention(attn_scores, value, mode="sample", generator=g)` draws one
# position per row with `torch.multinomial`. Drawn 2000 times, the picks land on each position about
# as often as its weight says. The figure puts the three side by side.

# %%
n_draws = 2000
picks = hard.hard_attention(attn_scores.expand(n_draws, -1), x.expand(n_draws, -1, -1),
                            mode="sample", generator=torch.Generator().manual_seed(0))[1]   # (2000,)
frequency = torch.bincount(picks.cpu(), minlength=len(tokens)) / n_draws                    # (7,)
fig, axes = plt.subplots(1, 3, figsize=(12, 3), layout="constrained")
plot.weights_bar(attn_weights[0], tokens, ax=axes[0], title="soft: softmax(attn_scores)")
plot.weights_bar(hard_weights[0], tokens, ax=axes[1], title="hard, argmax: one-hot")
plot.weights_bar(frequency, tokens, ax=axes[2], title=f"hard, sampled: picks / {n_draws}")
axes[2].plot(range(len(tokens)), attn_weights[0].detach().cpu(), "ko", ms=4, label="softmax weight")
axes[2].set_ylabel("frequency")
axes[2].legend(fontsize=8)
plt.show()

# %% [markdown]
# ### Exercise 1 — hard attention by argmax
#
# Write `hard_attention_argmax(attn_scores, value)` for `attn_scores (..., S)` and
# `value (..., S, Dv)`. Return the tuple `(context, index, attn_weights)`:
# `index (...,)` the position of the highest score in each row (int64), `attn_weights (..., S)` its
# one-hot row in the dtype of the scores (`F.one_hot(...).to(...)`), `context (..., Dv)` the value at
# that position. `attn_weights.unsqueeze(-2) @ value` picks it out for any number of batch dims.

# %% [raw]
# # BEGIN QUESTION
# name: q1_hard_attention_argmax
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def hard_attention_argmax(attn_scores, value):
    """Hard attention by argmax; returns (context (..., Dv), index (...,), attn_weights (..., S) one-hot)."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write hard_attention_argmax")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    index = attn_scores.argmax(dim=-1)                                           # (..., S) -> (...,)
    attn_weights = F.one_hot(index, attn_scores.shape[-1]).to(attn_scores.dtype)  # (...,) -> (..., S)
    context = (attn_weights.unsqueeze(-2) @ value).squeeze(-2)                   # (..., 1, S) @ (..., S, Dv) -> (..., Dv)
    return context, index, attn_weights
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(hard_attention_argmax):
    from attn_course.checks import check_hard_attention_argmax
    check_hard_attention_argmax(hard_attention_argmax)

test_q1_public(hard_attention_argmax)

# %%
# HIDDEN
def test_q1_hidden(hard_attention_argmax):
    from attn_course.checks import check_hard_attention_argmax
    check_hard_attention_argmax(hard_attention_argmax, thorough=True)

test_q1_hidden(hard_attention_argmax)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## 3. Argmax passes no gradient
#
# Slide the score of one token, "sat", and watch the weight it gets. Soft attention answers with a
# smooth S-curve: a small change of the score changes the weight a little, and the slope — the
# gradient — tells the model which way to move. Hard attention answers with a **step**: the weight is
# 0 until "sat" has the highest score, then 1. The slope is 0 everywhere except at the jump, where
# it does not exist.

# %%
shift = torch.linspace(-4, 4, 161)                              # (161,) values for the score of "sat"
sweep = attn_scores.detach()[0].cpu().expand(len(shift), -1).clone()   # (161, 7)
sweep[:, 2] = shift                                             # every row: a different score for "sat"
soft_w = torch.softmax(sweep, dim=-1)[:, 2]                     # (161,) weight of "sat", soft
hard_w = hard.hard_attention(sweep, torch.zeros(len(shift), 7, 1))[2][:, 2]   # (161,) weight, hard
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.2), layout="constrained")
ax0.plot(shift, soft_w, label="soft: softmax")
ax0.plot(shift, hard_w, label="hard: one-hot(argmax)")
ax0.set(xlabel='score of "sat"', ylabel='weight of "sat"', title='The weight of "sat" as its score moves')
ax1.plot(shift, soft_w * (1 - soft_w), label="soft: slope > 0")  # d softmax_j / d e_j = a_j (1 - a_j)
ax1.plot(shift, torch.zeros_like(shift), label="hard: slope 0 (undefined at the jump)")
ax1.set(xlabel='score of "sat"', ylabel="d weight / d score", title="Its gradient")
for ax in (ax0, ax1):
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Autograd agrees. `argmax` returns integers, and `F.one_hot` of integers is a constant, so the
# graph from the scores to the context is cut: the gradient to the scores is `None`, and the score
# vector $w$ can never learn. (The picked value still gets its gradient: the context *is* that
# value.) Drawing with `torch.multinomial` cuts the graph the same way.

# %%
attn_scores = pool.attn_scores(x)                               # (1, 7), part of the graph
for mode in ("argmax", "sample"):
    context, index, hard_weights = hard.hard_attention(attn_scores, x, mode=mode, generator=g)
    loss = (context - target).pow(2).sum()
    grad_scores, grad_x = torch.autograd.grad(loss, (attn_scores, x), allow_unused=True)
    print(f"{mode:6s}: attn_weights.requires_grad = {hard_weights.requires_grad}, "
          f"d loss / d attn_scores = {grad_scores},  d loss / d x is non-zero at positions "
          f"{grad_x[0].abs().sum(-1).nonzero().flatten().tolist()} (the pick)")

# %% [markdown]
# ## 4. Training a choice
#
# Two ways around the missing gradient.
#
# **REINFORCE** (Williams 1992; used for hard attention by Mnih et al. 2014 and Xu et al. 2015,
# eqs. 10–12). Treat the pick $j \sim \alpha$ as an action and the model's success with it as a
# reward $R(j)$. The gradient of the *expected* reward can be estimated from the picks alone:
#
# $$\nabla_e\, \mathbb{E}_{j \sim \alpha}[R(j)] = \mathbb{E}_{j \sim \alpha}\big[(R(j) - b)\, \nabla_e \log \alpha_j\big].$$
#
# A baseline $b$ that does not depend on the pick changes nothing on average but makes the estimate
# less noisy. The batch's mean reward, used below, is the usual cheap choice; strictly it includes the
# sample's own reward, which biases the estimate by a factor $1 - 1/N$ for a batch of $N$ (negligible
# at 4000 picks; the leave-one-out mean removes it). `hard.reinforce_loss(attn_scores, index, reward, baseline)` is the surrogate loss
# $-\mathrm{mean}((R - b) \log \alpha_j)$ whose gradient is that estimate. A check on our sentence:
# reward 1 for picking "sat", 0 otherwise. The exact gradient of $\mathbb{E}[R] = \alpha_{sat}$ is
# $\alpha_{sat}(\mathrm{onehot}_{sat} - \alpha)$; REINFORCE estimates it from 4000 picks.

# %%
scores = attn_scores.detach().expand(4000, -1).clone().requires_grad_(True)          # (4000, 7)
_, index, _ = hard.hard_attention(scores, x.detach().expand(4000, -1, -1), mode="sample",
                                  generator=torch.Generator().manual_seed(1))       # (4000,) picks
reward = (index == 2).float()                                   # 1 for "sat", 0 otherwise
hard.reinforce_loss(scores, index, reward).backward()           # baseline: the mean reward
estimate = -scores.grad.sum(0)                                  # (7,) d E[R] / d scores, estimated
a = attn_weights.detach()[0]
exact = a[2] * (F.one_hot(torch.tensor(2), 7).to(device) - a)   # (7,)
print("exact:    ", " ".join(f"{v:+.3f}" for v in exact.tolist()))
print("REINFORCE:", " ".join(f"{v:+.3f}" for v in estimate.tolist()))

# %% [markdown]
# Close, not equal: it is an estimate, and its noise is the price of REINFORCE.
#
# **Gumbel-softmax.** The *Gumbel-max trick* (Gumbel 1954; Maddison et al. 2014) draws from
# $\mathrm{softmax}(e)$ with an argmax: add independent Gumbel noise $g_j = -\log(-\log u_j)$,
# $u_j \sim U(0, 1)$, and $\arg\max_j (e_j + g_j)$ is position $j$ with probability $\alpha_j$. Jang
# et al. (2017, eq. 2) replace the argmax by a softmax with temperature $\tau$:
#
# $$y^{soft} = \mathrm{softmax}\big((e + g)/\tau\big), \qquad y^{hard} = \mathrm{onehot}\big(\arg\max_j y^{soft}_j\big).$$
#
# The **straight-through** estimator (Jang et al. 2017, §2.2; Bengio et al. 2013) uses
# $y^{hard}$ on the way forward and $y^{soft}$'s gradient on the way back:
# `y = y_hard - y_soft.detach() + y_soft`. Its value is $y^{hard}$ (the two $y^{soft}$ cancel); only
# the last term carries a gradient. PyTorch ships it as `F.gumbel_softmax(logits, tau, hard=True)`,
# which draws from the global random generator; ours takes a `generator`.
#
# ### Exercise 2 — straight-through Gumbel-softmax
#
# Write `gumbel_softmax_st(logits, tau=1.0, hard=True, generator=None)` for `logits (..., S)`.
# Draw the noise with the generator, e.g. `-torch.empty_like(logits).exponential_(generator=generator).log()`
# (minus the log of an Exponential(1) draw is Gumbel) or from `torch.rand(..., generator=generator)`.
# Return $y^{soft}$ when `hard=False`, the straight-through one-hot when `hard=True`.

# %% [raw]
# # BEGIN QUESTION
# name: q2_gumbel_softmax_st
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def gumbel_softmax_st(logits, tau=1.0, hard=True, generator=None):
    """Gumbel-softmax sample over the last axis; straight-through one-hot when hard=True. Shape (..., S) kept."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: write gumbel_softmax_st")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    gumbels = -torch.empty_like(logits).exponential_(generator=generator).log()  # (..., S) Gumbel(0, 1)
    y_soft = torch.softmax((logits + gumbels) / tau, dim=-1)                      # (..., S), rows sum to 1
    if not hard:
        return y_soft
    index = y_soft.argmax(dim=-1, keepdim=True)                                   # (..., 1)
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index, 1.0)                    # (..., S), one-hot
    return y_hard - y_soft.detach() + y_soft                                      # value y_hard, gradient of y_soft
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(gumbel_softmax_st):
    from attn_course.checks import check_gumbel_softmax_st
    check_gumbel_softmax_st(gumbel_softmax_st)

test_q2_public(gumbel_softmax_st)

# %%
# HIDDEN
def test_q2_hidden(gumbel_softmax_st):
    from attn_course.checks import check_gumbel_softmax_st
    check_gumbel_softmax_st(gumbel_softmax_st, thorough=True)

test_q2_hidden(gumbel_softmax_st)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# The package's `hard.gumbel_softmax_st` draws the same numbers as PyTorch's `F.gumbel_softmax`
# from the same seed. And now the comparison of section 3, with a gradient: the straight-through
# weights are one-hot on the way forward, yet every score gets a gradient on the way back.

# %%
logits = attn_scores.detach().cpu()                             # (1, 7), on the CPU: global RNG streams differ by device
torch.manual_seed(1)
ours = hard.gumbel_softmax_st(logits, tau=0.5)
torch.manual_seed(1)
checks.expect_tensor("hard.gumbel_softmax_st", ours, F.gumbel_softmax(logits, tau=0.5, hard=True))
print("hard.gumbel_softmax_st == F.gumbel_softmax from the same seed:", ours[0])
st_weights = hard.gumbel_softmax_st(attn_scores, tau=0.5, generator=torch.Generator().manual_seed(0))
st_context = (st_weights.unsqueeze(-2) @ x).squeeze(-2)         # (1, 1, 7) @ (1, 7, 16) -> (1, 16)
(grad_st,) = torch.autograd.grad((st_context - target).pow(2).sum(), attn_scores)
print("forward, one-hot:", st_weights[0].detach().cpu())
print("d loss / d attn_scores:", grad_st[0].cpu())
print(f"argmax gives the scores no gradient; straight-through gives all {int((grad_st != 0).sum())} a gradient")

# %% [markdown]
# **Try it.** The widget draws Gumbel-softmax samples over the scores of our sentence. Move the
# temperature: at high $\tau$ the soft sample $y^{soft}$ is almost uniform, at low $\tau$ almost
# one-hot — the gradient of a nearly one-hot softmax is small and spiky, so training usually keeps
# $\tau$ around 0.5–1. Change the sample number: the hard pick moves, and over 200 draws the picks
# follow $\mathrm{softmax}(e)$ at **every** temperature.

# %% tags=["nbval-ignore-output"]
explorer = GumbelExplorer(attn_scores[0].detach().cpu(), tokens, tau=1.0, seed=0)
explorer

# %% [markdown]
# The same in numbers: one sample at three temperatures, then the pick frequencies (the widget above
# is left at $\tau = 0.1$).

# %%
lines = []
for tau in [5.0, 0.5, 0.1]:
    explorer.slider.value = tau                                  # what moving the slider does
    lines += explorer.text().splitlines()[:2]
print("\n".join(lines + explorer.text().splitlines()[3:]))

# %% [markdown]
# ## 5. A task where the choice matters: key-value lookup
#
# Each example holds $S = 12$ pairs (key, value): the keys are distinct letters, the values digits.
# A query letter asks for the digit stored under it. Only one position holds the answer: a model
# that attends anywhere else can only guess (10 % accuracy). `hard.lookup_batch` makes the data.

# %%
NUM_KEYS, NUM_VALUES, SEQ_LEN = 24, 10, 12
letters = "ABCDEFGHIJKLMNOPQRSTUVWX"
keys, values, query, position, answer = hard.lookup_batch(2, SEQ_LEN, NUM_KEYS, NUM_VALUES,
                                                          generator=torch.Generator().manual_seed(5))
for b in range(2):
    pairs = " ".join(f"{letters[k]}:{v}" for k, v in zip(keys[b].tolist(), values[b].tolist()))
    print(f"{pairs}   query {letters[query[b]]} -> {answer[b].item()} (position {position[b].item()})")

# %% [markdown]
# The model is lesson 02–03's attention with one query per example: embeddings for keys and values,
# a projection of the query, scaled dot-product scores over the 12 positions, and a linear layer
# that reads the digit off the context. Only the attention step differs between the three methods.

# %%
class LookupReader(nn.Module):
    """Scores a query against S keys; classifies the context into one of num_values digits."""

    def __init__(self, num_keys, num_values, d_model):
        super().__init__()
        self.key_emb = nn.Embedding(num_keys, d_model)           # the query is a key letter too
        self.value_emb = nn.Embedding(num_values, d_model)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.classify = nn.Linear(d_model, num_values)           # context -> one logit per digit

    def forward(self, keys, values, query):
        q = self.q_proj(self.key_emb(query))                     # (B,) -> (B, E)
        k = self.key_emb(keys)                                   # (B, S) -> (B, S, E)
        attn_scores = (k @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(q.shape[-1])  # (B, S, E) @ (B, E, 1) -> (B, S)
        return attn_scores, self.value_emb(values)               # (B, S), value (B, S, E)

# %% [markdown]
# The three training signals. **Soft**: cross-entropy through the soft context. **Gumbel**: the same
# through the straight-through one-hot. **REINFORCE**: the classifier learns from the cross-entropy
# of the picked value; the scores learn from `reinforce_loss`, with reward $-$cross-entropy (a good
# pick makes the classifier confident and right). At test time the hard models take the argmax.

# %%
def selection_loss(model, batch, method, generator, tau=1.0):
    keys, values, query, position, target = batch
    attn_scores, value = model(keys, values, query)                                  # (B, S), (B, S, E)
    if method == "soft":
        context, _ = ac.attention_pool(attn_scores, value)                           # (B, E)
        return F.cross_entropy(model.classify(context), target)
    if method == "gumbel":
        attn_weights = hard.gumbel_softmax_st(attn_scores, tau, generator=generator)   # (B, S) one-hot
        context = (attn_weights.unsqueeze(-2) @ value).squeeze(-2)                   # (B, 1, S) @ (B, S, E) -> (B, E)
        return F.cross_entropy(model.classify(context), target)
    context, index, _ = hard.hard_attention(attn_scores, value, mode="sample", generator=generator)
    ce = F.cross_entropy(model.classify(context), target, reduction="none")         # (B,)
    return ce.mean() + hard.reinforce_loss(attn_scores, index, reward=-ce)          # "reinforce"


# %%
@torch.no_grad()
def evaluate(model, batch, method):
    keys, values, query, position, target = batch
    attn_scores, value = model(keys, values, query)                                  # (B, S), (B, S, E)
    if method == "soft":
        context, _ = ac.attention_pool(attn_scores, value)
    else:
        context, _, _ = hard.hard_attention(attn_scores, value)                      # argmax at test time
    accuracy = (model.classify(context).argmax(-1) == target).float().mean().item()
    return accuracy, attn_scores.argmax(-1)                                          # chosen positions (B,)

# %% [markdown]
# Train each method for 120 steps of 64 examples, from the same initial model and the same seed,
# and measure it every 5 steps on 1000 held-out examples (a few seconds per method).

# %%
METHODS = {"soft": "soft attention", "reinforce": "hard, REINFORCE", "gumbel": "hard, Gumbel straight-through"}
STEPS = 120
test_batch = [t.to(device) for t in hard.lookup_batch(1000, SEQ_LEN, NUM_KEYS, NUM_VALUES,
                                                      generator=torch.Generator().manual_seed(123))]

# %% tags=["nbval-ignore-output"]
history, chosen = {}, {}
for method in METHODS:
    torch.manual_seed(0)                                         # the same initial model for every method
    model = LookupReader(NUM_KEYS, NUM_VALUES, d_model=16).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g_train = torch.Generator().manual_seed(0)                   # batches (and picks, and noise)
    history[method] = []
    for step in range(STEPS + 1):
        if step % 5 == 0:
            accuracy, picks = evaluate(model, test_batch, method)
            history[method].append((step, accuracy, (picks == test_batch[3]).float().mean().item()))
            chosen[method, step] = picks.cpu()
        if step < STEPS:
            batch = [t.to(device) for t in hard.lookup_batch(64, SEQ_LEN, NUM_KEYS, NUM_VALUES, g_train)]
            loss = selection_loss(model, batch, method, g_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

# %% tags=["nbval-ignore-output"]
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
for method, label in METHODS.items():
    steps, accuracy, picked_right = zip(*history[method])
    ax0.plot(steps, accuracy, label=label)
    ax1.plot(steps, picked_right, label=label)
ax0.axhline(1 / NUM_VALUES, color="gray", linestyle="--", linewidth=1, label="chance (1 in 10)")
ax0.set(xlabel="training step", ylabel="test accuracy", title="Learning curves: the answer", ylim=(0, 1.02))
ax1.set(xlabel="training step", ylabel="fraction of test examples",
        title="Highest score at the query's position", ylim=(0, 1.02))
for ax in (ax0, ax1):
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Where did each model look early in training? For every true position of the query (rows), the
# fraction of test examples whose highest score sat at each position (columns), after 25 steps. A
# perfect selector is the diagonal; by step 120 all three are (right panel above).

# %% tags=["nbval-ignore-output"]
true_position = test_batch[3].cpu()                              # (1000,)
matrices = []
for method in METHODS:
    counts = torch.zeros(SEQ_LEN, SEQ_LEN).index_put_(
        (true_position, chosen[method, 25]), torch.ones(len(true_position)), accumulate=True)
    matrices.append(counts / counts.sum(-1, keepdim=True))       # each row: where that position's queries looked
fig = plt.figure(figsize=(12, 3.6))                              # fixed margins, quicker than a layout engine
fig.subplots_adjust(left=0.05, right=0.9, bottom=0.17, top=0.9, wspace=0.25)
plot.attention_grid(matrices, [f"{label}, step 25" for label in METHODS.values()], ncols=3, fig=fig,
                    vmin=0.0, vmax=1.0, annotate=False)
fig.axes[-1].set_ylabel("fraction of the row's test examples")   # the colorbar
for ax in fig.axes[:3]:
    ax.set_xlabel("chosen position")
fig.axes[0].set_ylabel("true position")
plt.show()

# %% tags=["nbval-ignore-output"]
for method, label in METHODS.items():
    step, accuracy, picked_right = history[method][-1]
    print(f"{label:30s} test accuracy {accuracy:.3f}   highest score at the query's position {picked_right:.3f}")
    assert accuracy > 0.8 and picked_right > 0.8, f"{label} did not learn the lookup"
first_step_above = {m: next(s for s, acc, _ in history[m] if acc > 0.5) for m in METHODS}
print("first step with test accuracy > 0.5:", first_step_above)

# %% [markdown]
# All three learn to look in the right place; the selection maps end on the diagonal. Soft
# attention is usually fastest: its gradient is exact and reaches every score. The
# straight-through Gumbel model follows closely — its gradient is biased (it is the gradient of
# $y^{soft}$, not of the one-hot it used) but has little noise. REINFORCE is unbiased but noisy: it
# learns only from which picks happened to pay off, and it tends to be the slowest. What the hard
# models buy is a context that *is* one input, not a blend: cheaper when the inputs are large (Xu et
# al. pick one image region), and easy to read.

# %% [markdown]
# ## 6. Bug hunt
#
# A colleague wrote `hard_attention_v2(attn_scores, value, mode, generator)`. Its docstring is word
# for word the reference's. It runs, every shape is right, and in `mode="argmax"` it agrees with the
# reference. Something is wrong.
#
# 1. Draw 2000 picks with `mode="sample"` from the sentence's scores, with both functions.
# 2. Compare how often each position comes up with the attention weights.
# 3. Read its source (`inspect.getsource`) and find the one change.

# %%
import inspect

from attn_course.broken import hard_attention_v2

scores, value = attn_scores.detach().expand(n_draws, -1), x.detach().expand(n_draws, -1, -1)   # (2000, 7), (2000, 7, 16)
same_argmax = torch.equal(hard_attention_v2(scores, value)[1], hard.hard_attention(scores, value)[1])
fig, axes = plt.subplots(1, 2, figsize=(11, 3), layout="constrained", sharey=True)
lines = []
for ax, fn in zip(axes, (hard.hard_attention, hard_attention_v2)):
    index = fn(scores, value, mode="sample", generator=torch.Generator().manual_seed(2))[1]   # (2000,)
    frequency = torch.bincount(index.cpu(), minlength=len(tokens)) / n_draws
    plot.weights_bar(frequency, tokens, ax=ax, title=f"{fn.__name__}: picks / {n_draws}")
    ax.plot(range(len(tokens)), attn_weights[0].detach().cpu(), "ko", ms=4, label="attn_weights")
    ax.set_ylabel("frequency")
    ax.legend(fontsize=8)
    lines.append(f"{fn.__name__ + ' picks:':24s}" + " ".join(f"{f:.3f}" for f in frequency.tolist()))
lines.append(f"{'attn_weights:':24s}" + " ".join(f"{w:.3f}" for w in attn_weights[0].tolist()))
print("\n".join(lines + [f"argmax mode agrees with the reference: {same_argmax}"]))
plt.show()

# %% [markdown]
# <details><summary>Hint 1</summary>Do the picks of <code>hard_attention_v2</code> depend on the
# scores at all? Multiply the scores by 10, or flip their sign, and draw again.</details>
# <details><summary>Hint 2</summary>Read the line that draws <code>index</code> in the
# <code>"sample"</code> branch. What distribution does that function draw from? And where is
# <code>probs</code> used?</details>
#
# ### Exercise 3 — fix it
#
# Write `fixed_hard_attention(attn_scores, value, mode="argmax", generator=None)` with the same
# inputs and outputs: the same code with the bug removed. `inspect.getsource(hard_attention_v2)`
# shows where to start.

# %%
from attn_course.hard import MODES                                      # the helpers it calls: the code you copy from below runs here as printed
from attn_course.pooling import validate_scores_value

print(inspect.getsource(hard_attention_v2))

# %% [raw]
# # BEGIN QUESTION
# name: q3_bug_hunt
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_hard_attention(attn_scores, value, mode="argmax", generator=None):
    """Hard attention: argmax, or one position drawn from softmax(attn_scores); returns (context, index, attn_weights)."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 3: fix hard_attention_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    S = attn_scores.shape[-1]
    if mode == "argmax":
        index = attn_scores.detach().argmax(dim=-1)                               # (..., S) -> (...,)
    else:
        probs = torch.softmax(attn_scores.detach().reshape(-1, S), dim=-1)        # (N, S)
        index = torch.multinomial(probs, 1, generator=generator)                  # drawn from probs, not uniform
        index = index.reshape(attn_scores.shape[:-1])                             # (N, 1) -> (...,)
    attn_weights = F.one_hot(index, S).to(attn_scores.dtype)                      # (...,) -> (..., S)
    context = (attn_weights.unsqueeze(-2) @ value).squeeze(-2)                    # (..., 1, S) @ (..., S, Dv) -> (..., Dv)
    return context, index, attn_weights
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q3_public(fixed_hard_attention):
    from attn_course.checks import check_hard_attention
    check_hard_attention(fixed_hard_attention)

test_q3_public(fixed_hard_attention)

# %%
# HIDDEN
def test_q3_hidden(fixed_hard_attention):
    from attn_course.checks import check_hard_attention
    check_hard_attention(fixed_hard_attention, thorough=True)

test_q3_hidden(fixed_hard_attention)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Summary
#
# - **Soft attention** scores every position, takes a softmax and averages: weights sum to 1, the
#   context is a blend, and gradients reach every score. A learned score vector $w$ is the simplest
#   version (`hard.SoftAttentionPooling`).
# - **Hard attention** picks one position — the argmax, or a draw from the weights — and its
#   context *is* that position's value.
# - Argmax and sampling are **not differentiable**: the scores get no gradient (`None`), only the
#   picked value does.
# - **REINFORCE** estimates the gradient of the expected reward from the picks: unbiased, noisy;
#   a baseline reduces the noise.
# - The **Gumbel-max trick** samples with an argmax; the **straight-through Gumbel-softmax** keeps
#   the one-hot forward and borrows the gradient of $\mathrm{softmax}((e + g)/\tau)$: biased, with
#   little noise. $\tau$ sharpens the soft sample; it does not change the picks.
# - A sampler that ignores the weights still runs and keeps every shape: compare pick frequencies
#   with the weights.
#
# **Next:** lesson 05 lets every position of a sequence be a query — self-attention, where
# queries, keys and values all come from the same tokens.
#
# **References.** Xu et al. (2015), *Show, Attend and Tell: Neural Image Caption Generation with
# Visual Attention*, §4.1 (hard), §4.2 (soft), eqs. 10–12. Williams (1992), *Simple Statistical
# Gradient-Following Algorithms for Connectionist Reinforcement Learning*, eq. 11. Mnih et al.
# (2014), *Recurrent Models of Visual Attention*, §3.2. Jang, Gu & Poole (2017), *Categorical
# Reparameterization with Gumbel-Softmax*, eq. 2 and §2.2. Maddison, Mnih & Teh (2017), *The
# Concrete Distribution*. Maddison, Tarlow & Minka (2014), *A\* Sampling* (the Gumbel-max trick).
# Bengio, Léonard & Courville (2013), *Estimating or Propagating Gradients Through Stochastic
# Neurons*. Yang et al. (2016), *Hierarchical Attention Networks for Document Classification*,
# eqs. 5–7. PyTorch: `torch.nn.functional.gumbel_softmax`, `torch.multinomial`.
