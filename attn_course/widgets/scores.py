"""Lessons 02-03's widgets: the scale of dot-product scores against d_k, and softmax temperature."""
import math

import ipywidgets as widgets
import torch

from ..attention import entropy, softmax_with_temperature
from ..plot import new_figure, weights_bar
from .panel import Panel


class TemperatureExplorer(Panel):
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
        super().__init__([self.slider], "temperature-readout", "temperature-chart", "480px",
                         layout=widgets.Layout(width="fit-content"))

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

    def figure(self):
        """The chart: the weights as bars."""
        fig = new_figure((4.8, 2.6))
        weights_bar(self.weights(), self.labels, ax=fig.add_subplot(),
                    title=f"softmax(attn_scores / T),  T = {self.slider.value:.2f}")
        return fig


class ScaleExplorer(Panel):
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
        super().__init__([self.slider, self.checkbox], "scale-readout", "scale-chart", "480px")

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

    def figure(self):
        """The chart: the weights as bars, with the uniform weight 1/S dashed."""
        d_k, scaled = self.slider.value, self.checkbox.value
        fig = new_figure((4.8, 2.6))
        ax = weights_bar(self.weights(), self.labels, ax=fig.add_subplot(),
                         title=f"softmax(q·k{' / sqrt(d_k)' if scaled else ''}),  d_k = {d_k}")
        ax.axhline(1 / len(self.labels), color="gray", linestyle="--", linewidth=1)
        ax.text(1.01, 1 / len(self.labels), "uniform\n1/S", color="gray", va="center", fontsize=8,
                transform=ax.get_yaxis_transform())             # outside the axes: never on a bar
        return fig
