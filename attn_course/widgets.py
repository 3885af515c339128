"""Interactive controls for the lessons (ipywidgets).

Each widget draws with ``attn_course.plot.new_figure`` / ``figure_png`` into an ``ipywidgets.Image``
instead of calling ``plt.show()`` in a callback: pyplot is not thread-safe, and JupyterLab >= 4.4
with ipykernel 7 may run widget callbacks on a separate kernel thread. ``python -m attn_course.lab``
also turns that thread off (``commsOverSubshells: "disabled"``) for learners' own widgets.
"""
import html
import math

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import hard
from .attention import (causal_mask, entropy, key_padding_to_attn_mask, masked_softmax, padding_mask,
                        softmax_with_temperature)
from .data import pad_batch, tokenize
from .plot import attention_heatmap, figure_png, new_figure, token_grid, weights_bar


class TemperatureExplorer(widgets.VBox):
    """A softmax-temperature slider over one row of attention scores, with a live bar chart.

    Shows ``attn_weights = softmax(attn_scores / T)`` as bars and reads out T, the entropy in nats
    (0 = all weight on one key, log S = uniform) and the weights themselves.

    Args:
        attn_scores: (S,) float tensor, the scores of one query against S keys.
        labels: S strings naming the keys.
        temperature: initial T (> 0); the slider spans 0.1 .. 5.0 in steps of 0.1.

    Attributes:
        slider (FloatSlider), readout (HTML), image (Image); ``text()`` returns the readout as text.

    Raises:
        ValueError: ``attn_scores`` not 1-D, or ``labels`` not of length S.
    """

    def __init__(self, attn_scores, labels=None, temperature=1.0):
        attn_scores = torch.as_tensor(attn_scores).detach().cpu().float()
        if attn_scores.dim() != 1:
            raise ValueError(f"attn_scores must be one row of S scores (S,); got {tuple(attn_scores.shape)}")
        if labels is not None and len(labels) != len(attn_scores):
            raise ValueError(f"labels needs {len(attn_scores)} entries; got {len(labels)}")
        self.attn_scores, self.labels = attn_scores, labels
        self.slider = widgets.FloatSlider(
            value=temperature, min=0.1, max=5.0, step=0.1, description="softmax temperature",
            readout_format=".2f", continuous_update=False,
            style={"description_width": "initial"}, layout=widgets.Layout(width="480px"))
        self.slider.add_class("temperature-slider")
        self.readout = widgets.HTML()
        self.readout.add_class("temperature-readout")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="480px"))
        self.image.add_class("temperature-chart")
        super().__init__([self.slider, self.readout, self.image], layout=widgets.Layout(width="fit-content"))
        self.slider.observe(lambda change: self.update(), names="value")
        self.update()

    def weights(self):
        """The current attention weights, (S,)."""
        return softmax_with_temperature(self.attn_scores, self.slider.value)

    def text(self):
        """The readout as plain text: temperature, entropy, scores and weights (4 decimals)."""
        w = self.weights()
        return (f"T = {self.slider.value:.2f}   entropy = {entropy(w).item():.3f} nats "
                f"(uniform: {math.log(len(w)):.3f})\n"
                "attn_scores:  " + " ".join(f"{s:.4f}" for s in self.attn_scores.tolist()) + "\n"
                "attn_weights: " + " ".join(f"{p:.4f}" for p in w.tolist()))

    def update(self):
        self.readout.value = f"<pre>{html.escape(self.text())}</pre>"
        fig = new_figure((4.8, 2.6))
        weights_bar(self.weights(), self.labels, ax=fig.add_subplot(),
                    title=f"softmax(attn_scores / T),  T = {self.slider.value:.2f}")
        self.image.value = figure_png(fig)


class ScaleExplorer(widgets.VBox):
    """A d_k slider and a "divide by sqrt(d_k)" switch over one query's dot-product scores.

    One query ``q`` and S keys ``k_j`` have independent standard-normal entries (mean 0, variance 1),
    drawn once from ``seed``; at head size d_k the explorer uses their first d_k entries, so moving
    the slider grows the same sums. It shows ``attn_weights = softmax(q . k_j)`` (switch off) or
    ``softmax(q . k_j / sqrt(d_k))`` (switch on) as bars, and reads out the spread (std) of the S
    scores next to its expected value (sqrt(d_k) unscaled, 1 scaled), the largest weight and the
    entropy in nats (0 = all weight on one key, log S = uniform).

    Args:
        num_keys: S, the number of keys (an int >= 2).
        max_log2_d_k: the slider spans d_k = 1, 2, 4, ..., 2 ** max_log2_d_k (an int in 0..14).
        d_k: the initial head size, a power of two within the slider's range.
        scaled: the initial state of the switch (divide by sqrt(d_k) or not).
        seed: the seed of the CPU generator that draws ``q`` and the keys.
        labels: S strings naming the keys (default ``k0, k1, ...``).

    Attributes:
        slider (SelectionSlider over d_k), checkbox (Checkbox), readout (HTML), image (Image);
        ``query`` (2 ** max_log2_d_k,) and ``key`` (S, 2 ** max_log2_d_k) float32 CPU tensors.
        ``stats()`` returns the readout's numbers, ``text()`` the readout as text.

    Raises:
        ValueError: ``num_keys`` < 2, ``max_log2_d_k`` outside 0..14, ``d_k`` not a power of two in
            1 .. 2 ** max_log2_d_k, or ``labels`` not of length S.

    References: Vaswani et al. 2017, "Attention Is All You Need", section 3.2.1 and footnote 4.

    >>> explorer = ScaleExplorer(d_k=256, scaled=False)
    >>> explorer.stats()["max_weight"] > 0.99
    True
    """

    def __init__(self, num_keys=8, max_log2_d_k=10, d_k=64, scaled=False, seed=0, labels=None):
        if not isinstance(num_keys, int) or num_keys < 2:
            raise ValueError(f"num_keys must be an int >= 2; got {num_keys!r}")
        if not isinstance(max_log2_d_k, int) or not 0 <= max_log2_d_k <= 14:
            raise ValueError(f"max_log2_d_k must be an int in 0..14; got {max_log2_d_k!r}")
        options = [2 ** i for i in range(max_log2_d_k + 1)]
        if d_k not in options:
            raise ValueError(f"d_k must be a power of two in 1..{options[-1]}; got {d_k!r}")
        if labels is not None and len(labels) != num_keys:
            raise ValueError(f"labels needs {num_keys} entries (one per key); got {len(labels)}")
        g = torch.Generator().manual_seed(seed)
        self.query = torch.randn(options[-1], generator=g)             # (D_max,)
        self.key = torch.randn(num_keys, options[-1], generator=g)     # (S, D_max)
        self.labels = list(labels) if labels is not None else [f"k{j}" for j in range(num_keys)]
        self.slider = widgets.SelectionSlider(
            options=options, value=d_k, description="d_k (head_dim)", continuous_update=False,
            style={"description_width": "initial"}, layout=widgets.Layout(width="480px"))
        self.slider.add_class("scale-slider")
        self.checkbox = widgets.Checkbox(value=scaled, description="divide by sqrt(d_k)", indent=False)
        self.checkbox.add_class("scale-checkbox")
        self.readout = widgets.HTML()
        self.readout.add_class("scale-readout")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="480px"))
        self.image.add_class("scale-chart")
        super().__init__([self.slider, self.checkbox, self.readout, self.image])
        self.slider.observe(lambda change: self.update(), names="value")
        self.checkbox.observe(lambda change: self.update(), names="value")
        self.update()

    def attn_scores(self):
        """The current scores ``q . k_j`` (divided by sqrt(d_k) when the switch is on), (S,)."""
        d_k = self.slider.value
        attn_scores = self.key[:, :d_k] @ self.query[:d_k]             # (S, d_k) @ (d_k,) -> (S,)
        return attn_scores / math.sqrt(d_k) if self.checkbox.value else attn_scores

    def weights(self):
        """The current attention weights ``softmax(attn_scores)``, (S,)."""
        return torch.softmax(self.attn_scores(), dim=-1)

    def stats(self):
        """The readout's numbers: a dict with d_k, scaled, score_std, expected_std, max_weight, entropy."""
        attn_scores, w = self.attn_scores(), self.weights()
        d_k, scaled = self.slider.value, self.checkbox.value
        return {"d_k": d_k, "scaled": scaled, "score_std": attn_scores.std().item(),
                "expected_std": 1.0 if scaled else math.sqrt(d_k), "max_weight": w.max().item(),
                "entropy": entropy(w).item()}

    def text(self):
        """The readout as plain text: the statistics on line 1, then scores and weights (3 decimals)."""
        s = self.stats()
        return (f"d_k = {s['d_k']:4d}  divide by sqrt(d_k): {'yes' if s['scaled'] else 'no ':3s}  "
                f"score std = {s['score_std']:6.2f} (expected ~{s['expected_std']:5.2f})  "
                f"max weight = {s['max_weight']:.3f}  entropy = {s['entropy']:.3f} nats "
                f"(uniform: {math.log(len(self.labels)):.3f})\n"
                "attn_scores:  " + " ".join(f"{v:.3f}" for v in self.attn_scores().tolist()) + "\n"
                "attn_weights: " + " ".join(f"{p:.3f}" for p in self.weights().tolist()))

    def update(self):
        self.readout.value = f"<pre>{html.escape(self.text())}</pre>"
        d_k, scaled = self.slider.value, self.checkbox.value
        fig = new_figure((4.8, 2.6))
        ax = weights_bar(self.weights(), self.labels, ax=fig.add_subplot(),
                         title=f"softmax(q·k{' / sqrt(d_k)' if scaled else ''}),  d_k = {d_k}")
        ax.axhline(1 / len(self.labels), color="gray", linestyle="--", linewidth=1)
        ax.text(1.01, 1 / len(self.labels), "uniform\n1/S", color="gray", va="center", fontsize=8,
                transform=ax.get_yaxis_transform())             # outside the axes: never on a bar
        self.image.value = figure_png(fig)


class QueryPicker(widgets.VBox):
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
        self.readout = widgets.HTML()
        self.readout.add_class("query-readout")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="860px"))
        self.image.add_class("query-chart")
        super().__init__([self.dropdown, self.readout, self.image])
        self.dropdown.observe(lambda change: self.update(), names="value")
        self.update()

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

    def update(self):
        self.readout.value = f"<pre>{html.escape(self.text())}</pre>"
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
        self.image.value = figure_png(fig)


class HeadPicker(widgets.VBox):
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
        self.readout = widgets.HTML()
        self.readout.add_class("head-readout")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="560px"))
        self.image.add_class("head-chart")
        super().__init__([self.layer_slider, self.head_slider, self.readout, self.image])
        self._hold = False
        self.layer_slider.observe(lambda change: self._hold or self.update(), names="value")
        self.head_slider.observe(lambda change: self._hold or self.update(), names="value")
        self.update()

    def pick(self, layer, head):
        """Move both sliders at once (one redraw instead of two), as a learner would by hand."""
        self._hold = True
        try:
            self.layer_slider.value, self.head_slider.value = layer, head
        finally:
            self._hold = False
        self.update()

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

    def update(self):
        self.readout.value = f"<pre>{html.escape(self.text())}</pre>"
        T = len(self.tokens)
        fig = new_figure((0.26 * T + 2.6, 0.24 * T + 1.6))
        attention_heatmap(self.weights(), self.tokens, self.tokens, ax=fig.add_subplot(), annotate=False,
                          title=f"layer {self.layer_slider.value}, head {self.head_slider.value}")
        self.image.value = figure_png(fig)


class GumbelExplorer(widgets.VBox):
    """A Gumbel-softmax temperature slider and a sample picker over one row of attention scores.

    Draws ``num_draws`` Gumbel-softmax samples ``y_soft = softmax((logits + g) / tau)`` from a CPU
    generator seeded with the sample number and shows three bar charts: ``softmax(logits)``, the
    distribution the hard picks come from; the first draw's ``y_soft`` with its hard pick
    ``one_hot(argmax(y_soft))`` outlined; and how often each position was picked over all draws, next
    to ``softmax(logits)``. Lowering ``tau`` sharpens ``y_soft`` towards its one-hot pick (entropy
    towards 0); the picks themselves do not change with ``tau`` (the Gumbel-max trick).

    Args:
        logits: (S,) float tensor, one row of scores (unnormalised log-probabilities), S >= 2.
        labels: S strings naming the positions (default ``0, 1, ...``).
        tau: the initial temperature; the slider spans 0.05 .. 5.0 in steps of 0.05.
        seed: the initial sample number, 0 .. 99: the seed of the draws.
        num_draws: how many samples the frequencies count (an int >= 1).

    Attributes:
        slider (FloatSlider over tau, CSS class ``gumbel-tau-slider``), seed_slider (IntSlider,
        ``gumbel-seed-slider``), resample (Button, ``gumbel-resample``: the next sample number),
        readout (HTML, ``gumbel-readout``), image (Image, ``gumbel-chart``). ``samples()`` returns the
        soft samples (num_draws, S), ``stats()`` the readout's numbers, ``text()`` the readout as text.

    Raises:
        ValueError: ``logits`` not 1-D with S >= 2, ``labels`` not of length S, ``tau`` outside
            0.05 .. 5.0, ``seed`` outside 0 .. 99, or ``num_draws`` < 1.

    References: Jang, Gu & Poole 2017, "Categorical Reparameterization with Gumbel-Softmax", eq. 2
    and figure 1.

    >>> sharp = GumbelExplorer(torch.tensor([2.0, 0.0, -1.0]), tau=0.1).stats()
    >>> flat = GumbelExplorer(torch.tensor([2.0, 0.0, -1.0]), tau=5.0).stats()
    >>> sharp["mean_entropy"] < flat["mean_entropy"], sharp["frequencies"] == flat["frequencies"]
    (True, True)
    """

    def __init__(self, logits, labels=None, tau=1.0, seed=0, num_draws=200):
        logits = torch.as_tensor(logits).detach().cpu().float()
        if logits.dim() != 1 or len(logits) < 2:
            raise ValueError(f"logits must be one row of S >= 2 scores (S,); got {tuple(logits.shape)}")
        if labels is not None and len(labels) != len(logits):
            raise ValueError(f"labels needs {len(logits)} entries (one per position); got {len(labels)}")
        if not 0.05 <= tau <= 5.0:
            raise ValueError(f"tau must lie in 0.05 .. 5.0 (the slider's range); got {tau}")
        if not isinstance(seed, int) or not 0 <= seed <= 99:
            raise ValueError(f"seed must be an int in 0 .. 99; got {seed!r}")
        if not isinstance(num_draws, int) or num_draws < 1:
            raise ValueError(f"num_draws must be an int >= 1; got {num_draws!r}")
        self.logits, self.num_draws = logits, num_draws
        self.labels = [str(x) for x in labels] if labels is not None else [str(j) for j in range(len(logits))]
        self.slider = widgets.FloatSlider(
            value=tau, min=0.05, max=5.0, step=0.05, description="Gumbel temperature tau",
            readout_format=".2f", continuous_update=False,
            style={"description_width": "initial"}, layout=widgets.Layout(width="480px"))
        self.slider.add_class("gumbel-tau-slider")
        self.seed_slider = widgets.IntSlider(
            value=seed, min=0, max=99, description="sample #", continuous_update=False,
            style={"description_width": "initial"}, layout=widgets.Layout(width="360px"))
        self.seed_slider.add_class("gumbel-seed-slider")
        self.resample = widgets.Button(description="resample")
        self.resample.add_class("gumbel-resample")
        self.readout = widgets.HTML()
        self.readout.add_class("gumbel-readout")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="960px"))
        self.image.add_class("gumbel-chart")
        super().__init__([self.slider, widgets.HBox([self.seed_slider, self.resample]), self.readout,
                          self.image])
        self.slider.observe(lambda change: self.update(), names="value")
        self.seed_slider.observe(lambda change: self.update(), names="value")
        self.resample.on_click(lambda button: setattr(self.seed_slider, "value",
                                                      (self.seed_slider.value + 1) % 100))
        self.update()

    def samples(self):
        """The soft samples ``softmax((logits + g) / tau)``, (num_draws, S); row 0 is the one shown."""
        g = torch.Generator().manual_seed(self.seed_slider.value)
        logits = self.logits.expand(self.num_draws, -1)                       # (S,) -> (N, S)
        return hard.gumbel_softmax_st(logits, self.slider.value, hard=False, generator=g)

    def stats(self):
        """The readout's numbers: tau, seed, index (row 0's pick), entropy (row 0), mean_entropy,
        max_weight (row 0), y_soft, frequencies (of the picks over all draws) and probs (softmax)."""
        y_soft = self.samples()                                                # (N, S)
        picks = y_soft.argmax(-1)                                              # (N,)
        return {"tau": self.slider.value, "seed": self.seed_slider.value, "index": int(picks[0]),
                "entropy": entropy(y_soft[0]).item(), "mean_entropy": entropy(y_soft).mean().item(),
                "max_weight": y_soft[0].max().item(), "y_soft": y_soft[0].tolist(),
                "frequencies": (torch.bincount(picks, minlength=len(self.logits)) / self.num_draws).tolist(),
                "probs": torch.softmax(self.logits, -1).tolist()}

    def text(self):
        """The readout as plain text: the pick and entropies, then y_soft, frequencies, softmax (3 decimals)."""
        s, S = self.stats(), len(self.logits)
        row = lambda values: " ".join(f"{v:.3f}" for v in values)  # noqa: E731
        return (f"tau = {s['tau']:.2f}   sample #{s['seed']}: picked position {s['index']} "
                f"('{self.labels[s['index']]}')   entropy of y_soft = {s['entropy']:.3f} nats "
                f"(uniform: {math.log(S):.3f})\n"
                f"over {self.num_draws} draws: mean entropy of y_soft = {s['mean_entropy']:.3f} nats; "
                f"the picks do not depend on tau\n"
                f"y_soft:             {row(s['y_soft'])}\n"
                f"pick frequency:     {row(s['frequencies'])}\n"
                f"softmax(logits):    {row(s['probs'])}")

    def update(self):
        s = self.stats()
        self.readout.value = f"<pre>{html.escape(self.text())}</pre>"
        fig = Figure(figsize=(9.6, 2.9))                                       # fixed margins: twice as fast
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.2, top=0.9, wspace=0.28)  # as a layout engine
        ax0, ax1, ax2 = fig.subplots(1, 3)
        S = len(self.logits)
        weights_bar(torch.tensor(s["probs"]), self.labels, ax=ax0, title="softmax(logits): pick probabilities")
        ax0.set_ylabel("probability")
        weights_bar(torch.tensor(s["y_soft"]), self.labels, ax=ax1,
                    title=f"sample #{s['seed']}: y_soft at tau = {s['tau']:.2f}")
        ax1.bar([s["index"]], [1.0], fill=False, edgecolor="C3", linewidth=2, label="hard pick (one-hot)")
        ax1.legend(loc="upper right", fontsize=7)
        ax2.bar(range(S), s["frequencies"], color="C2", label=f"picked / {self.num_draws}")
        ax2.plot(range(S), s["probs"], "ko", ms=4, label="softmax(logits)")
        ax2.set_xticks(range(S), self.labels, rotation=45, ha="right", rotation_mode="anchor")
        ax2.set(ylim=(0, 1), ylabel="frequency", title=f"hard picks over {self.num_draws} draws")
        ax2.legend(loc="upper right", fontsize=7)
        for ax in (ax0, ax1, ax2):
            ax.title.set_fontsize(10)
        self.image.value = figure_png(fig)


class MaskExplorer(widgets.VBox):
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
        self.readout = widgets.HTML()
        self.readout.add_class("mask-readout")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="520px"))
        self.image.add_class("mask-chart")
        super().__init__([self.slider, widgets.HBox([self.causal_box, self.polarity_box]), self.readout, self.image])
        self._holding = False
        for control in (self.slider, self.causal_box, self.polarity_box):
            control.observe(lambda change: None if self._holding else self.update(), names="value")
        self.update()

    def set(self, num_padding=None, causal=None, wrong_polarity=None):
        """Move several controls at once (None leaves one as it is), then redraw once."""
        self._holding = True
        try:
            for control, value in ((self.slider, num_padding), (self.causal_box, causal),
                                   (self.polarity_box, wrong_polarity)):
                if value is not None:
                    control.value = value
        finally:
            self._holding = False
        self.update()

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

    def update(self):
        self.readout.value = f"<pre>{html.escape(self.text())}</pre>"
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
        self.image.value = figure_png(fig)


class PaddingExplorer(widgets.VBox):
    """Pick sentences and a maximum length; see the padded batch of ids (B, T) and its padding mask.

    Each chosen sentence is tokenized (``data.tokenize``), encoded with ``vocab``, cut to at most
    ``max_len`` tokens (truncation) and right-padded with ``vocab.pad_id`` to the longest kept length
    T (``data.pad_batch``). The chart is the id grid with padding shaded; the readout gives the
    shapes ``ids (B, T) -> embeddings (B, T, E)``, the padding per row (the True entries of
    ``key_padding_mask``, **True = padding**) and the share of the batch that is padding.

    Args:
        sentences: a non-empty list of str.
        vocab: a ``data.Vocab`` (tokens it lacks become ``<unk>``).
        embedding_dim: E in the shape readout (an int >= 1).
        selected: indices of the sentences chosen at first (default: all).
        max_len: the initial truncation length (default: the longest sentence, i.e. no truncation).

    Attributes:
        select (SelectMultiple over sentence indices), max_len (IntSlider), readout (HTML),
        image (Image); ``batch()`` returns ``(ids, key_padding_mask)``, ``text()`` the readout as text;
        ``set(selected, max_len)`` moves both controls and redraws once.

    Raises:
        ValueError: ``sentences`` empty, not all str, or without a single token; ``embedding_dim`` not an int >= 1; an index in
            ``selected`` outside 0..len(sentences)-1; ``max_len`` outside 1..longest sentence.

    >>> from attn_course import data
    >>> explorer = PaddingExplorer(data.sentences()[:2], data.Vocab([]), selected=[1])
    >>> [tuple(t.shape) for t in explorer.batch()]
    [(1, 4), (1, 4)]
    """

    def __init__(self, sentences, vocab, embedding_dim=16, selected=None, max_len=None):
        if not sentences or not all(isinstance(s, str) for s in sentences):
            raise ValueError(f"sentences must be a non-empty list of str; got {sentences!r:.80}")
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be an int >= 1; got {embedding_dim!r}")
        self.sentences, self.vocab, self.embedding_dim = list(sentences), vocab, embedding_dim
        self.token_ids = [vocab.encode(tokenize(s)) for s in self.sentences]
        longest = max(len(s) for s in self.token_ids)
        if longest == 0:
            raise ValueError(f"sentences must hold at least one token; got {sentences!r:.80}")
        selected = list(range(len(self.sentences))) if selected is None else list(selected)
        if any(not 0 <= i < len(self.sentences) for i in selected):
            raise ValueError(f"selected must hold indices in 0..{len(self.sentences) - 1}; got {selected}")
        max_len = longest if max_len is None else max_len
        if not 1 <= max_len <= longest:
            raise ValueError(f"max_len must lie in 1..{longest} (the longest sentence); got {max_len}")
        options = [(f"{i}: {s if len(s) <= 48 else s[:47] + '…'}", i) for i, s in enumerate(self.sentences)]
        self.select = widgets.SelectMultiple(
            options=options, value=tuple(selected), rows=min(len(options), 8),
            description="sentences", style={"description_width": "initial"},
            layout=widgets.Layout(width="520px"))
        self.select.add_class("padding-sentences")
        self.max_len = widgets.IntSlider(
            value=max_len, min=1, max=longest, description="max_len (truncation)",
            continuous_update=False, style={"description_width": "initial"},
            layout=widgets.Layout(width="520px"))
        self.max_len.add_class("padding-max-len")
        self.readout = widgets.HTML()
        self.readout.add_class("padding-readout")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="760px"))
        self.image.add_class("padding-chart")
        super().__init__([self.select, self.max_len, self.readout, self.image])
        self._paused = False
        self.select.observe(lambda change: self._paused or self.update(), names="value")
        self.max_len.observe(lambda change: self._paused or self.update(), names="value")
        self.update()

    def set(self, selected=None, max_len=None):
        """Choose sentences (indices) and/or the truncation length, as the controls do; redraw once.

        Raises:
            ValueError: an index outside 0..len(sentences)-1, or ``max_len`` outside 1..longest.
        """
        if selected is not None and any(not 0 <= i < len(self.sentences) for i in selected):
            raise ValueError(f"selected must hold indices in 0..{len(self.sentences) - 1}; got {list(selected)}")
        if max_len is not None and not self.max_len.min <= max_len <= self.max_len.max:
            raise ValueError(f"max_len must lie in 1..{self.max_len.max}; got {max_len}")
        self._paused = True
        try:
            if selected is not None:
                self.select.value = tuple(selected)
            if max_len is not None:
                self.max_len.value = max_len
        finally:
            self._paused = False
        self.update()

    def batch(self):
        """The chosen sentences, truncated and padded: ``(ids (B, T) int64, key_padding_mask (B, T) bool)``.

        Raises:
            ValueError: no sentence is chosen.
        """
        chosen = sorted(self.select.value)
        if not chosen:
            raise ValueError("choose at least one sentence; got none")
        return pad_batch([self.token_ids[i][:self.max_len.value] for i in chosen], self.vocab.pad_id)

    def text(self):
        """The readout as plain text: the shapes, the padding per row and in all."""
        if not self.select.value:
            return "no sentence chosen: pick at least one (Ctrl/Cmd-click to choose several)"
        ids, key_padding_mask = self.batch()
        (B, T), E = ids.shape, self.embedding_dim
        n_pad = int(key_padding_mask.sum())
        cut = sum(len(self.token_ids[i]) - min(len(self.token_ids[i]), T) for i in self.select.value)
        return (f"ids (B, T) = ({B}, {T}) -> embeddings (B, T, E) = ({B}, {T}, {E})\n"
                f"key_padding_mask (B, T), True = padding: per row {key_padding_mask.sum(1).tolist()}\n"
                f"padding: {n_pad} of {B * T} positions ({100 * n_pad / (B * T):.0f}%); "
                f"tokens cut by max_len={self.max_len.value}: {cut}")

    def update(self):
        """Redraw the readout and the chart from the current controls."""
        self.readout.value = f"<pre>{html.escape(self.text())}</pre>"
        if not self.select.value:
            fig = new_figure((7.6, 1.0))
            fig.text(0.5, 0.5, "no sentence chosen", ha="center", va="center")
            self.image.value = figure_png(fig)
            return
        ids, key_padding_mask = self.batch()
        (B, T), chosen = ids.shape, sorted(self.select.value)
        fig = new_figure((max(0.5 * T + 1.2, 4.0), 0.5 * B + 1.0))
        token_grid(ids, [self.vocab.decode(row) for row in ids], key_padding_mask, ax=fig.add_subplot(),
                   row_labels=[f"sentence {i}" for i in chosen],
                   title=f"ids ({B}, {T}); grey = padding (key_padding_mask True)")
        self.image.value = figure_png(fig)
