"""The ``attn-course`` command.

    attn-course lab [DIR]                  open the course in JupyterLab
    attn-course grade SUBMISSIONS_DIR --out OUT_DIR [--lesson NAME] [--timeout SECONDS] [--jobs N]
                                           grade a folder of submitted notebooks (see attn_course.grading)
"""
import argparse
import sys


def _grade(argv):
    parser = argparse.ArgumentParser(
        prog="attn-course grade",
        description="Grade a folder of submitted lesson notebooks with their otter-grader autograders: "
                    "writes OUT_DIR/grades.csv, OUT_DIR/feedback/<submission>.md and OUT_DIR/grading.log. "
                    "Exit code 0: graded; 1: no submission found; 2: bad arguments.")
    parser.add_argument("submissions", metavar="SUBMISSIONS_DIR",
                        help="folder of .ipynb submissions (or a single notebook to regrade)")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="where the CSV, feedback and log go")
    parser.add_argument("--lesson", metavar="NAME",
                        help="grade every notebook as this lesson (03 or 03_softmax_and_context); default: "
                             "each notebook's metadata, else a lesson name in its file name")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="wall-clock limit per submission (default 300: the application lessons train models)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="submissions graded at once (default: the number of CPUs, at most 8)")
    parser.add_argument("--memory-mb", type=int, default=6144, metavar="MB",
                        help="address-space limit per process (default 6144; torch needs about 1500)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.timeout <= 0 or (args.jobs is not None and args.jobs < 1) or args.memory_mb < 512:
        parser.error("--timeout must be > 0, --jobs >= 1 and --memory-mb >= 512")
    from .grader import grade
    return grade(args.submissions, args.out, lesson=args.lesson, timeout=args.timeout, jobs=args.jobs,
                 memory_mb=args.memory_mb, progress=not args.no_progress)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["grade"]:
        return _grade(argv[1:])
    parser = argparse.ArgumentParser(prog="attn-course", description="The attention course's command line.")
    parser.add_argument("command", choices=["lab", "grade"],
                        help="lab: open the lessons in JupyterLab; grade: grade a folder of submissions")
    args, rest = parser.parse_known_args(argv)
    if args.command == "lab":
        from ..lab import main as lab_main
        return lab_main(rest)
    return 2


if __name__ == "__main__":
    sys.exit(main())
