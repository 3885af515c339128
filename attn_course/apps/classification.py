"""Text classification with attention pooling: a bidirectional RNN reads a review, attention weighs its tokens.

The model (Yang et al. 2016, eqs. 5-7; Raffel & Ellis 2016, "feed-forward attention"): an embedding,
a bidirectional GRU or LSTM giving one state ``h_t`` per token, a score per token
``e_t = w . tanh(W h_t + b)``, attention weights ``a = softmax(e)`` over the real tokens of each
review, the context ``c = sum_t a_t h_t`` and a linear layer to the class logits. The weights ``a``
are what the lesson highlights over the text; :func:`erasure_experiment` tests how much they explain
(Jain & Wallace 2019; Wiegreffe & Pinter 2019).

The second half ports a popular Keras model as written, to measure its flaws:
:class:`KerasAttentionClassifier` (a bidirectional LSTM, Keras's unscaled dot-product ``Attention`` of
the sequence on itself, ``Flatten`` and one ``Dense`` unit), :func:`pad_to_length` (Keras's
``pad_sequences``) and :func:`train_keras_style` (``model.fit`` with ``validation_data``).

Shapes: B batch, S tokens of a review (padded), E embedding size, Hd hidden size of one RNN
direction (the context has 2 * Hd numbers), C classes.
"""
import collections

import torch
from torch import nn
from torch.nn import functional as F

from ..attention import attention_weights, weighted_sum
from ..data import Vocab, pad_batch, tokenize
from ..pooling import attention_pool
from ..training import fit, replayable, shuffled_batches


def attention_pooling(attn_scores, value, key_padding_mask=None):
    """Pool a padded batch of sequences into one vector each, with attention over the real tokens.

    ``attn_weights = softmax(attn_scores)`` over the positions of each sequence, padding excluded;
    ``context = sum_t attn_weights_t * value_t``. Padding positions get weight **exactly 0**, and
    the weights of each sequence sum to 1 over its real tokens, so the result does not change when
    more padding is appended.

    Args:
        attn_scores: float tensor (B, S), one score per position.
        value: float tensor (B, S, Dv) of the same dtype, one vector per position.
        key_padding_mask: None or a bool tensor (B, S), **True = padding** (as in
            ``torch.nn.MultiheadAttention``). A sequence with no real token gets zero weights and a
            zero context, as in PyTorch's scaled_dot_product_attention.

    Returns:
        (context, attn_weights): context (B, Dv) and attn_weights (B, S), in the dtype of the input.

    Raises:
        ValueError: shapes that do not match (B, S), (B, S, Dv), (B, S), or a mask that is not bool.

    References: Bahdanau et al. 2015, eqs. 5-6; Yang et al. 2016, eqs. 5-7. The (B, S) case of
    ``attn_course.pooling.attention_pool``, which it calls after checking the shapes; equal to
    ``F.scaled_dot_product_attention`` with one query (tests/test_classification.py).

    >>> attention_pooling(torch.zeros(1, 3), torch.tensor([[[1.0], [3.0], [100.0]]]),
    ...                   torch.tensor([[False, False, True]]))
    (tensor([[2.]]), tensor([[0.5000, 0.5000, 0.0000]]))
    """
    if attn_scores.dim() != 2 or value.dim() != 3 or value.shape[:2] != attn_scores.shape:
        raise ValueError(f"attn_scores must be (B, S) and value (B, S, Dv); got {tuple(attn_scores.shape)} "
                         f"and {tuple(value.shape)}")
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != attn_scores.shape:
            raise ValueError(f"key_padding_mask must be a bool tensor (B, S) = {tuple(attn_scores.shape)}; got "
                             f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
    return attention_pool(attn_scores, value, key_padding_mask)                  # (B, Dv), (B, S)


class AttentionLayer(nn.Module):
    """Additive attention pooling: ``e_t = w . tanh(W h_t + b)``, then :func:`attention_pooling`.

    The score of ``attn_course.pooling.AdditiveAttention`` without a query: the bias ``b`` stands in
    for ``W_q q``, and the learned ``w`` (Yang et al.'s context vector u_w) asks the same question of
    every review.

    Args:
        key_dim: the size of each state h_t; attn_dim: A, the width of the hidden layer W.

    Attributes:
        proj (``nn.Linear(key_dim, A)``): W (A, key_dim) and b; score (``nn.Linear(A, 1, bias=False)``):
        its weight (1, A) is w. pooling: ``attention_pooling`` or a replacement with its signature.

    Shape:
        hidden (B, S, key_dim), key_padding_mask (B, S) bool, **True = padding** ->
        context (B, key_dim), attn_weights (B, S).

    References: Yang et al. 2016, "Hierarchical Attention Networks for Document Classification",
    eqs. 5-7; Raffel & Ellis 2016, "Feed-Forward Networks with Attention Can Solve Some Long-Term
    Memory Problems".
    """

    def __init__(self, key_dim, attn_dim=64, pooling=attention_pooling):
        super().__init__()
        self.proj = nn.Linear(key_dim, attn_dim)                                 # W, b
        self.score = nn.Linear(attn_dim, 1, bias=False)                           # w (the "context vector" u_w)
        self.pooling = pooling

    def forward(self, hidden, key_padding_mask=None):
        attn_scores = self.score(torch.tanh(self.proj(hidden))).squeeze(-1)      # (B, S, key_dim) -> (B, S)
        return self.pooling(attn_scores, hidden, key_padding_mask)               # (B, key_dim), (B, S)


class RNNAttentionClassifier(nn.Module):
    """Embedding -> bidirectional GRU/LSTM -> attention (or mean) pooling -> linear layer to C logits.

    Args:
        vocab_size: V; id 0 is padding (its embedding stays zero).
        embed_dim: E; hidden_size: Hd per direction; num_classes: C.
        rnn: "gru" or "lstm"; pooling: "attention" or "mean".

    Forward:
        ids (B, S) int64, key_padding_mask (B, S) bool (**True = padding**; None: computed as
        ``ids == 0``) -> logits (B, C); with ``need_weights=True`` also attn_weights (B, S) (for
        mean pooling: 1 / length on every real token). Mean pooling sums the real tokens' states and
        divides by their number: the mean of ``attn_course.pooling.mean_pool``, which takes it as a
        weighted sum and so rounds differently in the last bit.

    Both RNN directions read the real tokens before any padding (the backward one reads each review
    reversed, padding still at the end), so padding never enters the states of real tokens: with a
    pooling that ignores padding, appending ``<pad>`` tokens leaves the logits unchanged. (This does
    what ``pack_padded_sequence`` does, about twice as fast on a CPU.)
    """

    def __init__(self, vocab_size, embed_dim=64, hidden_size=64, num_classes=2, rnn="gru",
                 pooling="attention", dropout=0.3):
        super().__init__()
        if rnn not in ("gru", "lstm") or pooling not in ("attention", "mean"):
            raise ValueError(f"rnn must be 'gru' or 'lstm' and pooling 'attention' or 'mean'; got {rnn!r}, {pooling!r}")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        cell = nn.GRU if rnn == "gru" else nn.LSTM
        self.rnn_forward = cell(embed_dim, hidden_size, batch_first=True)        # reads left to right
        self.rnn_backward = cell(embed_dim, hidden_size, batch_first=True)       # reads right to left
        self.pooling = pooling
        self.attention = AttentionLayer(2 * hidden_size) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden_size, num_classes)

    def encode(self, ids, key_padding_mask):
        """The RNN states (B, S, 2 Hd): forward and backward states side by side; zeros at padding."""
        x = self.dropout(self.embedding(ids))                                    # (B, S) -> (B, S, E)
        flip = reverse_index(key_padding_mask).unsqueeze(-1)                     # (B, S, 1)
        h_fwd, _ = self.rnn_forward(x)                                           # (B, S, E) -> (B, S, Hd)
        h_bwd, _ = self.rnn_backward(x.gather(1, flip.expand_as(x)))             # each review reversed, pads last
        h_bwd = h_bwd.gather(1, flip.expand_as(h_bwd))                           # back to reading order
        hidden = torch.cat([h_fwd, h_bwd], dim=-1)                               # (B, S, 2 Hd)
        return hidden.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)

    def forward(self, ids, key_padding_mask=None, need_weights=False):
        if key_padding_mask is None:
            key_padding_mask = ids == 0                                          # (B, S), True = padding
        hidden = self.encode(ids, key_padding_mask)                              # (B, S, 2 Hd)
        if self.attention is not None:
            context, attn_weights = self.attention(hidden, key_padding_mask)    # (B, 2 Hd), (B, S)
        else:                                                                    # the baseline: the mean of the tokens
            keep = (~key_padding_mask).to(hidden.dtype)                          # (B, S), 1 = real token
            n = keep.sum(dim=1, keepdim=True).clamp(min=1)                       # (B, 1), real tokens per review
            context = (hidden * keep.unsqueeze(-1)).sum(dim=1) / n               # (B, S, 2 Hd) -> (B, 2 Hd)
            attn_weights = keep / n                                              # (B, S), uniform over tokens
        logits = self.out(self.dropout(context))                                 # (B, 2 Hd) -> (B, C)
        return (logits, attn_weights) if need_weights else logits


def reverse_index(key_padding_mask):
    """Indices (B, S) that reverse each sequence's real tokens and leave its padding in place.

    ``x.gather(1, idx)`` maps ``[a, b, c, <pad>]`` to ``[c, b, a, <pad>]``; applying it twice is the identity.
    Assumes right padding (real tokens first), as ``attn_course.data.pad_batch`` makes.
    """
    B, S = key_padding_mask.shape
    lengths = (~key_padding_mask).sum(dim=1, keepdim=True)                       # (B, 1)
    pos = torch.arange(S, device=key_padding_mask.device).expand(B, S)          # (B, S)
    return torch.where(pos < lengths, lengths - 1 - pos, pos)                    # (B, S)


def build_vocab(texts, min_count=2):
    """A ``Vocab`` of the tokens seen at least ``min_count`` times in ``texts`` (most frequent first)."""
    counts = collections.Counter(tok for text in texts for tok in tokenize(text))
    kept = sorted((tok for tok, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
    return Vocab([kept])


def encode(texts, vocab):
    """Texts -> (ids (N, S) int64, key_padding_mask (N, S) bool, True = padding); S = longest text."""
    return pad_batch([vocab.encode(tokenize(text)) or [vocab.unk_id] for text in texts])


@torch.no_grad()
def predict(model, ids, key_padding_mask, batch_size=512):
    """Class probabilities (N, C) and attention weights (N, S) of a trained model, in eval mode, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    probs, weights = [], []
    for start in range(0, len(ids), batch_size):
        b_ids, b_mask = ids[start:start + batch_size], key_padding_mask[start:start + batch_size]
        S = int((~b_mask).sum(1).max())                                          # trim the batch's padding
        logits, w = model(b_ids[:, :S].to(device), b_mask[:, :S].to(device), need_weights=True)
        probs.append(logits.softmax(-1).cpu())
        weights.append(F.pad(w.cpu(), (0, ids.shape[1] - S)))
    return torch.cat(probs), torch.cat(weights)


def accuracy(model, ids, key_padding_mask, labels):
    """The fraction of correct predictions, a float."""
    probs, _ = predict(model, ids, key_padding_mask)
    return (probs.argmax(-1) == torch.as_tensor(labels)).float().mean().item()


def length_batches(lengths, batch_size, generator, pool=32):
    """Mini-batches of indices (a list of 1-D tensors) grouping reviews of similar length.

    Shuffle, cut into pools of ``pool`` batches, sort each pool by length, cut it into batches and
    shuffle the batches: each batch needs little padding, and the order stays random (and seeded).
    """
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for start in range(0, len(order), pool * batch_size):
        chunk = order[start:start + pool * batch_size]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]              # similar lengths together
        batches += list(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@replayable
def train_classifier(model, train, valid, epochs=4, batch_size=64, lr=3e-3, seed=0, progress=True):
    """Train with AdamW and cross-entropy; keep the weights of the epoch with the best validation accuracy.

    Args:
        model: a classifier whose forward is ``model(ids, key_padding_mask) -> logits``.
        train, valid: triples ``(ids (N, S), key_padding_mask (N, S), labels (N,))``.
        epochs, batch_size, lr: the optimiser's schedule; seed: the mini-batch order.
        progress: show a tqdm bar (``tqdm.auto``).

    Returns:
        a list of dicts, one per epoch: ``{"epoch", "train_loss", "valid_accuracy"}``.
    """
    device = next(model.parameters()).device
    ids, mask, labels = train
    labels = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    lengths = (~mask).sum(dim=1)                                                 # (N,) tokens per review

    def batch_loss(batch):
        S = int(lengths[batch].max())                                            # trim the batch's padding
        logits = model(ids[batch, :S].to(device), mask[batch, :S].to(device))   # (b, S) -> (b, C)
        return F.cross_entropy(logits, labels[batch].to(device))

    history = fit(model, lambda epoch: length_batches(lengths, batch_size, g), batch_loss, opt, epochs,
                  evaluate=lambda: accuracy(model, *valid), keep_best="max", progress=progress)
    return [{"epoch": epoch, "train_loss": loss, "valid_accuracy": acc}
            for epoch, (loss, acc) in enumerate(zip(history.epoch_loss, history.evaluations), start=1)]


def _delete_each(ids, length):
    """Every copy of ids[:length] with one token deleted: (length, length - 1)."""
    keep = ~torch.eye(length, dtype=torch.bool)                                  # row t drops token t
    return ids[:length].expand(length, length)[keep].view(length, length - 1)


@torch.no_grad()
def erasure_experiment(model, ids, key_padding_mask, seed=0, batch_size=1024):
    """Delete tokens one at a time and measure the change of the predicted class's probability.

    For each review with at least 2 tokens: the prediction ``p`` (probability of the class the model
    predicts), the model's attention weights, and ``p`` again after deleting each token in turn
    (leave-one-out). Then compare the token with the highest attention weight with a random other
    token (drawn with ``torch.Generator().manual_seed(seed)``).

    Args:
        model: an ``RNNAttentionClassifier``; ids (N, S), key_padding_mask (N, S) (**True = padding**).

    Returns:
        dict of 1-D tensors over the M reviews kept (M <= N): ``index`` (row in ``ids``), ``length``,
        ``drop_top`` and ``drop_random`` (p before minus p after deleting the top-weighted / a random
        token; positive = the model became less sure), ``flip_top`` / ``flip_random`` (bool: the
        predicted class changed), ``top_is_most_influential`` (bool: the top-weighted token is the one
        whose deletion moves p the most), and the lists ``attn_weights`` / ``influence`` (each review's
        weights and leave-one-out drops, length n each).
    """
    probs, weights = predict(model, ids, key_padding_mask)
    lengths = (~key_padding_mask).sum(1)
    index = (lengths >= 2).nonzero().squeeze(1)
    variants, owners = [], []
    for i in index.tolist():
        n = int(lengths[i])
        variants.append(_delete_each(ids[i], n))                                 # (n, n - 1)
        owners += [i] * n
    flat = [row for block in variants for row in block]
    from ..data import pad_batch
    erased_ids, erased_mask = pad_batch([row.tolist() for row in flat])
    erased_probs, _ = predict(model, erased_ids, erased_mask, batch_size=batch_size)
    g = torch.Generator().manual_seed(seed)
    out = {k: [] for k in ("drop_top", "drop_random", "flip_top", "flip_random", "top_is_most_influential",
                           "attn_weights", "influence")}
    start = 0
    for i in index.tolist():
        n = int(lengths[i])
        c = int(probs[i].argmax())
        after = erased_probs[start:start + n]                                    # (n, C)
        start += n
        influence = probs[i, c] - after[:, c]                                    # (n,) drop of p per deleted token
        w = weights[i, :n]
        top = int(w.argmax())
        other = int(torch.randint(0, n - 1, (1,), generator=g))
        rand = other + (other >= top)                                            # a random token other than top
        out["drop_top"].append(influence[top])
        out["drop_random"].append(influence[rand])
        out["flip_top"].append(bool(after[top].argmax() != c))
        out["flip_random"].append(bool(after[rand].argmax() != c))
        out["top_is_most_influential"].append(top == int(influence.abs().argmax()))
        out["attn_weights"].append(w)
        out["influence"].append(influence)
    result = {k: (v if k in ("attn_weights", "influence") else torch.tensor(v)) for k, v in out.items()}
    result["index"], result["length"] = index, lengths[index]
    return result


def rank_correlation(a, b):
    """Spearman's rank correlation of two 1-D tensors of equal length (ties broken by position)."""
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()).clamp(min=1e-12))


# ---------------------------------------------------------------- a Keras model ported as written

def pad_to_length(ids, key_padding_mask, maxlen, padding="post", truncating="pre"):
    """Pad or truncate every sequence to exactly ``maxlen`` ids, as Keras's ``pad_sequences`` does.

    The real tokens of each row (those where ``key_padding_mask`` is False, in order) are kept whole
    when there are at most ``maxlen`` of them; a longer row loses its first tokens
    (``truncating="pre"``, Keras's default: the end is kept) or its last ones (``"post"``). Padding
    (id 0) goes after the tokens (``padding="post"``, what the article sets) or before them
    (``"pre"``, Keras's default).

    Args:
        ids: int64 tensor (N, S), e.g. from :func:`encode`.
        key_padding_mask: bool tensor (N, S), **True = padding**.
        maxlen: the length of the result, a positive int.
        padding, truncating: "pre" or "post".

    Returns:
        (ids, key_padding_mask): (N, maxlen) int64 with 0 at padding, and (N, maxlen) bool, True = padding.

    Raises:
        ValueError: ``maxlen`` not a positive int, ``padding`` or ``truncating`` not "pre" or "post",
            ``ids`` not 2-D, or a mask that is not bool of the shape of ``ids``.

    References: ``keras.utils.pad_sequences(sequences, maxlen, padding="pre", truncating="pre", value=0)``;
    the same ids for the same arguments (tests/test_classification.py, with the examples of its documentation).

    >>> ids, mask = pad_batch([[1], [2, 3], [4, 5, 6]])
    >>> pad_to_length(ids, mask, maxlen=2, padding="pre")[0]
    tensor([[0, 1],
            [2, 3],
            [5, 6]])
    """
    if padding not in ("pre", "post") or truncating not in ("pre", "post"):
        raise ValueError(f"padding and truncating must be 'pre' or 'post'; got {padding!r}, {truncating!r}")
    if not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1:
        raise ValueError(f"maxlen must be a positive int; got {maxlen!r}")
    if ids.dim() != 2 or key_padding_mask.dtype != torch.bool or key_padding_mask.shape != ids.shape:
        raise ValueError(f"ids must be (N, S) and key_padding_mask a bool tensor of the same shape; got ids "
                         f"{tuple(ids.shape)}, key_padding_mask {key_padding_mask.dtype} "
                         f"{tuple(key_padding_mask.shape)}")
    N, S = ids.shape
    order = torch.argsort(key_padding_mask.to(torch.uint8), dim=1, stable=True)  # (N, S): real tokens first, in order
    tokens = F.pad(ids.gather(1, order), (0, 1))                                 # (N, S + 1), a spare column for S = 0
    lengths = (~key_padding_mask).sum(dim=1, keepdim=True)                       # (N, 1) real tokens
    kept = lengths.clamp(max=maxlen)                                             # (N, 1) tokens that fit
    first = lengths - kept if truncating == "pre" else torch.zeros_like(kept)    # (N, 1) the first token kept
    start = maxlen - kept if padding == "pre" else torch.zeros_like(kept)        # (N, 1) where it goes
    pos = torch.arange(maxlen, device=ids.device).expand(N, maxlen)              # (N, maxlen)
    new_mask = (pos < start) | (pos >= start + kept)                             # (N, maxlen), True = padding
    source = (first + pos - start).clamp(0, S)                                   # (N, maxlen), index into tokens
    return tokens.gather(1, source).masked_fill(new_mask, 0), new_mask


class KerasAttentionClassifier(nn.Module):
    """A popular Keras model for sentiment, ported as written: Embedding -> BiLSTM -> Attention -> Flatten -> Dense.

    ``attn_weights = softmax(h h^T)`` over the keys, **no scaling** (Keras's ``Attention()``, Luong's
    "dot" score), ``context = attn_weights h``, the (S, 2 Hd) contexts flattened into one vector of
    ``maxlen * 2 * Hd`` numbers and one linear layer to a logit (the Keras model's ``Dense(1, "sigmoid")``
    without its sigmoid: train with ``F.binary_cross_entropy_with_logits``).

    As written (``use_mask=False``) the model receives no mask: padding positions are queries and keys
    of the attention, and the LSTM reads them (after post-padding, the backward direction reads all of
    them before the first real token). With ``use_mask=True`` it does what ``Embedding(mask_zero=True)``
    does in Keras: each LSTM direction reads the real tokens only, as with packed sequences (padding
    never enters a real token's state), the attention gives padded keys weight **exactly 0**, and padded
    queries get rows of zero weights, so their contexts are 0 before Flatten. Flatten stays in both: the
    Dense weights of position j only ever see position j, and the model takes exactly ``maxlen`` ids.

    Args:
        vocab_size: V (id 0 is padding, but its embedding is trained like any other: Keras's
            ``Embedding`` has no padding row). maxlen: the one sequence length the model takes.
        embed_dim: E (the article: 128); hidden_size: Hd per LSTM direction (the article: 64).
        use_mask: False as written; True to ignore padding.

    Forward:
        ids (B, maxlen) int64, key_padding_mask (B, maxlen) bool, **True = padding** (ignored unless
        ``use_mask``; None: ``ids == 0``) -> logits (B,); with ``need_weights=True`` also attn_weights
        (B, maxlen, maxlen), each query row summing to 1 over the keys (0 on padded rows with the mask).
        With ``use_mask=True`` the padding must come after the tokens (``pad_to_length(padding="post")``).

    Raises:
        ValueError: ids not of length ``maxlen`` (Flatten ties the Dense layer to it); with ``use_mask``,
            a mask that is not bool (B, maxlen) or not post-padding.

    References: Luong, Pham & Manning 2015, eq. 8 ("dot"); ``keras.layers.Attention(use_scale=False)``,
    ``keras.layers.Bidirectional(LSTM(64, return_sequences=True))``, ``keras.layers.Flatten``. The two
    LSTMs equal ``nn.LSTM(bidirectional=True)`` as written, and the same on packed sequences with the
    mask (tests/test_classification.py).
    """

    def __init__(self, vocab_size, maxlen, embed_dim=128, hidden_size=64, use_mask=False):
        super().__init__()
        self.maxlen, self.use_mask = maxlen, use_mask
        self.embedding = nn.Embedding(vocab_size, embed_dim)                     # no padding_idx, as in Keras
        self.lstm_forward = nn.LSTM(embed_dim, hidden_size, batch_first=True)    # Bidirectional(LSTM(Hd)):
        self.lstm_backward = nn.LSTM(embed_dim, hidden_size, batch_first=True)   # one LSTM per direction
        self.out = nn.Linear(maxlen * 2 * hidden_size, 1)                        # Dense(1) after Flatten

    def encode(self, ids, key_padding_mask):
        """The LSTM states (B, S, 2 Hd), forward and backward side by side.

        As written the backward LSTM reads each row from its last position, padding first; with
        ``use_mask`` it reads the real tokens reversed (``reverse_index``), padding last, and the states
        at padding are 0: ``pack_padded_sequence`` gives the same states, about twice as slowly on a CPU.
        """
        B, S = ids.shape
        x = self.embedding(ids)                                                  # (B, S) -> (B, S, E)
        if self.use_mask:
            flip = reverse_index(key_padding_mask)                               # (B, S): [c, b, a, pad]
        else:
            flip = torch.arange(S - 1, -1, -1, device=ids.device).expand(B, S)   # (B, S): [pad, c, b, a]
        flip = flip.unsqueeze(-1)                                                # (B, S, 1)
        h_fwd, _ = self.lstm_forward(x)                                          # (B, S, E) -> (B, S, Hd)
        h_bwd, _ = self.lstm_backward(x.gather(1, flip.expand_as(x)))            # (B, S, Hd), read right to left
        hidden = torch.cat([h_fwd, h_bwd.gather(1, flip.expand_as(h_bwd))], -1)  # (B, S, 2 Hd), reading order
        return hidden.masked_fill(key_padding_mask.unsqueeze(-1), 0.0) if self.use_mask else hidden

    def forward(self, ids, key_padding_mask=None, need_weights=False):
        B, S = ids.shape
        if S != self.maxlen:
            raise ValueError(f"the Flatten layer ties this model to maxlen = {self.maxlen} tokens; got {S}: "
                             f"truncate or pad to {self.maxlen} (pad_to_length)")
        attn_mask = None                                                         # as written: padding is a key
        if self.use_mask:
            key_padding_mask = ids == 0 if key_padding_mask is None else key_padding_mask
            self._check_post_padding(key_padding_mask)
            attn_mask = ~key_padding_mask.unsqueeze(1)                           # (B, 1, S), True = may attend
        hidden = self.encode(ids, key_padding_mask)                              # (B, S, 2 Hd)
        attn_weights = attention_weights(hidden, hidden, attn_mask, scale=1.0)   # (B, S, S) = softmax(h h^T)
        if self.use_mask:
            attn_weights = attn_weights.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)  # padded queries: rows of 0
        context = weighted_sum(attn_weights, hidden)                             # (B, S, 2 Hd)
        logits = self.out(context.flatten(1)).squeeze(-1)                        # (B, S * 2 Hd) -> (B, 1) -> (B,)
        return (logits, attn_weights) if need_weights else logits

    def _check_post_padding(self, key_padding_mask):
        """Raise ValueError unless the mask is bool (B, maxlen) with every row's padding after its tokens."""
        if key_padding_mask.dtype != torch.bool or key_padding_mask.shape[1:] != (self.maxlen,):
            raise ValueError(f"key_padding_mask must be a bool tensor (B, {self.maxlen}), True = padding; got "
                             f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
        lengths = (~key_padding_mask).sum(dim=1, keepdim=True)                   # (B, 1)
        pos = torch.arange(self.maxlen, device=key_padding_mask.device)
        if not torch.equal(key_padding_mask, pos >= lengths):
            raise ValueError("use_mask=True needs the padding after the tokens (pad_to_length(..., padding='post')); "
                             "got a key_padding_mask with padding before or between tokens")


@torch.no_grad()
def accuracy_binary(model, ids, key_padding_mask, labels, batch_size=512):
    """The fraction of reviews whose logit has the sign of its label (label 1 <=> logit > 0), a float.

    Args:
        model: ``model(ids, key_padding_mask) -> logits (B,)``, e.g. a ``KerasAttentionClassifier``;
            put in eval mode. ids (N, S) int64, key_padding_mask (N, S) bool, labels (N,) of 0 and 1.
    """
    model.eval()
    device = next(model.parameters()).device
    labels = torch.as_tensor(labels)
    correct = 0
    for start in range(0, len(ids), batch_size):
        end = start + batch_size
        logits = model(ids[start:end].to(device), key_padding_mask[start:end].to(device)).cpu()  # (b,)
        correct += int(((logits > 0).long() == labels[start:end]).sum())
    return correct / len(ids)


@replayable
def train_keras_style(model, train, monitor, epochs, batch_size=32, lr=1e-3, seed=0, also=None, progress=True):
    """Train a binary classifier as ``model.fit(..., validation_data=monitor)`` does, and keep its best epoch.

    Adam (Keras's defaults: lr 1e-3, epsilon 1e-7; PyTorch's fused kernel on a CPU or a GPU, faster on
    the embedding table) on ``F.binary_cross_entropy_with_logits``, a new shuffle every epoch
    (``attn_course.training.shuffled_batches``), the accuracy on ``monitor`` after each epoch, and the
    weights of the epoch where it was highest (the first on ties): what a Keras user gets with
    ``ModelCheckpoint(save_best_only=True)`` or by choosing the number of epochs from the log. That
    number is a selected maximum: it is an honest estimate only on data the choice did not look at.

    Args:
        model: ``model(ids, key_padding_mask) -> logits (B,)``.
        train, monitor: triples ``(ids (N, S), key_padding_mask (N, S), labels (N,) of 0 and 1)``;
            ``monitor`` is what the caller passes as Keras's ``validation_data``.
        epochs, batch_size, lr: the schedule; seed: the shuffles (same seed and model, same history).
        also: None or a dict ``name -> triple`` evaluated after each epoch and recorded, never used to choose.
        progress: show a tqdm bar (``tqdm.auto``).

    Returns:
        a list of dicts, one per epoch: ``{"epoch", "train_loss", "val_accuracy"}`` (Keras's name for
        the accuracy on ``monitor``) and ``f"{name}_accuracy"`` for each split of ``also``.
    """
    device = next(model.parameters()).device
    ids, mask, labels = train
    labels = torch.as_tensor(labels, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7, fused=device.type in ("cpu", "cuda"))
    also = also or {}
    extra = []

    def batch_loss(batch):
        logits = model(ids[batch].to(device), mask[batch].to(device))           # (b, S) -> (b,)
        return F.binary_cross_entropy_with_logits(logits, labels[batch].to(device))

    def evaluate():
        extra.append({f"{name}_accuracy": accuracy_binary(model, *split) for name, split in also.items()})
        return accuracy_binary(model, *monitor)

    history = fit(model, shuffled_batches(len(ids), batch_size, seed), batch_loss, opt, epochs,
                  evaluate=evaluate, keep_best="max", progress=progress)
    return [{"epoch": epoch, "train_loss": loss, "val_accuracy": acc, **more}
            for epoch, (loss, acc, more) in enumerate(zip(history.epoch_loss, history.evaluations, extra), start=1)]
