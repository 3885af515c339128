"""The mutation suite: every deliberately broken implementation fails its check, nothing correct does.

`solutions/bug_answer_key.yml` lists every implementation in `attn_course.broken` with the reference
it breaks, the check that must catch it, and the kind of failure (`CheckFailure.kind`) that check must
report. For each entry the check must:

* raise `CheckFailure` of that kind on the broken implementation (thorough mode, as grading runs it);
* pass on the reference, in quick and thorough mode.

`tests/correct_variants.py` adds implementations written differently (einsum, loops, PyTorch's fused
ops, float64): all must pass. The table (bug -> the check that caught it, and how) is written to
`test-artifacts/mutation_suite.md` and printed at the end of the test run.
"""
import importlib
import inspect
import re
from pathlib import Path

import pytest
import torch
import yaml

import attn_course.broken
from attn_course import checks

from correct_variants import VARIANTS

ROOT = Path(__file__).resolve().parents[1]
KEY = yaml.safe_load((ROOT / "solutions" / "bug_answer_key.yml").read_text())
TABLE = ROOT / "test-artifacts" / "mutation_suite.md"
FIELDS = {"broken", "reference", "check", "caught_as", "lessons", "bug", "origin", "symptom", "fix"}


def resolve(dotted):
    """``attn_course.x.y`` or ``attn_course.x:y`` -> the object."""
    module, _, name = dotted.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), name)


def check_of(entry):
    name = entry["check"]
    return resolve(name) if ("." in name or ":" in name) else getattr(checks, name)


def as_called(entry, obj):
    """What the check receives: the object itself, or ``Class.forward`` taking the instance first (its last
    arguments passed by the names the entry lists in ``keywords``, when it lists any)."""
    if entry.get("call") == "forward":
        names = entry.get("keywords", [])
        return lambda module, *args: obj.forward(module, *args[:len(args) - len(names)],
                                                 **dict(zip(names, args[len(args) - len(names):])))
    return obj


def run_check(entry, obj, thorough):
    """None if the check passes; else the CheckFailure."""
    torch.manual_seed(0)
    try:
        check_of(entry)(as_called(entry, obj), thorough=thorough, **entry.get("check_kwargs", {}))
    except checks.CheckFailure as err:
        return err
    return None


def entry_id(entry):
    return entry["broken"]


def test_the_answer_key_covers_every_broken_implementation():
    listed = [e["broken"] for e in KEY]
    assert len(listed) == len(set(listed)), "an implementation is listed twice in bug_answer_key.yml"
    assert set(listed) == set(attn_course.broken.__all__), (
        f"in attn_course.broken but not in the key: {sorted(set(attn_course.broken.__all__) - set(listed))}; "
        f"in the key but not in attn_course.broken: {sorted(set(listed) - set(attn_course.broken.__all__))}")
    assert len(listed) >= 15


@pytest.mark.parametrize("entry", KEY, ids=entry_id)
def test_entry_is_complete_and_keeps_the_reference_signature_and_docstring(entry):
    assert FIELDS <= set(entry), f"{entry['broken']}: missing {sorted(FIELDS - set(entry))}"
    assert entry["caught_as"] in checks.KINDS
    broken, reference = getattr(attn_course.broken, entry["broken"]), resolve(entry["reference"])
    assert broken.__doc__ == reference.__doc__ and len(reference.__doc__) > 80
    assert inspect.signature(broken) == inspect.signature(reference)
    base = re.sub(r"_v\d+$", "", entry["broken"])
    assert base == reference.__name__, f"{entry['broken']} should be named after {reference.__name__}"


@pytest.mark.parametrize("entry", KEY, ids=entry_id)
def test_broken_implementation_is_caught_with_the_expected_kind(entry):
    err = run_check(entry, getattr(attn_course.broken, entry["broken"]), thorough=True)
    assert err is not None, f"{entry['broken']} survived {entry['check']}: a missing check"
    assert err.kind == entry["caught_as"], f"{entry['broken']}: caught as {err.kind}, expected {entry['caught_as']}: {err}"


@pytest.mark.parametrize("entry", KEY, ids=entry_id)
def test_reference_passes_its_check(entry):
    for thorough in (False, True):
        err = run_check(entry, resolve(entry["reference"]), thorough)
        assert err is None, f"{entry['reference']} fails {entry['check']}(thorough={thorough}): {err}"


VARIANT_CASES = [(name, fn) for name, fns in VARIANTS.items() for fn in fns]


@pytest.mark.parametrize("check_name, fn", VARIANT_CASES,
                         ids=[f"{n}-{getattr(f, '__name__', 'lambda')}" for n, f in VARIANT_CASES])
def test_correct_variant_passes(check_name, fn):
    for thorough in (False, True):
        torch.manual_seed(0)
        getattr(checks, check_name)(fn, thorough=thorough)


def test_every_check_has_a_correct_variant_or_a_reference_in_the_key():
    covered = set(VARIANTS) | {e["check"] for e in KEY}
    missing = [name for name in checks.__all__ if name.startswith("check_") and name not in covered]
    assert not missing, f"checks never run against correct code here: {missing}"


def test_mutation_table():
    """One pass over the whole key, in one process: the printed table, and 100 % caught / 0 false alarms."""
    rows, survivors, false_alarms = [], [], []
    for entry in KEY:
        broken = getattr(attn_course.broken, entry["broken"])
        quick, thorough = (run_check(entry, broken, t) for t in (False, True))
        if thorough is None:
            survivors.append(entry["broken"])
        for t in (False, True):
            if run_check(entry, resolve(entry["reference"]), t) is not None:
                false_alarms.append(f"{entry['reference']} (thorough={t})")
        first = str(thorough).splitlines()[0] if thorough else "SURVIVED"
        rows.append((entry["broken"], entry["bug"], entry["check"].rsplit(":", 1)[-1],
                     quick.kind if quick else "-", thorough.kind if thorough else "-", first[:140]))
    for name, fn in VARIANT_CASES:
        for t in (False, True):
            torch.manual_seed(0)
            try:
                getattr(checks, name)(fn, thorough=t)
            except checks.CheckFailure as err:
                false_alarms.append(f"{getattr(fn, '__name__', 'lambda')} ({name}, thorough={t}): {err}")
    caught = len(rows) - len(survivors)
    lines = ["| broken | bug | check | public | graded | first message |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    lines += ["", f"caught: {caught} / {len(rows)} broken implementations ({100 * caught / len(rows):.0f} %); "
                  f"correct code rejected: {len(false_alarms)} of {2 * len(rows) + 2 * len(VARIANT_CASES)} runs "
                  f"({len(KEY)} references and {len(VARIANT_CASES)} variants, quick and thorough)"]
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text("\n".join(lines) + "\n")
    assert not survivors, f"survived their checks: {survivors}"
    assert not false_alarms, f"correct code rejected: {false_alarms}"
