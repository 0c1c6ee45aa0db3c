"""`PatchEncoder`: the paper's Eq. 1, z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos.

Holds the linear patch projection E (stored as the official `embedding/kernel` (P, P, C, D), so a
checkpoint maps 1:1 and the projection is a reshape + matmul, the same numbers as the official
stride-P convolution), the optional class token (`cls`) and the position embedding.
"""

import math

import keras
from keras import ops

from keras_vit.layers import position_resample
from keras_vit.layers.dense import affine
from keras_vit.layers.sincos import sincos_2d_position_embedding
from keras_vit.layers.utils import dropout, to_pair

POSITION_EMBEDDINGS = ("learned_1d", "learned_2d", "relative", "none", "sincos_2d")


def check_position_embedding(position_embedding):
    if position_embedding not in POSITION_EMBEDDINGS:
        raise ValueError(
            f"Unknown position_embedding {position_embedding!r}; "
            f"expected one of {', '.join(POSITION_EMBEDDINGS)}."
        )


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchEncoder(keras.layers.Layer):
    """Projects flattened patches, prepends the class token and adds position embeddings.

    Takes flattened patches (B, N, P_h * P_w * C) on the fixed grid `grid_size`, or a patch
    grid (B, rows, cols, P_h * P_w * C) (`Patches(flatten=False)`) of any size: the position
    embedding, stored on `grid_size`, is then resampled to each call's grid inside the graph
    (`keras_vit.layers.position_resample`), and used as stored on `grid_size` itself.

    Args:
        hidden_size: D, the width of the token embeddings.
        patch_size: int or (P_h, P_w): the size of the patches coming from `Patches`; together
            with the input's last axis it fixes the number of channels.
        grid_size: (rows, columns) of the patch grid. Needed for `"learned_2d"`; when None a
            square grid is assumed.
        use_class_token: prepend the learned `[class]` token (the paper's `x_class`, zero-
            initialised as in the official code). Off for global-average-pooling models.
        position_embedding: `"learned_1d"` (the paper's default: one learned vector per token,
            normal(0.02) init), `"learned_2d"` (two learned tables of D/2, one indexed by patch
            row and one by column, concatenated per patch; the class token gets none, being
            learned itself), `"relative"` (no absolute embedding here: the position enters
            through relative attention in each `TransformerBlock`), `"none"` (a bag of patches)
            or `"sincos_2d"` (not in the paper: MAE's fixed 2-D sine-cosine table, see
            `keras_vit.layers.sincos`, held as a non-trainable `pos_embedding`).
        dropout_rate: dropout right after adding the position embedding, as in the paper.
        no_embed_class: the 1-D position embedding covers the patches only and is added before
            the class token is prepended (DeiT-III, big_vision; timm's name). Off (the paper),
            the class token has a position row of its own.
        pos_embed_resample: for patch grids of other sizes than `grid_size`, how the stored
            embedding is resampled to them: `"official"` (bilinear with aligned corners, as
            vit_jax) or `"bicubic"` (antialiased, as timm); the algorithms of
            `keras_vit.checkpoint.resample_position_embedding`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> patches = np.zeros((2, 4, 12), "float32")   # 2x2 grid of 2x2x3 patches
    >>> tuple(PatchEncoder(hidden_size=8, patch_size=2)(patches).shape)
    (2, 5, 8)
    """

    def __init__(
        self,
        hidden_size,
        patch_size,
        grid_size=None,
        use_class_token=True,
        position_embedding="learned_1d",
        dropout_rate=0.0,
        no_embed_class=False,
        pos_embed_resample="official",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_position_embedding(position_embedding)
        position_resample.check_method(pos_embed_resample)
        if position_embedding == "sincos_2d" and hidden_size % 4:
            raise ValueError(
                f"position_embedding='sincos_2d' splits hidden_size into four quarters; "
                f"hidden_size {hidden_size} is not divisible by 4."
            )
        if position_embedding == "learned_2d" and hidden_size % 2:
            raise ValueError(
                f"position_embedding='learned_2d' splits hidden_size into two halves; "
                f"hidden_size {hidden_size} is odd."
            )
        self.hidden_size = hidden_size
        self.patch_size = to_pair(patch_size, "patch_size")
        self.grid_size = None if grid_size is None else to_pair(grid_size, "grid_size")
        self.use_class_token = use_class_token
        self.position_embedding = position_embedding
        self.dropout_rate = dropout_rate
        self.no_embed_class = no_embed_class
        self.pos_embed_resample = pos_embed_resample

    def build(self, input_shape):
        if len(input_shape) == 4:  # a patch grid: any size, the embedding stored on grid_size
            if self.position_embedding == "relative":
                raise ValueError("position_embedding='relative' needs a fixed image size: its "
                                 "table holds one embedding per offset between token indices.")
            if self.grid_size is None and None in tuple(input_shape[1:3]):
                raise ValueError("A patch grid of any size needs the grid_size that the "
                                 "position embedding is stored at.")
            self.grid_size = self.grid_size or tuple(input_shape[1:3])
            input_shape = (input_shape[0], self.grid_size[0] * self.grid_size[1], input_shape[3])
        num_patches, patch_dim = input_shape[1], input_shape[2]
        ph, pw = self.patch_size
        if patch_dim % (ph * pw):
            raise ValueError(
                f"Patch vectors of length {patch_dim} do not hold {ph}x{pw} patches."
            )
        channels = patch_dim // (ph * pw)
        if self.grid_size is None:
            side = math.isqrt(num_patches)
            if side * side != num_patches:
                raise ValueError(
                    f"{num_patches} patches do not form a square grid; pass grid_size=(rows, cols)."
                )
            self.grid_size = (side, side)
        if self.grid_size[0] * self.grid_size[1] != num_patches:
            raise ValueError(f"grid_size {self.grid_size} does not hold {num_patches} patches.")
        self.num_patches = num_patches
        d = self.hidden_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(ph, pw, channels, d),
            # LeCun normal over the fan-in of one patch, as the official nn.Conv default.
            initializer=keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal"),
        )
        self.bias = self.add_weight(name="bias", shape=(d,), initializer="zeros")
        if self.use_class_token:
            self.cls = self.add_weight(name="cls", shape=(1, 1, d), initializer="zeros")
        pos_init = keras.initializers.RandomNormal(stddev=0.02)
        class_row = int(self.use_class_token and not self.no_embed_class)
        if self.position_embedding == "sincos_2d":
            table = sincos_2d_position_embedding(*self.grid_size, d, class_token=class_row)
            pos_init = lambda shape, dtype=None: ops.convert_to_tensor(table, dtype)  # noqa: E731
        if self.position_embedding in ("learned_1d", "sincos_2d"):
            self.pos_embedding = self.add_weight(
                name="pos_embedding",
                shape=(1, num_patches + class_row, d),
                initializer=pos_init,
                trainable=self.position_embedding == "learned_1d",
            )
        elif self.position_embedding == "learned_2d":
            self.pos_embedding_row = self.add_weight(
                name="pos_embedding_row", shape=(self.grid_size[0], d // 2), initializer=pos_init
            )
            self.pos_embedding_col = self.add_weight(
                name="pos_embedding_col", shape=(self.grid_size[1], d // 2), initializer=pos_init
            )
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.built = True

    def call(self, patches, training=None):
        grid = None
        if len(patches.shape) == 4:  # (B, rows, cols, P_h * P_w * C)
            grid = tuple(ops.shape(patches)[1:3])
            patches = ops.reshape(patches, (-1, grid[0] * grid[1], patches.shape[-1]))
        return self.add_class_token_and_positions(self.project(patches), training=training,
                                                  grid=grid)

    def project(self, patches):
        """x_p^i E: the linear projection of each flattened patch, (B, N, D)."""
        ph, pw, channels, d = self.kernel.shape
        kernel = ops.reshape(self.kernel, (ph * pw * channels, d))
        return affine(patches, kernel, self.bias)

    def add_class_token_and_positions(self, x, training=None, grid=None):
        """The rest of Eq. 1 on projected patches: [x_class; ...] + E_pos, then dropout.

        Kept apart from `project` so that self-supervision can corrupt patch embeddings in
        between, as BERT corrupts token embeddings before adding positions. `grid`: the
        (rows, cols) of the patches when not `grid_size` (the embedding is resampled to it).
        """
        grid = self.grid_size if grid is None else grid
        if self.no_embed_class and self.position_embedding in ("learned_1d", "sincos_2d"):
            # DeiT-III: positions for the patches only, then the class token.
            x = x + ops.cast(self._pos_embedding_1d(grid), x.dtype)
            return dropout(self.dropout, self._prepend_class_token(x), training)
        if self.use_class_token:
            x = self._prepend_class_token(x)
        if self.position_embedding in ("learned_1d", "sincos_2d"):
            x = x + ops.cast(self._pos_embedding_1d(grid), x.dtype)
        elif self.position_embedding == "learned_2d":
            x = x + ops.cast(self._pos_embedding_2d(grid), x.dtype)
        return dropout(self.dropout, x, training)

    def _pos_embedding_1d(self, grid):
        """`pos_embedding`, resampled from `grid_size` to `grid` (as it is on `grid_size`)."""
        return position_resample.resample_position_embedding(
            self.pos_embedding, self.grid_size, grid,
            int(self.use_class_token and not self.no_embed_class), self.pos_embed_resample)

    def _prepend_class_token(self, x):
        if not self.use_class_token:
            return x
        cls = ops.broadcast_to(ops.cast(self.cls, x.dtype), (ops.shape(x)[0], 1, self.hidden_size))
        return ops.concatenate([cls, x], axis=1)

    def _pos_embedding_2d(self, grid=None):
        rows, cols = self.grid_size if grid is None else grid
        half = self.hidden_size // 2
        row_table = position_resample.resample_table(self.pos_embedding_row, rows,
                                                     self.pos_embed_resample)
        col_table = position_resample.resample_table(self.pos_embedding_col, cols,
                                                     self.pos_embed_resample)
        row = ops.broadcast_to(row_table[:, None, :], (rows, cols, half))
        col = ops.broadcast_to(col_table[None, :, :], (rows, cols, half))
        grid = ops.reshape(ops.concatenate([row, col], axis=-1), (1, rows * cols, self.hidden_size))
        if self.use_class_token:  # the class token carries no position
            grid = ops.pad(grid, ((0, 0), (1, 0), (0, 0)))
        return grid

    def compute_output_shape(self, input_shape):
        if len(input_shape) == 4:
            rows, cols = input_shape[1:3]
            input_shape = (input_shape[0], None if None in (rows, cols) else rows * cols)
        tokens = None if input_shape[1] is None else input_shape[1] + int(self.use_class_token)
        return (input_shape[0], tokens, self.hidden_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_size": self.hidden_size,
                "patch_size": self.patch_size,
                "grid_size": self.grid_size,
                "use_class_token": self.use_class_token,
                "position_embedding": self.position_embedding,
                "dropout_rate": self.dropout_rate,
                "no_embed_class": self.no_embed_class,
                "pos_embed_resample": self.pos_embed_resample,
            }
        )
        return config
