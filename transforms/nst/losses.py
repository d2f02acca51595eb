"""Gatys et al. NST losses in keras.ops, one value per image so a batch optimises independently.

The math is the seed's (TensorFlow style-transfer tutorial): Gram matrices averaged over
locations, mean squared errors averaged over layers, and `tf.image.total_variation`.
"""
import math

from keras import ops


def gram_matrix(features):
    """Channel correlations averaged over locations: [B,H,W,C] -> [B,C,C].

    >>> import numpy as np
    >>> x = np.array([[[[1., 2.]], [[3., 4.]]]], "float32")  # B=1, H=2, W=1, C=2
    >>> np.asarray(gram_matrix(x)).tolist()  # ([1,2]^T[1,2] + [3,4]^T[3,4]) / 2
    [[[5.0, 7.0], [7.0, 10.0]]]
    """
    shape = ops.shape(features)
    locations = ops.cast(shape[1] * shape[2], features.dtype)
    return ops.einsum("bijc,bijd->bcd", features, features) / locations


def style_loss(style_features, target_grams, weight=1.0):
    """weight / n_layers * sum over layers of mean((gram - target)^2), per image: [B].

    target_grams[i] is [B,C,C] (one style per image) or [C,C] (shared).

    >>> import numpy as np
    >>> x = np.array([[[[1., 2.]], [[3., 4.]]]], "float32")  # gram [[5,7],[7,10]]
    >>> np.asarray(style_loss([x], [np.zeros((2, 2), "float32")], weight=2.0)).tolist()
    [111.5]
    """
    per_layer = [ops.mean(ops.square(gram_matrix(f) - t), axis=(1, 2)) for f, t in zip(style_features, target_grams)]
    return ops.sum(ops.stack(per_layer), axis=0) * (weight / len(per_layer))


def content_loss(content_features, targets, weight=1.0):
    """weight / n_layers * sum over layers of mean((features - target)^2), per image: [B].

    >>> import numpy as np
    >>> x = np.array([[[[1., 2.]], [[3., 4.]]]], "float32")
    >>> np.asarray(content_loss([x], [np.zeros((2, 1, 2), "float32")], weight=10.0)).tolist()
    [75.0]
    """
    per_layer = [ops.mean(ops.square(f - t), axis=(1, 2, 3)) for f, t in zip(content_features, targets)]
    return ops.sum(ops.stack(per_layer), axis=0) * (weight / len(per_layer))


def total_variation(images):
    """Sum of absolute vertical and horizontal neighbour differences per image, as
    `tf.image.total_variation`: [B,H,W,C] -> [B].

    >>> import numpy as np
    >>> x = np.array([[[[0.], [1.]], [[3.], [3.]]]], "float32")  # 2x2: rows [0,1], [3,3]
    >>> np.asarray(total_variation(x)).tolist()  # vertical 3+2, horizontal 1+0
    [6.0]
    """
    vertical = ops.sum(ops.abs(images[:, 1:, :, :] - images[:, :-1, :, :]), axis=(1, 2, 3))
    horizontal = ops.sum(ops.abs(images[:, :, 1:, :] - images[:, :, :-1, :]), axis=(1, 2, 3))
    return vertical + horizontal


def laplacian(images, pool):
    """The 3x3 Laplacian of `images` average-pooled `pool` x `pool`: [B,H,W,C] -> [B,H/pool,W/pool,C].
    The photo's structure at the scale of a face's features, blind to texture finer than `pool`.

    >>> import numpy as np
    >>> x = np.zeros((1, 6, 6, 1), "float32"); x[0, 2:4, 2:4] = 1.0   # one bright 2x2 square
    >>> np.asarray(laplacian(x, 2))[0, :, :, 0].tolist()  # the bright cell, its neighbours (mirrored at the border)
    [[0.0, -2.0, 0.0], [-2.0, 4.0, -2.0], [0.0, -2.0, 0.0]]
    """
    pooled = ops.average_pool(images, pool, strides=pool, padding="valid")
    padded = ops.pad(pooled, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
    centre = padded[:, 1:-1, 1:-1, :]
    neighbours = padded[:, :-2, 1:-1, :] + padded[:, 2:, 1:-1, :] + padded[:, 1:-1, :-2, :] + padded[:, 1:-1, 2:, :]
    return 4.0 * centre - neighbours


def laplacian_loss(images, photos, pool, weight=1.0):
    """weight x mean((laplacian(gray images) - laplacian(gray photos))^2) per image: [B] (after Li et al.
    2017, "Laplacian-Steered Neural Style Transfer", on the luminance): keeps the photo's edges and shading
    at the pooled scale, which the deep content layer does not see, and leaves the colours to the style
    (bench/FF_RESEARCH.md).

    >>> import numpy as np
    >>> x = np.zeros((1, 6, 6, 1), "float32"); x[0, 2:4, 2:4] = 1.0
    >>> np.asarray(laplacian_loss(x, x, 2)).tolist(), np.asarray(laplacian_loss(x, 0 * x, 2, weight=9.0)).tolist()
    ([0.0], [32.0])
    """
    def gray(x):
        return ops.mean(x, axis=-1, keepdims=True)

    return weight * ops.mean(ops.square(laplacian(gray(images), pool) - laplacian(gray(photos), pool)), axis=(1, 2, 3))


def color_loss(images, photos, pool, weight=1.0):
    """weight x mean((pooled images - pooled photos)^2) per image: [B], both average-pooled `pool` x `pool`
    in RGB. Keeps the photo's colours at the scale of whole regions (a face, a suit) and leaves what is
    finer (strokes, dots, outlines) to the style: NST starts from the photo and keeps them, a trained
    network repainted whole regions in the style's colours (pop_art's blue faces, bench/FF_RESEARCH.md).

    >>> import numpy as np
    >>> x = np.zeros((1, 4, 4, 3), "float32"); x[0, :2, :2] = 1.0   # one white quadrant
    >>> np.asarray(color_loss(x, 0 * x, 2)).tolist(), np.asarray(color_loss(x, 0 * x, 4)).tolist()
    ([0.25], [0.0625])
    """
    difference = ops.average_pool(images - photos, pool, strides=pool, padding="valid")  # pooling is linear
    return weight * ops.mean(ops.square(difference), axis=(1, 2, 3))


def saturation_loss(logits, limit, weight=1.0):
    """weight x mean(relu(|logits| - logit(1 - limit))^2) per image: [B]. A barrier on the logits of a
    sigmoid output beyond [limit, 1 - limit]: a saturated pixel's sigmoid gradient vanishes, so without it
    a region pushed to pure blue early in training stays blue (the stamps of bench/FF_RESEARCH.md r28).

    >>> import numpy as np
    >>> z = np.array([[[[0.0, 2.0, -5.0]]]], "float32")   # one pixel; only -5 is beyond logit(0.98) = 3.89
    >>> round(float(np.asarray(saturation_loss(z, 0.02))[0]), 4)   # (5 - 3.8918)^2 / 3 channels
    0.4094
    """
    excess = ops.relu(ops.abs(logits) - math.log((1 - limit) / limit))
    return weight * ops.mean(ops.square(excess), axis=(1, 2, 3))


def loss_terms(split, settings, features, images, content_targets, target_grams):
    """Weighted per-image loss terms of `settings`, each [B]. `features(images)` runs the extractor
    model, `split` separates its outputs into (style, content) features (cast to float32, so a
    bfloat16 model's losses and gradients are still accumulated in float32)."""
    style_features, content_features = split(features(images))
    style_features = [ops.cast(f, "float32") for f in style_features]
    content_features = [ops.cast(f, "float32") for f in content_features]
    style = style_loss(style_features, target_grams, settings.style_weight * settings.style_strength)
    content = content_loss(content_features, content_targets, settings.content_weight)
    # style_strength scales the stylising terms against the content term: the style term and the
    # total variation that regularises it (alone, TV would only blur the photo), so 0 keeps the photo.
    tv = settings.tv_weight * settings.style_strength * total_variation(images)
    return {"total": style + content + tv, "content": content, "style": style, "tv": tv}
