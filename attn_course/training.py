"""One training loop for every application and lesson: ``fit``, and the ``History`` it returns.

The caller says what a batch is and what its loss is (``batch_loss``, a closure that moves the batch
to ``next(model.parameters()).device``); ``fit`` does the rest, in the order of a hand-written loop:
``loss = batch_loss(batch)``, ``zero_grad``, ``backward``, optional gradient clipping, ``step``,
optional ``scheduler.step()``. Batches are drawn by the caller from its own seeded generator, at the
start of each epoch, so a run is repeatable bit for bit.

``replayable`` lets a test suite train each model once: a training function it wraps saves what a run
produced (the weights, the returned losses, the global RNG state after) and, called again with the same
inputs, restores it instead of training again. It is off unless ``ATTN_COURSE_TRAINING_CACHE`` names a
directory (the test suite sets one per run).
"""
import contextlib
import copy
import dataclasses
import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

CACHE_ENV = "ATTN_COURSE_TRAINING_CACHE"


def eos_targets(labels, eos, pad=-1):
    """Label ids (B, K), ``pad`` after each row's k-th -> decoder targets (B, K + 1): the labels, ``eos``, ``pad``.

    The targets of a decoder trained with teacher forcing to write a variable-length sequence and stop:
    the captions of lesson 12 and the digit sequences of lesson 13.

    Raises:
        ValueError: a row with ``pad`` before one of its labels.

    >>> eos_targets(torch.tensor([[3, 1, 4], [2, 7, -1]]), eos=10)
    tensor([[ 3,  1,  4, 10],
            [ 2,  7, 10, -1]])
    """
    real = labels != pad                                                    # (B, K)
    if (real[:, 1:] & ~real[:, :-1]).any():
        raise ValueError(f"labels must hold their ids first and the padding ({pad}) only after them")
    targets = torch.cat([labels, torch.full_like(labels[:, :1], pad)], 1)   # (B, K) -> (B, K + 1)
    targets[torch.arange(len(labels)), real.sum(1)] = eos
    return targets


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


# ---------------------------------------------------------------- train once per test run

class _Unkeyable(Exception):
    """An argument whose content cannot be hashed: the call trains, and nothing is saved."""


@functools.cache
def _package_digest():
    """SHA-256 of every module of this package: a change to any model's code makes a new key."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _feed(h, obj, depth=0):
    """Hash ``obj``'s content into ``h``: numbers, text, tensors and arrays (dtype, shape, bytes; CPU
    only), lists, tuples, dicts, dataclasses, and the course's modules (class, plain attributes and
    state). Anything else raises ``_Unkeyable``."""
    if depth > 12:
        raise _Unkeyable("nested too deeply")
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(repr((type(obj).__name__, obj)).encode())
    elif isinstance(obj, torch.Tensor):
        if obj.device.type != "cpu" or obj.is_sparse or type(obj) is not torch.Tensor and \
                not isinstance(obj, torch.nn.Parameter):
            raise _Unkeyable(f"tensor on {obj.device} / {type(obj).__name__}")
        t = obj.detach().contiguous().reshape(-1)
        h.update(f"tensor {t.dtype} {tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise _Unkeyable("object array")
        h.update(f"array {obj.dtype} {obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, torch.nn.Module):
        for name, module in obj.named_modules():
            cls = type(module)
            if not cls.__module__.startswith(("attn_course.", "torch.")):
                raise _Unkeyable(f"{cls.__qualname__} is defined outside the package")
            h.update(f"module {name} {cls.__module__}.{cls.__qualname__} {module.training}".encode())
            for attr, value in sorted(vars(module).items()):
                if not attr.startswith("_"):
                    h.update(attr.encode())
                    _feed(h, value, depth + 1)
        for name, value in obj.state_dict().items():
            h.update(name.encode())
            _feed(h, value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__} {len(obj)}".encode())
        for item in obj:
            _feed(h, item, depth + 1)
    elif isinstance(obj, dict):
        h.update(f"dict {len(obj)}".encode())
        for k, v in obj.items():
            _feed(h, k, depth + 1)
            _feed(h, v, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        for field in dataclasses.fields(obj):
            h.update(field.name.encode())
            _feed(h, getattr(obj, field.name), depth + 1)
    elif callable(obj) and getattr(obj, "__module__", None) and obj.__module__.startswith(("attn_course.", "torch")) \
            and hasattr(obj, "__qualname__") and "<" not in obj.__qualname__:
        h.update(f"function {obj.__module__}.{obj.__qualname__}".encode())     # a named function of the package
    else:
        raise _Unkeyable(f"{type(obj).__qualname__} {obj!r:.60}")


def _key(train, model, args, kwargs):
    """What decides a training run's result: the function, the package's code, torch's version and CPU
    threads, the default dtype, the global RNG state, the model (classes, settings, weights) and every
    argument except the progress bar's."""
    h = hashlib.sha256()
    h.update(f"{train.__module__}.{train.__qualname__} {_package_digest()} {torch.__version__} "
             f"{torch.get_num_threads()} {torch.get_default_dtype()} "
             f"{torch.are_deterministic_algorithms_enabled()}".encode())
    _feed(h, torch.get_rng_state())
    _feed(h, model)
    _feed(h, list(args))
    _feed(h, {k: v for k, v in sorted(kwargs.items()) if k not in ("progress", "desc")})
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path):
    """Hold an exclusive lock on ``path`` (``fcntl.flock``): a second process training the same model
    waits, then restores."""
    import fcntl
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def replayable(train):
    """Wrap ``train(model, *args, **kwargs)`` (a function that trains ``model`` in place) so that, where
    ``ATTN_COURSE_TRAINING_CACHE`` names a directory, a second call with the same inputs replays the first.

    The key is a SHA-256 of everything that decides the result (see ``_key``): a model or an argument whose
    content cannot be hashed (a class defined outside this package, a tensor on a GPU, an unknown object)
    trains as usual. A replay loads the trained weights into ``model``, restores each submodule's training
    flag and the global RNG state as the training left them, and returns the saved result. Without the
    variable, or where ``fcntl`` is missing, ``train`` runs unchanged. Never set it for graded work: the
    classroom grader starts notebooks with an environment that leaves it out.
    """
    @functools.wraps(train)
    def wrapper(model, *args, **kwargs):
        root = os.environ.get(CACHE_ENV)
        if not root or os.name != "posix":
            return train(model, *args, **kwargs)
        try:
            key = _key(train, model, args, kwargs)
        except _Unkeyable:
            return train(model, *args, **kwargs)
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        saved = root / f"{key}.pt"
        with _locked(root / f"{key}.lock"):
            if saved.exists():
                run = torch.load(saved, weights_only=True)
                model.load_state_dict(run["state"])
                for module, flag in zip(model.modules(), run["training"]):
                    module.training = flag
                torch.set_rng_state(run["rng"])
                return run["result"]
            result = train(model, *args, **kwargs)
            partial = saved.with_suffix(".partial")
            torch.save({"state": model.state_dict(), "training": [m.training for m in model.modules()],
                        "rng": torch.get_rng_state(), "result": result}, partial)
            partial.replace(saved)
            return result
    return wrapper
