"""Looking at a trained review classifier: token weights as highlights, erasure tests, a widget, a check.

Attention weights are easy to show and tempting to read as an explanation. Jain & Wallace (2019,
"Attention is not Explanation") found that they often disagree with other measures of importance and
that very different weights can give the same prediction; Wiegreffe & Pinter (2019, "Attention is
not not Explanation") answered that it depends on the model and on the test. :func:`erasure_experiment`
runs the simplest test: delete the token with the highest weight, or a random one, or every token in
turn, and measure how much the prediction moves.
"""
import html

import ipywidgets as widgets
import torch

from ..data import tokenize
from ..apps import classification as cls

LABELS = ("rotten", "fresh")


# --------------------------------------------------------------------------------------------------
# Erasure: how much does the prediction move when one token is deleted?

# --------------------------------------------------------------------------------------------------
# Highlights: token weights over the text

def _colour(w, w_max):
    return f"rgba(255, 140, 0, {0.85 * w / max(w_max, 1e-12):.3f})"


def highlight_html(tokens, attn_weights):
    """HTML that shows each token on a background as dark as its weight (relative to the largest)."""
    w = [float(x) for x in attn_weights]
    if len(w) != len(tokens):
        raise ValueError(f"need one weight per token; got {len(tokens)} tokens and {len(w)} weights")
    top = max(w) if w else 1.0
    spans = [f'<span title="{x:.3f}" style="background:{_colour(x, top)};padding:1px 2px;border-radius:3px">'
             f"{html.escape(t)}</span>" for t, x in zip(tokens, w)]
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
                    bbox=dict(boxstyle="round,pad=0.15", lw=0, fc=(1.0, 0.55, 0.0, 0.85 * wt / max(top, 1e-12))))
            x += len(tok) + 1
        y -= 1.6 * line_h
    ax.set_xlim(-1, width + 1)
    ax.set_ylim(y, 0.8)
    if title:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------------------------------
# The widget

class ReviewExplorer(widgets.VBox):
    """Type a review (or pick one): the model's prediction, with the attention weights highlighted.

    Args:
        model: a trained ``RNNAttentionClassifier``; vocab: its ``Vocab``.
        examples: a list of ``(text, label)`` pairs for the drop-down (label 0 = rotten, 1 = fresh).

    Controls: ``picker`` (Dropdown of examples), ``box`` (Text; typing replaces the review), ``erase``
    (Checkbox: delete the token with the highest weight and predict again). ``text()`` returns the
    readout as plain text; ``set(text=..., erase=...)`` does what the controls do.
    """

    def __init__(self, model, vocab, examples):
        self.model, self.vocab, self.examples = model, vocab, list(examples)
        options = [(f"{i}: [{LABELS[y]}] {t[:60]}", i) for i, (t, y) in enumerate(self.examples)]
        self.picker = widgets.Dropdown(options=options, value=0, description="review",
                                       layout=widgets.Layout(width="640px"))
        self.box = widgets.Text(value=self.examples[0][0], description="or type", continuous_update=False,
                                layout=widgets.Layout(width="640px"))
        self.erase = widgets.Checkbox(value=False, description="erase the highest-weighted token")
        self.readout = widgets.HTML()
        self.readout.add_class("review-readout")
        super().__init__([self.picker, self.box, self.erase, self.readout])
        self.picker.observe(lambda change: setattr(self.box, "value", self.examples[change["new"]][0]), names="value")
        self.box.observe(lambda change: self.update(), names="value")
        self.erase.observe(lambda change: self.update(), names="value")
        self.update()

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
        tokens, p, w = self.analyse()
        verdict = LABELS[int(p >= 0.5)]
        self.readout.value = (f"<b>P(fresh) = {p:.3f} &rarr; {verdict}</b> "
                              f"({len(tokens)} tokens; hover a token for its weight; '?' = not in the vocabulary)"
                              + highlight_html([t + ("" if self.vocab.stoi.get(t) else "?") for t in tokens], w))


# --------------------------------------------------------------------------------------------------
# The check of the exercise

