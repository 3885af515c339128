"""Shared pytest hooks: train each application model once per run; mark the tests that grade notebooks;
print the mutation-suite table at the end."""
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

TABLE = Path(__file__).resolve().parents[1] / "test-artifacts" / "mutation_suite.md"
_START = time.time()


def pytest_configure(config):
    """One training cache for the whole run (``attn_course.training.replayable``): the first notebook to
    train a model (the solution under strict nbval, the lesson, or the browser test's kernel) trains it,
    and every later run of the same training, in any worker or kernel, replays it. Set
    ``ATTN_COURSE_TRAINING_CACHE=`` (empty) to train every time."""
    if hasattr(config, "workerinput") or "ATTN_COURSE_TRAINING_CACHE" in os.environ:
        return                                                   # xdist workers inherit the controller's
    config._training_cache = tempfile.mkdtemp(prefix="attn-course-training-")
    os.environ["ATTN_COURSE_TRAINING_CACHE"] = config._training_cache


@pytest.fixture(autouse=True)
def _tripwire_off():
    """The tripwire is armed by default (a check refuses an answer that calls the reference it tests, in
    the notebook as in grading); the package's tests call the checks on the references themselves, so
    they run with it off. Tests of the tripwire arm it themselves; each test starts from off."""
    from attn_course.checks import tripwire
    tripwire.enable(False)
    yield
    tripwire.enable(False)


def pytest_unconfigure(config):
    cache = getattr(config, "_training_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop("ATTN_COURSE_TRAINING_CACHE", None)


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
