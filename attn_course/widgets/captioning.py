"""Lesson 12's widget: a caption and one attention map per word."""
import html

import ipywidgets as widgets

from ..apps.captioning import WORDS
from ..plot import figure_png, new_figure
from .vision import overlay


class CaptionExplorer(widgets.VBox):
    """Pick a test image (slider); see the generated caption and the attention map of each word.

    Args: images (N, 1, 8, W), words (N, T) generated ids, attn_weights (N, T, S), labels (N, n)
    the true digits, grid (rows, cols) of the feature map. ``pick(i)`` moves the slider; ``text()``.
    """

    def __init__(self, images, words, attn_weights, labels, grid=(4, 12), index=0):
        self.images, self.words, self.weights, self.labels, self.grid = images.cpu(), words.cpu(), \
            attn_weights.cpu(), labels.cpu(), grid
        self.slider = widgets.IntSlider(value=index, min=0, max=len(images) - 1, description="test image",
                                        continuous_update=False)
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="560px"))
        self.slider.add_class("caption-slider")
        self.readout.add_class("caption-readout")
        self.image.add_class("caption-chart")
        super().__init__([self.slider, self.readout, self.image])
        self.slider.observe(lambda change: self.update(), names="value")
        self.update()

    def pick(self, index):
        self.slider.value = index

    def text(self):
        i = self.slider.value
        said = " ".join(WORDS[w] for w in self.words[i].tolist())
        truth = " ".join(WORDS[d] for d in self.labels[i].tolist())
        return f"image {i}: generated '{said}'   true '{truth}'"

    def update(self):
        self.readout.value = f"<pre>{html.escape(self.text())}</pre>"          # "<eos>" is text, not a tag
        i, (rows, cols) = self.slider.value, self.grid
        T = self.words.shape[1]
        fig = new_figure((5.5, 0.9 * (T + 1) + 0.3))
        axes = fig.subplots(T + 1, 1)
        H, W = self.images.shape[-2:]
        axes[0].imshow(self.images[i, 0].numpy(), cmap="gray_r", extent=(0, W, H, 0))
        axes[0].set_title("image", fontsize=9, loc="left")
        axes[0].set_xticks([])
        axes[0].set_yticks([])
        for t, ax in enumerate(axes[1:]):
            overlay(ax, self.images[i], self.weights[i, t].view(rows, cols))
            ax.set_title(f"word {t}: '{WORDS[self.words[i, t]]}'", fontsize=9, loc="left")
        self.image.value = figure_png(fig)
