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
# name: 13_speech_recognition
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
# # Lesson 13 — Attention in speech recognition
#
# **Learning goals.** After this lesson you can
# 1. describe speech as a sequence of log-mel frames, 100 per second, and say why clips of different
#    lengths need a `key_padding_mask`;
# 2. pool a clip's frames with attention — one learned query against every frame — with a padding mask;
# 3. train a small spoken-digit recogniser, measure it on **voices it never heard**, and compare it
#    honestly with three baselines: the mean over frames, the mean over the loud frames only, and a
#    nearest neighbour with no learning;
# 4. check that the attention picture shows what it claims: weight on the spoken word, not on the
#    silence around it;
# 5. recognise **connected digits** with "Listen, Attend and Spell" in small: stack frames the way its
#    listener does (you write it), decode digit by digit, and check that the alignment walks left to
#    right over the right words;
# 6. find a padding bug that makes a clip's prediction depend on the clips it is batched with.
#
# Shape legend (the same in every lesson): **B** batch, **L** query length, **S** key/value length
# (here: frames), **E** d_model, **F** mel bands.

# %%
# %matplotlib inline
import inspect

import matplotlib.pyplot as plt
import torch

import attn_course as ac
from attn_course.apps import speech
from attn_course.widgets import SpeechExplorer
from attn_course.widgets.speech import draw_clip
from attn_course.data import spoken_digits

torch.set_printoptions(precision=4, sci_mode=False)
torch.set_num_threads(1)   # small convolutions: extra CPU threads only add synchronisation
device = ac.get_device()   # ATTN_COURSE_DEVICE = cpu | cuda | auto
g = ac.seed_everything(0)  # a seeded CPU generator: the same numbers on every device

# %% [markdown]
# ## 1. Speech as frames
#
# A microphone gives 8000 numbers a second. Speech recognisers first cut the waveform into short
# overlapping windows (25 ms, one every 10 ms) and measure the power in a few frequency bands
# spaced like the ear's resolution, the **mel** scale, in decibels. One window becomes one
# **frame** of $F = 32$ numbers; one second of speech, 100 frames. A clip is a sequence
# $x_1, \dots, x_S$ of frames — a sequence like a sentence's tokens, but with no vocabulary: the
# frames are real-valued, and most of a short clip is silence.
#
# Our data: the words "zero" … "nine" said by **88 synthetic voices** — 84 of Debian's `espeak-ng`
# (6 English accents x 14 voice variants, male, female, croaky, whispered; two speaking rates and
# pitches per word) and 4 of `flite` (one diphone voice, three built from recordings of real
# speakers). `tools/make_spoken_digits.py` made them once; the package ships 1.8 MB of log-mel
# frames (sources and licences in `help(spoken_digits)`). We split **by voice**: a quarter of the
# voices (22) are heard only at test time, and 11 more only at **validation**, where every target
# of this lesson is set; the models train on the other 55. Be clear what that means: a voice is one accent with one
# variant, so a test voice such as `en-029+whisper` is new, but whispering was heard in training
# with other accents. It is a test on unheard voices, not on an unheard kind of speech.

# %%
train_idx, val_idx, test_idx = spoken_digits.split_voices(test_fraction=0.25, seed=0, validation_fraction=0.125)
train_clips = spoken_digits.clips(train_idx, seed=0)      # each word between 10 and 40 frames of silence
val_clips = spoken_digits.clips(val_idx, seed=2)
test_clips = spoken_digits.clips(test_idx, seed=1)
train_voices, val_voices, test_voices = set(train_clips.voice), set(val_clips.voice), set(test_clips.voice)
print(f"{len(train_clips)} training clips from {len(train_voices)} voices; {len(val_clips)} validation clips from "
      f"{len(val_voices)} others; {len(test_clips)} test clips from {len(test_voices)} others; "
      f"shared voices: {len((train_voices & test_voices) | (train_voices & val_voices) | (val_voices & test_voices))}")
print("some test voices:", sorted(test_voices)[:6])
lengths = torch.tensor([len(f) for f in train_clips.frames])
print(f"clip lengths: {lengths.min().item()} to {lengths.max().item()} frames (10 ms each); "
      f"F = {train_clips.frames[0].shape[-1]} mel bands")

# %% [markdown]
# Four test clips. Bright is loud. The word sits in the middle; around it, quiet white noise
# (-60 dBFS, as a microphone adds). The green band under each marks the **voiced** frames, which
# here simply means loud: mean power at least 15 dB above the noise (a whisper has no voicing in
# the phonetic sense, but its loud frames count). We will use it to check where the model looks.

# %%
voiced = test_clips.voiced()                              # per clip, (T_i,) bool
show = [0, 37, 150, 301]
fig, axes = plt.subplots(2, 4, figsize=(14, 4.2), sharex="col", layout="constrained",
                         gridspec_kw={"height_ratios": [3, 1]})
for col, i in enumerate(show):
    draw_clip(axes[0, col], axes[1, col], test_clips.frames[i], None, voiced[i],
              title=f"{test_clips.voice[i]}: '{spoken_digits.WORDS[test_clips.labels[i]]}'")
plt.show()
for i in show:
    print(f"clip {i:3d}: {len(test_clips.frames[i])} frames, word at frames {test_clips.spans[i]}, "
          f"{voiced[i].sum().item()} voiced")

# %% [markdown]
# ## 2. Attention pooling over frames
#
# To name the digit, the model must turn $S$ frames into one vector. An encoder first maps the
# frames to states $h_1, \dots, h_{S'}$ (here two 1-D convolutions; the first has stride 2, so
# $S' = \lceil S/2 \rceil$ states, one per 20 ms). Then **one learned query** $q$ attends over them
# (Vaswani et al. 2017, eq. 1 with a single query; Yang et al. 2016, eqs. 8–10, "attention
# pooling"; in speech, Okabe et al. 2018):
#
# $$e_s = \frac{q \cdot k_s}{\sqrt{E}}, \quad k_s = \tanh(W_k h_s), \qquad
#   \alpha_s = \frac{\exp(e_s)}{\sum_{s' \,\text{not padding}} \exp(e_{s'})}, \qquad
#   c = \sum_s \alpha_s h_s .$$
#
# The context $c$ goes to a linear layer with 10 outputs. Compare the **mean** $\frac{1}{S'} \sum_s h_s$:
# the same model with $\alpha_s = 1/S'$ — every frame counts, silence as much as the word.
# Attention can learn to weigh the frames that carry the word.
#
# In a batch, clips are padded to the longest one. The padding frames are not silence: they are
# not there at all. A `key_padding_mask` (B, S), **True = padding**, must give them weight exactly 0.

# %% [markdown]
# The package's `speech.query_attention_pool` computes it: the scores, then `ac.attention_pool`, the
# masked softmax and weighted sum that every application lesson pools with (lesson 10's exercise
# wrote it for text). One batch through it, with two clips of different lengths:

# %%
x, key_padding_mask = speech.pad_frames([test_clips.frames[0], test_clips.frames[37]])  # (B=2, S, F), (B, S)
print("x:", tuple(x.shape), " key_padding_mask:", tuple(key_padding_mask.shape),
      " padding frames per clip:", key_padding_mask.sum(-1).tolist())
query = ac.randn(32, generator=g)                                                    # (E=F=32,), untrained
context, attn_weights = speech.query_attention_pool(query, x / 10, x, key_padding_mask)  # keys scaled down: dB are large
print("context:", tuple(context.shape), " attn_weights:", tuple(attn_weights.shape),
      " weight on padding:", attn_weights[key_padding_mask].sum().item())

# %% [markdown]
# ## 3. Training, and two baselines
#
# The model, `speech.SpokenDigitClassifier`: per-band normalisation with the training set's mean
# and standard deviation, `Conv1d(32, 48, 5, stride=2)`, `Conv1d(48, 48, 5)`, attention pooling,
# `Linear(48, 10)`; 22 000 parameters. We train it, and the same model with mean pooling, for 8
# passes over the training clips (Adam, batches of 64).
#
# The third contender learns nothing: average each clip's frames into one vector of 32 band powers
# and answer with the digit of the nearest training clip. It tells us how hard the task is.

# %%
band_mean, band_std = speech.band_stats(train_clips.frames)                  # (F,), (F,)
nn_accuracy = {split: (speech.nearest_neighbour(train_clips, c) == c.labels).float().mean().item()
               for split, c in [("validation", val_clips), ("test", test_clips)]}
print(f"nearest neighbour on averaged frames: validation voices {nn_accuracy['validation']:.3f}, "
      f"test voices {nn_accuracy['test']:.3f} (chance 0.100)")


def new_model(pooling, seed=0):
    torch.manual_seed(seed)                                                   # built on the CPU, then moved
    return speech.SpokenDigitClassifier(band_mean, band_std, d_model=48, pooling=pooling).to(device)


print("parameters:", sum(p.numel() for p in new_model("attention").parameters()))

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
models, losses, accuracy, val_accuracy = {}, {}, {}, {}
for pooling in ("attention", "mean"):
    models[pooling] = new_model(pooling)
    losses[pooling] = speech.train_classifier(models[pooling], train_clips, epochs=8, batch_size=64, lr=5e-3,
                                              seed=0)
    for split_clips, into in [(val_clips, val_accuracy), (test_clips, accuracy)]:
        predictions, _ = speech.predict(models[pooling], split_clips, device=device)
        into[pooling] = (predictions == split_clips.labels).float().mean().item()
val_accuracy["nn"], accuracy["nn"] = nn_accuracy["validation"], nn_accuracy["test"]
for name, key in [("attention pooling", "attention"), ("mean pooling", "mean"), ("nearest neighbour", "nn")]:
    print(f"{name:18s} accuracy on unseen voices: validation ({len(val_voices)} voices) {val_accuracy[key]:.3f}   "
          f"test ({len(test_voices)} voices) {accuracy[key]:.3f}")

# %% [markdown]
# **The targets**, set on validation. Over three training seeds (0–2) attention scored 0.886–0.932 on
# the validation voices and mean pooling 0.823–0.900, attention ahead in every seed by 2 to 6 points;
# the nearest neighbour gets 0.745. Two of the 11 validation voices are `flite` voices, which the
# models find hardest, so validation is harder than test here. With 220 validation clips one clip
# is 0.45 points. So we assert: attention reaches **at least 0.85** on the validation voices, beats
# the nearest neighbour by at least 8 points, and is not worse than mean pooling by more than 1
# point. The gap to mean pooling is small: this is a clean task, and mean pooling over a
# convolutional encoder is a strong baseline. Attention's clearer gain is in *what it shows*.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
assert val_accuracy["attention"] >= 0.85, f"attention pooling reached only {val_accuracy['attention']:.3f}"
assert val_accuracy["attention"] >= val_accuracy["nn"] + 0.08, "attention should beat the nearest neighbour clearly"
assert val_accuracy["attention"] >= val_accuracy["mean"] - 0.01, "attention should not lose to mean pooling"
fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
for pooling, curve in losses.items():
    ax.plot(range(1, len(curve) + 1), curve, "-o", ms=3, label=f"{pooling} pooling")
ax.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log", title="training")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. Where does the model listen?
#
# Each encoder state covers 20 ms. Below, the attention weights of test clips (voices never heard
# in training) under their spectrograms; the green band marks the voiced frames.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
model = models["attention"]
predictions, weights = speech.predict(model, test_clips, device=device)
fig, axes = plt.subplots(2, 4, figsize=(14, 4.6), sharex="col", layout="constrained",
                         gridspec_kw={"height_ratios": [3, 2]})
for col, i in enumerate(show):
    said, heard = (spoken_digits.WORDS[int(t)] for t in (test_clips.labels[i], predictions[i]))
    draw_clip(axes[0, col], axes[1, col], test_clips.frames[i], weights[i], voiced[i],
              title=f"{test_clips.voice[i]}: '{said}' -> '{heard}'")
plt.show()

# %% [markdown]
# The picture claims that the model listens to the word. We check the claim on **every** clip:
# the attention mass on voiced frames, $\sum_{s \text{ voiced}} \alpha_s$, against the share of
# voiced frames (what uniform weights, i.e. mean pooling, would put there).

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
for split, split_clips in [("validation", val_clips), ("test", test_clips)]:
    split_voiced = split_clips.voiced()
    _, split_weights = speech.predict(model, split_clips, device=device)
    mass = speech.mass_on_voiced(split_weights, split_voiced)                  # (N,), one number per clip
    share = torch.tensor([v[::2].float().mean().item() for v in split_voiced])  # what uniform weights would give
    print(f"{split:10s}  attention mass on voiced frames: median {mass.median():.2f}, above 0.5 in "
          f"{(mass > 0.5).float().mean():.0%} of the clips;  share of voiced frames (= mean pooling's mass): "
          f"median {share.median():.2f}, above 0.5 in {(share > 0.5).float().mean():.0%}")
    if split == "validation":
        assert (mass > 0.5).float().mean() >= 0.8, "attention should put most of its mass on the word in most clips"
        assert (mass > share).float().mean() >= 0.9, "attention should weigh voiced frames above their share"

# %% [markdown]
# In most clips more than half the weight sits on the voiced frames, although they are well under
# half of the clip. No one told the model where the word is: it learned it from the digit labels
# alone. (Some weight lands next to the word — on the quiet start of "six" or "eight", and on the
# convolution's view of the edge, which spans 4 frames either side.)
#
# ### Does attention do more than find the loud part?
#
# Attention learned to listen to the word. But so does a much simpler rule: average the encoder's
# states over the **loud** frames only, those more than 15 dB above the noise (the same test that
# marks the voiced frames in green), and ignore the silence. If attention were only a voice-activity
# detector, this **energy-gated mean pooling** would match it. Same encoder, same training, same seed:

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
models["energy"] = speech.SpokenDigitClassifier(band_mean, band_std, d_model=48, pooling="energy",
                                                energy_floor=spoken_digits.load()["noise"].mean().item()).to(device)
losses["energy"] = speech.train_classifier(models["energy"], train_clips, epochs=8, batch_size=64, lr=5e-3, seed=0)
for split_clips, into in [(val_clips, val_accuracy), (test_clips, accuracy)]:
    predictions_energy, _ = speech.predict(models["energy"], split_clips, device=device)
    into["energy"] = (predictions_energy == split_clips.labels).float().mean().item()
inside = [w[v[::2]] / w[v[::2]].sum() for w, v in zip(weights, voiced)]         # attention within the voiced frames
spread = torch.tensor([(-(p * p.clamp(min=1e-12).log()).sum()).exp().item() / len(p) for p in inside])
for name in ("attention", "energy", "mean"):
    print(f"{name:9s} pooling  accuracy: validation {val_accuracy[name]:.3f}   test {accuracy[name]:.3f}")
print(f"within the voiced frames, attention spreads over a median {spread.median():.0%} of them "
      f"(exp(entropy) / count; the energy gate: 100 %)")

# %% [markdown]
# Energy-gated mean pooling lands between the two (validation 0.873, against 0.886 for attention and
# 0.823 for plain mean pooling; test 0.918, 0.957 and 0.886): ignoring the silence is most of what
# attention gains over the plain mean. Inside the word, attention is nearly as flat as the gate: its
# effective count of frames ($\exp$ of the entropy) covers a median 96 % of the voiced frames. Where
# it differs is at the edges: it keeps some weight (about 17 %, the mass off the voiced frames
# above) on the quiet onsets and endings that the 15 dB gate drops, such as the hiss of "six". So
# the honest reading is that attention here behaves much like a learned, *soft* voice-activity
# detector, and that its edge over a hard one is small: 3 of 220 validation clips on this seed,
# within what seeds move (over seeds 0–2, attention led the gate by 1 to 2 points on validation).
#
# ## 5. A widget: pick a voice and a digit
#
# **Try it.** The voices here were never heard in training. Try a whispered voice (`+whisper`)
# and a croaky one (`+croak`). Where does the model look when it is wrong?

# %% tags=["nbval-ignore-output", "otter_ignore"]
explorer = SpeechExplorer(model, test_clips, device=device)
explorer

# %% [markdown]
# The same moves, made by code (the numbers depend on the trained model):

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
for voice in sorted(test_voices)[:3]:
    explorer.set(voice=voice, digit=7)
    print(explorer.text(), end="\n\n")

# %% [markdown]
# ## 6. Connected digits: Listen, Attend and Spell, in small
#
# A recogniser that names one word per clip is a classifier. Speech recognition writes a
# **sequence**: "three one four". `spoken_digits.utterances` joins two to four words of **one voice**
# into one utterance, with pauses of 50–200 ms between them and silence around, and records where
# each word lies (its *span* of frames, which no model sees). Training utterances use the training
# voices only; validation and test utterances use their own voices.
#
# The model is "Listen, Attend and Spell" (Chan et al. 2016) in small, and its speller is lesson 09's
# and lesson 12's decoder once more:
#
# - the **listener** normalises each band, subtracts the utterance's own mean per band (cepstral mean
#   normalisation: it removes a voice's constant tilt), stacks every **8 frames into one** (LAS's
#   *pyramid*: 80 ms per encoder frame, so attention looks over 8 times fewer positions), and runs a
#   bidirectional GRU over the real frames: states $h_1, \dots, h_{S'}$, $S' = \lceil S/8 \rceil$;
# - the **speller** is a GRU that, before each digit, attends over those states with the additive
#   score (Bahdanau et al. 2015), padding masked, and writes a digit or `<eos>`.
#
# Its alignment, one row of weights per written digit, should walk through the utterance from left
# to right and sit on the frames of the word it writes: both can be counted, since we know the spans.

# %%
train_utt = spoken_digits.utterances(train_idx, seed=0, n=2500)
val_utt = spoken_digits.utterances(val_idx, seed=1, n=600)
test_utt = spoken_digits.utterances(test_idx, seed=2, n=600)
print(f"utterances: train {len(train_utt)}, validation {len(val_utt)}, test {len(test_utt)}; digits per utterance "
      f"{torch.bincount(test_utt.lengths)[2:].tolist()} (test, k = 2..4)")
i = 3
print(f"test utterance {i}: voice {test_utt.voice[i]}, {len(test_utt.frames[i])} frames, says "
      f"'{' '.join(spoken_digits.WORDS[d] for d in test_utt.labels[i, :test_utt.lengths[i]])}', words at frames "
      f"{test_utt.spans[i]}")

# %% [markdown]
# ### Exercise 1 — stack frames, LAS's pyramid step
#
# Write `stack_frames(x, key_padding_mask, factor)` for frames `x (B, S, F)` and
# `key_padding_mask (B, S)`, True = padding. Return `(stacked (B, S', factor * F), mask (B, S'))`
# with $S' = \lceil S / \text{factor} \rceil$: stacked frame *t* is input frames
# `factor*t, ..., factor*t + factor - 1` side by side. When S is not a multiple of `factor`, first
# add zero frames **at the end** (`torch.cat` with `x.new_zeros(...)`); then a single `reshape` does
# the rest. A stacked frame is padding when its *first* input frame is: that is the mask the
# classifier of section 2 uses after its strided convolution,
# `speech.subsample_padding_mask(key_padding_mask, factor)`, which you may call.

# %% [raw]
# # BEGIN QUESTION
# name: q1_stack_frames
# points: [1, 2]

# %% [raw]
# # BEGIN SOLUTION

# %%
def stack_frames(x, key_padding_mask, factor=2):
    """(B, S, F) frames and (B, S) mask -> (B, ceil(S / factor), factor * F) stacked frames and their (B, S') mask."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 1: write stack_frames")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    B, S, F_ = x.shape
    S_out = -(-S // factor)                                                # ceil(S / factor)
    x = torch.cat([x, x.new_zeros(B, S_out * factor - S, F_)], dim=1)      # zero frames at the end
    return x.reshape(B, S_out, factor * F_), speech.subsample_padding_mask(key_padding_mask, factor)
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q1_public(stack_frames):
    from attn_course.checks import check_stack_frames
    check_stack_frames(stack_frames)

test_q1_public(stack_frames)

# %%
# HIDDEN
def test_q1_hidden(stack_frames):
    from attn_course.checks import check_stack_frames
    check_stack_frames(stack_frames, thorough=True)

test_q1_hidden(stack_frames)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# The model uses the package's `speech.stack_frames`, so nothing below depends on your exercise.
# We train it for 6 passes over the 2,500 training utterances (Adam with a one-cycle schedule,
# batches of 32, teacher forcing), and the same model without attention: `context="mean"` gives
# the speller the mean of the listener's states at every step, the fair baseline (it keeps the
# bidirectional GRU, which knows the order of the words). **Targets**, set on validation over three
# seeds (attention scored 0.858–0.925 of the sequences there; two of the validation voices are
# `flite` voices, the hardest): at least **80 %** of the validation utterances written exactly
# right, at least **92 %** of the digits, at least **15 points** of sequences above the baseline,
# and alignments monotone on at least **90 %** of the utterances.

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
utt_band_mean, utt_band_std = speech.band_stats(train_utt.frames)
recognisers = {}
for context in ("attention", "mean"):
    torch.manual_seed(0)
    recognisers[context] = speech.ConnectedDigitRecogniser(utt_band_mean, utt_band_std, context=context).to(device)
    speech.train_recogniser(recognisers[context], train_utt, epochs=6, batch_size=32, lr=3e-3, seed=0)
print(f"parameters: {sum(p.numel() for p in recognisers['attention'].parameters()):,}")


def recogniser_scores(utt):
    """{context: (digits right, utterances right)}, and the attention model's monotone and on-word figures."""
    out = {}
    for context, model in recognisers.items():
        tokens, weights = speech.predict_sequences(model, utt)
        acc = speech.sequence_accuracy(tokens, utt.labels)
        out[context] = (acc["words"], acc["sequences"])
        if context == "attention":
            kept = (tokens, weights)
    monotone = speech.alignment_is_monotone(kept[1]).float().mean().item()
    on_words = speech.attention_on_words(kept[1], utt.spans, stride=recognisers["attention"].stride)
    return out, monotone, on_words, kept


for split, utt in [("validation", val_utt), ("test", test_utt)]:                    # the test split, once
    scores, monotone, on_words, (tokens, utt_weights) = recogniser_scores(utt)
    for context, (words, sequences) in scores.items():
        print(f"{split:10s}  {context:9s}: digits right {words:.3f}   utterances right {sequences:.3f}")
    print(f"{split:10s}  alignment monotone on {monotone:.3f} of the utterances; "
          f"the peak on its own word's frames for {on_words:.3f} of the digits")
    if split == "validation":
        assert scores["attention"][1] >= 0.80 and scores["attention"][0] >= 0.92, scores
        assert scores["attention"][1] >= scores["mean"][1] + 0.15, scores
    assert monotone >= 0.90, monotone

# %% [markdown]
# Attention writes 0.969 of the digits and 0.925 of the utterances exactly right on the validation
# voices, 0.989 and 0.972 on the test voices; the same model with the mean of the states in place
# of attention, 0.728 and 0.595 (validation), 0.773 and 0.648 (test). Validation is the harder side
# here, with its two `flite` voices. Below, three test utterances: the spectrogram with each word's
# span (white lines) and the speller's attention, one row per
# written digit over the 80 ms encoder frames.

# %% tags=["otter_ignore"]
fig, axes = plt.subplots(2, 3, figsize=(14, 4.8), layout="constrained", sharex="col",
                         gridspec_kw={"height_ratios": [2, 1.3]})
for col, i in enumerate([3, 10, 25]):
    frames, weights = test_utt.frames[i], utt_weights[i]                          # (T, F), (k, S')
    said = " ".join(spoken_digits.WORDS[d] for d in test_utt.labels[i, :test_utt.lengths[i]])
    heard = " ".join(spoken_digits.WORDS[d] for d in tokens[i, :len(weights)])
    axes[0, col].imshow(frames.T.numpy(), origin="lower", aspect="auto", cmap="magma",
                        extent=(-0.5, len(frames) - 0.5, -0.5, frames.shape[1] - 0.5))
    for start, end in test_utt.spans[i]:
        for edge in (start, end):
            axes[0, col].axvline(edge - 0.5, color="white", lw=0.8)
    axes[0, col].set(title=f"{test_utt.voice[i]}: '{said}' -> '{heard}'", ylabel="mel band")
    axes[1, col].imshow(weights.numpy(), aspect="auto", cmap="Blues", interpolation="nearest",
                        extent=(-0.5, weights.shape[1] * 8 - 0.5, len(weights) - 0.5, -0.5))
    axes[1, col].set(xlabel="frame (10 ms)", ylabel="digit written", yticks=range(len(weights)))
plt.show()

# %% [markdown]
# Each row's weight sits on one word, mostly on its first 80–160 ms, and the rows walk left to
# right: a monotone alignment, the diagonal of speech recognisers. Nobody told the model where the
# words are or that speech runs forward in time; it learned both from the digit sequences alone.
# The counts above check it on every utterance, not on three chosen ones: monotone on 0.998 of the
# validation and 1.000 of the test utterances, and each digit's peak inside its own word on 0.998
# of both. The mean-context baseline shows what the alignment is worth: one summary of the
# utterance has to serve every digit, and a third of its utterances come out wrong. (LAS itself
# stacks frames in three steps with a recurrent layer between them, and scores with two MLPs; these
# are the same ideas at the size of
# a lesson.)

# %% [markdown]
# ## 7. Bug hunt
#
# A colleague's speech encoder also subsamples time by 2, and needs the padding mask of the
# subsampled frames. They wrote `subsample_padding_mask_v2(key_padding_mask, stride)`; its
# docstring is word for word the reference's, and the shapes are right. We plug it into our trained
# model (`model.encode(..., subsample=...)`) and classify every test clip twice: **alone**, and
# **in a batch with a longer recording** (another test clip with 1.4 s of silence on each side),
# so that the clip gets padded.
# A correct model must give the same answer both times.

# %% tags=["otter_ignore"]
from attn_course.broken import subsample_padding_mask_v2

long_recording = spoken_digits.clips(test_idx[:1], seed=2, min_silence=140, max_silence=140).frames[0]  # (T, F)
print("the longer recording:", len(long_recording), "frames")


@torch.no_grad()
def classify(frames_list, subsample):
    """Probabilities (B, 10) and attention weights (B, S') with ``subsample`` making the encoder's mask."""
    x, key_padding_mask = speech.pad_frames(frames_list)                         # (B, S, F), (B, S)
    h, mask = model.encode(x.to(device), key_padding_mask.to(device), subsample=subsample)  # (B, S', E), (B, S')
    logits, attn_weights = model.classify(h, mask)
    return torch.softmax(logits, -1).cpu(), attn_weights.cpu()


def alone_and_batched(subsample):
    alone = torch.cat([classify([f], subsample)[0] for f in test_clips.frames])              # (N, 10)
    batched, on_padding = [], []
    for f in test_clips.frames:
        probs, attn_weights = classify([f, long_recording], subsample)                       # the clip is row 0
        batched.append(probs[0])
        on_padding.append(attn_weights[0, (len(f) + 1) // 2:].sum())                         # beyond the clip's end
    return alone, torch.stack(batched), torch.stack(on_padding)

# %% tags=["otter_ignore"]
# NBVAL_IGNORE_OUTPUT
model.eval()
labels = test_clips.labels
for name, subsample in [("reference", speech.subsample_padding_mask), ("_v2", subsample_padding_mask_v2)]:
    alone, batched, on_padding = alone_and_batched(subsample)
    changed = (alone.argmax(-1) != batched.argmax(-1)).sum().item()
    print(f"{name:9s} accuracy alone {(alone.argmax(-1) == labels).float().mean():.3f}, batched "
          f"{(batched.argmax(-1) == labels).float().mean():.3f}; predictions changed: {changed:2d}; largest change "
          f"of a probability: {(alone - batched).abs().max():.4f}; mean weight on padding: {on_padding.mean():.3f}")
    if name == "reference":
        assert changed == 0 and (alone - batched).abs().max() < 1e-4 and on_padding.max() < 1e-6
    else:
        assert changed >= 1 and (alone - batched).abs().max() > 0.1 and on_padding.mean() > 0.1
suspect_weights = classify([test_clips.frames[show[1]], long_recording], subsample_padding_mask_v2)[1][0]
fig, ax = plt.subplots(figsize=(9, 2.4), layout="constrained")
ax.bar((torch.arange(len(suspect_weights)) * 2).numpy(), suspect_weights.numpy(), width=2, align="edge")
ax.axvline(len(test_clips.frames[show[1]]), color="C3", linestyle="--", label="end of the clip; padding after")
ax.set(xlabel="frame (10 ms)", ylabel="attn_weights", title="_v2: one test clip batched with a longer recording")
ax.legend()
plt.show()

# %% [markdown]
# Alone, both agree: a clip with no padding has nothing to mask. Batched, `_v2` lets the model
# attend to padding — about a third of its weight lands after the clip has ended — and the
# probabilities change with the company a clip keeps (one by 0.34), enough here to flip one
# prediction. Accuracy alone would hardly have told you: test a model's outputs alone and batched.
# Find the bug:
#
# 1. Make a batch of one 9-frame clip and one 5-frame clip and print both masks.
# 2. Which input frame is each encoder frame centred on? (`Conv1d(kernel_size=5, stride=2, padding=2)`.)
# 3. Read the source.

# %% tags=["otter_ignore"]
demo_mask = torch.arange(9) >= torch.tensor([9, 5])[:, None]                   # (B=2, S=9), True = padding
print("input mask:      ", demo_mask.int().tolist())
print("reference:       ", speech.subsample_padding_mask(demo_mask, 2).int().tolist())
print("_v2:             ", subsample_padding_mask_v2(demo_mask, 2).int().tolist())
import math                                                             # the helpers it calls: the code you copy from below runs here as printed

print(inspect.getsource(subsample_padding_mask_v2))

# %% [markdown]
# <details><summary>Hint 1</summary>Both masks have ceil(9 / 2) = 5 columns. For the 5-frame clip,
# how many encoder frames are real? Encoder frame t' looks at input frames 2t' - 2 … 2t' + 2.</details>
# <details><summary>Hint 2</summary>The encoder frames are centred on input frames 0, 2, 4, 6, 8. The
# 5-frame clip's input frames 6 and 8 are padding, so its encoder frames 3 and 4 are too.</details>
# <details><summary>Hint 3</summary><code>mask[:, :S']</code> keeps the first S' input frames;
# the encoder keeps every second one.</details>
#
# ### Exercise 2 — fix it
#
# Write `fixed_subsample_padding_mask(key_padding_mask, stride)`: `(B, S)` bool, True = padding ->
# `(B, ceil(S / stride))` bool, True where the encoder frame's centre input frame is padding.

# %% [raw]
# # BEGIN QUESTION
# name: q2_bug_hunt
# points: [1, 1]

# %% [raw]
# # BEGIN SOLUTION

# %%
def fixed_subsample_padding_mask(key_padding_mask, stride=2):
    """(B, S) bool, True = padding -> (B, ceil(S / stride)): the mask of a stride-`stride` convolution's output."""
    """ # BEGIN PROMPT
    raise NotImplementedError("Exercise 2: fix subsample_padding_mask_v2")
    """ # END PROMPT
    # BEGIN SOLUTION NO PROMPT
    return key_padding_mask[:, ::stride]             # encoder frame t' is centred on input frame stride * t'
    # END SOLUTION


# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
def test_q2_public(fixed_subsample_padding_mask):
    from attn_course.checks import check_subsample_padding_mask
    check_subsample_padding_mask(fixed_subsample_padding_mask)

test_q2_public(fixed_subsample_padding_mask)

# %%
# HIDDEN
def test_q2_hidden(fixed_subsample_padding_mask):
    from attn_course.checks import check_subsample_padding_mask
    check_subsample_padding_mask(fixed_subsample_padding_mask, thorough=True)

test_q2_hidden(fixed_subsample_padding_mask)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Summary
#
# - Speech enters a model as log-mel frames, 100 per second; a clip is a sequence like a sentence,
#   mostly silence at the edges, and batches of clips need a `key_padding_mask` (True = padding).
# - Attention pooling — one learned query against every frame, softmax over the frames that are
#   not padding — turns a clip into one vector. On voices never heard in training it recognised
#   spoken digits better than mean pooling (0.886 against 0.823 on 11 validation voices, 0.957
#   against 0.886 on 22 test voices; 2 to 6 points on validation over three seeds) and much better
#   than a nearest neighbour on averaged frames.
# - The attention picture was checked, not just looked at: on most clips most of the weight sits on
#   the voiced frames, learned from the digit labels alone. Against a hard energy gate (the mean over
#   the loud frames only: 0.873 on validation) it behaves like a soft voice-activity detector,
#   nearly flat inside the word and keeping some weight on quiet onsets.
# - Connected digits need a decoder that attends over the frames once per digit: "Listen, Attend and
#   Spell" in small, with 8 frames stacked into one, wrote 0.925 of the validation utterances and
#   0.972 of the test utterances exactly right, against 0.595 and 0.648 with the mean of the states
#   instead of attention. Its alignment walked left to right on every test utterance and peaked on
#   the right word for 0.998 of the digits.
# - When an encoder subsamples time, the mask must be subsampled the same way (`mask[:, ::stride]`);
#   cutting it to length keeps the shape and unmasks padding, and predictions start to depend on
#   the batch. Test a model's outputs alone and batched.
#
# **Next:** lesson 14 turns from listening to reading long text: summarization, attention over the
# sentences of a news article and over the words within each.
#
# **References.** Chorowski, Bahdanau, Serdyuk, Cho & Bengio (2015), *Attention-Based Models for
# Speech Recognition*. Chan, Jaitly, Le & Vinyals (2016), *Listen, Attend and Spell*. Yang et al.
# (2016), *Hierarchical Attention Networks for Document Classification*, eqs. 8–10. Okabe, Koshinaka
# & Shinoda (2018), *Attentive Statistics Pooling for Deep Speaker Embedding*. Vaswani et al.
# (2017), *Attention Is All You Need*, eq. 1. Gulati et al. (2020), *Conformer* (convolutional
# subsampling of speech frames). Davis & Mermelstein (1980) on mel-scale features. espeak-ng
# (GPL-3.0-or-later) and flite (CMU, BSD-style licence) made the voices.
