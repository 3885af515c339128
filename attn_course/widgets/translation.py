"""Lesson 09's widget: a number typed in, translated by the trained model, and its alignment drawn.

The model and greedy decoding live in ``attn_course.apps.translation``; the lesson's checks of
additive attention and of the translator's forward pass in ``attn_course.checks.translation``.
"""
import ipywidgets as widgets
import torch

from ..apps import translation
from ..data import number_words
from ..plot import attention_heatmap, new_figure
from .panel import Panel


class TranslationExplorer(Panel):
    """Type a number; see its English words, the model's French (greedy decoding), num2words' French,
    and the alignment: which English word each French word attended to.

    Args:
        model: a trained ``translation.Seq2Seq`` with attention.
        src_vocab, tgt_vocab: its vocabularies (``translation.build_vocab``).
        number: the number shown first (an int in 0..999,999,999).
        baseline: optional second ``Seq2Seq`` (e.g. without attention) whose translation is shown too.
        device: where the models live.

    Attributes:
        text_box (Text), readout (HTML), image (Image). ``set(number)`` does what typing does;
        ``translate(number)`` returns ``(english, french, attn_weights (T, S))``; ``text()`` the readout.
    """

    def __init__(self, model, src_vocab, tgt_vocab, number=97, baseline=None, device="cpu"):
        self.model, self.baseline, self.device = model, baseline, device
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.text_box = widgets.Text(value=str(number), description="number (0 - 999999999)",
                                     continuous_update=False, style={"description_width": "initial"},
                                     layout=widgets.Layout(width="360px"))
        self.text_box.add_class("translation-input")
        super().__init__([self.text_box], "translation-readout", "translation-chart", "760px")

    def set(self, number):
        """Show ``number`` (int or str), as if typed."""
        self.text_box.value = str(number)

    def number(self):
        """The typed number as an int, or None when the text is not a number in 0..999,999,999."""
        text = self.text_box.value.strip().replace(",", "").replace("_", "").replace(" ", "")
        return int(text) if text.isdigit() and int(text) < 10 ** 9 else None

    def translate(self, number, model=None):
        """``(english tokens, french tokens, attn_weights (T, S))`` of ``model`` (default: the model)."""
        model = self.model if model is None else model
        _, english, _ = number_words.pair(number)
        src = torch.tensor([self.src_vocab.encode(english)], device=self.device)   # (1, S)
        ids, weights = translation.greedy_decode(model, src, torch.zeros_like(src, dtype=torch.bool))
        french = translation.strip(ids[0].cpu(), self.tgt_vocab)
        return english, french, weights[0, :len(french) + 1].cpu()                # with the <eos> row if any

    def text(self):
        """The readout as plain text."""
        n = self.number()
        if n is None:
            return f"{self.text_box.value!r} is not a whole number from 0 to 999999999"
        english, french, _ = self.translate(n)
        reference = number_words.pair(n)[2]
        lines = [f"English:              {' '.join(english)}",
                 f"model (attention):    {' '.join(french)}   {'correct' if french == reference else 'WRONG'}"]
        if self.baseline is not None:
            other = self.translate(n, self.baseline)[1]
            lines.append(f"model (no attention): {' '.join(other)}   {'correct' if other == reference else 'WRONG'}")
        lines.append(f"num2words (French):   {' '.join(reference)}")
        return "\n".join(lines)

    def figure(self):
        """The chart: the (T, S) alignment, French words down, English words across (None: not a number)."""
        n = self.number()
        if n is None:
            return None
        english, french, weights = self.translate(n)
        fig = new_figure((0.42 * len(english) + 3.0, 0.36 * len(french) + 2.0))
        attention_heatmap(weights, (french + [translation.EOS])[:len(weights)], english, ax=fig.add_subplot(), annotate=False,
                          title=f"alignment for {n}")
        ax = fig.axes[0]
        ax.set_xlabel("English word (key)")
        ax.set_ylabel("French word (query)")
        return fig
