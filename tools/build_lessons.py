"""Generate lessons/NN_*.ipynb (student notebooks) and dist/NN_*-autograder.zip from solutions/NN_*.py.

otter-grader's ``otter assign`` turns each source into a student notebook (solutions replaced by
prompts, hidden tests removed, ``grader.check`` cells) and an autograder. ``attn_course.grading.assign``
makes the result reproducible (stable cell ids, trimmed metadata, no outputs) and refuses a student
notebook that would give an answer away: a solution marker left in a cell, a question without a
solution block, or a line of solution code found in the student notebook.

Usage: python tools/build_lessons.py            write lessons/ and dist/
       python tools/build_lessons.py solutions/NN_name.py ...   only these lessons
       python tools/build_lessons.py --check    build into a temporary folder, compare with lessons/,
                                               exit 1 and print the differences if they differ
"""
import sys
from pathlib import Path

from attn_course.grading.assign import (  # noqa: F401
    KEEP_CELL_META,
    KEEP_NB_META,
    MARKERS,
    ROOT,
    build,
    check,
    normalize,
    solution_lines,
    sources,
)

if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        found = check()
        print("\n".join(found) or "lessons/ is up to date")
        sys.exit(1 if found else 0)
    chosen = [Path(a).resolve() for a in sys.argv[1:] if not a.startswith("-")]
    for py in chosen or sources():
        build(py, ROOT / "lessons", ROOT / "dist")
        print(f"built lessons/{py.stem}.ipynb")
