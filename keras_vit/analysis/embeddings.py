"""What the embeddings learned: position-embedding similarity (Fig. 7 centre) and the
principal components of the patch-embedding filters (Fig. 7 left)."""

import numpy as np
from keras import ops

from keras_vit.layers.patch_encoder import PatchEncoder


def _encoder(model):
    return next(layer for layer in model.layers if isinstance(layer, PatchEncoder))


def patch_position_embeddings(model):
    """The position embedding of each patch, (rows, cols, D), for 1-D and 2-D learned tables.

    The class token's row (1-D) is left out: it has no place on the grid.
    """
    encoder = _encoder(model)
    rows, cols = encoder.grid_size
    if encoder.position_embedding == "learned_1d":
        table = ops.convert_to_numpy(encoder.pos_embedding)[0, int(encoder.use_class_token):]
        return table.reshape(rows, cols, -1)
    if encoder.position_embedding == "learned_2d":
        row = ops.convert_to_numpy(encoder.pos_embedding_row)
        col = ops.convert_to_numpy(encoder.pos_embedding_col)
        half = row.shape[-1]
        return np.concatenate(
            [np.broadcast_to(row[:, None], (rows, cols, half)),
             np.broadcast_to(col[None, :], (rows, cols, half))], axis=-1)
    raise ValueError(
        f"The model's position_embedding is {encoder.position_embedding!r}: only learned "
        "absolute embeddings ('learned_1d', 'learned_2d') have a similarity map."
    )


def position_embedding_similarity(model):
    """Cosine similarity between each patch's position embedding and every other's.

    Returns:
        (rows, cols, rows, cols): entry [i, j] is the map of patch (i, j) against all patches;
        the diagonal is 1 and the array is symmetric.
    """
    table = patch_position_embeddings(model).astype(np.float64)
    rows, cols, d = table.shape
    flat = table.reshape(rows * cols, d)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=-1, keepdims=True), 1e-12)
    return (flat @ flat.T).reshape(rows, cols, rows, cols)


def patch_embedding_filters(model, num_components=28):
    """Top principal components of the linear patch projection E, as image tiles.

    E has D filters of P*P*C values each (its columns); they are centred and decomposed
    with an SVD. The components come back as (P, P, C) tiles, scaled to [0, 1] each, for
    display as RGB images, with the share of variance each explains (in decreasing order).

    Returns:
        (tiles (k, P, P, C) float32, explained_variance_ratio (k,)).
    """
    kernel = ops.convert_to_numpy(_encoder(model).kernel).astype(np.float64)
    ph, pw, channels, d = kernel.shape
    filters = kernel.reshape(ph * pw * channels, d).T  # (D, P*P*C): one row per filter
    centred = filters - filters.mean(axis=0, keepdims=True)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    k = min(num_components, len(singular))
    tiles = components[:k].reshape(k, ph, pw, channels)
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    high = tiles.max(axis=(1, 2, 3), keepdims=True)
    tiles = (tiles - low) / np.maximum(high - low, 1e-12)
    return tiles.astype("float32"), variance[:k] / variance.sum()
