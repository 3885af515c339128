"""Lesson 12's widget: a caption and one attention map per word."""
import ipywidgets as widgets

from ..apps.captioning import PAD, WORDS
from ..plot import new_figure
from .panel import Panel
from .vision import overlay


class CaptionExplorer(Panel):
    """Pick a test image (slider); see the generated caption and the attention map of each word.

    Args: images (N, 1, 8, W), words (N, T) generated ids (``PAD`` after ``<eos>``), attn_weights (N, T, S),
    labels (N, K) the true digits (``PAD`` after the k-th), grid (rows, cols) of the feature map
    (``model.encoder.grid``). ``pick(i)`` moves the slider; ``text()``.
    """

    def __init__(self, images, words, attn_weights, labels, grid=(4, 12), index=0):
        self.images, self.words, self.weights, self.labels, self.grid = images.cpu(), words.cpu(), \
            attn_weights.cpu(), labels.cpu(), grid
        self.slider = widgets.IntSlider(value=index, min=0, max=len(images) - 1, description="test image",
                                        continuous_update=False)
        self.slider.add_class("caption-slider")
        super().__init__([self.slider], "caption-readout", "caption-chart", "560px")

    def pick(self, index):
        """Move the slider to test image ``index``."""
        self.slider.value = index

    def text(self):
        """The readout as plain text: the generated caption and the true one."""
        i = self.slider.value
        said = " ".join(WORDS[w] for w in self.words[i].tolist() if w != PAD)
        truth = " ".join(WORDS[d] for d in self.labels[i].tolist() if d != PAD)
        return f"image {i}: generated '{said}'   true '{truth}'"

    def figure(self):
        """The chart: the image, then one attention map over it per generated word."""
        i, (rows, cols) = self.slider.value, self.grid
        T = max(1, int((self.words[i] != PAD).sum()))                               # the words written, <eos> included
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
        return fig
