"""The grader's reports: grades.csv, feedback/<submission>.md and the summary printed at the end.

grades.csv has the columns ``submission, lesson, <one per question>, total, max, status``, one row
per file of the submissions folder. With submissions of several lessons in one folder, each
question column is named ``<lesson>:<question>`` (lessons share question names such as
``q3_bug_hunt``). A submission that could not be graded scores 0 on its lesson's questions; one
whose lesson is unknown has empty question cells and an empty ``max``.

A feedback file gives the score of each question and, for each test case, whether it passed: a
public test (the self-check the learner saw) with its message (capped at MESSAGE_KEEP characters),
a hidden test by name and points only.

What a submission chose (its file name, its messages) is written printable (control characters
escaped), and a CSV cell that a spreadsheet would read as a formula (starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return) gets a leading ``'`` (OWASP's advice on CSV injection).
Each feedback file is written on its own: one that fails is logged and named in its row's status.
"""
import ast
import csv
import logging
import zipfile
from collections import Counter
from pathlib import Path

from .submissions import printable

MESSAGE_KEEP = 2000     # characters of a public test's message kept in the feedback
LOG = logging.getLogger("attn_course.grading")


def capped(text, keep=MESSAGE_KEEP):
    """``text`` cut to ``keep`` characters, followed by ``... (N more characters)`` when it was longer."""
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text) - keep} more characters)"


def csv_cell(value):
    """A value for grades.csv: text made printable and kept from being read as a formula; numbers as they are."""
    if not isinstance(value, str):
        return value
    value = printable(value)
    return "'" + value if value.startswith(("=", "+", "-", "@", "\t", "\r")) else value


def _literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return None


def question_points(zip_path):
    """``{question: points possible}`` read from an autograder's exception-based test files.

    Follows otter's rules: ``points = [a, b]`` gives each test case its points; ``points = n`` is
    the question's total; otherwise the test cases' own ``points=``, or 1 for the question.
    """
    questions = {}
    with zipfile.ZipFile(zip_path) as zf:
        for member in sorted(n for n in zf.namelist() if n.startswith("tests/") and n.endswith(".py")):
            tree = ast.parse(zf.read(member))
            name, total, cases = Path(member).stem, None, []
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    if node.targets[0].id == "name":
                        name = _literal(node.value) or name
                    elif node.targets[0].id == "points":
                        total = _literal(node.value)
                elif isinstance(node, ast.FunctionDef):
                    for deco in node.decorator_list:
                        if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "test_case":
                            kw = {k.arg: _literal(k.value) for k in deco.keywords}
                            cases.append(kw.get("points"))
            if isinstance(total, list):
                possible = sum(total)
            elif isinstance(total, (int, float)):
                possible = total
            elif all(p in (0, None) for p in cases):
                possible = 1 if None in cases else 0
            else:
                possible = sum(p for p in cases if p is not None)
            questions[name] = possible
    return questions


def _num(x):
    return "" if x is None else (int(x) if float(x) == int(x) else round(float(x), 3))


def _columns(subs, points, extra=()):
    lessons = sorted({s.lesson for s in subs if s.lesson in points} | {e for e in extra if e in points})
    qualified = len(lessons) > 1
    return [(lesson, q, f"{lesson}:{q}" if qualified else q) for lesson in lessons for q in points[lesson]]


def rows(subs, points, columns=None):
    """The CSV rows as dicts (column -> value), in the order of ``subs``; ``columns`` default: theirs."""
    columns = _columns(subs, points) if columns is None else columns
    out = []
    for sub in subs:
        row = {"submission": sub.name, "lesson": sub.lesson or ""}
        known = sub.lesson in points
        graded = (sub.result or {}).get("questions", {})
        scores = {q: graded.get(q, {}).get("score", 0) for q in points.get(sub.lesson, {})}
        for lesson, q, column in columns:
            row[column] = _num(scores[q]) if lesson == sub.lesson else ""
        row["total"] = _num(sum(scores.values())) if known else 0
        row["max"] = _num(sum(points[sub.lesson].values())) if known else ""
        row["status"] = sub.status or ""
        out.append(row)
    return out


_HINTS = [
    ("timeout", "It ran longer than the time limit: look for a loop that never ends or a cell that waits for "
                "input, then check that *Restart Kernel and Run All Cells* finishes."),
    ("exited early", "The notebook ended its own Python process (`os._exit`, or a crash) before its tests ran."),
    ("not a notebook", "Submit the lesson's `.ipynb` file (File > Download in JupyterLab)."),
    ("unreadable", "The file is not valid notebook JSON: download it again from JupyterLab (File > Download)."),
    ("malformed notebook", "A cell of the file is not valid notebook JSON: download it again from JupyterLab "
                           "(File > Download)."),
    ("skipped", "Submit the lesson's `.ipynb` file itself (File > Download in JupyterLab)."),
    ("not a Jupyter", "The file is not valid notebook JSON: download it again from JupyterLab (File > Download)."),
    ("unknown lesson", "Its lesson could not be told: submit the lesson's own notebook, or put the lesson's name "
                       "(such as 03_softmax_and_context) in the file name."),
    ("wrong lesson", "It is a notebook of another lesson than the one being graded."),
    ("", "Check that it is the lesson's notebook, that it opens in JupyterLab, and that *Restart Kernel and "
         "Run All Cells* finishes; your instructor has the details in grading.log."),
]


def _feedback(sub, points):
    lines = [f"# {printable(sub.name)}", ""]
    questions = points.get(sub.lesson, {})
    result = sub.result or {}
    got = {q: result.get("questions", {}).get(q, {}).get("score", 0) for q in questions}
    score = (f"score **{_num(sum(got.values()))} / {_num(sum(questions.values()))}**" if questions
             else "not graded")
    lines.append(f"Lesson {sub.lesson or 'unknown'} · {score} · status: {printable(sub.status)}")
    if sub.status != "ok":
        hint = next((h for prefix, h in _HINTS if sub.status.startswith(prefix)), _HINTS[-1][1])
        lines += ["", f"This submission could not be graded as it is. {hint}"]
    if questions:
        lines += ["", "| question | points | max |", "|---|---|---|"]
        lines += [f"| {q} | {_num(got[q])} | {_num(p)} |" for q, p in questions.items()]
    graded = result.get("questions", {})
    for q in [*[q for q in questions if q in graded], *[q for q in graded if q not in questions]]:
        detail = graded[q]
        lines += ["", f"## {q}: {_num(detail['score'])} / {_num(detail['possible'])}", ""]
        for test in detail["tests"]:
            kind, pts = ("hidden" if test["hidden"] else "public"), _num(test["points"])
            verdict = "passed" if test["passed"] else "failed"
            lines.append(f"- {kind} test `{printable(test['name'])}` ({pts} point{'s' if pts != 1 else ''}): "
                         f"{verdict}")
            if not test["passed"] and not test["hidden"] and test["message"]:
                message = capped(test["message"]).splitlines()
                lines += ["", "  ```", *("  " + printable(m, keep="\t") for m in message), "  ```"]
    errors = result.get("cell_errors") or []
    if errors:
        lines += ["", "## Cells that raised an error", ""]
        for e in errors[:20]:
            where = f"cell {e['cell']}" if e.get("cell") else "a cell"
            lines.append(f"- {where} (`{printable(e['source'])}`): {printable(capped(e['error'], 300))}")
    return "\n".join(lines) + "\n"


def write(subs, points, out_dir, lessons=()):
    """Write ``out_dir/feedback/*.md`` and ``out_dir/grades.csv``; ``lessons`` get columns even without rows.

    A feedback file that cannot be written is logged and named in its row's status; the CSV is
    always written, a row that cannot be computed holding the reason in its status.
    """
    out_dir = Path(out_dir)
    feedback = out_dir / "feedback"
    feedback.mkdir(exist_ok=True)
    for sub in subs:
        try:
            (feedback / sub.feedback).write_text(_feedback(sub, points), encoding="utf-8")
        except Exception as exc:
            LOG.exception("%s: no feedback file", printable(sub.name))
            sub.status = f"{sub.status}; no feedback file ({type(exc).__name__})"
    header = ["submission", "lesson", *[c for _, _, c in _columns(subs, points, lessons)], "total", "max", "status"]
    with open(out_dir / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        for sub in subs:
            try:
                row = rows([sub], points, _columns(subs, points, lessons))[0]
            except Exception as exc:
                LOG.exception("%s: no row", printable(sub.name))
                row = {"submission": sub.name, "lesson": sub.lesson or "",
                       "status": f"report error ({type(exc).__name__}; see grading.log)"}
            writer.writerow({k: csv_cell(v) for k, v in row.items()})


def _table(header, body):
    body = [[printable(x) for x in r] for r in body]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*r) for r in body)])


def summary(subs, points, out_dir, seconds, jobs, sandbox_description):
    """The table printed at the end: mean score per question, count per status, where the files are."""
    table = rows(subs, points)
    body = []
    for lesson, q, column in _columns(subs, points):
        values = [r[column] for r in table if r["lesson"] == lesson]
        body.append([lesson, q, len(values), f"{sum(values) / len(values):.2f}" if values else "-",
                     _num(points[lesson][q])])
    parts = [f"graded {len(subs)} submission{'s' if len(subs) != 1 else ''} in {seconds:.0f} s with {jobs} "
             f"job{'s' if jobs != 1 else ''}; sandbox: {sandbox_description}"]
    if body:
        parts += ["", _table(["lesson", "question", "n", "mean", "max"], body)]
    counts = Counter(s.status for s in subs)
    if counts:
        parts += ["", _table(["status", "count"], sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))]
    out_dir = Path(out_dir)
    parts += ["", f"wrote {out_dir / 'grades.csv'}, {out_dir / 'feedback'}/ ({len(subs)} files) and "
                  f"{out_dir / 'grading.log'}"]
    return "\n".join(parts)
