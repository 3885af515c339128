"""Lesson 18's application: encoding date pairs, the alignment measures on hand-made weights, a typed date's
tokens, and a short training run that must learn (and a model that cannot see the source must not)."""
import datetime

import pytest
import torch

from attn_course.apps import date_translation as dt
from attn_course.data import dates
from attn_course.encoder_decoder import TransformerTranslator, shift_right


@pytest.fixture(scope="module")
def data():
    pairs = dates.splits(train_size=3000, val_size=200, test_size=0)
    src_vocab, tgt_vocab = dt.build_vocabs(pairs["train"])
    return pairs, src_vocab, tgt_vocab


def test_encode_pads_sources_and_ends_targets_with_eos(data):
    pairs, src_vocab, tgt_vocab = data
    batch = dt.encode(pairs["val"][:5], src_vocab, tgt_vocab)
    eos = tgt_vocab.stoi[dt.EOS]
    assert batch["tgt_out"].shape == (5, 11) and (batch["tgt_out"][:, -1] == eos).all()
    for row, p in zip(batch["src"], pairs["val"][:5]):
        assert src_vocab.decode(row[:len(p.src)]) == p.src and (row[len(p.src):] == 0).all()
    assert tgt_vocab.stoi[dt.BOS] == 2 and eos == 3                       # the ids TransformerTranslator expects


def test_alignment_crosses_and_in_field_on_hand_made_weights():
    p = dates.pair(datetime.date(1999, 6, 3), "fr_FR/long")                # <fr_FR> 3 juin 1 9 9 9
    assert p.spans == {"day": (1, 2), "month": (2, 3), "year": (3, 7)}
    S = len(p.src)
    right = torch.zeros(11, S)
    for (t, field), position in zip(dt.DIGIT_FIELDS, [3, 4, 5, 6, 2, 2, 1, 1]):
        right[t, position] = 1.0                                            # each digit on its own field
    peaks = dt.alignment(right)
    assert peaks.tolist() == [3, 4, 5, 6, 2, 2, 1, 1]
    assert bool(dt.crosses(peaks)) and dt.in_field(peaks[None], [p]).item() == 1.0
    monotone = torch.zeros(11, S)
    monotone[torch.arange(11), torch.arange(11).clamp(max=S - 1)] = 1.0     # row t reads source min(t, 6)
    peaks = dt.alignment(monotone)
    assert peaks.tolist() == [0, 1, 2, 3, 5, 6, 6, 6] and not bool(dt.crosses(peaks))
    assert dt.in_field(peaks[None], [p]).item() == pytest.approx(1 / 8)   # only the year's last digit: row 3 -> 3


def test_exact_match_per_format(data):
    pairs, _, _ = data
    val = pairs["val"][:10]
    hyps = [p.tgt if i % 2 == 0 else list("2000-01-01") for i, p in enumerate(val)]
    overall, by_format = dt.exact_match(hyps, val)
    assert overall == pytest.approx(sum(h == p.tgt for h, p in zip(hyps, val)) / 10)
    assert set(by_format) == {p.fmt for p in val}


def test_source_tokens_of_a_typed_date(data):
    _, src_vocab, _ = data
    assert dt.source_tokens("<fr_FR> 3 juin 1999", src_vocab) == ["<fr_FR>", "3", "juin", "1", "9", "9", "9"]
    with pytest.raises(ValueError, match="locale tag"):
        dt.source_tokens("3 juin 1999", src_vocab)
    with pytest.raises(ValueError, match="never seen 'Brumaire'"):
        dt.source_tokens("<fr_FR> 3 Brumaire 1999", src_vocab)


def test_a_short_training_run_learns_and_a_model_blind_to_the_source_does_not(data):
    pairs, src_vocab, tgt_vocab = data
    train = dt.encode(pairs["train"], src_vocab, tgt_vocab)
    val = pairs["val"]
    scores = {}
    for name, shift in [("reference", shift_right), ("unshifted", lambda tgt_out, bos_id: tgt_out)]:
        torch.manual_seed(0)
        model = TransformerTranslator(len(src_vocab), len(tgt_vocab), d_model=32, num_heads=2, num_encoder_layers=1,
                                      num_decoder_layers=1, d_ff=64, dropout=0.0, max_len=16)
        losses = dt.train(model, train, steps=150, peak_lr=5e-3, warmup_steps=30, shift=shift, progress=False)
        batch = dt.encode(val, src_vocab, tgt_vocab)
        with torch.no_grad():
            predicted = model(batch["src"], shift_right(batch["tgt_out"], model.bos_id)).argmax(-1)
        token_accuracy = (predicted == batch["tgt_out"]).float().mean().item()    # teacher-forced, honest shift
        scores[name] = (losses, dt.exact_match(dt.translate(model, val, src_vocab, tgt_vocab), val)[0], token_accuracy)
    losses, _, token_accuracy = scores["reference"]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    assert token_accuracy > 0.6                                             # learns in 150 steps
    cheat_losses, cheat_em, cheat_accuracy = scores["unshifted"]
    assert cheat_accuracy < token_accuracy
    assert sum(cheat_losses[-10:]) / 10 < sum(losses[-10:]) / 10            # a training loss too good to be true
    assert cheat_em == 0.0
