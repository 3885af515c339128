"""Lesson 13's pictures and widget: a clip's spectrogram with the attention over its frames drawn under it.

``draw_clip`` draws one clip; ``SpeechExplorer`` picks a voice and a digit and shows what the model heard.
The model lives in ``attn_course.apps.speech``, the lesson's checks of attention pooling and of the
subsampled padding mask in ``attn_course.checks.speech``.
"""
import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from ..apps.speech import pad_frames
from ..data.spoken_digits import WORDS
from .panel import Panel


def draw_clip(ax_spec, ax_attn, frames, attn_weights, voiced=None, title=None, stride=2):
    """Draw one clip: log-mel spectrogram (top axes) and attention over its frames (bottom axes).

    Args:
        frames: (T, F) dB. attn_weights: (ceil(T / stride),) weights of the encoder frames, or None (then only
            the voiced frames are drawn); encoder frame t' is drawn over input frames stride * t' .. + stride - 1.
        voiced: (T,) bool or None: voiced frames are shaded in the attention axes.
    """
    T = frames.shape[0]
    ax_spec.imshow(frames.T.numpy(), origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                   extent=(-0.5, T - 0.5, -0.5, frames.shape[1] - 0.5))
    ax_spec.set(ylabel="mel band", xticks=[], title=title)
    top = 1.0 if attn_weights is None else float(attn_weights.max()) * 1.1
    if voiced is not None:
        ax_attn.fill_between(range(T), 0, voiced.float().numpy() * top, step="mid", color="C2", alpha=0.25,
                             label="voiced frames", linewidth=0)
    if attn_weights is not None:
        centres = torch.arange(len(attn_weights)) * stride - 0.5
        ax_attn.bar(centres.numpy(), attn_weights.numpy(), width=stride, align="edge", color="C0",
                    label="attn_weights")
    ax_attn.legend(loc="upper right", fontsize=7, frameon=False)
    ax_attn.set(xlim=(-0.5, T - 0.5), ylim=(0, top), xlabel="frame (10 ms)",
                ylabel="voiced" if attn_weights is None else "attn_weights")


class SpeechExplorer(Panel):
    """Pick a voice and a digit; see the clip's spectrogram, where the model attends, and what it says.

    Args:
        model: a trained ``SpokenDigitClassifier``. clips: a ``spoken_digits.Clips`` (e.g. the test clips).
        device: where the model lives.

    Attributes:
        voice (Dropdown), digit (ToggleButtons), readout (HTML), image (Image);
        ``set(voice, digit)`` moves both and redraws once; ``result()`` returns the current clip's index,
        prediction, probabilities (10,), attention weights and mass on voiced frames; ``text()`` the readout.

    Raises:
        ValueError: ``clips`` is empty.
    """

    def __init__(self, model, clips, device="cpu"):
        if len(clips) == 0:
            raise ValueError("SpeechExplorer needs at least one clip")
        self.model, self.clips, self.device = model, clips, device
        self.voiced_masks = clips.voiced()
        names = sorted(set(clips.voice))
        self.voice = widgets.Dropdown(options=names, value=names[0], description="voice")
        self.voice.add_class("speech-voice")
        self.digit = widgets.ToggleButtons(options=list(range(10)), value=0, description="digit",
                                           style={"button_width": "32px"})
        self.digit.add_class("speech-digit")
        super().__init__([self.voice, self.digit], "speech-readout", "speech-chart", "640px")

    def set(self, voice=None, digit=None):
        """Move the controls (None keeps one), then redraw once."""
        with self.hold():
            if voice is not None:
                self.voice.value = voice
            if digit is not None:
                self.digit.value = digit

    def index(self):
        """The first clip of the chosen voice and digit, or None when the voice never said it."""
        for i, (v, y) in enumerate(zip(self.clips.voice, self.clips.labels.tolist())):
            if v == self.voice.value and y == self.digit.value:
                return i
        return None

    @torch.no_grad()
    def result(self):
        """The current clip's ``index``, ``prediction``, ``probs`` (10,), ``attn_weights`` (ceil(T / 2),),
        ``voiced`` (T,) and ``mass_on_voiced``; None when the voice never said the digit."""
        i = self.index()
        if i is None:
            return None
        self.model.eval()
        x, key_padding_mask = pad_frames([self.clips.frames[i]])                   # (1, T, F), (1, T)
        logits, attn_weights = self.model(x.to(self.device), key_padding_mask.to(self.device))
        probs = torch.softmax(logits[0].cpu(), -1)                                 # (10,)
        weights = attn_weights[0].cpu()                                            # (ceil(T / 2),)
        voiced = self.voiced_masks[i]
        return {"index": i, "prediction": int(probs.argmax()), "probs": probs, "attn_weights": weights,
                "voiced": voiced, "mass_on_voiced": weights[voiced[::2]].sum().item()}

    def text(self):
        """The readout as plain text: what was said and heard, the top 3, the attention on voiced frames."""
        r = self.result()
        if r is None:
            return f"voice {self.voice.value} has no clip of the digit {self.digit.value}"
        top = torch.topk(r["probs"], 3)
        said = WORDS[self.digit.value]
        heard = WORDS[r["prediction"]]
        return (f"voice {self.voice.value}, said '{said}': heard '{heard}' "
                f"({'right' if heard == said else 'WRONG'})\n"
                f"top 3: " + ", ".join(f"{WORDS[j]} {p:.2f}" for p, j in zip(top.values.tolist(), top.indices.tolist()))
                + f"\nattention on voiced frames: {r['mass_on_voiced']:.2f} "
                f"(voiced frames are {r['voiced'].float().mean().item():.0%} of the clip)")

    def figure(self):
        """The chart: the clip's spectrogram over the attention on its frames (empty axes without a clip)."""
        r = self.result()
        fig = Figure(figsize=(6.4, 3.6))
        fig.subplots_adjust(left=0.11, right=0.98, bottom=0.14, top=0.91, hspace=0.08)
        ax_spec, ax_attn = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        if r is not None:
            draw_clip(ax_spec, ax_attn, self.clips.frames[r["index"]], r["attn_weights"], r["voiced"],
                      title=f"{self.voice.value}: '{WORDS[self.digit.value]}' -> '{WORDS[r['prediction']]}'")
        return fig
