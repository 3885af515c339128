"""Lesson 14's checks, highlighted article text and the summary explorer widget.

The checks raise ``attn_course.checks.CheckFailure`` (kinds in ``attn_course.checks``):
``check_rouge_1_f1`` for the ROUGE exercise, ``check_word_attention`` for the hierarchical word
attention of the bug hunt.
"""
import html

import ipywidgets as widgets
import torch

from ..plot import figure_png, new_figure
from ..data import news
from ..apps import summarization as sm

# ---------------------------------------------------------------- checks

# (candidate, reference, expected ROUGE-1 F1, what the case shows): worked by hand.


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
