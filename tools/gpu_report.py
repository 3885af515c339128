"""The verdict of tools/gpu_check.sh, read from its JUnit reports: a summary and the per-notebook time table.

Each phase of the check writes one JUnit file (pytest --junitxml). A notebook's time is the sum of its
cells' times (nbval makes one test item per cell; the kernel's start counts in the first).

Usage:
    python tools/gpu_report.py OUT_DIR --phase LABEL=JUNIT.xml[:WALL_SECONDS] ... [--require-cuda]

Writes OUT_DIR/summary.md and OUT_DIR/times.md and prints both. Exits 1 when a test failed or
errored, or, with --require-cuda, when a CUDA test case was skipped or none ran. Standard library only.
"""
import argparse
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

NOTEBOOK = re.compile(r"^(solutions|lessons)[./](\d\d_\w+)\.ipynb$")


def read_junit(path):
    """[{classname, name, time, outcome, message}] of every test case in a JUnit XML file;
    outcome is passed | failed | error | skipped."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (child.get("message") or child.text or "").strip()
                break
        cases.append({"classname": case.get("classname", ""), "name": case.get("name", ""),
                      "time": float(case.get("time") or 0.0), "outcome": outcome, "message": message})
    return cases


def notebook_of(case):
    """("solutions" | "lessons", "NN_name") for an nbval cell, else None."""
    match = NOTEBOOK.match(case["classname"])
    return (match.group(1), match.group(2)) if match else None


def is_cuda(case):
    """A unit test case about CUDA: "cuda" in its id, or skipped for want of CUDA (notebook cells are not)."""
    if notebook_of(case):
        return False
    return "cuda" in case["name"].lower() or (case["outcome"] == "skipped" and "cuda" in case["message"].lower())


def counts(cases):
    out = {k: 0 for k in ("passed", "failed", "error", "skipped")}
    for case in cases:
        out[case["outcome"]] += 1
    return out


def notebook_times(cases):
    """{(folder, stem): seconds} summed over each notebook's cells."""
    times = {}
    for case in cases:
        key = notebook_of(case)
        if key:
            times[key] = times.get(key, 0.0) + case["time"]
    return times


def time_table(phases):
    """Markdown table, one row per notebook, a column per (phase, solutions | lessons) that timed any
    notebook, and a GPU / CPU column (solution and lesson together) when phases "gpu" and "cpu" both did."""
    times = {label: notebook_times(cases) for label, (cases, _) in phases.items()}
    columns = [(label, folder) for label in phases for folder in ("solutions", "lessons")
               if any(f == folder for f, _ in times[label])]
    if not columns:
        return "No notebook was run.\n"
    stems = sorted({stem for t in times.values() for _, stem in t})
    ratio = {"gpu", "cpu"} <= {label for label, _ in columns}
    header = ["notebook"] + [f"{folder[:-1]} {label} (s)" for label, folder in columns]
    header += ["GPU / CPU"] if ratio else []
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for stem in stems:
        cells = [times[label].get((folder, stem)) for label, folder in columns]
        row = ["" if t is None else f"{t:.1f}" for t in cells]
        if ratio:
            gpu = [times["gpu"].get((f, stem)) for f in ("solutions", "lessons")]
            cpu = [times["cpu"].get((f, stem)) for f in ("solutions", "lessons")]
            row.append(f"{sum(gpu) / sum(cpu):.2f}" if None not in gpu + cpu and sum(cpu) > 0 else "")
        rows.append(f"| {stem} | " + " | ".join(row) + " |")
    totals = [sum(times[label].get((folder, stem), 0.0) for stem in stems) for label, folder in columns]
    rows.append("| **total** | " + " | ".join(f"**{t:.1f}**" for t in totals) + (" | |" if ratio else " |"))
    return "\n".join(rows) + "\n"


def summary(phases, require_cuda=False):
    """(markdown, ok): per phase its counts and wall time, the CUDA cases, every failure by id."""
    lines = ["| phase | passed | failed | error | skipped | CUDA cases run | CUDA cases skipped | wall (s) |",
             "|---|---|---|---|---|---|---|---|"]
    problems, cuda_run, cuda_skipped = [], 0, 0
    for label, (cases, wall) in phases.items():
        c = counts(cases)
        ran = sum(1 for case in cases if is_cuda(case) and case["outcome"] in ("passed", "failed", "error"))
        skipped = sum(1 for case in cases if is_cuda(case) and case["outcome"] == "skipped")
        cuda_run, cuda_skipped = cuda_run + ran, cuda_skipped + skipped
        wall_text = "" if wall is None else f"{wall:.0f}"
        lines.append(f"| {label} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} | {ran} | {skipped} "
                     f"| {wall_text} |")
        if not cases:
            problems.append(f"{label}: no test case ran")
        for case in cases:
            if case["outcome"] in ("failed", "error"):
                first = case["message"].splitlines()[0][:160] if case["message"] else ""
                problems.append(f"{label}: {case['classname']}::{case['name']} {case['outcome']}: {first}")
    if require_cuda and cuda_skipped:
        problems.append(f"{cuda_skipped} CUDA test cases skipped (want 0)")
    if require_cuda and not cuda_run:
        problems.append("no CUDA test case ran")
    text = "\n".join(lines) + "\n"
    if problems:
        shown = problems[:60] + ([f"... and {len(problems) - 60} more"] if len(problems) > 60 else [])
        text += "\nProblems:\n" + "\n".join(f"- {p}" for p in shown) + "\n"
    else:
        text += "\nNo failure.\n"
    return text, not problems


def parse_phase(text):
    """``LABEL=PATH[:WALL]`` -> (label, path, wall seconds or None)."""
    label, _, rest = text.partition("=")
    if not label or not rest:
        raise argparse.ArgumentTypeError(f"--phase wants LABEL=JUNIT.xml[:SECONDS]; got {text!r}")
    path, _, wall = rest.rpartition(":") if re.search(r":\d+(\.\d*)?$", rest) else (rest, "", "")
    return label, Path(path), float(wall) if wall else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--phase", type=parse_phase, action="append", required=True,
                        help="LABEL=JUNIT.xml[:WALL_SECONDS]; a missing file counts as a phase with no test")
    parser.add_argument("--require-cuda", action="store_true", help="fail when a CUDA case was skipped or none ran")
    args = parser.parse_args(argv)
    phases = {label: (read_junit(path) if path.is_file() else [], wall) for label, path, wall in args.phase}
    text, ok = summary(phases, args.require_cuda)
    table = time_table(phases)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(text)
    (args.out / "times.md").write_text(table)
    print(table + "\n" + text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
