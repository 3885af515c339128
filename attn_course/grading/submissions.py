"""The submissions folder: which files to grade, and which lesson each one is.

A notebook's lesson is otter's ``assignment_name`` in its metadata (every lesson notebook carries
it), else a lesson name found in its file name (``alice_03_softmax_and_context.ipynb``), or the one
given with ``--lesson``. Each entry becomes a ``Submission``; the ones that cannot be graded (not a
notebook, unreadable JSON, unknown lesson) get their ``status`` at once.
"""
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_NOTEBOOK_BYTES = 50 << 20
LOG = logging.getLogger("attn_course.grading")


@dataclass
class Submission:
    """One file of the submissions folder and what became of it."""
    path: Path
    lesson: str = None
    status: str = None          # None while it is still to be graded
    feedback: str = ""          # file name under feedback/, unique even where case is ignored
    result: dict = None         # the job's result.json
    seconds: float = 0.0
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
            return None, f"wrong lesson: the notebook is {named}, not {forced}"
        return forced, None
    if named:
        return (named, None) if named in known else (None, f"unknown lesson {named!r}")
    if in_name:
        return in_name[0], None
    return None, "unknown lesson: no otter metadata and no lesson name in the file name"


def _feedback_names(names):
    used, out = set(), {}
    for name in sorted(names):
        base = re.sub(r"[\x00-\x1f/\\:*?\"<>|]", "_", name[:-6] if name.endswith(".ipynb") else name)
        candidate, n = base, 2
        while candidate.lower() in used:
            candidate, n = f"{base}~{n}", n + 1
        used.add(candidate.lower())
        out[name] = candidate + ".md"
    return out


def discover(folder, known, forced=None):
    """Every entry of ``folder`` (or the one file ``folder``) as a Submission; unreadable ones get a status."""
    folder = Path(folder)
    entries = [folder] if folder.is_file() else sorted(folder.iterdir(), key=lambda p: p.name)
    found = []
    for path in entries:
        if path.name.startswith("."):
            LOG.info("skipped %s: hidden", path.name)
            continue
        if path.is_symlink():
            found.append(Submission(path, status="skipped: a symbolic link"))
            continue
        if path.is_dir():
            LOG.info("skipped %s/: a folder (only the files directly in %s are graded)", path.name, folder)
            continue
        sub = Submission(path)
        found.append(sub)
        if path.suffix.lower() != ".ipynb":
            sub.status = f"not a notebook ({path.suffix or 'no extension'})"
            continue
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            sub.status = f"too large ({path.stat().st_size / 2**20:.0f} MiB)"
            continue
        in_name = sorted((s for s in known if s.lower() in path.name.lower()), key=len, reverse=True)
        try:
            notebook = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            sub.lesson = forced or (in_name[0] if in_name else None)
            where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            sub.status = f"unreadable notebook: invalid JSON{where}"
            continue
        if not (isinstance(notebook, dict) and isinstance(notebook.get("cells"), list)
                and notebook.get("nbformat") == 4):
            sub.lesson = forced or (in_name[0] if in_name else None)
            sub.status = "not a Jupyter notebook (JSON without nbformat 4 cells)"
            continue
        sub.lesson, sub.status = detect_lesson(notebook, path.name, known, forced)
    names = _feedback_names([s.name for s in found])
    for sub in found:
        sub.feedback = names[sub.name]
    return found
