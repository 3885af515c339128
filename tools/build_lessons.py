"""Generate lessons/NN_*.ipynb (student notebooks) and dist/NN_*-autograder.zip from solutions/NN_*.py.

otter-grader's ``otter assign`` turns each source into a student notebook (solutions replaced by
prompts, hidden tests removed, ``grader.check`` cells) and an autograder. This script makes the
result reproducible (stable cell ids, trimmed metadata, no outputs) and refuses a student notebook
that would give an answer away: a solution marker left in a cell, a question without a solution
block, or a line of solution code found in the student notebook.

Usage: python tools/build_lessons.py            write lessons/ and dist/
       python tools/build_lessons.py --check    build into a temporary folder, compare with lessons/,
                                               exit 1 and print the differences if they differ
"""
import difflib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
KEEP_CELL_META = {"tags", "deletable", "editable", "otter"}
KEEP_NB_META = {"kernelspec", "otter"}
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN PROMPT", "END PROMPT", "BEGIN TESTS", "BEGIN QUESTION")


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


def build(py_path, lessons_dir, dist_dir):
    py_path = Path(py_path)
    stem = py_path.stem
    source_text = py_path.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{stem}.ipynb"  # the name matters: the student's otter.Notebook("<stem>.ipynb")
        jupytext.write(jupytext.read(py_path), src)
        out = Path(tmp) / "out"
        subprocess.run([sys.executable, "-m", "otter", "assign", "--no-run-tests", "--no-pdfs",
                        str(src), str(out)], check=True, capture_output=True, text=True, cwd=tmp)
        nb = nbformat.read(out / "student" / f"{stem}.ipynb", as_version=4)
        lessons_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(normalize(nb, stem, source_text), lessons_dir / f"{stem}.ipynb")
        zips = sorted((out / "autograder").glob("*.zip"))
        if dist_dir is not None and zips:
            dist_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(zips[-1], dist_dir / f"{stem}-autograder.zip")


def sources():
    return sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py"))


def check():
    """Build into a temporary folder; return a list of differences from the committed lessons/."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "lessons"
        for py in sources():
            build(py, fresh, None)
        built = {p.name for p in fresh.glob("*.ipynb")}
        committed = {p.name for p in (ROOT / "lessons").glob("*.ipynb")}
        for name in sorted(committed - built):
            problems.append(f"lessons/{name} has no source solutions/{name[:-6]}.py")
        for name in sorted(built - committed):
            problems.append(f"lessons/{name} is missing: run `make lessons`")
        for name in sorted(built & committed):
            a = (ROOT / "lessons" / name).read_text().splitlines()
            b = (fresh / name).read_text().splitlines()
            if a != b:
                diff = "\n".join(list(difflib.unified_diff(a, b, f"lessons/{name}", "generated",
                                                           lineterm=""))[:40])
                problems.append(f"lessons/{name} differs from what solutions/ generates "
                                f"(run `make lessons`):\n{diff}")
    return problems


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        found = check()
        print("\n".join(found) or "lessons/ is up to date")
        sys.exit(1 if found else 0)
    for py in sources():
        build(py, ROOT / "lessons", ROOT / "dist")
        print(f"built lessons/{py.stem}.ipynb")
