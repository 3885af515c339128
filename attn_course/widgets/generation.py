"""Lesson 15's widget: a temperature slider and a prompt -> sampled text, and where the last character looked.

Lesson 03's ``TemperatureExplorer`` divided one row of attention scores by T. Here the same
``softmax(z / T)`` acts on a language model's next-character logits: move the slider and the sampled
text goes from repetitive (T -> 0, nearly argmax) to noise (large T). The picture shows, for the last
generated character, how each head of one layer spread its attention over the context. The model and
``generate`` live in ``attn_course.apps.generation``, the lesson's checks of sampling and of the
model's forward pass in ``attn_course.checks.generation``.
"""
import html
import math

import ipywidgets as widgets
import torch

from ..apps.generation import generate
from ..attention import entropy
from ..plot import attention_heatmap, new_figure
from .panel import Panel


def _show(ch):
    return {"\n": "⏎", " ": "␣"}.get(ch, ch)


class GenerationExplorer(Panel):
    """Sample text from a character model with a temperature slider; see where the last character looked.

    Each update draws ``length`` characters after the prompt with ``generate(..., temperature=T,
    top_k=top_k, generator=torch.Generator().manual_seed(seed))``: the same settings always give the
    same text. The readout gives T, the mean entropy (in bits) of the next-character distributions
    along the way, and the text; the picture is the attention of the last generated character over
    its context (the last ``model.max_len`` characters), one row per head of the chosen layer.

    Args:
        model: a trained ``CharTransformer`` on the CPU. vocab: its ``CharVocab``.
        prompt: the initial prompt (characters of the vocabulary). temperature: initial T in 0.1 .. 2.0.
        length: characters sampled per update. top_k: None or an int passed to ``sample_next``.
        seed: seed of the sampling generator. layer: the block whose attention is drawn (-1: the last).

    Attributes:
        slider (FloatSlider, T), prompt (Text), seed (IntText), readout (HTML), image (Image);
        ``sample()`` -> the sampled continuation (str), ``last_attention()`` -> (H, S) weights,
        ``text()`` -> the readout as plain text.

    Raises:
        ValueError: a prompt character that is not in the vocabulary (shown in the readout, not raised,
            when typed into the widget).
    """

    def __init__(self, model, vocab, prompt="HAMLET\n", temperature=0.8, length=160, top_k=None, seed=0,
                 layer=-1):
        self.model, self.vocab, self.length, self.top_k, self.layer = model.eval(), vocab, length, top_k, layer
        vocab.encode(prompt)                                                       # ValueError if unknown
        self.slider = widgets.FloatSlider(
            value=temperature, min=0.1, max=2.0, step=0.05, description="softmax temperature",
            readout_format=".2f", continuous_update=False,
            style={"description_width": "initial"}, layout=widgets.Layout(width="480px"))
        self.slider.add_class("generation-temperature")
        self.prompt = widgets.Text(value=prompt, description="prompt", continuous_update=False,
                                   layout=widgets.Layout(width="480px"))
        self.seed = widgets.IntText(value=seed, description="seed", layout=widgets.Layout(width="200px"))
        super().__init__([self.slider, self.prompt, self.seed], "generation-readout", "generation-attention",
                         "760px", rows=[self.slider, widgets.HBox([self.prompt, self.seed])])

    def _prompt_ids(self):
        return torch.tensor([self.vocab.encode(self.prompt.value or "\n")])        # (1, L0)

    def _run(self):
        g = torch.Generator().manual_seed(int(self.seed.value))
        ids = generate(self.model, self._prompt_ids(), self.length, self.slider.value, self.top_k, g)  # (1, L0 + n)
        with torch.no_grad():
            context = ids[:, -self.model.max_len:]                                 # (1, S)
            logits, weights = self.model(context, need_weights=True)               # (1, S, V), [(1, H, S, S)]
            probs = torch.softmax(logits[0] / self.slider.value, dim=-1)           # (S, V)
        bits = entropy(probs).mean().item() / math.log(2)
        return ids, context[0], weights[self.layer][0, :, -1], bits                # last row: (H, S)

    def sample(self):
        """The sampled continuation (str, ``length`` characters) for the current settings."""
        ids = self._run()[0]
        return self.vocab.decode(ids[0, self._prompt_ids().shape[1]:])

    def last_attention(self):
        """(H, S) attention weights of the last generated character, one row per head; rows sum to 1."""
        return self._run()[2]

    def text(self):
        """The readout as plain text: temperature and entropy, then prompt + continuation."""
        ids, _, _, bits = self._run()
        return (f"T = {self.slider.value:.2f}   mean entropy of the next-character distribution = "
                f"{bits:.2f} bits (uniform over V={len(self.vocab)}: {math.log2(len(self.vocab)):.2f})\n"
                + self.vocab.decode(ids[0]))

    def update(self):
        """Redraw: T, the entropy and the text (the prompt in bold); the last character's attention."""
        try:
            ids, context, last, bits = self._run()
        except ValueError as exc:                                                  # a character not in the vocabulary
            self.show_text(str(exc))
            return
        prompt_len = self._prompt_ids().shape[1]
        text = self.vocab.decode(ids[0])
        self.show_html(f"<pre>T = {self.slider.value:.2f}   mean entropy {bits:.2f} bits\n"
                       f"<b>{html.escape(text[:prompt_len])}</b>{html.escape(text[prompt_len:])}</pre>")
        labels = [_show(ch) for ch in self.vocab.decode(context)]
        fig = new_figure((7.6, 0.35 * last.shape[0] + 1.4))
        ax = attention_heatmap(last, [f"head {h}" for h in range(last.shape[0])], labels, ax=fig.add_subplot(),
                               annotate=False, vmax=max(float(last.max()), 1e-6),   # colours span the weights
                               title=f"attention of the last character {_show(labels[-1])!r} "
                                     f"(block {self.layer % len(self.model.blocks)}) over its context")
        ax.tick_params(axis="x", labelrotation=0, labelsize=6)                     # one character per column
        self.show_figure(fig)
