"""Lesson 10's pictures and widget: a review classifier's token weights drawn over the text.

``highlight_tokens_html`` (HTML) and ``draw_highlights`` (matplotlib) shade each token by its attention
weight; ``ReviewExplorer`` predicts a typed review and highlights it. The classifier and the erasure
test live in ``attn_course.apps.classification``, the lesson's check of attention pooling in
``attn_course.checks.classification``.
"""
import html

import ipywidgets as widgets
import torch

from ..apps import classification as cls
from ..data import tokenize
from .highlight import highlight_rgba, highlight_span
from .panel import Panel

LABELS = ("rotten", "fresh")


def highlight_tokens_html(tokens, attn_weights):
    """HTML that shows each token on a background as dark as its weight (relative to the largest).

    Args:
        tokens: S strings (escaped here). attn_weights: S weights (a sequence or a (S,) tensor).

    Returns:
        an HTML string: the tokens in a monospace ``<div>``; hovering a token shows its weight.

    Raises:
        ValueError: not one weight per token.

    >>> highlight_tokens_html(["a"], [1.0]).count("<span")
    1
    """
    w = [float(x) for x in attn_weights]
    if len(w) != len(tokens):
        raise ValueError(f"need one weight per token; got {len(tokens)} tokens and {len(w)} weights")
    top = max(w) if w else 1.0
    spans = [highlight_span(html.escape(t), x, top) for t, x in zip(tokens, w)]
    return '<div style="line-height:1.9;font-family:monospace">' + " ".join(spans) + "</div>"


def draw_highlights(rows, ax, width=90, title=None):
    """Draw reviews as text, each token boxed in orange as dark as its weight.

    Args:
        rows: a list of ``(caption, tokens, attn_weights)``; ``caption`` is printed above the review.
        ax: a matplotlib Axes (its ticks and frame are removed); width: characters per line.
    """
    ax.set_axis_off()
    y, line_h = 0.0, 1.0
    for caption, tokens, w in rows:
        ax.text(0, y, caption, fontsize=9, fontweight="bold", va="top", family="monospace")
        y -= line_h
        x, top = 0, float(max(w))
        for tok, wt in zip(tokens, [float(v) for v in w]):
            if x + len(tok) > width:
                x, y = 0, y - line_h
            ax.text(x, y, tok, fontsize=9, va="top", family="monospace",
                    bbox=dict(boxstyle="round,pad=0.15", lw=0, fc=highlight_rgba(wt, top)))
            x += len(tok) + 1
        y -= 1.6 * line_h
    ax.set_xlim(-1, width + 1)
    ax.set_ylim(y, 0.8)
    if title:
        ax.set_title(title)
    return ax


class ReviewExplorer(Panel):
    """Type a review (or pick one): the model's prediction, with the attention weights highlighted.

    Args:
        model: a trained ``RNNAttentionClassifier``; vocab: its ``Vocab``.
        examples: a list of ``(text, label)`` pairs for the drop-down (label 0 = rotten, 1 = fresh).

    Controls: ``picker`` (Dropdown of examples; picking one fills in the box), ``box`` (Text; typing
    replaces the review), ``erase`` (Checkbox: delete the token with the highest weight and predict
    again); ``readout`` (HTML, the prediction and the highlighted review; no chart). ``text()`` returns
    the readout as plain text; ``set(text=..., erase=...)`` does what the controls do.
    """

    def __init__(self, model, vocab, examples):
        self.model, self.vocab, self.examples = model, vocab, list(examples)
        options = [(f"{i}: [{LABELS[y]}] {t[:60]}", i) for i, (t, y) in enumerate(self.examples)]
        self.picker = widgets.Dropdown(options=options, value=0, description="review",
                                       layout=widgets.Layout(width="640px"))
        self.box = widgets.Text(value=self.examples[0][0], description="or type", continuous_update=False,
                                layout=widgets.Layout(width="640px"))
        self.erase = widgets.Checkbox(value=False, description="erase the highest-weighted token")
        self.picker.observe(lambda change: setattr(self.box, "value", self.examples[change["new"]][0]), names="value")
        super().__init__([self.box, self.erase], "review-readout", rows=[self.picker, self.box, self.erase])

    def analyse(self):
        """(tokens, P(fresh), attn_weights) of the current review, after the erasure if it is ticked."""
        tokens = tokenize(self.box.value) or ["<unk>"]
        p, w = self._predict(tokens)
        if self.erase.value and len(tokens) > 1:
            top = int(torch.tensor(w).argmax())
            tokens = tokens[:top] + tokens[top + 1:]
            p, w = self._predict(tokens)
        return tokens, p, w

    def _predict(self, tokens):
        ids = torch.tensor([self.vocab.encode(tokens)])                          # (1, S)
        probs, weights = cls.predict(self.model, ids, torch.zeros_like(ids, dtype=torch.bool))
        return probs[0, 1].item(), weights[0].tolist()

    def text(self):
        """The readout as plain text: P(fresh) and the verdict, then each token with its weight ('?': unknown)."""
        tokens, p, w = self.analyse()
        known = ["" if self.vocab.stoi.get(t) else "?" for t in tokens]
        return (f"P(fresh) = {p:.3f} -> {LABELS[int(p >= 0.5)]}\n" +
                " ".join(f"{t}{k}:{x:.2f}" for t, k, x in zip(tokens, known, w)))

    def set(self, text=None, erase=None):
        """Set the review text and/or the erase box, as a learner would."""
        if text is not None:
            self.box.value = text
        if erase is not None:
            self.erase.value = erase

    def update(self):
        """Redraw the readout: the prediction, then the review with each token highlighted by its weight."""
        tokens, p, w = self.analyse()
        verdict = LABELS[int(p >= 0.5)]
        self.show_html(f"<b>P(fresh) = {p:.3f} &rarr; {verdict}</b> "
                       f"({len(tokens)} tokens; hover a token for its weight; '?' = not in the vocabulary)"
                       + highlight_tokens_html([t + ("" if self.vocab.stoi.get(t) else "?") for t in tokens], w))
