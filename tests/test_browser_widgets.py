"""The widgets of lessons 02, 04-09 and 11-18 work in a real JupyterLab, driven by a real Chromium.

One JupyterLab (started with ``attn_course.lab.lab_command``, as ``make lab`` does, with the user's
own Jupyter configuration shut out) serves copies of the lessons; one Chromium drives it. For each
lesson, its own test: open it, Run All, wait until every code cell has run, then move the lesson's
widget (the first one it shows) as a learner would and check that

* the readout changes, and says what the control now says (the tau / sample number / query token /
  layer and head / padding length and causal switch / d_k and scaling switch / suspect and head_dim
  that was picked; the typed number in words (09), the query patch (11), the test image (12), the
  voice and the digit (13), the article's title (14), the temperature and the typed prompt (15), the
  tile being read and the causal switch (16), the query's position, the offset and the score that
  moving both positions leaves unchanged (17), the typed date, the layer and the head (18));
* the chart is redrawn: its pixels differ from before, and it is not blank (many colours, not one).

Every lookup is scoped to the widget's own VBox (the one holding the control), so a lesson that shows
several widgets, or one widget twice, is checked on its first instance only.

Screenshots: ``test-artifacts/browser/<lesson>_after.png`` (the widget after the interactions).
Needs Chromium, as ``tests/test_browser.py`` does; without one every test here is skipped, loudly.
Run alone: ``.venv/bin/python -m pytest -p no:xdist -o addopts="" tests/test_browser_widgets.py -q -s``
"""
import hashlib
import io
import json
import re
import shutil
import time

import nbformat
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from test_browser import (  # noqa: F401  (browser and chromium are fixtures, used by name)
    ARTIFACTS,
    ROOT,
    START_TIMEOUT_MS,
    TIMEOUT_MS,
    browser,
    chromium,
    run_all,
    serve_lab,
    settled_src,
    wait_kernel_idle,
)

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)

LESSONS = [
    "02_queries_keys_scores",
    "04_soft_and_hard_attention",
    "05_self_attention",
    "06_multi_head_attention",
    "07_masks_and_transformer_block",
    "08_bug_hunt",
    "09_translation",
    "11_image_recognition",
    "12_image_captioning",
    "13_speech_recognition",
    "14_summarization",
    "15_text_generation",
    "16_attention_at_scale",
    "17_positions_rope_alibi",
    "18_encoder_decoder_transformer",
]
RUN_ALL_TIMEOUT_S = 300   # a lesson on a loaded 2-core machine
CHANGE_TIMEOUT_MS = 60_000  # one widget callback: a few matplotlib figures, on a busy kernel


# ---------------------------------------------------------------- one JupyterLab for all lessons

@pytest.fixture(scope="module")
def lab(chromium, tmp_path_factory):
    """JupyterLab serving copies of every lesson above; shut down (kernels and all) at the end."""
    root = tmp_path_factory.mktemp("lab_widgets")
    served = root / "notebooks"
    served.mkdir()
    for name in LESSONS:
        source = ROOT / "lessons" / f"{name}.ipynb"
        if source.is_file():
            shutil.copy(source, served / source.name)
    with serve_lab(root, served, served, log_name="jupyterlab_widgets.log") as lab:
        yield lab


@pytest.fixture
def page(browser, lab):
    """A fresh browser context per lesson; afterwards that lesson's kernel is shut down, so that at
    most one kernel at a time competes for the 2 cores."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    ctx.close()
    for session in json.loads(lab.api("/api/sessions")[1]):
        try:
            lab.api(f"/api/sessions/{session['id']}", method="DELETE")
        except OSError:
            pass


# ---------------------------------------------------------------- helpers

def open_and_run_all(lab, page, name):
    path = lab.notebook / f"{name}.ipynb"
    if not path.is_file():
        pytest.fail(f"lessons/{name}.ipynb does not exist", pytrace=False)
    n_cells = len(nbformat.read(path, as_version=4).cells)
    t0 = time.monotonic()
    page.goto(f"{lab.url}/lab/tree/{path.name}?token={lab.token}&reset")
    expect(page.locator(".jp-NotebookPanel .jp-Cell")).to_have_count(n_cells, timeout=START_TIMEOUT_MS)
    wait_kernel_idle(page, START_TIMEOUT_MS)
    t1 = time.monotonic()
    run_all(page, timeout_s=RUN_ALL_TIMEOUT_S)
    print(f"\n  {name}: open + kernel {t1 - t0:.1f} s, Run All {time.monotonic() - t1:.1f} s")


def chart_state(chart):
    """(src, pixel hash, number of distinct colours, share of non-white pixels) of a chart <img>."""
    chart.scroll_into_view_if_needed()
    chart.page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=chart.element_handle())
    img = Image.open(io.BytesIO(chart.screenshot())).convert("RGB")
    pixels = img.tobytes()
    colours = len(img.getcolors(maxcolors=1 << 20) or [])
    non_white = float((np.asarray(img).astype(int).sum(axis=2) < 3 * 240).mean())
    return chart.get_attribute("src"), hashlib.sha256(pixels).hexdigest()[:12], colours, non_white


def assert_drawn(label, state):
    _, digest, colours, non_white = state
    assert colours > 20 and non_white > 0.01, (
        f"{label}: the chart looks blank ({colours} colours, {non_white:.1%} non-white pixels)")


class WidgetCheck:
    """Readout and chart of one widget container, before and after each interaction."""

    def __init__(self, name, container, readout_class, chart_class):
        self.name, self.container = name, container
        self.readout = container.locator(f".{readout_class}")
        self.chart = container.locator(f"img.{chart_class}")
        container.scroll_into_view_if_needed()
        expect(self.readout).to_be_visible()
        expect(self.chart).to_be_visible()
        self.text = self.readout.inner_text()
        self.state = chart_state(self.chart)
        assert_drawn(f"{name} after Run All", self.state)
        print(f"  {name} before: chart {self.state[1]} ({self.state[2]} colours)\n    "
              + self.text.strip().replace("\n", "\n    "))

    def changed(self, what):
        """Wait until the readout and the chart have changed; return the new readout text."""
        expect(self.readout).not_to_have_text(self.text, timeout=CHANGE_TIMEOUT_MS)
        settled_src(self.chart, previous=self.state[0], timeout_s=CHANGE_TIMEOUT_MS / 1000)
        new_state = chart_state(self.chart)
        assert new_state[1] != self.state[1], f"{self.name}, {what}: the chart's pixels did not change"
        assert_drawn(f"{self.name}, {what}", new_state)
        self.text, self.state = self.readout.inner_text(), new_state
        print(f"  {self.name} after {what}: chart {new_state[1]} ({new_state[2]} colours)\n    "
              + self.text.strip().replace("\n", "\n    "))
        return self.text

    def shoot(self):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}_after.png"
        self.container.screenshot(path=path)
        print(f"  screenshot: {path}")


def slider_step(page, slider, fmt=float):
    """Press ArrowRight on a noUiSlider handle (ArrowLeft if it is at its maximum); return
    (old value, new value) as the slider's own readout shows them."""
    value = slider.locator(".widget-readout")
    handle = slider.locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    old_text = value.inner_text().strip()
    at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    handle.focus()
    page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
    expect(value).not_to_have_text(old_text)
    new_text = value.inner_text().strip()
    old, new = fmt(old_text), fmt(new_text)
    assert (new < old) if at_max else (new > old), f"the slider went from {old} to {new}"
    return old, new


def checkbox_click(container, cls):
    box = container.locator(f".{cls} input[type=checkbox]")
    before = box.is_checked()
    box.click()
    expect(box).to_be_checked(checked=not before)
    return not before


# ---------------------------------------------------------------- one interaction set per widget

def scale_explorer(page, name):
    box = page.locator(".widget-vbox:has(> .scale-slider)").first
    w = WidgetCheck(name, box, "scale-readout", "scale-chart")
    # the switch: divide by sqrt(d_k) on <-> off
    on = checkbox_click(box, "scale-checkbox")
    text = w.changed("clicking 'divide by sqrt(d_k)'")
    assert re.search(rf"divide by sqrt\(d_k\): {'yes' if on else 'no'}", text), text
    d_k = int(re.search(r"d_k =\s*(\d+)", text).group(1))
    expected = 1.0 if on else d_k ** 0.5
    assert re.search(rf"expected ~\s*{expected:.2f}\)", text), text
    # the d_k slider, one step: the next (or previous) power of two
    old, new = slider_step(page, box.locator(".scale-slider"), int)
    assert old == d_k and new in (2 * old, old // 2), (old, new)
    text = w.changed(f"d_k {old} -> {new}")
    assert re.search(rf"d_k =\s*{new}\s", text), text
    w.shoot()


def gumbel_explorer(page, name):
    box = page.locator(".widget-vbox:has(> .gumbel-tau-slider)").first
    w = WidgetCheck(name, box, "gumbel-readout", "gumbel-chart")
    freq = re.search(r"pick frequency:.*", w.text).group(0)
    # tau slider, one step of 0.05: y_soft changes, the picks (frequencies) do not
    old, new = slider_step(page, box.locator(".gumbel-tau-slider"))
    assert abs(new - old) == pytest.approx(0.05, abs=1e-6), (old, new)
    text = w.changed(f"tau {old:.2f} -> {new:.2f}")
    assert f"tau = {new:.2f} " in text, text
    assert re.search(r"pick frequency:.*", text).group(0) == freq, "the picks changed with tau"
    # resample: the next sample number
    seed = int(re.search(r"sample #(\d+)", text).group(1))
    box.locator(".gumbel-resample").click()
    text = w.changed("resample")
    assert f"sample #{(seed + 1) % 100}:" in text, text
    expect(box.locator(".gumbel-seed-slider .widget-readout")).to_have_text(str((seed + 1) % 100))
    w.shoot()


def query_picker(page, name):
    box = page.locator(".widget-vbox:has(> .query-picker)").first
    w = WidgetCheck(name, box, "query-readout", "query-chart")
    select = box.locator(".query-picker select")
    labels = select.locator("option").all_inner_texts()
    current = select.evaluate("s => s.selectedIndex")
    target = (current + 2) % len(labels)
    select.select_option(index=target)
    # ipywidgets shows "i: token" with its spaces as non-breaking spaces
    i, token = re.fullmatch(r"(\d+):\s(.*)", labels[target].replace("\xa0", " "), re.S).groups()
    text = w.changed(f"picking query {labels[target]!r}")
    assert text.startswith(f"query {i} {token!r} "), text
    w.shoot()


def head_picker(page, name):
    box = page.locator(".widget-vbox:has(> .head-slider)").first
    w = WidgetCheck(name, box, "head-readout", "head-chart")
    layer = int(box.locator(".layer-slider .widget-readout").inner_text())
    old, head = slider_step(page, box.locator(".head-slider"), int)
    text = w.changed(f"head {old} -> {head}")
    assert text.startswith(f"layer {layer}, head {head} "), text
    old, layer = slider_step(page, box.locator(".layer-slider"), int)
    text = w.changed(f"layer {old} -> {layer}")
    assert text.startswith(f"layer {layer}, head {head} "), text
    w.shoot()


def mask_explorer(page, name):
    box = page.locator(".widget-vbox:has(> .mask-padding-slider)").first
    w = WidgetCheck(name, box, "mask-readout", "mask-chart")
    on = checkbox_click(box, "mask-causal-toggle")
    text = w.changed("clicking 'causal mask'")
    assert f"causal: {'on' if on else 'off'}" in text, text
    old, n = slider_step(page, box.locator(".mask-padding-slider"), int)
    text = w.changed(f"padding {old} -> {n}")
    assert text.startswith(f"padding tokens: {n} "), text
    m = re.search(r"key_padding_mask \(1, (\d+)\), True = padding: \[([^\]]*)\]", text)
    assert m, text
    flags = [int(x) for x in m.group(2).split(",")]
    assert sum(flags) == n and flags[len(flags) - n:] == [1] * n, f"{n} padding tokens but {flags}"
    w.shoot()


def suspect_explorer(page, name):
    box = page.locator(".widget-vbox:has(> .suspect-dropdown)").first
    w = WidgetCheck(name, box, "suspect-readout", "suspect-chart")
    box.locator(".suspect-dropdown select").select_option("scaled_dot_product_attention_v2")
    text = w.changed("picking the SDPA suspect")
    assert text.startswith("scaled_dot_product_attention_v2: head_dim = 16   dropout_p = 0.25"), text
    expect(box.locator(".suspect-knob .widget-label")).to_have_text("dropout_p")
    sums = [float(x) for x in re.findall(r"suspect: +row sums ([\d.]+)\.\.([\d.]+)", text)[0]]
    assert min(sums) > 1.5, f"the broken dropout's rows should sum to about 3: {text}"
    old, new = slider_step(page, box.locator(".suspect-head-dim"), int)
    text = w.changed(f"head_dim {old} -> {new}")
    assert text.startswith(f"scaled_dot_product_attention_v2: head_dim = {new} "), text
    w.shoot()


def select_other(select, step=1):
    """Pick the option ``step`` places after the selected one (wrapping); return its label, with the
    non-breaking spaces ipywidgets puts in labels turned back into spaces."""
    labels = select.locator("option").all_inner_texts()
    target = (select.evaluate("s => s.selectedIndex") + step) % len(labels)
    select.select_option(index=target)
    return labels[target].replace("\xa0", " ")


def type_into(box, text):
    """Type ``text`` into a Text widget (continuous_update=False) and commit it with Enter."""
    field = box.locator("input[type=text]")
    field.scroll_into_view_if_needed()
    field.fill(text)
    field.press("Enter")


def translation_explorer(page, name):
    from attn_course.data import number_words

    box = page.locator(".widget-vbox:has(> .translation-input)").first
    w = WidgetCheck(name, box, "translation-readout", "translation-chart")
    number = 4_321 if "4321" not in box.locator(".translation-input input").input_value() else 56_789
    type_into(box.locator(".translation-input"), str(number))
    text = w.changed(f"typing {number}")
    _, english, reference = number_words.pair(number)
    assert re.search(rf"English:\s+{re.escape(' '.join(english))}\n", text), text
    assert re.search(rf"num2words \(French\):\s+{re.escape(' '.join(reference))}", text), text
    w.shoot()


def patch_picker(page, name):
    box = page.locator(".widget-vbox:has(> .widget-hbox > .patch-row)").first
    w = WidgetCheck(name, box, "patch-readout", "patch-chart")
    row = int(box.locator(".patch-row .widget-readout").inner_text())
    old, col = slider_step(page, box.locator(".patch-col"), int)
    text = w.changed(f"query col {old} -> {col}")
    assert text.startswith(f"query patch ({row}, {col}) "), text
    old, row = slider_step(page, box.locator(".patch-row"), int)
    text = w.changed(f"query row {old} -> {row}")
    assert text.startswith(f"query patch ({row}, {col}) "), text
    w.shoot()


def caption_explorer(page, name):
    box = page.locator(".widget-vbox:has(> .caption-slider)").first
    w = WidgetCheck(name, box, "caption-readout", "caption-chart")
    old, new = slider_step(page, box.locator(".caption-slider"), int)
    text = w.changed(f"test image {old} -> {new}")
    assert re.match(rf"image {new}: generated '[a-z<> ]+'\s+true '[a-z ]+'", text), text
    w.shoot()


def speech_explorer(page, name):
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    box = page.locator(".widget-vbox:has(> .speech-voice)").first
    w = WidgetCheck(name, box, "speech-readout", "speech-chart")
    voice, said = re.match(r"voice (\S+), said '(\w+)'", w.text).groups()
    digit = (words.index(said) + 4) % 10
    buttons = box.locator(".speech-digit button")
    buttons.filter(has_text=re.compile(rf"^\s*{digit}\s*$")).click()
    text = w.changed(f"clicking digit {digit}")
    assert text.startswith(f"voice {voice}, said '{words[digit]}': heard '"), text
    expect(box.locator(".speech-digit button.mod-active")).to_have_text(str(digit))
    voice = select_other(box.locator(".speech-voice select"))
    text = w.changed(f"picking voice {voice}")
    assert text.startswith(f"voice {voice}, said '{words[digit]}': heard '"), text
    w.shoot()


def summary_explorer(page, name):
    box = page.locator(".widget-vbox:has(> .summary-article-picker)").first
    w = WidgetCheck(name, box, "summary-readout", "summary-chart")
    label = select_other(box.locator(".summary-article-picker select"))
    title = re.fullmatch(r"\d+: (.*)", label, re.S).group(1)
    text = w.changed(f"picking article {label!r}")
    assert f"title: {title}" in text.replace("\xa0", " "), text
    assert re.search(r"summary \(top-weighted sentence \d+\): ", text), text
    page.set_viewport_size({"width": 1280, "height": 2400})   # the whole article: taller than 900 px
    w.shoot()


def generation_explorer(page, name):
    box = page.locator(".widget-vbox:has(> .generation-temperature)").first
    w = WidgetCheck(name, box, "generation-readout", "generation-attention")
    old, new = slider_step(page, box.locator(".generation-temperature"))
    assert abs(new - old) == pytest.approx(0.05, abs=1e-6), (old, new)
    text = w.changed(f"T {old:.2f} -> {new:.2f}")
    assert text.startswith(f"T = {new:.2f}   mean entropy "), text
    type_into(box, "HORATIO")
    text = w.changed("typing the prompt 'HORATIO'")
    assert text.startswith(f"T = {new:.2f}   mean entropy "), text
    assert text.split("\n", 1)[1].startswith("HORATIO"), text
    w.shoot()


def tiling_explorer(page, name):
    box = page.locator(".widget-vbox:has(.tiling-step-slider)").first
    w = WidgetCheck(name, box, "tiling-readout", "tiling-chart")
    old, new = slider_step(page, box.locator(".tiling-step-slider"), int)
    text = w.changed(f"tiles read {old} -> {new}")
    assert re.search(rf"^step {new} of \d+: query block \d+", text, re.M), text
    on = checkbox_click(box, "tiling-causal-toggle")
    text = w.changed("clicking 'causal'")
    assert f"(causal: {'on' if on else 'off'})" in text, text
    tiles, skipped = map(int, re.search(r"= (\d+) tiles, (\d+) skipped", text).groups())
    assert (skipped > 0) == on and skipped < tiles, text
    w.shoot()


def rotary_explorer(page, name):
    box = page.locator(".widget-vbox:has(.rotary-m-slider)").first
    w = WidgetCheck(name, box, "rotary-readout", "rotary-chart")
    old, new = slider_step(page, box.locator(".rotary-m-slider"), int)
    text = w.changed(f"query position m {old} -> {new}")
    n = int(re.search(r"^key\s+at n = (\d+):", text, re.M).group(1))
    assert re.search(rf"^query at m = {new}: turned by", text, re.M), text
    assert f"offset m - n = {new - n}:" in text, text
    score = re.search(r"over all D = \d+ features: (-?[\d.]+)", text).group(1)
    box.locator(".rotary-shift-button").click()
    text = w.changed("clicking 'move both by +1'")
    assert re.search(rf"^query at m = {new + 1}: turned by", text, re.M), text
    assert re.search(rf"^key\s+at n = {n + 1}:", text, re.M) and f"offset m - n = {new - n}:" in text, text
    assert f"over all D = 8 features: {score} " in text, f"moving both positions changed the score {score}: {text}"
    w.shoot()


def cross_attention_explorer(page, name):
    box = page.locator(".widget-vbox:has(> .xattn-input)").first
    w = WidgetCheck(name, box, "xattn-readout", "xattn-chart")
    first = "1987" not in box.locator(".xattn-input input").input_value()
    text, iso = ("<en_US> November 24, 1987", "1987-11-24") if first else ("<fr_FR> mardi 3 juin 1997", "1997-06-03")
    type_into(box.locator(".xattn-input"), text)
    readout = w.changed(f"typing {text!r}")
    assert re.search(rf"^reference:\s+{iso}$", readout, re.M), readout
    assert re.search(r"^model:\s+\S+\s+(correct|WRONG)$", readout, re.M), readout
    m = re.search(r"^layer \d+, (head \d+|mean over \d+ heads): crossings \d+ of \d+ \(\d\.\d\d\): ", readout, re.M)
    assert m, readout
    head = m.group(1)
    old, layer = slider_step(page, box.locator(".xattn-layer"), int)
    readout = w.changed(f"layer {old} -> {layer}")
    assert re.search(rf"^layer {layer}, {head}: crossings", readout, re.M), readout
    picked = select_other(box.locator(".xattn-head select"))
    readout = w.changed(f"picking {picked!r}")
    shown = re.escape(picked) if picked.startswith("head ") else r"mean over \d+ heads"
    assert re.search(rf"^layer {layer}, {shown}: crossings \d+ of \d+ \(", readout, re.M), readout
    type_into(box.locator(".xattn-input"), "not a date")
    expect(w.readout).to_contain_text("cannot translate 'not a date': ", timeout=CHANGE_TIMEOUT_MS)
    expect(w.chart).to_be_hidden()
    type_into(box.locator(".xattn-input"), text)
    expect(w.chart).to_be_visible(timeout=CHANGE_TIMEOUT_MS)
    WidgetCheck(name, box, "xattn-readout", "xattn-chart").shoot()


INTERACTIONS = {
    "02_queries_keys_scores": scale_explorer,
    "04_soft_and_hard_attention": gumbel_explorer,
    "05_self_attention": query_picker,
    "06_multi_head_attention": head_picker,
    "07_masks_and_transformer_block": mask_explorer,
    "08_bug_hunt": suspect_explorer,
    "09_translation": translation_explorer,
    "11_image_recognition": patch_picker,
    "12_image_captioning": caption_explorer,
    "13_speech_recognition": speech_explorer,
    "14_summarization": summary_explorer,
    "15_text_generation": generation_explorer,
    "16_attention_at_scale": tiling_explorer,
    "17_positions_rope_alibi": rotary_explorer,
    "18_encoder_decoder_transformer": cross_attention_explorer,
}


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_widget_in_jupyterlab(lab, page, lesson):
    t0 = time.monotonic()
    open_and_run_all(lab, page, lesson)
    INTERACTIONS[lesson](page, lesson)
    wait_kernel_idle(page)
    print(f"  {lesson}: {time.monotonic() - t0:.1f} s in all")
