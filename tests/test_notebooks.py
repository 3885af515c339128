"""The notebooks as a course: sources and executed notebooks in sync, lessons generated, no leaks.

nbval itself re-executes solutions/ (outputs compared strictly) and lessons/ (run as handed out);
these tests guard what nbval cannot see: a solutions notebook that was never executed or is stale
(both pass strict nbval, since cells with no execution count are not compared), lessons/ that
drift from their sources, a solution that reaches the student notebook, a lesson missing a part.
"""
import ast
import builtins
import inspect
import json
import re
import sys
import textwrap
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_lessons  # noqa: E402

SOURCES = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py"))
LESSON_PARTS = ["Learning goals", "Summary", "Next", "References", "Bug hunt", "Exercise",
                "# BEGIN QUESTION", '"nbval-ignore-output"']


def test_there_are_lessons():
    assert len(SOURCES) >= 3, f"expected lessons 01-03 in solutions/, found {[p.name for p in SOURCES]}"


def test_every_notebook_has_a_source():
    for folder in ("solutions", "lessons"):
        for nb in (ROOT / folder).glob("*.ipynb"):
            assert (ROOT / "solutions" / f"{nb.stem}.py").exists(), f"{folder}/{nb.name} has no solutions/{nb.stem}.py"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_solution_notebook_executed_from_current_source(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make solutions`"
    nb = nbformat.read(ipynb, as_version=4)
    fresh = jupytext.read(source)
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in fresh.cells], (
        f"{ipynb.name} is stale: its cells differ from {source.name}; run `make solutions`")
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{ipynb.name} was not executed once top to bottom (execution counts {counts}); run `make solutions`")
    errors = [(i, o.ename) for i, c in enumerate(nb.cells) for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert not errors, f"{ipynb.name} stores errors: {errors}"
    assert "widgets" not in nb.metadata, f"{ipynb.name} stores widget state (random model ids)"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_lesson_has_every_part(source):
    text = source.read_text()
    missing = [part for part in LESSON_PARTS if part not in text]
    assert not missing, f"{source.name} lacks: {missing}"
    assert re.search(r'^# %% tags=\[[^\]]*"nbval-ignore-output"', text, re.M), f"{source.name}: no widget cell"
    assert text.count("# BEGIN QUESTION") == text.count("# BEGIN SOLUTION NO PROMPT") >= 1


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_student_lesson_gives_no_answer_away(source):
    lesson = ROOT / "lessons" / f"{source.stem}.ipynb"
    nb = nbformat.read(lesson, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    leaked = [line for line in build_lessons.solution_lines(source.read_text()) if line in text]
    assert not leaked, f"lessons/{lesson.name} contains solution code: {leaked}"
    assert "# HIDDEN" not in text and "thorough=True" not in text, "hidden tests reached the student"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "lessons ship without outputs"
    n_questions = source.read_text().count("# BEGIN QUESTION")
    assert text.count("grader.check(") == n_questions, "every question needs its self-check cell"
    assert text.count("raise NotImplementedError") >= n_questions


def test_build_refuses_a_source_whose_solution_markers_are_missing(tmp_path):
    """Without the raw BEGIN/END SOLUTION cells otter ships the solution silently; the build must refuse."""
    source = (ROOT / "solutions" / "03_softmax_and_context.py").read_text()
    stripped = source.replace("# %% [raw]\n# # BEGIN SOLUTION\n", "").replace("# %% [raw]\n# # END SOLUTION\n", "")
    assert stripped != source
    broken = tmp_path / "03_softmax_and_context.py"
    broken.write_text(stripped)
    with pytest.raises(SystemExit, match="solution|marker"):
        build_lessons.build(broken, tmp_path / "lessons", None)


def test_committed_lessons_are_what_the_sources_generate():
    problems = build_lessons.check()
    assert not problems, "\n".join(problems)


def test_notebooks_are_valid_json_with_a_python_kernel():
    for nb_path in list((ROOT / "solutions").glob("*.ipynb")) + list((ROOT / "lessons").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3", nb_path


# What each lesson is about: words that name it and no other lesson. A sentence that refers to
# "lesson NN" and speaks only of another lesson's subject points at the wrong lesson (lessons move).
SUBJECTS = {
    "01": ["embedding", "padding", "token id", "pad_batch"],
    "02": ["scores", "scoring", "queries, keys", "queries and keys", "bmm", "d_k"],
    "03": ["softmax", "temperature", "weighted sum", "output layer", "context vector", "one query"],
    "04": ["hard attention", "gumbel", "reinforce", "argmax"],
    "05": ["self-attention", "cross-attention", "permutation"],
    "06": ["multi-head", "minilm", "split_heads"],
    "07": ["mask", "true = padding", "transformer block", "positional", "layernorm", "feed-forward", "residual"],
    "08": ["bug", "catalogue", "broken", "suspect"],
    "09": ["application", "translat", "alignment", "number word"],
    "10": ["application", "classif", "review", "sentiment"],
    "11": ["application", "image recognition", "digit", "cnn", "feature map", "photo"],
    "12": ["application", "caption"],
    "13": ["application", "speech", "spoken", "voice"],
    "14": ["application", "summar", "rouge", "news"],
    "15": ["application", "generat", "language model", "hamlet"],
    "16": ["flashattention", "online softmax", "kv cache", "grouped-query"],
    "17": ["rope", "rotary", "alibi", "length generalisation", "relative position"],
    "18": ["encoder-decoder", "beam search", "label smoothing", "warm-up", "date", "nn.transformer"],
}
REFERENCE = re.compile(r"\b[Ll]esson (\d\d)(?![–-]\d)\b")


def wrong_cross_references(text):
    """Each "lesson NN" whose clause names another lesson's subject and none of NN's. The clause is what
    follows, up to the next punctuation; for "... (lesson NN)" it is what precedes the parenthesis."""
    found = []
    for match in REFERENCE.finditer(text):
        number, after = match.group(1), text[match.end():]
        if after.startswith(")") and text[:match.start()].rstrip().endswith("("):
            before = text[:match.start()].rstrip()[:-1]
            clause = re.split(r"[.;:!?(),|]", before[-80:])[-1]
        else:
            clause = re.split(r"[.;:!?)|]", after[:160])[0]
        clause = clause.lower()
        own = any(word in clause for word in SUBJECTS.get(number, []))
        others = sorted(n for n, words in SUBJECTS.items() if n != number and any(w in clause for w in words))
        if others and not own:
            found.append(f"lesson {number}: '{clause.strip()[:90]}' (speaks of lesson {', '.join(others)})")
    return found


def test_cross_reference_check_catches_a_wrong_lesson_number():
    assert wrong_cross_references("Lesson 08 trains a small translator.")              # 08 is the bug hunt
    assert wrong_cross_references("each token id gets its embedding (lesson 03), then scores.")
    assert not wrong_cross_references("Lesson 09 trains a small translator.")
    assert not wrong_cross_references("lesson 07 adds masks and positions.")
    assert not wrong_cross_references("each token id gets its embedding (lesson 01), then scores.")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_lesson_reference_names_the_right_lesson(source):
    assert set(SUBJECTS) >= {p.stem[:2] for p in SOURCES}, "a new lesson needs its subject words in SUBJECTS"
    text = " ".join(line.lstrip("# ") for line in source.read_text().splitlines())
    wrong = wrong_cross_references(text)
    assert not wrong, f"{source.name}: references to a lesson about something else:\n" + "\n".join(wrong)


# ---------------------------------------------------------------- "fix it": the printed source runs as copied

PRINTED_SOURCE = re.compile(r"print\(inspect\.getsource\((\w+)\)\)")


def _free_names(source):
    """Names a function's or class's source reads but neither defines nor gets from builtins."""
    tree = ast.parse(textwrap.dedent(source))
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
    return loaded - bound - set(dir(builtins))


def _notebook_names(cells):
    """(names bound at the top level of these cells, the functions still raising NotImplementedError)."""
    names, stubs = set(), set()
    for source in cells:
        try:
            tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
                (stubs.add if "NotImplementedError" in ast.unparse(node) else stubs.discard)(node.name)
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.alias):
                    names.add((sub.asname or sub.name).split(".")[0])
                elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.add(sub.id)
    return names, stubs


def _parameters(node):
    """A def's parameter names; a class's ``__init__`` and ``forward`` parameters."""
    if isinstance(node, ast.ClassDef):
        return {f.name: [a.arg for a in f.args.args] for f in node.body
                if isinstance(f, ast.FunctionDef) and f.name in ("__init__", "forward")}
    return [a.arg for a in node.args.args]


def printed_source_problems(cells, broken):
    """For each cell that prints a broken implementation's source: the names that source needs and the
    notebook lacks (or has only as an unfinished exercise), and a fix-it stub after it whose parameters differ."""
    problems = []
    for i, source in enumerate(cells):
        for name in PRINTED_SOURCE.findall(source):
            obj = getattr(broken, name, None)
            if obj is None:
                continue
            printed = inspect.getsource(obj)
            names, stubs = _notebook_names(cells[:i + 1])
            missing = sorted(n for n in _free_names(printed) if n not in names or n in stubs)
            if missing:
                problems.append(f"{name}: its printed source needs {missing}, which the notebook does not define "
                                f"(or defines only as an unfinished exercise) before it")
            later = [n for cell in cells[i + 1:] for n in ast.parse(cell).body      # the fix-it stubs that follow
                     if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and "NotImplementedError" in ast.unparse(n)
                     and ": fix" in ast.unparse(n)]
            want = _parameters(ast.parse(textwrap.dedent(printed)).body[0])
            if later and _parameters(later[0]) != want:
                problems.append(f"{name}: the exercise {later[0].name} takes {_parameters(later[0])}, the printed "
                                f"source {want}")
    return problems


def test_printed_source_check_catches_a_missing_helper_and_another_signature():
    import attn_course.broken as broken
    cells = ["import inspect\nfrom attn_course.broken import scaled_dot_scores_v2",
             "print(inspect.getsource(scaled_dot_scores_v2))",
             "def fixed(query, key):\n    raise NotImplementedError('Exercise 3: fix it')"]
    problems = printed_source_problems(cells, broken)
    assert len(problems) == 2 and "validate_query_key" in problems[0] and "['query', 'key']" in problems[1]
    cells[1] = "from attn_course.scoring import validate_query_key\n" + cells[1]
    cells[2] = "def fixed(query, key, scale=None):\n    raise NotImplementedError('Exercise 3: fix it')"
    assert printed_source_problems(cells, broken) == []
    cells[2] = "def probe(pooling):\n    raise NotImplementedError('Exercise 3: write a test')"   # not a fix: any signature
    assert printed_source_problems(cells, broken) == []
    cells[2] = "def fixed(query, key, scale=None):\n    raise NotImplementedError('Exercise 3: fix it')"
    cells[0] += "\ndef validate_query_key(query, key, same_dim):\n    raise NotImplementedError"   # an unfinished exercise
    cells[1] = cells[1].split("\n", 1)[1]
    assert "validate_query_key" in printed_source_problems(cells, broken)[0]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_fix_it_source_runs_as_printed_in_the_student_notebook(source):
    """What a bug hunt prints for the learner to copy needs nothing the student notebook lacks."""
    import attn_course.broken as broken
    lesson = ROOT / "lessons" / f"{source.stem}.ipynb"
    cells = [c.source for c in nbformat.read(lesson, as_version=4).cells if c.cell_type == "code"]
    problems = printed_source_problems(cells, broken)
    assert not problems, f"lessons/{lesson.name}:\n" + "\n".join(problems)
