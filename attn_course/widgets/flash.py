"""Lesson 16's widget: FlashAttention's tiles, walked one step at a time, and what they save in memory."""
# ruff: noqa: E741 -- `l` is the running sum, the papers' ell (Dao et al. 2022), as in attn_course.flash
import math

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..attention import causal_mask, masked_softmax
from ..flash import online_softmax_finish, online_softmax_init, online_softmax_update
from .panel import Panel

LENGTHS = (16, 32, 48, 64, 96, 128)
BLOCKS = (4, 8, 16, 32)


class TilingExplorer(Panel):
    """Sequence length, block size, causal switch and a step slider over FlashAttention's loop.

    The loop (``attn_course.flash.tiled_attention``): for each block of ``block`` queries, the key
    blocks are read one after the other and folded into the running max ``m``, sum ``l`` and output
    ``acc`` by ``online_softmax_update``. The step slider stops the loop after that many tiles. The
    chart shows the (L, S) scores: tiles already read in colour (the final attention weights there),
    the tile being read outlined, tiles not read yet white, and tiles the causal loop skips grey. The
    second panel follows the current query block's first row: its running max and the gap between its
    output so far (``acc / l``) and the exact one. The readout gives both memories: the (L, S) weights
    of plain attention, and one tile plus the running state of the tiled loop, in bytes of float32.

    Args:
        query, key, value: (L_max, D) float tensors (L_max >= the longest length offered); the first L
            rows are used. Random ones (``seed``) when None.
        length: initial L = S (one of ``LENGTHS`` not above L_max). block: initial block size (``BLOCKS``).
        causal: initial state of the causal switch. D: the head size of the random tensors.

    Attributes:
        length_slider, block_slider (SelectionSlider), step_slider (IntSlider), causal_box (Checkbox),
        readout (HTML), image (Image); ``tiles()`` lists the tiles in loop order, ``state()`` runs the
        loop up to the current step, ``text()`` is the readout as text.

    Raises:
        ValueError: tensors that are not (L_max, D) with L_max >= length, or a length or block not offered.
    """

    def __init__(self, query=None, key=None, value=None, length=64, block=16, causal=False, D=16, seed=0):
        if query is None:
            g = torch.Generator().manual_seed(seed)
            query, key, value = (torch.randn(max(LENGTHS), D, generator=g) for _ in range(3))  # (L_max, D) each
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[0] < length:
                raise ValueError(f"{name} must be a tensor (L_max, D) with L_max >= length = {length}; got "
                                 f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if length not in LENGTHS or block not in BLOCKS:
            raise ValueError(f"length must be one of {LENGTHS} and block one of {BLOCKS}; got {length}, {block}")
        self.query, self.key, self.value = (t.detach().float().cpu() for t in (query, key, value))
        lengths = [n for n in LENGTHS if n <= self.query.shape[0]]
        style, layout = {"description_width": "initial"}, widgets.Layout(width="420px")
        self.length_slider = widgets.SelectionSlider(options=lengths, value=length, description="L = S",
                                                     continuous_update=False, style=style, layout=layout)
        self.length_slider.add_class("tiling-length-slider")
        self.block_slider = widgets.SelectionSlider(options=list(BLOCKS), value=block, description="block size",
                                                    continuous_update=False, style=style, layout=layout)
        self.block_slider.add_class("tiling-block-slider")
        self.causal_box = widgets.Checkbox(value=causal, description="causal", indent=False)
        self.causal_box.add_class("tiling-causal-toggle")
        self.step_slider = widgets.IntSlider(value=1, min=1, max=1, description="tiles read",
                                             continuous_update=False, style=style, layout=layout)
        self.step_slider.add_class("tiling-step-slider")
        self._resize_steps()
        for control in (self.length_slider, self.block_slider, self.causal_box):
            control.observe(self._resize_steps, names="value")
        super().__init__([self.length_slider, self.block_slider, self.causal_box, self.step_slider],
                         "tiling-readout", "tiling-chart", "760px",
                         rows=[widgets.HBox([self.length_slider, self.causal_box]), self.block_slider,
                               self.step_slider])

    def _resize_steps(self, change=None):
        """Keep the step slider within the number of tiles (a new length, block or causal switch);
        ipywidgets clamps its value when the maximum falls below it."""
        self.step_slider.max = len(self.tiles())

    def tiles(self):
        """The tiles in loop order: [(query block i, key block j)], without those the causal loop skips."""
        L, b = self.length_slider.value, self.block_slider.value
        n = math.ceil(L / b)
        return [(i, j) for i in range(n) for j in range(n) if not (self.causal_box.value and j * b > i * b + b - 1)]

    def scores(self):
        """The (L, S) scaled scores ``q k^T / sqrt(D)`` of the first L positions (only drawn, never kept by the loop)."""
        L = self.length_slider.value
        q, k = self.query[:L], self.key[:L]
        return q @ k.T / math.sqrt(q.shape[-1])                              # (L, D) @ (D, S) -> (L, S)

    def state(self):
        """Run the loop for the current query block up to the current step.

        Returns a dict: ``tile`` (i, j) being read, ``done`` (tiles read so far), ``m`` and ``l`` of the
        block's first row after this tile, ``gap`` = max |acc / l - exact output| over that row, and
        ``m_path``, ``gap_path``: m and gap after each of this query block's key blocks so far."""
        L, b = self.length_slider.value, self.block_slider.value
        order = self.tiles()
        done = order[:self.step_slider.value]
        i, j = done[-1]
        rows = slice(i * b, min(L, i * b + b))
        scores = self.scores()[rows]                                          # (Lb, S)
        allowed = causal_mask(L)[rows] if self.causal_box.value else torch.ones_like(scores, dtype=torch.bool)
        scores = scores.masked_fill(~allowed, float("-inf"))
        value = self.value[:L]                                                # (S, Dv)
        m, l, acc = online_softmax_init((rows.stop - rows.start,), value.shape[-1])
        exact = masked_softmax(scores) @ value                                # (Lb, Dv)
        m_path, gap_path = [], []
        for ii, jj in done:
            if ii == i:
                cols = slice(jj * b, min(L, jj * b + b))
                m, l, acc = online_softmax_update(m, l, acc, scores[:, cols], value[cols])
                m_path.append(m[0, 0].item())
                gap_path.append((online_softmax_finish(l, acc)[0] - exact[0]).abs().max().item())
        return {"tile": (i, j), "done": done, "m": m_path[-1], "l": l[0, 0].item(), "gap": gap_path[-1],
                "m_path": m_path, "gap_path": gap_path}

    def memory(self):
        """Bytes of float32: (plain attention's (L, S) weights, one tile + the running m, l, acc of a query block)."""
        L, b, D = self.length_slider.value, self.block_slider.value, self.value.shape[-1]
        return 4 * L * L, 4 * (b * b + b * (D + 2))

    def text(self):
        """The readout: settings, where the loop is, the row's running statistics, both memories."""
        L, b = self.length_slider.value, self.block_slider.value
        n, tiles, s = math.ceil(L / b), self.tiles(), self.state()
        i, j = s["tile"]
        naive, tiled = self.memory()
        return (f"L = S = {L}, block = {b}: {n} x {n} = {n * n} tiles, {n * n - len(tiles)} skipped "
                f"(causal: {'on' if self.causal_box.value else 'off'})\n"
                f"step {self.step_slider.value} of {len(tiles)}: query block {i} (rows {i * b}..{min(L, i * b + b) - 1}) "
                f"reads key block {j} (keys {j * b}..{min(L, j * b + b) - 1})\n"
                f"row {i * b}: running max m = {s['m']:.3f}, running sum l = {s['l']:.3f}, "
                f"|acc / l - exact output| = {s['gap']:.2e}\n"
                f"memory, float32: plain attention's weights (L, S) {naive:,} B; "
                f"one tile + running state {tiled:,} B ({naive / tiled:.1f}x less)")

    def figure(self):
        """The chart: the scores' tiles in loop order (read, current, not yet, skipped), and the row's running max."""
        L, b = self.length_slider.value, self.block_slider.value
        s = self.state()
        scores = self.scores()
        if self.causal_box.value:
            scores = scores.masked_fill(~causal_mask(L), float("nan"))          # masked cells: blank
        shown = torch.full((L, L), float("nan"))
        for i, j in s["done"]:
            shown[i * b:i * b + b, j * b:j * b + b] = scores[i * b:i * b + b, j * b:j * b + b]
        fig = Figure(figsize=(7.6, 3.6))
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.88, wspace=0.35)
        ax = fig.add_subplot(1, 2, 1)
        limit = float(self.scores().abs().max())
        ax.imshow(shown.numpy(), cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest")
        n = math.ceil(L / b)
        skipped = {(i, j) for i in range(n) for j in range(n)} - set(self.tiles())
        for i, j in skipped:
            ax.add_patch(Rectangle((j * b - 0.5, i * b - 0.5), b, b, facecolor="0.85", edgecolor="0.6",
                                   hatch="//", linewidth=0))
        i, j = s["tile"]
        ax.add_patch(Rectangle((j * b - 0.5, i * b - 0.5), b, b, fill=False, edgecolor="tab:orange", linewidth=2.5))
        for edge in range(0, L + 1, b):
            ax.axhline(edge - 0.5, color="0.6", linewidth=0.5)
            ax.axvline(edge - 0.5, color="0.6", linewidth=0.5)
        ax.set_xlim(-0.5, L - 0.5)
        ax.set_ylim(L - 0.5, -0.5)
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        ax.set_title(f"scores q.k / sqrt(D): {len(s['done'])} of {len(self.tiles())} tiles read", fontsize=10)
        ax2 = fig.add_subplot(1, 2, 2)
        gaps = [max(gap, 1e-9) for gap in s["gap_path"]]
        ax2.semilogy(range(len(gaps)), gaps, marker="o", color="tab:orange")
        ax2.set_xlabel("key blocks read by this query block")
        ax2.set_ylabel(f"row {i * b}: max |acc / l - exact output|")
        ax2.set_xlim(-0.5, n - 0.5)
        ax2.set_ylim(1e-9, 10.0)
        ax2.set_title(f"running max m = {s['m']:.3f}, sum l = {s['l']:.2f}", fontsize=10)
        return fig
