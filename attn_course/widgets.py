"""Interactive controls for the lessons (ipywidgets).

Each widget draws with ``attn_course.plot.new_figure`` / ``figure_png`` into an ``ipywidgets.Image``
instead of calling ``plt.show()`` in a callback: pyplot is not thread-safe, and JupyterLab >= 4.4
with ipykernel 7 may run widget callbacks on a separate kernel thread. ``python -m attn_course.lab``
also turns that thread off (``commsOverSubshells: "disabled"``) for learners' own widgets.
"""
import math

import ipywidgets as widgets
import torch

from .attention import entropy, softmax_with_temperature
from .plot import figure_png, new_figure, weights_bar


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
        super().__init__([self.slider, self.readout, self.image])
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
        self.readout.value = f"<pre>{self.text()}</pre>"
        fig = new_figure((4.8, 2.6))
        weights_bar(self.weights(), self.labels, ax=fig.add_subplot(),
                    title=f"softmax(attn_scores / T),  T = {self.slider.value:.2f}")
        self.image.value = figure_png(fig)
