"""Shared pytest hooks: print the mutation-suite table at the end of a run that produced it."""
import time
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "test-artifacts" / "mutation_suite.md"
_START = time.time()


def pytest_terminal_summary(terminalreporter):
    if TABLE.exists() and TABLE.stat().st_mtime >= _START:
        terminalreporter.section("mutation suite: bug -> the check that caught it")
        terminalreporter.write(TABLE.read_text())
