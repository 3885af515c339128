"""Lesson 12: the soft-attention step, the caption decoder, its scores and its check."""
import pytest
import torch
from torch.nn import functional as F

from attn_course import checks, scoring, widgets
from attn_course.apps import captioning
from attn_course.broken import soft_attention_v2
from attn_course.checks import CheckFailure


def _inputs(B=3, Hd=5, S=7, C=4, A=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=dtype) for shape in ((B, Hd), (B, S, C), (A, Hd), (A, C), (A,))]


def test_soft_attention_by_hand_in_float64():
    query, features, w_query, w_key, v = _inputs()
    context, attn_weights = captioning.soft_attention(query, features, w_query, w_key, v)
    for b in range(3):
        scores = torch.stack([v @ torch.tanh(w_query @ query[b] + w_key @ features[b, s]) for s in range(7)])
        weights = torch.exp(scores) / torch.exp(scores).sum()
        torch.testing.assert_close(attn_weights[b], weights)
        torch.testing.assert_close(context[b], (weights[:, None] * features[b]).sum(0))


def test_soft_attention_matches_lesson_02_additive_scores():
    query, features, w_query, w_key, v = _inputs(seed=1)
    _, attn_weights = captioning.soft_attention(query, features, w_query, w_key, v)
    scores = scoring.additive_scores(query.unsqueeze(1), features, w_query, w_key, v)      # (B, 1, S)
    torch.testing.assert_close(attn_weights, torch.softmax(scores, -1)[:, 0])


def test_soft_attention_does_not_depend_on_the_batch():
    query, features, w_query, w_key, v = _inputs(B=4, seed=2)
    _, together = captioning.soft_attention(query, features, w_query, w_key, v)
    for b in range(4):
        _, alone = captioning.soft_attention(query[b:b + 1], features[b:b + 1], w_query, w_key, v)
        torch.testing.assert_close(alone[0], together[b])
    _, broken_together = soft_attention_v2(query, features, w_query, w_key, v)
    _, broken_alone = soft_attention_v2(query[:1], features[:1], w_query, w_key, v)
    assert torch.equal(broken_alone, torch.ones_like(broken_alone))
    assert not torch.allclose(broken_together[0], together[0])


def test_soft_attention_refuses_bad_shapes():
    query, features, w_query, w_key, v = _inputs()
    with pytest.raises(ValueError):
        captioning.soft_attention(query, features, w_query.T, w_key, v)
    with pytest.raises(ValueError):
        captioning.soft_attention(query[:2], features, w_query, w_key, v)


def _einsum_version(query, features, w_query, w_key, v):
    hidden = torch.tanh(torch.einsum("ah,bh->ba", w_query, query)[:, None] + torch.einsum("ac,bsc->bsa", w_key, features))
    w = F.softmax(torch.einsum("bsa,a->bs", hidden, v), dim=1)
    return torch.einsum("bs,bsc->bc", w, features), w


def _no_tanh(query, features, w_query, w_key, v):
    w = torch.softmax(((query @ w_query.T).unsqueeze(1) + features @ w_key.T) @ v, -1)
    return (w.unsqueeze(1) @ features).squeeze(1), w


def _context_from_scores(query, features, w_query, w_key, v):
    context, w = captioning.soft_attention(query, features, w_query, w_key, v)
    return (w.unsqueeze(-1) * features).mean(1), w                     # mean instead of sum


def _weights_only(query, features, w_query, w_key, v):
    return captioning.soft_attention(query, features, w_query, w_key, v)[1]


def test_check_passes_on_correct_versions():
    for fn in (captioning.soft_attention, _einsum_version):
        checks.check_soft_attention(fn)
        checks.check_soft_attention(fn, thorough=True)


@pytest.mark.parametrize("fn,kind", [(soft_attention_v2, "normalisation"), (_no_tanh, "values"),
                                     (_context_from_scores, "values"), (_weights_only, "type")])
def test_check_catches_mistakes(fn, kind):
    with pytest.raises(CheckFailure) as err:
        checks.check_soft_attention(fn, thorough=True)
    assert err.value.kind == kind


def test_decoder_shapes_teacher_forcing_and_generation():
    torch.manual_seed(0)
    images = torch.rand(5, 1, 8, 24)
    labels = torch.randint(0, 10, (5, 3))
    for attention in (True, False):
        model = captioning.CaptionDecoder(attention=attention)
        captions = captioning.targets(labels)
        assert captions.shape == (5, 4) and bool((captions[:, 3] == captioning.EOS).all())
        logits, attn = model(images, captions)
        assert logits.shape == (5, 4, len(captioning.WORDS)) and attn.shape == (5, 4, 48)
        torch.testing.assert_close(attn.sum(-1), torch.ones(5, 4))
        words, gen_attn = model.generate(images)
        assert words.shape == (5, 4) and gen_attn.shape == (5, 4, 48)
        if not attention:
            torch.testing.assert_close(gen_attn, torch.full_like(gen_attn, 1 / 48))


def test_caption_scores_and_peak_on_digit():
    labels = torch.tensor([[1, 2, 3], [4, 5, 6]])
    predicted = torch.tensor([[1, 2, 3, 10], [4, 0, 6, 10]])
    assert captioning.caption_scores(predicted, labels) == pytest.approx((5 / 6, 1 / 2))
    attn = torch.zeros(1, 4, 48)
    for i, col in enumerate([1, 9, 10]):                               # digit i covers columns 4i..4i+3; 9 is digit 2
        attn[0, i, 2 * 12 + col] = 1.0
    assert captioning.peak_on_digit(attn).tolist() == [[True, False, True]]


def test_a_short_training_run_learns_where_to_look():
    from attn_course.data import images
    torch.manual_seed(0)
    x, y = images.digit_strips("train", n=1200, seed=0)
    model = captioning.CaptionDecoder()
    losses = captioning.train_captioner(model, x, y, epochs=4, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    tx, ty = images.digit_strips("test", n=100, seed=1)
    words, attn = model.generate(tx)
    assert captioning.caption_scores(words, ty)[0] > 0.5
    assert captioning.peak_on_digit(attn).float().mean() > 0.6


def test_caption_explorer_is_driven_from_python():
    from attn_course.data import images
    x, y = images.digit_strips("test", n=3, seed=1)
    words = captioning.targets(y)
    attn = torch.softmax(torch.randn(3, 4, 48), -1)
    explorer = widgets.CaptionExplorer(x, words, attn, y)
    first = explorer.image.value
    explorer.pick(2)
    assert explorer.slider.value == 2 and explorer.image.value != first
    assert explorer.text().startswith(f"image 2: generated '{images.caption(y[2])} <eos>'")
