"""The classroom grader (`attn-course grade`) on a corpus of hostile and broken submissions.

The corpus (tests/grading_corpus) is generated from lesson 03 as handed out and its solution: the
solution, the untouched lesson, each broken implementation of attn_course.broken pasted in, answers
that merely call the reference, an infinite loop, sys.exit() and os._exit(), errors at import and at
top level, megabytes of output, a memory hog, a notebook that attacks files outside its folder, one
that reads the answer key and rewrites the hidden tests, one that opens network connections,
malformed JSON, a non-notebook, unknown lessons, and two names that differ only in case; files that
attack the grader itself (a FIFO, JSON nested 200,000 deep, an integer of 5,000 digits, a cell whose
source is a number, a 255-byte name, a name that is a spreadsheet formula, one with control
characters). One run of the command grades it all (2 jobs); every row of grades.csv must be as
expected, and no submission may change (sha256 before and after).
"""
import csv
import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import grading_corpus
import pytest

from attn_course import checks
from attn_course.checks import tripwire
from attn_course.grading import assign, grader, report, sandbox, submissions

ROOT = Path(__file__).resolve().parents[1]
LESSON = "03_softmax_and_context"
TIMEOUT = 30  # seconds per submission: a lesson 03 notebook takes 2-10 s graded on 2 busy cores
ISOLATED = sandbox.isolated()
HOSTILE = ("escape_files.ipynb", "reads_answer_key.ipynb", "network.ipynb")


def _sha256s(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())
            if p.is_file()}                                                  # a FIFO would block


def _grade(submissions, out, *extra, timeout=900, secret=None):
    env = {**os.environ, "ATTN_COURSE_GRADER_SECRET": secret} if secret else None    # must not reach a notebook
    return subprocess.run([sys.executable, "-m", "attn_course.grading.cli", "grade", str(submissions), "--out", str(out),
                           "--no-progress", *extra], capture_output=True, text=True, timeout=timeout, env=env)


class _Listener:
    """A TCP server on the host's loopback that records every connection it accepts."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port, self.accepted = self.sock.getsockname()[1], []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            self.accepted.append(addr)
            conn.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading")
    submissions, out, token = base / "submissions", base / "out", uuid.uuid4().hex[:12]
    listener = _Listener()
    expected = grading_corpus.build(submissions, LESSON, out_dir=out, port=listener.port, token=token,
                                    hostile=ISOLATED)
    victim = Path(grading_corpus.shm_victim(token))
    victim.write_text("a host file the grader's helpers must never delete")
    before = _sha256s(submissions)
    run = _grade(submissions, out, "--timeout", str(TIMEOUT), "--jobs", "2", secret=token)
    in_csv = {report.csv_cell(name): name for name in expected}                 # names as neutralised there
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, {in_csv.get(r["submission"], r["submission"]): r for r in reader}
    listener.sock.close()
    victim_kept = victim.is_file()
    victim.unlink(missing_ok=True)
    return dict(victim_kept=victim_kept, base=base, submissions=submissions, out=out, token=token, expected=expected, before=before,
                after=_sha256s(submissions), run=run, header=header, rows=rows, listener=listener,
                points=report.question_points(assign.autograder(LESSON)))


def test_command_succeeds_and_prints_a_summary(corpus):
    run = corpus["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert "mean" in run.stdout and "status" in run.stdout and "grades.csv" in run.stdout, run.stdout
    assert f"timeout after {TIMEOUT} s" in run.stdout                      # the status counts
    assert (corpus["out"] / "grading.log").stat().st_size < 1 << 20       # megabytes of output stay out


def test_csv_columns(corpus):
    assert corpus["header"] == ["submission", "lesson", *corpus["points"], "total", "max", "status"]


def test_one_row_per_submission(corpus):
    assert set(corpus["rows"]) == set(corpus["expected"])


@pytest.mark.parametrize("name", grading_corpus.names(LESSON))
def test_row_is_as_expected(corpus, name):
    if name not in corpus["expected"]:
        pytest.skip(f"{name} is left out where the system refuses namespaces ({sandbox.probe()})")
    row, expected = corpus["rows"][name], corpus["expected"][name]
    problems = grading_corpus.matches(expected, row, corpus["points"])
    assert not problems, f"{name} ({expected.what}): " + "; ".join(problems) + f"\nrow: {row}"
    if expected.lesson:
        scores = [float(row[q]) for q in corpus["points"]]
        assert float(row["total"]) == sum(scores) and float(row["max"]) == sum(corpus["points"].values())


def test_no_submission_changed(corpus):
    assert corpus["after"] == corpus["before"]


def test_nothing_escaped(corpus):
    token = corpus["token"]
    leftovers = [p for folder in (corpus["submissions"], corpus["out"], ROOT, ROOT / "attn_course", Path("/tmp"),
                                  Path("/var/tmp"), corpus["base"]) for p in folder.glob(f"*pwned*{token}*")]
    assert not leftovers


def test_no_host_file_in_dev_shm_was_deleted(corpus):
    assert corpus["victim_kept"]


def test_no_ipc_object_outlives_grading(corpus):
    key = grading_corpus.sysv_key(corpus["token"])
    keys = [int(line.split()[0]) for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
    assert key not in keys


def test_in_process_cheats_score_nothing(corpus):
    """Patching the checks, otter or torch, a lying tensor subclass, a forged result: 0 points each."""
    feedback = corpus["out"] / "feedback"
    assert "score **0 / 8**" in (feedback / "patches_the_checks.md").read_text()
    assert "q1_softmax_with_temperature: 0 / 3" in (feedback / "tensor_subclass.md").read_text()
    assert "aten._softmax" in (feedback / "calls_aliases.md").read_text()


def test_the_grader_environment_does_not_reach_feedback(corpus):
    text = (corpus["out"] / "feedback" / "leaks_environment.md").read_text()
    assert "environment: {" in text and corpus["token"] not in text and "ATTN_COURSE_GRADER_SECRET" not in text


@pytest.mark.skipif(not ISOLATED, reason="this system refuses a new network namespace")
def test_no_network(corpus):
    assert corpus["listener"].accepted == []
    assert corpus["rows"]["network.ipynb"]["q1_softmax_with_temperature"] == "3"


def test_feedback_files(corpus):
    feedback = corpus["out"] / "feedback"
    names = sorted(p.name for p in feedback.iterdir())
    assert len(names) == len(corpus["expected"]) == len({n.lower() for n in names})   # the twins do not collide
    twins = [n for n in names if n.lower().startswith("twin_")]
    assert len(twins) == 2 and {"score **8 / 8**" in (feedback / n).read_text() for n in twins} == {True, False}
    untouched = (feedback / "untouched.md").read_text()
    assert "public test `test_q1_public` (1 point): failed" in untouched
    assert "not implemented yet (Exercise 1: write softmax_with_temperature)" in untouched   # public message
    assert "hidden test `test_q1_hidden` (2 points): failed" in untouched
    assert "thorough" not in untouched and "batched" not in untouched                        # hidden: name only
    calls = (feedback / "calls_reference.md").read_text()
    assert "[reference]" in calls and "attn_course.attention.softmax_with_temperature" in calls
    assert "scores no points when graded" in calls
    assert "MemoryError" in (feedback / "resource_hog.md").read_text()
    assert "timeout after" in (feedback / "infinite_loop.md").read_text()
    assert "a loop that never ends" in (feedback / "infinite_loop.md").read_text()


def test_hostile_names_cannot_inject_into_the_outputs(corpus):
    out, rows = corpus["out"], corpus["rows"]
    assert rows[grading_corpus.FORMULA_NAME]["submission"] == "'" + grading_corpus.FORMULA_NAME   # a text cell
    control = rows[grading_corpus.CONTROL_NAME]["submission"]
    assert control == "ctrl\\x0a00:00:00 forged.ipynb: ok \\x1b[2J\\x85.ipynb"
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert not [c for c in cells if any(ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0 for ch in c)]
    log = (out / "grading.log").read_text(encoding="utf-8")
    assert "\x1b" not in log and "\x85" not in log and "ctrl\\x0a00:00:00 forged" in log
    assert not [line for line in log.split("\n") if line.startswith("00:00:00 forged")]


def test_every_feedback_file_is_written_and_small(corpus):
    feedback = corpus["out"] / "feedback"
    sizes = {p.name: p.stat().st_size for p in feedback.iterdir()}
    assert len(sizes) == len(corpus["expected"]) and max(sizes.values()) < 64 << 10
    long = [n for n in sizes if n.startswith("long_")]
    assert len(long) == 1 and len(long[0].encode()) <= 255 and "~" in long[0]
    text = "\n".join(p.read_text(encoding="utf-8") for p in feedback.iterdir())
    assert "\x1b" not in text and "# ctrl\\x0a00:00:00 forged" in text


@pytest.mark.grading_run
def test_empty_folder_writes_a_header_and_exits_1(tmp_path):
    (tmp_path / "empty").mkdir()
    run = _grade(tmp_path / "empty", tmp_path / "out", timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "no submissions" in run.stdout
    assert (tmp_path / "out" / "grades.csv").read_text().splitlines() == ["submission,lesson,total,max,status"]


@pytest.mark.grading_run
def test_empty_folder_with_a_lesson_has_its_question_columns(tmp_path):
    (tmp_path / "empty").mkdir()
    assert grader.grade(tmp_path / "empty", tmp_path / "out", lesson="3", progress=False) == 1
    header = (tmp_path / "out" / "grades.csv").read_text().splitlines()[0]
    assert header == "submission,lesson,q1_softmax_with_temperature,q2_attend,q3_bug_hunt,total,max,status"


@pytest.mark.grading_run
def test_bad_arguments_exit_2(tmp_path, capsys):
    assert _grade(tmp_path / "missing", tmp_path / "out", timeout=120).returncode == 2
    (tmp_path / "subs").mkdir()
    assert grader.grade(tmp_path / "subs", tmp_path / "out", lesson="99", progress=False) == 2
    assert "known lessons" in capsys.readouterr().out


@pytest.mark.grading_run
def test_every_lesson_solution_gets_full_marks(tmp_path):
    """Each lesson's solution, graded together (columns lesson:question): the tripwire spares real answers."""
    stems = [p.stem for p in assign.sources() if (ROOT / "lessons" / f"{p.stem}.ipynb").exists()]
    expected = {}
    for stem in stems:
        built = grading_corpus.build(tmp_path / "all", stem, basic=True)
        expected[f"{stem}_solution.ipynb"] = built[f"{stem}_solution.ipynb"]
    (tmp_path / "subs").mkdir()
    for name in expected:
        (tmp_path / "all" / name).rename(tmp_path / "subs" / name)
    run = _grade(tmp_path / "subs", tmp_path / "out", "--timeout", "300", "--jobs", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    with open(tmp_path / "out" / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {r["submission"]: r for r in csv.DictReader(f)}
    problems = []
    for name, want in expected.items():
        prefix = f"{want.lesson}:" if len(stems) > 1 else ""
        points = {prefix + q: p for q, p in report.question_points(assign.autograder(want.lesson)).items()}
        want.scores = {prefix + q: v for q, v in want.scores.items()}
        problems += [f"{name}: {p}" for p in grading_corpus.matches(want, rows[name], points)]
    log = (tmp_path / "out" / "grading.log").read_text()
    for name in expected:                  # the cells grading skips (otter_ignore) leave no answer without a name
        line = next(line for line in log.splitlines() if f" {name}: " in line)
        if " 0 cells raised" not in line:
            problems.append(f"{name}: cells raised while graded: {line}")
    assert not problems, "\n".join(problems) + "\n" + log[-3000:]


# ----------------------------------------------------------------- pieces, without grading anything
def test_resolve_and_detect_lesson():
    known = {"03_softmax_and_context": None, "05_self_attention": None}
    assert submissions.resolve_lesson("3", known) == "03_softmax_and_context"
    assert submissions.resolve_lesson("03_soft", known) == "03_softmax_and_context"
    with pytest.raises(ValueError, match="known lessons"):
        submissions.resolve_lesson("04", known)
    meta = {"metadata": {"otter": {"assignment_name": "05_self_attention"}}}
    assert submissions.detect_lesson(meta, "alice_03_softmax_and_context.ipynb", known) == ("05_self_attention", None)
    assert submissions.detect_lesson({}, "Alice_03_SOFTMAX_and_context (1).ipynb", known)[0] == "03_softmax_and_context"
    assert submissions.detect_lesson({}, "alice.ipynb", known)[0] is None
    forced = submissions.detect_lesson(meta, "x.ipynb", known, forced="03_softmax_and_context")
    assert forced[0] is None and forced[1].startswith("wrong lesson")


def test_feedback_names_are_unique_ignoring_case():
    names = submissions._feedback_names(["Bob.ipynb", "bob.ipynb", "BOB.ipynb", "bob.txt", "a/b.ipynb"])
    assert len({n.lower() for n in names.values()}) == 5
    assert names["BOB.ipynb"] == "BOB.md" and all("/" not in n for n in names.values())


def test_long_feedback_names_are_shortened_and_stay_distinct():
    stem = "a" * 300
    names = submissions._feedback_names([stem + ".ipynb", stem + "b.ipynb", stem.upper() + ".ipynb", "é" * 200])
    assert len({n.lower() for n in names.values()}) == 4
    assert all(len(n.encode()) <= 255 for n in names.values())


def test_discover_survives_any_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.ipynb")
    (tmp_path / "deep.ipynb").write_text("[" * 200_000)
    (tmp_path / "digits.ipynb").write_text('{"n": ' + "1" * 5000 + "}")
    (tmp_path / "latin1.ipynb").write_bytes(b'{"cells": "\xe9"}')
    (tmp_path / "cells.ipynb").write_text(json.dumps({"nbformat": 4, "cells": [{"source": "x"}]}))
    found = {s.name: s.status for s in submissions.discover(tmp_path, {LESSON: None}, forced=LESSON)}
    assert found == {"pipe.ipynb": "skipped: a FIFO, not a regular file",
                     "deep.ipynb": "unreadable notebook: invalid JSON (nested too deeply)",
                     "digits.ipynb": found["digits.ipynb"], "latin1.ipynb": "unreadable notebook: invalid JSON "
                     "(not UTF-8 text)", "cells.ipynb": "malformed notebook: cell 1 has no cell_type code, "
                     "markdown or raw"}
    assert found["digits.ipynb"].startswith("unreadable notebook: invalid JSON (")


POINTS = {"q1_softmax_with_temperature": 3, "q2_attend": 3, "q3_bug_hunt": 2}


def _honest(**changes):
    tests = [{"name": "test_q1_public", "hidden": False, "points": 1, "passed": True, "message": ""}]
    result = {"questions": {q: {"score": p, "possible": p, "tests": tests} for q, p in POINTS.items()},
              "catastrophic": None, "cell_errors": [], "output_bytes": 0, "output_head": "", "notes": []}
    for q, score in changes.pop("scores", {}).items():
        result["questions"][q] = {**result["questions"].get(q, {"possible": 1, "tests": []}), "score": score}
    return {**result, **changes}


@pytest.mark.parametrize("forged, problem", [
    (_honest(catastrophic=1), "catastrophic is a int"),
    (_honest(catastrophic={"a": 1}), "catastrophic is a dict"),
    (_honest(scores={"q1_softmax_with_temperature": float("nan")}), "is not a finite number"),
    (_honest(scores={"q1_softmax_with_temperature": float("inf")}), "is not a finite number"),
    (_honest(scores={"q1_softmax_with_temperature": "3"}), "is not a finite number"),
    (_honest(scores={"q1_softmax_with_temperature": -1}), "outside [0, 3]"),
    (_honest(scores={"q1_softmax_with_temperature": 300}), "outside [0, 3]"),
    (_honest(scores={"q1_softmax_with_temperature": 10 ** 400}), "outside [0, 3]"),
    (_honest(scores={"q9_extra": 1}), "is not the lesson's"),
    (_honest(questions=[1, 2]), "questions is not an object"),
    ([1, 2], "a list, not an object"),
])
def test_forged_results_are_a_grading_error(tmp_path, forged, problem):
    clean, problems = grader.check_result(forged, POINTS)
    assert any(problem in p for p in problems), problems
    assert all(0 <= d["score"] <= POINTS[q] for q, d in clean["questions"].items()) and set(clean["questions"]) <= set(POINTS)
    (tmp_path / "result.json").write_text(json.dumps(forged))
    sub = submissions.Submission(tmp_path / "forged.ipynb", lesson=LESSON)
    grader._finish(sub, tmp_path, 0, False, 60, {}, POINTS)
    assert sub.status.startswith("grading error: malformed result (") and sub.result is None
    row = report.rows([sub], {LESSON: POINTS})[0]
    assert row["total"] == 0 and row["max"] == 8


def test_an_honest_result_passes_unchanged():
    clean, problems = grader.check_result(_honest(), POINTS)
    assert problems == [] and clean == _honest()


def test_public_messages_are_capped_and_printable_in_feedback():
    result, message = _honest(), "ValueError: \x1b[2Jfake\t" + "x" * (5 << 20)
    result["questions"]["q1_softmax_with_temperature"] = {"score": 0, "possible": 3, "tests": [
        {"name": "test_q1_public", "hidden": False, "points": 1, "passed": False, "message": message}]}
    clean, problems = grader.check_result(result, POINTS)
    sub = submissions.Submission(Path("huge.ipynb"), lesson=LESSON, status="ok", result=clean)
    text = report._feedback(sub, {LESSON: POINTS})
    assert problems == [] and len(text) < 5000 and f"... ({len(message) - 2000} more characters)" in text
    assert "\x1b" not in text and "\\x1b[2Jfake\t" in text


def test_one_failing_row_or_feedback_file_never_stops_the_report(tmp_path):
    subs = [submissions.Submission(Path("good.ipynb"), lesson=LESSON, status="ok", feedback="good.md",
                                   result=grader.check_result(_honest(), POINTS)[0]),
            submissions.Submission(Path("lost.ipynb"), lesson=LESSON, status="ok", feedback="no/such/folder.md"),
            submissions.Submission(Path("odd.ipynb"), lesson=LESSON, status="ok", feedback="odd.md",
                                   result={"questions": 5})]
    report.write(subs, {LESSON: POINTS}, tmp_path)
    with open(tmp_path / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {r["submission"]: r for r in csv.DictReader(f)}
    assert rows["good.ipynb"]["total"] == "8" and rows["good.ipynb"]["status"] == "ok"
    assert rows["lost.ipynb"]["status"].startswith("ok; no feedback file (FileNotFoundError)")
    assert rows["odd.ipynb"]["status"] == "report error (AttributeError; see grading.log)"
    assert (tmp_path / "feedback" / "good.md").is_file()


def test_a_notebook_nbformat_cannot_read_is_reported_as_such(tmp_path):
    import shutil

    from attn_course.grading import job
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(assign.autograder(LESSON), work / "autograder.zip")
    cell = {"cell_type": "code", "source": ["x = 1", 3], "metadata": {}, "outputs": [], "execution_count": None}
    (work / "submission.ipynb").write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                                                       "cells": [cell]}))
    with pytest.raises(TypeError):
        job.prepare(work, f"{LESSON}.ipynb", LESSON, None)
    (work / "unrunnable.txt").write_text("TypeError: sequence item 1: expected str instance, int found")
    sub = submissions.Submission(tmp_path / "cell.ipynb", lesson=LESSON)
    grader._finish(sub, work, 1, False, 60, {}, POINTS)
    assert sub.status == "malformed notebook: TypeError: sequence item 1: expected str instance, int found"


def test_question_points_agree_with_otter():
    import tempfile
    import zipfile

    from otter.test_files.exception_test import ExceptionTestFile
    zip_path = assign.autograder(LESSON)
    ours = report.question_points(zip_path)
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(zip_path).extractall(tmp)
        files = [ExceptionTestFile.from_file(str(p)) for p in sorted(Path(tmp, "tests").glob("*.py"))]
        theirs = {t.name: t.possible for t in files}
    assert ours == theirs == {"q1_softmax_with_temperature": 3, "q2_attend": 3, "q3_bug_hunt": 2}


def test_solution_answers_fill_the_answer_cells():
    import nbformat
    lesson = nbformat.read(ROOT / "lessons" / f"{LESSON}.ipynb", as_version=4)
    answers = assign.solution_answers((ROOT / "solutions" / f"{LESSON}.py").read_text())
    filled = assign.fill_answers(lesson, answers)
    cells = [filled.cells[i].source for i in assign.answer_cells(filled)]
    assert cells == answers and all("NotImplementedError" not in c and "SOLUTION" not in c for c in cells)
    assert [c.source for c in lesson.cells if "raise NotImplementedError" in c.source]          # not modified
    with pytest.raises(ValueError, match="answer cells"):
        assign.fill_answers(lesson, answers[:1])


def test_autograder_is_rebuilt_when_its_source_changes(tmp_path, monkeypatch):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "dist").mkdir()
    source = tmp_path / "solutions" / "09_x.py"
    source.write_text("one")
    built = []
    monkeypatch.setattr(assign, "build", lambda py, lessons, dist: built.append(py) or (
        (dist / "09_x-autograder.zip").write_text("zip"), Path(f"{dist}/09_x-autograder.zip.sha256").write_text(
            assign.source_digest(py))))
    assign.autograder("09_x", root=tmp_path)
    assign.autograder("09_x", root=tmp_path)
    source.write_text("two")
    assign.autograder("09_x", root=tmp_path)
    assert len(built) == 2


@pytest.fixture
def armed():
    tripwire.enable()
    yield
    tripwire.enable(False)


def _by_hand(attn_scores, temperature):
    scaled = attn_scores / temperature
    e = (scaled - scaled.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def test_every_check_declares_what_it_forbids():
    """Every check of every lesson, the applications' included, is exported and names what its exercise
    asks the learner to write (``@forbids``); each rule is a (label, callable) pair."""
    import importlib
    import pkgutil
    names = {name for name in dir(checks) if name.startswith("check_") and callable(getattr(checks, name))}
    defined = set()
    for info in pkgutil.iter_modules(checks.__path__):
        module = importlib.import_module(f"attn_course.checks.{info.name}")
        defined |= {n for n, f in vars(module).items() if n.startswith("check_") and callable(f)}
    assert defined == names == {n for n in checks.__all__ if n.startswith("check_")}, (
        f"defined but not exported: {sorted(defined - names)}; exported, not in __all__: "
        f"{sorted(names - set(checks.__all__))}")
    undeclared = sorted(n for n in names if not getattr(getattr(checks, n), "forbidden", None))
    assert not undeclared, f"declare with @forbids(...) what each exercise asks the learner to write: {undeclared}"
    for name in names:
        for label, fn in getattr(checks, name).forbidden:
            assert isinstance(label, str) and callable(fn), (name, label)


def test_tripwire_catches_an_application_answer_that_calls_the_reference():
    from attn_course.apps import classification
    checks.check_attention_pooling(classification.attention_pooling, thorough=True)   # off: the reference passes
    tripwire.enable()
    try:
        with pytest.raises(checks.CheckFailure) as info:
            checks.check_attention_pooling(lambda s, v, m=None: classification.attention_pooling(s, v, m))
    finally:
        tripwire.enable(False)
    assert info.value.kind == "reference" and "attention_pooling" in str(info.value)


def test_tripwire_is_armed_by_default_so_the_notebook_applies_the_grading_rule():
    """In a fresh process (a learner's kernel) the softmax check refuses torch.softmax and the package's
    reference, as grading does, and accepts a softmax written by hand."""
    code = textwrap.dedent("""
        import torch
        import attn_course as ac
        from attn_course import checks
        from attn_course.checks import tripwire

        def by_hand(attn_scores, temperature):
            e = (attn_scores / temperature - (attn_scores / temperature).amax(-1, keepdim=True)).exp()
            return e / e.sum(-1, keepdim=True)

        assert tripwire.enabled()
        checks.check_softmax_with_temperature(by_hand, thorough=True)
        for answer in (lambda s, t: torch.softmax(s / t, dim=-1), ac.softmax_with_temperature):
            try:
                checks.check_softmax_with_temperature(answer)
            except checks.CheckFailure as err:
                assert err.kind == "reference" and "fails this check here" in str(err), err
            else:
                raise AssertionError("a call of the reference passed the notebook's check")
        print("refused")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "refused", done.stderr[-2000:]


def test_tripwire_catches_the_reference_under_any_name(armed):
    import torch

    import attn_course as ac
    from attn_course.attention import softmax_with_temperature as alias
    for fn, label in [(lambda s, t: alias(s, t), "attn_course.attention.softmax_with_temperature"),
                      (lambda s, t: ac.masked_softmax(s / t), "attn_course.attention.masked_softmax"),
                      (lambda s, t: torch.softmax(s / t, -1), "torch.softmax"),
                      (lambda s, t: (s / t).softmax(dim=-1), "torch.Tensor.softmax"),
                      (lambda s, t: torch.nn.functional.softmax(s / t, -1), "torch.nn.functional.softmax")]:
        with pytest.raises(checks.CheckFailure) as info:
            checks.check_softmax_with_temperature(fn)
        assert info.value.kind == "reference" and label in str(info.value)
    checks.check_softmax_with_temperature(_by_hand, thorough=True)             # torch.exp is fine
    assert sys.getprofile() is None


def test_tripwire_per_exercise(armed):
    import torch

    import attn_course as ac
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with pytest.raises(checks.CheckFailure, match=r"\[reference\].*scaled_dot_product_attention"):
        checks.check_attention(lambda q, k, v: (sdpa(q, k, v), ac.attention_weights(q, k)))
    mha = torch.nn.MultiheadAttention(8, 1, batch_first=True)
    with pytest.raises(checks.CheckFailure, match="torch.nn.MultiheadAttention"):
        checks.check_attention(lambda q, k, v: mha(q[None], k[None], v[None]))
    weights = lambda q, k: torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
    checks.check_attention(lambda q, k, v: (weights(q, k) @ v, weights(q, k)), thorough=True)  # softmax allowed here
    checks.check_attention_weights(weights, thorough=True)
    with pytest.raises(checks.CheckFailure, match="reference"):
        checks.check_attention_weights(lambda q, k: ac.attention_weights(q, k))


def test_tripwire_reports_the_reference_before_an_error(armed):
    import attn_course as ac

    def calls_then_fails(attn_scores, temperature):
        ac.softmax_with_temperature(attn_scores, temperature)
        raise RuntimeError("after the call")
    with pytest.raises(checks.CheckFailure) as info:
        checks.check_softmax_with_temperature(calls_then_fails)
    assert info.value.kind == "reference"


def test_sandbox_hides_the_course_and_the_network(tmp_path):
    if not ISOLATED:
        pytest.skip(f"this system refuses namespaces: {sandbox.probe()}")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.txt").write_text("answers")
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    plan = sandbox.Plan(work_dir=work, hide=[str(secret), str(ROOT)], keep=[str(ROOT / "attn_course"), sys.prefix,
                                                                            sys.base_prefix],
                        uid=sandbox.job_uid(0), limits=sandbox.Limits(cpu_seconds=30, memory_bytes=2 << 30,
                                                                       file_bytes=100 << 20, disk_bytes=64 << 20))

    def probe(inside):
        import os
        import resource
        seen = {"cwd_is_tmp": str(inside) == "/tmp", "uid": os.getuid(), "copied": (inside / "hello.txt").exists(),
                "secret": os.path.exists(str(secret / "key.txt")) or os.path.exists(str(ROOT / "solutions")),
                "package": os.path.exists(str(ROOT / "attn_course" / "checks" / "core.py")),
                "as_limit": resource.getrlimit(resource.RLIMIT_AS)[0], "processes": len(os.listdir("/proc"))}
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2).close()
            seen["network"] = True
        except OSError:
            seen["network"] = False
        try:
            open(str(ROOT / "pwned.txt"), "w").close()
            seen["wrote_repo"] = True
        except OSError:
            seen["wrote_repo"] = False
        try:
            (inside / "big.bin").write_bytes(b"0" * (80 << 20))          # over the 64 MiB private /tmp
            seen["wrote_80_mib"] = True
        except OSError:
            seen["wrote_80_mib"] = False
        seen["fds"] = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        seen["ipc"], seen["uts"] = os.readlink("/proc/self/ns/ipc"), os.readlink("/proc/self/ns/uts")
        os.write(result_fd, json.dumps(seen).encode())

    (work / "hello.txt").write_text("copied in")
    result_fd = os.open(work / "seen.json", os.O_WRONLY | os.O_CREAT, 0o600)
    stray_read, stray_write = os.pipe()                       # the grader's own pipes must not reach the child
    plan.keep_fds.append(result_fd)
    assert sandbox.run(probe, plan) == 0
    os.close(result_fd)
    seen = json.loads((work / "seen.json").read_text())
    assert stray_read not in seen["fds"] and stray_write not in seen["fds"] and result_fd in seen["fds"]
    assert len(seen["fds"]) <= 5                              # 0, 1, 2, result_fd and the listing's own
    assert seen["ipc"] != os.readlink("/proc/self/ns/ipc") and seen["uts"] != os.readlink("/proc/self/ns/uts")
    os.close(stray_read)
    os.close(stray_write)
    assert seen["cwd_is_tmp"] and seen["copied"] and seen["package"] and not seen["secret"] and not seen["network"]
    assert not seen["wrote_80_mib"] and not (work / "big.bin").exists()
    assert not seen["wrote_repo"] and not (ROOT / "pwned.txt").exists()
    assert seen["as_limit"] == 2 << 30 and seen["uid"] != 0


def test_sandbox_without_namespaces_still_limits_and_says_so(tmp_path, monkeypatch):
    def refuse(flags):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(sandbox, "_unshare", refuse)
    plan = sandbox.Plan(work_dir=tmp_path, limits=sandbox.Limits(cpu_seconds=30, memory_bytes=2 << 30))

    def probe(inside):
        import resource
        seen = {"inside": str(inside), "as": resource.getrlimit(resource.RLIMIT_AS)[0],
                "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0]}
        (inside / "seen.json").write_text(json.dumps(seen))
    assert sandbox.run(probe, plan) == 0
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {"inside": str(tmp_path), "as": 2 << 30, "cpu": 30}
    assert any("no network, mount or PID namespace" in note for note in plan.notes)


def test_sandbox_reports_the_exit_code(tmp_path):
    import os
    plan = sandbox.Plan(work_dir=tmp_path)
    assert sandbox.run(lambda inside: os._exit(3), plan) == 3
    assert sandbox.run(lambda inside: sys.exit(4), plan) == 4
    assert sandbox.run(lambda inside: 1 / 0, plan) == 1


def test_tests_modified_on_disk_are_noticed(tmp_path):
    tests = tmp_path / "autograder" / "submission" / "tests"
    tests.mkdir(parents=True)
    (tests / "q1.py").write_bytes(b"original")
    assert grader._tests_intact(tmp_path, {"q1.py": b"original"})
    (tests / "q1.py").write_bytes(b"def test(): pass")
    assert not grader._tests_intact(tmp_path, {"q1.py": b"original"})


@pytest.mark.grading_run
def test_a_lost_forkserver_grades_again_instead_of_scoring_zero(tmp_path, monkeypatch):
    """A grader fault (its forkserver killed while jobs run) costs time, never a student's marks."""
    import multiprocessing.forkserver
    import signal

    subs = tmp_path / "subs"
    subs.mkdir()
    notebook = (ROOT / "solutions" / f"{LESSON}.ipynb").read_bytes()
    for name in ("a", "b", "c"):
        (subs / f"{name}_{LESSON}.ipynb").write_bytes(notebook)
    start, killed = grader._start, []

    def kill_the_forkserver_once(*args, **kwargs):
        process = start(*args, **kwargs)
        if not killed:                       # the first job has just started: it is surely still running
            killed.append(multiprocessing.forkserver._forkserver._forkserver_pid)
            os.kill(killed[0], signal.SIGKILL)
        return process
    monkeypatch.setattr(grader, "_start", kill_the_forkserver_once)
    assert grader.grade(subs, tmp_path / "out", timeout=120, jobs=2, progress=False) == 0
    with open(tmp_path / "out" / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert killed and [(r["status"], r["total"], r["max"]) for r in rows] == [("ok", "8", "8")] * 3
    assert "was lost" in (tmp_path / "out" / "grading.log").read_text()


def test_a_job_control_group_counts_all_its_processes_together(tmp_path):
    """Three processes of 150 MiB each, in a job of 256 MiB: the group stops them, whatever setsid() they call."""
    import time

    from attn_course.grading import cgroups

    group, why = cgroups.JobGroup.create(f"attn-course-test-{os.getpid()}", 256 << 20, 64)
    if group is None:
        pytest.skip(why)
    read_fd, write_fd = os.pipe()
    plan = sandbox.Plan(work_dir=tmp_path, cgroups=[str(d) for d in group.directories], keep_fds=[write_fd],
                        limits=sandbox.Limits(cpu_seconds=60, memory_bytes=2 << 30))

    def probe(inside):
        children = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                os.setsid()
                blob = b"x" * (150 << 20)                                  # touched: really held
                time.sleep(60 + len(blob) * 0)
                os._exit(0)
            children.append(pid)
        time.sleep(3)
        ended = [pid for pid in children if os.waitpid(pid, os.WNOHANG)[0]]
        os.write(write_fd, json.dumps({"ended": len(ended), "members": len(group.members())}).encode())

    try:
        sandbox.run(probe, plan)
        os.close(write_fd)
        seen = json.loads(os.read(read_fd, 1000))
        assert seen["ended"] >= 1 and seen["members"] >= 1     # at most one 150 MiB child fits beside the rest
        peak = group.peak_memory()
        assert peak is None or peak <= 256 << 20
    finally:
        group.remove()
        os.close(read_fd)
    assert not group.members() and not any(d.exists() for d in group.directories)
