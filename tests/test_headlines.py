"""Lesson 14's abstractive part: the pointer-generator (See et al. 2017, eqs. 8-9), its extended
vocabulary, its padding, its greedy decoding, and a copy task that only the pointer can learn.

Shape legend: B batch, S source length, L target length, V vocabulary, n extra (out-of-vocabulary) slots.
``key_padding_mask`` True = padding.
"""
import doctest

import pytest
import torch
from torch.nn import functional as F

from attn_course import training
from attn_course.apps import headlines as hl
from attn_course.data import Vocab

torch.set_num_threads(1)          # small tensors: extra threads only add synchronisation

def tiny_vocab():
    """<pad>=0 <unk>=1 <bos>=2 <eos>=3 the=4 wins=5 title=6: V = 7."""
    return Vocab([[hl.BOS, hl.EOS, "the", "wins", "title"]])


def tiny_batch():
    """Two articles; the first repeats the OOV word "zverev" and has no padding, the second is padded."""
    pairs = [(["zverev", "wins", "the", "sofia", "zverev", "title"], ["zverev", "wins", "sofia", "open"]),
             (["the", "wins", "kyiv"], ["kyiv", "the"])]
    return hl.encode_pairs(pairs, tiny_vocab())


def tiny_model(copy=True, seed=0):
    torch.manual_seed(seed)
    return hl.PointerGenerator(len(tiny_vocab()), embed_dim=5, hidden_size=4, attn_dim=6, copy=copy).double()


def test_docstring_examples():
    assert doctest.testmod(hl).failed == 0


# ----------------------------------------------------------------- the extended vocabulary
def test_encode_pairs_extended_vocabulary_by_hand():
    vocab, batch = tiny_vocab(), tiny_batch()
    V = len(vocab)                                                   # 7
    assert batch["oovs"] == [["zverev", "sofia"], ["kyiv"]] and batch["max_oov"] == 2
    assert batch["src"].tolist() == [[1, 5, 4, 1, 1, 6], [4, 5, 1, 0, 0, 0]]        # OOV read as <unk>
    assert batch["src_ext"].tolist() == [[V, 5, 4, V + 1, V, 6], [4, 5, V, 0, 0, 0]]  # ids by first appearance
    assert batch["key_padding_mask"].tolist() == [[False] * 6, [False] * 3 + [True] * 3]
    # "sofia" is in the source: its id V + 1; "open" is not: <unk>
    assert batch["tgt_in"].tolist() == [[2, V, 5, V + 1, 1], [2, V, 4, 0, 0]]
    assert batch["tgt_out"].tolist() == [[V, 5, V + 1, 1, 3], [V, 4, 3, 0, 0]]
    assert hl.decode_ids(batch["tgt_out"][0], vocab, batch["oovs"][0]) == ["zverev", "wins", "sofia", "<unk>"]
    assert hl.decode_ids([V, 4, 3, 5], vocab, batch["oovs"][1]) == ["kyiv", "the"]          # cut at <eos>
    assert hl.decode_ids(torch.tensor([6, 0, 5]), vocab, []) == ["title"]                    # cut at padding
    with pytest.raises(ValueError, match="empty source"):
        hl.encode_pairs([(["the"], []), ([], ["the"])], vocab)
    with pytest.raises(ValueError, match="<bos>"):
        hl.encode_pairs([(["the"], [])], Vocab([["the"]]))


def test_pairs_and_vocab_from_articles():
    articles = [{"title": "Zverev wins Sofia Open", "words": (("zverev", "won"), ("in", "sofia", "sunday"))},
                {"title": "Rain in Sofia", "words": (("it", "rained"), ("in", "sofia"))}]
    pairs = hl.pairs_from_articles(articles, src_len=4, tgt_len=3)
    assert pairs[0] == (["zverev", "won", "in", "sofia"], ["zverev", "wins", "sofia"])
    vocab = hl.build_vocab(pairs, max_words=2)                       # the two most frequent words
    assert vocab.itos == ["<pad>", "<unk>", hl.BOS, hl.EOS, "sofia", "in"]


# ----------------------------------------------------------------- eq. 9
def mixture_loop(vocab_logits, attn_weights, p_gen, src_ext, max_oov):
    """Eq. 9 one word at a time, in float64: p_gen P_vocab(w) + (1 - p_gen) * sum of a_i over i with w_i = w."""
    B, L, V = vocab_logits.shape
    out = torch.zeros(B, L, V + max_oov, dtype=torch.float64)
    for b in range(B):
        for t in range(L):
            p_vocab = torch.softmax(vocab_logits[b, t].detach().double(), -1)
            for w in range(V + max_oov):
                copy = sum(float(attn_weights[b, t, i].detach()) for i in range(src_ext.shape[1]) if int(src_ext[b, i]) == w)
                g = float(p_gen[b, t].detach())
                out[b, t, w] = g * (float(p_vocab[w]) if w < V else 0.0) + (1 - g) * copy
    return out


def test_final_log_probs_is_eq9_with_repeated_words_adding_up():
    g = torch.Generator().manual_seed(0)
    B, L, S, V, n = 2, 3, 5, 6, 3
    vocab_logits = torch.randn(B, L, V, generator=g, dtype=torch.float64)
    src_ext = torch.tensor([[6, 2, 6, 4, 0], [3, 3, 7, 0, 0]])      # 6 twice, 3 twice; slot 8 held by no word
    mask = src_ext == 0
    attn_weights = torch.softmax(torch.randn(B, L, S, generator=g, dtype=torch.float64).masked_fill(mask[:, None], -torch.inf), -1)
    p_gen = torch.rand(B, L, generator=g, dtype=torch.float64)
    log_probs = hl.final_log_probs(vocab_logits, attn_weights, p_gen, src_ext, n)
    assert log_probs.shape == (B, L, V + n)
    expected = mixture_loop(vocab_logits, attn_weights, p_gen, src_ext, n)
    torch.testing.assert_close(log_probs.exp(), expected, atol=1e-11, rtol=1e-9)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(B, L, dtype=torch.float64), atol=1e-10, rtol=0)
    # the repeated word 6 gets both of its weights; the free slot 8 nothing (log 1e-12, finite)
    torch.testing.assert_close(log_probs[0, :, 6].exp(), (1 - p_gen[0]) * (attn_weights[0, :, 0] + attn_weights[0, :, 2]))
    assert torch.isfinite(log_probs).all() and (log_probs[..., 8] < -27).all()
    # the loss's shortcut: the same eq. 9 at one word per position
    target = torch.tensor([[6, 3, 8], [3, 7, 1]])
    torch.testing.assert_close(hl.target_log_probs(vocab_logits, attn_weights, p_gen, src_ext.unsqueeze(1), target),
                               log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1))


def test_model_forward_is_eq8_and_eq9_of_its_parts():
    model, batch = tiny_model(), tiny_batch()
    log_probs, attn_weights, p_gen = model(batch["src"], batch["src_ext"], batch["key_padding_mask"], batch["tgt_in"])
    B, L = batch["tgt_in"].shape
    assert log_probs.shape == (B, L, 7 + 2) and attn_weights.shape == (B, L, 6) and p_gen.shape == (B, L)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(B, L, dtype=torch.float64), atol=1e-10, rtol=0)
    # the parts, recomputed by hand from the weights
    enc_states, _, state = model.encode(batch["src"], batch["key_padding_mask"])
    x = model.embedding(batch["tgt_in"].clamp(max=6).masked_fill(batch["tgt_in"] >= 7, 1))     # OOV read as <unk>
    s, _ = model.decoder(x, state)
    context = torch.einsum("bls,bsd->bld", attn_weights, enc_states)                            # h*_t = sum_i a_ti h_i
    w, bias = model.gen_switch.weight[0], model.gen_switch.bias
    expected_p_gen = torch.sigmoid(context @ w[:8] + s @ w[8:16] + x @ w[16:] + bias)          # eq. 8
    torch.testing.assert_close(p_gen, expected_p_gen)
    vocab_logits = model.out(model.out_hidden(torch.cat([s, context], -1)))                     # eq. 4
    expected = mixture_loop(vocab_logits, attn_weights, p_gen, batch["src_ext"], 2)
    torch.testing.assert_close(log_probs.exp(), expected, atol=1e-11, rtol=1e-9)


def test_without_copy_the_distribution_is_p_vocab_padded_with_zeros():
    model, batch = tiny_model(copy=False), tiny_batch()
    assert model.gen_switch is None
    log_probs, attn_weights, p_gen = model(batch["src"], batch["src_ext"], batch["key_padding_mask"], batch["tgt_in"])
    assert (p_gen == 1).all()
    enc_states, projected_key, state = model.encode(batch["src"], batch["key_padding_mask"])
    s, context, _, _, _ = model.decode(batch["tgt_in"], state, enc_states, projected_key, batch["key_padding_mask"])
    p_vocab = torch.softmax(model.vocab_logits(s, context), -1)                                 # (B, L, V)
    torch.testing.assert_close(log_probs.exp(), F.pad(p_vocab, (0, 2)), atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("copy", [True, False])
def test_loss_is_the_nll_of_the_forward_distribution(copy):
    model, batch = tiny_model(copy), tiny_batch()
    log_probs, _, _ = model(batch["src"], batch["src_ext"], batch["key_padding_mask"], batch["tgt_in"])
    target = batch["tgt_out"] if copy else batch["tgt_out"].masked_fill(batch["tgt_out"] >= 7, 1)
    expected = F.nll_loss(log_probs.flatten(0, 1), target.flatten(), ignore_index=0)
    torch.testing.assert_close(hl.headline_loss(model, batch), expected)


# ----------------------------------------------------------------- padding
def test_padding_gets_zero_weight_and_padded_ids_change_nothing():
    model, batch = tiny_model(), tiny_batch()
    out = model(batch["src"], batch["src_ext"], batch["key_padding_mask"], batch["tgt_in"])
    pad = batch["key_padding_mask"]
    assert (out[1][pad[:, None].expand_as(out[1])] == 0).all()
    assert (out[1][1, :, :3] > 0).all()
    src, src_ext = batch["src"].clone(), batch["src_ext"].clone()
    src[pad], src_ext[pad] = 5, 8                                    # other words behind the padding mask
    other = model(src, src_ext, pad, batch["tgt_in"], batch["max_oov"])
    for a, b in zip(out, other):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # more padding columns change nothing either
    wider = model(F.pad(src, (0, 2)), F.pad(src_ext, (0, 2)), F.pad(pad, (0, 2), value=True), batch["tgt_in"])
    torch.testing.assert_close(wider[0], out[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(wider[1][..., :6], out[1], atol=1e-12, rtol=0)


def test_forward_errors():
    model, batch = tiny_model(), tiny_batch()
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        model(batch["src"][:, :3], batch["src_ext"], batch["key_padding_mask"], batch["tgt_in"])
    with pytest.raises(ValueError, match="max_oov"):
        model(batch["src"], batch["src_ext"], batch["key_padding_mask"], batch["tgt_in"], max_oov=1)


# ----------------------------------------------------------------- decoding
@pytest.mark.parametrize("copy, pointer_only", [(True, False), (True, True), (False, False)])
def test_greedy_equals_argmax_of_teacher_forcing_on_its_own_output(copy, pointer_only):
    model, batch = tiny_model(copy, seed=3), tiny_batch()
    if pointer_only:
        with torch.no_grad():
            model.gen_switch.bias.fill_(-30.0)                                      # p_gen ~ 0: copy only
    ids, attn_weights, p_gen = hl.greedy_decode(model, batch, max_len=6)
    B, T = ids.shape
    tgt_in = torch.cat([torch.full((B, 1), model.bos_id), ids[:, :-1]], 1)          # <bos> and its own words
    log_probs, tf_weights, tf_p_gen = model(batch["src"], batch["src_ext"], batch["key_padding_mask"], tgt_in,
                                            batch["max_oov"])
    written = (ids != 0)                                                            # up to and with <eos>
    assert written[:, 0].all()
    assert (log_probs.argmax(-1)[written] == ids[written]).all()
    torch.testing.assert_close(attn_weights[written], tf_weights[written])
    torch.testing.assert_close(p_gen[written], tf_p_gen[written])
    if pointer_only:                                                                # every word from its source
        assert all(set(row) <= set(src) for row, src in zip(ids.tolist(), batch["src_ext"].tolist()))
        assert (ids >= 7).any()                                                     # OOV ids fed back as <unk>


def test_block_ngram_and_ban_unk():
    model, batch = tiny_model(seed=1), tiny_batch()
    plain, _, _ = hl.greedy_decode(model, batch, max_len=12)
    blocked, _, _ = hl.greedy_decode(model, batch, max_len=12, block_ngram=2, ban_unk=True)
    bigrams = lambda row: [tuple(row[i:i + 2]) for i in range(len(row) - 1)]
    assert any(len(set(bigrams(r))) < len(bigrams(r)) for r in plain.tolist()), "the untrained model should repeat"
    for row in blocked.tolist():
        row = row[:row.index(3) if 3 in row else len(row)]
        assert len(set(bigrams(row))) == len(bigrams(row)) and 1 not in row


def test_attention_map_of_one_article():
    model, vocab = tiny_model(), tiny_vocab()
    source = ["zverev", "wins", "the", "sofia", "zverev", "title"]
    out = hl.attention_map(model, source, vocab)
    T = len(out["output"])
    assert out["source"] == source and out["attn_weights"].shape == (T, 6) and out["p_gen"].shape == (T,)
    torch.testing.assert_close(out["attn_weights"].sum(-1), torch.ones(T, dtype=torch.float64))
    assert out["output"] == hl.generate(model, [(source, [])], vocab)[0]


# ----------------------------------------------------------------- training: the copy task
@pytest.fixture(scope="module")
def copy_task_runs():
    words = [f"w{i}" for i in range(12)]
    vocab = Vocab([[hl.BOS, hl.EOS] + words])
    train_pairs = hl.copy_task(1500, 0, words, [f"name{i}" for i in range(3000)])
    test_pairs = hl.copy_task(200, 1, words, [f"city{i}" for i in range(3000)])      # names never seen in training
    runs = {}
    for copy in (True, False):
        torch.manual_seed(0)
        model = hl.PointerGenerator(len(vocab), embed_dim=16, hidden_size=24, attn_dim=16, copy=copy)
        losses = hl.train(model, hl.encode_pairs(train_pairs, vocab), epochs=4, batch_size=32, lr=1e-2, progress=False)
        hyps = hl.generate(model, test_pairs, vocab)
        runs[copy] = model, losses, hyps
    return runs, test_pairs


def word_accuracy(hyps, pairs):
    return sum(h[i] == w for h, (_, t) in zip(hyps, pairs) for i, w in enumerate(t) if i < len(h)) / \
        sum(len(t) for _, t in pairs)


def test_only_the_pointer_learns_to_copy_unseen_words(copy_task_runs):
    runs, test_pairs = copy_task_runs
    _, copy_losses, copy_hyps = runs[True]
    _, _, plain_hyps = runs[False]
    assert word_accuracy(copy_hyps, test_pairs) > 0.9
    assert sum(h == t for h, (_, t) in zip(copy_hyps, test_pairs)) / len(test_pairs) > 0.7     # whole sources
    assert word_accuracy(plain_hyps, test_pairs) < 0.3                   # it can only write <unk> for a name
    assert copy_losses[-1] < 0.2 and copy_losses[-1] < copy_losses[0] / 10


def test_training_is_deterministic(monkeypatch):
    monkeypatch.delenv(training.CACHE_ENV, raising=False)            # train every time: no replay
    vocab, batch = tiny_vocab(), tiny_batch()
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        model = hl.PointerGenerator(len(vocab), embed_dim=5, hidden_size=4, attn_dim=6)
        runs.append((hl.train(model, batch, epochs=3, batch_size=1, seed=seed, progress=False), model.state_dict()))
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) == 6
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert runs[2][0] != runs[0][0]
