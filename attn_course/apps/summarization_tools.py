"""Lesson 14's checks, highlighted article text and the summary explorer widget.

The checks raise ``attn_course.checks.CheckFailure`` (kinds in ``attn_course.checks``):
``check_rouge_1_f1`` for the ROUGE exercise, ``check_word_attention`` for the hierarchical word
attention of the bug hunt.
"""
import html
import math
import numbers
import random

import ipywidgets as widgets
import torch

from ..checks import CheckFailure, _call, expect_tensor
from ..plot import figure_png, new_figure
from ..data import news
from . import summarization as sm

# ---------------------------------------------------------------- checks

# (candidate, reference, expected ROUGE-1 F1, what the case shows): worked by hand.
_ROUGE_CASES = [
    ("the cat sat on the mat".split(), "the cat is on the mat".split(), 5 / 6,
     "5 of 6 words shared ('the' twice)"),
    ("the the the the".split(), "the cat".split(), 2 * (1 / 4) * (1 / 2) / (1 / 4 + 1 / 2),
     "'the' 4 times in the candidate but once in the reference: count it once (clipping)"),
]
_ROUGE_THOROUGH = [
    ([], "a b".split(), 0.0, "an empty candidate"),
    ("a b".split(), [], 0.0, "an empty reference"),
    ("x y z".split(), "a b c".split(), 0.0, "no word in common"),
    ("pence casts the tie breaking vote".split(), "pence casts the tie breaking vote".split(), 1.0, "identical"),
    ("police said police said".split(), "police said".split(), 2 * (2 / 4) * 1.0 / (2 / 4 + 1.0),
     "repeated words on one side only"),
    ("a a b".split(), "a a a b b".split(), 2 * 1.0 * (3 / 5) / (1.0 + 3 / 5), "clipping on the reference side"),
]


def _rouge_hint(candidate, reference, got):
    overlap_unclipped = sum(1 for w in candidate if w in reference)
    if candidate and reference:
        p, r = overlap_unclipped / len(candidate), overlap_unclipped / len(reference)
        unclipped = 2 * p * r / (p + r) if p + r else 0.0
        clipped_p = sm._overlap(sm._ngrams(candidate, 1), sm._ngrams(reference, 1)) / len(candidate)
        clipped_r = clipped_p * len(candidate) / len(reference)
        if abs(got - unclipped) < 1e-9:
            return " Every repeat of a candidate word counted: clip each word's count at its count in the reference."
        if abs(got - clipped_p) < 1e-9:
            return " That is the precision (overlap / candidate length); ROUGE-1 F1 is 2PR / (P + R)."
        if abs(got - clipped_r) < 1e-9:
            return " That is the recall (overlap / reference length); ROUGE-1 F1 is 2PR / (P + R)."
    return ""


def check_rouge_1_f1(fn, thorough=False, seed=140):
    """Check ``fn(candidate, reference) -> float``, ROUGE-1 F1 of two token lists, on worked examples.

    ``thorough`` adds empty sides, no overlap, identical lists, clipping on either side and 200 random
    pairs compared with ``summarization.rouge_1_f1``. Raises ``CheckFailure`` (type, error, values).
    """
    cases = list(_ROUGE_CASES)
    if thorough:
        cases += _ROUGE_THOROUGH
        rng = random.Random(seed)
        words = "the a police said vote pence trump court ban of in on".split()
        for _ in range(200):
            cand = [rng.choice(words) for _ in range(rng.randint(1, 12))]
            ref = [rng.choice(words) for _ in range(rng.randint(1, 12))]
            cases.append((cand, ref, sm.rouge_1_f1(cand, ref), "random word lists"))
    for candidate, reference, expected, what in cases:
        case = f"candidate {candidate}, reference {reference} ({what})"
        got = _call(fn, (list(candidate), list(reference)), case)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            raise CheckFailure("type", f"{case}: ROUGE-1 F1 must be a number (float); got {type(got).__name__}"
                                       + (" (did you forget `return`?)" if got is None else ""))
        if not math.isfinite(got) or abs(got - expected) > 1e-6:
            raise CheckFailure("values", f"{case}: expected ROUGE-1 F1 {expected:.4f}; got {got:.4f}."
                                         + _rouge_hint(candidate, reference, got))


def _word_attention_cases(thorough, g):
    """(label, word_scores, h_words, key_padding_mask)."""
    def make(B, N, T, D, lengths, dtype=torch.float32, scale=1.0):
        scores = (torch.randn(B, N, T, generator=g, dtype=torch.float64) * scale).to(dtype)
        h_words = torch.randn(B, N, T, D, generator=g, dtype=torch.float64).to(dtype)
        mask = torch.ones(B, N, T, dtype=torch.bool)
        for b, row in enumerate(lengths):
            for i, n_words in enumerate(row):
                mask[b, i, :n_words] = False
        return scores, h_words, mask
    cases = [("2 articles x 3 sentences x 4 words, padding words", *make(2, 3, 4, 5, [[4, 2, 3], [1, 4, 2]]))]
    if thorough:
        cases += [("a padding sentence (all its words are padding)", *make(2, 3, 5, 4, [[5, 3, 0], [2, 0, 0]])),
                  ("float64, N=4, T=6", *make(3, 4, 6, 3, [[6, 1, 2, 3], [4, 4, 0, 0], [1, 1, 1, 1]], torch.float64)),
                  ("large scores (x 50)", *make(1, 3, 4, 2, [[4, 3, 2]], scale=50.0)),
                  ("no padding at all", *make(2, 2, 3, 4, [[3, 3], [3, 3]]))]
    return cases


def check_word_attention(fn, thorough=False, seed=141):
    """Check ``fn(word_scores (B, N, T), h_words (B, N, T, D), key_padding_mask (B, N, T))``.

    Expects ``(sentence_vectors (B, N, D), word_weights (B, N, T))`` equal to
    ``summarization.word_attention``: a softmax within each sentence, padding words at weight 0, a
    padding sentence all zeros. Raises ``CheckFailure`` (type, shape, dtype, finite, mask,
    normalisation, values, error).
    """
    g = torch.Generator().manual_seed(seed)
    for case, scores, h_words, mask in _word_attention_cases(thorough, g):
        got = _call(fn, (scores.clone(), h_words.clone(), mask.clone()), case)
        expected_vectors, expected_weights = sm.word_attention(scores, h_words, mask)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (sentence_vectors, word_weights); got "
                                       f"{type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, tuple) else ""))
        vectors, weights = got
        for name, actual, expected, legend in (("word_weights", weights, expected_weights, "(B, N, T)"),
                                               ("sentence_vectors", vectors, expected_vectors, "(B, N, D)")):
            if (not isinstance(actual, torch.Tensor) or actual.shape != expected.shape
                    or actual.dtype != expected.dtype):
                expect_tensor(name, actual, expected, case, legend=legend)       # raises type, shape or dtype
        if not torch.isfinite(weights).all():
            raise CheckFailure("finite", f"{case}: word_weights contain NaN or inf. A sentence with no real word "
                                         f"makes a softmax over only -inf: give it zero weights.")
        if (weights[mask].abs() > 1e-6).any():
            b, i, t = (weights.abs() > 1e-6).logical_and(mask).nonzero()[0].tolist()
            raise CheckFailure("mask", f"{case}: padding word {t} of sentence {i} in article {b} has weight "
                                       f"{weights[b, i, t].item():.4f}; padding (key_padding_mask True) must get 0.")
        real_sentence = ~mask.all(-1)                                             # (B, N)
        sums = weights.sum(-1)                                                    # (B, N)
        bad = real_sentence & ((sums - 1).abs() > 1e-4)
        if bad.any():
            b, i = bad.nonzero()[0].tolist()
            article_sum = weights[b].sum().item()
            msg = (f"{case}: the word weights of each sentence must sum to 1 over its T words (a softmax within "
                   f"the sentence, dim=-1); sentence {i} of article {b} sums to {sums[b, i].item():.4f}.")
            if abs(article_sum - 1) < 1e-4:
                msg += (" The weights of the whole article sum to 1 instead: the softmax ran across all the "
                        "article's words, so sentences compete for one unit of weight.")
            raise CheckFailure("normalisation", msg)
        if (weights[~real_sentence].abs() > 1e-6).any():
            raise CheckFailure("mask", f"{case}: a padding sentence must get all-zero word weights.")
        expect_tensor("word_weights", weights, expected_weights, case, legend="(B, N, T)")
        expect_tensor("sentence_vectors", vectors, expected_vectors, case, legend="(B, N, D)")


# ---------------------------------------------------------------- pictures

def _shade(weight, top):
    return f"rgba(255, 170, 0, {0.08 + 0.82 * weight / top:.2f})" if top > 0 else "transparent"


def highlight_html(article, sentence_weights, word_weights=None, max_sentences=sm.MAX_SENTENCES):
    """The article's sentences as HTML, each shaded by its attention weight (darkest = largest).

    With ``word_weights`` (N, T) the words of the top sentence that got at least 0.4 of its largest word
    weight are bold. Returns an HTML string; the weight of each sentence is written in front of it.
    """
    sents = sm.sentences(article, max_sentences)
    w = torch.as_tensor(sentence_weights)[:len(sents)].tolist()
    top = max(w) if w else 0.0
    best = max(range(len(w)), key=w.__getitem__) if w else -1
    parts = [f"<div style='font-family: sans-serif; font-size: 13px; line-height: 1.5; max-width: 900px'>"
             f"<b>title:</b> {html.escape(article['title'])}<br>"
             f"<b>standfirst:</b> {html.escape(article['standfirst']) or '<i>(none)</i>'}<hr>"]
    for i, (sentence, weight) in enumerate(zip(sents, w)):
        text = html.escape(sentence)
        if word_weights is not None and i == best:                            # bold the words the model looked at
            ww = torch.as_tensor(word_weights)[i].tolist()
            marks = dict(zip(article["words"][i], ww))
            wtop = max(ww) or 1.0
            text = " ".join(f"<b>{html.escape(tok)}</b>"
                            if max((marks.get(w, 0.0) for w in news.words(tok)), default=0.0) > 0.4 * wtop
                            else html.escape(tok) for tok in sentence.split())
        parts.append(f"<span style='background: {_shade(weight, top)}; padding: 1px 2px'>"
                     f"<sup>{weight:.2f}</sup> {text}</span> ")
    parts.append("</div>")
    return "".join(parts)


def weights_figure(article, sentence_weights, oracle=None, title=None):
    """A bar chart of the sentence weights (one bar per sentence); the oracle sentence outlined. Returns a Figure."""
    n = len(sm.sentences(article))
    w = torch.as_tensor(sentence_weights)[:n]
    fig = new_figure((6.4, 2.6))
    ax = fig.add_subplot()
    bars = ax.bar(range(n), w.numpy(), color="C1")
    if oracle is not None:
        bars[oracle].set_edgecolor("black")
        bars[oracle].set_linewidth(2)
    ax.set_xticks(range(n))
    ax.set_xlabel("sentence (0 = lead)")
    ax.set_ylabel("attention weight")
    ax.set_ylim(0, 1)
    ax.set_title(title or "sentence attention (black edge = oracle sentence)", fontsize=10)
    return fig


# ---------------------------------------------------------------- the widget

class SummaryExplorer(widgets.VBox):
    """Pick an article: see its sentence weights, the extracted summary, and ROUGE against the title/subtitle.

    Args:
        articles: a list of article dicts (``attn_course.data.news``).
        sentence_weights: (A, N) tensor of the model's sentence weights for those articles.
        word_weights: (A, N, T) tensor of word weights, or None.
        index: the article shown first.

    Attributes:
        picker (Dropdown, value = article index), readout (HTML, the highlighted article),
        image (Image, the bar chart); ``text()`` the readout as plain text; ``summary()`` the extracted
        sentence.

    Raises:
        ValueError: weights and articles of different lengths, or ``index`` out of range.
    """

    def __init__(self, articles, sentence_weights, word_weights=None, index=0):
        if len(articles) != len(sentence_weights) or (word_weights is not None and len(word_weights) != len(articles)):
            raise ValueError(f"{len(articles)} articles need as many rows of weights; got {len(sentence_weights)}")
        if not 0 <= index < len(articles):
            raise ValueError(f"index must lie in 0..{len(articles) - 1}; got {index}")
        self.articles, self.sentence_weights, self.word_weights = articles, sentence_weights, word_weights
        options = [(f"{i}: {a['title'][:70]}", i) for i, a in enumerate(articles)]
        self.picker = widgets.Dropdown(options=options, value=index, description="article",
                                       layout=widgets.Layout(width="640px"))
        self.picker.add_class("summary-article-picker")
        self.readout = widgets.HTML()
        self.readout.add_class("summary-readout")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="560px"))
        self.image.add_class("summary-chart")
        super().__init__([self.picker, self.image, self.readout])
        self.picker.observe(lambda change: self.update(), names="value")
        self.update()

    def article(self):
        return self.articles[self.picker.value]

    def weights(self):
        """The current article's sentence weights over its real sentences, (n,)."""
        return self.sentence_weights[self.picker.value][:len(sm.sentences(self.article()))]

    def summary(self):
        """The sentence with the largest weight."""
        a = self.article()
        return sm.sentences(a)[sm.pick_top(self.weights(), a, 1)[0]]

    def text(self):
        """Title, subtitle, the summary and Lead-1 with their ROUGE-1/2/L F1, the weights (2 decimals)."""
        a, ref = self.article(), sm.reference_text(self.article())
        model, lead = self.summary(), sm.sentences(a)[0]
        fmt = lambda s: " ".join(f"{k.upper()} {100 * v:5.1f}" for k, v in sm.rouge(s, ref).items())
        return (f"title:      {a['title']}\nstandfirst: {a['standfirst'] or '(none)'}\n"
                f"summary (top-weighted sentence {sm.pick_top(self.weights(), a, 1)[0]}): {model}\n"
                f"  {fmt(model)}\nLead-1: {lead}\n  {fmt(lead)}\n"
                f"oracle sentence: {sm.oracle_index(a)}\n"
                "sentence weights: " + " ".join(f"{w:.2f}" for w in self.weights().tolist()))

    def update(self):
        a, i = self.article(), self.picker.value
        ww = None if self.word_weights is None else self.word_weights[i]
        lines = html.escape(self.text()).split("\n")
        self.readout.value = (f"<pre style='white-space: pre-wrap; max-width: 900px'>{chr(10).join(lines[2:6])}</pre>"
                              + highlight_html(a, self.sentence_weights[i], ww))
        self.image.value = figure_png(weights_figure(a, self.sentence_weights[i], sm.oracle_index(a)))
