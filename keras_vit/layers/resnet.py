"""The hybrid's BiT ResNet stem (paper Sec. 3.1 "Hybrid Architecture"; official `models_resnet`).

Weight-standardised convolutions and GroupNorm (32 groups, epsilon 1e-6), pre-activation-free
bottleneck units (conv1x1 -> GN -> ReLU -> conv3x3 -> GN -> ReLU -> conv1x1 -> GN, residual,
ReLU) with a projection when the shape changes. Names follow the checkpoint (`conv_root`,
`gn_root`, `block{s}/unit{u}/{conv,gn}{1,2,3,_proj}`).
"""

import keras
from keras import ops

GROUP_NORM_GROUPS = 32
GROUP_NORM_EPSILON = 1e-6
WEIGHT_STANDARDIZATION_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="keras_vit")
class StdConv2D(keras.layers.Conv2D):
    """Conv2D whose kernel is standardised on every call (Qiao et al.; BiT).

    kernel <- (kernel - mean) / (std + 1e-5), statistics over (h, w, in) per output channel,
    exactly as the official `StdConv`.

    Example:

    >>> import numpy as np
    >>> tuple(StdConv2D(4, 3, padding="same", use_bias=False)(np.ones((1, 8, 8, 2), "float32")).shape)
    (1, 8, 8, 4)
    """

    def convolution_op(self, inputs, kernel):
        kernel = ops.cast(kernel, "float32")
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(kernel - mean), axis=(0, 1, 2), keepdims=True))
        kernel = (kernel - mean) / (std + WEIGHT_STANDARDIZATION_EPSILON)
        return super().convolution_op(inputs, ops.cast(kernel, inputs.dtype))


def _group_norm(name, zero_scale=False):
    return keras.layers.GroupNormalization(
        groups=GROUP_NORM_GROUPS,
        epsilon=GROUP_NORM_EPSILON,
        gamma_initializer="zeros" if zero_scale else "ones",
        name=name,
    )


def _std_conv(filters, kernel_size, strides=1, name=None):
    return StdConv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name
    )


@keras.saving.register_keras_serializable(package="keras_vit")
class ResidualUnit(keras.layers.Layer):
    """A BiT bottleneck unit with `4 * features` outputs.

    Args:
        features: width of the bottleneck (the unit outputs 4x as many channels).
        strides: stride of the 3x3 convolution (and of the projection).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> tuple(ResidualUnit(32, strides=2)(np.ones((1, 8, 8, 64), "float32")).shape)
    (1, 4, 4, 128)
    """

    def __init__(self, features, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.strides = strides

    def build(self, input_shape):
        f = self.features
        self.needs_projection = input_shape[-1] != 4 * f or self.strides != 1
        if self.needs_projection:
            self.conv_proj = _std_conv(4 * f, 1, self.strides, name="conv_proj")
            self.gn_proj = _group_norm("gn_proj")
        self.conv1 = _std_conv(f, 1, name="conv1")
        self.gn1 = _group_norm("gn1")
        self.conv2 = _std_conv(f, 3, self.strides, name="conv2")
        self.gn2 = _group_norm("gn2")
        self.conv3 = _std_conv(4 * f, 1, name="conv3")
        # Zero-initialised last scale: each unit starts as (ReLU of) its shortcut.
        self.gn3 = _group_norm("gn3", zero_scale=True)
        shape = input_shape
        for conv, norm in ((self.conv1, self.gn1), (self.conv2, self.gn2), (self.conv3, self.gn3)):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)
        if self.needs_projection:
            self.conv_proj.build(input_shape)
            self.gn_proj.build(shape)
        self.built = True

    def call(self, x):
        residual = x
        if self.needs_projection:
            residual = self.gn_proj(self.conv_proj(x))
        y = ops.relu(self.gn1(self.conv1(x)))
        y = ops.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return ops.relu(residual + y)

    def compute_output_shape(self, input_shape):
        batch, h, w, _ = input_shape
        s = self.strides
        down = lambda n: None if n is None else -(-n // s)  # SAME padding: ceil(n / s)
        return (batch, down(h), down(w), 4 * self.features)

    def get_config(self):
        config = super().get_config()
        config.update({"features": self.features, "strides": self.strides})
        return config


def resnet_stem(x, num_layers, width_factor=1):
    """Applies the hybrid's ResNet (root + stages) to a functional-API tensor.

    Args:
        x: images (B, H, W, C), already scaled to [-1, 1].
        num_layers: units per stage, e.g. (3, 4, 9) for the R50 of R50+ViT-B/16. An empty
            tuple keeps only the root block.
        width_factor: multiplies the base width 64.

    Returns:
        The feature map; stage s > 1 halves the resolution, so (3, 4, 9) gives H/16.
    """
    width = int(64 * width_factor)
    x = _std_conv(width, 7, 2, name="conv_root")(x)
    x = _group_norm("gn_root")(x)
    x = keras.layers.ReLU(name="root_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="root_pool")(x)
    for stage, units in enumerate(num_layers, start=1):
        for unit in range(1, units + 1):
            strides = 2 if (stage > 1 and unit == 1) else 1
            x = ResidualUnit(width * 2 ** (stage - 1), strides, name=f"block{stage}_unit{unit}")(x)
    return x


def stem_output_size(size, num_layers):
    """The side of `resnet_stem`'s feature map for an input side `size`: each stride-2 layer
    (the root convolution, its pooling, the first unit of each stage after the first) with
    SAME padding gives ceil(n / 2)."""
    for _ in range(2 + max(len(num_layers) - 1, 0)):
        size = -(-size // 2)
    return size
