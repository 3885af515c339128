"""Offline text for the lessons: real sentences, a word tokenizer, a vocabulary and padding.

Nothing here downloads: the sentences are the opening lines of public-domain books, quoted with
their sources. Later lessons add loaders of larger data sets shipped inside installed packages.
"""
import re

import torch
from torch import nn

PAD, UNK = "<pad>", "<unk>"

# (sentence, source): opening lines of public-domain novels.
SENTENCES = [
    ("It was the best of times, it was the worst of times.", "Charles Dickens, A Tale of Two Cities (1859)"),
    ("Call me Ishmael.", "Herman Melville, Moby-Dick (1851)"),
    ("All happy families are alike; each unhappy family is unhappy in its own way.",
     "Leo Tolstoy, Anna Karenina (1878), tr. Constance Garnett"),
    ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
     "must be in want of a wife.", "Jane Austen, Pride and Prejudice (1813)"),
    ("Alice was beginning to get very tired of sitting by her sister on the bank.",
     "Lewis Carroll, Alice's Adventures in Wonderland (1865)"),
    ("The cat sat on the mat.", "the classic first sentence of language-model tutorials"),
]


def sentences():
    """The course's real sentences, a list of str (sources in ``SENTENCES``)."""
    return [text for text, _ in SENTENCES]


def tokenize(text):
    """Lower-case word tokens and punctuation: ``"Call me Ishmael."`` -> ``["call", "me", "ishmael", "."]``.

    >>> tokenize("Call me Ishmael.")
    ['call', 'me', 'ishmael', '.']
    """
    if not isinstance(text, str):
        raise ValueError(f"tokenize expects a str; got {type(text).__name__}")
    return re.findall(r"\w+(?:'\w+)?|[^\w\s]", text.lower())


class Vocab:
    """Token <-> id mapping. Id 0 is ``<pad>``, id 1 is ``<unk>``; other tokens by first appearance.

    >>> v = Vocab([["the", "cat"], ["the", "mat"]])
    >>> v.encode(["the", "dog"])
    [2, 1]
    >>> len(v)
    5
    """

    def __init__(self, token_lists):
        self.itos = [PAD, UNK]
        self.stoi = {PAD: 0, UNK: 1}
        for tokens in token_lists:
            for tok in tokens:
                if tok not in self.stoi:
                    self.stoi[tok] = len(self.itos)
                    self.itos.append(tok)

    pad_id, unk_id = 0, 1

    def __len__(self):
        return len(self.itos)

    def encode(self, tokens):
        """List of tokens -> list of ids (unknown tokens -> 1)."""
        return [self.stoi.get(tok, self.unk_id) for tok in tokens]

    def decode(self, ids):
        """List or 1-D tensor of ids -> list of tokens."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return [self.itos[i] for i in ids]


def pad_batch(sequences, pad_id=0):
    """Right-pad id sequences into one tensor and say where the padding is.

    Args:
        sequences: list of B lists of ints (token ids), lengths T_b >= 0, at least one sequence.
        pad_id: the id written into padded positions.

    Returns:
        (ids, key_padding_mask): ``ids`` (B, T) int64 with T = max T_b; ``key_padding_mask`` (B, T)
        bool, **True = padding**, as ``torch.nn.MultiheadAttention`` expects.

    Raises:
        ValueError: ``sequences`` is empty.

    >>> ids, mask = pad_batch([[5, 6, 7], [8]])
    >>> ids
    tensor([[5, 6, 7],
            [8, 0, 0]])
    >>> mask
    tensor([[False, False, False],
            [False,  True,  True]])
    """
    if len(sequences) == 0:
        raise ValueError("pad_batch needs at least one sequence; got an empty list")
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)   # (B, T)
    key_padding_mask = torch.ones(len(sequences), T, dtype=torch.bool)  # (B, T), True = padding
    for b, seq in enumerate(sequences):
        ids[b, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        key_padding_mask[b, :len(seq)] = False
    return ids, key_padding_mask


def token_embedding(vocab_size, embed_dim, pad_id=0, generator=None):
    """An ``nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)``, drawn from a seeded generator.

    The table (V, E) float32 is drawn from N(0, 1) on the CPU with ``generator`` (or torch's global
    one); the pad row is zero, and ``padding_idx`` keeps its gradient zero, so padding never learns.

    Args:
        vocab_size: V, a positive int. embed_dim: E, a positive int.
        pad_id: the pad token's id, in [0, V).
        generator: an optional ``torch.Generator`` on the CPU, for reproducible tables.

    Returns:
        ``nn.Embedding`` with ``weight`` (V, E) and ``padding_idx == pad_id``; ``embedding(ids)`` maps
        (B, T) int64 to (B, T, E).

    Raises:
        ValueError: a size that is not a positive int, or ``pad_id`` outside [0, V).

    References: Bengio et al. 2003, "A Neural Probabilistic Language Model"; Vaswani et al. 2017,
    section 3.4; PyTorch's ``torch.nn.Embedding`` (``padding_idx``).

    >>> emb = token_embedding(10, 4, pad_id=0, generator=torch.Generator().manual_seed(0))
    >>> emb.weight[0].tolist(), emb.padding_idx
    ([0.0, 0.0, 0.0, 0.0], 0)
    """
    for name, n in (("vocab_size", vocab_size), ("embed_dim", embed_dim)):
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"{name} must be a positive int; got {n!r}")
    if not 0 <= pad_id < vocab_size:
        raise ValueError(f"pad_id must lie in [0, vocab_size={vocab_size}); got {pad_id}")
    weight = torch.randn(vocab_size, embed_dim, generator=generator)       # (V, E)
    embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)    # zeroes the pad row of its own table
    with torch.no_grad():
        embedding.weight.copy_(weight)
        embedding.weight[pad_id] = 0.0
    return embedding
