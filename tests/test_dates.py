"""Dates data: locale-written dates -> ISO dates, tokens, field spans, seeded disjoint splits."""
import collections
import datetime
import functools
import hashlib
import os
import random
import subprocess
import sys

import babel.dates
import pytest

from attn_course.data import dates as dd

D = datetime.date


# ----------------------------------------------------------------- hand-worked examples
def test_tokens_and_spans_by_hand():
    p = dd.pair(D(1999, 6, 3), "fr_FR/full")
    assert p.src == ["<fr_FR>", "jeudi", "3", "juin", "1", "9", "9", "9"]
    assert p.tgt == ["1", "9", "9", "9", "-", "0", "6", "-", "0", "3"]
    assert p.spans == {"weekday": (1, 2), "day": (2, 3), "month": (3, 4), "year": (4, 8)}
    # Day 6 and month 6 are the same digits: the spans still tell them apart.
    p = dd.pair(D(2006, 6, 6), "en_GB/short")
    assert p.src == ["<en_GB>", "0", "6", "/", "0", "6", "/", "2", "0", "0", "6"]
    assert p.spans == {"day": (1, 3), "month": (4, 6), "year": (7, 11)}
    p = dd.pair(D(2023, 12, 25), "de_DE/full")
    assert p.src == ["<de_DE>", "Montag", ",", "2", "5", ".", "Dezember", "2", "0", "2", "3"]
    assert p.spans == {"weekday": (1, 2), "day": (3, 5), "month": (6, 7), "year": (7, 11)}
    p = dd.pair(D(1999, 6, 3), "hu_HU/medium")
    assert p.src == ["<hu_HU>", "1", "9", "9", "9", ".", "jún", ".", "3", "."]
    assert p.spans == {"year": (1, 5), "month": (6, 8), "day": (8, 9)}
    assert dd.source_tokens(D(1999, 6, 3), "en_US/short") == ["<en_US>", "6", "/", "3", "/", "9", "9"]
    assert dd.target_tokens(D(1950, 1, 1)) == list("1950-01-01")


def test_the_locale_tag_is_needed():
    us, es = dd.pair(D(1999, 6, 3), "en_US/short"), dd.pair(D(1999, 3, 6), "es_ES/short")
    assert us.src[1:] == es.src[1:] == ["6", "/", "3", "/", "9", "9"]
    assert us.src[0] != es.src[0] and us.tgt != es.tgt


def test_field_orders():
    expected = {"en_US": "MDY", "hu_HU": "YMD"}
    for fmt in dd.FORMATS:
        order = expected.get(fmt.split("/")[0], "DMY")
        assert dd.field_order(fmt) == order, fmt
        assert dd.reorders(fmt) == (order != "YMD"), fmt
    assert len(dd.FORMATS) == len(set(dd.FORMATS)) == 4 * len(dd.LOCALES)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown date format"):
        dd.source_tokens(D(2000, 1, 1), "fr_FR/huge")
    with pytest.raises(ValueError, match="1950-01-01..2049-12-31"):
        dd.pair(D(2050, 1, 1), "fr_FR/long")
    with pytest.raises(ValueError):
        dd.target_tokens("2000-01-01")
    with pytest.raises(ValueError, match="at most 36525"):
        dd.splits(train_size=36000, val_size=1000, test_size=0)
    with pytest.raises(ValueError):
        dd.splits(train_size=-1)


# ----------------------------------------------------------------- decoding, independent of the spans' code
@functools.lru_cache(maxsize=None)
def _names(kind, locale):
    """{written name: number} of Babel's wide and abbreviated month (1..12) or weekday (0..6) names."""
    get = babel.dates.get_month_names if kind == "month" else babel.dates.get_day_names
    out = {}
    for width in ("wide", "abbreviated"):
        for number, name in get(width, context="format", locale=locale).items():
            assert out.setdefault(name.replace(" ", ""), number) == number  # one name, one number
    return out


def _decode(p):
    """The date that the tokens inside ``p.spans`` say, read as a person would read them."""
    locale = p.src[0][1:-1]
    text = {field: "".join(p.src[start:end]) for field, (start, end) in p.spans.items()}
    assert text["day"].isdigit() and len(text["day"]) in (1, 2), text
    if text["month"].isdigit():
        assert len(text["month"]) in (1, 2), text
        month = int(text["month"])
    else:
        month = _names("month", locale)[text["month"]]
    assert text["year"].isdigit() and len(text["year"]) in (2, 4), text
    year = int(text["year"])
    if len(text["year"]) == 2:
        year += 1900 if year >= 50 else 2000
    if "weekday" in p.spans:
        assert _names("weekday", locale)[text["weekday"]] == D(year, month, int(text["day"])).weekday()
    return D(year, month, int(text["day"]))


def _check_pair(p):
    assert p.src[0] == f"<{p.fmt.split('/')[0]}>" and p.src.count(p.src[0]) == 1
    assert D.fromisoformat("".join(p.tgt)) == p.date
    assert _decode(p) == p.date, p
    # spans: in range, disjoint, ordered as field_order says, and every digit belongs to a field
    ranges = sorted(p.spans.values())
    assert all(1 <= s < e <= len(p.src) for s, e in ranges)
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(ranges, ranges[1:]))
    order = sorted(("year", "month", "day"), key=lambda f: p.spans[f])
    assert "".join(f[0].upper() for f in order) == dd.field_order(p.fmt)
    inside = {i for s, e in ranges for i in range(s, e)}
    assert not [t for i, t in enumerate(p.src) if t.isdigit() and i not in inside], p
    # the tokens are Babel's text, minus the whitespace
    locale, width = p.fmt.split("/")
    written = babel.dates.format_date(p.date, format=width, locale=locale)
    assert "".join(p.src[1:]) == "".join(written.split())


@pytest.mark.parametrize("fmt", dd.FORMATS)
def test_every_format_decodes_and_is_one_to_one(fmt):
    days = [D(1999, 1, 1) + datetime.timedelta(days=i) for i in range(365)]
    days += [D(2006, 1, 1) + datetime.timedelta(days=i) for i in range(365)] + [D(1950, 1, 1), D(2049, 12, 31)]
    seen = {}
    for day in days:
        p = dd.pair(day, fmt)
        _check_pair(p)
        assert seen.setdefault(tuple(p.src), day) == day, (fmt, day, seen[tuple(p.src)])


# ----------------------------------------------------------------- splits
def test_splits_disjoint_decodable_and_balanced():
    pairs = dd.splits()
    assert [len(pairs[k]) for k in ("train", "val", "test")] == [20000, 1000, 2000]
    dates = {k: {p.date for p in v} for k, v in pairs.items()}
    assert [len(dates[k]) for k in ("train", "val", "test")] == [20000, 1000, 2000]  # no date twice
    assert not dates["train"] & dates["val"] and not dates["train"] & dates["test"]
    assert not dates["val"] & dates["test"]
    for p in pairs["train"] + pairs["val"] + pairs["test"]:
        _check_pair(p)
    counts = collections.Counter(p.fmt for p in pairs["train"])
    expected = len(pairs["train"]) / len(dd.FORMATS)
    assert set(counts) == set(dd.FORMATS)
    assert all(0.85 * expected < n < 1.15 * expected for n in counts.values()), counts
    orders = collections.Counter(dd.field_order(p.fmt) for p in pairs["test"])
    assert {"DMY", "MDY", "YMD"} <= set(orders), orders
    years = [p.date.year for p in pairs["train"]]
    assert min(years) == 1950 and max(years) == 2049


def test_splits_deterministic_and_seeded():
    a = dd.splits(train_size=500, val_size=50, test_size=50, seed=3)
    dd.splits.cache_clear()
    dd.pair.cache_clear()
    b = dd.splits(train_size=500, val_size=50, test_size=50, seed=3)
    assert a == b and a is not b
    bigger = dd.splits(train_size=800, val_size=50, test_size=50, seed=3)
    assert bigger["val"] == a["val"] and bigger["test"] == a["test"]
    other = dd.splits(train_size=500, val_size=50, test_size=50, seed=4)
    assert [p.date for p in other["test"]] != [p.date for p in a["test"]]


def test_splits_same_in_a_fresh_process():
    code = ("import hashlib; from attn_course.data import dates; "
            "print(hashlib.sha256(repr(dates.splits(train_size=300, val_size=30, test_size=30, seed=5))"
            ".encode()).hexdigest())")
    here = hashlib.sha256(repr(dd.splits(train_size=300, val_size=30, test_size=30, seed=5)).encode()).hexdigest()
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another str hash than this process's
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == here


@pytest.mark.parametrize("fmt", dd.FORMATS)
def test_read_gives_back_the_date_of_every_format(fmt):
    locale, width = fmt.split("/")
    rng = random.Random(fmt)
    for _ in range(150):
        day = dd.FIRST_DATE + datetime.timedelta(days=rng.randrange(dd.NUM_DATES))
        text = f"<{locale}> " + babel.dates.format_date(day, format=width, locale=locale)
        assert dd.read(text) == day, text


@pytest.mark.parametrize("text, message", [("3 juin 1999", "locale tag"), ("<xx_XX> 3 juin 1999", "locale tag"),
                                           ("<fr_FR> 3 1999", "day, a month and a year"),
                                           ("<fr_FR> 31 juin 1999", "day is out of range"),
                                           ("<en_GB> 3 June 2077", "1950-01-01..2049-12-31")])
def test_read_refuses_what_is_not_a_date_of_the_range(text, message):
    with pytest.raises(ValueError, match=message):
        dd.read(text)
