"""Attention over the frames of speech: a spoken-digit recogniser and its baselines.

A clip is a sequence of log-mel frames ``(S, F)`` (F = 32 bands, 10 ms apart). The model of lesson 13:

    frames (B, S, F) -> per-band normalisation -> Conv1d stride 2 -> Conv1d   (B, S', E), S' = ceil(S / 2)
    -> attention pooling: one learned query against the S' frames (masked) -> context (B, E) -> 10 logits

Attention pooling is scaled dot-product attention (Vaswani et al. 2017, eq. 1) with a single learned
query, the "attention pooling" of Yang et al. (2016, hierarchical attention networks, eqs. 8-10)
and of speech models such as Chorowski et al. (2015) and Okabe et al. (2018, attentive statistics
pooling). The baseline replaces it with the masked mean over frames.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..pooling import attention_pool, mean_pool
from ..training import fit, replayable, shuffled_batches


def pad_frames(frames, pad_value=0.0):
    """Right-pad clips of different lengths into one batch.

    Args:
        frames: list of B float tensors (T_b, F), T_b >= 1, the same F.
        pad_value: the number written into padded frames.

    Returns:
        ``(x, key_padding_mask)``: ``x`` (B, S, F) with S = max T_b; ``key_padding_mask`` (B, S) bool,
        **True = padding** (the convention of ``torch.nn.MultiheadAttention``).

    Raises:
        ValueError: ``frames`` empty, a clip with no frame, or clips with different F.
    """
    if len(frames) == 0:
        raise ValueError("pad_frames needs at least one clip; got an empty list")
    if any(f.dim() != 2 or len(f) == 0 for f in frames) or len({f.shape[-1] for f in frames}) != 1:
        raise ValueError(f"clips must be (T, F) with T >= 1 and one F; got {[tuple(f.shape) for f in frames]}")
    S = max(len(f) for f in frames)
    x = frames[0].new_full((len(frames), S, frames[0].shape[-1]), pad_value)        # (B, S, F)
    key_padding_mask = torch.ones(len(frames), S, dtype=torch.bool)                 # (B, S), True = padding
    for b, f in enumerate(frames):
        x[b, :len(f)] = f
        key_padding_mask[b, :len(f)] = False
    return x, key_padding_mask.to(x.device)


def subsample_padding_mask(key_padding_mask, stride=2):
    """The padding mask of the frames a strided convolution puts out: every ``stride``-th input frame.

    Output frame t' of ``Conv1d(kernel_size=k, stride=stride, padding=k // 2)`` (k odd) is centred on
    input frame ``stride * t'``; it is padding exactly when that frame is. Such a convolution puts out
    ``S' = ceil(S / stride)`` frames, and so does this mask. (Speech encoders subsample in time,
    e.g. Chan et al. 2016 and Gulati et al. 2020; their masks must follow.)

    Args:
        key_padding_mask: (B, S) bool, **True = padding**.
        stride: int >= 1.

    Returns:
        (B, S') bool, True = padding, S' = ceil(S / stride).

    Raises:
        ValueError: ``stride`` < 1 or ``key_padding_mask`` not 2-D.

    >>> subsample_padding_mask(torch.tensor([[False, False, False, True, True]]))
    tensor([[False, False,  True]])
    """
    if stride < 1 or key_padding_mask.dim() != 2:
        raise ValueError(f"need stride >= 1 and a (B, S) mask; got stride={stride}, shape {tuple(key_padding_mask.shape)}")
    return key_padding_mask[:, ::stride]                                            # (B, S) -> (B, ceil(S / stride))


def query_attention_pool(query, key, value, key_padding_mask=None):
    """One query attends over the frames of each clip: softmax(q k^T / sqrt(E)) v, padding masked.

    attn_scores[b, s] = query . key[b, s] / sqrt(E); attn_weights = softmax over s of the frames that
    are not padding; context[b] = sum_s attn_weights[b, s] value[b, s] (Vaswani et al. 2017, eq. 1,
    with L = 1 query; Yang et al. 2016, eqs. 8-10).

    Args:
        query: (E,) or (B, E) float, the learned query (shared by all clips, or one per clip).
        key: (B, S, E) float. value: (B, S, Dv) float.
        key_padding_mask: (B, S) bool, **True = padding** (gets weight exactly 0), or None.

    Returns:
        ``(context, attn_weights)``: (B, Dv) and (B, S); each row of attn_weights sums to 1 over the frames.

    Raises:
        ValueError: shapes that do not fit together.

    References: the scores ``q . k_s / sqrt(E)`` (``scoring.scaled_dot_scores`` with L = 1), then
    ``attn_course.pooling.attention_pool``. Equal to ``F.scaled_dot_product_attention`` with one query
    (tests/test_speech.py).

    >>> context, attn_weights = query_attention_pool(torch.zeros(4), torch.ones(1, 3, 4),
    ...                                              torch.tensor([[[1.0], [3.0], [100.0]]]),
    ...                                              torch.tensor([[False, False, True]]))
    >>> context, attn_weights
    (tensor([[2.]]), tensor([[0.5000, 0.5000, 0.0000]]))
    """
    B, S, E = key.shape
    if query.shape[-1] != E or value.shape[:2] != (B, S) or (
            key_padding_mask is not None and key_padding_mask.shape != (B, S)):
        raise ValueError(f"query (E,) or (B, E), key (B, S, E), value (B, S, Dv), key_padding_mask (B, S); got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}, "
                         f"{None if key_padding_mask is None else tuple(key_padding_mask.shape)}")
    attn_scores = (key @ query.reshape(-1, E, 1)).squeeze(-1) / math.sqrt(E)        # (B, S, E) @ (., E, 1) -> (B, S)
    return attention_pool(attn_scores, value, key_padding_mask)                      # (B, Dv), (B, S)


class SpokenDigitClassifier(nn.Module):
    """Log-mel frames -> two 1-D convolutions -> attention (or mean) pooling -> 10 digit logits.

    Args:
        band_mean, band_std: (F,) float tensors, the per-band statistics of the training frames.
        d_model: E, channels of the convolutions and size of the query.
        pooling: "attention"; "mean" (every real frame weighs 1/n); or "energy", the mean over the **loud**
            frames only: those whose mean band power (dB) exceeds ``energy_floor + threshold_db``, the
            test of ``spoken_digits.Clips.voiced``, taken at the encoder's frames (every second frame).
            A clip with no loud frame falls back to all its frames. "energy" asks whether attention
            does more than find the loud part.
        energy_floor: the noise level in dB (``spoken_digits.load()["noise"].mean()``), needed by "energy".
        threshold_db: how far above the floor a frame must be to count as loud.

    ``forward(x (B, S, F), key_padding_mask (B, S))`` returns ``(logits (B, 10), attn_weights (B, S'))``
    with ``S' = ceil(S / 2)``: the first convolution has stride 2 (20 ms per encoder frame).

    Raises:
        ValueError: an unknown ``pooling``, or "energy" without ``energy_floor``.
    """

    def __init__(self, band_mean, band_std, d_model=64, pooling="attention", num_classes=10, energy_floor=None,
                 threshold_db=15.0):
        super().__init__()
        if pooling not in ("attention", "mean", "energy"):
            raise ValueError(f"pooling must be 'attention', 'mean' or 'energy'; got {pooling!r}")
        if pooling == "energy" and energy_floor is None:
            raise ValueError("pooling='energy' needs energy_floor, the noise level in dB")
        self.pooling, self.energy_floor, self.threshold_db = pooling, energy_floor, threshold_db
        self.register_buffer("band_mean", torch.as_tensor(band_mean, dtype=torch.float32))
        self.register_buffer("band_std", torch.as_tensor(band_std, dtype=torch.float32))
        n_mels = self.band_mean.shape[-1]
        self.conv1 = nn.Conv1d(n_mels, d_model, kernel_size=5, stride=2, padding=2)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=5, padding=2)
        self.key_proj = nn.Linear(d_model, d_model)
        self.query = nn.Parameter(torch.zeros(d_model))
        self.out = nn.Linear(d_model, num_classes)

    def encode(self, x, key_padding_mask, subsample=subsample_padding_mask):
        """(B, S, F) dB frames -> encoder states (B, S', E) and their padding mask (B, S').

        Padded positions are set to 0 before each convolution, as the convolution's own zero padding
        would be for a clip alone: a clip's states then do not depend on the batch it is in.
        ``subsample(key_padding_mask, stride)`` makes the mask of the subsampled frames.
        """
        x = ((x - self.band_mean) / self.band_std).masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        key_padding_mask = subsample(key_padding_mask, 2)                            # (B, S) -> (B, S')
        h = F.relu(self.conv1(x.transpose(1, 2)))                                    # (B, F, S) -> (B, E, S')
        h = h.masked_fill(key_padding_mask.unsqueeze(1), 0.0)                        # padding -> 0
        h = F.relu(self.conv2(h)).transpose(1, 2)                                    # (B, E, S') -> (B, S', E)
        return h, key_padding_mask

    def classify(self, h, key_padding_mask):
        """Encoder states (B, S', E) and mask (B, S') -> (logits (B, 10), attn_weights (B, S'))."""
        if self.pooling == "attention":
            context, attn_weights = query_attention_pool(self.query, torch.tanh(self.key_proj(h)), h,
                                                         key_padding_mask)          # (B, E), (B, S')
        else:
            context, attn_weights = mean_pool(h, key_padding_mask)                   # the baseline: equal weights
        return self.out(context), attn_weights                                       # (B, E) -> (B, 10)

    def quiet_frames(self, x, key_padding_mask):
        """(B, S, F) dB frames -> (B, S') bool, True where an encoder frame is padding or not loud (see "energy")."""
        loud = x.mean(-1) > self.energy_floor + self.threshold_db                   # (B, S) the test of Clips.voiced
        loud = (loud & ~key_padding_mask)[:, ::2]                                    # (B, S'), frames 0, 2, 4, ...
        none = ~loud.any(-1, keepdim=True)                                           # (B, 1) no loud frame at all
        return ~torch.where(none, ~subsample_padding_mask(key_padding_mask, 2), loud)

    def forward(self, x, key_padding_mask):
        h, mask = self.encode(x, key_padding_mask)                                   # (B, S', E), (B, S')
        if self.pooling == "energy":
            context, attn_weights = mean_pool(h, self.quiet_frames(x, key_padding_mask))   # 1/n on the loud frames
            return self.out(context), attn_weights
        return self.classify(h, mask)


def band_stats(frames):
    """Per-band mean and standard deviation (F,) over all frames of a list of (T, F) clips."""
    stacked = torch.cat(list(frames))                                                # (sum T, F)
    return stacked.mean(0), stacked.std(0)


@replayable
def train_classifier(model, clips, epochs=12, batch_size=32, lr=3e-3, seed=0, progress=True):
    """Adam on mini-batches of ``clips`` (a ``spoken_digits.Clips``) shuffled each epoch; a tqdm bar.

    Returns the mean training loss of each epoch (list of float). The data go to the model's device.
    """
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def batch_loss(batch):
        x, key_padding_mask = pad_frames([clips.frames[i] for i in batch.tolist()])   # (b, S, F), (b, S)
        logits, _ = model(x.to(device), key_padding_mask.to(device))             # (b, 10)
        return F.cross_entropy(logits, clips.labels[batch].to(device))

    history = fit(model, shuffled_batches(len(clips), batch_size, seed), batch_loss, opt, epochs,
                  desc=f"training ({model.pooling} pooling)", progress=progress)
    return history.epoch_loss


@torch.no_grad()
def predict(model, clips, batch_size=64, device="cpu"):
    """Predicted digits (N,) int64 and, per clip, its attention weights over its own S'_i frames (list)."""
    model.eval()
    predictions, weights = [], []
    for start in range(0, len(clips), batch_size):
        chunk = clips.frames[start:start + batch_size]
        x, key_padding_mask = pad_frames(chunk)
        logits, attn_weights = model(x.to(device), key_padding_mask.to(device))
        predictions.append(logits.argmax(-1).cpu())
        weights += [w[:math.ceil(len(f) / 2)].cpu() for w, f in zip(attn_weights, chunk)]
    return torch.cat(predictions), weights


def nearest_neighbour(train_clips, test_clips):
    """The no-learning baseline: each clip -> the mean of its frames; 1-nearest neighbour (Euclidean)."""
    def embed(clips):
        return torch.stack([f.mean(0) for f in clips.frames])                        # (N, F)
    distances = torch.cdist(embed(test_clips), embed(train_clips))                  # (N_test, N_train)
    return train_clips.labels[distances.argmin(-1)]


def mass_on_voiced(weights, voiced):
    """Per clip, the attention mass on voiced frames: weights at the encoder rate, voiced at the frame rate."""
    return torch.tensor([w[v[::2]].sum().item() for w, v in zip(weights, voiced)])
