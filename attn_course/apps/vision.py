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
from ..transformer import LearnedPositionalEncoding, TransformerBlock


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
    ``torch.Generator().manual_seed(seed)``; a tqdm bar. ``model(images)`` returns ``(logits, attn_weights)``
    (:class:`DigitCNN`, :class:`TinyViT`); the cross-entropy of the logits is minimised. Returns the loss per
    step (list of float)."""
    device = next(model.parameters()).device
    steps = epochs * math.ceil(len(labels) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)

    def batch_loss(batch):
        logits, _ = model(images[batch].to(device))                       # (b, 10)
        return F.cross_entropy(logits, labels[batch].to(device))

    desc = f"training ({getattr(model, 'pooling', type(model).__name__)})"
    history = fit(model, shuffled_batches(len(labels), batch_size, seed), batch_loss, opt, epochs,
                  scheduler=schedule, desc=desc, progress=progress)
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
    return (attn_weights * ink).sum(-1), ink.to(images.dtype).mean(-1)                     # (B,), (B,)


def attention_in_box(attn_weights, boxes, height, width, image_height, image_width):
    """Does the attention map look at the object? Its peak, and its mass, against a box in pixels.

    Cell (h, w) of the height x width grid covers the pixels ``[h * sy, (h + 1) * sy)`` x
    ``[w * sx, (w + 1) * sx)``, with ``sy = image_height / height`` and ``sx = image_width / width``
    (a CNN's stride, or a vision transformer's patch). The **peak** is the cell of largest weight
    (the first one on ties); it is *in the box* when its centre ``((h + 0.5) sy, (w + 0.5) sx)`` is.
    The **mass** in the box gives each cell's weight in proportion to the share of the cell's area
    that the box covers, so uniform weights put exactly the box's share of the image in the box:
    attention that finds the object puts more.

    Args:
        attn_weights: float tensor (B, height * width), positions row-major (``s = h * width + w``).
        boxes: int or float tensor (B, 4), ``(top, left, bottom, right)`` in pixels, bottom and right
            exclusive (as :func:`attn_course.data.images.cluttered_digits` returns them).
        height, width: the grid's H and W.
        image_height, image_width: the image's size in pixels.

    Returns:
        (peak_in_box, mass_in_box, box_share): bool (B,); float (B,), the weight inside the box;
        float (B,), the box's area over the image's.

    Raises:
        ValueError: attn_weights not (B, height * width), or boxes not (B, 4).

    >>> w = torch.zeros(1, 16); w[0, 5] = 1.0                 # all weight on cell (1, 1) of a 4x4 grid
    >>> attention_in_box(w, torch.tensor([[4, 4, 12, 12]]), 4, 4, 16, 16)
    (tensor([True]), tensor([1.]), tensor([0.2500]))
    """
    B = attn_weights.shape[0]
    if attn_weights.dim() != 2 or attn_weights.shape[1] != height * width:
        raise ValueError(f"attn_weights must be (B, height * width) = (B, {height * width}); "
                         f"got {tuple(attn_weights.shape)}")
    if boxes.shape != (B, 4):
        raise ValueError(f"boxes must be (B, 4) = ({B}, 4), (top, left, bottom, right); got {tuple(boxes.shape)}")
    top, left, bottom, right = boxes.to(attn_weights.dtype).unbind(-1)                   # (B,) each
    sy, sx = image_height / height, image_width / width
    y0 = torch.arange(height, dtype=attn_weights.dtype, device=attn_weights.device) * sy   # (H,) cell tops
    x0 = torch.arange(width, dtype=attn_weights.dtype, device=attn_weights.device) * sx    # (W,) cell lefts
    cover_y = ((y0 + sy).minimum(bottom[:, None]) - y0.maximum(top[:, None])).clamp(min=0) / sy     # (B, H)
    cover_x = ((x0 + sx).minimum(right[:, None]) - x0.maximum(left[:, None])).clamp(min=0) / sx     # (B, W)
    cover = (cover_y[:, :, None] * cover_x[:, None, :]).flatten(1)                       # (B, H, W) -> (B, S)
    peak = attn_weights.argmax(-1)                                                       # (B,) s = h * W + w
    peak_y, peak_x = (peak // width + 0.5) * sy, (peak % width + 0.5) * sx               # (B,) pixel centres
    peak_in_box = (top <= peak_y) & (peak_y < bottom) & (left <= peak_x) & (peak_x < right)
    box_share = (bottom - top) * (right - left) / (image_height * image_width)
    return peak_in_box, (attn_weights * cover).sum(-1), box_share


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
    grid = (image.shape[1] // patch, image.shape[2] // patch)
    return patchify(image[None], patch)[0], grid                               # (1, P, 3 p p) -> (P, 3 p p)


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


# ---------------------------------------------------------------------------------------------
# A tiny vision transformer: patches -> tokens, a class token, learned positions, encoder blocks
# ---------------------------------------------------------------------------------------------
def patchify(images, patch):
    """Cut images into non-overlapping patch x patch squares, one flattened row per patch, row-major.

    ``patches[b, n] = images[b, :, i*p:(i+1)*p, j*p:(j+1)*p].flatten()`` for patch ``n = i * (W // p) + j``,
    each row ordered (channel, row, column): the ``x_p`` of Dosovitskiy et al. 2021, sec. 3.1.

    Args:
        images: tensor (B, C, H, W).
        patch: p, the side of a patch in pixels; H and W must be multiples of it.

    Returns:
        patches (B, N, C * p * p) with N = (H // p) * (W // p). Equal to
        ``F.unfold(images, p, stride=p).transpose(1, 2)`` (tests/test_vision.py).

    Raises:
        ValueError: images not 4-D, patch not a positive int, or H or W not a multiple of patch.

    >>> patchify(torch.arange(16.0).view(1, 1, 4, 4), 2)
    tensor([[[ 0.,  1.,  4.,  5.],
             [ 2.,  3.,  6.,  7.],
             [ 8.,  9., 12., 13.],
             [10., 11., 14., 15.]]])
    """
    if not isinstance(patch, int) or patch < 1:
        raise ValueError(f"patch must be a positive int; got {patch!r}")
    if images.dim() != 4 or images.shape[2] % patch or images.shape[3] % patch:
        raise ValueError(f"images must be (B, C, H, W) with H and W multiples of patch={patch}; "
                         f"got {tuple(images.shape)}")
    B, C, H, W = images.shape
    rows, cols = H // patch, W // patch
    patches = images.reshape(B, C, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5)   # (B, rows, cols, C, p, p)
    return patches.reshape(B, rows * cols, C * patch * patch)                            # (B, N, C p p)


class TinyViT(nn.Module):
    """A vision transformer (Dosovitskiy et al. 2021, sec. 3.1, eqs. 1-4), small enough for a CPU.

    ``z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos`` (eq. 1): the N patches (:func:`patchify`), each
    embedded by one linear map, after a learned class token, plus a learned vector per position
    (``transformer.LearnedPositionalEncoding``). ``num_layers`` pre-LN blocks
    (``transformer.TransformerBlock``, GELU: eqs. 2-3). ``logits = head(LN(z_L^0))`` (eq. 4): only the
    class token's output is classified, so everything the head sees reached the class token by attention.

    Args:
        image_size: side of the (square) input in pixels. patch: p, dividing image_size.
        in_channels: C. d_model: E. num_heads: H. d_ff: the blocks' feed-forward width.
        num_layers: blocks. num_classes: logits. dropout: as in ``TransformerBlock``.
        positional: ``"learned"`` (the paper's) or ``"none"``: without positions the model sees a set of
            patches, and permuting them changes no logit.

    Forward args:
        images: float (B, in_channels, image_size, image_size).

    Returns:
        ``(logits (B, num_classes), attn_weights (B, num_layers, H, 1 + N))``: in each layer and head, the
        class token's attention weights over the 1 + N tokens (index 0 is the class token itself, 1 + n is
        patch n), each row summing to 1. ``attn_weights[:, -1, :, 1:].mean(1)`` (B, N), shaped
        ``(image_size // p, image_size // p)`` with :func:`attention_map`, is the last layer's
        class-token map.

    Raises:
        ValueError: patch not dividing image_size, an unknown positional, or images of another shape.

    >>> model = TinyViT(image_size=8, patch=2, d_model=16, num_heads=2, d_ff=32)
    >>> logits, attn_weights = model(torch.rand(3, 1, 8, 8))
    >>> tuple(logits.shape), tuple(attn_weights.shape)
    ((3, 10), (3, 1, 2, 17))
    """

    def __init__(self, image_size=8, patch=2, in_channels=1, d_model=32, num_heads=2, d_ff=64, num_layers=1,
                 num_classes=10, dropout=0.0, positional="learned"):
        super().__init__()
        if not isinstance(patch, int) or patch < 1 or image_size % patch:
            raise ValueError(f"patch must be a positive int dividing image_size={image_size}; got {patch!r}")
        if positional not in ("learned", "none"):
            raise ValueError(f"positional must be 'learned' or 'none'; got {positional!r}")
        self.image_size, self.patch, self.in_channels = image_size, patch, in_channels
        num_patches = (image_size // patch) ** 2                              # N
        self.patch_embedding = nn.Linear(in_channels * patch * patch, d_model)   # E of eq. 1: C p p -> E
        self.class_token = nn.Parameter(torch.zeros(1, 1, d_model))           # x_class
        self.positional = LearnedPositionalEncoding(1 + num_patches, d_model) if positional == "learned" \
            else nn.Identity()
        self.blocks = nn.ModuleList(TransformerBlock(d_model, num_heads, d_ff, dropout, norm_first=True,
                                                     activation="gelu") for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, images):
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must be (B, {', '.join(map(str, expected))}); got {tuple(images.shape)}")
        B = images.shape[0]
        x = self.patch_embedding(patchify(images, self.patch))               # (B, C, H, W) -> (B, N, E)
        x = torch.cat([self.class_token.expand(B, -1, -1), x], dim=1)        # (B, 1 + N, E)
        x = self.positional(x)                                               # + E_pos, (B, 1 + N, E)
        class_weights = []
        for block in self.blocks:
            x, attn_weights = block(x, need_weights=True)                    # (B, 1 + N, E), (B, H, 1 + N, 1 + N)
            class_weights.append(attn_weights[:, :, 0])                      # the class token's row: (B, H, 1 + N)
        logits = self.head(self.norm(x[:, 0]))                               # (B, E) -> (B, num_classes)
        return logits, torch.stack(class_weights, dim=1)                     # (B, num_layers, H, 1 + N)
