"""attn_course.training.fit: the one training loop.

References: a hand-written loop (the order zero_grad -> backward -> clip -> step -> scheduler.step,
batches drawn from the caller's generator each epoch) compared bit for bit; the clipped update of
plain SGD worked out by hand; the mean over all examples computed in one go; weight snapshots taken
inside the evaluation hook.
"""
import doctest
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from attn_course import training
from attn_course.training import History, fit

from helpers import DEVICES


def _model(device="cpu"):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3)).to(device)


def _data(n=22):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _loss_fn(model, x, y):
    def batch_loss(batch):
        device = next(model.parameters()).device
        return F.cross_entropy(model(x[batch].to(device)), y[batch].to(device))
    return batch_loss


def _schedule(opt):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("clip", [None, 0.1])
@pytest.mark.parametrize("with_scheduler", [False, True])
def test_fit_equals_a_hand_written_loop_bit_for_bit(device, clip, with_scheduler):
    x, y = _data()
    runs = []
    for use_fit in (False, True):
        model = _model(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        scheduler = _schedule(opt) if with_scheduler else None
        g = torch.Generator().manual_seed(2)
        batch_loss = _loss_fn(model, x, y)
        torch.manual_seed(3)                                                 # dropout's draws
        if use_fit:
            losses = fit(model, lambda epoch: torch.randperm(len(x), generator=g).split(4), batch_loss, opt,
                         epochs=3, scheduler=scheduler, clip_grad_norm=clip, progress=False).step_loss
        else:
            losses = []
            for _ in range(3):
                model.train()
                for batch in torch.randperm(len(x), generator=g).split(4):
                    loss = batch_loss(batch)
                    opt.zero_grad()
                    loss.backward()
                    if clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), clip)
                    opt.step()
                    if scheduler is not None:
                        scheduler.step()
                    losses.append(loss.item())
            model.eval()
        runs.append((losses, model.state_dict(), model.training))
    (hand_losses, hand_state, hand_mode), (fit_losses, fit_state, fit_mode) = runs
    assert len(fit_losses) == 3 * math.ceil(len(x) / 4) and fit_losses == hand_losses
    assert all(torch.equal(hand_state[k], fit_state[k]) for k in hand_state)
    assert hand_mode is fit_mode is False


def test_clip_grad_norm_clips_the_update_of_plain_sgd():
    x = torch.ones(1, 4)
    steps = {}
    for clip in (None, 0.5):
        model = nn.Linear(4, 1, bias=False)
        nn.init.zeros_(model.weight)
        loss = lambda batch: (model(x[batch]) - 10.0).pow(2).mean()          # gradient -20 x: norm 40
        fit(model, [torch.tensor([0])], loss, torch.optim.SGD(model.parameters(), lr=1.0),
            clip_grad_norm=clip, progress=False)
        steps[clip] = model.weight.detach().clone()                          # = -lr * (clipped) gradient
    torch.testing.assert_close(steps[None], torch.full((1, 4), 20.0))
    torch.testing.assert_close(steps[0.5], torch.full((1, 4), 0.25))         # 20 * 0.5 / 40; norm 0.5


@pytest.mark.parametrize("keep_best, restored", [("max", 1), ("min", 2), (None, 3)])
def test_keep_best_restores_the_weights_of_the_best_epoch(keep_best, restored):
    x, y = _data()
    model = _model()
    snapshots, scores = [], iter([0.2, 0.9, 0.1, 0.9])                     # a tie for max: the first wins

    def evaluate():
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, [torch.arange(len(x))], _loss_fn(model, x, y), opt, epochs=4, evaluate=evaluate,
                  keep_best=keep_best, progress=False)
    assert history.evaluations == [0.2, 0.9, 0.1, 0.9]
    assert not any(torch.equal(snapshots[i]["0.weight"], snapshots[j]["0.weight"])
                   for i in range(4) for j in range(i))                      # every epoch moved the weights
    assert all(torch.equal(v, snapshots[restored][k]) for k, v in model.state_dict().items())


def test_epoch_loss_is_the_mean_over_examples_weighted_by_batch_size():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0])                             # a per-example loss
    model = nn.Linear(1, 1)
    loss = lambda batch: values[batch].mean() + 0.0 * model.weight.sum()
    history = fit(model, [torch.tensor([0, 1, 2]), torch.tensor([3])], loss,
                  torch.optim.SGD(model.parameters(), lr=0.0), epochs=2, progress=False)
    assert history.step_loss == [2.0, 10.0, 2.0, 10.0]
    assert history.epoch_loss == [pytest.approx(4.0)] * 2                    # mean of 1, 2, 3, 10; not (2 + 10) / 2


def test_evaluate_runs_once_after_each_epoch_and_training_mode_comes_back():
    x, y = _data(8)
    model = _model()
    log = []

    def batches(epoch):
        log.append(("batches", epoch))
        return [torch.arange(4), torch.arange(4, 8)]

    def batch_loss(batch):
        log.append(("step", model.training))
        return _loss_fn(model, x, y)(batch)

    def evaluate():
        model.eval()
        log.append(("evaluate",))
        return len(log)

    history = fit(model, batches, batch_loss, torch.optim.SGD(model.parameters(), lr=0.1), epochs=3,
                  evaluate=evaluate, progress=False)
    epoch = lambda e: [("batches", e), ("step", True), ("step", True), ("evaluate",)]
    assert log == epoch(0) + epoch(1) + epoch(2)
    assert history.evaluations == [4, 8, 12] and len(history.epoch_loss) == 3 and not model.training


def test_history_without_an_evaluate_hook_and_a_fixed_list_of_batches():
    x, y = _data(6)
    model = _model()
    history = fit(model, [torch.arange(6)], _loss_fn(model, x, y), torch.optim.SGD(model.parameters(), lr=0.1),
                  epochs=2, progress=False)
    assert isinstance(history, History) and history.evaluations == []
    assert len(history.step_loss) == 2 and history.epoch_loss == history.step_loss


@pytest.mark.parametrize("keep_best, evaluate", [("best", lambda: 0.0), ("max", None)])
def test_keep_best_needs_max_or_min_and_an_evaluate_hook(keep_best, evaluate):
    model = _model()
    with pytest.raises(ValueError, match="keep_best"):
        fit(model, [], lambda batch: None, torch.optim.SGD(model.parameters(), lr=0.1), evaluate=evaluate,
            keep_best=keep_best, progress=False)


def test_docstring_example_runs():
    assert doctest.testmod(training).failed == 0


def test_shuffled_batches_cover_every_example_once_per_epoch_in_a_seeded_new_order():
    batches = training.shuffled_batches(10, 4, seed=3)
    first, second = [torch.cat(batches(e)) for e in range(2)]
    assert [len(b) for b in batches(2)] == [4, 4, 2]
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)                                      # a new order each epoch
    g = torch.Generator().manual_seed(3)                                        # the orders of a hand-made generator
    assert torch.equal(first, torch.randperm(10, generator=g)) and torch.equal(second, torch.randperm(10, generator=g))
    before = torch.random.get_rng_state()
    training.shuffled_batches(10, 4)(0)
    assert torch.equal(before, torch.random.get_rng_state())                   # the global RNG is untouched


# ---------------------------------------------------------------- replayable: train once per test run

CALLS = []


@training.replayable
def _train(model, x, y, epochs=2, lr=0.1, progress=False):
    """A training function as the applications write one: dropout draws from the global RNG."""
    CALLS.append(1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return fit(model, training.shuffled_batches(len(y), 4), _loss_fn(model, x, y), opt, epochs,
               progress=progress).step_loss


def _run(**changes):
    """Train a fresh model; return (weights, result, RNG state after, training flags) and whether it trained."""
    before = len(CALLS)
    model = changes.pop("model", None) or _model()
    x, y = changes.pop("data", None) or _data()
    torch.manual_seed(changes.pop("rng_seed", 5))
    result = _train(model, x, y, **changes)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    return (weights, result, torch.get_rng_state(), [m.training for m in model.modules()]), len(CALLS) > before


def _same(a, b):
    (wa, ra, ga, ta), (wb, rb, gb, tb) = a, b
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and ra == rb \
        and torch.equal(ga, gb) and ta == tb


def test_replayable_trains_once_and_replays_weights_result_rng_and_modes(monkeypatch, tmp_path):
    monkeypatch.setenv(training.CACHE_ENV, str(tmp_path))
    first, trained = _run()
    assert trained and list(tmp_path.glob("*.pt"))
    again, trained_again = _run()
    assert not trained_again                                       # replayed from the saved run
    assert _same(first, again)
    monkeypatch.delenv(training.CACHE_ENV)
    real, trained = _run()                                         # the reference: a real second training
    assert trained and _same(first, real)


@pytest.mark.parametrize("change", ["lr", "epochs", "data", "weights", "rng"])
def test_any_change_to_what_decides_the_result_trains_again(monkeypatch, tmp_path, change):
    monkeypatch.setenv(training.CACHE_ENV, str(tmp_path))
    _run()
    x, y = _data()
    model = _model()
    with torch.no_grad():
        model[0].bias[0] += 1e-6
    changed = {"lr": {"lr": 0.1 + 1e-9}, "epochs": {"epochs": 3},
               "data": {"data": (torch.cat([x[:1] + 1e-6, x[1:]]), y)}, "weights": {"model": model},
               "rng": {"rng_seed": 6}}[change]
    _, trained = _run(**changed)
    assert trained


def test_models_from_outside_the_package_and_runs_without_the_variable_always_train(monkeypatch, tmp_path):
    class Outside(nn.Module):                                      # its code is not in the key: never replayed
        def __init__(self):
            super().__init__()
            self.body = _model()

        def forward(self, x):
            return self.body(x)

    monkeypatch.setenv(training.CACHE_ENV, str(tmp_path))
    assert all(_run(model=Outside())[1] for _ in range(2))
    assert not list(tmp_path.iterdir())
    monkeypatch.delenv(training.CACHE_ENV)
    assert all(_run()[1] for _ in range(2))


def test_eos_targets_against_a_python_loop_and_refuses_a_gap():
    from attn_course.training import eos_targets
    labels = torch.tensor([[4, 2, 9], [1, -1, -1], [-1, -1, -1], [0, 0, 5]])
    expected = []
    for row in labels.tolist():                                   # by hand: the real ids, then eos, then padding
        real = [t for t in row if t != -1]
        expected.append(real + [99] + [-1] * (len(row) - len(real)))
    assert eos_targets(labels, eos=99).tolist() == expected
    with pytest.raises(ValueError, match="padding"):
        eos_targets(torch.tensor([[3, -1, 4]]), eos=99)
