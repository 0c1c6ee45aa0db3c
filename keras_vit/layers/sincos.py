"""A fixed 2-D sine-cosine position embedding, as MAE's encoder uses (He et al., *Masked
Autoencoders Are Scalable Vision Learners*, CVPR 2022; facebookresearch/mae
`util/pos_embed.py`, after MoCo v3).

For the patch in row r, column c of the grid and the D/4 frequencies
omega_k = 10000^(-k / (D/4)), k = 0 .. D/4 - 1, the embedding is

    [sin(c omega), cos(c omega), sin(r omega), cos(r omega)]

(the column half first: MAE's code builds `np.meshgrid(grid_w, grid_h)` and encodes its first
plane, the column index, in the first half; HF's `ViTMAEModel` keeps that order). A class
token's row is zero. `ViT(position_embedding="sincos_2d")` holds this table as a
non-trainable weight (a fixed buffer in MAE and HF), so MAE checkpoints, which store it, load
as they are. big_vision's `posemb_sincos_2d` differs in its frequencies (k / (D/4 - 1)) and is
not this one.
"""

import numpy as np


def sincos_2d_position_embedding(rows, cols, width, class_token=False, temperature=10000.0):
    """The (1, [1 +] rows * cols, width) table, float64, patches in row-major order.

    Args:
        rows, cols: the patch grid.
        width: D; must be a multiple of 4.
        class_token: prepend a zero row for the class token.
        temperature: the frequency base (10000).

    Example:

    >>> table = sincos_2d_position_embedding(2, 3, 8, class_token=True)
    >>> table.shape
    (1, 7, 8)
    >>> table[0, 0].tolist() == [0.0] * 8       # the class token's row
    True
    >>> [round(float(v), 4) for v in table[0, 2]]     # row 0, column 1
    [0.8415, 0.01, 0.5403, 1.0, 0.0, 0.0, 1.0, 1.0]
    """
    if width % 4:
        raise ValueError(f"A 2-D sin-cos position embedding needs a width divisible by 4, "
                         f"got {width}.")
    quarter = width // 4
    omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / quarter)
    row, col = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64),
                           indexing="ij")
    angles_col = np.outer(col.ravel(), omega)
    angles_row = np.outer(row.ravel(), omega)
    table = np.concatenate([np.sin(angles_col), np.cos(angles_col),
                            np.sin(angles_row), np.cos(angles_row)], axis=1)
    if class_token:
        table = np.concatenate([np.zeros((1, width)), table], axis=0)
    return table[None]


def is_sincos_2d_table(posemb, atol=1e-5):
    """Whether a (1, [1 +] g * g, D) position embedding is this table on its square grid (with
    or without a zero class row): how MAE's checkpoints are recognised.

    Example:

    >>> is_sincos_2d_table(sincos_2d_position_embedding(3, 3, 8, class_token=True))
    True
    >>> is_sincos_2d_table(np.zeros((1, 10, 8)))
    False
    """
    shape = np.shape(posemb)
    if len(shape) != 3 or shape[-1] % 4:
        return False
    for rows in (1, 0):
        side = int(round(np.sqrt(shape[1] - rows)))
        if side > 0 and side * side == shape[1] - rows:
            table = sincos_2d_position_embedding(side, side, shape[-1], class_token=rows == 1)
            if np.allclose(posemb, table, atol=atol):
                return True
    return False
