"""Lesson 04's widget: Gumbel-softmax samples and their temperature."""
import math

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from .. import hard
from ..attention import entropy
from ..plot import weights_bar
from .panel import Panel


class GumbelExplorer(Panel):
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
        self.resample.on_click(lambda button: setattr(self.seed_slider, "value",
                                                      (self.seed_slider.value + 1) % 100))
        super().__init__([self.slider, self.seed_slider], "gumbel-readout", "gumbel-chart", "960px",
                         rows=[self.slider, widgets.HBox([self.seed_slider, self.resample])])

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

    def figure(self):
        """The chart: softmax(logits), the shown sample with its hard pick, the pick frequencies."""
        s = self.stats()
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
        return fig
