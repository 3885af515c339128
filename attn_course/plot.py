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


def attention_grid(matrices, titles=None, query_labels=None, key_labels=None, ncols=3, fig=None,
                   share_scale=True, vmin=None, vmax=None, cmap="viridis", annotate=None,
                   panel_size=(3.8, 3.4)):
    """Several (L, S) attention matrices side by side: one panel per scoring rule, head or layer.

    Every panel is an ``attention_heatmap``: queries down the rows, keys across the columns. With
    ``share_scale=True`` all panels use one colour range and one colorbar, so a colour means the same
    number in every panel; with ``share_scale=False`` each panel spans its own min..max with its own
    colorbar, so each panel's pattern shows even when the panels' ranges differ widely.

    Args:
        matrices: a sequence of N tensors or arrays, each 2-D (L, S), all of the same shape.
        titles: N strings (one per panel), or None.
        query_labels: L strings for the rows; key_labels: S strings for the columns.
        ncols: panels per row (an int >= 1); the grid has ceil(N / ncols) rows, unused panels hidden.
        fig: the Figure to draw on (e.g. ``new_figure(...)`` inside a widget); when None, a new pyplot
            figure of ``panel_size`` per panel.
        share_scale: one colour range and colorbar for all panels (True) or one per panel (False).
        vmin, vmax: the shared colour range; None means the smallest / largest entry of all panels.
            Ignored when ``share_scale=False``.
        cmap: a matplotlib colormap name.
        annotate: write each value in its cell (default: when L * S <= 100).
        panel_size: (width, height) of one panel in inches, used only when ``fig`` is None.

    Returns:
        the Figure.

    Raises:
        ValueError: no matrices; a matrix that is not 2-D; matrices of different shapes; ``titles``
            not of length N; ``ncols`` not an int >= 1; label counts that differ from L and S.

    >>> fig = attention_grid([torch.eye(3), torch.ones(3, 3) / 3], ["one-hot", "uniform"], ncols=2)
    >>> len([ax for ax in fig.axes if ax.get_visible() and ax.images])
    2
    """
    mats = [_as_2d(f"matrices[{i}]", m) for i, m in enumerate(matrices)]
    if not mats:
        raise ValueError("attention_grid needs at least one (L, S) matrix; got none")
    if len({tuple(m.shape) for m in mats}) > 1:
        raise ValueError(f"every matrix must have the same shape (L, S); got shapes "
                         f"{[tuple(m.shape) for m in mats]}")
    if titles is not None and len(titles) != len(mats):
        raise ValueError(f"titles needs one entry per matrix ({len(mats)}); got {len(titles)}")
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be an int >= 1; got {ncols!r}")
    n = len(mats)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    if fig is None:
        fig = plt.figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    if share_scale:
        vmin = min(m.min().item() for m in mats) if vmin is None else vmin
        vmax = max(m.max().item() for m in mats) if vmax is None else vmax
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_visible(False)
            continue
        attention_heatmap(mats[i], query_labels, key_labels, ax=ax, title=titles[i] if titles else None,
                          annotate=annotate, vmin=vmin if share_scale else None,
                          vmax=vmax if share_scale else None, cmap=cmap, colorbar=not share_scale)
        if i % ncols:
            ax.set_ylabel("")                     # the row's first panel names the axis
        if i + ncols < n:
            ax.set_xlabel("")                     # the column's last panel names the axis
    if share_scale:
        fig.colorbar(axes[0].images[0], ax=list(axes[:n]), shrink=0.8)
    return fig




def token_grid(ids, tokens=None, key_padding_mask=None, ax=None, title=None, row_labels=None,
               max_chars=8):
    """A padded batch of token ids (B, T) as a grid: one row per sequence, padding shaded.

    Each cell shows the token id, with the token above it when ``tokens`` are given. Cells where
    ``key_padding_mask`` is True (**True = padding**, as ``torch.nn.MultiheadAttention`` expects)
    are grey; the others are white.

    Args:
        ids: (B, T) integer tensor of token ids.
        tokens: None, or B sequences of T strings (e.g. ``vocab.decode(ids[b])`` for each row b);
            tokens longer than ``max_chars`` are cut and end in "…".
        key_padding_mask: None, or a (B, T) bool tensor, True = padding (shaded grey).
        ax: the Axes to draw on; a new pyplot figure sized to the grid when None.
        title: the Axes title.
        row_labels: B strings naming the rows (default ``b=0``, ``b=1``, ...).
        max_chars: the longest token written in full (an int >= 2).

    Returns:
        the Axes.

    Raises:
        ValueError: ``ids`` not a 2-D integer tensor; ``key_padding_mask`` not a bool tensor of the
            same shape (B, T); ``tokens`` not B rows of T strings; ``row_labels`` not of length B.

    >>> ax = token_grid(torch.tensor([[5, 6, 7], [8, 0, 0]]),
    ...                 key_padding_mask=torch.tensor([[False, False, False], [False, True, True]]))
    >>> ax.get_xlabel()
    'position t'
    """
    ids = torch.as_tensor(ids).detach().cpu()
    if ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"ids must be a 2-D integer tensor (B, T); got {ids.dtype} {tuple(ids.shape)}")
    B, T = ids.shape
    if key_padding_mask is not None:
        key_padding_mask = torch.as_tensor(key_padding_mask).detach().cpu()
        if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != ids.shape:
            raise ValueError(f"key_padding_mask must be a bool tensor of the shape of ids (B, T) = "
                             f"{(B, T)}; got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
    if tokens is not None and (len(tokens) != B or any(len(row) != T for row in tokens)):
        raise ValueError(f"tokens needs B={B} rows of T={T} strings; got rows of lengths "
                         f"{[len(row) for row in tokens]}")
    if row_labels is not None and len(row_labels) != B:
        raise ValueError(f"row_labels needs B={B} entries; got {len(row_labels)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.5 * T + 1.2, 0.5 * B + 1.0), layout="constrained")
    padded = key_padding_mask if key_padding_mask is not None else torch.zeros(B, T, dtype=torch.bool)
    ax.imshow(padded.float().numpy(), cmap="Greys", vmin=0.0, vmax=3.0, aspect="auto")
    for b in range(B):
        for t in range(T):
            text = str(ids[b, t].item())
            if tokens is not None:
                tok = str(tokens[b][t])
                text = (tok if len(tok) <= max_chars else tok[:max_chars - 1] + "…") + "\n" + text
            ax.text(t, b, text, ha="center", va="center", fontsize=7, linespacing=1.3,
                    in_layout=False)                       # inside the cells: no need to lay them out
    ax.set_xticks(range(T), range(T), fontsize=7)
    ax.set_yticks(range(B), row_labels if row_labels is not None else [f"b={b}" for b in range(B)])
    ax.set_xticks([x - 0.5 for x in range(1, T)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, B)], minor=True)
    ax.grid(which="minor", color="0.7", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("position t")
    ax.set_ylabel("sequence b")
    if title:
        ax.set_title(title)
    return ax
