"""The ``attn-course`` command: ``attn-course lab [DIR]`` opens the course in JupyterLab."""
import argparse
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="attn-course", description="The attention course's command line.")
    parser.add_argument("command", choices=["lab"], help="lab: open the lessons in JupyterLab")
    args, rest = parser.parse_known_args(argv)
    if args.command == "lab":
        from .lab import main as lab_main
        return lab_main(rest)
    return 2


if __name__ == "__main__":
    sys.exit(main())
