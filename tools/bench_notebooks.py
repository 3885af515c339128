"""Time every notebook top to bottom and print a table (target: under 45 s each on 2 CPU cores).

Executes solutions/NN_*.ipynb (completed) and lessons/NN_*.ipynb (as handed out) in fresh kernels,
without writing anything back. The device follows ATTN_COURSE_DEVICE (cpu | cuda | auto).

Usage: python tools/bench_notebooks.py [--repeat N]
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
TARGET_S = 45.0


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
    args = parser.parse_args()
    device = os.environ.get("ATTN_COURSE_DEVICE", "auto")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, ATTN_COURSE_DEVICE={device}, "
          f"cuda available: {torch.cuda.is_available()}")
    rows, worst = [], 0.0
    for source in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py")):
        times = {}
        for folder in ("solutions", "lessons"):
            path = ROOT / folder / f"{source.stem}.ipynb"
            times[folder] = statistics.median(run_once(path) for _ in range(args.repeat)) if path.exists() else None
        worst = max([worst] + [t for t in times.values() if t is not None])
        rows.append((source.stem, times["solutions"], times["lessons"]))
    width = max(len(r[0]) for r in rows) if rows else 8
    print(f"\n| {'notebook':<{width}} | solutions (s) | lessons (s) | under {TARGET_S:.0f} s |")
    print(f"|{'-' * (width + 2)}|---------------|-------------|------------|")
    for name, sol, les in rows:
        ok = all(t is None or t < TARGET_S for t in (sol, les))
        fmt = lambda t, w: f"{t:{w}.1f}" if t is not None else f"{'-':>{w}}"
        print(f"| {name:<{width}} | {fmt(sol, 13)} | {fmt(les, 11)} | {'yes' if ok else 'NO':<10} |")
    print(f"\nslowest: {worst:.1f} s (target {TARGET_S:.0f} s)")
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
