"""Position embeddings resampled inside the graph, to the patch grid of each call.

A model built with `input_shape=(None, None, 3)` stores its position embedding at the grid it
was trained at and resamples it here, on every call, to the grid of that call's images, with
the algorithms `keras_vit.checkpoint.resample_position_embedding` runs once at load time:

- `"official"`: bilinear with aligned corners, as `scipy.ndimage.zoom(order=1)` in vit_jax;
- `"bicubic"`: antialiased bicubic (Keys' a = -0.5, taps outside the grid dropped and the
  rest renormalised), as timm's `torch.nn.functional.interpolate(..., antialias=True)`;
  the NumPy form is `keras_vit.resample.resize_weights`;
- `"bicubic_no_antialias"`: torch's plain bicubic (a = -0.75, four taps clamped to the edge),
  as HF's Dinov2, SigLIP and ViTMAE; `"dinov2"`: the same with the original DINOv2 code's
  scale factor (new + 0.1) / old, which that code skips at the stored grid, as here (NumPy:
  `keras_vit.resample.plain_bicubic_weights`).

Both are separable: one (new, old) weight matrix per axis, built with `keras.ops` from the
call's grid, which may be a tensor (TensorFlow graphs with unknown image sizes). The matrices
are applied as weighted sums of whole rows (one multiply-add per stored row), not as matrix
products: GPUs run float32 products in reduced precision (TF32) by default, and a sum of
exact 1.0 and 0.0 weights leaves a row bit-equal, so the trained grid maps to itself exactly
even when the graph cannot tell the grid in advance. When the grid is known while tracing and
equals the stored one, nothing is resampled at all.
"""

from keras import ops

from keras_vit.layers.patches import grid_size
from keras_vit.layers.resnet import stem_output_size
from keras_vit.layers.utils import to_pair

METHODS = ("official", "bicubic", "bicubic_no_antialias", "dinov2")
_CUBIC_A = -0.5  # the antialiased kernels' coefficient (Pillow, PyTorch)
_PLAIN_CUBIC_A = -0.75  # torch's `mode="bicubic"` without antialias
_DINOV2_OFFSET = 0.1  # the original DINOv2 code's `interpolate_offset`


def check_method(method):
    if method not in METHODS:
        raise ValueError(
            f"Unknown pos_embed_resample {method!r}; expected one of {', '.join(METHODS)}."
        )


def is_static_grid(grid, stored):
    """Whether `grid` is known while tracing and equals `stored`: nothing to resample."""
    return all(isinstance(n, int) for n in grid) and tuple(grid) == tuple(stored)


def axis_weights(old, new, method="official"):
    """The (new, old) float32 matrix W with `resampled = W @ signal` along one axis.

    Args:
        old: the stored length (a Python int).
        new: the wanted length: an int or a scalar integer tensor.
        method: one of `METHODS` (see the module docstring).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> np.round(ops.convert_to_numpy(axis_weights(3, 5)), 3).tolist()[1]   # aligned corners
    [0.5, 0.5, 0.0]
    >>> ops.convert_to_numpy(axis_weights(4, 4, "bicubic")).tolist()[2]      # the identity
    [0.0, 0.0, 1.0, 0.0]
    """
    check_method(method)
    if method == "official":
        return _bilinear_aligned_corners(old, new)
    if method == "bicubic":
        return _antialiased_bicubic(old, new)
    return _plain_bicubic(old, new, _DINOV2_OFFSET if method == "dinov2" else 0.0)


def _bilinear_aligned_corners(old, new):
    # Output i sits at i * (old - 1) / (new - 1) in input coordinates (0 for new == 1, as
    # scipy). Integer arithmetic finds the left tap exactly; only the fraction is rounded.
    i = ops.arange(new, dtype="int32")
    span = ops.maximum(ops.cast(new, "int32") - 1, 1)
    position = i * (old - 1)
    left = position // span
    frac = ops.cast(position - left * span, "float32") / ops.cast(span, "float32")
    right = ops.minimum(left + 1, old - 1)
    frac = frac[:, None]
    return ops.one_hot(left, old) * (1.0 - frac) + ops.one_hot(right, old) * frac


def _cubic(x, a=_CUBIC_A):
    x = ops.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return ops.where(x < 1.0, near, ops.where(x < 2.0, far, ops.zeros_like(x)))


def _antialiased_bicubic(old, new):
    # As keras_vit.resample.resize_weights: output i is centred at scale * (i + 0.5); the filter
    # is stretched by the scale when shrinking; taps in [xmin, xmax) only, renormalised.
    new_f = ops.cast(new, "float32")
    scale = float(old) / new_f
    shrinking = scale >= 1.0
    support = ops.where(shrinking, 2.0 * scale, 2.0)
    inv_scale = ops.where(shrinking, 1.0 / scale, 1.0)
    centre = scale * (ops.cast(ops.arange(new, dtype="int32"), "float32") + 0.5)
    xmin = ops.maximum(ops.floor(centre - support + 0.5), 0.0)[:, None]
    xmax = ops.minimum(ops.floor(centre + support + 0.5), float(old))[:, None]
    taps = ops.cast(ops.arange(old, dtype="int32"), "float32")[None, :]
    inside = ops.logical_and(taps >= xmin, taps < xmax)
    weights = ops.where(inside, _cubic((taps - centre[:, None] + 0.5) * inv_scale), 0.0)
    total = ops.sum(weights, axis=1, keepdims=True)
    return weights / ops.where(total == 0.0, 1.0, total)


def _plain_bicubic(old, new, offset=0.0):
    # As keras_vit.resample.plain_bicubic_weights: output i reads the input at
    # (i + 0.5) * old / (new + offset) - 0.5; taps floor - 1 .. floor + 2 clamped to the edge.
    # With an offset the stored grid does not map to itself: it is kept as it is (the
    # identity), as the DINOv2 code returns its stored embedding for the stored grid.
    new_f = ops.cast(new, "float32")
    step = float(old) / (new_f + offset)
    real = step * (ops.cast(ops.arange(new, dtype="int32"), "float32") + 0.5) - 0.5
    index = ops.minimum(ops.floor(real), float(old - 1))
    t = ops.clip(real - index, 0.0, 1.0)
    weights = 0.0
    for tap, distance in zip(range(-1, 3), (t + 1.0, t, 1.0 - t, 2.0 - t)):
        position = ops.cast(ops.clip(index + tap, 0.0, float(old - 1)), "int32")
        weight = _cubic(distance, _PLAIN_CUBIC_A)[:, None]
        weights = weights + ops.one_hot(position, old) * weight
    if offset:
        # (new, old); the identity where new == old, its only use.
        identity = ops.one_hot(ops.minimum(ops.arange(new, dtype="int32"), old - 1), old)
        weights = ops.where(ops.equal(ops.cast(new, "int32"), old), identity, weights)
    return weights


def _weigh_rows(weights, grid, axis):
    """sum_j weights[:, j] * grid[j] along `axis` (0 or 1) of a (rows, cols, D) grid: one
    multiply-add per stored row, exact for weights of 1.0 and 0.0."""
    out = None
    for j in range(grid.shape[axis]):
        w = weights[:, j]
        if axis == 0:
            term = w[:, None, None] * grid[j][None, :, :]
        else:
            term = w[None, :, None] * grid[:, j][:, None, :]
        out = term if out is None else out + term
    return out


def resample_grid(grid, size, method="official"):
    """Resamples a (rows, cols, D) grid to `size` = (new rows, new cols), ints or tensors.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> grid = np.arange(2 * 2, dtype="float32").reshape(2, 2, 1)
    >>> ops.convert_to_numpy(resample_grid(grid, (3, 2)))[:, :, 0].tolist()
    [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]
    """
    grid = ops.cast(grid, "float32")
    rows, cols = grid.shape[0], grid.shape[1]
    if not is_static_grid(size[:1], (rows,)):
        grid = _weigh_rows(axis_weights(rows, size[0], method), grid, axis=0)
    if not is_static_grid(size[1:], (cols,)):
        grid = _weigh_rows(axis_weights(cols, size[1], method), grid, axis=1)
    return grid


def resample_position_embedding(posemb, stored_grid, grid, num_prefix_tokens, method="official"):
    """A (1, prefix + rows * cols, D) embedding on `stored_grid` resampled to `grid`.

    The prefix rows (the class token's) are kept as they are; the patch rows are resampled as
    a (rows, cols, D) grid. Returns the embedding itself when `grid` is `stored_grid` while
    tracing.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> posemb = np.random.default_rng(0).normal(size=(1, 1 + 4 * 4, 8)).astype("float32")
    >>> tuple(resample_position_embedding(posemb, (4, 4), (3, 5), 1).shape)
    (1, 16, 8)
    """
    if is_static_grid(grid, stored_grid):
        return posemb
    rows, cols = stored_grid
    width = posemb.shape[-1]
    prefix = posemb[:, :num_prefix_tokens]
    patches = ops.reshape(posemb[0, num_prefix_tokens:], (rows, cols, width))
    patches = resample_grid(patches, grid, method)
    patches = ops.reshape(patches, (1, -1, width))
    return ops.concatenate([ops.cast(prefix, patches.dtype), patches], axis=1)


def resample_table(table, length, method="official"):
    """A (n, D) table of per-row (or per-column) embeddings resampled to `length` rows, as the
    matching axis of a 2-D grid (the 2-D embedding's row and column tables)."""
    if is_static_grid((length,), (table.shape[0],)):
        return table
    return resample_grid(ops.cast(table, "float32")[:, None, :], (length, 1), method)[:, 0, :]


def any_size_grid(image_size, patch_size, position_embedding="learned_1d",
                  resnet_num_layers=None):
    """The grid a model of any image size stores its position embedding at: the patch grid of
    `image_size` (for a hybrid, of its ResNet's feature map)."""
    if position_embedding == "relative":
        raise ValueError("position_embedding='relative' needs a fixed image size (its table "
                         "holds one embedding per offset between token indices); give "
                         "input_shape a height and a width, or use 'learned_1d' or "
                         "'learned_2d'.")
    size = to_pair(image_size, "image_size")
    if resnet_num_layers is not None:
        size = tuple(stem_output_size(n, tuple(resnet_num_layers)) for n in size)
    return grid_size(size, patch_size)
