"""One submission, graded with otter-grader's own machinery, the notebook in a sandbox and the tests outside it.

``main(spec)`` runs in a process forked from the grading server (``attn_course.grading.preload``): the
*grader side*. It lays out the folder ``otter run`` would (``autograder/source`` from the lesson's
autograder zip, ``autograder/submission`` with the notebook and a copy of the tests), reads otter's
test files, and starts the *learner side* in ``attn_course.grading.sandbox``:

- the learner side executes the notebook as otter's runner prepares it (otter's
  ``GradingPreprocessor``: its grading-mode cell, seeds, ignored cells), in an IPython shell in that
  process rather than a Jupyter kernel per submission (three times faster here); figures are not
  rendered. It then serves the notebook's variables (``checks.remote.serve``);
- the grader side runs every test file, public and hidden, with otter's ``TestFile.run`` and points,
  against those variables seen through the socket (``checks.remote.Environment``): the checks
  compare plain data with the references in this process, which the notebook cannot reach.

It writes ``result.json`` in the work folder itself: per question the score, the points possible and
each test case (name, hidden, points, passed, message); the cells that raised; the notebook's output
size. Its own stdout and stderr, and the notebook's, go to ``output.log`` there; ``exit.json`` holds
its exit code (a job whose process was lost leaves none). A notebook that cannot be laid out or
parsed (before anything of it runs) leaves ``unrunnable.txt`` instead, with the reason, and the job
exits with code 1; one that broke its channel to the tests leaves ``unanswered.txt`` (``NO_ANSWER``).
"""
import io
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

from . import sandbox

OUTPUT_KEEP = 32 * 1024  # bytes of the notebook's printed output kept for the log
TIMED_OUT = 124          # the job's exit code when the notebook's time ran out before its tests
NO_ANSWER = 125          # ... when its process broke the channel to the grader (unanswered.txt says how)


class CappedText(io.TextIOBase):
    """A text stream that keeps the first ``keep`` characters and counts the rest (megabytes of output are cheap)."""

    def __init__(self, keep=OUTPUT_KEEP):
        self.keep, self.parts, self.kept, self.total = keep, [], 0, 0

    def writable(self):
        return True

    def write(self, text):
        text = str(text)
        self.total += len(text)
        if self.kept < self.keep:
            self.parts.append(text[:self.keep - self.kept])
            self.kept += len(self.parts[-1])
        return len(text)

    def getvalue(self):
        return "".join(self.parts)


def _shell_class():
    from IPython.core.interactiveshell import InteractiveShell

    class GradingShell(InteractiveShell):
        """IPython without a front end: ``%matplotlib inline`` needs no GUI event loop."""

        def enable_gui(self, gui=None):
            pass

    return GradingShell


class InProcessExecutor:
    """Executes a notebook's code cells in this process, as nbconvert's ``ExecutePreprocessor`` would in a kernel.

    Runs each code cell with ``InteractiveShell.run_cell`` and goes on after an error (otter grades
    with ``allow_errors``). Records which cells raised, and the printed output (capped).
    """

    def __init__(self):
        self.cell_errors, self.output = [], CappedText()

    def preprocess(self, nb):
        self.shell = shell = _shell_class().instance(colors="NoColor", history_length=0)
        shell.history_manager.enabled = False
        shell.display_formatter.active_types = ["text/plain"]  # no PNG rendering
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.output
        try:
            for cell in nb.cells:
                if cell.cell_type != "code":
                    continue
                result = shell.run_cell(cell.source, store_history=False)
                error = result.error_before_exec or result.error_in_exec
                if error is not None:
                    lines = [line for line in cell.source.splitlines() if line.strip()]
                    self.cell_errors.append({"cell": cell.get("id"),
                                             "source": lines[0][:80] if lines else "",
                                             "error": f"{type(error).__name__}: {str(error)[:300]}"})
        finally:
            sys.stdout, sys.stderr = saved
        return nb


def _quiet_otter():
    """Drop otter's kernel log forwarding: otter sends a kernel's log records over TCP to a server in the
    grading process; in one process that server would receive its own records again, endlessly."""
    import otter.execute
    import otter.logging

    otter.logging.send_logs = lambda *args, **kwargs: None
    otter.logging.set_level = lambda *args, **kwargs: None
    otter.execute.start_server = lambda: (("127.0.0.1", 9), lambda: None)


def _public_message(message):
    """The exception line(s) of otter's failure message, without its header and the test's source line."""
    lines = (message or "").splitlines()
    if lines and lines[0].startswith("❌"):
        lines = lines[1:]
    if lines and lines[0].startswith("Error at line"):
        lines = lines[1:]
        while lines and lines[0].startswith("  "):
            lines = lines[1:]
    return "\n".join(lines).strip()


def _case_names(test_file):
    """The test functions' names, in the order otter collected them (it numbers them ``q1 - 1`` ...)."""
    import ast

    try:
        tree = ast.parse(getattr(test_file, "source", None) or Path(test_file.path).read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and any(
        getattr(getattr(d, "func", d), "id", "") == "test_case" for d in node.decorator_list)]


def _results(scores, info):
    questions = {}
    for name, test_file in scores.results.items():
        tests, names = [], _case_names(test_file)
        for i, tcr in enumerate(test_file.test_case_results):
            case = tcr.test_case
            auto = case.name == f"{name} - {i + 1}" and i < len(names)
            tests.append({"name": names[i] if auto else case.name, "hidden": bool(case.hidden),
                          "points": case.points, "passed": bool(tcr.passed),
                          "message": "" if tcr.passed else _public_message(tcr.message)})
        questions[name] = {"score": test_file.score, "possible": test_file.possible, "tests": tests}
    error = scores.catastrophic_error
    return {"questions": questions, "catastrophic": None if error is None else f"{type(error).__name__}: {error}",
            "cell_errors": info.get("cell_errors", []), "output_bytes": info.get("output_bytes", 0),
            "output_head": info.get("output_head", "")}


def _environment(work):
    """The job's whole environment: nothing of the grader's (tokens, paths, settings) reaches the notebook."""
    home = work / "home"
    keep = {name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS",
                                                 "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ}
    os.environ.clear()
    os.environ.update(keep)
    os.environ.update({"HOME": str(home), "TMPDIR": str(work / "tmp"), "USER": "grader", "LOGNAME": "grader",
                       "MPLBACKEND": "agg", "MPLCONFIGDIR": str(home / ".config" / "matplotlib"),
                       "IPYTHONDIR": str(home / ".ipython"), "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
                       "JUPYTER_DATA_DIR": str(home / ".local"), "ATTN_COURSE_DEVICE": "cpu",
                       "CUDA_VISIBLE_DEVICES": ""})                                  # grading is CPU-only
    import tempfile
    tempfile.tempdir = None


def _record_checks(snapshots):
    """Make otter's ``Checker.check`` remember the notebook's variables for each question instead of testing.

    The tests run on the grader's side against those variables: the names as they were bound when
    the notebook checked that question, as otter would have run them at that point (an object they
    name may have changed since); the last check of a question counts, as in otter. Questions never
    checked in the notebook see the variables at its end.
    """
    from otter.execute import Checker
    from otter.test_files import create_test_file

    def check(cls, nb_or_test_path, nbmeta_config, test_name=None, global_env=None):
        test = create_test_file(nb_or_test_path, nbmeta_config, test_name=test_name)
        snapshots[Path(nb_or_test_path).stem] = dict(global_env if global_env is not None else {})
        test.test_case_results = []
        return test

    Checker.check = classmethod(check)


def _learner_side(work, notebook_name, sock_fd):
    """In the sandbox: execute the notebook as otter's runner would, then answer the grader side's requests.

    otter's ``GradingPreprocessor`` prepares the notebook (its grading-mode cell, seeds, ignored cells);
    its last cell, which would run the tests here, is left out. After the last cell, the notebook's
    variables (and those at each ``grader.check``) are served over ``sock_fd`` (``checks.remote.serve``).
    """
    import socket

    import nbformat
    from otter.execute.preprocessor import GradingPreprocessor
    from otter.run.run_autograder.runners import create_runner
    from traitlets.config import Config

    from ..checks import remote

    sock = socket.socket(fileno=sock_fd)
    _environment(work)
    autograder_dir = work / "autograder"
    config = json.loads((autograder_dir / "source" / "otter_config.json").read_text())
    runner = create_runner(config, autograder_dir=str(autograder_dir), logo=False, print_summary=False,
                           print_score=False)
    os.chdir(autograder_dir / "submission")
    nb = nbformat.read(notebook_name, as_version=4)
    numbers = {cell.get("id"): n for n, cell in enumerate(nb.cells, start=1)}
    c = Config()
    c.GradingPreprocessor.cwd = os.getcwd()
    c.GradingPreprocessor.test_dir = "./tests"
    c.GradingPreprocessor.tests_glob = []
    c.GradingPreprocessor.results_path = os.devnull
    c.GradingPreprocessor.seed = runner.ag_config.seed
    c.GradingPreprocessor.seed_variable = runner.ag_config.seed_variable
    c.GradingPreprocessor.logging_server_host = "127.0.0.1"
    c.GradingPreprocessor.logging_server_port = 9
    nb, _ = GradingPreprocessor(config=c).preprocess(nb)
    nb.cells.pop()                                      # otter's export cell: the tests run on the grader's side
    _quiet_otter()
    snapshots = {}
    _record_checks(snapshots)
    executor = InProcessExecutor()
    executor.preprocess(nb)
    snapshots[None] = executor.shell.user_ns
    for error in executor.cell_errors:
        error["cell"] = numbers.get(error["cell"]) if error["cell"] else None
    sys.stdout.flush()
    remote.send_frame(sock, json.dumps({"cell_errors": executor.cell_errors, "output_bytes": executor.output.total,
                                        "output_head": executor.output.getvalue()}).encode())
    remote.serve(sock, snapshots)
    sys.stdout.flush()
    os._exit(0)  # a learner's stray thread must not keep the process alive


def _load_tests(work):
    """otter's test files of the lesson, read before any of the notebook runs, in otter's order."""
    from otter.nbmeta_config import NBMetadataConfig
    from otter.test_files import create_test_file

    folder = work / "autograder" / "submission" / "tests"
    return [create_test_file(str(path), NBMetadataConfig()) for path in sorted(folder.glob("*.py"))]


def _grader_side(connection, tests):
    """Run every test of ``tests`` against the notebook's variables, through ``connection``; the result dict."""
    from otter.test_files import GradingResults

    from ..checks import remote

    info = connection.receive()                         # the notebook has run: what it printed, which cells raised
    for test in tests:
        test.run(remote.Environment(connection, test.name))
    scores = GradingResults(tests)
    return _results(scores, info)


def prepare(work, notebook_name, lesson, uid):
    """Lay out otter's folders from ``work/submission.ipynb`` and ``work/autograder.zip``; hand them to ``uid``.

    The notebook is saved as ``notebook_name``, with otter's ``assignment_name`` set to ``lesson``
    where the learner's copy lost it (otter refuses a notebook without it).

    Returns the paths the sandbox makes read-only (the tests). The tests and the notebook stay
    owned by the grader; the submission folder is sticky, so the learner's code may add files
    there but cannot rename or replace the tests.
    """
    autograder = work / "autograder"
    source, submission = autograder / "source", autograder / "submission"
    for folder in (source, submission, autograder / "results", work / "home", work / "tmp"):
        folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(work / "autograder.zip") as zf:
        zf.extractall(source)
    (work / "autograder.zip").unlink()
    nb = json.loads((work / "submission.ipynb").read_text(encoding="utf-8"))
    (work / "submission.ipynb").unlink()
    if not isinstance(nb.get("metadata"), dict):
        nb["metadata"] = {}
    if not isinstance(nb["metadata"].get("otter"), dict):
        nb["metadata"]["otter"] = {}
    nb["metadata"]["otter"].setdefault("assignment_name", lesson)
    text = json.dumps(nb)
    import nbformat
    nbformat.reads(text, as_version=4)                 # what the runner will read: fail here, not in the sandbox
    (submission / notebook_name).write_text(text, encoding="utf-8")
    (autograder / "submission_metadata.json").write_text("{}")
    for init in (autograder / "__init__.py", submission / "__init__.py"):
        init.write_text("")
    shutil.copytree(source / "tests", submission / "tests")       # what otter's prepare_files does
    shutil.rmtree(source / "tests")
    for path in [submission / "tests", *(submission / "tests").iterdir(), submission / notebook_name]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    if uid is not None:
        for path in [work, *work.rglob("*")]:
            if not path.is_relative_to(submission / "tests") and path != submission / notebook_name:
                os.chown(path, uid, uid)
        os.chown(submission, 0, 0)
        submission.chmod(0o1777)
    return [submission / "tests"]


def main(spec):
    """The job process: prepare, run the notebook in the sandbox, run the tests here; exit 0 once ``result.json``
    is written, else with the sandboxed child's exit code (``TIMED_OUT`` when the time ran out first)."""
    import socket
    import time

    from ..checks import remote, tripwire

    deadline = time.monotonic() + spec["timeout"] - 5           # leave the grader time to read the result
    tripwire.enable()                                   # armed by the preload too; this keeps it so
    work = Path(spec["work_dir"])
    log = os.open(work / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
    sys.stderr = sys.stdout
    try:
        readonly = prepare(work, spec["notebook_name"], spec["lesson"], spec["uid"])
        tests = _load_tests(work)
    except Exception as exc:                            # a notebook nbformat cannot read: nothing of it ran
        (work / "unrunnable.txt").write_text(f"{type(exc).__name__}: {exc}"[:1000], encoding="utf-8")
        _exit(work, 1)
    ours, theirs = socket.socketpair()
    plan = sandbox.Plan(work_dir=work, hide=spec["hide"], keep=spec["keep"], readonly=readonly, uid=spec["uid"],
                        copy=["autograder", "home", "tmp"], limits=sandbox.Limits(**spec["limits"]),
                        keep_fds=[theirs.fileno()], cgroups=spec.get("cgroups", []))
    child = sandbox.start(lambda inside: _learner_side(inside, spec["notebook_name"], theirs.fileno()), plan)
    theirs.close()
    (work / "notes.json").write_text(json.dumps(plan.notes))
    connection = remote.Connection(ours, deadline)
    try:
        result = _grader_side(connection, tests)
    except remote.Unanswered as exc:                    # the notebook's process ended, ran out of time, or broke
        connection.close()                              # its channel before its notebook had run
        code = None if "time limit" in str(exc) else sandbox.poll(child, 2)
        if code is None:
            sandbox.kill_tree(child)
            sandbox.wait(child)
            (work / "unanswered.txt").write_text(str(exc)[:300], encoding="utf-8")
        _exit(work, code if code is not None else TIMED_OUT if "time limit" in str(exc) else NO_ANSWER)
    result["notes"] = list(plan.notes)
    connection.close()
    sandbox.kill_tree(child)                            # the learner's side has nothing left to do
    sandbox.wait(child)
    with open(work / "result.json", "w", encoding="utf-8") as f:
        json.dump(result, f)
    _exit(work, 0)


def _exit(work, code):
    """End the job with ``code``, written to ``exit.json`` first: the grader tells a job that ended from one
    whose process was lost (a crashed forkserver reports 255 for every child it had)."""
    (work / "exit.json").write_text(json.dumps({"code": code}))
    sys.stdout.flush()
    os._exit(code)
