"""Lesson 17's widget: RoPE turns a query and a key by their positions, and their score sees only the offset."""
import math

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ..rotary import apply_rotary, rotary_angles
from .panel import Panel

BASES = (100.0, 10000.0, 500000.0)


class RotaryExplorer(Panel):
    """A query and a key, turned by RoPE at positions m and n: one feature pair drawn as two arrows.

    RoPE (``attn_course.rotary.apply_rotary``, half-split pairs as in Hugging Face's Llama) turns pair i of
    a vector at position p, features (i, i + D/2), by the angle ``p * theta_i``, ``theta_i = base ** (-2i / D)``.
    The chart's left panel is pair i's plane: the query's pair turned by ``m theta_i`` and the key's by
    ``n theta_i`` (dashed: both at position 0); the right panel is the score ``q_m . k_n`` of all D features
    against the offset ``m - n``, the current one marked. The readout gives each angle, the offset, the
    pair's score and the whole score: moving m and n by the same amount (the button moves both by 1)
    changes both angles and neither score.

    Args:
        query, key: (D,) float tensors, D even (random ones, ``seed``, of ``head_dim`` features when None).
        m, n: initial positions of the query and the key (0 .. ``max_position``).
        pair: initial feature pair i (0 .. D/2 - 1). base: initial frequency base (``BASES``, or another
            positive number, then offered too). max_position: the sliders' largest position.

    Attributes:
        m_slider, n_slider, pair_slider (IntSlider), base_slider (SelectionSlider), shift_button (Button),
        readout (HTML), image (Image); ``state()`` returns the readout's numbers, ``score_curve()`` the
        score at every offset, ``text()`` the readout as text; ``set(m, n, pair, base)`` moves several
        controls and redraws once, ``shift(t)`` moves m and n together; ``bases`` lists the bases offered.

    Raises:
        ValueError: query and key not (D,) float tensors of one even D; a position, pair or base out of range.

    >>> w = RotaryExplorer(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), m=3, n=1, base=100.0)
    >>> round(w.state()["score"], 4) == round(math.cos(2.0), 4)     # D = 2: theta_0 = 1, offset 2 rad
    True
    """

    def __init__(self, query=None, key=None, m=5, n=2, pair=0, base=10000.0, max_position=32, head_dim=8, seed=0):
        if query is None or key is None:
            g = torch.Generator().manual_seed(seed)
            query, key = (torch.randn(head_dim, generator=g, dtype=torch.float64) for _ in range(2))   # (D,) each
        for name, t in (("query", query), ("key", key)):
            if not isinstance(t, torch.Tensor) or t.dim() != 1 or not t.is_floating_point() or t.shape[0] % 2:
                got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must be a float tensor (D,) with D even; got {got}")
        if query.shape != key.shape:
            raise ValueError(f"query and key must have one size D; got {tuple(query.shape)} and {tuple(key.shape)}")
        if not isinstance(max_position, int) or max_position < 1:
            raise ValueError(f"max_position must be an int >= 1; got {max_position!r}")
        self.query, self.key = (t.detach().double().cpu() for t in (query, key))
        D = self.query.shape[0]
        self._validate(m, n, pair, base, max_position, D)
        style, layout = {"description_width": "initial"}, widgets.Layout(width="420px")
        self.m_slider = widgets.IntSlider(value=m, min=0, max=max_position, description="query position m",
                                          continuous_update=False, style=style, layout=layout)
        self.m_slider.add_class("rotary-m-slider")
        self.n_slider = widgets.IntSlider(value=n, min=0, max=max_position, description="key position n",
                                          continuous_update=False, style=style, layout=layout)
        self.n_slider.add_class("rotary-n-slider")
        self.pair_slider = widgets.IntSlider(value=pair, min=0, max=D // 2 - 1, description="feature pair i",
                                             continuous_update=False, style=style, layout=layout)
        self.pair_slider.add_class("rotary-pair-slider")
        self.bases = sorted(set(BASES) | {float(base)})
        self.base_slider = widgets.SelectionSlider(options=[(f"{b:g}", b) for b in self.bases], value=float(base),
                                                   description="base", continuous_update=False, style=style,
                                                   layout=layout)
        self.base_slider.add_class("rotary-base-slider")
        self.shift_button = widgets.Button(description="move both by +1")
        self.shift_button.add_class("rotary-shift-button")
        self.shift_button.on_click(lambda _: self.shift(1))
        super().__init__([self.m_slider, self.n_slider, self.pair_slider, self.base_slider],
                         "rotary-readout", "rotary-chart", "760px",
                         rows=[widgets.HBox([self.m_slider, self.shift_button]), self.n_slider, self.pair_slider,
                               self.base_slider])

    @staticmethod
    def _validate(m, n, pair, base, max_position, D):
        for name, p in (("m", m), ("n", n)):
            if not isinstance(p, int) or not 0 <= p <= max_position:
                raise ValueError(f"{name} must be an int position in 0..{max_position}; got {p!r}")
        if not isinstance(pair, int) or not 0 <= pair < D // 2:
            raise ValueError(f"pair must be an int in 0..{D // 2 - 1} (D = {D}); got {pair!r}")
        if not isinstance(base, (int, float)) or base <= 0:
            raise ValueError(f"base must be a positive number; got {base!r}")

    def set(self, m=None, n=None, pair=None, base=None):
        """Move several controls at once (None leaves one as it is), then redraw once.

        Raises:
            ValueError: a position outside 0..max_position, a pair outside 0..D/2 - 1, a base not offered.
        """
        now = (self.m_slider.value, self.n_slider.value, self.pair_slider.value, self.base_slider.value)
        wanted = [now[j] if v is None else v for j, v in enumerate((m, n, pair, base))]
        self._validate(*wanted, self.m_slider.max, self.query.shape[0])
        if float(wanted[3]) not in self.bases:
            raise ValueError(f"base must be one of the bases offered, {self.bases}; got {wanted[3]!r}")
        with self.hold():
            for control, value in zip((self.m_slider, self.n_slider, self.pair_slider, self.base_slider), wanted):
                control.value = float(value) if control is self.base_slider else value

    def shift(self, t=1):
        """Move the query and the key by ``t`` positions together: the angles change, the scores do not.

        Raises:
            ValueError: m + t or n + t outside 0..max_position.
        """
        self.set(m=self.m_slider.value + t, n=self.n_slider.value + t)

    def update(self):
        """Redraw, and keep the button usable only while both positions can move by 1."""
        self.shift_button.disabled = max(self.m_slider.value, self.n_slider.value) >= self.m_slider.max
        super().update()

    def state(self):
        """The readout's numbers: ``theta`` (rad per position), the angles ``angle_query = m theta`` and
        ``angle_key = n theta`` of the current pair, ``offset`` m - n, the pair's turned 2-D vectors
        ``pair_query``, ``pair_key``, their dot product ``pair_score``, and ``score`` = q_m . k_n over all D."""
        m, n, i, base = self.m_slider.value, self.n_slider.value, self.pair_slider.value, self.base_slider.value
        D = self.query.shape[0]
        theta = rotary_angles(torch.tensor([1]), D, base, dtype=torch.float64)[0, i].item()   # 1 * theta_i
        q = apply_rotary(self.query[None], torch.tensor([m]), base)[0]            # (1, D) -> (D,)
        k = apply_rotary(self.key[None], torch.tensor([n]), base)[0]
        pair_q, pair_k = q[[i, i + D // 2]], k[[i, i + D // 2]]                    # (2,) each: features i, i + D/2
        return {"theta": theta, "angle_query": m * theta, "angle_key": n * theta, "offset": m - n,
                "pair_query": pair_q, "pair_key": pair_k, "pair_score": (pair_q @ pair_k).item(),
                "score": (q @ k).item()}

    def score_curve(self):
        """(offsets -max..max, q . k at each offset over all D, the current pair's part): the query at each
        offset against the key at 0, which is the score of every (m, n) with that m - n."""
        P, i, base = self.m_slider.max, self.pair_slider.value, self.base_slider.value
        D = self.query.shape[0]
        offsets = torch.arange(-P, P + 1)                                          # (2P+1,)
        q = apply_rotary(self.query.expand(len(offsets), D), offsets, base)        # (2P+1, D)
        k = self.key                                                               # at position 0: unturned
        pair = [i, i + D // 2]
        return offsets, q @ k, q[:, pair] @ k[pair]                               # (2P+1,) each

    def text(self):
        """The readout: the pair's frequency, each angle, the offset and both scores."""
        s, i, D = self.state(), self.pair_slider.value, self.query.shape[0]
        m, n, base = self.m_slider.value, self.n_slider.value, self.base_slider.value

        def angle(a):
            return f"{a:.3f} rad ({math.degrees(a) % 360:.1f} deg, mod 360)"
        return (f"pair i = {i} of {D // 2} (features {i} and {i + D // 2}): theta_{i} = {base:g} ** (-2*{i}/{D}) = "
                f"{s['theta']:.4g} rad per position\n"
                f"query at m = {m}: turned by m * theta_{i} = {angle(s['angle_query'])}\n"
                f"key   at n = {n}: turned by n * theta_{i} = {angle(s['angle_key'])}\n"
                f"offset m - n = {s['offset']}: the query is turned (m - n) * theta_{i} = "
                f"{angle(s['angle_query'] - s['angle_key'])} more than the key\n"
                f"score of pair {i}: {s['pair_score']:.4f}; score q_m . k_n over all D = {D} features: "
                f"{s['score']:.4f} (the same for every m, n with m - n = {s['offset']})")

    def figure(self):
        """Pair i's plane with the two turned arrows (dashed: unturned), and the score against the offset."""
        s, i = self.state(), self.pair_slider.value
        D = self.query.shape[0]
        fig = Figure(figsize=(7.6, 3.6))
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.15, top=0.88, wspace=0.3)
        ax = fig.add_subplot(1, 2, 1)
        pair = [i, i + D // 2]
        radius = max(self.query[pair].norm().item(), self.key[pair].norm().item(), 1e-6)
        for r in {round(self.query[pair].norm().item(), 6), round(self.key[pair].norm().item(), 6)}:
            ax.add_patch(Circle((0, 0), r, fill=False, color="0.8", linestyle=":"))
        for start, end, colour, label in ((self.query[pair], s["pair_query"], "tab:blue", "q"),
                                          (self.key[pair], s["pair_key"], "tab:orange", "k")):
            ax.annotate("", xy=start.tolist(), xytext=(0, 0),
                        arrowprops={"arrowstyle": "->", "color": colour, "alpha": 0.35, "linestyle": "--"})
            ax.annotate("", xy=end.tolist(), xytext=(0, 0), arrowprops={"arrowstyle": "-|>", "color": colour,
                                                                         "linewidth": 2})
            ax.text(*(1.12 * end).tolist(), f"{label}_{'m' if label == 'q' else 'n'}", color=colour,
                    ha="center", va="center")
        ax.set_xlim(-1.3 * radius, 1.3 * radius)
        ax.set_ylim(-1.3 * radius, 1.3 * radius)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.85", linewidth=0.5)
        ax.axvline(0, color="0.85", linewidth=0.5)
        ax.set_xlabel(f"feature {i}")
        ax.set_ylabel(f"feature {i + D // 2}")
        ax.set_title(f"pair {i}: q turned {s['angle_query']:.2f} rad, k {s['angle_key']:.2f} rad", fontsize=10)
        ax2 = fig.add_subplot(1, 2, 2)
        offsets, scores, pair_scores = self.score_curve()
        ax2.plot(offsets.tolist(), scores.tolist(), color="tab:green", label=f"all {D} features")
        ax2.plot(offsets.tolist(), pair_scores.tolist(), color="tab:purple", linestyle="--", label=f"pair {i}")
        ax2.plot([s["offset"]], [s["score"]], marker="o", color="tab:green")
        ax2.plot([s["offset"]], [s["pair_score"]], marker="o", color="tab:purple")
        ax2.axvline(s["offset"], color="0.7", linewidth=0.8)
        ax2.set_xlabel("offset m - n")
        ax2.set_ylabel("score q_m . k_n")
        ax2.legend(fontsize=7, loc="upper left", framealpha=0.85)
        ax2.set_title(f"m - n = {s['offset']}: score {s['score']:.3f}, whatever m and n", fontsize=10)
        return fig
