"""Lesson 09: number-word data, additive attention, the encoder-decoder, greedy decoding, checks, widget."""
import inspect
import math

import pytest
import torch

from attn_course import attention, checks, pooling, scoring, widgets
from attn_course.apps import translation as tr
from attn_course.broken import Seq2Seq_v2
from attn_course.checks import CheckFailure
from attn_course.data import number_words as nw


# ----------------------------------------------------------------- data
def test_pairs_are_real_french_grammar():
    assert nw.pair(97)[1:] == (["ninety-seven"], ["quatre-vingt-dix-sept"])
    assert nw.pair(21)[2] == ["vingt", "et", "un"]
    assert nw.pair(200)[2] == ["deux", "cents"] and nw.pair(201)[2] == ["deux", "cent", "un"]
    assert nw.pair(80_000)[2] == ["quatre-vingt", "mille"]
    assert nw.pair(1_200_000)[1] == ["one", "million", ",", "two", "hundred", "thousand"]
    with pytest.raises(ValueError):
        nw.pair(-1)


def test_splits_deterministic_disjoint_balanced():
    a = nw.splits(max_digits=6, train_size=500, val_size=40, test_size=80, seed=3)
    nw.splits.cache_clear()
    b = nw.splits(max_digits=6, train_size=500, val_size=40, test_size=80, seed=3)
    assert a == b
    numbers = {k: [n for n, _, _ in v] for k, v in a.items()}
    assert [len(numbers[k]) for k in ("train", "val", "test")] == [500, 40, 80]
    assert set(range(100)) <= set(numbers["train"])
    assert not set(numbers["train"]) & set(numbers["test"]) and not set(numbers["val"]) & set(numbers["test"])
    assert not set(numbers["train"]) & set(numbers["val"])
    assert [sum(len(str(n)) == d for n in numbers["test"]) for d in range(3, 7)] == [20] * 4
    other = nw.splits(max_digits=6, train_size=500, val_size=40, test_size=80, seed=4)
    assert [n for n, _, _ in other["test"]] != numbers["test"]
    with pytest.raises(ValueError):
        nw.splits(max_digits=2)


# ----------------------------------------------------------------- additive attention
def _loop_reference(query, key, value, w_query, w_key, v, lengths):
    """Bahdanau's equations one sentence and one position at a time, in float64."""
    B, S, _ = key.shape
    context, weights = torch.zeros(B, value.shape[-1], dtype=torch.float64), torch.zeros(B, S, dtype=torch.float64)
    for b in range(B):
        e = [float(v.double() @ torch.tanh(w_query.double() @ query[b].double() + w_key.double() @ key[b, j].double()))
             for j in range(lengths[b])]
        z = sum(math.exp(x) for x in e)
        for j in range(lengths[b]):
            weights[b, j] = math.exp(e[j]) / z
            context[b] += weights[b, j] * value[b, j].double()
    return context, weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_additive_attention_matches_loop_and_scoring(dtype):
    g = torch.Generator().manual_seed(0)
    B, S, Dq, Dk, Dv, A, lengths = 3, 6, 4, 5, 7, 8, [6, 2, 4]
    args = [torch.randn(*s, generator=g, dtype=dtype) for s in [(B, Dq), (B, S, Dk), (B, S, Dv), (A, Dq), (A, Dk), (A,)]]
    mask = torch.arange(S)[None] >= torch.tensor(lengths)[:, None]
    context, weights = tr.additive_attention(*args, key_padding_mask=mask)
    ref_context, ref_weights = _loop_reference(*args, lengths)
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(weights.double(), ref_weights, **tol)
    torch.testing.assert_close(context.double(), ref_context, **tol)
    assert weights.dtype == dtype and (weights[mask] == 0).all()
    scores = scoring.additive_scores(args[0][:, None], args[1], args[3], args[4], args[5])       # (B, 1, S)
    torch.testing.assert_close(weights, attention.masked_softmax(scores, ~mask[:, None])[:, 0])


def test_additive_attention_module_and_errors():
    torch.manual_seed(0)
    module = pooling.AdditiveAttention(4, 6, 5)                     # the decoder's attention
    q, k = torch.randn(2, 4), torch.randn(2, 3, 6)
    mask = torch.tensor([[False, False, True], [True, True, True]])   # the second row is all padding
    c1, w1 = module(q, k, k, mask)
    c2, w2 = module(q, k, k, mask, projected_key=module.w_key(k))
    torch.testing.assert_close((c1, w1), (c2, w2))
    assert torch.equal(w1[1], torch.zeros(3)) and torch.isfinite(c1).all()
    with pytest.raises(ValueError):
        tr.additive_attention(q, k[:1], k[:1], module.w_query.weight, module.w_key.weight, module.v.weight[0])
    with pytest.raises(ValueError):
        module(q, k, k, mask[:, :2])


# ----------------------------------------------------------------- the model
def _model(attention=True, seed=0):
    torch.manual_seed(seed)
    return tr.Seq2Seq(15, 12, embed_dim=8, hidden_size=4, attention=attention, attn_dim=6).eval()


@pytest.mark.parametrize("attention", [True, False])
def test_padding_changes_nothing(attention):
    model = _model(attention)
    src = [[5, 6, 7, 8], [9, 4]]
    ids, mask = tr.pad_batch(src)
    tgt_in = torch.tensor([[2, 5, 6], [2, 7, 8]])
    with torch.no_grad():
        logits, weights = model(ids, mask, tgt_in)
        alone, alone_w = model(torch.tensor([src[1]]), torch.zeros(1, 2, dtype=torch.bool), tgt_in[1:])
    torch.testing.assert_close(logits[1], alone[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights[1, :, :2], alone_w[0])
    assert (weights[1, :, 2:] == 0).all()
    if attention:
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))
    else:
        assert (weights == 0).all()


def test_encoder_summary_is_the_final_states():
    model = _model()
    ids, mask = tr.pad_batch([[5, 6, 7], [8]])
    with torch.no_grad():
        states, summary = model.encoder(ids, mask)
        out, _ = model.encoder.rnn(model.encoder.embedding(torch.tensor([[5, 6, 7]])))   # no padding: plain GRU
    torch.testing.assert_close(states[0], out[0])
    torch.testing.assert_close(summary[0], torch.cat([out[0, -1, :4], out[0, 0, 4:]]))
    assert (states[1, 1:] == 0).all()


def test_greedy_decode_feeds_back_its_argmax():
    model = _model(seed=5)
    with torch.no_grad():
        model.decoder.out.bias[3] += 0.3          # make <eos> likely, so rows stop at steps 1, 2 and 4
    model.decoder.max_len = 6
    ids, mask = tr.pad_batch([[5, 6, 7, 8], [9, 4], [10, 11, 12]])
    out, weights = tr.greedy_decode(model, ids, mask)
    tgt_in = torch.cat([torch.full((3, 1), 2), out[:, :-1]], dim=1)
    with torch.no_grad():
        logits, forced_w = model(ids, mask, tgt_in)
    stops = [(row == 3).nonzero()[0].item() + 1 if (row == 3).any() else out.shape[1] for row in out]
    assert len(set(stops)) > 1, "the test needs rows that stop at different steps"
    for b, stop in enumerate(stops):
        assert torch.equal(logits[b, :stop].argmax(-1), out[b, :stop])
        torch.testing.assert_close(weights[b, :stop], forced_w[b, :stop])
        assert (out[b, stop:] == 0).all() and (weights[b, stop:] == 0).all()


# ----------------------------------------------------------------- checks
def _attention_einsum(query, key, value, w_query, w_key, v, key_padding_mask=None):
    scores = torch.einsum("bsa,a->bs", torch.tanh(torch.einsum("ad,bd->ba", w_query, query)[:, None]
                                                 + torch.einsum("ae,bse->bsa", w_key, key)), v)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask, -1e9)
    weights = scores.softmax(-1)
    return torch.einsum("bs,bsd->bd", weights, value), weights


def _no_mask(query, key, value, w_query, w_key, v, key_padding_mask=None):
    return tr.additive_attention(query, key, value, w_query, w_key, v, None)


def _no_tanh(query, key, value, w_query, w_key, v, key_padding_mask=None):
    scores = ((query @ w_query.T)[:, None] + key @ w_key.T) @ v
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask, float("-inf"))
    weights = scores.softmax(-1)
    return (weights[:, None] @ value)[:, 0], weights


def _context_from_keys(query, key, value, w_query, w_key, v, key_padding_mask=None):
    return tr.additive_attention(query, key, key, w_query, w_key, v, key_padding_mask)


def _softmax_over_batch(query, key, value, w_query, w_key, v, key_padding_mask=None):
    scores = torch.tanh((query @ w_query.T)[:, None] + key @ w_key.T) @ v
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask, float("-inf"))
    weights = torch.nan_to_num(scores.softmax(0))
    return (weights[:, None] @ value)[:, 0], weights


@pytest.mark.parametrize("fn", [tr.additive_attention, _attention_einsum])
@pytest.mark.parametrize("thorough", [False, True])
def test_check_additive_attention_passes_correct_versions(fn, thorough):
    checks.check_additive_attention(fn, thorough=thorough)


@pytest.mark.parametrize("fn, kind, words", [
    (_no_mask, "mask", "padding positions got attention weight"),
    (_no_tanh, "values", "without the tanh"),
    (_context_from_keys, "values", "value, not key"),
    (_softmax_over_batch, "normalisation", "key axis"),
])
def test_check_additive_attention_catches_mistakes(fn, kind, words):
    with pytest.raises(CheckFailure) as err:
        checks.check_additive_attention(fn)
    assert err.value.kind == kind and words in str(err.value)


def test_check_additive_attention_needs_thorough_for_some_mistakes():
    def ignores_dtype(query, key, value, w_query, w_key, v, key_padding_mask=None):
        context, weights = tr.additive_attention(query.float(), key.float(), value.float(), w_query.float(),
                                                 w_key.float(), v.float(), key_padding_mask)
        return context, weights
    checks.check_additive_attention(ignores_dtype)
    with pytest.raises(CheckFailure) as err:
        checks.check_additive_attention(ignores_dtype, thorough=True)
    assert err.value.kind == "dtype"


def test_check_seq2seq_forward():
    def reference(model, src, key_padding_mask, tgt_in=None):
        return tr.Seq2Seq.forward(model, src, key_padding_mask, tgt_in)

    def no_mask(model, src, key_padding_mask, tgt_in):
        enc_states, summary = model.encoder(src, key_padding_mask)
        return model.decoder(tgt_in, enc_states, summary, None)

    checks.check_seq2seq_forward(reference, thorough=True)
    with pytest.raises(CheckFailure) as err:
        checks.check_seq2seq_forward(lambda m, *a: Seq2Seq_v2.forward(m, *a))
    assert err.value.kind == "values" and "embedded source words" in str(err.value)
    with pytest.raises(CheckFailure) as err:
        checks.check_seq2seq_forward(no_mask)
    assert err.value.kind == "values"
    with pytest.raises(CheckFailure) as err:                       # cannot decode without tgt_in
        checks.check_seq2seq_forward(lambda m, src, kpm, tgt_in: (m.decoder.out(torch.zeros(1)), None) if tgt_in is None
                                  else tr.Seq2Seq.forward(m, src, kpm, tgt_in))
    assert err.value.kind in ("error", "type", "shape")


def test_broken_keeps_the_docstrings_and_differs_by_one_line():
    assert Seq2Seq_v2.__doc__ == tr.Seq2Seq.__doc__
    assert Seq2Seq_v2.forward.__doc__ == tr.Seq2Seq.forward.__doc__
    def code(fn):
        return [line for line in inspect.getsource(fn).splitlines()[1:] if '"""' not in line]
    ref, bad = code(tr.Seq2Seq.forward), code(Seq2Seq_v2.forward)
    assert len(ref) == len(bad) and sum(a != b for a, b in zip(ref, bad)) == 1


# ----------------------------------------------------------------- widget
def test_translation_explorer_reads_typed_numbers():
    data = nw.splits(max_digits=4, train_size=300, val_size=20, test_size=40)
    src_vocab = tr.build_vocab(e for _, e, _ in data["train"])
    tgt_vocab = tr.build_vocab(f for _, _, f in data["train"])
    torch.manual_seed(0)
    model = tr.Seq2Seq(len(src_vocab), len(tgt_vocab), embed_dim=8, hidden_size=4).eval()
    explorer = widgets.TranslationExplorer(model, src_vocab, tgt_vocab, number=21, baseline=model)
    assert "twenty-one" in explorer.text() and "vingt et un" in explorer.text()
    first = explorer.image.value
    explorer.set(3_000)
    assert explorer.number() == 3000 and "three thousand" in explorer.readout.value
    assert explorer.image.value != first
    english, french, weights = explorer.translate(3000)
    assert weights.shape[1] == len(english) and len(french) <= weights.shape[0] <= len(french) + 1
    explorer.set("12x")
    assert explorer.number() is None and "not a whole number" in explorer.text()
    explorer.set("1,000,000,000")
    assert explorer.number() is None


# ------------------------------------------------------------------ check_alignment_crosses (lesson 09, Ex 3)

def _crosses_reference(attn_weights):
    from attn_course.apps import date_translation
    return date_translation.crosses(attn_weights.argmax(-1))


def _crosses_with_le(attn_weights):
    peaks = attn_weights.argmax(-1)
    return (peaks[:, 1:] <= peaks[:, :-1]).any(-1)


def _crosses_with_all(attn_weights):
    peaks = attn_weights.argmax(-1)
    return (peaks[:, 1:] < peaks[:, :-1]).all(-1)


def _crosses_against_first(attn_weights):
    peaks = attn_weights.argmax(-1)
    return (peaks[:, 1:] < peaks[:, :1]).any(-1)


def _crosses_over_rows(attn_weights):
    peaks = attn_weights.argmax(1)
    return (peaks[:, 1:] < peaks[:, :-1]).any(-1)


def _crosses_as_int(attn_weights):
    return _crosses_reference(attn_weights).long()


def _crosses_steps_right(attn_weights):
    peaks = attn_weights.argmax(-1)
    return (peaks[:, 1:] > peaks[:, :-1]).any(-1)


@pytest.mark.parametrize("thorough", [False, True])
def test_check_alignment_crosses_passes_the_reference(thorough):
    checks.check_alignment_crosses(_crosses_reference, thorough=thorough)


@pytest.mark.parametrize("fn, kind, words", [
    (_crosses_with_le, "values", "compare with <, not <="),
    (_crosses_with_all, "values", ".any(-1), not .all"),
    (_crosses_against_first, "values", "not with the first row's"),
    (_crosses_over_rows, "values", "argmax(dim=1) runs over the rows"),
    (_crosses_as_int, "dtype", "bool"),
    (_crosses_steps_right, "values", "a step to the LEFT"),
    (lambda w: None, "type", "forget `return`"),
])
def test_check_alignment_crosses_catches_mistakes(fn, kind, words):
    with pytest.raises(CheckFailure) as err:
        checks.check_alignment_crosses(fn)
    assert err.value.kind == kind and words in str(err.value), str(err.value)


def test_check_alignment_crosses_cases_are_what_they_say():
    """The check's weights put each row's argmax where its case says, and both answers occur."""
    from attn_course.checks.translation import _crosses_cases
    g = torch.Generator().manual_seed(0)
    answers = []
    for case, w in _crosses_cases(True, g):
        assert torch.allclose(w.sum(-1), torch.ones((), dtype=w.dtype)), case
        top2 = w.topk(2, dim=-1).values if w.shape[-1] > 1 else None
        if top2 is not None:
            assert (top2[..., 0] > 1.5 * top2[..., 1]).all(), f"{case}: the argmax must be clear"
        answers += _crosses_reference(w).tolist()
    assert True in answers and False in answers


def test_alignment_crosses_on_hand_aligned_dates_matches_the_fields():
    """On worked examples the measure says what the eye sees: a DMY or MDY date's digits, aligned to their
    fields, cross; an ISO-ordered one does not."""
    import datetime

    from attn_course.apps import date_translation
    from attn_course.data import dates
    for fmt, crosses in (("fr_FR/full", True), ("en_US/long", True), ("hu_HU/long", False)):
        p = dates.pair(datetime.date(1999, 6, 3), fmt)
        w = torch.zeros(1, 11, len(p.src))
        for row, (t, field) in enumerate(date_translation.DIGIT_FIELDS):
            start, end = p.spans[field]
            w[0, t, start + min(row if field == "year" else row % 2, end - start - 1)] = 1.0
        peaks = date_translation.alignment(w)
        assert bool(date_translation.crosses(peaks)[0]) is crosses, fmt
        assert date_translation.in_field(peaks, [p]).item() == 1.0
