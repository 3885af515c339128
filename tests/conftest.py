"""Shared pytest hooks: mark the tests that grade notebooks; print the mutation-suite table at the end."""
import time
from pathlib import Path

import pytest

TABLE = Path(__file__).resolve().parents[1] / "test-artifacts" / "mutation_suite.md"
_START = time.time()


def pytest_terminal_summary(terminalreporter):
    if TABLE.exists() and TABLE.stat().st_mtime >= _START:
        terminalreporter.section("mutation suite: bug -> the check that caught it")
        terminalreporter.write(TABLE.read_text())


def pytest_collection_modifyitems(items):
    """Every test that uses the graded corpus grades notebooks: mark it ``grading_run`` (``make test-fast``
    leaves those out)."""
    for item in items:
        if "corpus" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.grading_run)
