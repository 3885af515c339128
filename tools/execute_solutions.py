"""Rebuild solutions/NN_*.ipynb from the paired jupytext source NN_*.py and execute it on the CPU.

The .py file (jupytext py:percent, otter-assign format) is the reviewed source; the .ipynb keeps the
outputs that strict nbval compares against. Execution is reproducible: stable cell ids, no timing
metadata, no widget state (random model ids), ATTN_COURSE_DEVICE=cpu.

Usage: python tools/execute_solutions.py [solutions/NN_name.py ...]   (default: all)
"""
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
KEEP_NB_META = ("kernelspec", "jupytext", "language_info")


def merge_streams(outputs):
    """Consecutive stdout (or stderr) outputs joined into one, as nbval compares them: how the kernel
    happened to split a cell's printing into messages then leaves no trace in the stored notebook."""
    merged = []
    for out in outputs:
        if (out.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == out.name):
            merged[-1].text += out.text
        else:
            merged.append(out)
    return merged


def execute(py_path):
    py_path = Path(py_path).resolve()
    nb = jupytext.read(py_path)
    for i, cell in enumerate(nb.cells):  # jupytext gives random ids
        cell.id = f"{py_path.stem}-{i:03d}"
    os.environ["ATTN_COURSE_DEVICE"] = "cpu"
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(py_path.parent)}}).execute()
    elapsed = time.perf_counter() - t0
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEEP_NB_META}
    nb.metadata.get("language_info", {}).pop("version", None)  # Python patch version varies
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):  # widget views carry random model ids
            out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    unrun = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
    if unrun:
        sys.exit(f"{py_path}: code cells {unrun} did not execute")
    nbformat.validate(nb)
    jupytext.write(nb, py_path.with_suffix(".ipynb"))
    print(f"executed {py_path.relative_to(ROOT)} in {elapsed:.1f} s")


if __name__ == "__main__":
    paths = sys.argv[1:] or sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py"))
    for p in paths:
        execute(p)
