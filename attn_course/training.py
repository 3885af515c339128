"""One training loop for every application and lesson: ``fit``, and the ``History`` it returns.

The caller says what a batch is and what its loss is (``batch_loss``, a closure that moves the batch
to ``next(model.parameters()).device``); ``fit`` does the rest, in the order of a hand-written loop:
``loss = batch_loss(batch)``, ``zero_grad``, ``backward``, optional gradient clipping, ``step``,
optional ``scheduler.step()``. Batches are drawn by the caller from its own seeded generator, at the
start of each epoch, so a run is repeatable bit for bit.
"""
import copy
import dataclasses

import torch
from tqdm.auto import tqdm


@dataclasses.dataclass
class History:
    """What ``fit`` measured: ``step_loss`` (float per step), ``epoch_loss`` (per epoch, the mean over its
    examples: each batch's loss weighted by ``len(batch)``), ``evaluations`` (per epoch, what ``evaluate``
    returned; empty without it)."""
    step_loss: list = dataclasses.field(default_factory=list)
    epoch_loss: list = dataclasses.field(default_factory=list)
    evaluations: list = dataclasses.field(default_factory=list)


def fit(model, batches, batch_loss, optimizer, epochs=1, scheduler=None, clip_grad_norm=None,
        evaluate=None, keep_best=None, desc="training", progress=True):
    """Train ``model`` for ``epochs`` passes over ``batches``; one optimiser step per batch.

    Args:
        model: an ``nn.Module``; in training mode during each epoch, in evaluation mode when ``fit`` returns.
        batches: ``batches(epoch) -> list of batches``, called once at the start of each epoch (0, 1, ...),
            or one list used every epoch. A batch is what ``batch_loss`` takes (e.g. an index tensor (b,)
            int64); ``len(batch)`` is its number of examples.
        batch_loss: ``batch_loss(batch) -> scalar loss tensor`` on the model's device.
        optimizer: a ``torch.optim`` optimiser over ``model.parameters()``.
        epochs: passes; scheduler: an ``lr_scheduler`` stepped after every optimiser step (not per epoch).
        clip_grad_norm: the largest total gradient 2-norm (``torch.nn.utils.clip_grad_norm_``), or None.
        evaluate: ``evaluate() -> value`` called after each epoch (it may put the model in evaluation mode).
        keep_best: "max" or "min": restore the weights of the epoch whose ``evaluate`` value was the
            highest / lowest (the first one on ties); None keeps the last epoch's weights.
        desc, progress: the label of the tqdm bar (``tqdm.auto``, one tick per step); ``progress=False`` hides it.

    Returns:
        a ``History``: ``step_loss``, ``epoch_loss``, ``evaluations``.

    Raises:
        ValueError: if ``keep_best`` is not None, "max" or "min", or is given without ``evaluate``.

    >>> model = torch.nn.Linear(3, 1)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> loss = lambda idx: torch.nn.functional.mse_loss(model(x[idx]), y[idx])
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> len(fit(model, [torch.arange(4), torch.arange(4, 8)], loss, opt, epochs=3, progress=False).step_loss)
    6
    """
    if keep_best not in (None, "max", "min") or (keep_best and evaluate is None):
        raise ValueError(f"keep_best must be None, 'max' or 'min', with an evaluate hook; got {keep_best!r}, "
                         f"evaluate={evaluate!r}")
    history, best_value, best_state = History(), None, None
    first = batches(0) if callable(batches) else batches
    total = epochs * len(first)                                          # exact when every epoch has as many
    with tqdm(total=total, desc=desc, disable=None if progress else True, leave=False, mininterval=0.5) as bar:
        for epoch in range(epochs):
            epoch_batches = first if epoch == 0 else (batches(epoch) if callable(batches) else batches)
            model.train()
            total, count = 0.0, 0
            for batch in epoch_batches:
                loss = batch_loss(batch)
                optimizer.zero_grad()
                loss.backward()
                if clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                history.step_loss.append(loss.item())
                total, count = total + history.step_loss[-1] * len(batch), count + len(batch)
                bar.update(1)
                bar.set_postfix(loss=f"{history.step_loss[-1]:.3f}", refresh=False)
            history.epoch_loss.append(total / count if count else float("nan"))
            if evaluate is not None:
                value = evaluate()
                history.evaluations.append(value)
                better = best_value is None or (value > best_value if keep_best == "max" else value < best_value)
                if keep_best and better:
                    best_value, best_state = value, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def shuffled_batches(n, batch_size, seed=0):
    """Mini-batches for ``fit``: ``batches(epoch)`` gives a new random order of the n examples every
    epoch, cut into index tensors (batch_size,) int64 (the last one shorter).

    The orders come from ``torch.Generator().manual_seed(seed)``, one ``randperm`` per epoch, so a
    run is repeatable and the global RNG is untouched.

    >>> batches = shuffled_batches(5, 2, seed=0)
    >>> [len(b) for b in batches(0)]
    [2, 2, 1]
    """
    g = torch.Generator().manual_seed(seed)
    return lambda epoch: torch.randperm(n, generator=g).split(batch_size)
