"""Pictures of attention: heatmaps with token labels, bar charts of one distribution.

Every function draws on a given matplotlib ``Axes`` (or a new one) and returns it; nothing calls
``plt.show()``. ``figure_png`` renders a figure without pyplot, which is what widgets use: pyplot is
not thread-safe, and widget callbacks may run on a kernel thread of their own.
"""
import io

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure


def _as_2d(name, t):
    t = torch.as_tensor(t).detach().cpu().float()
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (L, S) for a heatmap; got shape {tuple(t.shape)}. "
                         f"Pick one batch element and head first, e.g. attn_weights[0, 0].")
    return t


def attention_heatmap(attn_weights, query_labels=None, key_labels=None, ax=None, title=None,
                      annotate=None, vmin=0.0, vmax=1.0, cmap="viridis", colorbar=True):
    """Heatmap of an (L, S) attention matrix: queries down the rows, keys across the columns.

    Args:
        attn_weights: (L, S) tensor or array (weights, or scores with ``vmin=vmax=None``).
        query_labels: L strings for the rows; key_labels: S strings for the columns.
        ax: the Axes to draw on; a new figure when None.
        annotate: write each value in its cell (default: when L * S <= 100).

    Returns:
        the Axes.

    Raises:
        ValueError: not 2-D, or label counts that differ from L and S.
    """
    w = _as_2d("attn_weights", attn_weights)
    L, S = w.shape
    for name, labels, n in (("query_labels", query_labels, L), ("key_labels", key_labels, S)):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} needs {n} labels for a ({L}, {S}) matrix; got {len(labels)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.55 * S + 2.2, 0.45 * L + 1.4), layout="constrained")
    im = ax.imshow(w.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(S), key_labels if key_labels is not None else range(S), rotation=60,
                  ha="right", rotation_mode="anchor")
    ax.set_yticks(range(L), query_labels if query_labels is not None else range(L))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if title:
        ax.set_title(title)
    if annotate if annotate is not None else L * S <= 100:
        mid = (w.max() + w.min()) / 2
        for i in range(L):
            for j in range(S):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if w[i, j] > mid else "white")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8)
    return ax


def weights_bar(attn_weights, labels=None, ax=None, title=None, ylim=(0.0, 1.0)):
    """Bar chart of one distribution over S keys (a 1-D tensor of S weights).

    Raises:
        ValueError: not 1-D, or a label count that differs from S.
    """
    w = torch.as_tensor(attn_weights).detach().cpu().float()
    if w.dim() != 1:
        raise ValueError(f"weights_bar draws one row of S weights; got shape {tuple(w.shape)}")
    if labels is not None and len(labels) != len(w):
        raise ValueError(f"labels needs {len(w)} entries; got {len(labels)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.6), layout="constrained")
    ax.bar(range(len(w)), w.numpy(), color="C0")
    ax.set_xticks(range(len(w)), labels if labels is not None else range(len(w)), rotation=45,
                  ha="right", rotation_mode="anchor")
    ax.set_ylabel("attention weight")
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    return ax


def new_figure(figsize=(5, 3)):
    """A matplotlib Figure that is not registered with pyplot (safe inside widget callbacks)."""
    return Figure(figsize=figsize, layout="constrained")


def figure_png(fig, dpi=100):
    """Render a Figure to PNG bytes (for ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
