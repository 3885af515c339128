"""Lessons 05-06's widgets: one query's weights over the keys, and a real model's layers and heads."""
import math

import ipywidgets as widgets
import torch
from matplotlib.patches import Rectangle

from ..attention import entropy
from ..plot import attention_heatmap, new_figure, weights_bar
from .panel import Panel


class QueryPicker(Panel):
    """Pick one query token and see where it attends: its row of an (L, S) attention matrix.

    A dropdown picks the query position i. The picture shows the whole matrix with row i framed in
    red (left) and row i's weights over the S keys as bars, its three largest in orange (right). The
    readout names the query, its top-3 keys with their weights, and the row's entropy in nats
    (0 = all weight on one key, log S = uniform). Works for self-attention (S = L, one sentence on
    both axes) and cross-attention (queries from one sentence, keys from another).

    Args:
        attn_weights: (L, S) float tensor, each row summing to 1 (one batch element and one head,
            e.g. ``attn_weights[0]``).
        query_labels: L strings naming the queries (rows).
        key_labels: S strings naming the keys (columns); default ``query_labels`` (self-attention).
        query: the position picked at first, an int in 0..L-1.
        title: the heatmap's title.

    Attributes:
        dropdown (Dropdown over the positions 0..L-1, shown as "i: token"), readout (HTML),
        image (Image); ``weights()`` the picked row (S,), ``top(k)`` its k largest weights,
        ``text()`` the readout as text.

    Raises:
        ValueError: ``attn_weights`` not 2-D; label counts that differ from L and S; ``query``
            outside 0..L-1.

    >>> picker = QueryPicker(torch.tensor([[0.9, 0.1], [0.5, 0.5]]), ["a", "b"], query=1)
    >>> picker.top(1)
    [(0, 'a', 0.5)]
    """

    def __init__(self, attn_weights, query_labels, key_labels=None, query=0, title="attn_weights"):
        attn_weights = torch.as_tensor(attn_weights).detach().cpu().float()
        if attn_weights.dim() != 2:
            raise ValueError(f"attn_weights must be one (L, S) matrix; got shape {tuple(attn_weights.shape)}. "
                             f"Pick one batch element (and head) first, e.g. attn_weights[0].")
        L, S = attn_weights.shape
        key_labels = query_labels if key_labels is None else key_labels
        for name, labels, n in (("query_labels", query_labels, L), ("key_labels", key_labels, S)):
            if len(labels) != n:
                raise ValueError(f"{name} needs {n} entries for a ({L}, {S}) matrix; got {len(labels)}")
        if not isinstance(query, int) or not 0 <= query < L:
            raise ValueError(f"query must be an int in 0..{L - 1}; got {query!r}")
        self.attn_weights, self.title = attn_weights, title
        self.query_labels, self.key_labels = list(query_labels), list(key_labels)
        self.dropdown = widgets.Dropdown(
            options=[(f"{i}: {tok}", i) for i, tok in enumerate(self.query_labels)], value=query,
            description="query token", style={"description_width": "initial"},
            layout=widgets.Layout(width="260px"))
        self.dropdown.add_class("query-picker")
        super().__init__([self.dropdown], "query-readout", "query-chart", "860px")

    def weights(self):
        """The picked query's attention weights over the S keys, (S,)."""
        return self.attn_weights[self.dropdown.value]

    def top(self, k=3):
        """The k largest weights of the picked row: a list of (key position, key label, weight)."""
        values, positions = self.weights().topk(min(k, len(self.key_labels)))
        return [(j, self.key_labels[j], round(w, 4)) for w, j in zip(values.tolist(), positions.tolist())]

    def text(self):
        """The readout as plain text: the query and the entropy, then its top-3 keys (3 decimals)."""
        i, w = self.dropdown.value, self.weights()
        top = "  ".join(f"{label!r} (key {j}) {weight:.3f}" for j, label, weight in self.top(3))
        return (f"query {i} {self.query_labels[i]!r}   entropy = {entropy(w).item():.3f} nats "
                f"(uniform over {len(w)} keys: {math.log(len(w)):.3f})\n"
                f"top-3 keys: {top}")

    def figure(self):
        """The chart: the matrix with the picked row framed, and that row's weights as bars."""
        i, (L, S) = self.dropdown.value, self.attn_weights.shape
        fig = new_figure((9.6, 0.28 * max(L, 8) + 1.6))
        ax0, ax1 = fig.subplots(1, 2, width_ratios=[1, 1.25])
        attention_heatmap(self.attn_weights, self.query_labels, self.key_labels, ax=ax0, title=self.title,
                          annotate=False, colorbar=False, vmax=float(self.attn_weights.max()))
        ax0.add_patch(Rectangle((-0.5, i - 0.5), S, 1, fill=False, edgecolor="red", linewidth=2))
        top = [j for j, _, _ in self.top(3)]
        weights_bar(self.weights(), self.key_labels, ax=ax1, ylim=(0, max(0.3, 1.1 * self.weights().max().item())),
                    title=f"where query {i} {self.query_labels[i]!r} attends (row {i})")
        for j, bar in enumerate(ax1.patches):
            bar.set_color("C1" if j in top else "C0")
        ax1.axhline(1 / S, color="gray", linestyle="--", linewidth=1)
        ax1.text(S - 0.5, 1 / S, "uniform", color="gray", ha="right", va="bottom", fontsize=8)
        ax1.set_xlabel("key (attended to)")
        return fig


class HeadPicker(Panel):
    """Pick a layer and a head of a multi-layer, multi-head model and see that head's attention map.

    Two sliders pick the layer and the head; the picture is that head's (T, T) attention matrix on one
    sentence (queries down the rows, keys across). The readout gives the mean entropy of the rows in
    nats (0 = every query on one key, log T = uniform), the head's mean weight on the previous token,
    the token itself and the next token (over the queries that have one), and each query's strongest
    key with its weight.

    Args:
        attentions: one sentence's attention weights, precomputed: a tensor (num_layers, H, T, T) or
            a sequence of num_layers tensors (H, T, T), e.g. ``[a[0] for a in attentions]`` of a batch.
            Padding must be removed first (all T tokens real).
        tokens: T strings naming the tokens.
        layer: the layer picked at first (0 .. num_layers - 1); head: the head (0 .. H - 1).

    Attributes:
        layer_slider, head_slider (IntSlider), readout (HTML), image (Image); ``weights()`` the
        picked (T, T) matrix, ``stats()`` the readout's numbers, ``text()`` the readout as text;
        ``pick(layer, head)`` moves both sliders with one redraw.

    Raises:
        ValueError: ``attentions`` not (num_layers, H, T, T); ``tokens`` not of length T; ``layer``
            or ``head`` out of range.

    >>> picker = HeadPicker(torch.eye(3).expand(2, 4, 3, 3), ["a", "b", "c"], layer=1, head=3)
    >>> round(picker.stats()["self"], 2)
    1.0
    """

    def __init__(self, attentions, tokens, layer=0, head=0):
        if not isinstance(attentions, torch.Tensor):
            attentions = torch.stack([torch.as_tensor(a) for a in attentions])  # n x (H, T, T) -> (n, H, T, T)
        attentions = attentions.detach().cpu().float()
        if attentions.dim() != 4 or attentions.shape[-1] != attentions.shape[-2]:
            raise ValueError(f"attentions must be (num_layers, H, T, T) for one sentence; got "
                             f"{tuple(attentions.shape)}. Pick one batch element first, e.g. "
                             f"[a[0] for a in attentions].")
        num_layers, H, T, _ = attentions.shape
        if len(tokens) != T:
            raise ValueError(f"tokens needs {T} entries (one per position); got {len(tokens)}")
        for name, value, n in (("layer", layer, num_layers), ("head", head, H)):
            if not isinstance(value, int) or not 0 <= value < n:
                raise ValueError(f"{name} must be an int in 0..{n - 1}; got {value!r}")
        self.attentions, self.tokens = attentions, list(tokens)
        self.layer_slider = widgets.IntSlider(value=layer, min=0, max=num_layers - 1, description="layer",
                                              continuous_update=False, layout=widgets.Layout(width="360px"))
        self.layer_slider.add_class("layer-slider")
        self.head_slider = widgets.IntSlider(value=head, min=0, max=H - 1, description="head",
                                             continuous_update=False, layout=widgets.Layout(width="360px"))
        self.head_slider.add_class("head-slider")
        super().__init__([self.layer_slider, self.head_slider], "head-readout", "head-chart", "560px")

    def pick(self, layer, head):
        """Move both sliders at once (one redraw instead of two), as a learner would by hand."""
        with self.hold():
            self.layer_slider.value, self.head_slider.value = layer, head

    def weights(self):
        """The picked head's attention weights, (T, T)."""
        return self.attentions[self.layer_slider.value, self.head_slider.value]

    def stats(self):
        """The readout's numbers: layer, head, entropy (row mean), previous/self/next (mean weights), strongest."""
        w = self.weights()
        values, positions = w.max(dim=-1)                                   # (T,) each
        return {"layer": self.layer_slider.value, "head": self.head_slider.value,
                "entropy": entropy(w).mean().item(),
                "previous": w.diagonal(offset=-1).mean().item() if len(w) > 1 else float("nan"),
                "self": w.diagonal().mean().item(),
                "next": w.diagonal(offset=1).mean().item() if len(w) > 1 else float("nan"),
                "strongest": [(self.tokens[i], self.tokens[j], v)
                              for i, (j, v) in enumerate(zip(positions.tolist(), values.tolist()))]}

    def text(self):
        """The readout as plain text (2 or 3 decimals); four queries per line."""
        s = self.stats()
        pairs = [f"{q} -> {k} {v:.2f}" for q, k, v in s["strongest"]]
        lines = ["   ".join(pairs[i:i + 4]) for i in range(0, len(pairs), 4)]
        return (f"layer {s['layer']}, head {s['head']}   mean entropy = {s['entropy']:.3f} nats "
                f"(uniform over {len(self.tokens)} keys: {math.log(len(self.tokens)):.3f})\n"
                f"mean weight on the previous token {s['previous']:.2f}, on itself {s['self']:.2f}, "
                f"on the next token {s['next']:.2f}\n"
                "strongest key of each query:\n  " + "\n  ".join(lines))

    def figure(self):
        """The chart: the picked head's (T, T) attention map."""
        T = len(self.tokens)
        fig = new_figure((0.26 * T + 2.6, 0.24 * T + 1.6))
        attention_heatmap(self.weights(), self.tokens, self.tokens, ax=fig.add_subplot(), annotate=False,
                          title=f"layer {self.layer_slider.value}, head {self.head_slider.value}")
        return fig
