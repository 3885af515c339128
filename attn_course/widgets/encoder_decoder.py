"""Lesson 18's widget: a text typed in, translated by an encoder-decoder, and its cross-attention drawn.

The widget knows no data set and no model: it takes a ``translate(text)`` callable that returns the
source tokens, the output tokens and the decoder's cross-attention weights of every layer and head,
so the lesson decides the tokens, the decoding and whether an ``<eos>`` row is shown.
"""
import ipywidgets as widgets
import torch

from ..plot import attention_heatmap, new_figure
from .panel import Panel

MEAN = "mean"   # the head selector's value for "mean over heads"


class CrossAttentionExplorer(Panel):
    """Type a source text; see the model's output, the expected one, and one layer's and head's
    cross-attention: which source token each output token attended to.

    A crossing is an output token whose strongest source position (the argmax of its row) lies left
    of the previous output token's: ``argmax_t < argmax_{t-1}``. Copying in order (a monotone
    alignment) has none; writing "3 juin 1999" as "1999-06-03" must cross (month and day come
    after the year in the output but before it in the source). The readout gives the fraction of the
    output tokens after the first that cross, for the chosen layer and head (a final ``eos`` is not
    an output token: its row is drawn, not counted); the chart is that head's (T, S) map with each
    row's strongest source position marked, the output tokens' joined by a line.

    Args:
        translate: ``translate(text) -> (src_tokens, out_tokens, cross_weights)``: S strings, T
            strings (an ``<eos>`` token among them if the caller wants its row drawn), and a float
            tensor (num_layers, num_heads, T, S) of attention weights, each row summing to 1 over S
            (or a sequence of num_layers tensors (num_heads, T, S)). It raises ``ValueError`` with a
            message saying what it expected for text it cannot take; the readout shows that message.
        text: the source text shown first.
        num_layers: the decoder's layers N (the layer slider runs 0 .. N - 1).
        num_heads: the heads H per layer (the head selector offers 0 .. H - 1 and "mean over heads").
        reference: optional ``reference(text) -> str or None``: the expected output, compared with the
            model's (its tokens joined by ``sep``, a final ``eos`` left out); None when unknown.
        sep: what joins the output tokens into the output string ("" for characters, " " for words).
        eos: the end-of-sequence token: drawn as a row, left out of the output string.
        layer: the layer shown first (default: the last); head: the head shown first (an int, or ``"mean"``).

    Attributes:
        text_box (Text), layer_slider (IntSlider), head_dropdown (Dropdown: ints 0 .. H - 1, then
        ``"mean"``), readout (HTML), image (Image), error (why ``translate`` rejected the text, or None).
        ``set(text)`` does what typing does; ``pick(layer, head)`` moves both selectors with one redraw;
        ``translation()`` returns ``(src_tokens, out_tokens, cross_weights (N, H, T, S))``, or None for
        text ``translate`` rejects; ``weights()`` the chosen (T, S) map; ``crossings()`` the readout's
        numbers; ``text()`` the readout as text; ``figure()`` the chart (None for rejected text, the
        chart then left empty).

    Raises:
        ValueError: ``num_layers`` or ``num_heads`` not an int >= 1; ``layer`` or ``head`` out of range;
            ``translate`` returning weights that are not (num_layers, num_heads, T, S) for its T output
            and S source tokens (a bug of the caller's, not of the typed text: it is raised, not shown).

    >>> def translate(text):                          # reverses the words: every step crosses
    ...     src = text.split()
    ...     S = len(src)
    ...     weights = torch.eye(S).flip(0).expand(1, 1, S, S)        # (N=1, H=1, T=S, S)
    ...     return src, src[::-1], weights
    >>> w = CrossAttentionExplorer(translate, "a b c", num_layers=1, num_heads=1,
    ...                            reference=lambda text: " ".join(text.split()[::-1]), sep=" ")
    >>> w.crossings()["fraction"], w.text().splitlines()[1]
    (1.0, 'model:      c b a   correct')
    """

    def __init__(self, translate, text, num_layers, num_heads, reference=None, sep="", eos="<eos>", layer=None,
                 head=0):
        for name, value in (("num_layers", num_layers), ("num_heads", num_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        layer = num_layers - 1 if layer is None else layer
        if not isinstance(layer, int) or not 0 <= layer < num_layers:
            raise ValueError(f"layer must be an int in 0..{num_layers - 1}; got {layer!r}")
        if head != MEAN and (not isinstance(head, int) or not 0 <= head < num_heads):
            raise ValueError(f"head must be an int in 0..{num_heads - 1} or {MEAN!r}; got {head!r}")
        self._translate, self.reference = translate, reference
        self.num_layers, self.num_heads, self.sep, self.eos = num_layers, num_heads, sep, eos
        self._cache, self.error = (None, None), None
        style = {"description_width": "initial"}
        self.text_box = widgets.Text(value=str(text), description="source text", continuous_update=False,
                                     style=style, layout=widgets.Layout(width="420px"))
        self.text_box.add_class("xattn-input")
        self.layer_slider = widgets.IntSlider(value=layer, min=0, max=num_layers - 1,
                                              description="decoder layer", continuous_update=False, style=style,
                                              layout=widgets.Layout(width="360px"))
        self.layer_slider.add_class("xattn-layer")
        self.head_dropdown = widgets.Dropdown(options=[*((f"head {h}", h) for h in range(num_heads)),
                                                       ("mean over heads", MEAN)], value=head, description="head",
                                              style=style, layout=widgets.Layout(width="260px"))
        self.head_dropdown.add_class("xattn-head")
        super().__init__([self.text_box, self.layer_slider, self.head_dropdown], "xattn-readout", "xattn-chart",
                         "760px", rows=[self.text_box, widgets.HBox([self.layer_slider, self.head_dropdown])])

    def set(self, text):
        """Show ``text``, as if typed."""
        self.text_box.value = str(text)

    def pick(self, layer, head):
        """Move the layer slider and the head selector (an int head, or ``"mean"``) with one redraw."""
        with self.hold():
            self.layer_slider.value, self.head_dropdown.value = layer, head

    def translation(self):
        """``(src_tokens, out_tokens, cross_weights (N, H, T, S))`` for the typed text, or None when
        ``translate`` rejects it (its message is then in ``error``). Computed once per text."""
        text = self.text_box.value
        if self._cache[0] == text:
            return self._cache[1]
        self.error = None
        try:
            src, out, weights = self._translate(text)
        except ValueError as exc:
            self.error, result = str(exc), None
        else:
            if not isinstance(weights, torch.Tensor):
                weights = torch.stack([torch.as_tensor(w) for w in weights])   # N x (H, T, S) -> (N, H, T, S)
            weights = weights.detach().cpu().float()
            expected = (self.num_layers, self.num_heads, len(out), len(src))
            if tuple(weights.shape) != expected:
                raise ValueError(f"translate({text!r}) must return cross_weights (num_layers, num_heads, T, S) = "
                                 f"{expected} for {len(out)} output and {len(src)} source tokens; got "
                                 f"{tuple(weights.shape)}")
            result = (list(src), list(out), weights)
        self._cache = (text, result)
        return result

    def weights(self):
        """The chosen layer's and head's (T, S) map (the mean over the heads for ``"mean"``), or None."""
        result = self.translation()
        if result is None:
            return None
        layer = result[2][self.layer_slider.value]                     # (H, T, S)
        head = self.head_dropdown.value
        return layer.mean(dim=0) if head == MEAN else layer[head]      # (H, T, S) -> (T, S)

    def crossings(self):
        """The readout's numbers for the chosen map: ``strongest`` (each row's argmax source position,
        T ints, the ``eos`` row's too), ``count`` (output tokens t >= 1 with strongest[t] <
        strongest[t - 1], a final ``eos`` row left out), ``pairs`` (the output tokens after the first:
        T - 1, or T - 2 with a final ``eos``) and ``fraction`` (count / pairs; nan when there are no
        pairs). None for rejected text."""
        w = self.weights()
        if w is None:
            return None
        strongest = w.argmax(dim=-1).tolist()                           # (T, S) -> (T,)
        counted = strongest[:self._num_output(self.translation()[1])]
        count = sum(b < a for a, b in zip(counted, counted[1:]))
        pairs = max(len(counted) - 1, 0)
        return {"strongest": strongest, "count": count, "pairs": pairs,
                "fraction": count / pairs if pairs > 0 else float("nan")}

    def _num_output(self, out_tokens):
        return len(out_tokens) - 1 if out_tokens and out_tokens[-1] == self.eos else len(out_tokens)

    def output_string(self, out_tokens):
        """The output tokens joined by ``sep``, a final ``eos`` left out."""
        return self.sep.join(out_tokens[:self._num_output(out_tokens)])

    def _head_name(self):
        head = self.head_dropdown.value
        return f"mean over {self.num_heads} heads" if head == MEAN else f"head {head}"

    def expected(self):
        """``(reference output or None, what the readout shows on the reference line)``; ``reference``
        raising ``ValueError`` counts as no reference, its message shown."""
        if self.reference is None:
            return None, "(none given)"
        try:
            expected = self.reference(self.text_box.value)
        except ValueError as exc:
            return None, f"(none: {exc})"
        return expected, "(none)" if expected is None else expected

    def text(self):
        """The readout as plain text: source, model output, reference, and the chosen head's crossings."""
        result = self.translation()
        if result is None:
            return f"cannot translate {self.text_box.value!r}: {self.error}"
        src, out, _ = result
        said, (expected, shown) = self.output_string(out), self.expected()
        verdict = "" if expected is None else ("   correct" if said == expected else "   WRONG")
        c = self.crossings()
        pairs = "  ".join(f"{o} -> {src[j]}" for o, j in zip(out, c["strongest"]))
        return "\n".join([
            f"source:     {' '.join(src)}   ({len(src)} tokens)",
            f"model:      {said}{verdict}",
            f"reference:  {shown}",
            f"layer {self.layer_slider.value}, {self._head_name()}: crossings {c['count']} of {c['pairs']} "
            f"({c['fraction']:.2f}): output tokens whose strongest source token is left of the previous one's",
            f"strongest source token of each output token: {pairs}"])

    def update(self):
        """Redraw; for text ``translate`` rejects, the readout says why and the chart is emptied."""
        super().update()
        rejected = self.translation() is None
        if rejected:
            self.image.value = b""                                      # no chart of the text typed before
        self.image.layout.display = "none" if rejected else None

    def figure(self):
        """The chart: the chosen (T, S) map, output tokens down, source tokens across, each row's
        strongest source position marked (None for rejected text)."""
        result = self.translation()
        if result is None:
            return None
        src, out, _ = result
        w, strongest = self.weights(), self.crossings()["strongest"]
        fig = new_figure((0.5 * len(src) + 3.2, 0.34 * len(out) + 2.0))
        ax = attention_heatmap(w, out, src, ax=fig.add_subplot(), annotate=False,
                               title=f"cross-attention, layer {self.layer_slider.value}, {self._head_name()}")
        n = self._num_output(out)
        ax.plot(strongest[:n], range(n), color="tab:red", marker="o", markersize=4, linewidth=1, alpha=0.8)
        ax.plot(strongest[n:], range(n, len(out)), color="tab:red", marker="o", markersize=4, linestyle="none",
                alpha=0.8)                                              # the eos row: marked, not joined
        ax.set_xlabel("source token (key)")
        ax.set_ylabel("output token (query)")
        return fig
