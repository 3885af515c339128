"""Heatmaps, PNG rendering, the widget scaffold, the temperature widget and the cross-attention widget, and
the JupyterLab launcher's settings and argv."""
import html
import json
import math
import re
import socket
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from attn_course import lab  # noqa: E402
from attn_course.plot import attention_heatmap, figure_png, new_figure, weights_bar  # noqa: E402
from attn_course.widgets import CrossAttentionExplorer, Panel, TemperatureExplorer  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------- attention_heatmap
ATTN_WEIGHTS = torch.tensor([[0.1, 0.2, 0.3, 0.4],
                             [0.25, 0.25, 0.25, 0.25],
                             [0.7, 0.1, 0.1, 0.1]])  # (L=3, S=4)
QUERY_LABELS = ["the", "cat", "sat"]
KEY_LABELS = ["le", "chat", "s'est", "assis"]


def tick_texts(labels):
    return [t.get_text() for t in labels]


def test_heatmap_returns_axes_with_labels():
    ax = attention_heatmap(ATTN_WEIGHTS, QUERY_LABELS, KEY_LABELS, title="cross-attention")
    assert isinstance(ax, Axes)
    assert tick_texts(ax.get_yticklabels()) == QUERY_LABELS
    assert tick_texts(ax.get_xticklabels()) == KEY_LABELS
    assert ax.get_title() == "cross-attention"
    assert "query" in ax.get_ylabel() and "key" in ax.get_xlabel()
    image = ax.images[0].get_array()
    assert image.shape == (3, 4)
    torch.testing.assert_close(torch.as_tensor(image.data), ATTN_WEIGHTS)


def test_heatmap_annotates_each_cell_with_its_value():
    ax = attention_heatmap(ATTN_WEIGHTS, QUERY_LABELS, KEY_LABELS)
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:.2f}" for v in ATTN_WEIGHTS.flatten().tolist())
    ax2 = attention_heatmap(ATTN_WEIGHTS, annotate=False, colorbar=False)
    assert len(ax2.texts) == 0


def test_heatmap_default_labels_are_positions_and_draws_on_given_axes():
    fig = new_figure()
    given = fig.add_subplot()
    ax = attention_heatmap(ATTN_WEIGHTS.numpy(), ax=given, colorbar=False)
    assert ax is given
    assert tick_texts(ax.get_xticklabels()) == ["0", "1", "2", "3"]
    assert tick_texts(ax.get_yticklabels()) == ["0", "1", "2"]


def test_heatmap_accepts_tensors_that_require_grad():
    w = ATTN_WEIGHTS.clone().requires_grad_()
    ax = attention_heatmap(w, colorbar=False)
    assert ax.images[0].get_array().shape == (3, 4)


@pytest.mark.parametrize("shape", [(2, 3, 4), (4,), (1, 1, 3, 4)])
def test_heatmap_rejects_non_2d(shape):
    with pytest.raises(ValueError) as info:
        attention_heatmap(torch.zeros(shape))
    assert str(shape) in str(info.value) and "2-D" in str(info.value)


@pytest.mark.parametrize("query_labels, key_labels, named", [
    (["a", "b"], KEY_LABELS, "query_labels needs 3"),
    (QUERY_LABELS, ["a", "b", "c", "d", "e"], "key_labels needs 4"),
])
def test_heatmap_rejects_wrong_label_counts(query_labels, key_labels, named):
    with pytest.raises(ValueError, match=named):
        attention_heatmap(ATTN_WEIGHTS, query_labels, key_labels)


def test_weights_bar_draws_one_bar_per_key():
    ax = weights_bar(torch.tensor([0.1, 0.6, 0.3]), ["a", "b", "c"])
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.1, 0.6, 0.3])
    assert tick_texts(ax.get_xticklabels()) == ["a", "b", "c"]
    with pytest.raises(ValueError):
        weights_bar(torch.zeros(2, 3))
    with pytest.raises(ValueError):
        weights_bar(torch.zeros(3), ["a"])


# ----------------------------------------------------------------- figure_png
def test_figure_png_returns_png_bytes():
    fig = new_figure((3, 2))
    attention_heatmap(ATTN_WEIGHTS, QUERY_LABELS, KEY_LABELS, ax=fig.add_subplot())
    png = figure_png(fig)
    assert isinstance(png, bytes) and png.startswith(PNG_MAGIC)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # IHDR
    assert (width, height) == (300, 200)
    assert (int.from_bytes(figure_png(fig, dpi=50)[16:20], "big")) == 150


def test_new_figure_is_not_registered_with_pyplot():
    before = plt.get_fignums()
    new_figure()
    assert plt.get_fignums() == before


# ----------------------------------------------------------------- TemperatureExplorer
SCORES = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.0])
LABELS = ["the", "cat", "sat", "on", "mat"]


def readout(explorer):
    text = explorer.text()
    weights = re.search(r"attn_weights:\s+(.*)", text).group(1).split()
    ent = float(re.search(r"entropy = ([0-9.]+) nats", text).group(1))
    return torch.tensor([float(w) for w in weights]), ent


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0, 2.3, 5.0])
def test_temperature_text_weights_follow_the_slider(temperature):
    explorer = TemperatureExplorer(SCORES, LABELS)
    explorer.slider.value = temperature
    weights, ent = readout(explorer)
    expected = torch.softmax(SCORES.double() / temperature, dim=-1)
    torch.testing.assert_close(weights.double(), expected, atol=5.1e-5, rtol=0)
    assert ent == pytest.approx(-(expected * expected.clamp_min(1e-300).log()).sum().item(), abs=6e-4)
    assert f"T = {temperature:.2f}" in explorer.text()
    assert f"<pre>{html.escape(explorer.text())}</pre>" == explorer.readout.value
    torch.testing.assert_close(explorer.weights().double(), expected, atol=1e-6, rtol=0)


def test_temperature_initial_value_and_uniform_readout():
    explorer = TemperatureExplorer(SCORES, temperature=2.0)
    assert explorer.slider.value == 2.0
    assert f"(uniform: {math.log(5):.3f})" in explorer.text()
    scores_line = re.search(r"attn_scores:\s+(.*)", explorer.text()).group(1).split()
    assert [float(s) for s in scores_line] == SCORES.tolist()


def test_temperature_image_changes_when_the_slider_moves():
    explorer = TemperatureExplorer(SCORES, LABELS)
    first = bytes(explorer.image.value)
    assert first.startswith(PNG_MAGIC)
    explorer.slider.value = 0.2
    second = bytes(explorer.image.value)
    assert second.startswith(PNG_MAGIC) and second != first
    explorer.slider.value = 1.0
    assert bytes(explorer.image.value) == first  # back at T = 1: the same picture again


def test_temperature_entropy_decreases_as_t_decreases():
    explorer = TemperatureExplorer(SCORES, LABELS)
    entropies = []
    for temperature in (5.0, 2.0, 1.0, 0.5, 0.2, 0.1):
        explorer.slider.value = temperature
        entropies.append(readout(explorer)[1])
    assert all(a > b for a, b in zip(entropies, entropies[1:])), entropies
    assert entropies[0] < math.log(5)
    assert entropies[-1] < 0.01


@pytest.mark.parametrize("scores, labels, named", [
    (torch.zeros(2, 3), None, "(2, 3)"),
    (torch.tensor(1.0), None, "()"),
    (SCORES, ["a", "b"], "needs 5"),
])
def test_temperature_explorer_rejects_bad_inputs(scores, labels, named):
    with pytest.raises(ValueError) as info:
        TemperatureExplorer(scores, labels)
    assert named in str(info.value)


# ----------------------------------------------------------------- Panel: the scaffold of every widget
class Sum(Panel):
    """Two sliders; the readout is their sum in angle brackets, the chart a bar of that height."""

    def __init__(self, **kwargs):
        self.a, self.b = ipywidgets.IntSlider(value=1), ipywidgets.IntSlider(value=2)
        self.redraws = 0
        super().__init__([self.a, self.b], "sum-readout", **kwargs)

    def text(self):
        self.redraws += 1
        return f"<{self.a.value + self.b.value}>"

    def figure(self):
        fig = new_figure((2, 2))
        fig.add_subplot().bar([0], [self.a.value + self.b.value])
        return fig


def test_panel_redraws_once_per_move_and_escapes_the_readout():
    panel = Sum(chart_class="sum-chart", chart_width="200px")
    assert panel.redraws == 1 and panel.readout.value == "<pre>&lt;3&gt;</pre>"
    assert list(panel.children) == [panel.a, panel.b, panel.readout, panel.image]
    assert "sum-readout" in panel.readout._dom_classes and "sum-chart" in panel.image._dom_classes
    assert panel.image.layout.width == "200px" and bytes(panel.image.value).startswith(PNG_MAGIC)
    first = bytes(panel.image.value)
    panel.a.value = 5
    assert panel.redraws == 2 and panel.readout.value == "<pre>&lt;7&gt;</pre>" and bytes(panel.image.value) != first
    with panel.hold():
        panel.a.value, panel.b.value = 1, 2
        assert panel.redraws == 2                                   # nothing drawn while held
    assert panel.redraws == 3 and bytes(panel.image.value) == first
    with pytest.raises(ZeroDivisionError), panel.hold():
        panel.a.value = 0
        1 / panel.a.value
    assert panel.redraws == 3                                       # a failed move draws nothing
    panel.b.value = 3
    assert panel.redraws == 4 and panel.readout.value == "<pre>&lt;3&gt;</pre>"


def test_panel_layout_options():
    above = Sum(chart_class="sum-chart", chart_first=True, rows=[ipywidgets.HBox()])
    assert isinstance(above.children[0], ipywidgets.HBox) and above.children[1:] == (above.image, above.readout)
    plain = Sum()
    assert plain.image is None and list(plain.children) == [plain.a, plain.b, plain.readout]
    with pytest.raises(ValueError, match="no chart"):
        plain.show_figure(plain.figure())


# ----------------------------------------------------------------- CrossAttentionExplorer
# A fake translator: four words in, the four in capitals and "<eos>" out (T = 5, S = 4), with known weights.
# Head h of layer l puts XATTN_PEAKS[h] on source position XATTN_STRONGEST[l][h][t] in row t and the rest
# evenly on the other three. Crossings worked by hand (t = 1..3 with strongest[t] < strongest[t - 1], of 3;
# the <eos> row 4 is not an output token: layer 0 head 2's and the mean's <eos> rows cross, uncounted):
XATTN_STRONGEST = [[[0, 1, 2, 3, 3], [3, 2, 1, 0, 0], [1, 0, 3, 2, 0]],     # layer 0: 0, 3, 2 crossings
                   [[3, 2, 1, 0, 3], [0, 0, 1, 2, 3], [0, 1, 1, 0, 0]]]     # layer 1: 3, 0, 1 crossings
XATTN_PEAKS = [0.9, 0.6, 0.6]
# The mean over heads: head 0's peak (0.9 + 2 * 0.4/3) / 3 = 0.389 wins unless heads 1 and 2 agree
# elsewhere ((0.1/3 + 2 * 0.6) / 3 = 0.411): rows 0 and 3 of layer 1 and row 4 of layer 0.
XATTN_MEAN_STRONGEST = [[0, 1, 2, 3, 0], [0, 2, 1, 0, 3]]                    # 0 and 2 crossings


def fake_translate(text):
    src = text.split()
    if len(src) != 4 or not all(word.isalpha() for word in src):
        raise ValueError(f"expected four words separated by spaces, e.g. 'a b c d'; got {len(src)} in {text!r}")
    weights = torch.empty(2, 3, 5, 4)                                            # (N, H, T, S)
    for layer in range(2):
        for head, peak in enumerate(XATTN_PEAKS):
            weights[layer, head] = (1 - peak) / 3
            weights[layer, head, range(5), XATTN_STRONGEST[layer][head]] = peak
    return src, [word.upper() for word in src] + ["<eos>"], weights


def fake_reference(text):
    return {"a b c d": "ABCD", "w x y z": "WXYQ"}.get(text)


def crossing_line(explorer):
    m = re.search(r"^layer (\d+), (head \d+|mean over 3 heads): crossings (\d+) of (\d+) \(([\d.]+)\): ",
                  explorer.text(), re.M)
    assert m, explorer.text()
    return int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)), float(m.group(5))


@pytest.mark.parametrize("layer, head, count, strongest", [
    (0, 0, 0, XATTN_STRONGEST[0][0]), (0, 1, 3, XATTN_STRONGEST[0][1]), (0, 2, 2, XATTN_STRONGEST[0][2]),
    (1, 0, 3, XATTN_STRONGEST[1][0]), (1, 1, 0, XATTN_STRONGEST[1][1]), (1, 2, 1, XATTN_STRONGEST[1][2]),
    (0, "mean", 0, XATTN_MEAN_STRONGEST[0]), (1, "mean", 2, XATTN_MEAN_STRONGEST[1]),
])
def test_cross_attention_readout_counts_the_crossings_of_the_chosen_head(layer, head, count, strongest):
    w = CrossAttentionExplorer(fake_translate, "a b c d", num_layers=2, num_heads=3, reference=fake_reference)
    w.pick(layer, head)
    name = "mean over 3 heads" if head == "mean" else f"head {head}"
    assert crossing_line(w) == (layer, name, count, 3, round(count / 3, 2))
    assert w.crossings() == {"strongest": strongest, "count": count, "pairs": 3, "fraction": count / 3}
    pairs = "  ".join(f"{o} -> {'abcd'[j]}" for o, j in zip(["A", "B", "C", "D", "<eos>"], strongest))
    assert f"strongest source token of each output token: {pairs}" in w.text()
    assert w.readout.value == f"<pre>{html.escape(w.text())}</pre>"              # "<eos>" stays text
    assert w.figure().axes[0].get_title() == f"cross-attention, layer {layer}, {name}"


def test_cross_attention_chart_follows_layer_and_head_and_the_mean_is_the_mean():
    w = CrossAttentionExplorer(fake_translate, "a b c d", num_layers=2, num_heads=3, layer=0)
    _, _, weights = fake_translate("a b c d")
    images = {}
    for layer in range(2):
        for head in (0, 1, 2, "mean"):
            w.pick(layer, head)
            images[layer, head] = bytes(w.image.value)
            assert images[layer, head].startswith(PNG_MAGIC)
            ax = w.figure().axes[0]
            assert tick_texts(ax.get_yticklabels()) == ["A", "B", "C", "D", "<eos>"]      # output tokens down
            assert tick_texts(ax.get_xticklabels()) == ["a", "b", "c", "d"]               # source tokens across
            drawn = torch.as_tensor(ax.images[0].get_array().data).double()               # (T, S)
            expected = weights[layer].double().mean(0) if head == "mean" else weights[layer, head].double()
            torch.testing.assert_close(drawn, expected, atol=1e-6, rtol=0)
            torch.testing.assert_close(w.weights().double(), expected, atol=1e-6, rtol=0)
    assert len(set(images.values())) == 8                                         # every layer and head: its own chart
    w.pick(0, 1)
    assert bytes(w.image.value) == images[0, 1]                                  # back again: the same chart
    assert w.head_dropdown.options[-1] == ("mean over heads", "mean") and len(w.head_dropdown.options) == 4
    assert (w.layer_slider.min, w.layer_slider.max) == (0, 1)


def test_cross_attention_says_correct_wrong_or_nothing_and_translates_once_per_text():
    calls = []

    def counting(text):
        calls.append(text)
        return fake_translate(text)

    w = CrossAttentionExplorer(counting, "a b c d", num_layers=2, num_heads=3, reference=fake_reference)
    lines = w.text().splitlines()
    assert lines[:3] == ["source:     a b c d   (4 tokens)", "model:      ABCD   correct", "reference:  ABCD"]
    w.set("w x y z")
    assert w.text().splitlines()[1:3] == ["model:      WXYZ   WRONG", "reference:  WXYQ"]
    w.pick(0, "mean")
    w.set("p q r s")                                                              # no reference known
    assert w.text().splitlines()[1:3] == ["model:      PQRS", "reference:  (none)"]
    assert calls == ["a b c d", "w x y z", "p q r s"]                             # not once per redraw
    words = CrossAttentionExplorer(fake_translate, "a b c d", 2, 3, sep=" ")
    assert words.text().splitlines()[1:3] == ["model:      A B C D", "reference:  (none given)"]

    def picky(text):
        raise ValueError(f"no reference for {text!r}")

    unknown = CrossAttentionExplorer(fake_translate, "a b c d", 2, 3, reference=picky)
    assert unknown.text().splitlines()[1:3] == ["model:      ABCD", "reference:  (none: no reference for 'a b c d')"]
    for cls, control in (("xattn-input", w.text_box), ("xattn-layer", w.layer_slider), ("xattn-head", w.head_dropdown),
                         ("xattn-readout", w.readout), ("xattn-chart", w.image)):
        assert cls in control._dom_classes
    assert w.text_box.continuous_update is False


def test_cross_attention_bad_input_says_why_and_empties_the_chart():
    w = CrossAttentionExplorer(fake_translate, "a b c d", num_layers=2, num_heads=3, reference=fake_reference)
    good = bytes(w.image.value)
    w.set("a b 3 d")
    assert w.text() == ("cannot translate 'a b 3 d': expected four words separated by spaces, e.g. 'a b c d'; "
                        "got 4 in 'a b 3 d'")
    assert w.readout.value == f"<pre>{html.escape(w.text())}</pre>"
    assert bytes(w.image.value) == b"" and w.image.layout.display == "none"
    assert w.figure() is None and w.weights() is None and w.crossings() is None and w.translation() is None
    w.pick(0, "mean")                                                             # moving the controls: no crash
    assert w.text().startswith("cannot translate 'a b 3 d': ") and bytes(w.image.value) == b""
    w.set("")
    assert "got 0 in ''" in w.text()
    w.pick(1, 0)
    w.set("a b c d")
    assert bytes(w.image.value) == good and w.image.layout.display is None        # the chart is back


def test_cross_attention_rejects_bad_arguments_and_wrong_weights():
    for kwargs, named in (({"num_layers": 0}, "num_layers must be an int >= 1; got 0"),
                          ({"num_heads": 2.0}, "num_heads must be an int >= 1; got 2.0"),
                          ({"layer": 2}, r"layer must be an int in 0\.\.1; got 2"),
                          ({"head": 3}, r"head must be an int in 0\.\.2 or 'mean'; got 3")):
        with pytest.raises(ValueError, match=named):
            CrossAttentionExplorer(fake_translate, "a b c d", **{"num_layers": 2, "num_heads": 3, **kwargs})
    with pytest.raises(ValueError, match=r"cross_weights \(num_layers, num_heads, T, S\) = \(2, 4, 5, 4\) .* "
                                         r"got \(2, 3, 5, 4\)"):
        CrossAttentionExplorer(fake_translate, "a b c d", num_layers=2, num_heads=4)
    per_layer = CrossAttentionExplorer(lambda text: (lambda s, o, w: (s, o, list(w)))(*fake_translate(text)),
                                       "a b c d", num_layers=2, num_heads=3, layer=1, head="mean")
    assert crossing_line(per_layer)[2:4] == (2, 3)                                 # a list of (H, T, S) per layer
    no_eos = CrossAttentionExplorer(lambda text: (lambda s, o, w: (s, o[:4], w[:, :, :4]))(*fake_translate(text)),
                                    "a b c d", num_layers=2, num_heads=3, layer=0, head=2, sep=" ")
    assert crossing_line(no_eos)[2:4] == (2, 3) and no_eos.text().splitlines()[1] == "model:      A B C D"
    eos_row_crosses = CrossAttentionExplorer(fake_translate, "a b c d", num_layers=2, num_heads=3, layer=0, head=2,
                                             eos="</s>")                 # "<eos>" now an output token: its row counts
    assert crossing_line(eos_row_crosses)[2:4] == (3, 4) and eos_row_crosses.text().splitlines()[1] == (
        "model:      ABCD<eos>")


# ----------------------------------------------------------------- lab: settings and command
def test_install_settings_writes_overrides(tmp_path):
    path = lab.install_settings(prefix=tmp_path)
    assert Path(path) == tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    settings = json.loads(Path(path).read_text())
    assert settings["@jupyterlab/apputils-extension:kernels-settings"]["commsOverSubshells"] == "disabled"
    assert settings["@jupyterlab/apputils-extension:notification"]["checkForUpdates"] is False


def test_install_settings_merges_with_existing_content(tmp_path):
    path = lab.settings_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
        "@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "perComm",
                                                            "someOtherSetting": 3},
    }))
    lab.install_settings(prefix=tmp_path)
    settings = json.loads(path.read_text())
    assert settings["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    kernels = settings["@jupyterlab/apputils-extension:kernels-settings"]
    assert kernels == {"commsOverSubshells": "disabled", "someOtherSetting": 3}
    lab.install_settings(prefix=tmp_path)  # idempotent
    assert json.loads(path.read_text()) == settings


def test_install_settings_only_entry_point(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "lab"))  # JupyterLab's app dir
    assert lab.main(["--install-settings-only"]) == 0
    path = tmp_path / "lab" / "settings" / "overrides.json"
    assert lab.settings_file() == path
    assert str(path) in capsys.readouterr().out
    assert json.loads(path.read_text())["@jupyterlab/apputils-extension:kernels-settings"] == {
        "commsOverSubshells": "disabled"}


def test_lab_command_serves_localhost_with_token(tmp_path):
    cmd = lab.lab_command(tmp_path, 8899, "abc123", open_browser=False)
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    assert "--ip=127.0.0.1" in cmd
    assert "--port=8899" in cmd
    assert "--IdentityProvider.token=abc123" in cmd
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in cmd
    assert "--no-browser" in cmd
    assert "--no-browser" not in lab.lab_command(tmp_path, 8899, "abc123", open_browser=True)
    assert not any(arg.startswith("--ip=0.0.0.0") for arg in cmd)


def test_free_port_skips_a_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        free = lab.free_port(start=port, tries=20)
    assert free != port and port < free < port + 20
