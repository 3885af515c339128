"""The suspect line-up of lesson 08: broken implementations side by side with their references.

The probes it builds on (``influence_matrix``, ``pad_row_gradient``) live in ``attn_course.checks.probes``.
"""
import math

import ipywidgets as widgets
import torch

from ..attention import attention_weights, entropy
from ..plot import attention_heatmap, new_figure
from .panel import Panel


def _weights_by(kind, fn, query, key, knob):
    """attn_weights (L, S) of ``fn`` on query (L, D) and key (S, D), called as its ``kind`` is called."""
    L, S = query.shape[-2], key.shape[-2]
    if kind == "attention_weights":
        return fn(query, key)
    if kind == "softmax_with_temperature":
        return fn(query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1]), knob)
    if kind == "scaled_dot_product_attention":                                  # value = I: the output is the weights
        with torch.random.fork_rng(devices=[]):                                 # the same dropout draws, the caller's RNG untouched
            torch.manual_seed(0)
            return fn(query, key, torch.eye(S, dtype=query.dtype), dropout_p=knob)
    if kind == "causal_mask":
        return attention_weights(query, key, attn_mask=fn(L, S))
    raise ValueError(f"unknown kind {kind!r}")


class SuspectExplorer(Panel):
    """Line up a suspect against its reference: attention weights side by side, with a readout.

    Pick a suspect in the dropdown; move the head-size slider (``head_dim``, the width of query and
    key) and the knob slider (the temperature for a softmax, the dropout probability for SDPA).
    The readout gives, for the reference and the suspect, the row sums, the mean entropy in nats
    and the largest difference; the picture shows both weight matrices.

    Args:
        suspects: dict ``name -> (kind, suspect, reference)``, ``kind`` one of
            ``"attention_weights"``, ``"softmax_with_temperature"``, ``"scaled_dot_product_attention"``,
            ``"causal_mask"`` (how the explorer calls them; see ``_weights_by``).
        labels: L token strings (queries and keys: a self-attention picture).
        seed: the seed of the CPU generator drawing query and key (64 features, cut to ``head_dim``).

    Attributes:
        dropdown (Dropdown), head_dim (SelectionSlider), knob (FloatSlider), readout (HTML),
        image (Image); ``weights()`` returns the two (L, L) matrices, ``text()`` the readout.

    Raises:
        ValueError: an unknown kind, or no suspect.
    """

    KNOB = {"softmax_with_temperature": ("temperature", 0.25, 4.0, 0.25, 1.0),
            "scaled_dot_product_attention": ("dropout_p", 0.05, 0.75, 0.05, 0.25)}

    def __init__(self, suspects, labels, seed=0):
        if not suspects:
            raise ValueError("suspects must name at least one suspect")
        for name, (kind, _, _) in suspects.items():
            if kind not in ("attention_weights", "softmax_with_temperature", "scaled_dot_product_attention",
                            "causal_mask"):
                raise ValueError(f"{name}: unknown kind {kind!r}")
        self.suspects, self.labels = suspects, list(labels)
        g = torch.Generator().manual_seed(seed)
        L = len(self.labels)
        self.query, self.key = torch.randn(L, 64, generator=g), torch.randn(L, 64, generator=g)  # (L, 64) each
        self.dropdown = widgets.Dropdown(options=list(suspects), description="suspect",
                                         layout=widgets.Layout(width="420px"))
        self.dropdown.add_class("suspect-dropdown")
        self.head_dim = widgets.SelectionSlider(options=[4, 8, 16, 32, 64], value=16, description="head_dim",
                                                continuous_update=False, layout=widgets.Layout(width="420px"))
        self.head_dim.add_class("suspect-head-dim")
        self.knob = widgets.FloatSlider(value=1.0, min=0.25, max=4.0, step=0.25, description="temperature",
                                        continuous_update=False, layout=widgets.Layout(width="420px"))
        self.knob.add_class("suspect-knob")
        self._fit_knob()
        super().__init__([self.head_dim, self.knob], "suspect-readout", "suspect-chart", "760px",
                         rows=[self.dropdown, self.head_dim, self.knob])
        self.dropdown.observe(lambda change: self._pick(), names="value")

    def _fit_knob(self):
        """Name, range and value of the knob for the picked suspect's kind (disabled when it has none)."""
        kind = self.suspects[self.dropdown.value][0]
        if kind in self.KNOB:
            label, lo, hi, step, value = self.KNOB[kind]
            self.knob.description, self.knob.disabled = label, False
            self.knob.min, self.knob.max, self.knob.step, self.knob.value = lo, hi, step, value
        else:
            self.knob.description, self.knob.disabled = "(no knob)", True

    def _pick(self):
        with self.hold():                                                         # one redraw, after the knob moved
            self._fit_knob()

    def weights(self):
        """(reference, suspect) attention weights, (L, L) each, at the current settings."""
        kind, suspect, reference = self.suspects[self.dropdown.value]
        d = self.head_dim.value
        q, k = self.query[:, :d], self.key[:, :d]                                 # (L, d) each
        return tuple(_weights_by(kind, fn, q, k, self.knob.value).detach() for fn in (reference, suspect))

    def text(self):
        """The readout as plain text: settings, row sums and entropy of both, their largest difference."""
        ref, sus = self.weights()
        def stats(w):
            rows = w.sum(-1)
            ent = entropy(w.clamp_min(1e-12) / rows.clamp_min(1e-12)[:, None]).mean().item()
            return f"row sums {rows.min().item():.3f}..{rows.max().item():.3f}   mean entropy {ent:.3f} nats"
        knob = "" if self.knob.disabled else f"   {self.knob.description} = {self.knob.value:.2f}"
        return (f"{self.dropdown.value}: head_dim = {self.head_dim.value}{knob}\n"
                f"reference: {stats(ref)}\nsuspect:   {stats(sus)}\n"
                f"largest difference: {(sus - ref).abs().max().item():.4f}")

    def figure(self):
        """The chart: the reference's and the suspect's weights side by side, on one colour scale."""
        ref, sus = self.weights()
        fig = new_figure((7.6, 3.4))
        axes = fig.subplots(1, 2)
        vmax = max(1.0, sus.max().item())
        attention_heatmap(ref, self.labels, self.labels, ax=axes[0], title="reference", vmax=vmax)
        attention_heatmap(sus, self.labels, self.labels, ax=axes[1], title=self.dropdown.value, vmax=vmax)
        return fig


__all__ = ["SuspectExplorer"]
