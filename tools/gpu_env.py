"""The GPU check's environment: is it complete, and --dry's stand-in for the GPU machine's site-packages.

Usage:
    python tools/gpu_env.py verify          import every module the package, the tests and the solution
                                            notebooks import, and every module of attn_course; load MiniLM
    python tools/gpu_env.py system-site NAMES DIR [--leave-out REQUIREMENTS]
                                            link this environment's copies of the packages named in NAMES,
                                            and what they need, into DIR (``gpu_check.sh --dry`` only)
"""
import argparse
import ast
import shutil
import sys
from pathlib import Path

from gpu_wheelhouse import canonical, system_packages, target_markers

ROOT = Path(__file__).resolve().parents[1]


def system_site(names, dest, leave_out=()):
    """Link into ``dest`` the top-level files and folders of each distribution of this environment whose
    name is in ``names``, and of what those require as installed here unless it is in ``leave_out`` (the
    wheelhouse's): what the GPU machine's site-packages offers, consistent as an image is, with this
    machine's versions. Returns the names linked."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    dists = {canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    markers = target_markers(f"{sys.version_info[0]}.{sys.version_info[1]}")
    todo, linked = [n for n in names if n in dists], set()
    while todo:
        name = todo.pop()
        if name in linked:
            continue
        linked.add(name)
        for r in dists[name].requires or []:
            req = Requirement(r)
            if (canonical(req.name) in dists and canonical(req.name) not in leave_out
                    and (req.marker is None or req.marker.evaluate(markers))):
                todo.append(canonical(req.name))
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in sorted(linked):
        dist = dists[name]
        for top in sorted({str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}):
            source = Path(dist.locate_file(top))
            if source.exists() and not (dest / top).exists():
                (dest / top).symlink_to(source)
    return sorted(linked)


OWN_MODULES = {"attn_course", "helpers", "correct_variants", "build_lessons", "grading_corpus", "conftest"}
RUNTIME_MODULES = {"nbval": "pytest --nbval", "xdist": "pytest -n", "ipykernel": "the notebooks' kernel"}
NOT_IMPORTED = {"playwright": "browser tests only", "jupyterlab": "`make lab` only",
                "attn_course.grading.preload": "the grading server's preload: importing it arms the tripwire"}


def imported_modules(paths):
    """{top-level module: the first file importing it} over the absolute imports and
    ``pytest.importorskip("name")`` calls in ``paths``, plus RUNTIME_MODULES; the standard library, the
    project's own modules and NOT_IMPORTED left out."""
    found = dict(RUNTIME_MODULES)
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else
                     [node.args[0].value] if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip"
                                              and node.args and isinstance(node.args[0], ast.Constant)) else [])
            for name in names:
                top = name.split(".")[0]
                if not (top in sys.stdlib_module_names or top in OWN_MODULES or top in NOT_IMPORTED
                        or top.startswith("test_")):
                    found.setdefault(top, Path(path).relative_to(ROOT).as_posix())
    return found


def verify():
    """Import every module the package, the tests and the solution notebooks import, and every module
    of attn_course; load the MiniLM weights. Returns the problems (empty when all is well)."""
    import importlib
    import pkgutil

    sources = [*ROOT.glob("attn_course/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("solutions/[0-9]*.py")]
    problems = []
    for module, where in sorted(imported_modules(sources).items()):
        try:
            importlib.import_module(module)
        except Exception as exc:
            problems.append(f"import {module} (needed by {where}): {type(exc).__name__}: {exc}")
    import attn_course

    for info in pkgutil.walk_packages(attn_course.__path__, "attn_course."):
        if info.name not in NOT_IMPORTED:
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                problems.append(f"import {info.name}: {type(exc).__name__}: {exc}")
    try:
        from attn_course.pretrained import load_minilm

        config, state_dict, _ = load_minilm()
        assert config["hidden_size"] == 384 and len(state_dict) > 100, (config["hidden_size"], len(state_dict))
    except Exception as exc:
        problems.append(f"all-MiniLM-L6-v2 weights: {type(exc).__name__}: {exc}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("verify", help="import what the check imports; load the MiniLM weights")
    ss = sub.add_parser("system-site", help="link this environment's copies of the named packages")
    ss.add_argument("names")
    ss.add_argument("dest")
    ss.add_argument("--leave-out", help="a requirements file: what it names is never linked as a dependency")
    args = parser.parse_args(argv)
    if args.cmd == "verify":
        problems = verify()
        print("\n".join(problems) if problems else "verify: every module the check imports is importable; MiniLM loads")
        return 1 if problems else 0
    leave_out = {canonical(line.split("==")[0]) for line in Path(args.leave_out).read_text().split()} if args.leave_out else ()
    linked = system_site(system_packages(args.names), args.dest, leave_out)
    print(f"{args.dest}: {len(linked)} distributions linked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
