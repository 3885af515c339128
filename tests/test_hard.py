"""Soft and hard attention (attn_course.hard): against PyTorch's SDPA and F.gumbel_softmax, float64
hand computations and sampling statistics; gradients; the lesson-04 checks, widget and bug hunt.

Shape legend: B batch, S positions, E d_model, Dv value dim. ``key_padding_mask`` True = padding.
"""
import html
import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from attn_course import checks  # noqa: E402
from attn_course.broken import hard_attention_v2  # noqa: E402
from attn_course.checks import CheckFailure  # noqa: E402
from attn_course.hard import SoftAttentionPooling, gumbel_softmax_st, hard_attention, lookup_batch, reinforce_loss  # noqa: E402
from attn_course.widgets import GumbelExplorer  # noqa: E402

from helpers import DEVICES, DTYPES, F64, THOROUGH, draw, tol  # noqa: E402

SHAPES = [pytest.param((4,), 6, 3, id="B4-S6"), pytest.param((2, 3), 9, 5, id="B2x3-S9"),
          pytest.param((1,), 1, 2, id="S1")]
PROBS_SCORES = torch.tensor([1.0, -0.5, 0.0, 2.0, 0.5], dtype=F64)           # softmax 0.05 .. 0.55


def padding(g, batch, S, device="cpu"):
    """key_padding_mask (..., S), True = padding, about a third padded, position 0 never padded."""
    mask = torch.rand(*batch, S, generator=g) < 0.33
    mask[..., 0] = False
    return mask.to(device)


# ----------------------------------------------------------------- soft attention pooling
# (attention_pool itself: tests/test_pooling.py)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "key_padding_mask"])
def test_soft_attention_pooling_equals_sdpa_and_a_float64_loop(device, masked):
    torch.manual_seed(0)
    B, S, E = 4, 6, 8
    pool = SoftAttentionPooling(E).to(device)
    g = torch.Generator().manual_seed(2)
    x = draw(g, B, S, E)
    key_padding_mask = padding(g, (B,), S) if masked else None
    context, attn_weights = pool(x.to(device), None if key_padding_mask is None else key_padding_mask.to(device))
    w = pool.score.weight.detach().cpu()                                       # (1, E), the score vector
    expected = F.scaled_dot_product_attention(
        w.expand(B, 1, E), x, x, scale=1.0,
        attn_mask=None if key_padding_mask is None else ~key_padding_mask[:, None, :]).squeeze(1)
    torch.testing.assert_close(context.detach().cpu(), expected, **tol(torch.float32, device))
    for b in range(B):                                                         # the seed's loop, in float64
        scores = [float(x[b, j].double() @ w[0].double()) for j in range(S)
                  if key_padding_mask is None or not key_padding_mask[b, j]]
        keep = [j for j in range(S) if key_padding_mask is None or not key_padding_mask[b, j]]
        weights = torch.tensor(scores, dtype=F64).softmax(0)
        torch.testing.assert_close(attn_weights[b, keep].detach().cpu().double(), weights, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(context[b].detach().cpu().double(), weights @ x[b, keep].double(),
                                   atol=1e-5, rtol=1e-5)


def test_soft_attention_pooling_trains_its_score_vector():
    torch.manual_seed(0)
    pool = SoftAttentionPooling(4)
    assert pool.score.bias is None
    context, attn_weights = pool(torch.randn(3, 5, 4))
    torch.testing.assert_close(attn_weights.sum(-1), torch.ones(3))
    context.pow(2).sum().backward()
    assert pool.score.weight.grad is not None and pool.score.weight.grad.abs().sum() > 0


def test_soft_attention_pooling_rejects_bad_shapes():
    with pytest.raises(ValueError, match="d_model must be a positive int"):
        SoftAttentionPooling(0)
    with pytest.raises(ValueError, match=r"x must be \(B, S, E=4\); got \(3, 5\)"):
        SoftAttentionPooling(4)(torch.zeros(3, 5))


# ----------------------------------------------------------------- hard attention
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, S, Dv", SHAPES)
def test_hard_attention_argmax_picks_the_highest_score(device, dtype, batch, S, Dv):
    g = torch.Generator().manual_seed(3)
    attn_scores, value = draw(g, *batch, S, dtype=dtype), draw(g, *batch, S, Dv, dtype=dtype)
    context, index, attn_weights = hard_attention(attn_scores.to(device), value.to(device))
    expected_index = torch.tensor([max(range(S), key=lambda j: row[j]) for row in attn_scores.reshape(-1, S).tolist()])
    assert index.dtype == torch.int64 and index.shape == batch
    torch.testing.assert_close(index.cpu().reshape(-1), expected_index)
    torch.testing.assert_close(attn_weights.cpu(), F.one_hot(index.cpu(), S).to(dtype))
    flat = value.reshape(-1, S, Dv)
    torch.testing.assert_close(context.cpu().reshape(-1, Dv), flat[torch.arange(len(flat)), expected_index])


def test_hard_attention_never_picks_minus_inf_and_breaks_ties_to_the_first():
    attn_scores = torch.tensor([[float("-inf"), 1.0, 1.0, float("-inf")], [0.0, float("-inf"), 0.5, 0.5]])
    assert hard_attention(attn_scores, torch.zeros(2, 4, 1))[1].tolist() == [1, 2]
    picks = hard_attention(attn_scores.expand(500, 2, 4), torch.zeros(500, 2, 4, 1), mode="sample",
                           generator=torch.Generator().manual_seed(0))[1]
    assert set(picks[:, 0].tolist()) == {1, 2} and set(picks[:, 1].tolist()) == {0, 2, 3}


@pytest.mark.parametrize("mode", ["argmax", "sample"])
def test_hard_attention_passes_no_gradient_to_the_scores(mode):
    """The lesson's claim: argmax (and sampling) cut the graph; only the picked value gets a gradient."""
    torch.manual_seed(0)
    pool = SoftAttentionPooling(4)
    x = torch.randn(3, 5, 4, requires_grad=True)
    attn_scores = pool.attn_scores(x)                                          # (B, S), requires grad
    context, index, attn_weights = hard_attention(attn_scores, x, mode=mode,
                                                  generator=torch.Generator().manual_seed(0))
    assert attn_weights.grad_fn is None and not attn_weights.requires_grad     # one-hot of an int: a constant
    grad_scores, grad_x = torch.autograd.grad(context.sum(), (attn_scores, x), allow_unused=True)
    assert grad_scores is None                                                 # zero gradient to the scores
    torch.testing.assert_close(grad_x, F.one_hot(index, 5).float().unsqueeze(-1).expand(3, 5, 4))
    hard_attention(pool.attn_scores(x), x, mode=mode)[0].sum().backward()
    assert pool.score.weight.grad is None                                      # the score vector never learns


def test_argmax_has_zero_gradient_while_straight_through_gumbel_does_not():
    """Done-when of lesson 04: argmax hard attention gives the scores no gradient, straight-through does."""
    g = torch.Generator().manual_seed(4)
    attn_scores = draw(g, 4, 6).requires_grad_(True)
    value = draw(g, 4, 6, 3)
    target = draw(g, 4, 3)
    context = hard_attention(attn_scores, value)[0]
    loss = (context - target).pow(2).sum()
    assert not loss.requires_grad                                              # nothing to differentiate at all
    attn_weights = gumbel_softmax_st(attn_scores, tau=0.5, generator=torch.Generator().manual_seed(0))
    assert ((attn_weights == 0) | ((attn_weights - 1).abs() < 1e-6)).all()    # forward: one-hot
    loss = ((attn_weights.unsqueeze(-2) @ value).squeeze(-2) - target).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, attn_scores)
    assert grad.abs().sum() > 1e-3 and (grad.abs().sum(-1) > 0).all()        # every row gets a gradient


def test_hard_attention_sampling_follows_softmax_of_the_scores():
    n = 20000
    index = hard_attention(PROBS_SCORES.expand(n, -1), torch.zeros(n, 5, 1, dtype=F64), mode="sample",
                           generator=torch.Generator().manual_seed(5))[1]
    freq = torch.bincount(index, minlength=5).double() / n
    torch.testing.assert_close(freq, torch.softmax(PROBS_SCORES, -1), atol=0.012, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_hard_attention_sampling_is_reproducible_with_a_seeded_generator(device):
    g = torch.Generator().manual_seed(6)
    attn_scores, value = draw(g, 2, 50, 7).to(device), draw(g, 2, 50, 7, 3).to(device)
    picks = [hard_attention(attn_scores, value, "sample", torch.Generator().manual_seed(s))[1] for s in (0, 0, 1)]
    assert picks[0].shape == (2, 50) and picks[0].device.type == device
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])
    cpu = hard_attention(attn_scores.cpu(), value.cpu(), "sample", torch.Generator().manual_seed(0))[1]
    assert torch.equal(picks[0].cpu(), cpu)                                    # the same picks on every device


def test_hard_attention_rejects_bad_mode_and_shapes():
    with pytest.raises(ValueError, match=r"mode must be one of \('argmax', 'sample'\); got 'soft'"):
        hard_attention(torch.zeros(2, 3), torch.zeros(2, 3, 1), mode="soft")
    with pytest.raises(ValueError, match="must share S"):
        hard_attention(torch.zeros(2, 3), torch.zeros(2, 4, 1))


# ----------------------------------------------------------------- Gumbel-softmax
@pytest.mark.parametrize("hard_", [True, False], ids=["hard", "soft"])
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (4, 6), (2, 3, 5)])
def test_gumbel_softmax_st_equals_torch_under_the_same_global_seed(hard_, tau, dtype, shape):
    logits = draw(torch.Generator().manual_seed(7), *shape, dtype=dtype)
    x_ours, x_torch = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    torch.manual_seed(11)
    ours = gumbel_softmax_st(x_ours, tau=tau, hard=hard_)
    torch.manual_seed(11)
    theirs = F.gumbel_softmax(x_torch, tau=tau, hard=hard_)
    torch.testing.assert_close(ours, theirs, **tol(dtype))
    c = draw(torch.Generator().manual_seed(8), *shape, dtype=dtype)
    torch.testing.assert_close(torch.autograd.grad((ours * c).sum(), x_ours)[0],
                               torch.autograd.grad((theirs * c).sum(), x_torch)[0], **tol(dtype))


def test_gumbel_picks_follow_softmax_like_torch():
    """argmax(logits + g) ~ softmax(logits): ours with a generator, torch's with the global seed."""
    n, probs = 20000, torch.softmax(PROBS_SCORES, -1)
    logits = PROBS_SCORES.float().expand(n, -1)
    ours = gumbel_softmax_st(logits, tau=0.5, generator=torch.Generator().manual_seed(9))
    torch.manual_seed(9)
    theirs = F.gumbel_softmax(logits, tau=0.5, hard=True)
    for y in (ours, theirs):
        torch.testing.assert_close(y.double().mean(0), probs, atol=0.012, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_gumbel_hard_is_one_hot_with_the_soft_samples_gradient(device, tau):
    g = torch.Generator().manual_seed(10)
    logits, c = draw(g, 8, 6).to(device), draw(g, 8, 6).to(device)
    x_hard, x_soft = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    y = gumbel_softmax_st(x_hard, tau, hard=True, generator=torch.Generator().manual_seed(0))
    y_soft = gumbel_softmax_st(x_soft, tau, hard=False, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y.detach(), F.one_hot(y_soft.argmax(-1), 6).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(y_soft.sum(-1), torch.ones(8, device=device))
    grad_hard = torch.autograd.grad((y * c).sum(), x_hard)[0]
    grad_soft = torch.autograd.grad((y_soft * c).sum(), x_soft)[0]
    torch.testing.assert_close(grad_hard, grad_soft)                           # straight-through
    s = y_soft.detach()                                                        # d softmax(z / tau) / d logits
    expected = s * (c - (s * c).sum(-1, keepdim=True)) / tau
    torch.testing.assert_close(grad_hard, expected, atol=1e-5, rtol=1e-4)
    cpu = gumbel_softmax_st(logits.cpu(), tau, hard=False, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y_soft.detach().cpu(), cpu, **tol(torch.float32, device))


def test_gumbel_temperature_sharpens_the_soft_sample_but_not_the_picks():
    logits = PROBS_SCORES.float().expand(2000, -1)
    samples = {tau: gumbel_softmax_st(logits, tau, hard=False, generator=torch.Generator().manual_seed(0))
               for tau in (0.05, 1.0, 20.0)}
    entropies = {tau: -(y * y.clamp_min(1e-30).log()).sum(-1).mean().item() for tau, y in samples.items()}
    assert entropies[0.05] < 0.1 < entropies[1.0] < entropies[20.0]
    assert entropies[20.0] > 0.97 * math.log(5)                                # nearly uniform
    assert torch.equal(samples[0.05].argmax(-1), samples[20.0].argmax(-1))     # the same picks at every tau


def test_gumbel_rejects_non_positive_tau():
    with pytest.raises(ValueError, match="tau must be > 0; got 0"):
        gumbel_softmax_st(torch.zeros(3), tau=0)


# ----------------------------------------------------------------- REINFORCE
def test_reinforce_gradient_matches_the_hand_formula():
    g = torch.Generator().manual_seed(12)
    attn_scores = draw(g, 6, 4, dtype=F64).requires_grad_(True)
    index = torch.randint(0, 4, (6,), generator=g)
    reward = draw(g, 6, dtype=F64).requires_grad_(True)
    loss = reinforce_loss(attn_scores, index, reward, baseline=0.3)
    loss.backward()
    p = torch.softmax(attn_scores.detach(), -1)
    expected = -(reward.detach() - 0.3)[:, None] * (F.one_hot(index, 4) - p) / 6
    torch.testing.assert_close(attn_scores.grad, expected)
    assert reward.grad is None                                                 # the reward is a constant


@pytest.mark.parametrize("baseline", [None, 0.0, 1.5], ids=["batch-mean", "zero", "constant"])
def test_reinforce_is_an_unbiased_estimate_of_the_expected_reward_gradient(baseline):
    rewards = torch.tensor([1.0, -1.0, 0.5, 3.0, 0.0], dtype=F64)              # reward of each position
    n = 40000
    attn_scores = PROBS_SCORES.expand(n, -1).clone().requires_grad_(True)
    index = hard_attention(attn_scores, torch.zeros(n, 5, 1, dtype=F64), "sample",
                           torch.Generator().manual_seed(13))[1]
    reinforce_loss(attn_scores, index, rewards[index], baseline).backward()
    estimate = -attn_scores.grad.sum(0)                                        # mean over draws of the estimator
    p = torch.softmax(PROBS_SCORES, -1)
    exact = p * (rewards - p @ rewards)                                        # d E[reward] / d scores
    torch.testing.assert_close(estimate, exact, atol=0.03, rtol=0)


def test_reinforce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"batch shape \(2,\)"):
        reinforce_loss(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), torch.zeros(2))


# ----------------------------------------------------------------- the lookup task
def test_lookup_batch_puts_the_answer_at_the_query_position():
    keys, values, query, position, target = lookup_batch(50, 12, 24, 10, torch.Generator().manual_seed(0))
    assert keys.shape == values.shape == (50, 12) and query.shape == position.shape == target.shape == (50,)
    assert all(len(set(row)) == 12 for row in keys.tolist())                   # distinct keys per row
    assert keys.max() < 24 and values.max() < 10 and values.min() >= 0
    for b in range(50):
        assert keys[b].tolist().index(query[b].item()) == position[b]
        assert values[b, position[b]] == target[b]
    again = lookup_batch(50, 12, 24, 10, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(again, (keys, values, query, position, target)))
    assert len(set(position.tolist())) > 6                                     # positions vary


def test_lookup_batch_rejects_bad_sizes():
    with pytest.raises(ValueError, match="seq_len=30, num_keys=24"):
        lookup_batch(2, seq_len=30)


# ----------------------------------------------------------------- checks: references pass, mistakes fail

def fails(check, fn, thorough):
    with pytest.raises(CheckFailure) as info:
        check(fn, thorough=thorough)
    return info.value


def argmax_by_gather(attn_scores, value):
    index = attn_scores.argmax(-1)                                             # (...,)
    context = value.gather(-2, index[..., None, None].expand(*index.shape, 1, value.shape[-1])).squeeze(-2)
    return context, index, F.one_hot(index, attn_scores.shape[-1]).to(attn_scores.dtype)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn", [lambda s, v: hard_attention(s, v), argmax_by_gather, hard_attention_v2],
                         ids=["reference", "gather", "hard_attention_v2"])
def test_check_hard_attention_argmax_passes_correct_code(fn, thorough):
    checks.check_hard_attention_argmax(fn, thorough=thorough)                  # v2 is right in argmax mode


def argmax_returns_soft_weights(s, v):
    context, index, _ = hard_attention(s, v)
    return context, index, torch.softmax(s, -1)


def argmax_picks_lowest(s, v):
    return hard_attention(-s, v)[0:2] + (F.one_hot((-s).argmax(-1), s.shape[-1]).to(s.dtype),)


def argmax_keepdim(s, v):
    context, index, w = hard_attention(s, v)
    return context, index.unsqueeze(-1), w


def argmax_detached(s, v):
    context, index, w = hard_attention(s, v)
    return context.detach(), index, w


@pytest.mark.parametrize("fn, kind, fragment, thorough", [
    (argmax_returns_soft_weights, "values", "soft weights softmax", False),
    (argmax_picks_lowest, "values", "smallest score", False),
    (argmax_keepdim, "shape", "index should have shape", False),
    (lambda s, v: hard_attention(s, v)[:2], "type", "tuple (context, index, attn_weights)", False),
    (lambda s, v: hard_attention(s.float(), v.float()), "dtype", "float64", True),
    (argmax_detached, "gradient", "differentiable in value", True),
], ids=["soft-weights", "argmin", "keepdim", "two-outputs", "float32-only", "detached"])
def test_check_hard_attention_argmax_catches_mistakes(fn, kind, fragment, thorough):
    err = fails(checks.check_hard_attention_argmax, fn, thorough)
    assert err.kind == kind and fragment in str(err), str(err)


@pytest.mark.parametrize("thorough", THOROUGH)
def test_check_hard_attention_passes_the_reference(thorough):
    checks.check_hard_attention(hard_attention, thorough=thorough)


def sample_is_argmax(s, v, mode="argmax", generator=None):
    return hard_attention(s, v)


def sample_ignores_generator(s, v, mode="argmax", generator=None):
    return hard_attention(s, v, mode, None)


@pytest.mark.parametrize("thorough", THOROUGH)
@pytest.mark.parametrize("fn, fragment", [
    (hard_attention_v2, "spread evenly"),
    (sample_is_argmax, "always pick the highest score"),
    (sample_ignores_generator, "draw with the generator you are given"),
], ids=["hard_attention_v2", "sample-is-argmax", "ignores-generator"])
def test_check_hard_attention_catches_mistakes(fn, fragment, thorough):
    err = fails(checks.check_hard_attention, fn, thorough)
    assert err.kind == "values" and fragment in str(err), str(err)


@pytest.mark.parametrize("thorough", THOROUGH)
def test_check_gumbel_softmax_st_passes_the_reference_and_uniform_noise_form(thorough):
    checks.check_gumbel_softmax_st(gumbel_softmax_st, thorough=thorough)

    def via_uniform(logits, tau=1.0, hard=True, generator=None):               # g = -log(-log(U))
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp(1e-20, 1 - 1e-7)
        y_soft = torch.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)
        y_hard = F.one_hot(y_soft.argmax(-1), logits.shape[-1]).to(logits.dtype)
        return (y_hard - y_soft).detach() + y_soft if hard else y_soft
    checks.check_gumbel_softmax_st(via_uniform, thorough=thorough)


def gumbel_variant(kind):
    """gumbel_softmax_st with one realistic mistake."""
    def fn(logits, tau=1.0, hard=True, generator=None):
        noise = -torch.empty_like(logits).exponential_(generator=None if kind == "global-rng" else generator).log()
        if kind == "uniform-noise":
            noise = torch.rand(logits.shape, generator=generator, dtype=logits.dtype)
        if kind == "no-noise":
            noise = torch.zeros_like(logits)
        z = {"tau-multiplies": (logits + noise) * tau, "tau-on-logits-only": logits / tau + noise}.get(
            kind, (logits + noise) / tau)
        y_soft = torch.softmax(z, dim=-1)
        if not hard:
            return y_soft
        y_hard = F.one_hot(y_soft.argmax(-1), logits.shape[-1]).to(logits.dtype)
        return {"no-straight-through": y_hard, "forgot-detach": y_hard - y_soft + y_soft,
                "returns-soft": y_soft, "detach-wrong-term": y_hard.detach() - y_soft + y_soft.detach()}.get(
            kind, y_hard - y_soft.detach() + y_soft)
    return fn


@pytest.mark.parametrize("kind, check_kind, fragment", [
    ("no-straight-through", "gradient", "passes no gradient"),
    ("forgot-detach", "gradient", "passes no gradient"),
    ("detach-wrong-term", "gradient", "Which term carries .detach()"),
    ("returns-soft", "values", "must return one-hot rows"),
    ("global-rng", "values", "draw the noise with the generator"),
    ("tau-multiplies", "values", "divide the noisy logits"),
    ("tau-on-logits-only", "values", "divide the noisy logits"),
    ("no-noise", "values", "hardly vary"),
    ("uniform-noise", "values", "Gumbel noise"),
])
def test_check_gumbel_softmax_st_catches_mistakes(kind, check_kind, fragment):
    err = fails(checks.check_gumbel_softmax_st, gumbel_variant(kind), False)
    assert err.kind == check_kind and fragment in str(err), str(err)


def test_check_gumbel_softmax_st_catches_an_overflowing_softmax_only_when_thorough():
    def manual_softmax(logits, tau=1.0, hard=True, generator=None):
        exp = torch.exp((logits - torch.empty_like(logits).exponential_(generator=generator).log()) / tau)
        y_soft = exp / exp.sum(-1, keepdim=True)                               # no max subtracted
        y_hard = F.one_hot(y_soft.argmax(-1), logits.shape[-1]).to(logits.dtype)
        return y_hard - y_soft.detach() + y_soft if hard else y_soft
    checks.check_gumbel_softmax_st(manual_softmax)
    err = fails(checks.check_gumbel_softmax_st, manual_softmax, True)
    assert err.kind in ("finite", "normalisation") and "large logits" in str(err), str(err)


# ----------------------------------------------------------------- the widget
def test_gumbel_explorer_controls_readout_and_chart():
    logits = PROBS_SCORES.float()
    explorer = GumbelExplorer(logits, list("abcde"), tau=1.0, seed=0)
    for w, cls in ((explorer.slider, "gumbel-tau-slider"), (explorer.seed_slider, "gumbel-seed-slider"),
                   (explorer.resample, "gumbel-resample"), (explorer.readout, "gumbel-readout"),
                   (explorer.image, "gumbel-chart")):
        assert cls in w._dom_classes
    png, text = explorer.image.value, explorer.text()
    assert bytes(png).startswith(b"\x89PNG") and text.startswith("tau = 1.00   sample #0: picked position ")
    stats = explorer.stats()
    assert stats["index"] == int(torch.tensor(stats["y_soft"]).argmax())
    torch.testing.assert_close(torch.tensor(stats["probs"]), torch.softmax(logits, -1))
    assert abs(sum(stats["frequencies"]) - 1) < 1e-6
    explorer.slider.value = 0.1                                                # sharper soft sample, same picks
    assert explorer.image.value != png and explorer.readout.value == f"<pre>{html.escape(explorer.text())}</pre>"
    assert explorer.stats()["mean_entropy"] < stats["mean_entropy"]
    assert explorer.stats()["frequencies"] == stats["frequencies"]
    explorer.resample.click()
    assert explorer.seed_slider.value == 1 and explorer.text() != text
    assert torch.equal(explorer.samples(), explorer.samples())                 # seeded: the same draws again


def test_gumbel_explorer_frequencies_approach_softmax():
    stats = GumbelExplorer(PROBS_SCORES.float(), num_draws=5000).stats()
    torch.testing.assert_close(torch.tensor(stats["frequencies"]), torch.tensor(stats["probs"]), atol=0.03, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"logits": torch.zeros(2, 3)}, "one row of S >= 2 scores"),
    ({"labels": ["a"]}, "labels needs 5 entries"),
    ({"tau": 0.0}, "tau must lie in 0.05 .. 5.0"),
    ({"seed": 100}, "seed must be an int in 0 .. 99"),
    ({"num_draws": 0}, "num_draws must be an int >= 1"),
])
def test_gumbel_explorer_rejects_bad_arguments(kwargs, message):
    kwargs = {"logits": PROBS_SCORES.float(), **kwargs}
    with pytest.raises(ValueError, match=message):
        GumbelExplorer(**kwargs)
