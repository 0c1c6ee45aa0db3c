"""What the attention looks at: maps, mean attention distance (Fig. 7 right) and rollout.

All functions take a model built by `keras_vit.ViT` (any backend) or arrays already extracted,
and return NumPy arrays. A model of any image size (`input_shape=(None, None, 3)`) is analysed
on the grid of the images given (`token_layout(model, image_size)`).
"""

import numpy as np
import scipy.ndimage
from keras import ops

from keras_vit import resolution
from keras_vit.layers.patch_encoder import PatchEncoder
from keras_vit.layers.transformer_block import TransformerBlock


def token_layout(model, image_size=None):
    """(grid rows, grid cols, number of prefix tokens, pixel size of a patch (h, w)) of `model`.

    The pixel size is measured on the input image, so a hybrid's 1x1 patches on a 1/16 feature
    map count as 16x16 pixels.

    Args:
        model: a ViT built by this library.
        image_size: (height, width) of the images analysed: needed for a model of any image
            size (`input_shape=(None, None, 3)`), whose grid is each call's; a fixed-size model
            takes its own size only.
    """
    encoder = next(layer for layer in model.layers if isinstance(layer, PatchEncoder))
    if image_size is None and resolution.takes_any_size(model):
        raise ValueError(f"Model '{model.name}' takes images of any size: pass the images' "
                         "image_size=(height, width) to lay out their tokens.")
    height, width = image_size or model.input_shape[1:3]
    rows, cols = resolution.patch_grid(model, (int(height), int(width)))
    return rows, cols, int(encoder.use_class_token), (height / rows, width / cols)


def attention_maps(model, images, batch_size=32):
    """Attention probabilities of every layer and head.

    Runs the model's own layers in order, asking each `TransformerBlock` for its
    probabilities, so no model is rebuilt by hand.

    Args:
        model: a ViT built by this library.
        images: (B, H, W, C) in the model's input range.
        batch_size: images per forward pass.

    Returns:
        float32 array (layers, B, heads, T, T); rows (queries) sum to 1.
    """
    images = np.asarray(images, dtype="float32")
    num_blocks = sum(isinstance(layer, TransformerBlock) for layer in model.layers)
    chunks = []
    for start in range(0, len(images), batch_size):
        x = ops.convert_to_tensor(images[start : start + batch_size])
        per_layer = []
        for layer in model.layers[1:]:
            if isinstance(layer, TransformerBlock):
                x, probs = layer(x, return_attention_scores=True)
                per_layer.append(ops.convert_to_numpy(probs).astype("float32"))
                if len(per_layer) == num_blocks:
                    break  # the final norm and head do not change the attention
            else:
                x = layer(x)
        chunks.append(np.stack(per_layer))
    return np.concatenate(chunks, axis=1)


def patch_centres(rows, cols, patch_pixels):
    """Pixel coordinates (rows*cols, 2) of the patch centres, row-major like the tokens."""
    ph, pw = patch_pixels
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([(r.ravel() + 0.5) * ph, (c.ravel() + 0.5) * pw], axis=-1)


def mean_attention_distance(attention, rows, cols, patch_pixels, num_prefix_tokens=1):
    """The paper's "attention distance" (Fig. 7 right), in pixels, per layer and head.

    For each query patch: the attention-weighted mean of the Euclidean distance between its
    centre and each key patch's centre. Class-token rows and columns are left out and each
    query's weights over patches are renormalised to sum to one. Averaged over query patches
    and images.

    Args:
        attention: (layers, B, heads, T, T) or (B, heads, T, T) probabilities.
        rows, cols: the patch grid.
        patch_pixels: (h, w) of a patch in input pixels.
        num_prefix_tokens: tokens before the patches (1 with a class token).

    Returns:
        (layers, heads) or (heads,) mean distances in pixels.
    """
    attention = np.asarray(attention, np.float64)
    p = num_prefix_tokens
    patches = attention[..., p:, p:]
    patches = patches / patches.sum(-1, keepdims=True)
    centres = patch_centres(rows, cols, patch_pixels)
    distance = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    per_query = (patches * distance).sum(-1)  # (..., B, heads, queries)
    return per_query.mean(axis=-1).mean(axis=-2)


def attention_rollout(attention, add_residual=True, head_fusion="mean"):
    """Attention rollout (Abnar & Zuidema, 2020) through all layers.

    Per layer the heads are fused (mean by default, as in the paper's Fig. 6 / Appendix D.8),
    the identity is added for the residual connection (A <- 0.5 A + 0.5 I, i.e. A + I with rows
    renormalised), and the layers are multiplied from the first to the last:
    R = A_L ... A_2 A_1.

    Args:
        attention: (layers, B, heads, T, T) probabilities.
        add_residual: account for the skip connections as above.
        head_fusion: "mean", "max" or "min" over heads.

    Returns:
        (B, T, T): row i says how much each input token flows into output token i.
    """
    attention = np.asarray(attention, np.float64)
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[head_fusion]
    fused = fuse(attention, axis=2)  # (layers, B, T, T)
    tokens = fused.shape[-1]
    rollout = np.broadcast_to(np.eye(tokens), fused.shape[1:]).copy()
    for layer in fused:
        if add_residual:
            layer = layer + np.eye(tokens)
            layer = layer / layer.sum(-1, keepdims=True)
        rollout = layer @ rollout
    return rollout


def rollout_maps(model, images, add_residual=True, head_fusion="mean", batch_size=32,
                 attention=None):
    """Per-image rollout maps at the input resolution, in [0, 1].

    With a class token the map is its rollout row over the patches; for GAP models, whose
    output averages all tokens, it is the mean of all rows.

    Args:
        attention: the `attention_maps` of these images, if already computed.

    Returns:
        (B, H, W) float32.
    """
    size = np.shape(images)[1:3]
    rows, cols, prefix, _ = token_layout(model, size)
    if attention is None:
        attention = attention_maps(model, images, batch_size)
    rollout = attention_rollout(attention, add_residual, head_fusion)
    weights = rollout[:, 0, prefix:] if prefix else rollout.mean(axis=1)
    return _to_image_maps(weights, rows, cols, size)


def last_layer_class_attention(model, images, batch_size=32, attention=None):
    """The last layer's class-token attention over patches, per head, at input resolution.

    Args:
        attention: the `attention_maps` of these images, if already computed.

    Returns:
        (B, heads, H, W) float32, each map scaled to [0, 1].
    """
    size = np.shape(images)[1:3]
    rows, cols, prefix, _ = token_layout(model, size)
    if not prefix:
        raise ValueError("The model has no class token (classifier='gap'): use rollout_maps.")
    if attention is None:
        attention = attention_maps(model, images, batch_size)
    last = attention[-1]  # (B, heads, T, T)
    b, heads = last.shape[:2]
    maps = _to_image_maps(last[:, :, 0, prefix:].reshape(b * heads, -1), rows, cols, size)
    return maps.reshape(b, heads, *maps.shape[1:])


def _to_image_maps(weights, rows, cols, size):
    grids = weights.reshape(-1, rows, cols)
    zoom = (size[0] / rows, size[1] / cols)
    maps = np.stack([scipy.ndimage.zoom(g, zoom, order=1) for g in grids])
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    return ((maps - low) / np.maximum(high - low, 1e-12)).astype("float32")


__all__ = [
    "attention_maps",
    "attention_rollout",
    "last_layer_class_attention",
    "mean_attention_distance",
    "patch_centres",
    "rollout_maps",
    "token_layout",
]
