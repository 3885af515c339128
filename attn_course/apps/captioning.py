"""Image captioning with soft attention (Show, Attend and Tell, in small): strips of digits -> words.

An encoder (a small CNN) turns a strip of handwritten digits (B, 1, 8, 8 * N) into S = 4 * (2N)
feature vectors (B, S, C), each with a learned position embedding added. A GRU decoder writes the
caption one word at a time; before each word it looks at the image with **additive soft attention**
(Xu et al. 2015, eqs. 4-6, 9-10; Bahdanau et al. 2015, eq. 6):

    attn_scores_s = v . tanh(W_query h_{t-1} + W_key f_s),  attn_weights = softmax over s,
    context z_t = sum_s attn_weights_s f_s,  h_t = GRU([embed(y_{t-1}); z_t], h_{t-1}),
    p(y_t) = softmax(W_out [h_t; z_t]).

Two decoders without attention, so the lesson can measure what attention adds:
``attention=False`` (``context="mean"``) gets the plain average of the features at every step. The
average is blind to order: a sum over positions forgets which digit stood where (the position
embedding adds the same constant to every image). ``context="flatten"`` gets one linear map of
the *flattened* feature map instead, all S positions concatenated, so "which digit where" survives:
the image enters once, as in "Show and Tell" (Vinyals et al. 2015), and is kept as a fixed context at
every step. It is the fair baseline: the same encoder and decoder, positions kept, only the per-word
look at the image taken away.

Captions may vary in length: ``targets`` ends each with ``<eos>`` and pads with ``PAD`` (-1), the
loss ignores the padding, and ``generate(..., stop_at_eos=True)`` stops a caption at its ``<eos>``.
``caption_accuracy`` scores such captions, ``attention_in_box`` checks that word t looks at digit t,
``left_to_right_schedule`` is the control that ignores the image, ``per_box_reference`` the upper
reference that is told where the digits are.

Shapes: B batch, S image positions (keys), C feature channels, Hd decoder state, A the width of the
scoring layer (``attn_dim``), T caption length (words + <eos>), V vocabulary.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..data.images import DIGIT_WORDS
from ..pooling import attention_pool
from ..scoring import additive_scores
from ..training import eos_targets, fit, replayable, shuffled_batches

WORDS = DIGIT_WORDS + ["<eos>", "<bos>"]     # ids 0..9 are the digits, 10 = <eos>, 11 = <bos>
EOS, BOS = 10, 11
PAD = -1                                     # padding of labels, targets and generated words; the loss ignores it


def soft_attention(query, features, w_query, w_key, v):
    """One step of additive soft attention: a decoder state looks at every image position.

    ``attn_scores[b, s] = v . tanh(W_query query[b] + W_key features[b, s])`` (lesson 02's additive
    score, ``attn_course.scoring.additive_scores``),
    ``attn_weights = softmax(attn_scores)`` over the S **positions** (dim=-1),
    ``context[b] = sum_s attn_weights[b, s] * features[b, s]``.

    Args:
        query: float tensor (B, Hd), the decoder's previous state h_{t-1}.
        features: float tensor (B, S, C), the encoder's feature vectors (keys and values).
        w_query: (A, Hd); w_key: (A, C); v: (A,), A the width of the scoring layer (``attn_dim``), laid out
            as ``nn.Linear.weight`` (``query @ w_query.T``). Same dtype as the inputs.

    Returns:
        (context, attn_weights): context (B, C); attn_weights (B, S), each row summing to 1.

    Raises:
        ValueError: shapes that do not fit together.

    References: Xu et al. 2015, *Show, Attend and Tell*, eqs. 4-6 (f_att is this one-layer MLP);
    Bahdanau et al. 2015, eq. 6 and appendix A.1.2. ``scoring.additive_scores`` with one query, then
    ``pooling.attention_pool`` with the features as values: ``pooling.AdditiveAttention`` with the
    weights passed in.

    >>> context, w = soft_attention(torch.zeros(1, 2), torch.eye(3)[None], torch.ones(4, 2), torch.ones(4, 3),
    ...                             torch.ones(4))
    >>> w
    tensor([[0.3333, 0.3333, 0.3333]])
    """
    if query.dim() != 2 or features.dim() != 3 or query.shape[0] != features.shape[0]:
        raise ValueError(f"query must be (B, Hd) and features (B, S, C); got {tuple(query.shape)} and "
                         f"{tuple(features.shape)}")
    A = v.shape[0] if v.dim() == 1 else -1
    if tuple(w_query.shape) != (A, query.shape[1]) or tuple(w_key.shape) != (A, features.shape[2]):
        raise ValueError(f"expected w_query (A, Hd={query.shape[1]}), w_key (A, C={features.shape[2]}), v (A,); "
                         f"got {tuple(w_query.shape)}, {tuple(w_key.shape)}, {tuple(v.shape)}")
    attn_scores = additive_scores(query.unsqueeze(1), features, w_query, w_key, v).squeeze(1)  # (B, 1, S) -> (B, S)
    return attention_pool(attn_scores, features)                                 # (B, C), (B, S): softmax over S


class Encoder(nn.Module):
    """(B, 1, 8, W) strips -> (B, S, C) features, S = 4 * W/2, plus a learned embedding per position.

    ``grid = (4, W/2)``; position s is row ``s // (W/2)``, column ``c = s % (W/2)``. Feature column c is
    the 2x2 max-pool of pixel columns ``2c, 2c + 1`` (its receptive field is wider: pixels
    ``2c - 4 .. 2c + 5``). Any even W works; the position embedding has one vector per grid cell.
    """

    def __init__(self, width=24, channels=32):
        super().__init__()
        if not isinstance(width, int) or width < 2 or width % 2:
            raise ValueError(f"width must be an even int >= 2 (one 2x2 max-pool); got {width!r}")
        conv = lambda c_in, c_out: [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.cnn = nn.Sequential(*conv(1, 16), *conv(16, channels), nn.MaxPool2d(2), *conv(channels, channels))
        self.grid = (4, width // 2)
        self.position = nn.Parameter(torch.zeros(channels, *self.grid))     # (C, 4, W/2)
        nn.init.normal_(self.position, std=0.1)

    def forward(self, images):
        features = self.cnn(images) + self.position                         # (B, 1, 8, W) -> (B, C, 4, W/2)
        return features.flatten(2).transpose(1, 2)                          # (B, C, 4, W/2) -> (B, S, C), s = h*W' + w


class CaptionDecoder(nn.Module):
    """A GRU that writes the caption word by word, attending over the image before each word.

    ``forward(images (B, 1, 8, W), captions (B, T))`` (teacher forcing) returns
    ``(logits (B, T, V), attn_weights (B, T, S))``; :meth:`generate` decodes greedily.
    ``attention=False`` replaces the attention context by a context fixed for the whole caption:
    ``context="mean"`` the mean of the features (attn_weights uniform, 1/S), ``context="flatten"`` a
    linear map of all S feature vectors concatenated, ``(B, S*C) -> (B, C)`` (attn_weights all 0: no map).
    The initial state is ``tanh(init_h(.))`` of the mean, or of that flattened context.
    """

    def __init__(self, width=24, channels=32, hidden=64, attn_dim=32, embed=16, attention=True, context="mean"):
        super().__init__()
        if context not in ("mean", "flatten"):
            raise ValueError(f"context must be 'mean' or 'flatten'; got {context!r}")
        self.attention, self.encoder = attention, Encoder(width, channels)
        self.context = "attention" if attention else context
        self.embed = nn.Embedding(len(WORDS), embed)
        self.init_h = nn.Linear(channels, hidden)
        self.w_query = nn.Parameter(torch.randn(attn_dim, hidden) / math.sqrt(hidden))      # (A, Hd)
        self.w_key = nn.Parameter(torch.randn(attn_dim, channels) / math.sqrt(channels))    # (A, C)
        self.v = nn.Parameter(torch.randn(attn_dim) / math.sqrt(attn_dim))                 # (A,)
        self.gru = nn.GRUCell(embed + channels, hidden)
        self.out = nn.Linear(hidden + channels, len(WORDS))
        if self.context == "flatten":
            S = self.encoder.grid[0] * self.encoder.grid[1]
            self.flatten_proj = nn.Linear(S * channels, channels)           # (S*C) -> C, position-aware

    def _start(self, features):
        """(h_0 (B, Hd), the fixed context (B, C), or None with attention) from features (B, S, C)."""
        if self.context == "flatten":
            fixed = self.flatten_proj(features.flatten(1))                  # (B, S, C) -> (B, S*C) -> (B, C)
            return torch.tanh(self.init_h(fixed)), fixed
        mean = features.mean(1)                                             # (B, S, C) -> (B, C)
        return torch.tanh(self.init_h(mean)), (None if self.attention else mean)

    def _step(self, word, h, features, fixed=None):
        if self.attention:
            context, attn_weights = soft_attention(h, features, self.w_query, self.w_key, self.v)
        else:
            context = fixed                                                 # (B, C), the same at every step
            weight = 1.0 / features.shape[1] if self.context == "mean" else 0.0
            attn_weights = features.new_full(features.shape[:2], weight)    # (B, S): uniform, or no map
        h = self.gru(torch.cat([self.embed(word), context], -1), h)         # (B, E + C) -> (B, Hd)
        return self.out(torch.cat([h, context], -1)), h, attn_weights       # (B, V), (B, Hd), (B, S)

    def forward(self, images, captions):
        features = self.encoder(images)                                     # (B, S, C)
        h, fixed = self._start(features)                                    # (B, Hd), (B, C) or None
        word = torch.full_like(captions[:, 0], BOS)
        logits, weights = [], []
        for t in range(captions.shape[1]):
            step_logits, h, attn_weights = self._step(word, h, features, fixed)
            logits.append(step_logits)
            weights.append(attn_weights)
            word = captions[:, t].masked_fill(captions[:, t] == PAD, EOS)   # teacher forcing; after <eos>, ignored
        return torch.stack(logits, 1), torch.stack(weights, 1)              # (B, T, V), (B, T, S)

    def start(self, images):
        """Encode the images once: the decoding state ``(h_0 (B, Hd), features (B, S, C), fixed context or None)``."""
        features = self.encoder(images)                                     # (B, S, C)
        h, fixed = self._start(features)
        return h, features, fixed

    def step(self, word, state):
        """One decoder step: ``word`` (B,) int64 ids, ``state`` from :meth:`start` or the step before ->
        ``(logits (B, V), the next state, attn_weights (B, S))``. The ``step`` of :func:`greedy_decode`."""
        h, features, fixed = state
        logits, h, attn_weights = self._step(word, h, features, fixed)
        return logits, (h, features, fixed), attn_weights

    @torch.no_grad()
    def generate(self, images, max_len=4, stop_at_eos=False):
        """Greedy decoding: (word ids (B, max_len), attn_weights (B, max_len, S)).

        ``stop_at_eos=False`` writes max_len words whatever they are. ``stop_at_eos=True`` ends each
        caption at its first ``<eos>`` (:func:`greedy_decode`): the words after it are ``PAD`` and their
        attn_weights 0, and the loop stops once every caption has ended.
        """
        self.eval()
        return greedy_decode(self.step, self.start(images), len(images), max_len, images.device,
                             stop_at_eos=stop_at_eos)


def greedy_decode(step, state, batch_size, max_len, device="cpu", stop_at_eos=True):
    """Write captions one word at a time, each word the argmax of the step before's output.

    Word 0 is chosen after feeding ``<bos>``; each chosen word is fed back as the next input, and the
    state returned by one step goes into the next. A caption ends at its first ``<eos>``, which is
    written: the positions after it hold ``PAD`` and attn_weights 0. The loop stops once every caption
    has ended, or after ``max_len`` words (Xu et al. 2015, sec. 4.2, with a beam of one).

    Args:
        step: ``step(word (B,) int64, state) -> (logits (B, V), next state, attn_weights (B, S))``, e.g.
            ``CaptionDecoder.step``. ``state`` is passed through untouched: any object.
        state: the first state (``CaptionDecoder.start(images)``).
        batch_size: B. max_len: int >= 1, the most words per caption, ``<eos>`` included.
        device: where the word ids live (the model's device).
        stop_at_eos: False writes max_len argmax words whatever they are (no ``PAD``).

    Returns:
        ``(words (B, max_len) int64, attn_weights (B, max_len, S))``.

    Raises:
        ValueError: ``max_len`` < 1 or ``batch_size`` < 1.
    """
    if max_len < 1 or batch_size < 1:
        raise ValueError(f"need max_len >= 1 and batch_size >= 1; got max_len={max_len}, batch_size={batch_size}")
    word = torch.full((batch_size,), BOS, dtype=torch.long, device=device)
    running = torch.ones(batch_size, dtype=torch.bool, device=device)     # not yet ended
    words, weights = [], []
    for _ in range(max_len):
        logits, state, attn_weights = step(word, state)                    # (B, V), state, (B, S)
        word = logits.argmax(-1)                                            # (B,) fed back next step
        if stop_at_eos:
            words.append(word.masked_fill(~running, PAD))                   # the <eos> itself is written
            weights.append(attn_weights * running[:, None])
            running = running & (word != EOS)
            if not running.any():
                break
        else:
            words.append(word)
            weights.append(attn_weights)
    pad = max_len - len(words)
    words, weights = torch.stack(words, 1), torch.stack(weights, 1)        # (B, T), (B, T, S), T <= max_len
    return F.pad(words, (0, pad), value=PAD), F.pad(weights, (0, 0, 0, pad))


def targets(labels):
    """Digit labels (B, N) -> caption ids (B, N + 1): the digits' words, then <eos>, then ``PAD``.

    Labels may be padded with ``PAD`` after the k-th digit (as ``images.digit_canvases`` gives them);
    ``<eos>`` then follows the k-th word.

    >>> targets(torch.tensor([[3, 1, 4], [2, 7, PAD]]))
    tensor([[ 3,  1,  4, 10],
            [ 2,  7, 10, -1]])
    """
    return eos_targets(labels, EOS, PAD)                                    # (B, N) -> (B, N + 1)


@replayable
def train_captioner(model, images, labels, epochs=6, batch_size=64, lr=5e-3, seed=0, progress=True):
    """Teacher forcing, cross-entropy over every word up to <eos> (``PAD`` ignored), Adam with a one-cycle
    schedule (Smith & Topin 2017), mini-batches shuffled each epoch by ``torch.Generator().manual_seed(seed)``;
    a tqdm bar. Each batch is cut after its longest caption's ``<eos>``.

    Returns the loss per step (list of float).
    """
    device = next(model.parameters()).device
    captions = targets(labels)                                              # (N, K + 1), PAD after <eos>
    steps = epochs * math.ceil(len(labels) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)

    def batch_loss(batch):
        batch_captions = captions[batch]
        T = int((batch_captions != PAD).sum(1).max())                       # stop at the batch's last <eos>
        batch_captions = batch_captions[:, :T].to(device)                   # (b, T)
        logits, _ = model(images[batch].to(device), batch_captions)         # (b, T, V)
        return F.cross_entropy(logits.flatten(0, 1), batch_captions.flatten(), ignore_index=PAD)

    desc = "training (" + ("attention" if model.attention else f"no attention, {model.context}") + ")"
    return fit(model, shuffled_batches(len(labels), batch_size, seed), batch_loss, opt, epochs, scheduler=schedule,
               desc=desc, progress=progress).step_loss


def caption_lengths(words):
    """Word ids (B, T) -> the number of words before the first ``<eos>`` or ``PAD`` (T where there is none),
    (B,) int64."""
    ended = (words == EOS) | (words == PAD)                                  # (B, T)
    T = words.shape[1]
    return torch.where(ended.any(1), ended.int().argmax(1), torch.full_like(words[:, 0], T))


def caption_accuracy(predicted, labels):
    """Scores of captions of varying length: (word accuracy, exact caption accuracy).

    With k the true number of digits and k_hat the number of words ``predicted`` writes before its
    first ``<eos>``, position t (t < max(k, k_hat)) is right when both captions have a word there and
    the words agree. **Word accuracy** = right positions / sum of max(k, k_hat): a missing word and an
    extra word each count as one wrong position (position-wise, not an alignment: a word left out
    early shifts every later word). **Exact accuracy** = share of captions with k_hat = k and every
    word right, i.e. the whole caption, ``<eos>`` included. A caption with no ``<eos>`` ends after
    its T words.

    Args:
        predicted: int64 (B, T) word ids, e.g. from ``generate`` (``PAD`` after the end is ignored).
        labels: int64 (B, K) the true digits, ``PAD`` after the k-th.

    Returns:
        (word_accuracy, exact_accuracy): two floats in [0, 1].

    >>> caption_accuracy(torch.tensor([[3, 1, EOS], [2, EOS, PAD]]), torch.tensor([[3, 1], [2, 7]]))
    (0.75, 0.5)
    """
    predicted, labels = predicted.cpu(), labels.cpu()
    k, k_hat = (labels != PAD).sum(1), caption_lengths(predicted)           # (B,), (B,)
    M = max(predicted.shape[1], labels.shape[1])
    pad = lambda x: F.pad(x, (0, M - x.shape[1]), value=PAD)                # (B, *) -> (B, M)
    t = torch.arange(M)
    right = (pad(predicted) == pad(labels)) & (t < k[:, None]) & (t < k_hat[:, None])   # (B, M)
    word_accuracy = right.sum().item() / torch.maximum(k, k_hat).sum().item()
    exact = (k_hat == k) & (right.sum(1) == k)
    return word_accuracy, exact.float().mean().item()


def column_centres(grid, width):
    """Pixel coordinate of the centre of each feature column: ``(c + 0.5) * width / cols``, (cols,) float.

    Pixel column x spans [x, x + 1); with the ``Encoder``'s 2x2 pool (width = 2 * cols) feature
    column c covers pixels 2c and 2c + 1 and is centred at 2c + 1. Any 8-pixel box
    ``[x_start, x_start + 8)`` then holds exactly 4 centres, whatever the parity of x_start.
    """
    cols = grid[1]
    return (torch.arange(cols) + 0.5) * (width / cols)


def attention_in_box(attn_weights, boxes, lengths, grid, width=None):
    """Does word t's attention peak over digit t? The fraction of words, and per word.

    For each caption b and word t < lengths[b]: the peak is ``argmax_s attn_weights[b, t]``, its
    feature column ``c = s % cols`` (positions row-major, s = row * cols + c), and the peak is in the
    box when the column's centre (:func:`column_centres`) lies in ``[x_start, x_end)`` of digit t.
    A word whose attention row is all zero (a generated caption that ended early, or a decoder with
    no map) counts as not in the box.

    Args:
        attn_weights: float (B, T, S), S = rows * cols, T >= max(lengths).
        boxes: int64 (B, K, 2), ``[x_start, x_end)`` pixel columns of each digit (``digit_canvases``).
        lengths: int64 (B,), the number of digits k.
        grid: (rows, cols) of the feature map, e.g. ``model.encoder.grid``.
        width: the image width in pixels; None = 2 * cols (the ``Encoder``'s one 2x2 max-pool).

    Returns:
        (fraction, in_box): a float, the share of the sum(lengths) words whose peak is in their digit's
        box; in_box (B, K) bool, False after the k-th word.

    Raises:
        ValueError: S != rows * cols or T < max(lengths).

    >>> attn = torch.zeros(1, 2, 1, 4); attn[0, 0, 0, 0] = attn[0, 1, 0, 2] = 1.0   # cols 0 and 2
    >>> attention_in_box(attn.flatten(2), torch.tensor([[[0, 2], [2, 4]]]), torch.tensor([2]), (1, 4))
    (0.5, tensor([[ True, False]]))
    """
    rows, cols = grid
    B, T, S = attn_weights.shape
    lengths = lengths.cpu()
    if S != rows * cols or T < int(lengths.max()):
        raise ValueError(f"attn_weights must be (B, T >= max(lengths) = {int(lengths.max())}, S = rows * cols = "
                         f"{rows * cols}); got {tuple(attn_weights.shape)}")
    K = boxes.shape[1]
    attn_weights = F.pad(attn_weights.cpu(), (0, 0, 0, max(K - T, 0)))[:, :K]   # (B, K, S)
    centre = column_centres(grid, 2 * cols if width is None else width)[attn_weights.argmax(-1) % cols]  # (B, K)
    boxes = boxes.cpu()
    in_box = (boxes[..., 0] <= centre) & (centre < boxes[..., 1])           # (B, K)
    in_box &= (attn_weights.sum(-1) > 0) & (torch.arange(K) < lengths[:, None])
    return in_box.sum().item() / lengths.sum().item(), in_box


def best_fixed_columns(boxes, lengths, grid, width=None):
    """The best schedule that never looks at the image: for each caption length k and word t, the
    feature column whose centre falls inside digit t's box most often over the given (training) boxes.

    Args: boxes int64 (B, K, 2) and lengths (B,) as from ``images.digit_canvases``; grid (rows, cols) of
    the feature map; width the image width in pixels (None = 2 * cols).

    Returns: int64 (K + 1, K); row k holds the columns of words 0..k-1 of a k-digit caption (0 elsewhere).
    """
    boxes, lengths = boxes.cpu(), lengths.cpu()
    K, cols = boxes.shape[1], grid[1]
    centre = column_centres(grid, 2 * cols if width is None else width)     # (cols,)
    hits = (boxes[..., :1] <= centre) & (centre < boxes[..., 1:])           # (B, K, 1) vs (cols,) -> (B, K, cols)
    table = torch.zeros(K + 1, K, dtype=torch.long)
    for k in lengths.unique().tolist():
        table[k, :k] = hits[lengths == k, :k].sum(0).argmax(-1)             # (k, cols) counts -> (k,)
    return table


def left_to_right_schedule(lengths, grid, columns=None):
    """A control that ignores the image: word t of a k-word caption looks at a fixed column.

    With ``columns=None``, the column containing pixel ``(t + 0.5) * W / k`` of a W-pixel strip (the k
    words spread evenly over it); otherwise ``columns[k, t]``, e.g. from :func:`best_fixed_columns`. It is
    told k, which a captioner must read from the image. The map spreads its weight evenly over that
    column's rows.

    Returns: attn_weights (B, K, S) float, K = max(lengths), S = rows * cols; zero after the k-th word.
    """
    rows, cols = grid
    lengths = lengths.cpu()
    K = int(lengths.max())
    t = torch.arange(K)
    if columns is None:                                                     # pixel (t + 0.5) W / k -> its column
        column = ((t + 0.5) * cols / lengths[:, None]).long().clamp(max=cols - 1)   # (B, K)
    else:
        column = columns[lengths][:, :K]                                    # (B, K)
    real = t < lengths[:, None]                                             # (B, K)
    attn = F.one_hot(column, cols).float() * real[..., None] / rows         # (B, K, cols)
    return attn.unsqueeze(2).expand(-1, -1, rows, -1).reshape(len(lengths), K, rows * cols)   # (B, K, S)


@torch.no_grad()
def per_box_reference(classify, images, boxes, lengths):
    """An upper reference that is *told* where the digits are: crop each true box, classify the crop.

    Args:
        classify: any digit classifier, ``classify(crops (N, 1, 8, w) float) -> predicted digits (N,)``
            int64, e.g. lesson 11's CNN wrapped to upsample and call ``vision.predict``.
        images: (B, 1, 8, W); boxes: int64 (B, K, 2), all real boxes w pixels wide; lengths: (B,).

    Returns:
        word ids (B, K + 1) in ``generate``'s layout (the digits, ``<eos>`` after the k-th, then ``PAD``),
        ready for :func:`caption_accuracy`.

    Raises:
        ValueError: real boxes of different widths.
    """
    images, boxes, lengths = images.cpu(), boxes.cpu(), lengths.cpu()
    K = boxes.shape[1]
    b, i = (torch.arange(K) < lengths[:, None]).nonzero(as_tuple=True)      # one entry per real digit, N in all
    x_start, x_end = boxes[b, i, 0], boxes[b, i, 1]
    w = (x_end - x_start).unique()
    if len(w) != 1:
        raise ValueError(f"every real box must have the same width; got widths {w.tolist()}")
    columns = x_start[:, None] + torch.arange(int(w))                       # (N, w)
    crops = images[b[:, None], :, :, columns]                               # (N, w, 1, 8)
    crops = crops.permute(0, 2, 3, 1)                                       # (N, w, 1, 8) -> (N, 1, 8, w)
    labels = torch.full((len(images), K), PAD, dtype=torch.long)
    labels[b, i] = torch.as_tensor(classify(crops)).long().cpu()
    return targets(labels)


def caption_text(words):
    """Word ids (T,) -> text, stopping at ``<eos>`` or ``PAD``: ``[3, 1, 10, -1]`` -> ``"three one"``."""
    words = torch.as_tensor(words)
    return " ".join(WORDS[w] for w in words[:int(caption_lengths(words[None])[0])].tolist())
