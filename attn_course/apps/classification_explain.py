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
from . import classification as cls

LABELS = ("rotten", "fresh")


# --------------------------------------------------------------------------------------------------
# Erasure: how much does the prediction move when one token is deleted?

def _delete_each(ids, length):
    """Every copy of ids[:length] with one token deleted: (length, length - 1)."""
    keep = ~torch.eye(length, dtype=torch.bool)                                  # row t drops token t
    return ids[:length].expand(length, length)[keep].view(length, length - 1)


@torch.no_grad()
def erasure_experiment(model, ids, key_padding_mask, seed=0, batch_size=1024):
    """Delete tokens one at a time and measure the change of the predicted class's probability.

    For each review with at least 2 tokens: the prediction ``p`` (probability of the class the model
    predicts), the model's attention weights, and ``p`` again after deleting each token in turn
    (leave-one-out). Then compare the token with the highest attention weight with a random other
    token (drawn with ``torch.Generator().manual_seed(seed)``).

    Args:
        model: an ``RNNAttentionClassifier``; ids (N, S), key_padding_mask (N, S) (**True = padding**).

    Returns:
        dict of 1-D tensors over the M reviews kept (M <= N): ``index`` (row in ``ids``), ``length``,
        ``drop_top`` and ``drop_random`` (p before minus p after deleting the top-weighted / a random
        token; positive = the model became less sure), ``flip_top`` / ``flip_random`` (bool: the
        predicted class changed), ``top_is_most_influential`` (bool: the top-weighted token is the one
        whose deletion moves p the most), and the lists ``attn_weights`` / ``influence`` (each review's
        weights and leave-one-out drops, length n each).
    """
    probs, weights = cls.predict(model, ids, key_padding_mask)
    lengths = (~key_padding_mask).sum(1)
    index = (lengths >= 2).nonzero().squeeze(1)
    variants, owners = [], []
    for i in index.tolist():
        n = int(lengths[i])
        variants.append(_delete_each(ids[i], n))                                 # (n, n - 1)
        owners += [i] * n
    flat = [row for block in variants for row in block]
    from ..data import pad_batch
    erased_ids, erased_mask = pad_batch([row.tolist() for row in flat])
    erased_probs, _ = cls.predict(model, erased_ids, erased_mask, batch_size=batch_size)
    g = torch.Generator().manual_seed(seed)
    out = {k: [] for k in ("drop_top", "drop_random", "flip_top", "flip_random", "top_is_most_influential",
                           "attn_weights", "influence")}
    start = 0
    for i in index.tolist():
        n = int(lengths[i])
        c = int(probs[i].argmax())
        after = erased_probs[start:start + n]                                    # (n, C)
        start += n
        influence = probs[i, c] - after[:, c]                                    # (n,) drop of p per deleted token
        w = weights[i, :n]
        top = int(w.argmax())
        other = int(torch.randint(0, n - 1, (1,), generator=g))
        rand = other + (other >= top)                                            # a random token other than top
        out["drop_top"].append(influence[top])
        out["drop_random"].append(influence[rand])
        out["flip_top"].append(bool(after[top].argmax() != c))
        out["flip_random"].append(bool(after[rand].argmax() != c))
        out["top_is_most_influential"].append(top == int(influence.abs().argmax()))
        out["attn_weights"].append(w)
        out["influence"].append(influence)
    result = {k: (v if k in ("attn_weights", "influence") else torch.tensor(v)) for k, v in out.items()}
    result["index"], result["length"] = index, lengths[index]
    return result


def rank_correlation(a, b):
    """Spearman's rank correlation of two 1-D tensors of equal length (ties broken by position)."""
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()).clamp(min=1e-12))


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

def _pool_cases(thorough):
    """(label, lengths, S, Dv, dtype, score scale)."""
    yield "3 reviews of lengths 6, 3, 1 padded to S=6, Dv=4", [6, 3, 1], 6, 4, torch.float32, 1.0
    if thorough:
        yield "float64, lengths 7, 5, 2, 1 padded to S=7, Dv=5", [7, 5, 2, 1], 7, 5, torch.float64, 1.0
        yield "one token only (S=1)", [1, 1], 1, 3, torch.float32, 1.0
        yield "no padding at all (lengths 4, 4)", [4, 4], 4, 3, torch.float32, 1.0
        yield "large scores (x50), lengths 5, 2", [5, 2], 5, 3, torch.float32, 50.0
        yield "long padding: lengths 2, 9 of S=30, float64", [2, 9], 30, 2, torch.float64, 3.0


def check_attention_pooling(fn, thorough=False, seed=100):
    """``fn(attn_scores (B, S), value (B, S, Dv), key_padding_mask (B, S)) -> (context (B, Dv), attn_weights (B, S))``.

    Checked against :func:`attn_course.apps.classification.attention_pooling`: the tuple, shapes and
    dtypes; padding gets exactly zero weight; the weights of each review sum to 1 over its real
    tokens; the values; and the output does not change when more padding (with huge scores and
    values) is appended.
    """
    from ..checks import CheckFailure, _call, expect_tensor
    g = torch.Generator().manual_seed(seed)
    for case, lengths, S, Dv, dtype, scale in _pool_cases(thorough):
        B = len(lengths)
        attn_scores = (torch.randn(B, S, generator=g, dtype=torch.float64) * scale).to(dtype)
        value = torch.randn(B, S, Dv, generator=g, dtype=torch.float64).to(dtype)
        key_padding_mask = torch.arange(S) >= torch.tensor(lengths)[:, None]        # (B, S), True = padding
        attn_scores[key_padding_mask] = 5.0 * scale                                 # tempting scores on padding
        expected_context, expected_weights = cls.attention_pooling(attn_scores, value, key_padding_mask)
        got = _call(fn, (attn_scores.clone(), value.clone(), key_padding_mask.clone()), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (context, attn_weights); got {type(got).__name__}"
                                       + (" (did you forget `return`?)" if got is None else ""))
        context, attn_weights = got
        for name, actual, expected, legend in (("attn_weights", attn_weights, expected_weights, "(B, S)"),
                                               ("context", context, expected_context, "(B, Dv)")):
            if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape or actual.dtype != dtype:
                expect_tensor(name, actual, expected, case, legend=legend)                # type, shape or dtype
        w = attn_weights.detach().double()
        if not torch.isfinite(w).all():
            b = int((~torch.isfinite(w)).any(1).nonzero()[0])
            if lengths[b] == S:
                raise CheckFailure("finite", f"{case}: review {b} has no padding, and its attn_weights are NaN: "
                                             f"every one of its scores was filled with -inf. key_padding_mask is "
                                             f"True = padding: fill the scores where it is True (is the polarity "
                                             f"inverted?).")
            raise CheckFailure("finite", f"{case}: attn_weights contains NaN or inf. With -inf on padding, "
                                         f"softmax is finite as long as each review has a real token; large "
                                         f"scores overflow exp() unless you subtract the row's maximum "
                                         f"(torch.softmax does).")
        on_padding = w.abs().masked_fill(~key_padding_mask, 0.0).sum(1)                 # (B,) weight on padding
        if (on_padding > 0).any():
            b = int(on_padding.argmax())
            raise CheckFailure("mask", f"{case}: review {b} has {lengths[b]} real tokens and {S - lengths[b]} "
                                       f"padding tokens (key_padding_mask True), which got weight "
                                       f"{on_padding[b].item():.4f} in all; padding must get exactly 0. Fill the "
                                       f"padded scores with -inf before the softmax, and check that the softmax "
                                       f"sees the filled scores.")
        sums = w.sum(1)
        if ((sums - 1).abs() > 1e-4).any():
            b = int((sums - 1).abs().argmax())
            raise CheckFailure("normalisation", f"{case}: the weights of review {b} sum to {sums[b].item():.4f} "
                                                f"over its real tokens; they must sum to 1. Zeroing the padding "
                                                f"after the softmax does not renormalise: mask the scores before it.")
        tol = dict(atol=1e-10, rtol=1e-8) if dtype == torch.float64 else {}
        expect_tensor("attn_weights", attn_weights, expected_weights, case, legend="(B, S)", **tol,
                      hint=lambda a, e: "softmax over the tokens (dim=-1) of the masked scores.")
        expect_tensor("context", context, expected_context, case, legend="(B, Dv)", **tol,
                      hint=lambda a, e: "context = sum over t of attn_weights[:, t] * value[:, t]: "
                                        "(attn_weights.unsqueeze(1) @ value).squeeze(1).")
        more = 3                                                                     # append 3 padding tokens
        longer_scores = torch.cat([attn_scores, torch.full((B, more), 30.0, dtype=dtype)], dim=1)
        longer_value = torch.cat([value, torch.full((B, more, Dv), 1e3, dtype=dtype)], dim=1)
        longer_mask = torch.cat([key_padding_mask, torch.ones(B, more, dtype=torch.bool)], dim=1)
        context2, _ = _call(fn, (longer_scores, longer_value, longer_mask), case + ", 3 more padding tokens")
        expect_tensor("context", context2, expected_context, case + " with 3 more padding tokens (scores 30, "
                      "values 1000): the result must not change", legend="(B, Dv)", **tol)
