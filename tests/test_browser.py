"""Lesson 03's TemperatureExplorer works in a real JupyterLab, driven by a real Chromium.

What this proves, end to end:

* JupyterLab started with ``attn_course.lab.lab_command`` (the argv ``make lab`` uses) with the
  user's own Jupyter configuration shut out, sees ``commsOverSubshells: "disabled"``. The test writes
  no such setting: it has to come from what the set-up installed into this environment
  (``python -m attn_course.lab --install-settings-only``, run by ``make``), and it is checked through
  the REST API before any browser is started.
* Run All on the lesson completes: every code cell gets an execution number, the kernel ends Idle.
* The temperature slider can be moved by keyboard, by mouse drag and by typing into its readout.
  After each move the printed ``attn_weights`` equal ``torch.softmax(attn_scores / T)`` for the T
  the slider shows, and the bar chart is drawn (not blank), is redrawn (not the previous picture) and
  its tallest bar grows as T falls.
* JupyterLab shuts down cleanly and leaves no kernel process behind.

Screenshots go to ``test-artifacts/browser/`` (their paths are printed; run with ``-s``).

Needs Chromium (Debian: ``apt-get install -y chromium``; Playwright drives it through
``executable_path``, so no ``playwright install``). Without one the test is skipped, loudly.
Run alone: ``.venv/bin/python -m pytest -p no:xdist -o addopts="" tests/test_browser.py -q -s``
"""
import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from attn_course.lab import lab_command, settings_file

ROOT = Path(__file__).resolve().parents[1]
LESSON = "lessons/03_softmax_and_context.ipynb"
# The notebook under test, relative to the repository root. SCRATCH is a generated stand-in with
# nothing but the explorer, for working on this test while the lesson does not exist
# (ATTN_COURSE_BROWSER_NOTEBOOK=scratch).
SCRATCH = "scratch"
NOTEBOOK = os.environ.get("ATTN_COURSE_BROWSER_NOTEBOOK", LESSON)

ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROME_ARGS = [  # Playwright itself adds --headless and a fresh temporary --user-data-dir
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# User settings that only tame the test; <settings dir>/@jupyterlab/<plugin>.jupyterlab-settings.
# commsOverSubshells is deliberately absent: it must come from the environment's overrides.json.
TEST_USER_SETTINGS = {
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # attach every cell (the 4.x default "contentVisibility" detaches off-screen cells);
    # start the notebook's kernel without a "Select Kernel" dialog
    "notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
}
KERNELS_SETTINGS = "/lab/api/settings/@jupyterlab/apputils-extension:kernels-settings"
TIMEOUT_MS = 30_000  # 2 CPU cores, shared with nbval workers under `make test`
RUN_ALL_TIMEOUT_S = 180
START_TIMEOUT_MS = 120_000  # page load, then the kernel's start, on a busy machine
TOLERANCE = 5e-4  # weights are printed with 4 decimals
C0_BLUE = (0x1F, 0x77, 0xB4)  # matplotlib's default bar colour

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)  # Playwright's default of 5 s is too short here


# ---------------------------------------------------------------- notebooks

def write_scratch_notebook(path: Path) -> Path:
    """A minimal stand-in for lesson 03: the imports and a TemperatureExplorer as the last cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Softmax temperature (scratch stand-in for lesson 03)"),
        nbformat.v4.new_code_cell("%matplotlib inline\nimport torch\n"
                                  "from attn_course.widgets import TemperatureExplorer"),
        nbformat.v4.new_code_cell('explorer = TemperatureExplorer(torch.tensor([2.0, 1.0, 0.5, -1.0]), '
                                  '["a", "b", "c", "d"])\nexplorer'),
    ]
    nbformat.write(nb, path)
    return path


def place_notebook(folder: Path) -> Path:
    """Put the notebook under test into the served folder; return its path there."""
    if NOTEBOOK == SCRATCH:
        return write_scratch_notebook(folder / "scratch_temperature.ipynb")
    source = ROOT / NOTEBOOK
    if not source.is_file():
        pytest.fail(f"{NOTEBOOK} does not exist: the browser test drives the TemperatureExplorer in "
                    f"that lesson. Write the lesson (solutions/ -> `make lessons`), or, to work on "
                    f"this test meanwhile, run it with ATTN_COURSE_BROWSER_NOTEBOOK={SCRATCH}.",
                    pytrace=False)
    return Path(shutil.copy(source, folder / source.name))


# ---------------------------------------------------------------- JupyterLab

def find_chromium():
    candidates = [os.environ.get("CHROMIUM"), "/usr/bin/chromium",
                  shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_pids(pid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return out.stdout.split()


class Lab:
    def __init__(self, url, token, proc, notebook):
        self.url, self.token, self.proc, self.notebook = url, token, proc, notebook

    def api(self, path, method="GET"):
        req = urllib.request.Request(self.url + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        pytest.skip("NO CHROMIUM FOUND: the real-browser test of the widgets did NOT run. Install it "
                    "(Debian/Ubuntu: `apt-get install -y chromium`, or `make chromium` as root), or "
                    "point CHROMIUM=/path/to/chromium at one.")
    return path


@contextlib.contextmanager
def serve_lab(root, served, payload, log_name="jupyterlab.log"):
    """Run JupyterLab on ``served`` exactly as ``make lab`` does, with the user's config isolated under
    ``root``; yield a ``Lab``; then shut it down and assert no kernel process is left."""
    for name, value in TEST_USER_SETTINGS.items():
        f = root / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    env = {k: v for k, v in os.environ.items()
           if k not in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTERLAB_DIR")}
    env.update(JUPYTER_CONFIG_DIR=str(root / "config"),  # no ~/.jupyter
               JUPYTER_DATA_DIR=str(root / "data"),  # the kernelspec is still found in sys.prefix
               JUPYTER_RUNTIME_DIR=str(root / "runtime"),
               IPYTHONDIR=str(root / "ipython"),
               MPLCONFIGDIR=str(root / "mpl"),
               JUPYTERLAB_SETTINGS_DIR=str(root / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"))  # no restored tabs or layout
    token, port = secrets.token_hex(16), free_port()
    log_path = root / "jupyterlab.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(lab_command(served, port, token, open_browser=False), env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=served)
    lab = Lab(f"http://127.0.0.1:{port}", token, proc, payload)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.fail("JupyterLab exited during start-up:\n" + log_path.read_text(), pytrace=False)
        try:
            if lab.api("/api/status")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail("JupyterLab did not answer within 60 s:\n" + log_path.read_text(), pytrace=False)
        time.sleep(0.25)

    yield lab

    kernels = child_pids(proc.pid)
    try:
        lab.api("/api/shutdown", method="POST")  # stops every kernel, then the server exits
        proc.wait(timeout=30)
    except Exception:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(log_path, ARTIFACTS / log_name)
    deadline = time.monotonic() + 10
    while (left := [p for p in kernels if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"kernel processes left running after JupyterLab shut down: {left}"
    print(f"\n  JupyterLab shut down (exit code {proc.returncode}); kernel processes {kernels} gone; "
          f"log: {ARTIFACTS / log_name}")


@pytest.fixture(scope="module")
def lab(chromium, tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    served = root / "notebooks"
    served.mkdir()
    with serve_lab(root, served, place_notebook(served)) as lab:
        yield lab


@pytest.fixture(scope="module")
def browser(chromium):
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROME_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    ctx.close()


def composite_setting(lab, path, key):
    """The value JupyterLab's front end will use: the user setting if any, else the schema default
    (the server has already folded overrides.json into the schema's defaults)."""
    plugin = json.loads(lab.api(path)[1])
    return plugin["settings"].get(key, plugin["schema"]["properties"][key].get("default"))


# ---------------------------------------------------------------- page helpers

KERNEL_IDLE = re.compile(r"\(ipykernel\) \| Idle")
STATE_JS = """() => ({
  prompts: Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt'),
                      e => e.textContent.trim()),
  status: document.querySelector('#jp-main-statusbar')?.innerText ?? '',
})"""
ERRORS_JS = """() => Array.from(
  document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'),
  e => e.innerText).filter(t => /Error|Traceback/.test(t))"""


def wait_kernel_idle(page, timeout=60_000):
    # "No Kernel | Initializing" -> "Python 3 (ipykernel) | Connecting" -> "... | Idle"
    expect(page.locator("#jp-main-statusbar").get_by_text(KERNEL_IDLE)).to_be_visible(timeout=timeout)


def run_all(page, timeout_s=RUN_ALL_TIMEOUT_S):
    """Run > Run All Cells; return once every code cell shows an execution number and the kernel
    is Idle. Fails with the traceback if Run All stopped at an error."""
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="Run").click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
    deadline, stopped_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        state = page.evaluate(STATE_JS)
        prompts, idle = state["prompts"], bool(KERNEL_IDLE.search(state["status"]))
        pending = [p for p in prompts if not re.fullmatch(r"\[\d+\]:?", p)]
        if idle and not pending:
            return
        if idle and not any("*" in p for p in prompts):
            stopped_since = stopped_since or time.monotonic()
            if time.monotonic() - stopped_since > 5:  # idle, nothing queued, cells left unrun
                errors = "\n".join(page.evaluate(ERRORS_JS)) or "(no error output found)"
                pytest.fail(f"Run All stopped with {len(pending)} of {len(prompts)} code cells not run. "
                            f"Error output:\n{errors}", pytrace=False)
        else:
            stopped_since = None
        time.sleep(0.25)
    pytest.fail(f"Run All did not finish within {timeout_s} s; prompts: {prompts}; "
                f"status bar: {state['status']!r}", pytrace=False)


def settled_src(img, previous, quiet_s=1.0, timeout_s=30.0) -> str:
    """The chart's src once it differs from ``previous`` and has stayed put for ``quiet_s``."""
    last, since, deadline = None, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        src = img.get_attribute("src")
        if src != last:
            last, since = src, time.monotonic()
        elif src and src != previous and time.monotonic() - since >= quiet_s:
            img.scroll_into_view_if_needed()
            img.page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle())
            return src
        time.sleep(0.1)
    pytest.fail(f"the chart was not redrawn within {timeout_s} s (src still {last!r})", pytrace=False)


def tallest_bar_px(png: bytes) -> int:
    """Height in pixels of the tallest C0-blue bar in a screenshot; 0 for a blank chart."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    blue = np.abs(rgb - C0_BLUE).sum(axis=2) < 40
    return int(blue.sum(axis=0).max())


def parse_readout(text: str):
    """(T, attn_scores, attn_weights) from the explorer's readout."""
    t = re.search(r"T = ([-\d.]+)", text)
    scores = re.search(r"attn_scores:\s+(.+)", text)
    weights = re.search(r"attn_weights:\s+(.+)", text)
    assert t and scores and weights, f"unexpected readout:\n{text}"
    return (float(t.group(1)), torch.tensor([float(x) for x in scores.group(1).split()]),
            torch.tensor([float(x) for x in weights.group(1).split()]))


# ---------------------------------------------------------------- the test

def test_temperature_explorer_in_jupyterlab(lab, page):
    t0 = time.monotonic()
    comms = composite_setting(lab, KERNELS_SETTINGS, "commsOverSubshells")
    assert comms == "disabled", (
        f"JupyterLab's commsOverSubshells is {comms!r}, not 'disabled': "
        f"the course's JupyterLab settings are not installed in this environment "
        f"({settings_file()} lacks them), so widget callbacks run on a kernel thread of their own "
        f"and inline matplotlib charts can come out blank. "
        f"Run `python -m attn_course.lab --install-settings-only` (make does it).")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    shots = []

    def shoot(target, name, **kw):
        path = ARTIFACTS / f"{name}.png"
        target.screenshot(path=path, **kw)
        shots.append(path)
        return path

    n_cells = len(nbformat.read(lab.notebook, as_version=4).cells)
    page.goto(f"{lab.url}/lab/tree/{lab.notebook.name}?token={lab.token}&reset")
    expect(page.locator(".jp-NotebookPanel .jp-Cell")).to_have_count(n_cells, timeout=START_TIMEOUT_MS)
    wait_kernel_idle(page, START_TIMEOUT_MS)  # started AND connected, else Run All opens "Select Kernel"
    t_open = time.monotonic()
    run_all(page)
    t_run = time.monotonic()

    explorer = page.locator(".widget-vbox:has(> .temperature-slider)").first
    slider = explorer.locator(".temperature-slider")
    expect(slider).to_be_visible()
    slider_value = slider.locator(".widget-readout")
    handle = slider.locator(".noUi-handle")
    readout = explorer.locator(".temperature-readout")
    chart = explorer.locator("img.temperature-chart")
    explorer.scroll_into_view_if_needed()
    shoot(page, "00_page_after_run_all", full_page=True)

    seen, heights, src = {}, {}, None

    def check(name, expected_t=None):
        """After a move: slider, readout and chart agree with softmax(attn_scores / T)."""
        nonlocal src
        if expected_t is not None:
            expect(slider_value).to_have_text(f"{expected_t:.2f}")
        t_slider = float(slider_value.inner_text())
        expect(readout).to_contain_text(f"T = {t_slider:.2f} ")  # the kernel has answered
        src = settled_src(chart, previous=src)
        t, scores, weights = parse_readout(readout.inner_text())
        assert t == pytest.approx(t_slider, abs=1e-9), f"{name}: readout T {t} vs slider {t_slider}"
        expected = torch.softmax(scores / t, dim=0)
        assert torch.allclose(weights, expected, atol=TOLERANCE, rtol=0), (
            f"{name}: at T = {t:.2f} the readout shows attn_weights {weights.tolist()}, "
            f"but softmax(attn_scores / T) = {[round(w, 4) for w in expected.tolist()]}")
        png = chart.screenshot()
        pixels = Image.open(io.BytesIO(png)).convert("RGB").tobytes()
        digest = hashlib.sha256(pixels).hexdigest()[:12]
        height = tallest_bar_px(png)
        print(f"\n  {name}: T = {t:.2f}  weights {' '.join(f'{w:.4f}' for w in weights.tolist())}"
              f"  chart {digest}  tallest bar {height} px")
        shoot(explorer, name)
        assert height > 10, f"{name}: the chart is blank at T = {t:.2f} (tallest C0 bar {height} px)"
        assert digest not in seen, f"{name}: the chart did not change (same picture as {seen[digest]})"
        seen[digest], heights[t] = name, height
        return t

    t_initial = check("01_after_run_all")

    # 1) keyboard: focus the noUiSlider handle; 5 steps of 0.1
    key, sign = ("ArrowRight", 1) if t_initial <= 4.5 else ("ArrowLeft", -1)
    handle.focus()
    for _ in range(5):
        page.keyboard.press(key)
    t_key = check("02_keyboard", expected_t=round(t_initial + sign * 0.5, 2))

    # 2) mouse: drag the handle across the track (0.1 .. 5.0) to 80 % (~4.0), or 20 % if already high
    fraction = 0.8 if t_key < 2.5 else 0.2
    handle.scroll_into_view_if_needed()
    track, box = slider.locator(".noUi-base").bounding_box(), handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + fraction * track["width"], track["y"] + track["height"] / 2, steps=10)
    page.mouse.up()
    target = 0.1 + fraction * 4.9
    expect(slider_value).not_to_have_text(f"{t_key:.2f}")
    t_drag = float(slider_value.inner_text())
    assert abs(t_drag - target) <= 0.3, f"dragged to {fraction:.0%} of the track but T = {t_drag}"
    check("03_drag", expected_t=t_drag)

    # 3) typed value: the slider's readout is contenteditable (ipywidgets 8); type, Enter
    slider_value.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("0.3")
    page.keyboard.press("Enter")
    check("04_typed", expected_t=0.3)
    wait_kernel_idle(page)
    shoot(page, "05_page_at_end", full_page=True)

    # lower temperature -> sharper distribution -> taller tallest bar
    by_t = sorted(heights.items())
    assert all(h1 > h2 for (_, h1), (_, h2) in zip(by_t, by_t[1:])), (
        f"the tallest bar should shrink as T rises; (T, px): {by_t}")

    print(f"\n  notebook {NOTEBOOK}; open + kernel {t_open - t0:.1f} s, Run All {t_run - t_open:.1f} s, "
          f"moves {time.monotonic() - t_run:.1f} s")
    print("  screenshots:\n" + "\n".join(f"    {p}" for p in shots))
