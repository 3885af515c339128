"""RotaryExplorer (lesson 17): its scores against attn_course.rotary.apply_rotary and against the closed form
|q| |k| cos(angle between them); moving m and n together keeps both scores; controls, ranges and errors."""
import doctest
import math
import re

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from attn_course.rotary import apply_rotary  # noqa: E402
from attn_course.widgets import RotaryExplorer  # noqa: E402
from attn_course.widgets import rotary as rotary_widget  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def score_by_reference(w, m, n, base):
    q = apply_rotary(w.query[None], torch.tensor([m]), base)[0]                     # (D,)
    k = apply_rotary(w.key[None], torch.tensor([n]), base)[0]
    return (q @ k).item()


@pytest.mark.parametrize("m, n, pair, base", [(5, 2, 0, 10000.0), (0, 0, 3, 100.0), (17, 30, 1, 500000.0),
                                              (32, 0, 2, 10000.0)])
def test_readout_scores_equal_apply_rotary_and_the_closed_form(m, n, pair, base):
    w = RotaryExplorer(m=m, n=n, pair=pair, base=base)
    s = w.state()
    assert s["score"] == pytest.approx(score_by_reference(w, m, n, base), abs=1e-12)
    D = w.query.shape[0]
    theta = base ** (-2 * pair / D)                                                 # by hand, not from the package
    q_pair, k_pair = w.query[[pair, pair + D // 2]], w.key[[pair, pair + D // 2]]
    phase = math.atan2(q_pair[1], q_pair[0]) + m * theta - math.atan2(k_pair[1], k_pair[0]) - n * theta
    assert s["pair_score"] == pytest.approx(q_pair.norm().item() * k_pair.norm().item() * math.cos(phase), abs=1e-9)
    assert s["theta"] == pytest.approx(theta) and s["offset"] == m - n
    assert (s["angle_query"], s["angle_key"]) == pytest.approx((m * theta, n * theta))
    text = w.text()
    assert f"{s['score']:.4f} (the same for every m, n with m - n = {m - n})" in text
    assert f"score of pair {pair}: {s['pair_score']:.4f}" in text
    assert f"query at m = {m}: turned by m * theta_{pair} = {m * theta:.3f} rad" in text
    assert f"offset m - n = {m - n}:" in text


@pytest.mark.parametrize("pair, base", [(0, 10000.0), (1, 100.0), (3, 500000.0)])
def test_moving_both_positions_together_keeps_the_scores_and_turns_the_arrows(pair, base):
    w = RotaryExplorer(m=4, n=1, pair=pair, base=base)
    before = w.state()
    for t in (1, 5, 20):
        w.set(m=4 + t, n=1 + t)
        after = w.state()
        assert after["score"] == pytest.approx(before["score"], abs=1e-6)
        assert after["pair_score"] == pytest.approx(before["pair_score"], abs=1e-6)
        assert after["angle_query"] - before["angle_query"] == pytest.approx(t * before["theta"])
        assert after["offset"] == 3
    w.set(m=4, n=2)                                                                  # another offset: another score
    assert abs(w.state()["score"] - before["score"]) > 1e-3


def test_the_button_and_shift_move_both_and_stop_at_the_last_position():
    w = RotaryExplorer(m=29, n=10, max_position=32)
    score = w.state()["score"]
    w.shift_button.click()
    assert (w.m_slider.value, w.n_slider.value) == (30, 11) and w.state()["score"] == pytest.approx(score, abs=1e-6)
    readout = w.readout.value
    w.shift(2)
    assert (w.m_slider.value, w.n_slider.value) == (32, 13) and w.readout.value != readout
    assert w.shift_button.disabled
    with pytest.raises(ValueError, match=r"m must be an int position in 0\.\.32; got 33"):
        w.shift(1)
    w.shift(-5)
    assert not w.shift_button.disabled and (w.m_slider.value, w.n_slider.value) == (27, 8)


def test_score_curve_holds_the_score_of_every_offset():
    w = RotaryExplorer(m=9, n=3, pair=1, max_position=16)
    offsets, scores, pair_scores = w.score_curve()
    assert offsets.tolist() == list(range(-16, 17))
    s = w.state()
    assert scores[offsets == 6].item() == pytest.approx(s["score"], abs=1e-9)
    assert pair_scores[offsets == 6].item() == pytest.approx(s["pair_score"], abs=1e-9)
    for m, n in ((0, 10), (16, 5)):
        assert scores[offsets == m - n].item() == pytest.approx(score_by_reference(w, m, n, 10000.0), abs=1e-9)


def test_sliders_ranges_classes_and_bases():
    w = RotaryExplorer(head_dim=12, max_position=40, base=1000.0)
    assert (w.m_slider.min, w.m_slider.max, w.n_slider.min, w.n_slider.max) == (0, 40, 0, 40)
    assert (w.pair_slider.min, w.pair_slider.max) == (0, 5)                         # D = 12: pairs 0..5
    assert w.bases == [100.0, 1000.0, 10000.0, 500000.0] and w.base_slider.value == 1000.0
    for control, name in ((w.m_slider, "rotary-m-slider"), (w.n_slider, "rotary-n-slider"),
                          (w.pair_slider, "rotary-pair-slider"), (w.base_slider, "rotary-base-slider"),
                          (w.shift_button, "rotary-shift-button"), (w.readout, "rotary-readout"),
                          (w.image, "rotary-chart")):
        assert name in control._dom_classes
    assert bytes(w.image.value).startswith(PNG_MAGIC)


def test_set_redraws_once_and_refuses_what_is_not_offered():
    w = RotaryExplorer()
    drawn = []
    w.figure, original = (lambda: drawn.append(1) or original()), w.figure
    w.set(m=7, n=7, pair=2, base=100.0)
    assert len(drawn) == 1 and "pair i = 2 of 4" in w.text() and "offset m - n = 0" in w.text()
    for kwargs, match in (({"m": -1}, r"m must be an int position in 0\.\.32; got -1"),
                          ({"n": 33}, r"n must be an int position in 0\.\.32; got 33"),
                          ({"pair": 4}, r"pair must be an int in 0\.\.3 \(D = 8\); got 4"),
                          ({"base": 50.0}, r"base must be one of the bases offered")):
        with pytest.raises(ValueError, match=match):
            w.set(**kwargs)
    assert (w.m_slider.value, w.pair_slider.value, w.base_slider.value) == (7, 2, 100.0)   # nothing moved


def test_moving_a_slider_redraws_the_readout_and_the_chart():
    w = RotaryExplorer()
    readout, image = w.readout.value, w.image.value
    w.n_slider.value = 6
    assert w.readout.value != readout and w.image.value != image
    assert re.search(r"offset m - n = -1:", w.text())


@pytest.mark.parametrize("kwargs, match", [
    ({"query": torch.ones(3), "key": torch.ones(3)},
     r"query must be a float tensor \(D,\) with D even; got torch.float32 \(3,\)"),
    ({"query": torch.ones(4), "key": torch.ones(6)}, r"one size D; got \(4,\) and \(6,\)"),
    ({"query": torch.ones(2, 4), "key": torch.ones(4)}, r"query must be a float tensor \(D,\)"),
    ({"query": torch.ones(4), "key": torch.arange(4)},
     r"key must be a float tensor \(D,\) with D even; got torch.int64"),
    ({"m": 40}, r"m must be an int position in 0\.\.32; got 40"),
    ({"pair": -1}, r"pair must be an int in 0\.\.3"),
    ({"base": 0.0}, r"base must be a positive number; got 0\.0"),
    ({"max_position": 0}, r"max_position must be an int >= 1; got 0"),
])
def test_bad_arguments_say_what_was_expected_and_what_came(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryExplorer(**kwargs)


def test_docstring_examples_run():
    assert doctest.testmod(rotary_widget).failed == 0
