"""Lesson 13: the spoken-digits data, attention pooling over frames, subsampled masks, model, widget, checks."""
import importlib.util
import math
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
