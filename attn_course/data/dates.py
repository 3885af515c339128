"""Dates as people write them -> ISO dates: a small translation task whose alignments cross.

Source: a date written in one locale's long, medium or short form, from the Unicode CLDR data that
Babel ships (https://babel.pocoo.org, BSD-3-Clause): "jeudi 3 juin 1999" (fr_FR, full),
"June 3, 1999" (en_US, long), "1999. jún. 3." (hu_HU, medium), "03.06.99" (de_DE, short). Target:
the ISO 8601 date, "1999-06-03". ISO writes year, month, day; most locales write day, month, year
(DMY) or month, day, year (MDY), so the decoder's first output characters come from the end of the
source and an attention map drawn as target x source shows crossing lines, as Bahdanau et al.
(2015, Fig. 3) saw for French adjectives. Hungarian writes year first (YMD): its alignments are
monotone.

Tokens. The source starts with the locale tag "<fr_FR>": without it "6/3/99" is June 3 (en_US) or
6 March (es_ES). The written date follows, split by ``re.findall(r"\\d|[^\\W\\d_]+|[^\\w\\s]", text)``:
every digit is a token, words are whole and keep their case, each punctuation mark is a token.
The target is the ISO string's ten characters. Dates run from 1950-01-01 to 2049-12-31, so a
two-digit year is never ambiguous (50-99 -> 19xx, 00-49 -> 20xx).

Each pair says where its fields sit in the source (``spans``, token indexes with the tag at 0, end
exclusive), found from Babel's pattern one field at a time, never by searching for digits.

Splits are seeded and deterministic. All dates of the range are shuffled once; validation takes
the first ``val_size``, test the next ``test_size``, training the next ``train_size``, so no date
appears in two splits (in any format), and the held-out sets do not change with ``train_size``.
Each pair's format is uniform over ``FORMATS``. Results are cached per argument set.

>>> p = pair(datetime.date(1999, 6, 3), "fr_FR/full")
>>> " ".join(p.src), "".join(p.tgt)
('<fr_FR> jeudi 3 juin 1 9 9 9', '1999-06-03')
>>> p.spans
{'weekday': (1, 2), 'day': (2, 3), 'month': (3, 4), 'year': (4, 8)}
>>> field_order("fr_FR/full"), field_order("en_US/short"), field_order("hu_HU/long")
('DMY', 'MDY', 'YMD')
>>> pairs = splits(train_size=200, val_size=20, test_size=20)
>>> pairs["test"][0]
DatePair(date=datetime.date(2026, 3, 4), fmt='hu_HU/long', src=['<hu_HU>', '2', '0', '2', '6', '.', 'március', '4', '.'], tgt=['2', '0', '2', '6', '-', '0', '3', '-', '0', '4'], spans={'year': (1, 5), 'month': (6, 7), 'day': (7, 8)})
"""
import datetime
import functools
import random
import re
from typing import NamedTuple

LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "hu_HU")
FORMATS = tuple(f"{locale}/{width}" for locale in LOCALES for width in ("full", "long", "medium", "short"))
FIRST_DATE, LAST_DATE = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)
NUM_DATES = (LAST_DATE - FIRST_DATE).days + 1  # 36524 + 1 days, 25 leap years

# Babel's pattern letters -> field name (CLDR "Date Field Symbol Table").
_FIELDS = {"y": "year", "M": "month", "L": "month", "d": "day", "E": "weekday", "c": "weekday"}


def _babel_dates():
    try:
        import babel.dates
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("the dates data needs the package 'Babel' (BSD-3-Clause); "
                                  "install it with `pip install Babel` (`make lab` does this)",
                                  name="babel") from exc
    return babel.dates


def tokenize(text):
    """Source tokens of a written date: ``"3. Juni 1999"`` -> ``['3', '.', 'Juni', '1', '9', '9', '9']``."""
    return re.findall(r"\d|[^\W\d_]+|[^\w\s]", text)


@functools.lru_cache(maxsize=None)
def _pieces(fmt_label):
    """The label's Babel pattern as a list of ``(field letters or None, literal text)``."""
    if fmt_label not in FORMATS:
        raise ValueError(f"unknown date format {fmt_label!r}; expected one of {FORMATS}")
    locale, width = fmt_label.split("/")
    bd = _babel_dates()
    pattern = bd.get_date_format(width, locale=locale).pattern
    return [(None, value) if kind == "chars" else (value[0] * value[1], "")
            for kind, value in bd.tokenize_pattern(pattern)]


def field_order(fmt_label):
    """The order of year, month and day in the format: ``"fr_FR/long"`` -> ``"DMY"``.

    Raises:
        ValueError: ``fmt_label`` is not in ``FORMATS``.
    """
    letters = [_FIELDS.get(field[0], "")[:1].upper() for field, _ in _pieces(fmt_label) if field]
    return "".join(c for c in letters if c in "YMD")


def reorders(fmt_label):
    """True unless the format writes year, month, day in ISO's order (then alignments are monotone)."""
    return field_order(fmt_label) != "YMD"


def _check_date(date):
    if not isinstance(date, datetime.date) or not FIRST_DATE <= date <= LAST_DATE:
        raise ValueError(f"date must be a datetime.date in {FIRST_DATE}..{LAST_DATE}; got {date!r}")


def _source(date, fmt_label):
    """``(tokens, spans)`` of a date in a format, built one pattern piece at a time."""
    _check_date(date)
    pieces = _pieces(fmt_label)
    locale = fmt_label.split("/")[0]
    fields = _babel_dates().DateTimeFormat(date, locale)
    tokens, spans = [f"<{locale}>"], {}
    for field, literal in pieces:
        piece = tokenize(fields[field] if field else literal)
        if field and field[0] in _FIELDS:
            spans[_FIELDS[field[0]]] = (len(tokens), len(tokens) + len(piece))
        tokens += piece
    return tokens, spans


def source_tokens(date, fmt_label):
    """The locale tag, then the date written in ``fmt_label``, as tokens.

    ``source_tokens(datetime.date(1999, 6, 3), "en_US/short")`` ->
    ``['<en_US>', '6', '/', '3', '/', '9', '9']``.

    Raises:
        ValueError: ``date`` outside 1950-01-01..2049-12-31, or ``fmt_label`` not in ``FORMATS``.
    """
    return _source(date, fmt_label)[0]


def target_tokens(date):
    """The ISO date's characters: ``datetime.date(1999, 6, 3)`` -> ``['1', '9', '9', '9', '-', '0', '6', ...]``."""
    _check_date(date)
    return list(date.isoformat())


class DatePair(NamedTuple):
    """One example: the date, its format label, source and target tokens, and the source's field spans.

    ``spans`` maps "year", "month", "day" (and "weekday" when written) to ``(start, end)`` token
    indexes into ``src`` (the tag is index 0; end exclusive).
    """
    date: datetime.date
    fmt: str
    src: list
    tgt: list
    spans: dict


@functools.lru_cache(maxsize=None)
def pair(date, fmt_label):
    """The ``DatePair`` of ``date`` written in ``fmt_label`` (cached); ValueError as ``source_tokens``."""
    src, spans = _source(date, fmt_label)
    return DatePair(date, fmt_label, src, target_tokens(date), spans)


@functools.lru_cache(maxsize=8)
def splits(train_size=20000, val_size=1000, test_size=2000, seed=0):
    """Seeded train / validation / test splits of ``DatePair``, disjoint in dates.

    Args:
        train_size, val_size, test_size: pairs per split, non-negative ints; together at most the
            36525 dates of 1950-01-01..2049-12-31.
        seed: the seed of the draw; the same arguments give the same splits on every machine.

    Returns:
        dict with keys "train", "val", "test": lists of ``DatePair``, in drawn order, each format
        drawn uniformly from ``FORMATS``. "val" and "test" depend only on their sizes and ``seed``.

    Raises:
        ValueError: a negative size, or sizes that add up to more than 36525.
    """
    sizes = {"val": val_size, "test": test_size, "train": train_size}
    if any(not isinstance(n, int) or n < 0 for n in sizes.values()) or sum(sizes.values()) > NUM_DATES:
        raise ValueError(f"sizes must be non-negative ints adding up to at most {NUM_DATES} dates; got "
                         f"train_size={train_size}, val_size={val_size}, test_size={test_size}")
    rng = random.Random(seed)
    days = list(range(NUM_DATES))
    rng.shuffle(days)
    out, start = {}, 0
    for name, size in sizes.items():
        dates = [FIRST_DATE + datetime.timedelta(days=day) for day in days[start:start + size]]
        out[name] = [pair(date, rng.choice(FORMATS)) for date in dates]
        start += size
    return {name: out[name] for name in ("train", "val", "test")}


def read(text):
    """The date a typed source names: ``"<fr_FR> jeudi 3 juin 1999"`` -> ``datetime.date(1999, 6, 3)``.

    For a widget's reference answer, independent of any model: the locale tag, then a date in one of the
    locale's formats (a month name, wide or abbreviated, or three numbers in the order of the locale's
    short format). The weekday, when written, is not read. A two-digit year maps to 1950-2049.

    Raises:
        ValueError: no known locale tag first, not one month and two numbers (or three numbers), or a date
            that does not exist or lies outside 1950-01-01..2049-12-31.

    >>> read("<en_US> Thursday, June 3, 1999"), read("<es_ES> 3/6/99")
    (datetime.date(1999, 6, 3), datetime.date(1999, 6, 3))
    """
    tag, _, rest = text.strip().partition(" ")
    locale = tag.strip("<>")
    if not (tag.startswith("<") and tag.endswith(">")) or locale not in LOCALES:
        raise ValueError(f"start with a locale tag, one of {', '.join('<' + loc + '>' for loc in LOCALES)}; "
                         f"got {tag!r}")
    babel_dates = _babel_dates()
    month_names = {name.lower().rstrip("."): month
                   for width in ("wide", "abbreviated") for context in ("format", "stand-alone")
                   for month, name in babel_dates.get_month_names(width, context, locale).items()}
    numbers, month, digits = [], None, ""
    for token in tokenize(rest) + [""]:
        if token.isdigit():
            digits += token
            continue
        if digits:
            numbers.append(digits)
            digits = ""
        if token.lower() in month_names:
            month = month_names[token.lower()]
    if month is None:
        order = field_order(f"{locale}/short")                                # every numeric format's order
        if len(numbers) != 3:
            raise ValueError(f"expected a day, a month and a year in the order {order}; got {rest!r}")
        fields = dict(zip(order, numbers))
    else:
        order = field_order(f"{locale}/long").replace("M", "")
        if len(numbers) != 2:
            raise ValueError(f"expected a month name, a day and a year; got {rest!r}")
        fields = dict(zip(order, numbers), M=str(month))
    year = int(fields["Y"])
    if len(fields["Y"]) <= 2:
        year += 1900 if year >= 50 else 2000
    date = datetime.date(year, int(fields["M"]), int(fields["D"]))           # ValueError for 31 June
    _check_date(date)
    return date
