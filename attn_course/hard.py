"""Soft and hard attention over one sequence: pooling with a learned score vector, argmax and sampled
selection, the straight-through Gumbel-softmax, and REINFORCE.

Shape legend: B batch, S sequence length (the positions to choose from), E d_model, Dv value size.
Here each row of ``attn_scores`` (..., S) is one distribution over S positions (the leading ``...``
are batch dims); lessons 02-03 wrote the same thing with a query axis L.

    soft:  attn_weights = softmax(attn_scores)          context = sum_j attn_weights_j v_j
    hard:  index = argmax_j attn_scores_j (or a draw)   context = v_index, attn_weights one-hot

Soft attention over scores and values is ``attn_course.pooling.attention_pool``, shared by every
lesson; ``SoftAttentionPooling`` adds a learned score vector in front of it.

Soft attention is differentiable in the scores; hard attention is not (argmax and sampling have no
gradient), so it is trained with REINFORCE (``reinforce_loss``) or a straight-through Gumbel-softmax
(``gumbel_softmax_st``). References: Xu et al. 2015, "Show, Attend and Tell", section 4;
Williams 1992, "Simple statistical gradient-following algorithms"; Jang, Gu & Poole 2017,
"Categorical Reparameterization with Gumbel-Softmax", eq. 2 and section 2.2.
"""
import torch
from torch import nn
from torch.nn import functional as F

from .pooling import attention_pool, validate_scores_value

MODES = ("argmax", "sample")


def _draw_on(generator, shape, dtype, device, draw):
    """Draw with ``generator`` on its own device, then move (the same numbers on every device)."""
    where = device if generator is None else generator.device
    return draw(torch.empty(shape, dtype=dtype, device=where)).to(device)


class SoftAttentionPooling(nn.Module):
    """Pool a sequence into one vector with a learned score vector: ``s_j = w . x_j``, softmax over j.

    The whole sequence is summarised by ``context = sum_j softmax(s)_j x_j`` (``pooling.attention_pool``).
    The score layer has no bias: a constant added to every score cancels in the softmax.

    Args:
        d_model: E, the size of each position's features.

    Shape:
        x (B, S, E), key_padding_mask (B, S) bool, **True = padding** -> context (B, E),
        attn_weights (B, S).

    Attributes:
        score (nn.Linear(E, 1, bias=False)): its weight (1, E) is the score vector w.

    References: Yang et al. 2016, "Hierarchical Attention Networks", eqs. 5-7 (with the
    ``tanh`` projection left out); Xu et al. 2015, section 4.2.

    >>> pool = SoftAttentionPooling(4)
    >>> context, attn_weights = pool(torch.ones(2, 3, 4))
    >>> context.shape, attn_weights.sum(-1)
    (torch.Size([2, 4]), tensor([1., 1.], grad_fn=<SumBackward1>))
    """

    def __init__(self, d_model):
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model must be a positive int; got {d_model!r}")
        self.score = nn.Linear(d_model, 1, bias=False)

    def attn_scores(self, x, key_padding_mask=None):
        """The scores ``w . x_j`` (B, S); padded positions get ``-inf``."""
        if x.dim() != 3 or x.shape[-1] != self.score.in_features:
            raise ValueError(f"x must be (B, S, E={self.score.in_features}); got {tuple(x.shape)}")
        attn_scores = self.score(x).squeeze(-1)                                  # (B, S, E) -> (B, S)
        if key_padding_mask is not None:
            attn_scores = attn_scores.masked_fill(key_padding_mask, float("-inf"))
        return attn_scores

    def forward(self, x, key_padding_mask=None):
        return attention_pool(self.attn_scores(x, key_padding_mask), x)          # (B, E), (B, S)


def hard_attention(attn_scores, value, mode="argmax", generator=None):
    """Hard attention: pick ONE position per row of scores and return its value.

    ``mode="argmax"``: ``index = argmax_j attn_scores_j`` (the first one on ties).
    ``mode="sample"``: ``index ~ Categorical(softmax(attn_scores))``, drawn with ``generator``.
    Then ``attn_weights = one_hot(index)`` and ``context = attn_weights @ value = value[index]``.

    Neither argmax nor sampling is differentiable: ``context`` has a gradient for ``value`` (the
    picked row) and **none for attn_scores**. Train the scores with ``reinforce_loss`` or replace
    the one-hot by ``gumbel_softmax_st``.

    Args:
        attn_scores: float tensor (..., S); ``-inf`` marks a position that must not be picked.
        value: float tensor (..., S, Dv); batch dims broadcast against those of ``attn_scores``.
        mode: ``"argmax"`` or ``"sample"``.
        generator: a ``torch.Generator`` for ``"sample"`` (None: PyTorch's global one). A CPU
            generator draws on the CPU and moves the result, so a seed picks the same positions on
            every device.

    Returns:
        context (..., Dv); index (...,) int64 in [0, S); attn_weights (..., S), one-hot, the dtype
        of ``attn_scores``.

    Raises:
        ValueError: S differs between ``attn_scores`` and ``value``, or ``mode`` is not one of
            ``MODES``.

    References: Xu et al. 2015, "Show, Attend and Tell", section 4.1 ("stochastic hard attention").

    >>> hard_attention(torch.tensor([[0.1, 2.0, -1.0]]), torch.eye(3)[None])[1]
    tensor([1])
    """
    validate_scores_value(attn_scores, value)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    S = attn_scores.shape[-1]
    if mode == "argmax":
        index = attn_scores.detach().argmax(dim=-1)                               # (..., S) -> (...,)
    else:
        probs = torch.softmax(attn_scores.detach().reshape(-1, S), dim=-1)        # (N, S), N = prod(...)
        if generator is not None:
            probs = probs.to(generator.device)
        index = torch.multinomial(probs, 1, generator=generator)                  # (N, S) -> (N, 1)
        index = index.to(attn_scores.device).reshape(attn_scores.shape[:-1])      # (N, 1) -> (...,)
    attn_weights = F.one_hot(index, S).to(attn_scores.dtype)                      # (...,) -> (..., S)
    context = (attn_weights.unsqueeze(-2) @ value).squeeze(-2)                    # (..., 1, S) @ (..., S, Dv) -> (..., Dv)
    return context, index, attn_weights


def gumbel_softmax_st(logits, tau=1.0, hard=True, generator=None):
    """Gumbel-softmax sample over the last axis; with ``hard=True``, straight-through (one-hot forward).

    ``y_soft = softmax((logits + g) / tau)`` with Gumbel noise ``g = -log(E)``, ``E ~ Exponential(1)``.
    ``hard=True`` returns ``y_hard - y_soft.detach() + y_soft``: its value is the one-hot
    ``y_hard = one_hot(argmax(y_soft))``, its gradient that of ``y_soft``. ``argmax(logits + g)`` is a
    draw from ``softmax(logits)`` at every ``tau`` (the Gumbel-max trick); ``tau`` only sets how
    close ``y_soft`` is to one-hot (tau -> 0) or to uniform (tau -> inf).

    Args:
        logits: float tensor (..., S), unnormalised log-probabilities (attention scores).
        tau: temperature, a float > 0.
        hard: return the straight-through one-hot (True) or the soft sample (False).
        generator: a ``torch.Generator`` for the noise (None: PyTorch's global one). A CPU generator
            draws on the CPU and moves the noise, so a seed gives the same sample on every device.

    Returns:
        y (..., S), the dtype of ``logits``: one-hot rows (hard) or positive rows summing to 1 (soft).

    Raises:
        ValueError: ``tau`` is not > 0.

    References: Jang, Gu & Poole 2017, eq. 2 and section 2.2 (straight-through); Maddison, Mnih &
    Teh 2017 (the Concrete distribution). With ``generator=None`` numerically equal to
    ``torch.nn.functional.gumbel_softmax`` under the same ``torch.manual_seed`` (tests/test_hard.py).

    >>> y = gumbel_softmax_st(torch.zeros(2, 4), generator=torch.Generator().manual_seed(0))
    >>> y.sum(-1), ((y == 0) | (y == 1)).all()
    (tensor([1., 1.]), tensor(True))
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    exp_noise = _draw_on(generator, logits.shape, logits.dtype, logits.device,
                         lambda t: t.exponential_(generator=generator))
    gumbels = -exp_noise.log()                                                   # Gumbel(0, 1), (..., S)
    y_soft = torch.softmax((logits + gumbels) / tau, dim=-1)                     # (..., S)
    if not hard:
        return y_soft
    index = y_soft.argmax(dim=-1, keepdim=True)                                  # (..., 1)
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index, 1.0)                   # one-hot (..., S)
    return y_hard - y_soft.detach() + y_soft                                     # value y_hard, gradient of y_soft


def reinforce_loss(attn_scores, index, reward, baseline=None):
    """REINFORCE surrogate loss for positions drawn from ``softmax(attn_scores)``.

    ``loss = -mean((reward - baseline) * log softmax(attn_scores)[index])``. Its gradient estimates
    ``-d E[reward] / d attn_scores``: minimising it makes positions that earned more than the baseline
    more likely. ``reward`` and ``baseline`` get no gradient. With a baseline that does not depend on
    the pick (a float, a learned value) the estimate is unbiased; the default batch mean includes each
    sample's own reward, which scales the estimate by ``1 - 1/N`` for N picks (slightly biased).

    Args:
        attn_scores: float tensor (..., S), the scores the positions were drawn from.
        index: int64 tensor (...,), the drawn positions (``hard_attention(..., mode="sample")[1]``).
        reward: float tensor (...,), e.g. ``-cross_entropy`` of the prediction made from each pick.
        baseline: None (the batch mean of ``reward``), a float, or a tensor broadcastable to (...,).

    Returns:
        a scalar tensor.

    Raises:
        ValueError: ``index`` or ``reward`` does not have the shape (...,) of the batch dims.

    References: Williams 1992, eq. 11 (baseline b); Xu et al. 2015, eqs. 10-12; Mnih et al. 2014,
    "Recurrent Models of Visual Attention", section 3.2.

    >>> attn_scores = torch.zeros(1, 2, requires_grad=True)
    >>> reinforce_loss(attn_scores, torch.tensor([0]), torch.tensor([1.0]), baseline=0.0).backward()
    >>> attn_scores.grad  # position 0 earned reward 1 > baseline: its score goes up
    tensor([[-0.5000,  0.5000]])
    """
    if index.shape != attn_scores.shape[:-1] or reward.shape != attn_scores.shape[:-1]:
        raise ValueError(f"index and reward must have the batch shape {tuple(attn_scores.shape[:-1])} of "
                         f"attn_scores {tuple(attn_scores.shape)}; got index {tuple(index.shape)} and "
                         f"reward {tuple(reward.shape)}")
    reward = reward.detach()
    baseline = reward.mean() if baseline is None else torch.as_tensor(baseline, dtype=reward.dtype)
    log_prob = torch.log_softmax(attn_scores, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)  # (...,)
    return -((reward - baseline.detach().to(reward.device)) * log_prob).mean()


def lookup_batch(batch_size, seq_len=12, num_keys=24, num_values=10, generator=None):
    """The lesson's selection task (a key-value lookup): return the value stored under the query key.

    Each of B sequences holds S (key, value) pairs, keys distinct letters from ``num_keys``, values
    digits in [0, V); the query is one of the keys, drawn at random. Only its position holds the
    answer, so a model must pick the right position.

    Args:
        batch_size: B; seq_len: S (2 <= S <= num_keys); num_keys: K; num_values: V (>= 2).
        generator: a CPU ``torch.Generator`` (None: the global one).

    Returns:
        keys (B, S) int64, distinct in each row; values (B, S) int64; query (B,) int64, a key of
        its row; position (B,) int64, where the query sits; target (B,) int64, the value there.
        All on the CPU.

    Raises:
        ValueError: sizes out of range.

    >>> keys, values, query, position, target = lookup_batch(2, generator=torch.Generator().manual_seed(0))
    >>> bool((keys.gather(1, position[:, None]).squeeze(1) == query).all())
    True
    """
    if batch_size < 1 or not 2 <= seq_len <= num_keys or num_values < 2:
        raise ValueError(f"need batch_size >= 1, 2 <= seq_len <= num_keys, num_values >= 2; got "
                         f"batch_size={batch_size}, seq_len={seq_len}, num_keys={num_keys}, "
                         f"num_values={num_values}")
    keys = torch.rand(batch_size, num_keys, generator=generator).argsort(-1)[:, :seq_len]  # (B, S), distinct
    values = torch.randint(0, num_values, (batch_size, seq_len), generator=generator)      # (B, S)
    position = torch.randint(0, seq_len, (batch_size,), generator=generator)              # (B,)
    query = keys.gather(1, position[:, None]).squeeze(1)                                  # (B, S) -> (B,)
    target = values.gather(1, position[:, None]).squeeze(1)                               # (B, S) -> (B,)
    return keys, values, query, position, target
