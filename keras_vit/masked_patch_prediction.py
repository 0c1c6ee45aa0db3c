"""Self-supervised pre-training by masked patch prediction (paper Sec. 4.6, Appendix B.1.2).

A share of the patch embeddings (50%) is corrupted, BERT style, before the class token and the
position embeddings are added: 80% of the chosen ones become a learnable [mask] embedding, 10%
a random other patch's embedding, 10% stay as they are. The encoder then predicts, for every
corrupted patch, its 3-bit mean colour (8 levels per channel, 512 classes for RGB). The loss
counts corrupted patches only.
"""

import keras
from keras import ops

from keras_vit.layers.patch_encoder import PatchEncoder
from keras_vit.layers.pooling import TokenPooling

TARGETS = ("mean_color", "downsized", "pixels")


# Means of integer pixels sit on multiples of 1 / (pixels per patch); this margin (far below
# that step, far above float32 round-off of values <= 255) keeps a mean of exactly 32 at level 1
# when it arrives as 31.99999 after the [-1, 1] round trip.
_LEVEL_EDGE_TOLERANCE = 1e-4


def color_levels(pixels, bits):
    """Quantised colour levels of [0, 255] values: floor(v / (256 / 2**bits)), in [0, 2**bits)."""
    levels = 2**bits
    return ops.clip(ops.floor((pixels + _LEVEL_EDGE_TOLERANCE) * (levels / 256.0)), 0, levels - 1)


def color_index(levels, bits):
    """Joint class of per-channel levels (..., C): r * L^2 + g * L + b for RGB."""
    channels = levels.shape[-1]
    weights = ops.convert_to_tensor([(2**bits) ** (channels - 1 - c) for c in range(channels)],
                                    dtype=levels.dtype)
    return ops.cast(ops.sum(levels * weights, axis=-1), "int32")


def patch_means(images, grid, cells=1):
    """Mean colour of each patch (or of each cell of a cells x cells subdivision of it).

    Args:
        images: (B, H, W, C) in [0, 255].
        grid: (rows, cols) of the patch grid.
        cells: subdivisions per patch side (1: the patch mean; 4: a 4x4 downsized patch).

    Returns:
        (B, rows*cols, cells*cells, C).
    """
    b = ops.shape(images)[0]
    h, w, c = images.shape[1:]
    rows, cols = grid
    ch, cw = h // (rows * cells), w // (cols * cells)
    x = ops.reshape(images, (b, rows, cells, ch, cols, cells, cw, c))
    x = ops.mean(x, axis=(3, 6))  # (B, rows, cells, cols, cells, C)
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b, rows * cols, cells * cells, c))


@keras.saving.register_keras_serializable(package="keras_vit")
class MaskedPatchPrediction(keras.Model):
    """Wraps a ViT backbone of this library for masked patch prediction.

    Args:
        backbone: a model from `keras_vit.ViT(..., include_top=False)` (pooling None).
        mask_ratio: share of patches corrupted per image (0.5 in the paper).
        replace_ratios: (mask token, random other patch, unchanged) shares among the
            corrupted patches; (0.8, 0.1, 0.1) in the paper.
        target: `"mean_color"` (the paper's choice: the patch's mean colour with `color_bits`
            bits per channel), `"downsized"` (the colour classes of a `target_cells` x
            `target_cells` downsized patch, predicted in parallel) or `"pixels"` (L2
            regression of the patch's pixels scaled to [-1, 1]).
        color_bits: bits per channel of the colour classes (3 -> 512 classes for RGB).
        target_cells: subdivisions per side for `"downsized"` (4 in the paper).
        seed: seed of the corruption's random draws.
        **kwargs: standard `keras.Model` arguments.

    Example:

    >>> import numpy as np, keras, keras_vit
    >>> backbone = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=32, num_layers=1,
    ...                          num_heads=2, mlp_dim=64, include_top=False)
    >>> mpp = keras_vit.MaskedPatchPrediction(backbone, seed=0)
    >>> mpp.compile(optimizer="adam")
    >>> images = np.random.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    >>> history = mpp.fit(images, epochs=1, verbose=0)
    """

    def __init__(self, backbone, mask_ratio=0.5, replace_ratios=(0.8, 0.1, 0.1),
                 target="mean_color", color_bits=3, target_cells=4, seed=None, **kwargs):
        super().__init__(**kwargs)
        if target not in TARGETS:
            raise ValueError(f"Unknown target {target!r}; expected one of {', '.join(TARGETS)}.")
        if not 0 < mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}.")
        if len(replace_ratios) != 3 or abs(sum(replace_ratios) - 1) > 1e-6 or min(replace_ratios) < 0:
            raise ValueError(f"replace_ratios must be 3 non-negative shares summing to 1, got {replace_ratios}.")
        if any(isinstance(layer, TokenPooling) for layer in backbone.layers):
            raise ValueError("The backbone must return tokens: build it with include_top=False, pooling=None.")
        self.backbone = backbone
        self.mask_ratio = mask_ratio
        self.replace_ratios = tuple(replace_ratios)
        self.target = target
        self.color_bits = color_bits
        self.target_cells = target_cells
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

        layers = backbone.layers[1:]  # skip the input layer
        position = next(i for i, layer in enumerate(layers) if isinstance(layer, PatchEncoder))
        self.encoder = layers[position]
        self._before, self._after = layers[:position], layers[position + 1:]
        self.num_prefix_tokens = int(self.encoder.use_class_token)
        self.grid = tuple(self.encoder.grid_size)
        self.pixel_range_is_255 = any(layer.name == "rescale" for layer in self._before)
        height, width, channels = backbone.input_shape[1:]
        self.image_shape = (height, width, channels)
        if target == "mean_color":
            self.outputs_per_patch, self.classes = 1, (2**color_bits) ** channels
        elif target == "downsized":
            self.outputs_per_patch, self.classes = target_cells**2, (2**color_bits) ** channels
        else:
            ph, pw = height // self.grid[0], width // self.grid[1]
            self.outputs_per_patch, self.classes = ph * pw * channels, 1
        self.mask_token = self.add_weight(
            name="mask_token", shape=(self.encoder.hidden_size,),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.head = keras.layers.Dense(self.outputs_per_patch * self.classes, name="mpp_head")

    # ------------------------------------------------------------------ corruption and targets

    def corrupt(self, embeddings):
        """BERT-style corruption of (B, N, D) patch embeddings.

        Returns:
            (corrupted embeddings, `corrupted` mask (B, N) bool, `how` (B, N) int32 with
            0 = untouched, 1 = mask token, 2 = random other patch, 3 = kept as is).
        """
        b, n = ops.shape(embeddings)[0], embeddings.shape[1]
        num_corrupt = max(1, round(self.mask_ratio * n))
        # Exactly num_corrupt patches per image: the ranks of uniform noise.
        noise = keras.random.uniform((b, n), seed=self.seed_generator)
        ranks = ops.argsort(ops.argsort(noise, axis=-1), axis=-1)
        corrupted = ranks < num_corrupt
        choice = keras.random.uniform((b, n), seed=self.seed_generator)
        to_mask, to_random = self.replace_ratios[0], self.replace_ratios[0] + self.replace_ratios[1]
        use_mask = ops.logical_and(corrupted, choice < to_mask)
        use_random = ops.logical_and(corrupted, ops.logical_and(choice >= to_mask, choice < to_random))
        # A random *other* patch of the batch: shift each flat index by 1..B*N-1.
        total = b * n
        flat = ops.reshape(embeddings, (total, -1))
        shift = keras.random.randint((total,), 1, ops.maximum(total, 2), seed=self.seed_generator)
        other = ops.take(flat, (ops.arange(total) + shift) % total, axis=0)
        other = ops.reshape(other, ops.shape(embeddings))
        mask_token = ops.cast(self.mask_token, embeddings.dtype)
        x = ops.where(use_mask[..., None], mask_token, embeddings)
        x = ops.where(use_random[..., None], other, x)
        how = ops.cast(corrupted, "int32") * (3 - 2 * ops.cast(use_mask, "int32") - ops.cast(use_random, "int32"))
        return x, corrupted, how

    def targets(self, images):
        """What each patch should predict, from images in the backbone's input range."""
        pixels = ops.cast(images, "float32")
        if not self.pixel_range_is_255:
            pixels = (pixels + 1.0) * 127.5
        if self.target == "pixels":
            rows, cols = self.grid
            b = ops.shape(pixels)[0]
            h, w, c = self.image_shape
            x = ops.reshape(pixels / 127.5 - 1.0, (b, rows, h // rows, cols, w // cols, c))
            x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
            return ops.reshape(x, (b, rows * cols, -1))
        cells = self.target_cells if self.target == "downsized" else 1
        means = patch_means(pixels, self.grid, cells)  # (B, N, cells^2, C)
        classes = color_index(color_levels(means, self.color_bits), self.color_bits)
        return classes[..., 0] if cells == 1 else classes

    # ------------------------------------------------------------------ model

    def call(self, images, training=None):
        x = images
        for layer in self._before:
            x = layer(x)
        patches = self.encoder.project(x)
        corrupted_embeddings, corrupted, _ = self.corrupt(patches)
        x = self.encoder.add_class_token_and_positions(corrupted_embeddings, training=training)
        for layer in self._after:
            x = layer(x, training=training)
        logits = self.head(x[:, self.num_prefix_tokens:])
        if self.target == "downsized":
            logits = ops.reshape(logits, (-1, logits.shape[1], self.outputs_per_patch, self.classes))
        elif self.target == "pixels":
            logits = ops.reshape(logits, (-1, logits.shape[1], self.outputs_per_patch))
        return {"predictions": logits, "targets": self.targets(images), "corrupted": corrupted}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean loss over corrupted patches only; labels `y`, if any, are ignored."""
        predictions, targets = y_pred["predictions"], y_pred["targets"]
        weight = ops.cast(y_pred["corrupted"], "float32")
        if self.target == "pixels":
            per_patch = ops.mean(ops.square(ops.cast(predictions, "float32") - targets), axis=-1)
        else:
            per_patch = keras.losses.sparse_categorical_crossentropy(
                targets, ops.cast(predictions, "float32"), from_logits=True)
            if self.target == "downsized":
                per_patch = ops.mean(per_patch, axis=-1)
        loss = ops.sum(per_patch * weight) / ops.maximum(ops.sum(weight), 1.0)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "mask_ratio": self.mask_ratio,
            "replace_ratios": list(self.replace_ratios),
            "target": self.target,
            "color_bits": self.color_bits,
            "target_cells": self.target_cells,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
