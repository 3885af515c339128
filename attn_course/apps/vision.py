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
import html
import math

import ipywidgets as widgets
import torch
from matplotlib.patches import Rectangle
from torch import nn
from torch.nn import functional as F

from ..attention import entropy
from ..checks import CheckFailure, _call, expect_rows_sum_to_one, expect_tensor
from ..plot import figure_png, new_figure
from .training import fit_one_cycle


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
    (tests/test_vision.py).

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


def train_classifier(model, images, labels, epochs=8, batch_size=64, lr=1e-2, seed=0, progress=True):
    """Adam with a one-cycle learning rate, shuffled mini-batches; a tqdm bar. Returns the loss per step."""
    device = next(model.parameters()).device

    def batch_loss(batch):
        logits, _ = model(images[batch].to(device))                       # (b, 10)
        return F.cross_entropy(logits, labels[batch].to(device))

    return fit_one_cycle(model, len(labels), batch_loss, epochs, batch_size, lr, seed,
                         desc=f"training ({getattr(model, 'pooling', '')})", progress=progress)


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


def overlay(ax, image, attn_map, title=None, alpha=0.8):
    """Draw a grey image (H_img, W_img) with its attention map (h, w) stretched over it.

    Each cell is coloured yellow to red with an opacity proportional to its weight (the largest
    weight: ``alpha``), so cells with little attention stay see-through.
    """
    H, W = image.shape[-2:]
    ax.imshow(image.squeeze().detach().cpu().numpy(), cmap="gray_r", extent=(0, W, H, 0))
    attn_map = attn_map.detach().cpu().float()
    strength = (attn_map / attn_map.max().clamp_min(1e-12)).numpy()           # 0..1: low weight = see-through
    ax.imshow(attn_map.numpy(), cmap="autumn_r", alpha=alpha * strength, extent=(0, W, H, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


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


class PatchPicker(widgets.VBox):
    """Pick a query patch of a photo (two sliders) and see its attention over all patches.

    Args:
        image: float tensor (3, H, W) in [0, 1].
        attn_weights: (P, P) patch self-attention, P = rows * cols.
        grid: (rows, cols).
        query: (row, col) picked at first.

    Attributes: ``row``, ``col`` (IntSliders), ``readout`` (HTML), ``image`` (Image);
    ``pick(row, col)`` moves the sliders; ``weights()`` the query's (rows, cols) map; ``text()``.
    """

    def __init__(self, image, attn_weights, grid, query=(0, 0)):
        rows, cols = grid
        if attn_weights.shape != (rows * cols, rows * cols):
            raise ValueError(f"attn_weights must be (P, P) with P = {rows}*{cols}; got {tuple(attn_weights.shape)}")
        self.photo, self.attn_weights, self.grid = image.detach().cpu(), attn_weights.detach().cpu(), grid
        slider = lambda n, v, d: widgets.IntSlider(value=v, min=0, max=n - 1, description=d,
                                                   continuous_update=False)
        self.row, self.col = slider(rows, query[0], "query row"), slider(cols, query[1], "query col")
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="860px"))
        self.row.add_class("patch-row")
        self.col.add_class("patch-col")
        self.readout.add_class("patch-readout")
        self.image.add_class("patch-chart")
        super().__init__([widgets.HBox([self.row, self.col]), self.readout, self.image])
        for s in (self.row, self.col):
            s.observe(lambda change: self.update(), names="value")
        self.update()

    def pick(self, row, col):
        """Move the sliders to the query patch (row, col)."""
        self.row.value, self.col.value = row, col

    def weights(self):
        """The query patch's attention over all patches, as a (rows, cols) map."""
        rows, cols = self.grid
        return self.attn_weights[self.row.value * cols + self.col.value].view(rows, cols)

    def text(self):
        w = self.weights()
        top = w.flatten().topk(3)
        cols = self.grid[1]
        spots = "  ".join(f"({j // cols}, {j % cols}) {v:.3f}" for v, j in zip(top.values.tolist(), top.indices.tolist()))
        return (f"query patch ({self.row.value}, {self.col.value})   entropy = {entropy(w.flatten()).item():.2f} nats "
                f"(uniform over {w.numel()} patches: {math.log(w.numel()):.2f})\ntop-3 patches: {spots}")

    def update(self):
        self.readout.value = f"<pre>{html.escape(self.text())}</pre>"
        rows, (_, H, W) = self.grid[0], self.photo.shape
        p = H // rows
        fig = new_figure((9.6, 3.4))
        ax0, ax1 = fig.subplots(1, 2)
        for ax in (ax0, ax1):
            ax.imshow(self.photo.permute(1, 2, 0).numpy(), extent=(0, W, H, 0))
            ax.add_patch(Rectangle((self.col.value * p, self.row.value * p), p, p, fill=False, edgecolor="cyan",
                                   linewidth=2))
            ax.set_xticks([])
            ax.set_yticks([])
        ax0.set_title("photo and the query patch", fontsize=9)
        ax1.imshow(self.weights().numpy(), cmap="magma", alpha=0.75, extent=(0, W, H, 0), interpolation="nearest")
        ax1.set_title("attention of the query patch over all patches", fontsize=9)
        self.image.value = figure_png(fig)


# ---------------------------------------------------------------------------------------------
# Checks of the lesson's exercises
# ---------------------------------------------------------------------------------------------
def _pool_cases(thorough):
    yield "one image: C=4, H=3, W=5, query (C,)", 1, 4, 3, 5, False, 1.0, torch.float32
    if thorough:
        yield "batch of 3, C=8, H=4, W=2, query (B, C)", 3, 8, 4, 2, True, 1.0, torch.float32
        yield "float64, C=16, H=W=6", 2, 16, 6, 6, False, 1.0, torch.float64
        yield "large scores (x100), C=6, H=1, W=7", 2, 6, 1, 7, False, 100.0, torch.float32


def _pool_hint(features, query):
    def hint(actual, expected):
        B, C, H, W = features.shape
        if actual.shape == (B, H * W):
            transposed = expected.view(B, H, W).transpose(1, 2).reshape(B, H * W)
            if H != W and H > 1 and W > 1 and torch.allclose(actual, transposed, atol=1e-5):
                return ("Yours are the weights of the positions in column-major order (w * H + h): flatten "
                        "with features.flatten(2), which is row-major (h * W + w).")
            scale = math.sqrt(C)
            unscaled = torch.softmax(torch.log(expected.clamp_min(1e-30)) * scale, -1)
            if torch.allclose(actual, unscaled, atol=1e-4):
                return f"Divide the scores by sqrt(C) = {scale:.3g}."
        return "Scores are query . features at each position / sqrt(C); softmax over positions (dim=-1)."
    return hint


def check_spatial_attention_pool(fn, thorough=False, seed=110):
    """Check ``fn(features (B, C, H, W), query (C,) or (B, C)) -> (pooled (B, C), attn_weights (B, H*W))``."""
    g = torch.Generator().manual_seed(seed)
    for case, B, C, H, W, per_image, scale, dtype in _pool_cases(thorough):
        features = (torch.randn(B, C, H, W, generator=g, dtype=torch.float64)).to(dtype)
        query = (torch.randn(*((B, C) if per_image else (C,)), generator=g, dtype=torch.float64) * scale).to(dtype)
        got = _call(fn, (features.clone(), query.clone()), case)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailure("type", f"{case}: return the tuple (pooled, attn_weights); got {type(got).__name__}")
        pooled, attn_weights = got
        ref_pooled, ref_weights = spatial_attention_pool(features, query)
        if not isinstance(attn_weights, torch.Tensor) or attn_weights.shape != ref_weights.shape:
            expect_tensor("attn_weights", attn_weights, ref_weights, case, legend="(B, H*W)")   # type or shape
        expect_rows_sum_to_one("attn_weights", attn_weights, case)
        expect_tensor("attn_weights", attn_weights, ref_weights, case, legend="(B, H*W)",
                      hint=_pool_hint(features, query))
        expect_tensor("pooled", pooled, ref_pooled, case, legend="(B, C)",
                      hint=lambda a, e: "pooled[b] = sum over positions s of attn_weights[b, s] * features[b, :, s].")


def check_attention_map(fn, thorough=False, seed=111):
    """Check ``fn(attn_weights (B, H*W), height, width) -> (B, height, width)``, positions row-major."""
    cases = [("one image, H=2, W=3", 1, 2, 3)]
    if thorough:
        cases += [("batch of 4, H=5, W=3", 4, 5, 3), ("H=1, W=6", 2, 1, 6), ("square, H=W=4", 3, 4, 4)]
    g = torch.Generator().manual_seed(seed)
    for case, B, H, W in cases:
        attn_weights = torch.softmax(torch.randn(B, H * W, generator=g), -1)
        got = _call(fn, (attn_weights.clone(), H, W), case)
        expected = attention_map(attn_weights, H, W)

        def hint(actual, expected, H=H, W=W):
            if torch.allclose(actual, expected.reshape(-1, W, H).transpose(1, 2)):
                return ("Your map[b, h, w] holds the weight of position w * H + h (the positions read "
                        "column by column): the picture is mirrored across its diagonal. Positions were "
                        "flattened row by row, s = h * W + w.")
            return "map[b, h, w] must be attn_weights[b, h * W + w]."
        expect_tensor("attention map", got, expected, case, legend="(B, H, W)", hint=hint)
