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


def test_a_short_training_run_learns_where_to_look():
    from attn_course.data import images
    torch.manual_seed(0)
    x, y = images.digit_strips("train", n=1200, seed=0)
    model = captioning.CaptionDecoder()
    losses = captioning.train_captioner(model, x, y, epochs=4, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    tx, ty = images.digit_strips("test", n=100, seed=1)
    words, attn = model.generate(tx)
    assert captioning.caption_accuracy(words, ty)[0] > 0.5
    boxes = torch.stack([torch.arange(3) * 8, torch.arange(3) * 8 + 8], -1).expand(100, 3, 2)   # digit i: columns 8i..8i+7
    in_box, _ = captioning.attention_in_box(attn, boxes, torch.full((100,), 3), model.encoder.grid)
    assert in_box > 0.6


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


# ---------------------------------------------------------------- captions of varying length

from attn_course.data import images as image_data


def _source_index(crop, digit_images):
    """Indices of the digit images equal to ``crop`` (1, 8, 8)."""
    return (digit_images == crop).flatten(1).all(1).nonzero().flatten().tolist()


def test_digit_canvases_layout_boxes_hold_their_digit_and_nothing_else():
    x, y, lengths, boxes = image_data.digit_canvases("test", n=200, min_digits=2, max_digits=5, width=56, seed=3)
    assert x.shape == (200, 1, 8, 56) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (200, 5) and lengths.shape == (200,) and boxes.shape == (200, 5, 2)
    digit_images, digit_labels = image_data.digits("test")
    for b in range(200):
        k = int(lengths[b])
        assert 2 <= k <= 5
        assert (y[b, k:] == -1).all() and (boxes[b, k:] == -1).all() and (y[b, :k] >= 0).all()
        starts, ends = boxes[b, :k, 0], boxes[b, :k, 1]
        assert (ends - starts == 8).all() and starts[0] >= 0 and ends[-1] <= 56
        assert (ends[:-1] <= starts[1:]).all()                       # left to right, gaps >= 0, no overlap
        outside = torch.ones(56, dtype=torch.bool)
        for i in range(k):
            crop = x[b, :, :, starts[i]:ends[i]]
            sources = _source_index(crop, digit_images)               # the crop is one real test digit...
            assert sources and int(y[b, i]) in digit_labels[sources].tolist()   # ... with the right label
            outside[starts[i]:ends[i]] = False
        assert x[b, 0][:, outside].abs().sum() == 0                   # no ink outside the boxes


def test_digit_canvases_vary_offsets_gaps_and_lengths():
    x, y, lengths, boxes = image_data.digit_canvases("train", n=2000, min_digits=2, max_digits=5, width=56, seed=0)
    counts = torch.bincount(lengths, minlength=6)[2:]
    assert counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500    # k uniform in 2..5
    for k in (2, 5):
        for i in range(k):
            starts = boxes[lengths == k, i, 0]
            assert len(starts.unique()) >= (20 if k == 2 else 8)     # digit i's column is not fixed by i
    gaps = boxes[:, 1:, 0] - boxes[:, :-1, 1]
    real_gaps = gaps[(torch.arange(4) + 1 < lengths[:, None])]
    assert (real_gaps == 0).any() and (real_gaps >= 8).any()
    assert (boxes[:, 0, 0] == 0).any() and (boxes[:, 0, 0] >= 16).any()   # left offsets vary


def test_digit_canvases_are_deterministic_and_keep_splits_apart():
    a = image_data.digit_canvases("test", n=30, seed=5)
    b = image_data.digit_canvases("test", n=30, seed=5)
    c = image_data.digit_canvases("test", n=30, seed=6)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    train_images, _ = image_data.digits("train")
    test_images, _ = image_data.digits("test")
    x, y, lengths, boxes = image_data.digit_canvases("train", n=60, seed=1, digit_subset=slice(1000, None))
    for canvases, pool in ((a, test_images), ((x, y, lengths, boxes), train_images[1000:])):
        x_, _, lengths_, boxes_ = canvases
        for n in range(len(x_)):
            for i in range(int(lengths_[n])):
                crop = x_[n, :, :, boxes_[n, i, 0]:boxes_[n, i, 1]]
                assert _source_index(crop, pool), (n, i)
    only_train = [i for i in range(len(train_images)) if not _source_index(train_images[i], test_images)]
    assert only_train                                                  # some train digits never appear in test
    crops = torch.stack([a[0][n, :, :, a[3][n, i, 0]:a[3][n, i, 1]] for n in range(30) for i in range(int(a[2][n]))])
    assert not any(torch.equal(crop, train_images[j]) for crop in crops for j in only_train[:200])


@pytest.mark.parametrize("kwargs", [dict(split="val"), dict(n=0), dict(min_digits=3, max_digits=2),
                                    dict(max_digits=5, width=39), dict(min_digits=0),
                                    dict(digit_subset=slice(5, 5))])
def test_digit_canvases_refuse_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        image_data.digit_canvases(**kwargs)


def test_targets_put_eos_after_the_kth_word_and_pad_after():
    labels = torch.tensor([[3, 1, 4], [2, 7, -1], [5, -1, -1]])
    assert captioning.targets(labels).tolist() == [[3, 1, 4, 10], [2, 7, 10, -1], [5, 10, -1, -1]]
    with pytest.raises(ValueError):
        captioning.targets(torch.tensor([[3, -1, 4]]))


def test_caption_accuracy_counts_missing_and_extra_words_as_wrong():
    E, P = captioning.EOS, captioning.PAD
    labels = torch.tensor([[3, 1, P], [2, 7, 5], [4, P, P], [6, 6, P]])
    predicted = torch.tensor([[3, 1, E, P],                             # right: 2 of 2, exact
                              [2, 7, E, P],                             # one word missing: 2 of 3
                              [4, 8, E, P],                             # one extra word: 1 of 2
                              [6, 6, 6, 6]])                            # no <eos>: 4 words, 2 right of 4
    assert captioning.caption_lengths(predicted).tolist() == [2, 2, 2, 4]
    word, exact = captioning.caption_accuracy(predicted, labels)
    assert word == pytest.approx((2 + 2 + 1 + 2) / (2 + 3 + 2 + 4)) and exact == pytest.approx(1 / 4)
    assert captioning.caption_accuracy(captioning.targets(labels), labels) == (1.0, 1.0)
    assert captioning.caption_text(predicted[1]) == "two seven"


def _in_box_by_hand(attn, boxes, lengths, rows, cols, width):
    """A loop version: the peak's column, its pixel centre, inside [x_start, x_end)?"""
    hits, total = 0, 0
    for b in range(attn.shape[0]):
        for t in range(int(lengths[b])):
            total += 1
            row = attn[b, t]
            if row.sum() == 0:
                continue
            c = int(row.argmax()) % cols
            centre = (c + 0.5) * width / cols
            hits += int(boxes[b, t, 0] <= centre < boxes[b, t, 1])
    return hits / total


def test_attention_in_box_on_hand_built_maps_and_at_the_boundaries():
    rows, cols = 4, 28                                                 # a 56-pixel canvas: column c centred at 2c + 1
    boxes = torch.tensor([[[3, 11], [11, 19], [-1, -1]]])             # odd start: centres 3, 5, 7, 9 are in box 0
    assert captioning.column_centres((rows, cols), 56)[[1, 4, 5]].tolist() == [3.0, 9.0, 11.0]
    cases = {1: (True, False), 4: (True, False), 0: (False, False), 5: (False, True), 8: (False, True),
             9: (False, False)}                                        # centre 19 is outside [11, 19)
    for c, (in_first, in_second) in cases.items():
        attn = torch.zeros(1, 3, rows, cols)
        attn[0, 0, 3, c] = attn[0, 1, 2, c] = 1.0                      # both words peak at column c, rows 3 and 2
        attn = attn.flatten(2)                                         # (1, 3, S), s = row * cols + c
        fraction, in_box = captioning.attention_in_box(attn, boxes, torch.tensor([2]), (rows, cols))
        assert in_box.tolist() == [[in_first, in_second, False]], c
        assert fraction == pytest.approx((in_first + in_second) / 2)
    for start in range(0, 48):                                         # every 8-pixel box holds exactly 4 centres
        centres = captioning.column_centres((rows, cols), 56)
        assert int(((start <= centres) & (centres < start + 8)).sum()) == 4


def test_attention_in_box_matches_a_loop_and_ignores_padding_and_empty_rows():
    x, y, lengths, boxes = image_data.digit_canvases("test", n=40, width=56, seed=4)
    g = torch.Generator().manual_seed(0)
    attn = torch.softmax(3 * torch.randn(40, 6, 4 * 28, generator=g), -1)
    attn[::5, 1] = 0.0                                                 # a caption that ended early: no map
    fraction, in_box = captioning.attention_in_box(attn, boxes, lengths, (4, 28))
    assert fraction == pytest.approx(_in_box_by_hand(attn, boxes, lengths, 4, 28, 56))
    assert not in_box[torch.arange(5) >= lengths[:, None]].any() and not in_box[::5, 1].any()
    with pytest.raises(ValueError):
        captioning.attention_in_box(attn[..., :100], boxes, lengths, (4, 28))


def test_the_blind_schedules():
    lengths = torch.tensor([2, 4])
    attn = captioning.left_to_right_schedule(lengths, (4, 28))        # (2, 4, 112)
    assert attn.shape == (2, 4, 112)
    torch.testing.assert_close(attn.sum(-1), torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]]))
    columns = attn.view(2, 4, 4, 28).sum(2).argmax(-1)                 # pixel (t + 0.5) * 56 / k -> column
    assert columns[0, :2].tolist() == [7, 21] and columns[1].tolist() == [3, 10, 17, 24]
    boxes = torch.tensor([[[0, 8], [20, 28]], [[2, 10], [20, 28]], [[4, 12], [30, 38]]])
    table = captioning.best_fixed_columns(boxes, torch.tensor([2, 2, 2]), (4, 28))
    assert table.shape == (3, 2) and table[2].tolist() == [2, 10]     # centres 5 and 21 lie in most boxes
    fixed = captioning.left_to_right_schedule(torch.tensor([2, 2, 2]), (4, 28), table)
    fraction, _ = captioning.attention_in_box(fixed, boxes, torch.tensor([2, 2, 2]), (4, 28))
    assert fraction == pytest.approx(5 / 6)                            # misses only box [30, 38)


def test_per_box_reference_crops_the_true_boxes():
    x, y, lengths, boxes = image_data.digit_canvases("test", n=50, width=56, seed=7)
    digit_images, digit_labels = image_data.digits("test")
    seen = []

    def oracle(crops):
        seen.append(crops.shape)
        return torch.tensor([int(digit_labels[_source_index(crop, digit_images)[0]]) for crop in crops])

    words = captioning.per_box_reference(oracle, x, boxes, lengths)
    assert seen == [(int(lengths.sum()), 1, 8, 8)]
    assert torch.equal(words, captioning.targets(y)) and captioning.caption_accuracy(words, y) == (1.0, 1.0)
    zeros = captioning.per_box_reference(lambda crops: torch.zeros(len(crops), dtype=torch.long), x, boxes, lengths)
    assert captioning.caption_accuracy(zeros, y)[0] == pytest.approx(float((y == 0).sum() / lengths.sum()))


def test_encoder_takes_any_even_width():
    for width in (48, 56):
        model = captioning.CaptionDecoder(width=width)
        assert model.encoder.grid == (4, width // 2)
        logits, attn = model(torch.rand(2, 1, 8, width), torch.tensor([[1, 2, 10], [3, 10, -1]]))
        assert logits.shape == (2, 3, 12) and attn.shape == (2, 3, 4 * width // 2)
    with pytest.raises(ValueError):
        captioning.Encoder(width=25)
    with pytest.raises(ValueError):
        captioning.CaptionDecoder(attention=False, context="max")


def test_training_loss_ignores_the_padding():
    import copy
    x, y, lengths, boxes = image_data.digit_canvases("train", n=24, width=48, seed=2)
    torch.manual_seed(0)
    model = captioning.CaptionDecoder(width=48)
    before = copy.deepcopy(model).train()
    losses = captioning.train_captioner(model, x, y, epochs=1, batch_size=24, progress=False)   # one step
    captions = captioning.targets(y)                                   # (24, 6): PAD after <eos>
    logits, _ = before(x, captions)
    log_p = torch.log_softmax(logits, -1)
    real = captions != captioning.PAD
    nll = -log_p[real.nonzero(as_tuple=True) + (captions[real],)]      # one term per real word and <eos>
    assert losses[0] == pytest.approx(nll.mean().item(), rel=1e-4)
    every_position = F.cross_entropy(logits.flatten(0, 1), captions.clamp(min=0).flatten()).item()
    assert abs(losses[0] - every_position) > 1e-3


def test_greedy_decoding_stops_at_eos():
    model = captioning.CaptionDecoder(width=48)
    script = torch.tensor([[4, 10, 3, 3, 3, 3], [1, 2, 3, 10, 5, 5], [7, 8, 10, 9, 9, 9]])   # ends at 1, 3, 2
    calls = []

    def scripted_step(word, h, features, fixed=None):
        t = len(calls)
        calls.append(t)
        logits = F.one_hot(script[:, t], len(captioning.WORDS)).float()
        return logits, h, torch.full(features.shape[:2], 1.0 / features.shape[1])

    model._step = scripted_step
    words, attn = model.generate(torch.rand(3, 1, 8, 48), max_len=6, stop_at_eos=True)
    P, E = captioning.PAD, captioning.EOS
    assert words.tolist() == [[4, E, P, P, P, P], [1, 2, 3, E, P, P], [7, 8, E, P, P, P]]
    assert len(calls) == 4                                             # stops once the last caption has ended
    assert (attn[0, 2:] == 0).all() and (attn[1, :4] > 0).all() and (attn[2, 3:] == 0).all()
    calls.clear()
    words, _ = model.generate(torch.rand(3, 1, 8, 48), max_len=6)      # stop_at_eos=False: writes every step
    assert len(calls) == 6 and torch.equal(words, script)


def test_flatten_baseline_sees_digit_order_and_mean_pool_does_not():
    digit_images, _ = image_data.digits("test")
    image = torch.zeros(1, 1, 8, 56)
    image[..., 12:20], image[..., 36:44] = digit_images[0], digit_images[1]
    swapped = torch.zeros(1, 1, 8, 56)                                 # the same two digits, other order
    swapped[..., 12:20], swapped[..., 36:44] = digit_images[1], digit_images[0]
    contexts = {}
    for context in ("mean", "flatten"):
        torch.manual_seed(0)
        model = captioning.CaptionDecoder(width=56, attention=False, context=context).eval()
        with torch.no_grad():
            contexts[context] = [model._start(model.encoder(x))[1] for x in (image, swapped)]   # (1, C) each
    relative_change = {name: ((a - b).norm() / a.norm()).item() for name, (a, b) in contexts.items()}
    assert relative_change["mean"] < 1e-5                              # a sum over positions forgets the order
    assert relative_change["flatten"] > 0.05                           # concatenated positions keep it


# ------------------------------------------------------------------ check_greedy_decode (lesson 12, Ex 1)

def test_greedy_decode_equals_generate_and_a_step_by_step_loop():
    torch.manual_seed(0)
    model = captioning.CaptionDecoder(width=16).eval()
    images = torch.randn(5, 1, 8, 16)
    words, weights = model.generate(images, max_len=6, stop_at_eos=True)
    for b in range(5):                                              # one image at a time, by hand
        h, features, fixed = model.start(images[b:b + 1])
        state, word = (h, features, fixed), torch.tensor([captioning.BOS])
        for t in range(6):
            logits, state, attn_weights = model.step(word, state)
            word = logits.argmax(-1)
            assert words[b, t] == word.item()
            torch.testing.assert_close(weights[b, t], attn_weights[0], atol=1e-5, rtol=1e-4)
            if word.item() == captioning.EOS:
                assert (words[b, t + 1:] == captioning.PAD).all() and (weights[b, t + 1:] == 0).all()
                break


def test_greedy_decode_refuses_bad_sizes():
    with pytest.raises(ValueError, match="max_len >= 1"):
        captioning.greedy_decode(lambda w, s: None, None, 2, 0)


def test_check_greedy_decode_passes_the_reference():
    checks.check_greedy_decode(captioning.greedy_decode)
    checks.check_greedy_decode(captioning.greedy_decode, thorough=True)


def test_check_greedy_decode_refuses_the_reference_when_armed():
    from attn_course.checks import tripwire
    tripwire.enable(True)
    with pytest.raises(checks.CheckFailure, match=r"\[reference\]"):
        checks.check_greedy_decode(captioning.greedy_decode)


@pytest.mark.parametrize("slip,needle", [("no_stop", "write PAD"), ("eos", "<eos> itself"), ("bos", "Feed back"),
                                         ("state", "Pass the state"), ("first_end", "EVERY caption"),
                                         ("weights", "must be 0")])
def test_check_greedy_decode_names_each_slip(slip, needle):
    from attn_course.checks.captioning import _decode_slip
    fn = lambda step, state, batch_size, max_len: _decode_slip(step, state, batch_size, max_len, slip)
    with pytest.raises(checks.CheckFailure, match=r"\[values\]") as err:
        checks.check_greedy_decode(fn, thorough=True)
    assert needle in str(err.value)


def test_check_greedy_decode_catches_wrong_types():
    with pytest.raises(checks.CheckFailure, match=r"\[dtype\]"):
        checks.check_greedy_decode(lambda step, state, b, m: (_loop(step, state, b, m)[0].float(),
                                                              _loop(step, state, b, m)[1]))
    with pytest.raises(checks.CheckFailure, match=r"\[type\]"):
        checks.check_greedy_decode(lambda step, state, b, m: _loop(step, state, b, m)[0])
    with pytest.raises(checks.CheckFailure, match=r"\[error\]"):
        checks.check_greedy_decode(lambda step, state, b, m: step(torch.zeros(b + 1, dtype=torch.long), state))


def _loop(step, state, batch_size, max_len):
    from correct_variants import greedy_decode_preallocated
    return greedy_decode_preallocated(step, state, batch_size, max_len)
