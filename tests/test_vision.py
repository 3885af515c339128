"""Lesson 11: image loaders, spatial attention pooling, attention maps, patch self-attention, checks."""
import math

import pytest
import torch
from torch.nn import functional as F

from attn_course import checks, widgets
from attn_course.apps import vision
from attn_course.broken import attention_map_v2
from attn_course.checks import CheckFailure
from attn_course.data import images


# ----------------------------------------------------------------------------------------- data
def test_digit_split_is_deterministic_disjoint_and_complete():
    train_x, train_y = images.digits("train")
    test_x, test_y = images.digits("test")
    assert train_x.shape == (1438, 1, 8, 8) and test_x.shape == (359, 1, 8, 8)
    assert float(train_x.min()) >= 0.0 and float(train_x.max()) == 1.0
    all_x, all_y = images.digits("all")
    assert len(all_y) == len(train_y) + len(test_y)
    assert torch.equal(torch.sort(torch.cat([train_y, test_y])).values, torch.sort(all_y).values)
    again_x, _ = images.digits("test")
    assert torch.equal(again_x, test_x)
    other_x, _ = images.digits("test", seed=1)
    assert not torch.equal(other_x, test_x)
    # no test image is a training image (the digits have no exact duplicates across the split)
    dist = torch.cdist(test_x.flatten(1), train_x.flatten(1))
    assert float(dist.min()) > 0


def test_upsampled_digits_keep_the_picture():
    small, _ = images.digits("test")
    big, _ = images.digits("test", size=16)
    assert big.shape == (359, 1, 16, 16)
    assert float((F.avg_pool2d(big, 2) - small).abs().mean()) < 0.1      # bilinear: a smoothed copy
    assert float((F.avg_pool2d(big, 2) - small.roll(1, -1)).abs().mean()) > 0.15


@pytest.mark.parametrize("bad", [dict(split="val"), dict(size=4), dict(test_fraction=1.0)])
def test_digits_refuses_bad_arguments(bad):
    with pytest.raises(ValueError):
        images.digits(**bad)


def test_strips_are_made_of_held_out_digits_only():
    strips, labels = images.digit_strips("test", n=40, seed=3)
    test_x, test_y = images.digits("test")
    assert strips.shape == (40, 1, 8, 24) and labels.shape == (40, 3)
    for b in range(40):
        for i in range(3):
            block = strips[b, 0, :, 8 * i:8 * i + 8].flatten()
            match = (test_x.flatten(1) == block).all(1).nonzero().flatten()
            assert len(match) >= 1 and int(test_y[match[0]]) == int(labels[b, i])
    assert images.caption([3, 1, 4]) == "three one four"


def test_photo_is_real_and_resized():
    photo = images.photo("china.jpg", height=48, width=72)
    assert photo.shape == (3, 48, 72) and photo.dtype == torch.float32
    assert 0.2 < float(photo.mean()) < 0.8 and float(photo.std()) > 0.1
    with pytest.raises(ValueError):
        images.photo("lena.png")


# ------------------------------------------------------------------------------ attention pooling
@pytest.mark.parametrize("B,C,H,W,per_image", [(1, 4, 3, 5, False), (3, 8, 2, 7, True), (2, 16, 1, 1, False)])
def test_spatial_attention_pool_equals_sdpa_in_float64(B, C, H, W, per_image):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    query = torch.randn(*((B, C) if per_image else (C,)), generator=g, dtype=torch.float64)
    pooled, attn_weights = vision.spatial_attention_pool(features, query)
    keys = features.flatten(2).transpose(1, 2)                                        # (B, S, C)
    expected = F.scaled_dot_product_attention(query.expand(B, C)[:, None], keys, keys)[:, 0]
    torch.testing.assert_close(pooled, expected)
    # the weights by hand, position s = h * W + w
    for b in range(B):
        q = query if query.dim() == 1 else query[b]
        scores = torch.tensor([[features[b, :, h, w] @ q / math.sqrt(C) for w in range(W)] for h in range(H)],
                              dtype=torch.float64)
        torch.testing.assert_close(attn_weights[b].view(H, W), torch.softmax(scores.flatten(), 0).view(H, W))


def test_zero_query_is_average_pooling():
    features = torch.randn(2, 5, 4, 3)
    pooled, attn_weights = vision.spatial_attention_pool(features, torch.zeros(5))
    avg, uniform = vision.global_average_pool(features)
    torch.testing.assert_close(pooled, avg)
    torch.testing.assert_close(attn_weights, uniform)


def test_spatial_attention_pool_refuses_bad_shapes():
    with pytest.raises(ValueError):
        vision.spatial_attention_pool(torch.randn(2, 3, 4), torch.randn(3))
    with pytest.raises(ValueError):
        vision.spatial_attention_pool(torch.randn(2, 3, 4, 4), torch.randn(4))


def test_attention_map_is_row_major_and_broken_is_transposed():
    w = torch.arange(12.0).view(1, 12)
    expected = torch.tensor([[[w[0, h * 4 + x] for x in range(4)] for h in range(3)]])
    torch.testing.assert_close(vision.attention_map(w, 3, 4), expected)
    broken = attention_map_v2(w, 3, 4)
    assert broken.shape == expected.shape and not torch.equal(broken, expected)
    torch.testing.assert_close(broken, w.view(1, 4, 3).transpose(1, 2))


# ------------------------------------------------------------------------------------- checks
def _einsum_pool(features, query):
    B, C, H, W = features.shape
    keys = features.reshape(B, C, H * W)
    w = torch.softmax(torch.einsum("bc,bcs->bs", query.expand(B, C), keys) / C ** 0.5, dim=-1)
    return torch.einsum("bs,bcs->bc", w, keys), w


def _softmax_over_channels(features, query):
    B, C, H, W = features.shape
    keys = features.flatten(2)
    w = torch.softmax(query.expand(B, C)[:, :, None] * keys / C ** 0.5, dim=1)       # (B, C, S) over C
    return (w * keys).sum(-1), w.mean(1)


def _column_major(features, query):
    return vision.spatial_attention_pool(features.transpose(2, 3), query)


def _no_scale(features, query):
    return vision.spatial_attention_pool(features, query * features.shape[1] ** 0.5)


def _average(features, query):
    return vision.global_average_pool(features)


def test_pool_check_passes_on_correct_versions():
    for fn in (vision.spatial_attention_pool, _einsum_pool):
        checks.check_spatial_attention_pool(fn)
        checks.check_spatial_attention_pool(fn, thorough=True)


@pytest.mark.parametrize("fn,kind", [(_softmax_over_channels, "normalisation"), (_column_major, "values"),
                                     (_no_scale, "values"), (_average, "values")])
def test_pool_check_catches_mistakes(fn, kind):
    with pytest.raises(CheckFailure) as err:
        checks.check_spatial_attention_pool(fn, thorough=True)
    assert err.value.kind == kind


def test_pool_check_names_column_major_order():
    with pytest.raises(CheckFailure, match="column-major"):
        checks.check_spatial_attention_pool(_column_major)


def test_map_check_passes_on_correct_versions_and_catches_the_transpose():
    checks.check_attention_map(vision.attention_map, thorough=True)
    checks.check_attention_map(lambda w, h, x: w.unflatten(1, (h, x)), thorough=True)
    with pytest.raises(CheckFailure, match="mirrored") as err:
        checks.check_attention_map(attention_map_v2)
    assert err.value.kind == "values"
    with pytest.raises(CheckFailure) as err:                 # a plain (B, W, H) view: wrong shape
        checks.check_attention_map(lambda w, h, x: w.view(w.shape[0], x, h))
    assert err.value.kind == "shape"


# ------------------------------------------------------------------------------ model and photo
def test_digit_cnn_shapes_and_zero_query_equals_average():
    torch.manual_seed(0)
    att = vision.DigitCNN("attention").eval()
    avg = vision.DigitCNN("average").eval()
    avg.load_state_dict(att.state_dict())
    x = torch.rand(3, 1, 16, 16)
    logits, w = att(x)
    assert logits.shape == (3, 10) and w.shape == (3, 64)
    torch.testing.assert_close(logits, avg(x)[0])           # the query starts at 0: attention = average
    with pytest.raises(ValueError):
        vision.DigitCNN("max")


def test_attention_on_ink_of_uniform_weights_is_the_ink_share():
    x, _ = images.digits("test", size=16)
    uniform = torch.full((len(x), 64), 1 / 64)
    on_ink, share = vision.attention_on_ink(uniform, x, 8, 8)
    torch.testing.assert_close(on_ink, share)
    ink = F.avg_pool2d(x, 2).flatten(1) > 0.3
    peaked = ink.float() / ink.float().sum(1, keepdim=True)  # all weight on ink
    assert torch.allclose(vision.attention_on_ink(peaked, x, 8, 8)[0], torch.ones(len(x)))


def test_image_patches_are_the_crops():
    image = torch.rand(3, 16, 24)
    patches, grid = vision.image_patches(image, 8)
    assert grid == (2, 3) and patches.shape == (6, 192)
    for p in range(6):
        r, c = divmod(p, 3)
        torch.testing.assert_close(patches[p].view(3, 8, 8), image[:, 8 * r:8 * r + 8, 8 * c:8 * c + 8])
    with pytest.raises(ValueError):
        vision.image_patches(torch.rand(3, 15, 24), 8)


def test_patch_self_attention_prefers_look_alikes():
    photo = images.photo("china.jpg", 96, 144)
    patches, grid = vision.image_patches(photo, 8)
    emb = vision.colour_texture_features(patches)
    assert emb.shape == (216, 6)
    torch.testing.assert_close(emb[:, :3], patches.view(216, 3, 64).mean(-1))
    w = vision.patch_self_attention(emb, temperature=0.1)
    torch.testing.assert_close(w.sum(-1), torch.ones(216))
    assert torch.equal(w.argmax(-1), torch.arange(216)) or (w.diagonal() >= w.max(-1).values - 1e-6).all()
    sky = w[1 * 18 + 3].view(12, 18)
    assert float(sky[:2].sum()) > 2 * 2 / 12                # the top rows are sky
    dot = vision.patch_self_attention(emb, temperature=1.0, cosine=False)
    torch.testing.assert_close(dot.sum(-1), torch.ones(216))
    with pytest.raises(ValueError):
        vision.patch_self_attention(emb, temperature=0)


def test_patch_picker_is_driven_from_python():
    photo = images.photo("china.jpg", 48, 72)
    patches, grid = vision.image_patches(photo, 8)
    w = vision.patch_self_attention(vision.colour_texture_features(patches))
    picker = widgets.PatchPicker(photo, w, grid, query=(0, 0))
    first_png, first_text = picker.image.value, picker.text()
    picker.pick(5, 8)
    assert picker.row.value == 5 and picker.col.value == 8
    torch.testing.assert_close(picker.weights(), w[5 * 9 + 8].view(6, 9))
    assert picker.image.value != first_png and picker.text() != first_text
    assert picker.text().startswith("query patch (5, 8)")
    with pytest.raises(ValueError):
        widgets.PatchPicker(photo, w[:10], grid)
