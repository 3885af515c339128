"""Student notebooks and autograders from the solution sources, with otter-grader's ``otter assign``.

``solutions/NN_name.py`` (jupytext py:percent in otter-assign format) is the source of truth.
``build`` turns it into ``lessons/NN_name.ipynb`` (solutions replaced by prompts, hidden tests
removed, ``grader.check`` cells) and ``dist/NN_name-autograder.zip`` (every test, public and hidden,
with its points), reproducibly (stable cell ids, trimmed metadata, no outputs), and refuses a student
notebook that would give an answer away: a solution marker left in a cell, a question without a
solution block, or a line of solution code found in the student notebook.

``autograder(stem)`` is what the classroom grader calls: the zip, rebuilt first when it is missing
or older than its source (a ``.sha256`` file beside it records the source it was built from).
``solution_answers`` and ``fill_answers`` turn a student notebook into a completed one (tests and
benchmarks grade it).
"""
import copy
import difflib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEEP_CELL_META = {"tags", "deletable", "editable", "otter"}
KEEP_NB_META = {"kernelspec", "otter"}
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN PROMPT", "END PROMPT", "BEGIN TESTS", "BEGIN QUESTION")
ANSWER_TAG = "otter_answer_cell"


def solution_lines(source_text):
    """Substantial code lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` in a source."""
    lines, inside = [], False
    for line in source_text.splitlines():
        stripped = line.strip()
        if re.match(r"#\s*BEGIN SOLUTION", stripped):
            inside = True
        elif re.match(r"#\s*END SOLUTION", stripped):
            inside = False
        elif inside and len(stripped) >= 25 and not stripped.startswith(("#", '"""', "'''")):
            lines.append(stripped)
    return lines


def normalize(nb, stem, source_text):
    """Stable ids, trimmed metadata, no outputs; ``SystemExit`` if the notebook gives an answer away."""
    import nbformat

    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEEP_NB_META}
    n_questions = source_text.count("# BEGIN QUESTION")
    if n_questions and source_text.count("# BEGIN SOLUTION NO PROMPT") + source_text.count(
            "# BEGIN SOLUTION\n") < n_questions:
        raise SystemExit(f"{stem}: {n_questions} questions but fewer solution blocks")
    student_code = "\n".join(c.source for c in nb.cells)
    leaked = [line for line in solution_lines(source_text) if line in student_code]
    if leaked:
        raise SystemExit(f"{stem}: solution code would reach students:\n  " + "\n  ".join(leaked))
    for i, cell in enumerate(nb.cells):
        cell.id = f"{stem}-{i:03d}"
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_META}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if any(m in cell.source for m in MARKERS):
            raise SystemExit(f"{stem}: otter marker left in student cell {i}:\n{cell.source}")
    nbformat.validate(nb)
    return nb


def source_digest(py_path):
    """sha256 of a solution source: the autograder built from it is stale when this changes."""
    return hashlib.sha256(Path(py_path).read_bytes()).hexdigest()


def build(py_path, lessons_dir, dist_dir):
    """Run ``otter assign`` on ``py_path``; write the lesson to ``lessons_dir`` and the zip to ``dist_dir``.

    Either folder may be None (not written). The zip lands atomically as ``NN_name-autograder.zip``
    with ``NN_name-autograder.zip.sha256`` (the source's digest) beside it.

    Raises:
        SystemExit: the student notebook would give an answer away (see ``normalize``).
        RuntimeError: ``otter assign`` failed (its output is in the message).
    """
    import jupytext
    import nbformat

    py_path = Path(py_path)
    stem = py_path.stem
    source_text = py_path.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{stem}.ipynb"  # the name matters: the student's otter.Notebook("<stem>.ipynb")
        jupytext.write(jupytext.read(py_path), src)
        out = Path(tmp) / "out"
        _otter_assign(src, out, tmp)
        nb = normalize(nbformat.read(out / "student" / f"{stem}.ipynb", as_version=4), stem, source_text)
        if lessons_dir is not None:
            Path(lessons_dir).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(lessons_dir) / f"{stem}.ipynb")
        zips = sorted((out / "autograder").glob("*.zip"))
        if dist_dir is not None and zips:
            target = Path(dist_dir) / f"{stem}-autograder.zip"
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copy(zips[-1], partial)
            os.replace(partial, target)
            Path(f"{target}.sha256").write_text(source_digest(py_path) + "\n")


def _otter_assign(src, out, cwd):
    """``otter assign --no-run-tests --no-pdfs src out`` run in ``cwd``, in this process.

    Importing otter costs seconds; a build of every lesson imports it once instead of once per lesson.
    Raises ``RuntimeError`` with otter's output when it fails.
    """
    import contextlib
    import io

    from otter.assign import main as assign

    captured = io.StringIO()
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            assign(str(src), str(out), no_pdfs=True, no_run_tests=True)
    except Exception as exc:
        raise RuntimeError(f"otter assign failed on {Path(src).name}: {exc}\n{captured.getvalue()[-2000:]}") from exc


def sources(root=ROOT):
    """The lesson sources ``solutions/NN_*.py``, in order."""
    return sorted((Path(root) / "solutions").glob("[0-9][0-9]_*.py"))


def check(root=ROOT):
    """Build into a temporary folder; return a list of differences from the committed lessons/."""
    root = Path(root)
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "lessons"
        for py in sources(root):
            build(py, fresh, None)
        built = {p.name for p in fresh.glob("*.ipynb")}
        committed = {p.name for p in (root / "lessons").glob("*.ipynb")}
        for name in sorted(committed - built):
            problems.append(f"lessons/{name} has no source solutions/{name[:-6]}.py")
        for name in sorted(built - committed):
            problems.append(f"lessons/{name} is missing: run `make lessons`")
        for name in sorted(built & committed):
            a = (root / "lessons" / name).read_text().splitlines()
            b = (fresh / name).read_text().splitlines()
            if a != b:
                diff = "\n".join(list(difflib.unified_diff(a, b, f"lessons/{name}", "generated",
                                                           lineterm=""))[:40])
                problems.append(f"lessons/{name} differs from what solutions/ generates "
                                f"(run `make lessons`):\n{diff}")
    return problems


def lessons(root=ROOT):
    """Every lesson the grader knows: ``{stem: solutions/NN_name.py or None}``, from sources and dist/."""
    root = Path(root)
    found = {p.name[:-len("-autograder.zip")]: None for p in (root / "dist").glob("[0-9][0-9]_*-autograder.zip")}
    found.update({p.stem: p for p in sources(root)})
    return dict(sorted(found.items()))


def autograder(stem, root=ROOT):
    """``dist/<stem>-autograder.zip``, built first when missing or stale.

    Raises:
        FileNotFoundError: neither the zip nor ``solutions/<stem>.py`` exists.
        SystemExit, RuntimeError: as ``build``.
    """
    root = Path(root)
    zip_path, source = root / "dist" / f"{stem}-autograder.zip", root / "solutions" / f"{stem}.py"
    if not source.exists():
        if zip_path.exists():
            return zip_path
        raise FileNotFoundError(f"no autograder for lesson {stem}: neither {zip_path} nor {source} exists")
    recorded = Path(f"{zip_path}.sha256")
    if not (zip_path.exists() and recorded.exists() and recorded.read_text().strip() == source_digest(source)):
        build(source, None, zip_path.parent)
    return zip_path


def solution_answers(source_text):
    """The code of each question's solution block, prompts and markers removed, in question order."""
    import jupytext

    blocks, current = [], None
    for cell in jupytext.reads(source_text, fmt="py:percent").cells:
        marker = cell.source.strip()
        if cell.cell_type == "raw" and marker == "# BEGIN SOLUTION":
            current = []
        elif cell.cell_type == "raw" and marker == "# END SOLUTION" and current is not None:
            blocks.append("\n\n".join(current))
            current = None
        elif current is not None and cell.cell_type == "code":
            code = re.sub(r'\n?[ \t]*""" # BEGIN PROMPT.*?""" # END PROMPT[ \t]*', "", cell.source, flags=re.S)
            code = "\n".join(line for line in code.splitlines()
                             if not re.fullmatch(r"\s*# (BEGIN SOLUTION NO PROMPT|END SOLUTION)\s*", line))
            current.append(code.strip("\n"))
    return blocks


def answer_cells(nb):
    """Indices of the cells a learner fills in (otter tags them ``otter_answer_cell``)."""
    return [i for i, c in enumerate(nb.cells) if ANSWER_TAG in c.get("metadata", {}).get("tags", [])]


def fill_answers(nb, answers):
    """A copy of student notebook ``nb`` whose answer cells hold ``answers`` (None keeps a cell as it is).

    Raises:
        ValueError: ``len(answers)`` differs from the number of answer cells.
    """
    nb = copy.deepcopy(nb)
    cells = answer_cells(nb)
    if len(answers) != len(cells):
        raise ValueError(f"the notebook has {len(cells)} answer cells; got {len(answers)} answers")
    for i, code in zip(cells, answers):
        if code is not None:
            nb.cells[i].source = code
    return nb
