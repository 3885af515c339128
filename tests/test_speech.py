"""Lesson 13: the spoken-digits data, attention pooling over frames, subsampled masks, model, widget, checks."""
import importlib.util
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from attn_course import checks
from attn_course.apps import speech
from attn_course.broken import query_attention_pool_v2, subsample_padding_mask_v2
from attn_course.checks import CheckFailure
from attn_course.data import spoken_digits
from attn_course.widgets import SpeechExplorer

ROOT = Path(__file__).resolve().parents[1]


# ---- data -------------------------------------------------------------------------------------------

def test_data_set_has_every_voice_and_digit():
    data = spoken_digits.load()
    assert len(data["words"]) == 1760 and len(spoken_digits.voices()) == 88
    assert all(w.shape[1] == spoken_digits.N_MELS and w.dtype == torch.float32 for w in data["words"])
    for voice in spoken_digits.voices():
        digits = sorted(d for d, v in zip(data["digit"].tolist(), data["voice"]) if v == voice)
        assert digits == sorted(list(range(10)) * 2), voice
    assert {"kal", "awb", "rms", "slt", "en-us+whisper", "en-gb-scotland+f2"} <= set(spoken_digits.voices())
    # words are loud, the noise quiet: at least 20 dB between their mean band powers
    loud = torch.stack([w.mean() for w in data["words"]]).median()
    assert loud - data["noise"].mean() > 20


def test_split_is_by_voice_and_deterministic():
    train, test = spoken_digits.split_voices()
    assert (train, test) == spoken_digits.split_voices()
    assert sorted(train + test) == list(range(1760))
    voice = spoken_digits.load()["voice"]
    assert not {voice[i] for i in train} & {voice[i] for i in test}
    assert len({voice[i] for i in test}) == 22
    assert spoken_digits.split_voices(seed=1)[1] != test
    with pytest.raises(ValueError, match="test_fraction"):
        spoken_digits.split_voices(test_fraction=1.0)


def test_clips_put_the_word_between_silences():
    data = spoken_digits.load()
    clips = spoken_digits.clips([0, 5, 1759], seed=3, min_silence=4, max_silence=9)
    again = spoken_digits.clips([0, 5, 1759], seed=3, min_silence=4, max_silence=9)
    for i, (frames, (start, end)) in enumerate(zip(clips.frames, clips.spans)):
        word = data["words"][clips.index[i]]
        torch.testing.assert_close(frames[start:end], word, rtol=0, atol=0)
        assert 4 <= start <= 9 and 4 <= len(frames) - end <= 9
        torch.testing.assert_close(frames, again.frames[i], rtol=0, atol=0)
    assert clips.labels.tolist() == [data["digit"][i].item() for i in (0, 5, 1759)]
    voiced = clips.voiced()
    for v, (start, end) in zip(voiced, clips.spans):
        assert v.any() and not v[:start].any() and not v[end:].any()   # silence is never voiced
    with pytest.raises(ValueError, match="min_silence"):
        spoken_digits.clips([0], min_silence=5, max_silence=2)


def _generator():
    spec = importlib.util.spec_from_file_location("make_spoken_digits", ROOT / "tools" / "make_spoken_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_features_put_a_tone_in_its_mel_band():
    gen = _generator()
    assert (gen.N_MELS, gen.HOP) == (spoken_digits.N_MELS, spoken_digits.HOP_MS * gen.SAMPLE_RATE // 1000)
    t = np.arange(4000) / gen.SAMPLE_RATE
    for freq in (300.0, 1000.0, 2500.0):
        db = gen.log_mel(0.5 * np.sin(2 * np.pi * freq * t))                 # (T, 32)
        assert db.shape == (1 + (4000 - gen.WIN) // gen.HOP, 32)
        band = int(np.argmax(db.mean(0)))
        lower, upper = gen.mel_filterbank()[band].nonzero()[0][[0, -1]] * gen.SAMPLE_RATE / gen.N_FFT
        assert lower <= freq <= upper, (freq, band, lower, upper)
    assert gen.quantise(np.array([-60.0, -59.8, 0.0, 100.0])).tolist() == [0, 0, 120, 255]


# ---- padding, pooling, masks ---------------------------------------------------------------------------

def test_pad_frames():
    x, mask = speech.pad_frames([torch.ones(3, 2), 2 * torch.ones(1, 2)])
    assert x.shape == (2, 3, 2) and mask.tolist() == [[False, False, False], [False, True, True]]
    assert x[1, 1:].abs().sum() == 0 and x[1, 0].tolist() == [2.0, 2.0]
    with pytest.raises(ValueError):
        speech.pad_frames([])
    with pytest.raises(ValueError):
        speech.pad_frames([torch.ones(3, 2), torch.ones(3, 4)])


@pytest.mark.parametrize("per_clip", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_query_attention_pool_equals_torch_sdpa(per_clip, dtype):
    g = torch.Generator().manual_seed(0)
    B, S, E, Dv = 4, 11, 16, 6
    query = torch.randn(*((B, E) if per_clip else (E,)), generator=g, dtype=dtype)
    key, value = torch.randn(B, S, E, generator=g, dtype=dtype), torch.randn(B, S, Dv, generator=g, dtype=dtype)
    key_padding_mask = torch.arange(S) >= torch.tensor([11, 7, 1, 4])[:, None]
    context, attn_weights = speech.query_attention_pool(query, key, value, key_padding_mask)
    q = query.expand(B, E).unsqueeze(1)                                           # (B, 1, E)
    expected = F.scaled_dot_product_attention(q, key, value, attn_mask=~key_padding_mask[:, None, :])
    torch.testing.assert_close(context, expected.squeeze(1))
    torch.testing.assert_close(attn_weights.sum(-1), torch.ones(B, dtype=dtype))
    assert attn_weights[key_padding_mask].abs().max() == 0
    # no mask at all: the plain softmax formula
    _, w = speech.query_attention_pool(query, key, value)
    torch.testing.assert_close(w, torch.softmax((key * q).sum(-1) / math.sqrt(E), -1))


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("S", [1, 8, 9, 17])
def test_subsample_padding_mask_matches_a_real_convolution(stride, S):
    lengths = torch.tensor([S, max(1, S // 2), 1])
    key_padding_mask = torch.arange(S) >= lengths[:, None]                       # (B, S)
    conv = nn.Conv1d(1, 1, kernel_size=5, stride=stride, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 2] = 1.0                                               # reads only the centre frame
        padding_out = conv((key_padding_mask.float()).unsqueeze(1)).squeeze(1) > 0.5   # (B, S')
    got = speech.subsample_padding_mask(key_padding_mask, stride)
    assert torch.equal(got, padding_out)
    with pytest.raises(ValueError):
        speech.subsample_padding_mask(key_padding_mask, 0)


# ---- the model ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def few_clips():
    train, test = spoken_digits.split_voices()
    return spoken_digits.clips(train[::6], seed=0), spoken_digits.clips(test[:40], seed=1)


def _model(clips, pooling="attention", seed=0):
    torch.manual_seed(seed)
    return speech.SpokenDigitClassifier(*speech.band_stats(clips.frames), d_model=16, pooling=pooling)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_model_output_does_not_depend_on_the_batch(few_clips, pooling):
    _, test = few_clips
    model = _model(test, pooling).eval()
    long_clip = torch.cat([test.frames[0]] * 4)
    with torch.no_grad():
        for frames in test.frames[:6]:
            alone, w_alone = model(*speech.pad_frames([frames]))
            batched, w_batched = model(*speech.pad_frames([frames, long_clip]))
            torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
            S_out = math.ceil(len(frames) / 2)
            assert w_alone.shape == (1, S_out)
            torch.testing.assert_close(w_batched[0, :S_out], w_alone[0], atol=1e-6, rtol=1e-5)
            assert w_batched[0, S_out:].abs().max() == 0


def test_broken_mask_makes_the_output_depend_on_the_batch(few_clips):
    _, test = few_clips
    model = _model(test).eval()
    frames, long_clip = test.frames[1], torch.cat([test.frames[0]] * 4)
    with torch.no_grad():
        x, mask = speech.pad_frames([frames, long_clip])
        logits, w = model.classify(*model.encode(x, mask, subsample=subsample_padding_mask_v2))
        alone, _ = model(*speech.pad_frames([frames]))
    assert w[0, math.ceil(len(frames) / 2):].sum() > 0.05
    assert (logits[0] - alone[0]).abs().max() > 1e-3


def test_training_lowers_the_loss_and_predict_returns_per_clip_weights(few_clips):
    torch.set_num_threads(1)
    train, test = few_clips
    model = _model(train)
    losses = speech.train_classifier(model, train, epochs=3, batch_size=32, lr=5e-3, progress=False)
    assert len(losses) == 3 and losses[-1] < losses[0] < math.log(10) + 0.5
    predictions, weights = speech.predict(model, test, batch_size=16)
    assert predictions.shape == (len(test),) and predictions.dtype == torch.int64
    for w, f in zip(weights, test.frames):
        assert w.shape == (math.ceil(len(f) / 2),)
        torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    mass = speech.mass_on_voiced(weights, test.voiced())
    assert mass.shape == (len(test),) and ((mass >= 0) & (mass <= 1 + 1e-6)).all()


def test_nearest_neighbour_finds_itself(few_clips):
    train, _ = few_clips
    assert torch.equal(speech.nearest_neighbour(train, train), train.labels)


def test_explorer_moves_and_redraws(few_clips):
    _, test = few_clips
    explorer = SpeechExplorer(_model(test).eval(), test)
    voice, digit = test.voice[0], int(test.labels[0])
    explorer.set(voice=voice, digit=digit)
    r, image, text = explorer.result(), explorer.image.value, explorer.text()
    assert r["index"] == 0 and r["probs"].shape == (10,) and 0 <= r["mass_on_voiced"] <= 1 + 1e-6
    assert f"voice {voice}, said '{spoken_digits.WORDS[digit]}'" in text and "top 3" in text
    other = next(i for i in range(len(test)) if test.voice[i] != voice)
    explorer.set(voice=test.voice[other], digit=int(test.labels[other]))
    assert explorer.result()["index"] == other and explorer.image.value != image
    three_digits = spoken_digits.clips(test.index[:6])                      # one voice saying 0, 0, 1, 1, 2, 2
    assert sorted(set(three_digits.labels.tolist())) == [0, 1, 2]
    small = SpeechExplorer(explorer.model, three_digits)
    small.set(digit=9)
    assert small.result() is None and "has no clip of the digit 9" in small.text()
    with pytest.raises(ValueError):
        SpeechExplorer(_model(test), spoken_digits.clips([]))


# ---- the checks: pass on correct variants, fail on wrong ones -------------------------------------------------

def _pool_student(query, key, value, key_padding_mask=None):
    E = key.shape[-1]
    attn_scores = (key @ query.reshape(-1, E, 1)).squeeze(-1) / E ** 0.5
    if key_padding_mask is not None:
        attn_scores = attn_scores.masked_fill(key_padding_mask, float("-inf"))
    attn_weights = torch.softmax(attn_scores, dim=-1)
    return (attn_weights.unsqueeze(1) @ value).squeeze(1), attn_weights


def _pool_sdpa(query, key, value, key_padding_mask=None):
    B, S, E = key.shape
    q = query.expand(B, E).unsqueeze(1)
    mask = None if key_padding_mask is None else ~key_padding_mask[:, None, :]
    context = F.scaled_dot_product_attention(q, key, value, attn_mask=mask).squeeze(1)
    scores = (q @ key.transpose(1, 2)).squeeze(1) / math.sqrt(E)
    weights = torch.softmax(scores if mask is None else scores.masked_fill(key_padding_mask, -math.inf), -1)
    return context, weights


def _pool_no_scale(query, key, value, key_padding_mask=None):
    return _pool_student(query * math.sqrt(key.shape[-1]), key, value, key_padding_mask)


def _pool_mask_after_softmax(query, key, value, key_padding_mask=None):
    context, w = _pool_student(query, key, value, None)
    w = w.masked_fill(key_padding_mask, 0.0)
    return (w.unsqueeze(1) @ value).squeeze(1), w


def _pool_inverted(query, key, value, key_padding_mask=None):
    return _pool_student(query, key, value, ~key_padding_mask)


def _pool_softmax_over_batch(query, key, value, key_padding_mask=None):
    E = key.shape[-1]
    attn_scores = ((key @ query.reshape(-1, E, 1)).squeeze(-1) / E ** 0.5).masked_fill(key_padding_mask, -1e9)
    w = torch.softmax(attn_scores, dim=0)
    return (w.unsqueeze(1) @ value).squeeze(1), w


def _pool_finite_fill(query, key, value, key_padding_mask=None):
    E = key.shape[-1]
    attn_scores = ((key @ query.reshape(-1, E, 1)).squeeze(-1) / E ** 0.5).masked_fill(key_padding_mask, -1e9)
    w = torch.softmax(attn_scores, dim=-1)
    return (w.unsqueeze(1) @ value).squeeze(1), w


@pytest.mark.parametrize("fn", [speech.query_attention_pool, _pool_student, _pool_sdpa, _pool_finite_fill])
def test_check_query_attention_pool_passes_correct_variants(fn):
    checks.check_query_attention_pool(fn)
    checks.check_query_attention_pool(fn, thorough=True)


@pytest.mark.parametrize("fn, kind", [
    (query_attention_pool_v2, "mask"), (_pool_no_scale, "values"), (_pool_mask_after_softmax, "normalisation"),
    (_pool_inverted, "finite"), (_pool_softmax_over_batch, "normalisation"),
    (lambda q, k, v, m=None: _pool_student(q, k, v, m)[1], "type"),
])
def test_check_query_attention_pool_catches_mistakes(fn, kind):
    with pytest.raises(CheckFailure) as err:
        checks.check_query_attention_pool(fn, thorough=True)
    assert err.value.kind == kind, str(err.value)


@pytest.mark.parametrize("fn", [speech.subsample_padding_mask,
                                lambda m, stride=2: m[:, torch.arange(0, m.shape[1], stride)],
                                lambda m, stride=2: m.unfold(1, 1, stride)[..., 0]])
def test_check_subsample_padding_mask_passes_correct_variants(fn):
    checks.check_subsample_padding_mask(fn, thorough=True)


@pytest.mark.parametrize("fn, kind", [
    (subsample_padding_mask_v2, "values"),
    (lambda m, stride=2: m[:, stride - 1::stride] if stride > 1 else m, "shape"),    # the wrong frames, one short
    (lambda m, stride=2: m[:, :m.shape[1] // stride], "shape"),                      # floor instead of ceil
    (lambda m, stride=2: (~m)[:, ::stride], "values"),                               # polarity flipped
    (lambda m, stride=2: m[:, ::stride].int(), "dtype"),
])
def test_check_subsample_padding_mask_catches_mistakes(fn, kind):
    with pytest.raises(CheckFailure) as err:
        checks.check_subsample_padding_mask(fn, thorough=True)
    assert err.value.kind == kind, str(err.value)


def test_answer_key_entries_of_lesson_13():
    entries = [e for e in yaml.safe_load((ROOT / "solutions" / "bug_answer_key.yml").read_text())
               if "13" in e["lessons"]]
    assert {e["broken"] for e in entries} == {"subsample_padding_mask_v2", "query_attention_pool_v2"}
    for e in entries:
        check = getattr(checks, e["check"])
        ref_module, ref_name = e["reference"].rsplit(".", 1)
        reference = getattr(importlib.import_module(ref_module), ref_name)
        broken = getattr(importlib.import_module("attn_course.broken"), e["broken"])
        assert broken.__doc__ == reference.__doc__
        check(reference, thorough=True)
        with pytest.raises(CheckFailure) as err:
            check(broken, thorough=False)
        assert err.value.kind == e["caught_as"]



def test_energy_pooling_averages_the_loud_frames_only():
    """pooling="energy": weight 1/n on the encoder frames whose input frame is loud (the Clips.voiced test at
    frames 0, 2, 4, ...), 0 elsewhere; a clip with no loud frame falls back to all its real frames."""
    from attn_course.apps import speech as sp
    torch.manual_seed(0)
    F_ = 4
    model = sp.SpokenDigitClassifier(torch.zeros(F_), torch.ones(F_), d_model=8, pooling="energy", energy_floor=-50.0)
    x = torch.full((3, 10, F_), -60.0)                                   # all quiet
    x[0, 2:6] = -20.0                                                    # clip 0: frames 2..5 loud
    x[1, 7:] = -20.0                                                     # clip 1: frames 7..9 loud, 9 is padding
    key_padding_mask = torch.zeros(3, 10, dtype=torch.bool)
    key_padding_mask[1, 9:] = True
    key_padding_mask[2, 6:] = True                                       # clip 2: quiet, 6 real frames
    _, w = model(x, key_padding_mask)                                    # (3, 5)
    assert torch.allclose(w[0], torch.tensor([0, 0.5, 0.5, 0, 0]))       # frames 2 and 4 of 0, 2, 4, 6, 8
    assert torch.allclose(w[1], torch.tensor([0, 0, 0, 0, 1.0]))         # frame 8 (9 is padding)
    assert torch.allclose(w[2], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0, 0]))   # no loud frame: its 3 real ones
    with pytest.raises(ValueError):
        sp.SpokenDigitClassifier(torch.zeros(F_), torch.ones(F_), pooling="energy")
    with pytest.raises(ValueError):
        sp.SpokenDigitClassifier(torch.zeros(F_), torch.ones(F_), pooling="max")


# ---- connected digits: data ------------------------------------------------------------------------------

def test_split_voices_with_validation_holds_out_three_disjoint_sets_of_voices():
    voice = spoken_digits.load()["voice"]
    names = spoken_digits.voices()
    random.Random(0).shuffle(names)                                              # the two-way split, by hand
    expected_test = [i for i, v in enumerate(voice) if v in set(names[:22])]
    train2, test2 = spoken_digits.split_voices()
    assert test2 == expected_test and train2 == sorted(set(range(1760)) - set(expected_test))
    train, validation, test = spoken_digits.split_voices(validation_fraction=0.25)
    voices_of = lambda idx: {voice[i] for i in idx}
    assert test == test2 and sorted(train + validation) == train2
    assert voices_of(validation) == set(names[22:44]) and len(voices_of(train)) == 44
    assert not voices_of(train) & voices_of(validation) and not voices_of(validation) & voices_of(test)
    for bad in (-0.1, 0.75, 1.0):
        with pytest.raises(ValueError, match="validation_fraction"):
            spoken_digits.split_voices(validation_fraction=bad)


@pytest.fixture(scope="module")
def split3():
    return spoken_digits.split_voices(validation_fraction=0.125)


def test_utterances_join_words_of_one_voice(split3):
    data = spoken_digits.load()
    _, _, test = split3
    u = spoken_digits.utterances(test, seed=4, n=40, min_pause=3, max_pause=7, min_silence=2, max_silence=6)
    again = spoken_digits.utterances(test, seed=4, n=40, min_pause=3, max_pause=7, min_silence=2, max_silence=6)
    other = spoken_digits.utterances(test, seed=5, n=40, min_pause=3, max_pause=7, min_silence=2, max_silence=6)
    assert len(u) == 40 and u.labels.shape == (40, 4) and u.labels.dtype == u.lengths.dtype == torch.int64
    assert u.labels.tolist() == again.labels.tolist() and u.voice == again.voice and u.labels.tolist() != other.labels.tolist()
    assert set(u.lengths.tolist()) == {2, 3, 4}
    test_voices = {data["voice"][i] for i in test}
    voiced = spoken_digits.Clips(u.frames, None, None, None, None).voiced()
    for i, (frames, spans, words) in enumerate(zip(u.frames, u.spans, u.index)):
        torch.testing.assert_close(frames, again.frames[i], rtol=0, atol=0)
        k = int(u.lengths[i])
        assert len(spans) == len(words) == len(set(words)) == k and u.voice[i] in test_voices
        assert {data["voice"][w] for w in words} == {u.voice[i]}                 # one voice says every word
        assert u.labels[i, :k].tolist() == data["digit"][words].tolist() and (u.labels[i, k:] == -1).all()
        for (start, end), w in zip(spans, words):
            torch.testing.assert_close(frames[start:end], data["words"][w], rtol=0, atol=0)
        pauses = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
        assert all(3 <= p <= 7 for p in pauses) and 2 <= spans[0][0] <= 6 and 2 <= len(frames) - spans[-1][1] <= 6
        outside = torch.ones(len(frames), dtype=torch.bool)
        for start, end in spans:
            outside[start:end] = False
        assert not voiced[i][outside].any()                                     # pauses and silences are noise


def test_utterances_reject_bad_arguments(split3):
    train, _, _ = split3
    for kwargs in ({"min_digits": 0}, {"min_digits": 3, "max_digits": 2}, {"min_pause": 5, "max_pause": 4},
                   {"max_silence": 301}, {"n": -1}):
        with pytest.raises(ValueError, match="need n >= 0"):
            spoken_digits.utterances(train, **kwargs)
    with pytest.raises(ValueError, match="at least max_digits=4 words"):
        spoken_digits.utterances(train[:23])                                     # the second voice has 3 words
    with pytest.raises(ValueError, match="at least max_digits"):
        spoken_digits.utterances([])
    assert len(spoken_digits.utterances(train[:23], max_digits=3, n=5)) == 5


# ---- connected digits: the listener's time reduction ---------------------------------------------------------

@pytest.mark.parametrize("factor", [1, 2, 3, 4])
@pytest.mark.parametrize("S", [1, 7, 8, 13])
def test_stack_frames_matches_a_loop(factor, S):
    g = torch.Generator().manual_seed(S)
    x = torch.randn(3, S, 5, generator=g)
    key_padding_mask = torch.arange(S) >= torch.tensor([S, max(1, S - 3), 1])[:, None]
    stacked, mask = speech.stack_frames(x, key_padding_mask, factor)
    S_out = math.ceil(S / factor)
    assert stacked.shape == (3, S_out, factor * 5)
    for b in range(3):
        for t in range(S_out):
            group = [x[b, s] if s < S else torch.zeros(5) for s in range(factor * t, factor * t + factor)]
            torch.testing.assert_close(stacked[b, t], torch.cat(group), rtol=0, atol=0)
            assert mask[b, t] == key_padding_mask[b, factor * t]
    assert torch.equal(mask, speech.subsample_padding_mask(key_padding_mask, factor))


def test_stack_frames_twice_is_stacking_by_the_product_and_rejects_bad_input():
    x, key_padding_mask = torch.randn(2, 11, 3), torch.arange(11) >= torch.tensor([[11], [6]])
    twice = speech.stack_frames(*speech.stack_frames(x, key_padding_mask, 2), 2)
    once = speech.stack_frames(x, key_padding_mask, 4)
    assert torch.equal(twice[0], once[0]) and torch.equal(twice[1], once[1])
    for args in ((x, key_padding_mask, 0), (x, key_padding_mask, 1.5), (x[0], key_padding_mask[0], 2),
                 (x, key_padding_mask.int(), 2), (x, key_padding_mask[:, :5], 2)):
        with pytest.raises(ValueError):
            speech.stack_frames(*args)


# ---- connected digits: the model -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def few_utterances(split3):
    train, validation, _ = split3
    return (spoken_digits.utterances(train, seed=0, n=160), spoken_digits.utterances(validation, seed=1, n=24))


def _recogniser(utterances, seed=0, **kwargs):
    torch.manual_seed(seed)
    return speech.ConnectedDigitRecogniser(*speech.band_stats(utterances.frames), d_model=16, hidden=16,
                                           attn_dim=8, embed=4, **kwargs)


@pytest.mark.parametrize("context", ["attention", "mean"])
def test_recogniser_shapes_and_masked_attention(few_utterances, context):
    _, u = few_utterances
    model = _recogniser(u, context=context).eval()
    x, key_padding_mask = speech.pad_frames(u.frames[:5])
    targets = speech.sequence_targets(u.labels[:5])                              # (5, 5)
    logits, attn_weights = model(x, key_padding_mask, targets)
    S_out = math.ceil(x.shape[1] / model.stride)
    assert logits.shape == (5, 5, len(speech.TOKENS)) and attn_weights.shape == (5, 5, S_out)
    padding = speech.subsample_padding_mask(key_padding_mask, model.stride)[:, None, :].expand_as(attn_weights)
    assert attn_weights[padding].abs().max() == 0                                # exactly 0 on padding
    torch.testing.assert_close(attn_weights.sum(-1), torch.ones(5, 5))
    if context == "mean":
        n = (~padding).sum(-1, keepdim=True)
        torch.testing.assert_close(attn_weights, (~padding) / n)


def test_recogniser_output_does_not_depend_on_the_batch(few_utterances):
    _, u = few_utterances
    model = _recogniser(u).eval()
    long_one = torch.cat([u.frames[0]] * 3)
    targets = speech.sequence_targets(u.labels[:6])
    with torch.no_grad():
        for i in range(6):
            alone, w_alone = model(*speech.pad_frames([u.frames[i]]), targets[i:i + 1])
            batched, w_batched = model(*speech.pad_frames([u.frames[i], long_one]), targets[[i, 0]])
            torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(w_batched[:1, :, :w_alone.shape[-1]], w_alone, atol=1e-6, rtol=1e-5)
            assert w_batched[0, :, w_alone.shape[-1]:].abs().max() == 0


def test_teacher_forced_step_t_reads_only_the_targets_before_t(few_utterances):
    _, u = few_utterances
    model = _recogniser(u).eval()
    x, key_padding_mask = speech.pad_frames(u.frames[:4])
    targets = speech.sequence_targets(u.labels[:4])
    with torch.no_grad():
        logits, _ = model(x, key_padding_mask, targets)
        for t in range(targets.shape[1]):
            changed = targets.clone()
            changed[:, t:] = (changed[:, t:] + 3) % 10                          # other digits from t on
            other, _ = model(x, key_padding_mask, changed)
            torch.testing.assert_close(other[:, :t + 1], logits[:, :t + 1], rtol=0, atol=0)
            if t + 1 < targets.shape[1]:
                assert (other[:, t + 1] - logits[:, t + 1]).abs().max() > 1e-4


def test_generate_is_greedy_stops_at_eos_and_pads(few_utterances):
    _, u = few_utterances
    model = _recogniser(u, seed=3).eval()
    x, key_padding_mask = speech.pad_frames(u.frames[:8])
    E, P = speech.EOS, speech.PAD
    with torch.no_grad():
        model.out.bias[E] -= 2.0                                                 # digits, no <eos> for a while
        tokens, attn_weights = model.generate(x, key_padding_mask, max_len=6)
        assert tokens.shape == (8, 6) and attn_weights.shape[:2] == (8, 6)
        logits, forced = model(x, key_padding_mask, tokens)                     # the same steps, teacher-forced
        assert torch.equal(logits.argmax(-1), tokens)
        torch.testing.assert_close(forced, attn_weights)
        model.out.bias[E] += 100.0                                               # <eos> at once
        tokens, attn_weights = model.generate(x, key_padding_mask, max_len=6)
    assert tokens.tolist() == [[E]] * 8 and attn_weights.shape == (8, 1, attn_weights.shape[-1])

    # a scripted speller: row b writes script[b] whatever it hears; generate must pad, zero and stop
    script = torch.tensor([[3, E, 7, 7, 7], [1, 2, 4, E, 7], [E, 1, 1, 1, 1], [5, 5, 5, 5, 5]])
    heard = []

    def scripted_step(token, h, *memory):
        heard.append(token.clone())
        t = len(heard) - 1
        weights = torch.softmax(torch.arange(4.0) * (t + 1), -1).expand(len(token), 4)    # (B, S'=4), sums to 1
        return F.one_hot(script[:len(token), t], len(speech.TOKENS)).float(), h, weights

    model._step = scripted_step
    model._start = lambda x, mask: (torch.zeros(len(x), 1), (torch.zeros(len(x), 4, 1),))   # h, (states,)
    tokens, attn_weights = model.generate(torch.zeros(4, 9, 32), torch.zeros(4, 9, dtype=torch.bool), max_len=5)
    assert tokens.tolist() == [[3, E, P, P, P], [1, 2, 4, E, P], [E, P, P, P, P], [5, 5, 5, 5, 5]]
    ended = tokens == P
    assert attn_weights[ended].abs().max() == 0 and torch.allclose(attn_weights[~ended].sum(-1), torch.ones(1))
    assert heard[0].tolist() == [speech.BOS] * 4 and heard[2].tolist() == script[:, 1].tolist()   # feeds back its argmax
    heard.clear()
    tokens, _ = model.generate(torch.zeros(3, 9, 32), torch.zeros(3, 9, dtype=torch.bool), max_len=5)
    assert tokens.shape == (3, 4) and len(heard) == 4                           # stops once every row has ended


def test_sequence_targets_put_eos_after_the_digits():
    assert speech.sequence_targets(torch.tensor([[3, 1, 4, 1], [2, 7, -1, -1]])).tolist() == [
        [3, 1, 4, 1, speech.EOS], [2, 7, speech.EOS, -1, -1]]
    with pytest.raises(ValueError):
        speech.sequence_targets(torch.tensor([[3, -1, 4]]))


# ---- connected digits: metrics ---------------------------------------------------------------------------------

def test_sequence_accuracy_counts_missing_and_extra_digits_as_wrong():
    E, P = speech.EOS, speech.PAD
    labels = torch.tensor([[3, 1, 4, P], [2, 7, P, P], [5, 5, 5, 5], [0, 9, P, P]])
    predicted = torch.tensor([[3, 1, 4, E, P],       # right: 3 of 3
                              [2, 7, 7, E, P],       # one extra: 2 of 3 positions
                              [5, 5, E, P, P],       # two missing: 2 of 4
                              [9, 0, E, P, P]])      # both wrong: 0 of 2
    acc = speech.sequence_accuracy(predicted, labels)
    assert acc == {"words": pytest.approx(7 / 12), "sequences": 0.25}
    no_eos = speech.sequence_accuracy(torch.tensor([[3, 1]]), torch.tensor([[3, 1, P]]))
    assert no_eos == {"words": 1.0, "sequences": 1.0}                          # ends after its T tokens


def test_alignment_is_monotone_and_attention_on_words_by_hand():
    peaks = lambda *s: torch.nn.functional.one_hot(torch.tensor(s), 10).float()   # rows peaking at frames s
    weights = [peaks(1, 4, 7), peaks(1, 4, 4), peaks(5, 2), peaks(3), torch.zeros(0, 10)]
    assert speech.alignment_is_monotone(weights).tolist() == [True, False, False, True, True]
    spans = [[(4, 8), (16, 20), (28, 40)], [(4, 8), (16, 20), (22, 30)], [(20, 24), (8, 12)], [(0, 8), (9, 20)],
             [(0, 5)]]
    # stride 4: frame s covers input frames [4s, 4s + 4); hits: 3, 2 (frame 4 is not in [22, 30)), 2, 0
    # (frame 3 = [12, 16) misses (0, 8)), the missing second step and the empty transcript miss
    assert speech.attention_on_words(weights, spans, stride=4) == pytest.approx(7 / 11)
    assert speech.attention_on_words(weights, spans, stride=4, margin=4) == pytest.approx(8 / 11)


def test_training_lowers_the_loss_and_predict_sequences_trims(few_utterances):
    torch.set_num_threads(1)
    train, validation = few_utterances
    model = _recogniser(train)
    losses = speech.train_recogniser(model, train, epochs=3, batch_size=32, lr=1e-2, progress=False)
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.2 and losses[0] < math.log(12) + 0.5
    tokens, weights = speech.predict_sequences(model, validation, batch_size=10)
    assert tokens.shape == (len(validation), 5) and tokens.dtype == torch.int64
    k = speech.sequence_lengths(tokens)
    for w, n, frames in zip(weights, k.tolist(), validation.frames):
        assert w.shape == (n, math.ceil(len(frames) / model.stride))
        torch.testing.assert_close(w.sum(-1), torch.ones(n))
    assert speech.alignment_is_monotone(weights).shape == (len(validation),)
    assert 0 <= speech.attention_on_words(weights, validation.spans, model.stride) <= 1
