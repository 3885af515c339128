"""Time the classroom grader on 30 generated submissions (target: under 5 minutes on 2 CPU cores).

Generates 30 notebooks of one lesson (default 03) from the lesson as handed out and its solution, a
mix of full marks, partial credit (a bug only a hidden test sees), a broken implementation pasted
in, answers that call the reference, and untouched notebooks, then runs
``attn-course grade --jobs N`` on them once and prints a table per kind and the total time.

Usage: python tools/bench_grading.py [--lesson 03_softmax_and_context] [--jobs 2] [--count 30]
"""
import argparse
import csv
import fnmatch
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import grading_corpus  # noqa: E402

TARGET_S = 300.0
KINDS = [("full", "solution.ipynb"), ("partial", "partial_*.ipynb"), ("broken", "broken_*.ipynb"),
         ("reference", "calls_reference.ipynb"), ("untouched", "untouched.ipynb")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lesson", default="03_softmax_and_context")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--count", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        made = grading_corpus.build(tmp / "corpus", args.lesson, hostile=False)
        kinds = [(kind, next((m for m in sorted(made) if fnmatch.fnmatch(m, pattern)), None)) for kind, pattern in KINDS]
        kinds = [(kind, name) for kind, name in kinds if name]
        subs = tmp / "submissions"
        subs.mkdir()
        kind_of = {}
        for i in range(args.count):
            kind, name = kinds[i % len(kinds)]
            target = f"student_{i + 1:02d}_{kind}_{args.lesson}.ipynb"
            shutil.copyfile(tmp / "corpus" / name, subs / target)
            kind_of[target] = kind
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"{args.count} submissions of {args.lesson}, {args.jobs} jobs, {os.cpu_count()} CPUs "
              f"(load average {load:.1f} before the run)")
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "attn_course.grading.cli", "grade", str(subs), "--out", str(tmp / "out"),
                              "--jobs", str(args.jobs)], text=True)
        seconds = time.perf_counter() - t0
        if run.returncode != 0:
            print(f"attn-course grade failed with exit code {run.returncode}")
            return 1
        with open(tmp / "out" / "grades.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    print("\n| kind      | n  | total (mean) | max | statuses |")
    print("|-----------|----|--------------|-----|----------|")
    for kind, _ in kinds:
        mine = [r for r in rows if kind_of.get(r["submission"]) == kind]
        totals = [float(r["total"]) for r in mine]
        statuses = ", ".join(sorted({r["status"] for r in mine}))
        print(f"| {kind:<9} | {len(mine):>2} | {statistics.mean(totals):>12.2f} | {mine[0]['max']:>3} | {statuses} |")
    verdict = "under" if seconds < TARGET_S else "OVER"
    print(f"\n{args.count} submissions graded in {seconds:.1f} s with --jobs {args.jobs} "
          f"({seconds / args.count:.1f} s each); {verdict} the {TARGET_S:.0f} s target")
    return 0 if seconds < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
