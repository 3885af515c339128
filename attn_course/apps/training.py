"""One training loop for the image lessons: shuffled mini-batches, Adam with a one-cycle schedule, a tqdm bar."""
import math

import torch
from tqdm.auto import tqdm


def fit_one_cycle(model, n, batch_loss, epochs, batch_size, lr, seed=0, desc="training", progress=True):
    """Train ``model`` on ``n`` examples; ``batch_loss(index (b,) int64) -> scalar loss`` for one batch.

    Each epoch visits the examples in an order drawn from ``torch.Generator().manual_seed(seed)``;
    Adam's learning rate follows ``OneCycleLR`` with peak ``lr`` (Smith & Topin 2017). The model is
    in training mode during the loop and in evaluation mode afterwards.

    Returns:
        the loss of every step, a list of ``epochs * ceil(n / batch_size)`` floats.
    """
    g = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(n / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    losses = []
    model.train()
    with tqdm(total=steps, disable=None if progress else True, desc=desc, leave=False, mininterval=0.5) as bar:
        for _ in range(epochs):
            order = torch.randperm(n, generator=g)
            for start in range(0, n, batch_size):
                loss = batch_loss(order[start:start + batch_size])
                opt.zero_grad()
                loss.backward()
                opt.step()
                schedule.step()
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return losses
