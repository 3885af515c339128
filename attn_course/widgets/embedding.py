"""Lesson 01's widget: a batch of sentences, its padding and ``key_padding_mask``."""
import ipywidgets as widgets

from ..data import pad_batch, tokenize
from ..plot import new_figure, token_grid
from .panel import Panel


class PaddingExplorer(Panel):
    """Pick sentences and a maximum length; see the padded batch of ids (B, T) and its padding mask.

    Each chosen sentence is tokenized (``data.tokenize``), encoded with ``vocab``, cut to at most
    ``max_len`` tokens (truncation) and right-padded with ``vocab.pad_id`` to the longest kept length
    T (``data.pad_batch``). The chart is the id grid with padding shaded; the readout gives the
    shapes ``ids (B, T) -> embeddings (B, T, E)``, the padding per row (the True entries of
    ``key_padding_mask``, **True = padding**) and the share of the batch that is padding.

    Args:
        sentences: a non-empty list of str.
        vocab: a ``data.Vocab`` (tokens it lacks become ``<unk>``).
        embedding_dim: E in the shape readout (an int >= 1).
        selected: indices of the sentences chosen at first (default: all).
        max_len: the initial truncation length (default: the longest sentence, i.e. no truncation).

    Attributes:
        select (SelectMultiple over sentence indices), max_len (IntSlider), readout (HTML),
        image (Image); ``batch()`` returns ``(ids, key_padding_mask)``, ``text()`` the readout as text;
        ``set(selected, max_len)`` moves both controls and redraws once.

    Raises:
        ValueError: ``sentences`` empty, not all str, or without a single token; ``embedding_dim`` not an int >= 1; an index in
            ``selected`` outside 0..len(sentences)-1; ``max_len`` outside 1..longest sentence.

    >>> from attn_course import data
    >>> explorer = PaddingExplorer(data.sentences()[:2], data.Vocab([]), selected=[1])
    >>> [tuple(t.shape) for t in explorer.batch()]
    [(1, 4), (1, 4)]
    """

    def __init__(self, sentences, vocab, embedding_dim=16, selected=None, max_len=None):
        if not sentences or not all(isinstance(s, str) for s in sentences):
            raise ValueError(f"sentences must be a non-empty list of str; got {sentences!r:.80}")
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be an int >= 1; got {embedding_dim!r}")
        self.sentences, self.vocab, self.embedding_dim = list(sentences), vocab, embedding_dim
        self.token_ids = [vocab.encode(tokenize(s)) for s in self.sentences]
        longest = max(len(s) for s in self.token_ids)
        if longest == 0:
            raise ValueError(f"sentences must hold at least one token; got {sentences!r:.80}")
        selected = list(range(len(self.sentences))) if selected is None else list(selected)
        if any(not 0 <= i < len(self.sentences) for i in selected):
            raise ValueError(f"selected must hold indices in 0..{len(self.sentences) - 1}; got {selected}")
        max_len = longest if max_len is None else max_len
        if not 1 <= max_len <= longest:
            raise ValueError(f"max_len must lie in 1..{longest} (the longest sentence); got {max_len}")
        options = [(f"{i}: {s if len(s) <= 48 else s[:47] + '…'}", i) for i, s in enumerate(self.sentences)]
        self.select = widgets.SelectMultiple(
            options=options, value=tuple(selected), rows=min(len(options), 8),
            description="sentences", style={"description_width": "initial"},
            layout=widgets.Layout(width="520px"))
        self.select.add_class("padding-sentences")
        self.max_len = widgets.IntSlider(
            value=max_len, min=1, max=longest, description="max_len (truncation)",
            continuous_update=False, style={"description_width": "initial"},
            layout=widgets.Layout(width="520px"))
        self.max_len.add_class("padding-max-len")
        super().__init__([self.select, self.max_len], "padding-readout", "padding-chart", "760px")

    def set(self, selected=None, max_len=None):
        """Choose sentences (indices) and/or the truncation length, as the controls do; redraw once.

        Raises:
            ValueError: an index outside 0..len(sentences)-1, or ``max_len`` outside 1..longest.
        """
        if selected is not None and any(not 0 <= i < len(self.sentences) for i in selected):
            raise ValueError(f"selected must hold indices in 0..{len(self.sentences) - 1}; got {list(selected)}")
        if max_len is not None and not self.max_len.min <= max_len <= self.max_len.max:
            raise ValueError(f"max_len must lie in 1..{self.max_len.max}; got {max_len}")
        with self.hold():
            if selected is not None:
                self.select.value = tuple(selected)
            if max_len is not None:
                self.max_len.value = max_len

    def batch(self):
        """The chosen sentences, truncated and padded: ``(ids (B, T) int64, key_padding_mask (B, T) bool)``.

        Raises:
            ValueError: no sentence is chosen.
        """
        chosen = sorted(self.select.value)
        if not chosen:
            raise ValueError("choose at least one sentence; got none")
        return pad_batch([self.token_ids[i][:self.max_len.value] for i in chosen], self.vocab.pad_id)

    def text(self):
        """The readout as plain text: the shapes, the padding per row and in all."""
        if not self.select.value:
            return "no sentence chosen: pick at least one (Ctrl/Cmd-click to choose several)"
        ids, key_padding_mask = self.batch()
        (B, T), E = ids.shape, self.embedding_dim
        n_pad = int(key_padding_mask.sum())
        cut = sum(len(self.token_ids[i]) - min(len(self.token_ids[i]), T) for i in self.select.value)
        return (f"ids (B, T) = ({B}, {T}) -> embeddings (B, T, E) = ({B}, {T}, {E})\n"
                f"key_padding_mask (B, T), True = padding: per row {key_padding_mask.sum(1).tolist()}\n"
                f"padding: {n_pad} of {B * T} positions ({100 * n_pad / (B * T):.0f}%); "
                f"tokens cut by max_len={self.max_len.value}: {cut}")

    def figure(self):
        """The chart: the id grid (B, T) with padding shaded."""
        if not self.select.value:
            fig = new_figure((7.6, 1.0))
            fig.text(0.5, 0.5, "no sentence chosen", ha="center", va="center")
            return fig
        ids, key_padding_mask = self.batch()
        (B, T), chosen = ids.shape, sorted(self.select.value)
        fig = new_figure((max(0.5 * T + 1.2, 4.0), 0.5 * B + 1.0))
        token_grid(ids, [self.vocab.decode(row) for row in ids], key_padding_mask, ax=fig.add_subplot(),
                   row_labels=[f"sentence {i}" for i in chosen],
                   title=f"ids ({B}, {T}); grey = padding (key_padding_mask True)")
        return fig
