"""Lesson 14's pictures and widget: an article shaded by its sentence weights, and the summary explorer.

``highlight_article_html`` shades each sentence of an article by its attention weight (HTML),
``weights_figure`` draws the weights as bars, and ``SummaryExplorer`` shows both for a picked article
with the extracted summary and its ROUGE. The model and the metrics live in
``attn_course.apps.summarization``, the lesson's checks of ROUGE-1 and of word attention in
``attn_course.checks.summarization``.
"""
import html

import ipywidgets as widgets
import torch

from ..apps import summarization as sm
from ..data import news
from ..plot import new_figure
from .highlight import highlight_span
from .panel import Panel


def highlight_article_html(article, sentence_weights, word_weights=None, max_sentences=sm.MAX_SENTENCES):
    """The article's sentences as HTML, each shaded by its attention weight (darkest = largest).

    Args:
        article: an article dict (``attn_course.data.news``).
        sentence_weights: (N,) weights of its sentences (entries past its real sentences are ignored).
        word_weights: None, or (N, T) word weights: the words of the top sentence that got more than
            0.4 of its largest word weight are bold.
        max_sentences: how many sentences of the article the model read.

    Returns:
        an HTML string: the title and standfirst, then the sentences, each with its weight in front.
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
                            if max((marks.get(word, 0.0) for word in news.words(tok)), default=0.0) > 0.4 * wtop
                            else html.escape(tok) for tok in sentence.split())
        parts.append(highlight_span(f"<sup>{weight:.2f}</sup> {text}", weight, top) + " ")
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


class SummaryExplorer(Panel):
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
        super().__init__([self.picker], "summary-readout", "summary-chart", "560px", chart_first=True)

    def article(self):
        """The picked article (a dict)."""
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

    def figure(self):
        """The chart: the sentence weights as bars, the oracle sentence outlined."""
        a = self.article()
        return weights_figure(a, self.sentence_weights[self.picker.value], sm.oracle_index(a))

    def update(self):
        """Redraw: the summary and Lead-1 with their ROUGE above the highlighted article; the chart."""
        a, i = self.article(), self.picker.value
        ww = None if self.word_weights is None else self.word_weights[i]
        lines = html.escape(self.text()).split("\n")
        self.show_html(f"<pre style='white-space: pre-wrap; max-width: 900px'>{chr(10).join(lines[2:6])}</pre>"
                       + highlight_article_html(a, self.sentence_weights[i], ww))
        self.show_figure(self.figure())
