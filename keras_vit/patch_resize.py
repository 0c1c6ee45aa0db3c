"""PI-resize: a checkpoint's patch embedding at another patch size (FlexiViT, Eq. 3).

Beyer et al., *FlexiViT: One Model for All Patch Sizes* (CVPR 2023), Sec. 3.4. Resizing a patch
x (p x p, per channel) to p' x p' is linear: resize(x) = B x, with B of shape (p'^2, p^2). A
token of the original model is <x, w>. The PI-resize kernel w' makes the resized patch give
the same token:

    <B x, w'> = <x, w>  for all x   <=>   B^T w' = w,
    w' = argmin_w' E_x[(<x, w> - <Bx, w'>)^2] = (B^T)^+ w            (Eq. 3, x ~ N(0, I))

When upsampling (p' >= p) B has full column rank, so B^T w' = w has exact solutions and the
pseudo-inverse picks the one of least norm: every token is unchanged. When downsampling
(p' < p) no kernel can recover what the resize threw away; the pseudo-inverse is then the
least-squares optimum over Gaussian patches.

B is built column by column from the resize of each basis patch, exactly as big_vision's
`resample_patchemb` does, with the resize the data pipeline uses:

- `"bilinear"` (big_vision): `tf.image.resize(..., "bilinear")`, half-pixel centres, no
  antialiasing;
- `"bicubic"` (timm's `resample_patch_embed`): `torch.nn.functional.interpolate(...,
  "bicubic", antialias=True)` (see `keras_vit.resample`).

`ViT(weights=..., patch_size=P', patch_embed_resample="pi")` and
`keras_vit.load_weights(model, path, patch_embed_resample="pi")` use it when a checkpoint's
`embedding/kernel` has another patch size than the model (the position embedding is resampled
to the new grid as usual, see `pos_embed_resample`).
"""

import numpy as np

from keras_vit.resample import resize_weights as _bicubic_weights

# patch_embed_resample option -> resize whose pseudo-inverse is taken.
PATCH_EMBED_RESAMPLE = {"pi": "bilinear", "pi_bicubic": "bicubic"}


def _bilinear_weights(in_size, out_size):
    """The (out, in) matrix of 1-D linear resizing with half-pixel centres, no antialiasing
    (`tf.image.resize(method="bilinear")`, `torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"Sizes must be positive, got {in_size} -> {out_size}.")
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        centre = min(max((i + 0.5) * scale - 0.5, 0.0), in_size - 1.0)
        low = int(np.floor(centre))
        high = min(low + 1, in_size - 1)
        frac = centre - low
        weights[i, low] += 1.0 - frac
        weights[i, high] += frac
    return weights


def resize_matrix(old_size, new_size, method="bilinear"):
    """B, the (new_h * new_w, old_h * old_w) matrix with `resize(x).ravel() = B @ x.ravel()`
    for one channel of a patch (row-major, as `Patches` and the checkpoint kernel order it).

    Args:
        old_size: (old_h, old_w), or an int for a square patch.
        new_size: (new_h, new_w), or an int.
        method: `"bilinear"` (tf.image.resize, big_vision) or `"bicubic"` (torch
            antialiased bicubic, timm).

    Example:

    >>> import numpy as np
    >>> B = resize_matrix(2, 4)
    >>> B.shape
    (16, 4)
    >>> np.allclose(B.sum(axis=1), 1.0)   # each output pixel is a weighted mean
    True
    """
    old_h, old_w = _pair(old_size)
    new_h, new_w = _pair(new_size)
    if method == "bilinear":
        one_d = _bilinear_weights
    elif method == "bicubic":
        one_d = _bicubic_weights
    else:
        raise ValueError(f"Unknown resize method {method!r}; expected 'bilinear' or 'bicubic'.")
    # Separable: rows then columns, i.e. the Kronecker product on row-major patches.
    return np.kron(one_d(old_h, new_h), one_d(old_w, new_w))


def pi_resize_patch_embedding(kernel, new_patch_size, method="bilinear"):
    """Resamples a patch-embedding kernel so that resized patches give the original tokens.

    Args:
        kernel: the checkpoint's `embedding/kernel`, (P_h, P_w, C, D) (HWIO, as the official
            files and `PatchEncoder.kernel`).
        new_patch_size: int or (P'_h, P'_w).
        method: the patch resize to invert: `"bilinear"` (big_vision) or `"bicubic"` (timm).

    Returns:
        The (P'_h, P'_w, C, D) kernel w' = pinv(B^T) w (FlexiViT Eq. 3), in the input's dtype.
        With p' >= p, `resize(x) . w'` equals `x . w` for every patch x (up to rounding).

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((2, 2, 3, 5)).astype("float32")
    >>> w8 = pi_resize_patch_embedding(w, 8)
    >>> w8.shape
    (8, 8, 3, 5)
    >>> x = rng.standard_normal((2, 2, 3))                        # one 2x2 RGB patch
    >>> B = resize_matrix(2, 8)                                    # its bilinear resize to 8x8
    >>> x8 = np.einsum("nm,mc->nc", B, x.reshape(4, 3)).reshape(8, 8, 3)
    >>> token, token8 = np.einsum("hwc,hwcd->d", x, w), np.einsum("hwc,hwcd->d", x8, w8)
    >>> bool(np.abs(token - token8).max() < 1e-4)
    True
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"Expected a (P_h, P_w, C, D) patch-embedding kernel, got shape "
                         f"{kernel.shape}.")
    old_h, old_w, channels, width = kernel.shape
    new_h, new_w = _pair(new_patch_size)
    if (new_h, new_w) == (old_h, old_w):
        return kernel
    B = resize_matrix((old_h, old_w), (new_h, new_w), method)
    flat = kernel.astype(np.float64).reshape(old_h * old_w, channels * width)
    resized = np.linalg.pinv(B.T) @ flat  # (P'^2, C * D): every channel and output at once
    return resized.reshape(new_h, new_w, channels, width).astype(kernel.dtype)


def _pair(size):
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"Expected an int or (height, width), got {size!r}.")
        return int(size[0]), int(size[1])
    return int(size), int(size)
