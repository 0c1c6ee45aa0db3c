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
