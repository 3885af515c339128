"""Lesson 07's widget: padding and causal masks, and the wrong polarity, on one score matrix."""
import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from ..attention import causal_mask, key_padding_to_attn_mask, masked_softmax, padding_mask
from ..plot import attention_heatmap
from .panel import Panel


class MaskExplorer(Panel):
    """Mask toggles over one sentence's self-attention: padding length, causal on/off, mask polarity.

    The last ``n`` positions (the slider) are padding: ``key_padding_mask`` (1, S), True = padding. It is
    converted to ``attn_mask`` (True = may attend) with ``key_padding_to_attn_mask``, combined with
    ``causal_mask(S)`` when the checkbox is on, and ``attn_weights = masked_softmax(attn_scores, attn_mask)``
    is drawn as a heatmap: forbidden cells grey. The polarity switch passes
    ``key_padding_mask`` itself where ``attn_mask`` is expected, the classic mix-up of the two conventions.

    Args:
        attn_scores: (S, S) float tensor, the scores of the sentence's tokens against each other.
        labels: S token strings; padded positions are shown as ``<pad>``.
        num_padding: initial number of padding positions (0 .. S-1).
        causal: initial state of the causal switch. wrong_polarity: initial state of the polarity switch.

    Attributes:
        slider (IntSlider), causal_box, polarity_box (Checkbox), readout (HTML), image (Image);
        ``attn_mask()``, ``weights()`` return the current (S, S) tensors, ``text()`` the readout as text;
        ``set(num_padding, causal, wrong_polarity)`` moves several controls and redraws once.

    Raises:
        ValueError: ``attn_scores`` not square 2-D, ``labels`` not of length S, ``num_padding`` outside 0..S-1.
    """

    def __init__(self, attn_scores, labels, num_padding=0, causal=False, wrong_polarity=False):
        attn_scores = torch.as_tensor(attn_scores).detach().cpu().float()
        if attn_scores.dim() != 2 or attn_scores.shape[0] != attn_scores.shape[1]:
            raise ValueError(f"attn_scores must be (S, S), one sentence against itself; got {tuple(attn_scores.shape)}")
        S = attn_scores.shape[0]
        if len(labels) != S:
            raise ValueError(f"labels needs {S} entries; got {len(labels)}")
        if not 0 <= num_padding < S:
            raise ValueError(f"num_padding must lie in 0..{S - 1}; got {num_padding}")
        self.attn_scores, self.labels = attn_scores, list(labels)
        self.slider = widgets.IntSlider(value=num_padding, min=0, max=S - 1, description="padding tokens at the end",
                                        continuous_update=False, style={"description_width": "initial"},
                                        layout=widgets.Layout(width="480px"))
        self.slider.add_class("mask-padding-slider")
        self.causal_box = widgets.Checkbox(value=causal, description="causal mask", indent=False)
        self.causal_box.add_class("mask-causal-toggle")
        self.polarity_box = widgets.Checkbox(value=wrong_polarity, indent=False,
                                             description="wrong polarity: pass key_padding_mask as attn_mask")
        self.polarity_box.add_class("mask-polarity-toggle")
        super().__init__([self.slider, self.causal_box, self.polarity_box], "mask-readout", "mask-chart", "520px",
                         rows=[self.slider, widgets.HBox([self.causal_box, self.polarity_box])])

    def set(self, num_padding=None, causal=None, wrong_polarity=None):
        """Move several controls at once (None leaves one as it is), then redraw once."""
        with self.hold():
            for control, value in ((self.slider, num_padding), (self.causal_box, causal),
                                   (self.polarity_box, wrong_polarity)):
                if value is not None:
                    control.value = value

    def key_padding_mask(self):
        """(1, S) bool, True = padding: the last ``slider.value`` positions."""
        S = len(self.labels)
        return padding_mask([S - self.slider.value], S)                       # (1, S)

    def attn_mask(self):
        """(S, S) bool, True = may attend, as the switches make it."""
        S = len(self.labels)
        key_padding_mask = self.key_padding_mask()
        keep = key_padding_mask if self.polarity_box.value else key_padding_to_attn_mask(key_padding_mask)[0]
        attn_mask = keep.expand(S, S)                                         # (1, S) -> (S, S)
        return attn_mask & causal_mask(S) if self.causal_box.value else attn_mask.clone()

    def weights(self):
        """(S, S) attention weights ``masked_softmax(attn_scores, attn_mask())``."""
        return masked_softmax(self.attn_scores, self.attn_mask())

    def shown_labels(self):
        """The S labels as drawn: the padded positions read ``<pad>``."""
        n = self.slider.value
        return self.labels[:len(self.labels) - n] + ["<pad>"] * n

    def text(self):
        """The readout: the switches, the mask's shape and allowed cells, row sums, weight on padding keys."""
        w, allowed, pad = self.weights(), self.attn_mask(), self.key_padding_mask()[0]
        S = len(self.labels)
        return (f"padding tokens: {self.slider.value}   causal: {'on' if self.causal_box.value else 'off'}   "
                f"polarity: {'WRONG (True = padding read as True = may attend)' if self.polarity_box.value else 'correct'}\n"
                f"key_padding_mask (1, {S}), True = padding: {pad.int().tolist()}\n"
                f"attn_mask ({S}, {S}), True = may attend: {int(allowed.sum())} of {S * S} cells allowed\n"
                f"row sums: {' '.join(f'{s:.2f}' for s in w.sum(-1).tolist())}\n"
                f"total weight on padding keys: {w[:, pad].sum().item():.3f}   "
                f"queries with no allowed key (all-zero rows): {int((~allowed.any(-1)).sum())}")

    def figure(self):
        """The chart: ``weights()`` as a heatmap, the masked cells grey."""
        w, allowed, labels = self.weights(), self.attn_mask(), self.shown_labels()
        fig = Figure(figsize=(5.0, 4.4))                                      # a fixed layout draws faster
        fig.subplots_adjust(left=0.17, right=0.97, bottom=0.2, top=0.92)
        ax = attention_heatmap(w, labels, labels, ax=fig.add_subplot(), annotate=False, colorbar=False,
                               title=f"attn_weights; grey = masked ({int((~allowed).sum())} cells)")
        grey = torch.tensor([0.85, 0.85, 0.85, 1.0]) * (~allowed)[..., None]    # (S, S, 4) RGBA, clear where allowed
        ax.imshow(grey.numpy(), aspect="auto")
        for i, j in allowed.nonzero().tolist():
            ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if w[i, j] > 0.5 else "white")
        return fig
