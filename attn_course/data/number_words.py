"""English -> French number words: a small, real translation task generated offline.

Source: ``num2words`` (https://github.com/savoirfairelinux/num2words, LGPL-2.1), which spells
integers in many languages with their real grammar. English: "ninety-seven", "two hundred and one",
"one million, two hundred thousand". French: "quatre-vingt-dix-sept" (4 x 20 + 17), "vingt et un",
"deux cents" but "deux cent un", "quatre-vingts" but "quatre-vingt mille", "mille" but "un million".

Tokens are words: English splits on spaces and before commas ("ninety-seven" is one token, "," is
one token); French splits on spaces ("quatre-vingt-dix-sept" is one token, "vingt et un" three).

Splits are seeded and deterministic. Every number of one or two digits goes to training (they are
the vocabulary); the validation and test sets draw the same count of numbers for every digit count
from 3 to ``max_digits``, and the training set draws its other numbers with a digit count uniform
over 3..``max_digits``. No number appears in two splits. Results are cached per argument set.

>>> pairs = splits(max_digits=4, train_size=300, val_size=20, test_size=40)
>>> pairs["test"][0]
(6153, ['six', 'thousand', ',', 'one', 'hundred', 'and', 'fifty-three'], ['six', 'mille', 'cent', 'cinquante-trois'])
"""
import functools
import random
import re


def _num2words():
    try:
        from num2words import num2words
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("the number-words data needs the package 'num2words' (LGPL-2.1); "
                                  "install it with `pip install num2words` (`make lab` does this)",
                                  name="num2words") from exc
    return num2words


def english_tokens(n):
    """English words of the integer ``n`` as tokens: 1001 -> ['one', 'thousand', 'and', 'one']."""
    return re.findall(r"[\w-]+|,", _num2words()(n, lang="en"))


def french_tokens(n):
    """French words of the integer ``n`` as tokens: 97 -> ['quatre-vingt-dix-sept']."""
    return _num2words()(n, lang="fr").split()


@functools.lru_cache(maxsize=None)
def pair(n):
    """``(n, english tokens, french tokens)`` for a non-negative integer ``n`` (cached)."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int; got {n!r}")
    return n, english_tokens(n), french_tokens(n)


def _draw(rng, digits):
    return rng.randrange(10 ** (digits - 1), 10 ** digits)


@functools.lru_cache(maxsize=8)
def splits(max_digits=9, train_size=30000, val_size=700, test_size=1400, seed=0):
    """Seeded, disjoint train / validation / test splits of (n, english, french) triples.

    Args:
        max_digits: the largest numbers have this many digits (3..12).
        train_size: training pairs, including all 100 numbers 0..99.
        val_size, test_size: held-out pairs, the same count for every digit count 3..max_digits
            (rounded down to a multiple of max_digits - 2).
        seed: the seed of the draw; the same arguments give the same splits on every machine.

    Returns:
        dict with keys "train", "val", "test": lists of ``(n, english tokens, french tokens)``.
        The held-out lists are ordered by digit count, then as drawn.

    Raises:
        ValueError: ``max_digits`` outside 3..12, or sizes too large for the numbers available.
    """
    if not 3 <= max_digits <= 12:
        raise ValueError(f"max_digits must be in 3..12; got {max_digits}")
    counts = range(3, max_digits + 1)
    per_val, per_test = val_size // len(counts), test_size // len(counts)
    if per_val + per_test > 450 or train_size < 100:
        raise ValueError(f"val_size={val_size} and test_size={test_size} leave too few 3-digit numbers "
                         f"for training, or train_size={train_size} < 100")
    rng = random.Random(seed)
    seen, held = set(range(100)), {"val": [], "test": []}
    for digits in counts:
        for name, size in (("val", per_val), ("test", per_test)):
            while len(held[name]) < size * (digits - 2):
                n = _draw(rng, digits)
                if n not in seen:
                    seen.add(n)
                    held[name].append(n)
    train = list(range(100))
    while len(train) < train_size:
        n = _draw(rng, rng.randint(3, max_digits))
        if n not in seen:
            seen.add(n)
            train.append(n)
    rng.shuffle(train)
    return {"train": [pair(n) for n in train], "val": [pair(n) for n in held["val"]],
            "test": [pair(n) for n in held["test"]]}
