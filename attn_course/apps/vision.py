"""Attention in image recognition: spatial attention pooling in a small CNN, patch self-attention.

A CNN turns an image into a feature map ``features`` (B, C, H, W): one C-vector per position of an
H x W grid. To classify, the map must become one vector per image. **Global average pooling**
(Lin et al. 2014, "Network in Network", sec. 3.2) weighs the S = H*W positions equally;
**spatial attention pooling** weighs them by a softmax over learned scores (Xu et al. 2015, eqs.
4-6, with one learned query; Ilse et al. 2018, sec. 2.4):

    attn_scores_s = query . f_s / sqrt(C),  attn_weights = softmax(attn_scores) over s,
    pooled = sum_s attn_weights_s f_s.

Positions are flattened in row-major order, ``s = h * W + w`` (what ``features.flatten(2)`` does),
so ``attn_weights.view(B, H, W)`` is the attention map, ready to overlay on the image.

Shapes: B batch, C channels, H x W feature grid, S = H*W positions, P patches of a photo,
E patch-embedding size.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..training import fit, replayable, shuffled_batches


def spatial_attention_pool(features, query):
    """Pool a feature map over its positions with attention: one C-vector per image.

    ``attn_scores[b, s] = query . features[b, :, s] / sqrt(C)`` with positions flattened row-major
    (``s = h * W + w``), ``attn_weights = softmax(attn_scores)`` over the S = H*W **positions**
    (dim=-1), ``pooled[b] = sum_s attn_weights[b, s] * features[b, :, s]``.

    Args:
        features: float tensor (B, C, H, W), a CNN's feature map.
        query: float tensor (C,) shared by all images (a learned parameter), or (B, C), same dtype.

    Returns:
        (pooled, attn_weights): pooled (B, C); attn_weights (B, H*W), each row summing to 1;
        ``attn_weights.view(B, H, W)`` is the attention map.

    Raises:
        ValueError: features not 4-D, or query not (C,) or (B, C).

    References: Xu et al. 2015, *Show, Attend and Tell*, eqs. 4-6 (soft attention over the L
    positions of a conv feature map); Ilse et al. 2018, *Attention-based Deep Multiple Instance
    Learning*, sec. 2.4. Equal to ``F.scaled_dot_product_attention`` with one query per image
    (tests/test_vision.py), and to ``attn_course.pooling.attention_pool`` of these scores up to
    rounding: the weighted sum here multiplies ``features (B, C, S) @ attn_weights (B, S, 1)``.

    >>> pooled, attn_weights = spatial_attention_pool(torch.ones(1, 2, 2, 3), torch.zeros(2))
    >>> pooled, attn_weights.view(1, 2, 3)[0, 1]
    (tensor([[1., 1.]]), tensor([0.1667, 0.1667, 0.1667]))
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, H, W); got shape {tuple(features.shape)}")
    B, C, H, W = features.shape
    if query.shape not in ((C,), (B, C)):
        raise ValueError(f"query must be (C,) = ({C},) or (B, C) = ({B}, {C}); got {tuple(query.shape)}")
    keys = features.flatten(2)                                         # (B, C, H, W) -> (B, C, S), s = h*W + w
    query = query.expand(B, C).unsqueeze(1)                            # (B, 1, C)
    attn_scores = (query @ keys).squeeze(1) / math.sqrt(C)             # (B, 1, C) @ (B, C, S) -> (B, S)
    attn_weights = torch.softmax(attn_scores, dim=-1)                  # over the S positions
    pooled = (keys @ attn_weights.unsqueeze(-1)).squeeze(-1)           # (B, C, S) @ (B, S, 1) -> (B, C)
    return pooled, attn_weights


def global_average_pool(features):
    """The baseline: every position weighs 1/S. Returns (pooled (B, C), attn_weights (B, H*W))."""
    B, C, H, W = features.shape
    attn_weights = features.new_full((B, H * W), 1.0 / (H * W))       # uniform over S
    return features.mean(dim=(2, 3)), attn_weights                     # (B, C, H, W) -> (B, C)


def attention_map(attn_weights, height, width):
    """Reshape flattened attention weights into pictures, one (height, width) map per image.

    Positions were flattened row-major (``s = h * width + w``, as ``features.flatten(2)`` does), so
    map[b, h, w] = attn_weights[b, h * width + w]: row h of the map is the h-th run of ``width``
    weights.

    Args:
        attn_weights: tensor (B, height * width).
        height, width: the feature grid's H and W.

    Returns:
        tensor (B, height, width), the same numbers; ``map[b].sum() == attn_weights[b].sum()``.

    Raises:
        ValueError: attn_weights not (B, height * width).

    >>> attention_map(torch.arange(6.0).view(1, 6), 2, 3)
    tensor([[[0., 1., 2.],
             [3., 4., 5.]]])
    """
    if attn_weights.dim() != 2 or attn_weights.shape[1] != height * width:
        raise ValueError(f"attn_weights must be (B, height * width) = (B, {height * width}); "
                         f"got {tuple(attn_weights.shape)}")
    B = attn_weights.shape[0]
    return attn_weights.reshape(B, height, width)                      # (B, S) -> (B, H, W)


class DigitCNN(nn.Module):
    """Three 3x3 conv layers (one 2x2 max-pool) -> a (B, C, H/2, W/2) map -> pooling -> 10 logits.

    Args:
        pooling: ``"attention"`` (a learned query, :func:`spatial_attention_pool`) or ``"average"``
            (:func:`global_average_pool`, the baseline).
        channels: C.

    ``forward(images (B, 1, H, W))`` returns ``(logits (B, 10), attn_weights (B, H/2 * W/2))``.
    """

    def __init__(self, pooling="attention", channels=32):
        super().__init__()
        if pooling not in ("attention", "average"):
            raise ValueError(f"pooling must be 'attention' or 'average'; got {pooling!r}")
        self.pooling = pooling
        conv = lambda c_in, c_out: [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*conv(1, 16), *conv(16, channels), nn.MaxPool2d(2), *conv(channels, channels))
        self.query = nn.Parameter(torch.zeros(channels))                  # learned; zeros = average pooling at start
        self.classifier = nn.Linear(channels, 10)

    def forward(self, images):
        features = self.features(images)                                  # (B, 1, H, W) -> (B, C, H/2, W/2)
        if self.pooling == "attention":
            pooled, attn_weights = spatial_attention_pool(features, self.query)   # (B, C), (B, S)
        else:
            pooled, attn_weights = global_average_pool(features)
        return self.classifier(pooled), attn_weights                      # (B, 10), (B, S)


@replayable
def train_classifier(model, images, labels, epochs=8, batch_size=64, lr=1e-2, seed=0, progress=True):
    """Adam with a one-cycle learning rate (Smith & Topin 2017), mini-batches shuffled each epoch by
    ``torch.Generator().manual_seed(seed)``; a tqdm bar. Returns the loss per step (list of float)."""
    device = next(model.parameters()).device
    steps = epochs * math.ceil(len(labels) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)

    def batch_loss(batch):
        logits, _ = model(images[batch].to(device))                       # (b, 10)
        return F.cross_entropy(logits, labels[batch].to(device))

    history = fit(model, shuffled_batches(len(labels), batch_size, seed), batch_loss, opt, epochs,
                  scheduler=schedule, desc=f"training ({getattr(model, 'pooling', '')})", progress=progress)
    return history.step_loss


@torch.no_grad()
def predict(model, images, batch_size=512):
    """Evaluation mode, no gradients: (predicted labels (N,), attn_weights (N, S)) on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    preds, weights = [], []
    for start in range(0, len(images), batch_size):
        logits, attn_weights = model(images[start:start + batch_size].to(device))
        preds.append(logits.argmax(-1).cpu())
        weights.append(attn_weights.cpu())
    return torch.cat(preds), torch.cat(weights)


def attention_on_ink(attn_weights, images, height, width, threshold=0.3):
    """How much attention lands on the strokes: (attention mass on ink, ink's share of the grid), per image.

    The images (B, 1, H_img, W_img) are average-pooled to the (height, width) grid; a cell is "ink"
    when its mean intensity exceeds ``threshold``. Uniform attention puts exactly the ink's share of
    its mass on ink; attention that looks at the digit puts more.
    """
    ink = F.adaptive_avg_pool2d(images, (height, width)).flatten(1) > threshold    # (B, S) bool
    return (attn_weights * ink).sum(-1), ink.float().mean(-1)                       # (B,), (B,)


# ---------------------------------------------------------------------------------------------
# Patch self-attention on a photograph (a vision transformer's first step, without training)
# ---------------------------------------------------------------------------------------------
def image_patches(image, patch):
    """Cut an image (3, H, W) into non-overlapping patch x patch squares, row-major.

    Returns:
        (patches, grid): patches (P, 3 * patch * patch) with P = (H // patch) * (W // patch), and
        grid = (rows, cols). Patch p covers rows ``(p // cols) * patch ...`` and columns
        ``(p % cols) * patch ...`` (Dosovitskiy et al. 2021, sec. 3.1).

    Raises:
        ValueError: image not (3, H, W), or H, W not multiples of patch.
    """
    if image.dim() != 3 or image.shape[1] % patch or image.shape[2] % patch:
        raise ValueError(f"image must be (3, H, W) with H and W multiples of patch={patch}; "
                         f"got {tuple(image.shape)}")
    C, H, W = image.shape
    rows, cols = H // patch, W // patch
    patches = image.view(C, rows, patch, cols, patch).permute(1, 3, 0, 2, 4)    # (rows, cols, 3, p, p)
    return patches.reshape(rows * cols, C * patch * patch), (rows, cols)        # (P, 3 p p)


def colour_texture_features(patches):
    """A hand-made patch embedding: each channel's mean (colour) and standard deviation (texture).

    Args:
        patches: (P, 3 * p * p) from :func:`image_patches`.

    Returns:
        (P, 6): mean R, G, B, then std R, G, B of each patch.
    """
    pixels = patches.view(patches.shape[0], 3, -1)                           # (P, 3 p p) -> (P, 3, p p)
    return torch.cat([pixels.mean(-1), pixels.std(-1)], dim=-1)              # (P, 6)


def patch_self_attention(patches, temperature=0.1, cosine=True):
    """Self-attention of patches with no learned projection: query = key = the standardised patches.

    Each of the E features (e.g. :func:`colour_texture_features`) is standardised over the P patches (x). With ``cosine=True``
    each row of x is also scaled to length 1, so a score is the cosine similarity of two patches
    (as in Swin Transformer v2's scaled cosine attention, Liu et al. 2022, eq. 2), and
    ``attn_weights = softmax(cos / temperature)``. With ``cosine=False`` the scores are the usual
    ``x x^T / sqrt(E)`` divided by ``temperature``. Nothing is learned: a patch attends to patches
    whose **colours and textures** resemble its own. Trained projections start from here; a trained
    vision transformer attends to much more than look-alikes.

    Args:
        patches: float tensor (P, E), one embedding per patch.
        temperature: positive float; smaller = more peaked.
        cosine: cosine-similarity scores (True) or scaled dot products (False).

    Returns:
        attn_weights (P, P), each row summing to 1 over the keys.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature!r}")
    x = (patches - patches.mean(0)) / (patches.std(0) + 1e-6)                # (P, E) standardised
    if cosine:
        attn_scores = F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).T      # (P, E) @ (E, P) -> (P, P), in [-1, 1]
    else:
        attn_scores = x @ x.T / math.sqrt(x.shape[1])                        # (P, P), scaled dot product
    return torch.softmax(attn_scores / temperature, dim=-1)
