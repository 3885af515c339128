"""Attention over the frames of speech: a spoken-digit recogniser and its baselines.

A clip is a sequence of log-mel frames ``(S, F)`` (F = 32 bands, 10 ms apart). The model of lesson 13:

    frames (B, S, F) -> per-band normalisation -> Conv1d stride 2 -> Conv1d   (B, S', E), S' = ceil(S / 2)
    -> attention pooling: one learned query against the S' frames (masked) -> context (B, E) -> 10 logits

Attention pooling is scaled dot-product attention (Vaswani et al. 2017, eq. 1) with a single learned
query, the "attention pooling" of Yang et al. (2016, hierarchical attention networks, eqs. 8-10)
and of speech models such as Chorowski et al. (2015) and Okabe et al. (2018, attentive statistics
pooling). The baseline replaces it with the masked mean over frames.

The second model, for connected digits (``spoken_digits.utterances``: 2-4 digits in one utterance),
is "Listen, Attend and Spell" (Chan et al. 2016) in small:

    frames (B, S, F) -> normalisation -> stack 8 frames (stack_frames) -> Linear -> BiGRU   (B, S', E), S' = ceil(S / 8)
    -> GRU speller: before each token, additive attention over the S' states (masked) -> digits, then <eos>

``train_recogniser`` and ``predict_sequences`` train and run it; ``sequence_accuracy``,
``alignment_is_monotone`` and ``attention_on_words`` score its transcripts and where it listened.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..data import spoken_digits
from ..pooling import AdditiveAttention, attention_pool, mean_pool
from ..training import eos_targets, fit, replayable, shuffled_batches


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


# ---------------------------------------------------------------- connected digits: Listen, Attend and Spell in small

TOKENS = spoken_digits.WORDS + ["<eos>", "<bos>"]   # ids 0..9 are the digits, 10 = <eos>, 11 = <bos>
EOS, BOS = 10, 11
PAD = -1                                             # padding of labels, targets and generated tokens; the loss ignores it


def stack_frames(x, key_padding_mask, factor=2):
    """Concatenate each ``factor`` consecutive frames into one: the pyramid's time reduction of LAS.

    ``stacked[b, t] = [x[b, factor*t] ; x[b, factor*t + 1] ; ... ; x[b, factor*t + factor - 1]]``, S first
    right-padded with zero frames to a multiple of ``factor``. The new frame is padding when the
    first frame of its group is (padding sits at the right of each row): the mask is
    ``subsample_padding_mask(key_padding_mask, factor)``. A group that straddles a clip's end keeps the
    values of its padded frames: set them to 0 first, and a clip stacks the same alone or in a batch.

    Args:
        x: (B, S, F) float. key_padding_mask: (B, S) bool, **True = padding**. factor: int >= 1.

    Returns:
        ``(stacked, key_padding_mask)``: (B, S', factor * F) and (B, S') bool, S' = ceil(S / factor).

    Raises:
        ValueError: ``factor`` < 1, ``x`` not 3-D, or a mask that is not (B, S) bool.

    References: Chan et al. 2016, "Listen, Attend and Spell", section 3.1, eq. 5 (there between BLSTM layers).

    >>> x = torch.arange(5.0).reshape(1, 5, 1)                               # frames 0, 1, 2, 3, 4
    >>> stacked, mask = stack_frames(x, torch.tensor([[False, False, False, True, True]]))
    >>> stacked[0].tolist(), mask
    ([[0.0, 1.0], [2.0, 3.0], [4.0, 0.0]], tensor([[False, False,  True]]))
    """
    if not isinstance(factor, int) or factor < 1 or x.dim() != 3 or key_padding_mask.dtype != torch.bool or \
            key_padding_mask.shape != x.shape[:2]:
        raise ValueError(f"need x (B, S, F), key_padding_mask (B, S) bool and an int factor >= 1; got x "
                         f"{tuple(x.shape)}, key_padding_mask {key_padding_mask.dtype} "
                         f"{tuple(key_padding_mask.shape)}, factor={factor!r}")
    B, S, F_ = x.shape
    S_out = -(-S // factor)                                                      # ceil(S / factor)
    x = F.pad(x, (0, 0, 0, S_out * factor - S))                                  # (B, S, F) -> (B, S' * factor, F)
    return x.reshape(B, S_out, factor * F_), subsample_padding_mask(key_padding_mask, factor)  # (B, S', factor*F)


def sequence_targets(labels):
    """Digit labels (B, K), ``PAD`` after the k-th -> decoder targets (B, K + 1): the digits, ``<eos>``, then ``PAD``.

    >>> sequence_targets(torch.tensor([[3, 1, 4], [2, 7, PAD]]))
    tensor([[ 3,  1,  4, 10],
            [ 2,  7, 10, -1]])
    """
    return eos_targets(labels, EOS, PAD)                                         # (B, K) -> (B, K + 1)


class ConnectedDigitRecogniser(nn.Module):
    """Listen, Attend and Spell in small: log-mel frames -> the digits said, one at a time, then ``<eos>``.

    The **listener** normalises each band (the training set's mean and spread, then, with
    ``utterance_mean``, minus the utterance's own mean per band), stacks each ``stride`` frames into
    one (``stack_frames``; 8 frames = 80 ms per encoder frame), maps it to E channels and runs a
    bidirectional GRU over the real frames only (packed): encoder states (B, S', E), S' = ceil(S / stride),
    each knowing the whole utterance and where it stands in it. The **speller** is a GRU that, before
    each token, attends over the states with additive attention (Bahdanau et al. 2015;
    ``pooling.AdditiveAttention``), padding masked to weight exactly 0:

        attn_weights_t = softmax_s(v . tanh(W_query h_{t-1} + W_key enc_s)),  context_t = sum_s attn_weights_ts enc_s,
        h_t = GRU([embed(y_{t-1}); context_t], h_{t-1}),  logits_t = W_out [h_t; context_t],

    with h_0 = tanh(W_init mean_s enc_s). ``context="mean"`` is the baseline without attention: every
    step gets the masked mean of the states (attn_weights 1/n on the real frames).

    Args:
        band_mean, band_std: (F,) float, per-band statistics of the training frames (``band_stats``).
        d_model: E, the size of an encoder state (E / 2 per direction of the GRU).
        hidden: Hd, the speller's state. attn_dim: A, the width of the scoring layer. embed: the size of a
            token's embedding. stride: input frames (10 ms) per encoder frame.
        utterance_mean: subtract each utterance's mean over its real frames, per band: log-mel's
            cepstral mean normalisation (Atal 1974), which removes a voice's constant spectral tilt.
        context: "attention" or "mean".

    ``forward(x (B, S, F), key_padding_mask (B, S) bool **True = padding**, targets (B, T))`` (teacher
    forcing: step t reads ``<bos>`` at t = 0, else ``targets[:, t-1]``) returns
    ``(logits (B, T, V), attn_weights (B, T, S'))``, V = 12 (``TOKENS``); :meth:`generate` decodes greedily.

    Raises:
        ValueError: an unknown ``context``, an odd ``d_model`` or a ``stride`` that is not an int >= 1.

    References: Chan et al. 2016, "Listen, Attend and Spell", sections 3.1-3.2 (there a pyramid of
    three BLSTMs, stride 8, and an attention of dot products of two MLPs); Bahdanau et al. 2015, eq. 6.
    """

    def __init__(self, band_mean, band_std, d_model=128, hidden=64, attn_dim=32, embed=16, stride=8,
                 utterance_mean=True, context="attention"):
        super().__init__()
        if context not in ("attention", "mean") or d_model % 2 or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"need context 'attention' or 'mean', an even d_model and an int stride >= 1; got "
                             f"context={context!r}, d_model={d_model}, stride={stride!r}")
        self.context, self.stride, self.utterance_mean = context, stride, utterance_mean
        self.register_buffer("band_mean", torch.as_tensor(band_mean, dtype=torch.float32))
        self.register_buffer("band_std", torch.as_tensor(band_std, dtype=torch.float32))
        self.input_proj = nn.Linear(stride * self.band_mean.shape[-1], d_model)
        self.listener = nn.GRU(d_model, d_model // 2, batch_first=True, bidirectional=True)
        self.embed = nn.Embedding(len(TOKENS), embed)
        self.init_h = nn.Linear(d_model, hidden)
        self.attention = AdditiveAttention(hidden, d_model, attn_dim)
        self.speller = nn.GRUCell(embed + d_model, hidden)
        self.out = nn.Linear(hidden + d_model, len(TOKENS))

    def listen(self, x, key_padding_mask):
        """(B, S, F) dB frames -> encoder states (B, S', E), zero on padding, and their mask (B, S')."""
        padding = key_padding_mask.unsqueeze(-1)                                     # (B, S, 1)
        x = ((x - self.band_mean) / self.band_std).masked_fill(padding, 0.0)        # (B, S, F)
        if self.utterance_mean:
            x = (x - mean_pool(x, key_padding_mask)[0].unsqueeze(1)).masked_fill(padding, 0.0)   # minus (B, 1, F)
        x, key_padding_mask = stack_frames(x, key_padding_mask, self.stride)        # (B, S, F) -> (B, S', stride*F)
        h = F.relu(self.input_proj(x))                                               # (B, S', stride*F) -> (B, S', E)
        lengths = (~key_padding_mask).sum(1).cpu()                                   # (B,) real frames
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        h, _ = nn.utils.rnn.pad_packed_sequence(self.listener(packed)[0], batch_first=True,
                                                total_length=h.shape[1])             # (B, S', E), 0 on padding
        return h, key_padding_mask

    def _step(self, token, h, states, key_padding_mask, projected_key, mean):
        if self.context == "attention":
            context, attn_weights = self.attention(h, states, states, key_padding_mask, projected_key)
        else:
            context, attn_weights = mean                                             # (B, E), (B, S'): 1/n each
        h = self.speller(torch.cat([self.embed(token), context], -1), h)            # (B, e + E) -> (B, Hd)
        return self.out(torch.cat([h, context], -1)), h, attn_weights                # (B, V), (B, Hd), (B, S')

    def _start(self, x, key_padding_mask):
        states, key_padding_mask = self.listen(x, key_padding_mask)                  # (B, S', E), (B, S')
        mean = mean_pool(states, key_padding_mask)                                   # (B, E), (B, S')
        projected_key = self.attention.w_key(states)                                 # (B, S', A), once per utterance
        return torch.tanh(self.init_h(mean[0])), (states, key_padding_mask, projected_key, mean)

    def forward(self, x, key_padding_mask, targets):
        h, memory = self._start(x, key_padding_mask)                                 # (B, Hd)
        token = torch.full_like(targets[:, 0], BOS)
        logits, weights = [], []
        for t in range(targets.shape[1]):
            step_logits, h, attn_weights = self._step(token, h, *memory)
            logits.append(step_logits)
            weights.append(attn_weights)
            token = targets[:, t].masked_fill(targets[:, t] == PAD, EOS)             # teacher forcing
        return torch.stack(logits, 1), torch.stack(weights, 1)                       # (B, T, V), (B, T, S')

    @torch.no_grad()
    def generate(self, x, key_padding_mask, max_len=5):
        """Greedy decoding: (tokens (B, T) with ``PAD`` after each ``<eos>``, attn_weights (B, T, S'), 0 after it).

        T <= max_len: the loop stops once every utterance has written its ``<eos>``.
        """
        self.eval()
        h, memory = self._start(x, key_padding_mask)
        B, S = memory[0].shape[:2]
        tokens = torch.full((B, max_len), PAD, dtype=torch.long, device=x.device)
        weights = x.new_zeros(B, max_len, S)
        token = torch.full((B,), BOS, dtype=torch.long, device=x.device)
        running = torch.ones(B, dtype=torch.bool, device=x.device)                  # not yet ended
        for t in range(max_len):
            step_logits, h, attn_weights = self._step(token, h, *memory)
            token = step_logits.argmax(-1)                                           # (B,)
            tokens[:, t] = token.masked_fill(~running, PAD)
            weights[:, t] = attn_weights * running[:, None]
            running &= token != EOS
            if not running.any():
                return tokens[:, :t + 1], weights[:, :t + 1]
        return tokens, weights


@replayable
def train_recogniser(model, utterances, epochs=6, batch_size=32, lr=3e-3, seed=0, clip_grad_norm=1.0,
                     progress=True):
    """Teacher forcing, cross-entropy over every digit and the ``<eos>`` (``PAD`` ignored), Adam with a
    one-cycle schedule, gradients clipped to norm ``clip_grad_norm``, mini-batches of ``utterances``
    (``spoken_digits.Utterances``) shuffled each epoch by ``seed``; a tqdm bar.

    Returns the mean training loss of each epoch (list of float).
    """
    device = next(model.parameters()).device
    targets = sequence_targets(utterances.labels)                                    # (N, K + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * math.ceil(len(utterances) / batch_size))

    def batch_loss(batch):
        x, key_padding_mask = pad_frames([utterances.frames[i] for i in batch.tolist()])   # (b, S, F), (b, S)
        batch_targets = targets[batch]
        batch_targets = batch_targets[:, :int((batch_targets != PAD).sum(1).max())].to(device)  # (b, T)
        logits, _ = model(x.to(device), key_padding_mask.to(device), batch_targets)  # (b, T, V)
        return F.cross_entropy(logits.flatten(0, 1), batch_targets.flatten(), ignore_index=PAD)

    history = fit(model, shuffled_batches(len(utterances), batch_size, seed), batch_loss, opt, epochs,
                  scheduler=schedule, clip_grad_norm=clip_grad_norm, desc=f"training ({model.context})",
                  progress=progress)
    return history.epoch_loss


@torch.no_grad()
def predict_sequences(model, utterances, batch_size=64, max_len=None):
    """Greedy transcripts and, per utterance, the attention of its digit steps over its own frames.

    Args:
        model: a ``ConnectedDigitRecogniser``. utterances: a ``spoken_digits.Utterances``.
        max_len: the most tokens per utterance (``<eos>`` included); None = ``labels.shape[1] + 1``.

    Returns:
        ``(tokens, attn_weights)``: tokens (N, max_len) int64, the digits, ``<eos>``, then ``PAD``;
        attn_weights a list of N float tensors (k_i, S'_i): row j is digit step j's weights over the
        ``S'_i = ceil(T_i / model.stride)`` encoder frames of utterance i, k_i the number of digits it
        wrote before ``<eos>`` (the ``<eos>`` step's row is left out).
    """
    model.eval()
    device = next(model.parameters()).device
    max_len = utterances.labels.shape[1] + 1 if max_len is None else max_len
    tokens = torch.full((len(utterances), max_len), PAD, dtype=torch.long)
    weights = []
    for start in range(0, len(utterances), batch_size):
        chunk = utterances.frames[start:start + batch_size]
        x, key_padding_mask = pad_frames(chunk)
        words, attn_weights = model.generate(x.to(device), key_padding_mask.to(device), max_len)
        tokens[start:start + len(chunk), :words.shape[1]] = words.cpu()
        k = sequence_lengths(words).tolist()
        weights += [w[:n, :math.ceil(len(f) / model.stride)].cpu() for w, n, f in zip(attn_weights, k, chunk)]
    return tokens, weights


def sequence_lengths(tokens):
    """Tokens (B, T) -> the number of digits before the first ``<eos>`` or ``PAD`` (T where there is none), (B,)."""
    ended = (tokens == EOS) | (tokens == PAD)                                    # (B, T)
    return torch.where(ended.any(1), ended.int().argmax(1), torch.full_like(tokens[:, 0], tokens.shape[1]))


def sequence_accuracy(predicted, labels):
    """Word and sequence accuracy of transcripts that may be too short or too long.

    With k the true number of digits and k_hat the number ``predicted`` writes before its ``<eos>``,
    position t < max(k, k_hat) is right when both have a digit there and the digits agree. **words** =
    right positions / sum of max(k, k_hat): a missing or an extra digit counts as one wrong position
    (position by position, no alignment: a digit left out early makes the later ones wrong too).
    **sequences** = the share of utterances with k_hat = k and every digit right.

    Args:
        predicted: int64 (B, T) tokens (``predict_sequences``); labels: int64 (B, K), ``PAD`` after the k-th.

    Returns:
        ``{"words": float, "sequences": float}``, each in [0, 1].

    >>> sequence_accuracy(torch.tensor([[3, 1, EOS], [2, EOS, PAD]]), torch.tensor([[3, 1], [2, 7]]))
    {'words': 0.75, 'sequences': 0.5}
    """
    predicted, labels = predicted.cpu(), labels.cpu()
    k, k_hat = (labels != PAD).sum(1), sequence_lengths(predicted)                # (B,), (B,)
    M = max(predicted.shape[1], labels.shape[1])
    pad = lambda t: F.pad(t, (0, M - t.shape[1]), value=PAD)                     # (B, *) -> (B, M)
    position = torch.arange(M)
    right = (pad(predicted) == pad(labels)) & (position < k[:, None]) & (position < k_hat[:, None])   # (B, M)
    exact = (k_hat == k) & (right.sum(1) == k)
    return {"words": right.sum().item() / torch.maximum(k, k_hat).sum().item(), "sequences": exact.float().mean().item()}


def alignment_is_monotone(attn_weights):
    """Per utterance: do its digit steps look further right each time? (N,) bool.

    True when ``argmax_s attn_weights[i][j]`` is strictly increasing in the digit step j. The
    ``<eos>`` step is not included (``predict_sequences`` leaves it out): after the last digit there is
    no word left to find, and where that step looks is free. One digit or none is monotone.

    Args:
        attn_weights: list of N float tensors (k_i, S'_i), as ``predict_sequences`` returns.

    >>> alignment_is_monotone([torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.1, 0.8]]), torch.eye(3).flip(0)])
    tensor([ True, False])
    """
    return torch.tensor([bool((w.argmax(-1).diff() > 0).all()) for w in attn_weights], dtype=torch.bool)


def attention_on_words(attn_weights, spans, stride=4, margin=0):
    """The share of the true digits whose step's attention peaks on that digit's own word.

    Digit step j of utterance i peaks at encoder frame ``s = argmax attn_weights[i][j]``, which stacks
    the input frames ``[stride * s, stride * s + stride)``; it is on word j when that range meets the
    word's frames ``spans[i][j]``, widened by ``margin`` frames each side. The count runs over the
    true words: a word whose step is missing (the transcript stopped early) counts as missed, a step
    past the last word is not counted (``sequence_accuracy`` penalises it).

    Args:
        attn_weights: list of N float tensors (k_i, S'_i) (``predict_sequences``); spans: the
            ``Utterances.spans``; stride: input frames per encoder frame (``model.stride``); margin: frames.

    Returns:
        a float in [0, 1].

    >>> attention_on_words([torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])], [[(1, 3), (8, 11)]])
    0.5
    """
    hits, total = 0, 0
    for w, words in zip(attn_weights, spans):
        total += len(words)
        for peak, (start, end) in zip(w.argmax(-1).tolist(), words):
            hits += stride * peak < end + margin and start - margin < stride * peak + stride
    return hits / total
