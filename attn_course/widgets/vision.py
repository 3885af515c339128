"""Lesson 11's pictures and widget: attention maps over digits, and the query-patch picker on a photo."""
import math

import ipywidgets as widgets
from matplotlib.patches import Rectangle

from ..attention import entropy
from ..plot import new_figure
from .panel import Panel


def overlay(ax, image, attn_map, title=None, alpha=0.8):
    """Draw a grey image (H_img, W_img) with its attention map (h, w) stretched over it.

    Each cell is coloured yellow to red with an opacity proportional to its weight (the largest
    weight: ``alpha``), so cells with little attention stay see-through.
    """
    H, W = image.shape[-2:]
    ax.imshow(image.squeeze().detach().cpu().numpy(), cmap="gray_r", extent=(0, W, H, 0))
    attn_map = attn_map.detach().cpu().float()
    strength = (attn_map / attn_map.max().clamp_min(1e-12)).numpy()           # 0..1: low weight = see-through
    ax.imshow(attn_map.numpy(), cmap="autumn_r", alpha=alpha * strength, extent=(0, W, H, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


class PatchPicker(Panel):
    """Pick a query patch of a photo (two sliders) and see its attention over all patches.

    Args:
        image: float tensor (3, H, W) in [0, 1].
        attn_weights: (P, P) patch self-attention, P = rows * cols.
        grid: (rows, cols).
        query: (row, col) picked at first.

    Attributes: ``row``, ``col`` (IntSliders), ``readout`` (HTML), ``image`` (Image);
    ``pick(row, col)`` moves the sliders; ``weights()`` the query's (rows, cols) map; ``text()``.
    """

    def __init__(self, image, attn_weights, grid, query=(0, 0)):
        rows, cols = grid
        if attn_weights.shape != (rows * cols, rows * cols):
            raise ValueError(f"attn_weights must be (P, P) with P = {rows}*{cols}; got {tuple(attn_weights.shape)}")
        self.photo, self.attn_weights, self.grid = image.detach().cpu(), attn_weights.detach().cpu(), grid
        slider = lambda n, v, d: widgets.IntSlider(value=v, min=0, max=n - 1, description=d,
                                                   continuous_update=False)
        self.row, self.col = slider(rows, query[0], "query row"), slider(cols, query[1], "query col")
        self.row.add_class("patch-row")
        self.col.add_class("patch-col")
        super().__init__([self.row, self.col], "patch-readout", "patch-chart", "860px",
                         rows=[widgets.HBox([self.row, self.col])])

    def pick(self, row, col):
        """Move the sliders to the query patch (row, col); redraw once."""
        with self.hold():
            self.row.value, self.col.value = row, col

    def weights(self):
        """The query patch's attention over all patches, as a (rows, cols) map."""
        rows, cols = self.grid
        return self.attn_weights[self.row.value * cols + self.col.value].view(rows, cols)

    def text(self):
        """The readout as plain text: the query patch, its entropy, its top-3 patches."""
        w = self.weights()
        top = w.flatten().topk(3)
        cols = self.grid[1]
        spots = "  ".join(f"({j // cols}, {j % cols}) {v:.3f}" for v, j in zip(top.values.tolist(), top.indices.tolist()))
        return (f"query patch ({self.row.value}, {self.col.value})   entropy = {entropy(w.flatten()).item():.2f} nats "
                f"(uniform over {w.numel()} patches: {math.log(w.numel()):.2f})\ntop-3 patches: {spots}")

    def figure(self):
        """The chart: the photo with the query patch framed, and the same with its attention map over it."""
        rows, (_, H, W) = self.grid[0], self.photo.shape
        p = H // rows
        fig = new_figure((9.6, 3.4))
        ax0, ax1 = fig.subplots(1, 2)
        for ax in (ax0, ax1):
            ax.imshow(self.photo.permute(1, 2, 0).numpy(), extent=(0, W, H, 0))
            ax.add_patch(Rectangle((self.col.value * p, self.row.value * p), p, p, fill=False, edgecolor="cyan",
                                   linewidth=2))
            ax.set_xticks([])
            ax.set_yticks([])
        ax0.set_title("photo and the query patch", fontsize=9)
        ax1.imshow(self.weights().numpy(), cmap="magma", alpha=0.75, extent=(0, W, H, 0), interpolation="nearest")
        ax1.set_title("attention of the query patch over all patches", fontsize=9)
        return fig
