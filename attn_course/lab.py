"""Open the course in JupyterLab: ``python -m attn_course.lab [DIR]`` (what ``make lab`` runs).

Installs the JupyterLab settings the course needs into this Python environment
(``<sys.prefix>/share/jupyter/lab/settings/overrides.json``), then serves DIR (default ``lessons``)
on 127.0.0.1 with a fresh token and prints the URL.

The settings: ``commsOverSubshells: "disabled"``. JupyterLab >= 4.4 with ipykernel 7 otherwise
handles widget messages on a separate kernel thread, where matplotlib's pyplot (not thread-safe)
draws the first chart of an ``ipywidgets.interactive`` blank. News and update checks are off
(the course works offline).
"""
import argparse
import json
import os
import secrets
import socket
import sys
from pathlib import Path

OVERRIDES = {
    "@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "disabled"},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def settings_file(prefix=None):
    """Where JupyterLab reads overrides for this environment: ``<app dir>/settings/overrides.json``.

    The app dir is ``jupyterlab.commands.get_app_dir()`` (``<sys.prefix>/share/jupyter/lab`` unless
    ``JUPYTERLAB_DIR`` moves it); with ``prefix`` given, ``<prefix>/share/jupyter/lab``.
    """
    if prefix is None:
        try:
            from jupyterlab.commands import get_app_dir
            return Path(get_app_dir()) / "settings" / "overrides.json"
        except ImportError:
            prefix = sys.prefix
    return Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def install_settings(prefix=None):
    """Merge ``OVERRIDES`` into the environment's ``overrides.json``; return its path."""
    path = settings_file(prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {}
    for plugin, values in OVERRIDES.items():
        current.setdefault(plugin, {}).update(values)
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


def free_port(start=8888, tries=50):
    """The first port from ``start`` on that 127.0.0.1 can bind."""
    for port in range(start, start + tries):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {start}..{start + tries - 1}")


def lab_command(root_dir, port, token, open_browser=True):
    """The argv that serves ``root_dir`` with JupyterLab on 127.0.0.1:``port``."""
    cmd = [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={Path(root_dir).resolve()}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers often run as root
    return cmd


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m attn_course.lab", description=__doc__.split("\n")[0])
    parser.add_argument("root_dir", nargs="?", default="lessons", help="folder to open (default: lessons)")
    parser.add_argument("--port", type=int, default=None, help="port (default: first free from 8888)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.add_argument("--install-settings-only", action="store_true",
                        help="install the JupyterLab settings into this environment and exit")
    args = parser.parse_args(argv)
    path = install_settings()
    if args.install_settings_only:
        print(f"JupyterLab settings for attn-course installed in {path}")
        return 0
    if not Path(args.root_dir).is_dir():
        parser.error(f"{args.root_dir!r} is not a folder; run from the repository root or pass the "
                     f"lessons folder")
    port = args.port or free_port()
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}/lab?token={token}"
    print(f"\n  attn-course: JupyterLab on {Path(args.root_dir).resolve()}\n  Open {url}\n"
          f"  Stop with Ctrl+C.\n", flush=True)
    cmd = lab_command(args.root_dir, port, token, open_browser=not args.no_browser)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
