"""Print a notebook's text outputs and save its images as PNG files (for reviewing a lesson).

Usage: python tools/show_outputs.py solutions/NN_name.ipynb [OUT_DIR]
"""
import base64
import sys
from pathlib import Path

import nbformat

nb_path = Path(sys.argv[1])
out_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "test-artifacts/figures")
out_dir.mkdir(parents=True, exist_ok=True)
nb = nbformat.read(nb_path, as_version=4)
n = 0
for i, cell in enumerate(nb.cells):
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            print(f"--- cell {i} [{out.name}]\n{out.text.rstrip()}")
        elif out.output_type == "error":
            print(f"--- cell {i} ERROR {out.ename}: {out.evalue}")
        elif "image/png" in out.get("data", {}):
            n += 1
            png = out_dir / f"{nb_path.stem}_{n:02d}.png"
            png.write_bytes(base64.b64decode(out.data["image/png"]))
            print(f"--- cell {i} image {png}")
        elif "text/plain" in out.get("data", {}):
            print(f"--- cell {i} {out.data['text/plain'][:200]}")
