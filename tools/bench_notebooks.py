"""Time every notebook top to bottom, and its grading, and print a table (targets on 2 CPU cores).

Executes solutions/NN_*.ipynb (completed) and lessons/NN_*.ipynb (as handed out) in fresh kernels,
without writing anything back, then grades each lesson's solution once with ``attn-course grade``
(all lessons in one run, one job at a time) and reads each submission's time from its log. Targets:
under 45 s per notebook for lessons 01-08, under 120 s for the application lessons 09 and later
(they train); a class of 30 graded in under 300 s with 2 jobs, so under 20 s per submission. The
device follows ATTN_COURSE_DEVICE (cpu | cuda | auto); grading is always on the CPU.

Usage: python tools/bench_notebooks.py [--repeat N] [--no-grading] [--only 09 14 ...]
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TARGET_S, TRAINING_TARGET_S, GRADING_TARGET_S = 45.0, 120.0, 20.0


def target(stem):
    """The run-time target of a notebook: lessons from 09 on train models."""
    return TARGET_S if int(stem[:2]) <= 8 else TRAINING_TARGET_S


def grading_times(stems):
    """{stem: seconds} to grade each lesson's solution, one submission at a time."""
    import re

    from attn_course.grading import assign, grader

    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "subs"
        subs.mkdir()
        for stem in stems:
            lesson = nbformat.read(ROOT / "lessons" / f"{stem}.ipynb", as_version=4)
            answers = assign.solution_answers((ROOT / "solutions" / f"{stem}.py").read_text())
            nbformat.write(assign.fill_answers(lesson, answers), subs / f"{stem}.ipynb")
        grader.grade(subs, Path(tmp) / "out", jobs=1, progress=False)
        log = (Path(tmp) / "out" / "grading.log").read_text()
    found = re.findall(r" (\d\d_\w+)\.ipynb: ok in ([\d.]+) s", log)
    return {stem: float(seconds) for stem, seconds in found}


def run_once(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:  # lessons write otter's log next to themselves
        shutil.copy(nb_path, Path(tmp) / nb_path.name)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": tmp}}).execute()
        return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per notebook (median reported)")
    parser.add_argument("--no-grading", action="store_true", help="leave out the grading column")
    parser.add_argument("--only", nargs="+", metavar="NN", help="time only these lessons (by number, e.g. 09 14)")
    args = parser.parse_args()
    device = os.environ.get("ATTN_COURSE_DEVICE", "auto")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, ATTN_COURSE_DEVICE={device}, "
          f"cuda available: {torch.cuda.is_available()}")
    rows, late = [], []
    for source in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py")):
        if args.only and source.stem[:2] not in args.only:
            continue
        times = {}
        for folder in ("solutions", "lessons"):
            path = ROOT / folder / f"{source.stem}.ipynb"
            times[folder] = statistics.median(run_once(path) for _ in range(args.repeat)) if path.exists() else None
        late += [f"{folder}/{source.stem}" for folder, t in times.items() if t is not None and t >= target(source.stem)]
        rows.append((source.stem, times["solutions"], times["lessons"]))
    graded = {} if args.no_grading else grading_times([stem for stem, _, les in rows if les is not None])
    late += [f"grading {stem}" for stem, t in graded.items() if t >= GRADING_TARGET_S]
    width = max(len(r[0]) for r in rows) if rows else 8
    fmt = lambda t, w: f"{t:{w}.1f}" if t is not None else f"{'-':>{w}}"
    print(f"\n| {'notebook':<{width}} | solutions (s) | lessons (s) | graded (s) | target (s) | on target |")
    print(f"|{'-' * (width + 2)}|---------------|-------------|------------|------------|-----------|")
    for name, sol, les in rows:
        g = graded.get(name)
        ok = all(t is None or t < target(name) for t in (sol, les)) and (g is None or g < GRADING_TARGET_S)
        print(f"| {name:<{width}} | {fmt(sol, 13)} | {fmt(les, 11)} | {fmt(g, 10)} | {target(name):>10.0f} "
              f"| {'yes' if ok else 'NO':<9} |")
    print(f"\ngraded: one submission at a time (target under {GRADING_TARGET_S:.0f} s, so that 30 take under "
          f"5 minutes with 2 jobs)")
    print("over target: " + (", ".join(late) if late else "none"))
    return 1 if late else 0


if __name__ == "__main__":
    raise SystemExit(main())
