"""The submissions folder: which files to grade, and which lesson each one is.

A notebook's lesson is otter's ``assignment_name`` in its metadata (every lesson notebook carries
it), else a lesson name found in its file name (``alice_03_softmax_and_context.ipynb``), or the one
given with ``--lesson``. Each entry becomes a ``Submission``; the ones that cannot be graded (not a
notebook, not a regular file, unreadable or malformed JSON, unknown lesson) get their ``status`` at
once; nothing in a file stops the others.
"""
import hashlib
import json
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

MAX_NOTEBOOK_BYTES = 50 << 20
MAX_FEEDBACK_NAME_BYTES = 120     # file systems allow 255 bytes; a long name is cut and given a hash suffix
LOG = logging.getLogger("attn_course.grading")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")   # surrogates: undecodable bytes
_KINDS = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device")]


def printable(text, keep=""):
    """``text`` with control characters (C0, DEL, C1, line separators) escaped as ``\\xNN``, except ``keep``.

    A submission's name or a message of its own then cannot forge lines in grading.log, nor move the
    cursor of the terminal that shows it: ``printable("a\\nb")`` is ``a\\x0ab`` (a backslash, x, 0, a).
    """
    return _CONTROL.sub(lambda m: m.group(0) if m.group(0) in keep else f"\\x{ord(m.group(0)):02x}"
                        if ord(m.group(0)) < 0x100 else f"\\u{ord(m.group(0)):04x}", str(text))


@dataclass
class Submission:
    """One file of the submissions folder and what became of it."""
    path: Path
    lesson: str = None
    status: str = None          # None while it is still to be graded
    feedback: str = ""          # file name under feedback/, unique even where case is ignored
    result: dict = None         # the job's result.json
    seconds: float = 0.0
    attempts: int = 0           # times its job was lost and started again (at most once)
    peak_memory: int = None     # bytes, the job's control group at its fullest (None: not measured)
    notes: list = field(default_factory=list)

    @property
    def name(self):
        return self.path.name


def resolve_lesson(text, known):
    """The lesson stem that ``text`` names: a full name, a unique prefix, or its number ("3", "03").

    Raises:
        ValueError: no lesson, or several, match; the message lists the known lessons.
    """
    text = text.strip()
    if text in known:
        return text
    number = f"{int(text):02d}_" if text.isdigit() else None
    matches = [s for s in known if (number and s.startswith(number)) or (not number and s.startswith(text))]
    if len(matches) != 1:
        raise ValueError(f"--lesson {text!r} names {'no' if not matches else 'more than one'} lesson; "
                         f"known lessons: {', '.join(known) or 'none'}")
    return matches[0]


def detect_lesson(notebook, file_name, known, forced=None):
    """(lesson, None) or (None, status) for a parsed notebook: metadata first, then the file name."""
    meta = notebook.get("metadata")
    otter_meta = meta.get("otter") if isinstance(meta, dict) else None
    named = otter_meta.get("assignment_name") if isinstance(otter_meta, dict) else None
    named = named if isinstance(named, str) and named else None
    in_name = sorted((s for s in known if s.lower() in file_name.lower()), key=len, reverse=True)
    if forced:
        if named and named != forced:
            return None, f"wrong lesson: the notebook is {printable(named[:60])}, not {forced}"
        return forced, None
    if named:
        return (named, None) if named in known else (None, f"unknown lesson {named[:60]!r}")
    if in_name:
        return in_name[0], None
    return None, "unknown lesson: no otter metadata and no lesson name in the file name"


def _feedback_names(names):
    used, out = set(), {}
    for name in sorted(names):
        base = re.sub(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff/\\:*?\"<>|]", "_", name[:-6] if name.endswith(".ipynb") else name)
        if len(base.encode()) > MAX_FEEDBACK_NAME_BYTES:
            digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
            head = base.encode()[:MAX_FEEDBACK_NAME_BYTES - 12].decode("utf-8", "ignore")
            base = f"{head}~{digest}"
        candidate, n = base, 2
        while candidate.lower() in used:
            candidate, n = f"{base}~{n}", n + 1
        used.add(candidate.lower())
        out[name] = candidate + ".md"
    return out


def _read_regular(path):
    """The bytes of ``path`` (at most MAX_NOTEBOOK_BYTES + 1), or None when it is not a regular file.

    Opened with O_NONBLOCK, so a FIFO that replaced the file after the check cannot block the run.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], MAX_NOTEBOOK_BYTES + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _cells_problem(cells):
    """Why ``cells`` cannot be run as nbformat 4 cells, or None (``source`` a string or a list of strings)."""
    for n, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            return f"cell {n} has no cell_type code, markdown or raw"
        source = cell.get("source", "")
        if not (isinstance(source, str) or isinstance(source, list) and all(isinstance(x, str) for x in source)):
            return f"cell {n} has a source of type {type(source).__name__}, not text"
    return None


def _examine(sub, known, forced):
    """Fill in ``sub.lesson`` and, for one that cannot be graded, ``sub.status``."""
    path = sub.path
    in_name = sorted((s for s in known if s.lower() in path.name.lower()), key=len, reverse=True)
    if path.suffix.lower() != ".ipynb":
        sub.status = f"not a notebook ({printable(path.suffix) or 'no extension'})"
        return
    data = _read_regular(path)
    if data is None:
        sub.status = "skipped: not a regular file"
        return
    if len(data) > MAX_NOTEBOOK_BYTES:
        sub.status = f"too large (over {MAX_NOTEBOOK_BYTES >> 20} MiB)"
        return
    try:
        notebook = json.loads(data)
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON at line {exc.lineno} column {exc.colno}"
    except UnicodeDecodeError:
        problem = "invalid JSON (not UTF-8 text)"
    except RecursionError:
        problem = "invalid JSON (nested too deeply)"
    except (ValueError, MemoryError) as exc:            # an integer of thousands of digits, ...
        problem = f"invalid JSON ({printable(str(exc)[:100])})"
    else:
        problem = None
    if problem:
        sub.lesson, sub.status = forced or (in_name[0] if in_name else None), f"unreadable notebook: {problem}"
        return
    if not (isinstance(notebook, dict) and isinstance(notebook.get("cells"), list)
            and notebook.get("nbformat") == 4):
        sub.lesson = forced or (in_name[0] if in_name else None)
        sub.status = "not a Jupyter notebook (JSON without nbformat 4 cells)"
        return
    sub.lesson, sub.status = detect_lesson(notebook, path.name, known, forced)
    problem = _cells_problem(notebook["cells"])
    if problem and sub.status is None:
        sub.status = f"malformed notebook: {problem}"


def discover(folder, known, forced=None):
    """Every entry of ``folder`` (or the one file ``folder``) as a Submission; unreadable ones get a status.

    Raises only OSError, where ``folder`` itself cannot be listed: one file never stops the others.
    A FIFO or device is never opened; a file is read up to MAX_NOTEBOOK_BYTES.
    """
    folder = Path(folder)
    entries = [folder] if folder.is_file() else sorted(folder.iterdir(), key=lambda p: p.name)
    found = []
    for path in entries:
        if path.name.startswith("."):
            LOG.info("skipped %s: hidden", printable(path.name))
            continue
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            found.append(Submission(path, status=f"could not read the submission ({exc.strerror})"))
            continue
        if stat.S_ISLNK(mode):
            found.append(Submission(path, status="skipped: a symbolic link"))
            continue
        if stat.S_ISDIR(mode):
            LOG.info("skipped %s/: a folder (only the files directly in %s are graded)", printable(path.name),
                     printable(folder))
            continue
        sub = Submission(path)
        found.append(sub)
        kind = next((what for test, what in _KINDS if test(mode)), None)
        if kind:
            sub.status = f"skipped: {kind}, not a regular file"
            continue
        try:
            _examine(sub, known, forced)
        except OSError as exc:
            sub.status = f"could not read the submission ({exc.strerror})"
        except Exception as exc:                        # whatever else a file can do to a parser
            sub.status = f"unreadable notebook: {type(exc).__name__}"
            LOG.info("%s: %s", printable(path.name), printable(repr(exc)[:300]))
    names = _feedback_names([s.name for s in found])
    for sub in found:
        sub.feedback = names[sub.name]
    return found
