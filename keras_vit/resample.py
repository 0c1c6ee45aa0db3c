"""Bicubic resampling with antialiasing, as timm resamples position embeddings.

timm's `resample_abs_pos_embed` calls
`torch.nn.functional.interpolate(grid, size=new, mode="bicubic", antialias=True,
align_corners=False)`. This is the NumPy equivalent (float64), written from the algorithm of
PyTorch's separable antialiased kernels (`aten/src/ATen/native/cpu/UpSampleKernel.cpp`, itself
Pillow's resampling):

- scale = in / out (the output size is given, no `scale_factor`);
- output pixel i is centred at `scale * (i + 0.5)` in input coordinates;
- the filter is Keys' cubic convolution with a = -0.5 (note: *not* the a = -0.75 of the
  non-antialiased `bicubic` mode), stretched by `scale` when downsampling (support 2 * scale)
  and unstretched when upsampling (support 2);
- taps outside the input are dropped and the remaining weights renormalised to sum to 1
  (no edge replication);
- rows and columns are resampled separately.

`keras_vit.checkpoint.resample_position_embedding(..., method="bicubic")` uses it; the official
algorithm (scipy zoom, order 1) is the default everywhere else.
"""

import numpy as np

_A = -0.5  # Pillow / torch antialias cubic coefficient


def _cubic(x):
    x = np.abs(x)
    out = np.zeros_like(x)
    near = x < 1.0
    far = (x >= 1.0) & (x < 2.0)
    xn, xf = x[near], x[far]
    out[near] = ((_A + 2.0) * xn - (_A + 3.0)) * xn * xn + 1.0
    out[far] = ((_A * xf - 5.0 * _A) * xf + 8.0 * _A) * xf - 4.0 * _A
    return out


def resize_weights(in_size, out_size):
    """The (out_size, in_size) matrix W with `resized = W @ signal` along one axis."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"Sizes must be positive, got {in_size} -> {out_size}.")
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        # Same truncations as torch (int() of a non-negative float == floor).
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        taps = np.arange(xmin, xmax)
        w = _cubic((taps - center + 0.5) * inv_scale)
        total = w.sum()
        if total != 0.0:
            w = w / total
        weights[i, xmin:xmax] = w
    return weights


def bicubic_resize(grid, size):
    """Resizes a (rows, cols, D) array to (size[0], size[1], D).

    Matches `torch.nn.functional.interpolate(x, size, mode="bicubic", antialias=True,
    align_corners=False)` on the (1, D, rows, cols) layout.

    Example:

    >>> import numpy as np
    >>> tuple(bicubic_resize(np.ones((4, 4, 2)), (6, 3)).shape)
    (6, 3, 2)
    >>> float(bicubic_resize(np.ones((4, 4, 1)), (7, 7)).max())  # weights sum to one
    1.0
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 3:
        raise ValueError(f"Expected a (rows, cols, D) grid, got shape {grid.shape}.")
    rows, cols = int(size[0]), int(size[1])
    w_rows = resize_weights(grid.shape[0], rows)
    w_cols = resize_weights(grid.shape[1], cols)
    # torch applies the horizontal pass first, then the vertical one; in float64 the order
    # only changes rounding.
    out = np.einsum("jw,hwd->hjd", w_cols, grid)
    return np.einsum("ih,hjd->ijd", w_rows, out)


# --------------------------------------------------------------------------- without antialias

_A_PLAIN = -0.75  # torch's (and OpenCV's) coefficient of `mode="bicubic"` without antialias


def _plain_cubic_weights(t):
    """The four tap weights at offsets -1, 0, 1, 2 for a fractional position t in [0, 1]."""
    a = _A_PLAIN
    near = lambda x: ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0  # noqa: E731  |x| <= 1
    far = lambda x: ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a  # noqa: E731  1 < |x| < 2
    return np.array([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)])


def plain_bicubic_weights(in_size, out_size, scale_factor=None):
    """The (out_size, in_size) matrix of torch's `interpolate(mode="bicubic",
    align_corners=False)` (no antialias) along one axis.

    Output pixel i reads the input at x = (i + 0.5) / s - 0.5, with s = `scale_factor` when
    one is given (torch then uses it as it is, not out / in) and out / in otherwise; the
    four taps floor(x) - 1 .. floor(x) + 2 are clamped to the edge (edge replication), the
    weights are Keys' cubic convolution with a = -0.75 (ATen's `UpSampleKernel.cpp`,
    `HelperInterpCubic` and `guard_index_and_lambda`).
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"Sizes must be positive, got {in_size} -> {out_size}.")
    step = 1.0 / scale_factor if scale_factor else in_size / out_size
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        real = step * (i + 0.5) - 0.5
        index = min(int(np.floor(real)), in_size - 1)
        t = min(max(real - index, 0.0), 1.0)
        for offset, w in zip(range(-1, 3), _plain_cubic_weights(t)):
            weights[i, min(max(index + offset, 0), in_size - 1)] += w
    return weights


def plain_bicubic_resize(grid, size, scale_factor=None):
    """Resizes a (rows, cols, D) array to (size[0], size[1], D) as
    `torch.nn.functional.interpolate(x, size, mode="bicubic", align_corners=False)` does on
    the (1, D, rows, cols) layout, or with `scale_factor=(s_rows, s_cols)` in place of the
    size (the output is then floor(rows * s_rows) x floor(cols * s_cols), which must equal
    `size`). HF's Dinov2, SigLIP and ViTMAE (`interpolate_pos_encoding`) and MAE's and
    DeiT's fine-tuning code resample with the size; the original DINOv2 code with a scale.

    Example:

    >>> import numpy as np
    >>> grid = np.arange(16.0).reshape(4, 4, 1)
    >>> bool(np.allclose(plain_bicubic_resize(grid, (4, 4)), grid))   # same size: unchanged
    True
    >>> tuple(plain_bicubic_resize(grid, (6, 2)).shape)
    (6, 2, 1)
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 3:
        raise ValueError(f"Expected a (rows, cols, D) grid, got shape {grid.shape}.")
    rows, cols = int(size[0]), int(size[1])
    s_rows, s_cols = scale_factor if scale_factor is not None else (None, None)
    if scale_factor is not None and (int(np.floor(grid.shape[0] * s_rows)) != rows
                                     or int(np.floor(grid.shape[1] * s_cols)) != cols):
        raise ValueError(f"scale_factor {scale_factor} does not give {size} from {grid.shape[:2]}.")
    w_rows = plain_bicubic_weights(grid.shape[0], rows, s_rows)
    w_cols = plain_bicubic_weights(grid.shape[1], cols, s_cols)
    out = np.einsum("jw,hwd->hjd", w_cols, grid)
    return np.einsum("ih,hjd->ijd", w_rows, out)
