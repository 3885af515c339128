"""Image captioning with soft attention (Show, Attend and Tell, in small): strips of digits -> words.

An encoder (a small CNN) turns a strip of handwritten digits (B, 1, 8, 8 * N) into S = 4 * (2N)
feature vectors (B, S, C), each with a learned position embedding added. A GRU decoder writes the
caption one word at a time; before each word it looks at the image with **additive soft attention**
(Xu et al. 2015, eqs. 4-6, 9-10; Bahdanau et al. 2015, eq. 6):

    attn_scores_s = v . tanh(W_query h_{t-1} + W_key f_s),  attn_weights = softmax over s,
    context z_t = sum_s attn_weights_s f_s,  h_t = GRU([embed(y_{t-1}); z_t], h_{t-1}),
    p(y_t) = softmax(W_out [h_t; z_t]).

With ``attention=False`` the decoder gets the plain average of the features at every step (the
"Show and Tell" baseline, Vinyals et al. 2015), so the lesson can measure what attention adds.

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
from ..training import fit, replayable, shuffled_batches

WORDS = DIGIT_WORDS + ["<eos>", "<bos>"]     # ids 0..9 are the digits, 10 = <eos>, 11 = <bos>
EOS, BOS = 10, 11


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
    """(B, 1, 8, W) strips -> (B, S, C) features, S = 4 * W/2, plus a learned embedding per position."""

    def __init__(self, width=24, channels=32):
        super().__init__()
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
    ``attention=False`` replaces the attention context by the mean of the features (uniform weights).
    """

    def __init__(self, width=24, channels=32, hidden=64, attn_dim=32, embed=16, attention=True):
        super().__init__()
        self.attention, self.encoder = attention, Encoder(width, channels)
        self.embed = nn.Embedding(len(WORDS), embed)
        self.init_h = nn.Linear(channels, hidden)
        self.w_query = nn.Parameter(torch.randn(attn_dim, hidden) / math.sqrt(hidden))      # (A, Hd)
        self.w_key = nn.Parameter(torch.randn(attn_dim, channels) / math.sqrt(channels))    # (A, C)
        self.v = nn.Parameter(torch.randn(attn_dim) / math.sqrt(attn_dim))                 # (A,)
        self.gru = nn.GRUCell(embed + channels, hidden)
        self.out = nn.Linear(hidden + channels, len(WORDS))

    def _step(self, word, h, features):
        if self.attention:
            context, attn_weights = soft_attention(h, features, self.w_query, self.w_key, self.v)
        else:
            context = features.mean(1)                                      # (B, S, C) -> (B, C)
            attn_weights = features.new_full(features.shape[:2], 1.0 / features.shape[1])
        h = self.gru(torch.cat([self.embed(word), context], -1), h)         # (B, E + C) -> (B, Hd)
        return self.out(torch.cat([h, context], -1)), h, attn_weights       # (B, V), (B, Hd), (B, S)

    def forward(self, images, captions):
        features = self.encoder(images)                                     # (B, S, C)
        h = torch.tanh(self.init_h(features.mean(1)))                       # (B, Hd)
        word = torch.full_like(captions[:, 0], BOS)
        logits, weights = [], []
        for t in range(captions.shape[1]):
            step_logits, h, attn_weights = self._step(word, h, features)
            logits.append(step_logits)
            weights.append(attn_weights)
            word = captions[:, t]                                           # teacher forcing
        return torch.stack(logits, 1), torch.stack(weights, 1)              # (B, T, V), (B, T, S)

    @torch.no_grad()
    def generate(self, images, max_len=4):
        """Greedy decoding: (word ids (B, max_len), attn_weights (B, max_len, S)); stops nothing early."""
        self.eval()
        features = self.encoder(images)
        h = torch.tanh(self.init_h(features.mean(1)))
        word = torch.full((images.shape[0],), BOS, dtype=torch.long, device=images.device)
        words, weights = [], []
        for _ in range(max_len):
            step_logits, h, attn_weights = self._step(word, h, features)
            word = step_logits.argmax(-1)
            words.append(word)
            weights.append(attn_weights)
        return torch.stack(words, 1), torch.stack(weights, 1)


def targets(labels):
    """Digit labels (B, N) -> caption ids (B, N + 1): the digits' words, then <eos>."""
    return torch.cat([labels, torch.full_like(labels[:, :1], EOS)], 1)


@replayable
def train_captioner(model, images, labels, epochs=6, batch_size=64, lr=5e-3, seed=0, progress=True):
    """Teacher forcing, cross-entropy over every word, Adam with a one-cycle schedule (Smith & Topin 2017),
    mini-batches shuffled each epoch by ``torch.Generator().manual_seed(seed)``; a tqdm bar.

    Returns the loss per step (list of float).
    """
    device = next(model.parameters()).device
    captions = targets(labels)
    steps = epochs * math.ceil(len(labels) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)

    def batch_loss(batch):
        logits, _ = model(images[batch].to(device), captions[batch].to(device))   # (b, T, V)
        return F.cross_entropy(logits.flatten(0, 1), captions[batch].to(device).flatten())

    desc = "training (" + ("attention" if model.attention else "no attention") + ")"
    return fit(model, shuffled_batches(len(labels), batch_size, seed), batch_loss, opt, epochs, scheduler=schedule,
               desc=desc, progress=progress).step_loss


def caption_scores(predicted, labels):
    """(word accuracy, caption accuracy): share of digit words right, share of captions all right."""
    right = predicted[:, :labels.shape[1]].cpu() == labels
    return right.float().mean().item(), right.all(1).float().mean().item()


def peak_on_digit(attn_weights, grid=(4, 12), num_digits=3):
    """For word i, does the attention's largest weight lie over digit i? (B, num_digits) bool.

    attn_weights: (B, T, S) with S = grid[0] * grid[1]; digit i covers the grid's columns
    ``i * cols / num_digits ...``.
    """
    rows, cols = grid
    peak_column = attn_weights[:, :num_digits].argmax(-1) % cols            # (B, N)
    return peak_column // (cols // num_digits) == torch.arange(num_digits)


