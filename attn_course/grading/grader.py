"""The classroom grader: a folder of submitted notebooks -> grades.csv, a feedback file each, a log.

``grade(submissions, out_dir, ...)`` (the command ``attn-course grade``) finds each submission's
lesson (otter's ``assignment_name`` in the notebook's metadata, else a lesson name inside the file
name), fetches the lesson's autograder (``attn_course.grading.assign.autograder``: rebuilt when missing or
stale), and grades every notebook on a copy, in a process of its own forked from a server that has
already imported torch and otter (``attn_course.grading.preload``), inside ``attn_course.grading.sandbox``, with a
wall-clock timeout. Nothing in the submissions folder is ever written. A submission that cannot be
graded (not a notebook, unknown lesson, timeout, crash) gets a row whose ``status`` says why; the
run goes on. Reports: ``attn_course.grading.report``.
"""
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import site
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from . import assign, cgroups, job, report, sandbox
from .submissions import discover, printable, resolve_lesson

_SYSTEM = {Path(p) for p in ("/", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/var", "/srv",
                             "/home", "/proc", "/sys", "/dev", "/run", "/tmp", "/mnt", "/media")}  # never hidden
LOG = logging.getLogger("attn_course.grading")


def _tests_in_zip(zip_path):
    with zipfile.ZipFile(zip_path) as zf:
        return {Path(n).name: zf.read(n) for n in zf.namelist() if n.startswith("tests/") and not n.endswith("/")}


def _tests_intact(work, expected):
    folder = work / "autograder" / "submission" / "tests"
    try:
        found = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    except OSError:
        return False
    return {k: v for k, v in found.items() if not k.startswith("__")} == expected


def _read_result(work):
    path = work / "result.json"
    if not path.is_file() or not 0 < path.stat().st_size < 16 << 20:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):          # a forged result may be nested 10,000 deep
        return None


def _text(value, keep):
    """``value`` as text of at most ``keep`` characters, with the count of the ones left out."""
    return report.capped(value if isinstance(value, str) else "" if value is None else repr(value), keep)


def _number(value):
    """True for an int (any size) or a finite float; False for a bool, NaN, an infinity, anything else."""
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and math.isfinite(value)


def check_result(result, points):
    """Validate a job's ``result.json`` against its lesson: ``(clean result, problems)``.

    The learner's code runs in the process that writes the result, so a result can be forged.
    The clean result holds only the lesson's questions (``points``: {question: points possible}),
    each score a finite number clamped into [0, points], ``possible`` the lesson's points, test
    cases with text names and messages (the feedback caps messages), ``catastrophic`` text or None,
    and capped lists of cell errors and notes. ``problems`` says what was wrong (empty for
    an honest result); the caller grades a result with problems as a grading error.
    """
    problems, clean = [], {"questions": {}, "catastrophic": None, "cell_errors": [], "output_bytes": 0,
                           "output_head": "", "notes": []}
    if not isinstance(result, dict):
        return clean, [f"a {type(result).__name__}, not an object"]
    catastrophic = result.get("catastrophic")
    if catastrophic is not None and not isinstance(catastrophic, str):
        problems.append(f"catastrophic is a {type(catastrophic).__name__}")
    clean["catastrophic"] = _text(catastrophic, 500) if catastrophic is not None else None
    questions = result.get("questions")
    if not isinstance(questions, dict):
        problems.append("questions is not an object")
        questions = {}
    for q, detail in questions.items():
        if q not in points:
            problems.append(f"question {printable(_text(q, 40))!r} is not the lesson's")
            continue
        score = detail.get("score") if isinstance(detail, dict) else None
        if not _number(score):
            problems.append(f"{q}: score {printable(_text(score, 40))} is not a finite number")
            continue
        if not 0 <= score <= points[q]:
            problems.append(f"{q}: score {_text(repr(score), 40)} outside [0, {points[q]:g}]")
        tests = detail.get("tests") if isinstance(detail.get("tests"), list) else []
        clean["questions"][q] = {"score": min(max(score, 0), points[q]), "possible": points[q], "tests": [
            {"name": _text(t.get("name"), 200), "hidden": t.get("hidden") is not False,
             "points": t.get("points") if _number(t.get("points")) else None, "passed": t.get("passed") is True,
             "message": _text(t.get("message"), 16 << 20)} for t in tests[:100] if isinstance(t, dict)]}
    errors = result.get("cell_errors") if isinstance(result.get("cell_errors"), list) else []
    clean["cell_errors"] = [{"cell": e.get("cell") if _number(e.get("cell")) else None,
                             "source": _text(e.get("source"), 80), "error": _text(e.get("error"), 300)}
                            for e in errors[:50] if isinstance(e, dict)]
    clean["output_bytes"] = result.get("output_bytes") if _number(result.get("output_bytes")) else 0
    clean["output_head"] = _text(result.get("output_head"), 1500)
    notes = result.get("notes") if isinstance(result.get("notes"), list) else []
    clean["notes"] = [_text(n, 300) for n in notes[:20]]
    return clean, problems


def _lines(text, indent="    "):
    """Learner-made text for the log: each line indented and printable, so none reads as a log line."""
    return "\n".join(indent + printable(line) for line in text.splitlines())


def _finish(sub, work, exitcode, timed_out, timeout, expected_tests, points):
    raw = _read_result(work)
    result, problems = check_result(raw, points) if raw is not None else (None, [])
    notes_file = work / "notes.json"
    try:
        notes = json.loads(notes_file.read_text()) if notes_file.is_file() else []
    except (OSError, ValueError, RecursionError):
        notes = []
    sub.notes = (result or {}).get("notes") or [_text(n, 300) for n in (notes if isinstance(notes, list) else [])]
    unrunnable = work / "unrunnable.txt"
    log_tail = ""
    if (work / "output.log").is_file():
        with open(work / "output.log", "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4000))
            log_tail = f.read().decode("utf-8", "replace")
    if timed_out or exitcode == job.TIMED_OUT and result is None:
        sub.status = f"timeout after {timeout:g} s"
    elif result is not None and problems:
        sub.status = "grading error: malformed result (" + printable(_text("; ".join(problems), 160)) + ")"
    elif result is not None and result["catastrophic"]:
        sub.status = "grading error: " + printable(result["catastrophic"][:120])
    elif result is not None and not _tests_intact(work, expected_tests):
        sub.status = "tests modified by the submission: not graded"
    elif result is not None:
        sub.status, sub.result = "ok", result
    elif exitcode == 1 and unrunnable.is_file() and not unrunnable.is_symlink():
        sub.status = "malformed notebook: " + printable(_text(unrunnable.read_text(errors="replace"), 160))
    elif exitcode == job.NO_ANSWER and (work / "unanswered.txt").is_file():
        sub.status = "no answer from the notebook's process: " + printable(
            _text((work / "unanswered.txt").read_text(errors="replace"), 120))
    elif exitcode == sandbox.SETUP_FAILED:
        sub.status = "sandbox error (see grading.log)"
    elif exitcode == 128 + 24:
        sub.status = "CPU time limit exceeded"
    elif exitcode is not None and exitcode > 128:
        sub.status = f"killed by signal {exitcode - 128} (memory limit?)"
    else:
        sub.status = f"exited early (code {exitcode})"
    details = [f"exit code {exitcode}"] + ([f"peak memory {sub.peak_memory / 2 ** 20:.0f} MiB"]
                                           if sub.peak_memory else [])
    if result is not None:
        details += [f"{len(result['cell_errors'])} cells raised", f"{result['output_bytes']} characters printed"]
    LOG.info("%s: %s in %.1f s (%s)%s", printable(sub.name), sub.status, sub.seconds, "; ".join(details),
             "".join(f"\n    sandbox note: {printable(n)}" for n in sub.notes))
    for error in (result or {}).get("cell_errors", [])[:10]:
        LOG.info("    cell %s (%s): %s", error["cell"] or "?", printable(error["source"]), printable(error["error"]))
    if result is not None and result["cell_errors"] and result["output_head"].strip():
        LOG.info("    its output begins:\n%s", _lines("\n".join(line[:200] for line in
                                                                result["output_head"].splitlines()), "      "))
    if sub.status != "ok" and log_tail.strip():
        LOG.info("%s: end of its grading output:\n%s", printable(sub.name), _lines(log_tail.rstrip()))


def _start(ctx, sub, work, zip_path, uid, limits, hide, keep, timeout, group):
    work.mkdir()
    shutil.copyfile(sub.path, work / "submission.ipynb")
    shutil.copyfile(zip_path, work / "autograder.zip")
    spec = {"work_dir": str(work), "notebook_name": f"{sub.lesson}.ipynb", "lesson": sub.lesson, "uid": uid,
            "hide": hide, "keep": keep, "limits": vars(limits), "timeout": timeout,
            "cgroups": [str(d) for d in group.directories] if group else []}
    for attempt in range(3):
        process = ctx.Process(target=job.main, args=(spec,), name=f"grade {sub.name}")
        try:
            process.start()
            return process
        except (EOFError, ConnectionError, BrokenPipeError) as exc:  # the forkserver died: multiprocessing starts
            LOG.info("%s: the grading server was lost (%s); starting it again", printable(sub.name),
                     type(exc).__name__)                             # a new one once it has reaped the old
            time.sleep(0.5 * (attempt + 1))
    raise RuntimeError("the grading server could not be started")


def run_jobs(subs, zips, out_dir, submissions_dir, timeout, jobs, limits, bar=None):
    """Grade every Submission without a status, ``jobs`` at a time; fill in status, result and seconds."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["attn_course.grading.preload"])
    submissions_dir = Path(submissions_dir).resolve()
    hide = [str(p) for p in {assign.ROOT, submissions_dir if submissions_dir.is_dir() else submissions_dir.parent,
                             Path(out_dir).resolve(), Path.home(), Path("/root")} if p not in _SYSTEM]
    keep = [str(Path(assign.__file__).resolve().parents[1]), sys.prefix, sys.base_prefix, *site.getsitepackages(),
            site.getusersitepackages()]                       # what the notebook may import; nothing that holds
    keep = [k for k in keep if Path(k).is_dir() and not any(Path(h).is_relative_to(k) for h in hide)]  # a hidden one
    expected = {lesson: _tests_in_zip(z) for lesson, z in zips.items()}
    points = {lesson: report.question_points(z) for lesson, z in zips.items()}
    base = Path(tempfile.mkdtemp(prefix="attn-course-grade-"))
    base.chmod(0o711)
    pending, running, slots, told = [s for s in subs if s.status is None], {}, list(range(jobs)), set()
    try:
        while pending or running:
            while pending and slots:
                sub, slot = pending.pop(0), slots.pop(0)
                work, uid = base / f"{len(running)}-{slot}-{time.monotonic_ns()}", sandbox.job_uid(slot)
                group, why = cgroups.JobGroup.create(f"attn-course-{os.getpid()}-{work.name}", limits.memory_bytes,
                                                     limits.processes)
                if why and why not in told:
                    told.add(why)
                    LOG.info("sandbox: %s", why)
                try:
                    process = _start(ctx, sub, work, zips[sub.lesson], uid, limits, hide, keep, timeout, group)
                except (OSError, RuntimeError) as exc:                   # the file went away meanwhile
                    sub.status = (f"could not read the submission ({exc.strerror})" if isinstance(exc, OSError)
                                  else f"grading error: {exc}")
                    LOG.info("%s: %s", printable(sub.name), sub.status)
                    if group:
                        group.remove()
                    slots.append(slot)
                    if bar is not None:
                        bar.update(1)
                    continue
                running[process.sentinel] = (process, sub, work, time.monotonic(), slot, uid, group)
            if not running:
                continue
            now = time.monotonic()
            wait_for = max(0.05, min(start + timeout - now for _, _, _, start, _, _, _ in running.values()))
            multiprocessing.connection.wait(list(running), timeout=wait_for)
            for sentinel, (process, sub, work, start, slot, uid, group) in list(running.items()):
                alive = process.is_alive()
                timed_out = alive and time.monotonic() - start > timeout
                if alive and not timed_out:
                    continue
                if timed_out:
                    sandbox.kill_tree(process.pid, uid)
                    if group:
                        group.kill()
                process.join(10)
                sub.seconds = time.monotonic() - start
                if uid is not None:
                    sandbox.kill_tree(process.pid, uid)                  # anything left behind by that user
                if group:
                    sub.peak_memory = group.peak_memory()
                    group.remove()                                       # and anything else it started
                del running[sentinel]
                slots.append(slot)
                if not timed_out and not (work / "exit.json").is_file() and sub.attempts < 1:
                    sub.attempts += 1                                    # the job was lost, not ended: a grader
                    LOG.info("%s: its grading process was lost (exit code %s); graded again", printable(sub.name),
                             process.exitcode)                           # fault, never the student's 0
                    shutil.rmtree(work, ignore_errors=True)
                    pending.insert(0, sub)
                    continue
                try:
                    _finish(sub, work, process.exitcode, timed_out, timeout, expected[sub.lesson],
                            points[sub.lesson])
                except Exception:                                   # one result never stops the others
                    sub.status, sub.result = "grading error (see grading.log)", None
                    LOG.exception("%s: its result could not be read", printable(sub.name))
                shutil.rmtree(work, ignore_errors=True)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(printable(sub.name[:30]))
    finally:
        for process, _, _, _, _, uid, group in running.values():
            sandbox.kill_tree(process.pid, uid)
            if group:
                group.remove()
        shutil.rmtree(base, ignore_errors=True)


def grade(submissions, out_dir, lesson=None, timeout=300.0, jobs=None, memory_mb=6144, progress=True):
    """Grade a folder of notebooks (or one notebook); write OUT_DIR/grades.csv, feedback/, grading.log.

    Args:
        submissions: a folder of submissions (only its own files; hidden ones skipped), or one file.
        out_dir: created if missing; ``grades.csv``, ``feedback/`` and ``grading.log`` are replaced.
        lesson: grade every notebook as this lesson ("03", "03_softmax_and_context"); None: each
            notebook's metadata, else a lesson name in its file name.
        timeout: wall-clock seconds per submission; the CPU limit per process is ``timeout + 60``.
        jobs: submissions graded at once (default: the number of CPUs, at most 8).
        memory_mb: address-space limit per process, in MiB.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The exit code: 0 graded (whatever the statuses), 1 nothing to grade (an empty CSV with its
        header is written), 2 bad arguments (a message is printed).
    """
    from tqdm import tqdm

    submissions, out_dir = Path(submissions), Path(out_dir)
    if not submissions.exists():
        print(f"attn-course grade: {submissions} does not exist")
        return 2
    known = assign.lessons()
    try:
        forced = resolve_lesson(lesson, known) if lesson else None
    except ValueError as exc:
        print(f"attn-course grade: {exc}")
        return 2
    jobs = max(1, jobs or min(os.cpu_count() or 1, 8))
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / "grading.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    started = time.monotonic()
    try:
        description = sandbox.probe()
        LOG.info("grading %s into %s; timeout %g s, %d jobs, %d MiB per process; sandbox: %s",
                 submissions, out_dir, timeout, jobs, memory_mb, description)
        try:
            subs = discover(submissions, known, forced)
        except OSError as exc:
            print(f"attn-course grade: cannot read {submissions}: {exc.strerror}")
            return 2
        for sub in subs:
            if sub.status is not None:
                LOG.info("%s: %s", printable(sub.name), sub.status)
        zips = {}
        for name in sorted({s.lesson for s in subs if s.status is None and s.lesson}):
            try:
                zips[name] = assign.autograder(name)
                LOG.info("lesson %s: autograder %s", name, zips[name])
            except Exception as exc:                                       # a lesson that cannot be built
                LOG.info("lesson %s: no autograder: %s", name, exc)
                for sub in subs:
                    if sub.lesson == name and sub.status is None:
                        sub.status = f"no autograder for {name} (see grading.log)"
        todo = [s for s in subs if s.status is None]
        limits = sandbox.Limits(cpu_seconds=int(timeout) + 60, memory_bytes=memory_mb << 20)
        if todo:
            with tqdm(total=len(todo), desc="grading", unit="notebook", disable=not progress) as bar:
                run_jobs(subs, zips, out_dir, submissions, timeout, min(jobs, len(todo)), limits, bar)
        points = {name: report.question_points(z) for name, z in zips.items()}
        if forced and forced not in points:
            try:
                points[forced] = report.question_points(assign.autograder(forced))
            except Exception as exc:
                LOG.info("lesson %s: no autograder: %s", forced, exc)
        report.write(subs, points, out_dir, lessons=[forced] if forced else [])
        elapsed = time.monotonic() - started
        LOG.info("done: %d submissions in %.1f s", len(subs), elapsed)
        print(report.summary(subs, points, out_dir, elapsed, jobs, description))
        if not subs:
            print(f"attn-course grade: no submissions in {submissions}; wrote an empty {out_dir / 'grades.csv'}")
            return 1
        return 0
    finally:
        LOG.removeHandler(handler)
        handler.close()
