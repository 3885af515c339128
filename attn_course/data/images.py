"""Real images for the vision lessons, read offline from scikit-learn.

Sources (both ship inside the scikit-learn wheel; nothing downloads):

- ``sklearn.datasets.load_digits``: 1,797 handwritten digits, 8x8 pixels, 16 grey levels: the *test
  set* of the UCI "Optical Recognition of Handwritten Digits" data set (Alpaydin & Kaynak, 1998),
  written by 13 people (the 30 others of the 43 wrote its training set, which scikit-learn does not
  ship), licence CC BY 4.0. The writers are not labelled, so no split can keep them apart: a
  random split by image puts the same 13 hands in training and test.
- ``sklearn.datasets.load_sample_images``: two photographs, ``china.jpg`` (a temple) and
  ``flower.jpg``, 427 x 640 pixels, by Flickr users danielbuechele and vultilion, licence CC BY 2.0.

Shapes follow PyTorch's image layout: (N, C, H, W), float32 in [0, 1].
"""
import functools

import torch
from torch.nn import functional as F

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PHOTOS = ("china.jpg", "flower.jpg")


def _sklearn_datasets():
    try:
        from sklearn import datasets
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency of the course
        raise ImportError("attn_course.data.images needs scikit-learn (pip install scikit-learn); "
                          "it ships the digits and the sample photos") from exc
    return datasets


@functools.lru_cache(maxsize=None)
def _digits():
    bunch = _sklearn_datasets().load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0   # (1797, 1, 8, 8) in [0, 1]
    labels = torch.tensor(bunch.target, dtype=torch.long)                          # (1797,)
    return images, labels


def digits(split="train", size=8, test_fraction=0.2, seed=0):
    """The scikit-learn handwritten digits, split deterministically into train and test.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        size: side in pixels; 8 is the original, larger sizes are bilinear upsamplings.
        test_fraction: share of the 1,797 images held out for testing (a seeded permutation).
        seed: seed of the permutation; the same seed gives the same split on every machine.

    Returns:
        (images, labels): float32 (N, 1, size, size) in [0, 1] and int64 (N,) in 0..9.
        With the defaults, 1,438 training and 359 test images.

    Raises:
        ValueError: an unknown split, a size below 8, or a test_fraction outside (0, 1).

    >>> images, labels = digits("test")
    >>> tuple(images.shape), tuple(labels.shape)
    ((359, 1, 8, 8), (359,))
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all'; got {split!r}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8 (the digits are 8x8); got {size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction!r}")
    images, labels = _digits()
    if split != "all":
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        n_test = round(test_fraction * len(labels))
        index = order[:n_test] if split == "test" else order[n_test:]
        images, labels = images[index], labels[index]
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return images.clone(), labels.clone()


def digit_strips(split="train", n=1000, num_digits=3, seed=0):
    """Images of ``num_digits`` real handwritten digits side by side, with their digits as labels.

    Each strip is built only from the digit images of ``split`` (so test strips hold only held-out
    digits). Digits are drawn uniformly with a seeded generator.

    Args:
        split: ``"train"`` or ``"test"`` (the split of :func:`digits`).
        n: number of strips.
        num_digits: digits per strip.
        seed: seed of the draw.

    Returns:
        (images, labels): float32 (n, 1, 8, 8 * num_digits) and int64 (n, num_digits); digit i fills
        columns 8i .. 8i+7.

    Raises:
        ValueError: split not train/test, or n, num_digits not positive ints.

    >>> images, labels = digit_strips("test", n=5)
    >>> tuple(images.shape), tuple(labels.shape)
    ((5, 1, 8, 24), (5, 3))
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    for name, value in (("n", n), ("num_digits", num_digits)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    images, labels = digits(split)
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, len(labels), (n, num_digits), generator=g)        # (n, num_digits)
    strips = images[index]                                                     # (n, num_digits, 1, 8, 8)
    strips = strips.permute(0, 2, 3, 1, 4).reshape(n, 1, 8, 8 * num_digits)    # side by side
    return strips, labels[index]


def digit_canvases(split="train", n=1000, min_digits=2, max_digits=5, width=56, seed=0, digit_subset=None):
    """Strips of a varying number of real handwritten digits at varying places, with their boxes.

    Each canvas (8 x ``width`` pixels, black = 0) holds k real digits, k uniform in
    ``min_digits .. max_digits``, left to right, none overlapping. The ``width - 8k`` free columns
    are shared at random between the left margin, the k - 1 gaps and the right margin: draw k
    integers uniformly in ``0 .. width - 8k``, sort them to u_0 <= ... <= u_{k-1}, and put digit i at
    ``x_start_i = u_i + 8i``. So the left offset and every gap (>= 0, possibly 0) vary, and the column
    of digit i is not fixed by i. Digits are drawn uniformly from ``digits(split)`` only, so test
    canvases hold only held-out digit images; ``digit_subset`` narrows the draw further, e.g. to keep
    a validation set's digit images out of the training canvases.

    Args:
        split: ``"train"`` or ``"test"`` (the split of :func:`digits`).
        n: number of canvases.
        min_digits, max_digits: the range of k, 1 <= min_digits <= max_digits.
        width: W in pixels, at least ``8 * max_digits`` (56: five digits leave 16 free columns).
        seed: seed of a ``torch.Generator``: the same seed gives the same canvases on every machine.
        digit_subset: None (every digit of the split), or a slice or int64 index tensor into
            ``digits(split)``: only those digit images are drawn.

    Returns:
        (images, labels, lengths, boxes):
        images float32 (n, 1, 8, W) in [0, 1];
        labels int64 (n, max_digits), the digits left to right, padded with -1 after the k-th;
        lengths int64 (n,), k;
        boxes int64 (n, max_digits, 2), ``[x_start, x_end)`` pixel columns of each digit
        (``x_end = x_start + 8``), -1 for padding.

    Raises:
        ValueError: split not train/test, n not a positive int, not 1 <= min_digits <= max_digits,
            or width < 8 * max_digits, or an empty digit_subset.

    >>> images, labels, lengths, boxes = digit_canvases("test", n=2, min_digits=2, max_digits=3, width=32)
    >>> tuple(images.shape), tuple(labels.shape), tuple(boxes.shape)
    ((2, 1, 8, 32), (2, 3), (2, 3, 2))
    >>> bool(((boxes[..., 1] - boxes[..., 0] == 8) == (labels >= 0)).all())
    True
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    for name, value in (("n", n), ("min_digits", min_digits), ("max_digits", max_digits), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if min_digits > max_digits or width < 8 * max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits and width >= 8 * max_digits; got min_digits="
                         f"{min_digits}, max_digits={max_digits}, width={width}")
    digit_images, digit_labels = digits(split)
    if digit_subset is not None:
        digit_images, digit_labels = digit_images[digit_subset], digit_labels[digit_subset]
        if len(digit_labels) == 0:
            raise ValueError(f"digit_subset selects no digit of the {split!r} split; got {digit_subset!r}")
    g = torch.Generator().manual_seed(seed)
    K = max_digits
    lengths = torch.randint(min_digits, max_digits + 1, (n,), generator=g)            # (n,) k
    index = torch.randint(0, len(digit_labels), (n, K), generator=g)                    # (n, K) which digits
    real = torch.arange(K) < lengths[:, None]                                           # (n, K) bool
    free = width - 8 * lengths                                                          # (n,) free columns
    u = torch.rand(n, K, generator=g).masked_fill(~real, 2.0).sort(dim=1).values        # (n, K) sorted, pads last
    u = (u * (free[:, None] + 1)).floor().long()                                        # (n, K) in 0..free
    x_start = u + 8 * torch.arange(K)                                                   # (n, K)
    canvases = torch.zeros(n, width, 8)                                                 # (n, W, 8): column-major
    b, i = real.nonzero(as_tuple=True)                                                  # one entry per real digit
    columns = x_start[b, i, None] + torch.arange(8)                                     # (N_digits, 8) pixel columns
    canvases[b[:, None], columns] = digit_images[index[b, i], 0].transpose(1, 2)        # (N_digits, 8 cols, 8 rows)
    images = canvases.transpose(1, 2).unsqueeze(1).contiguous()                         # (n, W, 8) -> (n, 1, 8, W)
    labels = digit_labels[index].masked_fill(~real, -1)                                 # (n, K)
    boxes = torch.stack([x_start, x_start + 8], -1).masked_fill(~real[..., None], -1)   # (n, K, 2)
    return images, labels, lengths, boxes


def cluttered_digits(split="train", n=1000, size=24, num_distractors=8, distractor_size=4, seed=0,
                     digit_subset=None):
    """One real handwritten digit at a random place on a larger canvas, among crops of other digits.

    The cluttered-digits recipe of Mnih et al. (2014), sec. 4.1, on the 8x8 digits: each canvas
    (``size`` x ``size`` pixels, black = 0) holds one digit of ``digits(split)`` with its top-left
    corner uniform in ``0 .. size - 8`` (rows and columns), and ``num_distractors`` squares of
    ``distractor_size`` x ``distractor_size`` pixels, each cut at a random place from a digit image
    *other* than the labelled one. Distractors never overlap the digit's 8x8 box (their corner is
    uniform over the corners that keep them outside it), so the box holds exactly the digit; they
    may overlap one another (pixel-wise maximum). A classifier must find the digit: pooling the
    whole canvas mixes the digit with stroke fragments. Digits and crops come only from
    ``digits(split)`` (narrowed by ``digit_subset``), so test canvases hold only held-out images.

    Args:
        split: ``"train"`` or ``"test"`` (the split of :func:`digits`).
        n: number of canvases.
        size: the canvas side in pixels; at least 8, and at least ``8 + 2 * distractor_size`` when
            there are distractors (so that every place of the digit leaves room for them).
        num_distractors: fragments per canvas (an int >= 0).
        distractor_size: side of a fragment in pixels, 1 .. 8.
        seed: seed of a ``torch.Generator``: the same seed gives the same canvases on every machine.
        digit_subset: None (every digit of the split), or a slice or int64 index tensor into
            ``digits(split)``: the labelled digits and the fragments come only from those images,
            e.g. ``slice(0, 1150)`` for training and ``slice(1150, None)`` for validation.

    Returns:
        (images, labels, boxes): images float32 (n, 1, size, size) in [0, 1]; labels int64 (n,);
        boxes int64 (n, 4), the digit's ``(top, left, bottom, right)`` in pixels, bottom and right
        exclusive (``bottom = top + 8``): ``images[b, 0, top:bottom, left:right]`` is the digit.

    Raises:
        ValueError: split not train/test, n not a positive int, num_distractors < 0, distractor_size
            outside 1..8, a size too small, or a digit_subset with fewer than 2 images.

    References: Mnih, Heess, Graves & Kavukcuoglu 2014, "Recurrent Models of Visual Attention",
    sec. 4.1 (cluttered translated MNIST: 8x8 fragments of other digits on a 60x60 canvas).

    >>> x, y, boxes = cluttered_digits("test", n=2, size=24, num_distractors=4)
    >>> tuple(x.shape), tuple(y.shape), tuple(boxes.shape)
    ((2, 1, 24, 24), (2,), (2, 4))
    >>> bool((boxes[:, 2:] - boxes[:, :2] == 8).all())
    True
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    if not isinstance(num_distractors, int) or num_distractors < 0:
        raise ValueError(f"num_distractors must be an int >= 0; got {num_distractors!r}")
    if not isinstance(distractor_size, int) or not 1 <= distractor_size <= 8:
        raise ValueError(f"distractor_size must be an int in 1..8 (a crop of an 8x8 digit); got {distractor_size!r}")
    least = 8 + 2 * distractor_size if num_distractors else 8
    if not isinstance(size, int) or size < least:
        raise ValueError(f"size must be an int >= {least} (8, plus room for a distractor on either side of "
                         f"the digit); got {size!r}")
    digit_images, digit_labels = digits(split)
    if digit_subset is not None:
        digit_images, digit_labels = digit_images[digit_subset], digit_labels[digit_subset]
    N, d, M = len(digit_labels), distractor_size, num_distractors
    if N < 2:
        raise ValueError(f"digit_subset must select at least 2 digits of the {split!r} split (one to label, "
                         f"others to cut fragments from); got {digit_subset!r} ({N} images)")
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, N, (n,), generator=g)                                       # (n,) the labelled digit
    top, left = torch.randint(0, size - 7, (2, n), generator=g)                          # (n,) each
    canvases = torch.zeros(n, size, size)
    if M:
        # a fragment's corner (r, c): uniform over the P corners that keep it outside the digit's box
        corners = torch.arange(size - d + 1)                                            # a corner's row or column
        r, c = corners.repeat_interleave(len(corners)), corners.repeat(len(corners))    # (P,) each, row-major
        outside = ((r + d <= top[:, None]) | (r >= top[:, None] + 8)
                   | (c + d <= left[:, None]) | (c >= left[:, None] + 8))              # (n, P) bool
        corner = torch.multinomial(outside.float(), M, replacement=True, generator=g)  # (n, M) into P
        other = (index[:, None] + torch.randint(1, N, (n, M), generator=g)) % N         # (n, M) never the digit
        crop_r, crop_c = torch.randint(0, 9 - d, (2, n, M), generator=g)                # (n, M) each, in the source
        within = torch.arange(d)
        src_rows = (crop_r[..., None] + within)[..., :, None]                           # (n, M, d, 1)
        src_cols = (crop_c[..., None] + within)[..., None, :]                           # (n, M, 1, d)
        fragments = digit_images[other[..., None, None], 0, src_rows, src_cols]         # (n, M, d, d)
        rows = (r[corner][..., None] + within)[..., :, None]                            # (n, M, d, 1)
        cols = (c[corner][..., None] + within)[..., None, :]                            # (n, M, 1, d)
        flat = torch.arange(n)[:, None, None, None] * size * size + rows * size + cols  # (n, M, d, d)
        canvases.view(-1).scatter_reduce_(0, flat.flatten(), fragments.flatten(), reduce="amax")
    within = torch.arange(8)
    rows, cols = (top[:, None] + within)[:, :, None], (left[:, None] + within)[:, None, :]   # (n, 8, 1), (n, 1, 8)
    b = torch.arange(n)[:, None, None]
    canvases[b, rows, cols] = canvases[b, rows, cols].maximum(digit_images[index, 0])       # the box: only the digit
    boxes = torch.stack([top, left, top + 8, left + 8], dim=1)                              # (n, 4)
    return canvases.unsqueeze(1), digit_labels[index].clone(), boxes


def caption(labels):
    """Digit labels -> words: ``[3, 1, 4]`` -> ``"three one four"``."""
    return " ".join(DIGIT_WORDS[int(d)] for d in labels)


@functools.lru_cache(maxsize=None)
def _photo(name):
    if name not in PHOTOS:
        raise ValueError(f"photo must be one of {PHOTOS}; got {name!r}")
    bunch = _sklearn_datasets().load_sample_images()
    index = [path.split("/")[-1].split("\\")[-1] for path in bunch.filenames].index(name)
    return torch.tensor(bunch.images[index], dtype=torch.float32).permute(2, 0, 1) / 255.0   # (3, 427, 640)


def photo(name="china.jpg", height=96, width=144):
    """One of scikit-learn's two sample photographs, resized (area averaging).

    Args:
        name: ``"china.jpg"`` or ``"flower.jpg"``.
        height, width: output size in pixels.

    Returns:
        float32 (3, height, width), RGB in [0, 1].

    Raises:
        ValueError: an unknown name or a non-positive size.

    >>> photo(height=48, width=72).shape
    torch.Size([3, 48, 72])
    """
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive ints; got {height!r}, {width!r}")
    image = _photo(name)
    return F.interpolate(image[None], size=(height, width), mode="area")[0].clamp(0, 1)
