"""`LayerScale`: a learned per-channel scale on a residual branch (Touvron et al., *Going deeper
with Image Transformers*, ICCV 2021, "CaiT", Sec. 2; used by DeiT-III and DINOv2).

    x_l' = x_l + diag(lambda_1) MSA(LN(x_l)),   x_{l+1} = x_l' + diag(lambda_2) MLP(LN(x_l'))

Not in the ViT paper: `TransformerBlock(layer_scale_init_value=...)` (and `ViT(...)`) put one
on each branch when asked; off, the block is the paper's Eq. 2-3.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerScale(keras.layers.Layer):
    """Multiplies each channel of its input by a learned scale, `x * scale`.

    Args:
        init_value: the initial value of every scale (CaiT: 1e-5 to 1e-6 for deep models;
            DINOv2 1e-5, DeiT-III 1e-6). The name is `keras.applications.ConvNeXt`'s
            (`layer_scale_init_value`) and KerasHub's; timm calls it `init_values`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> y = LayerScale(0.5)(np.ones((1, 2, 3), "float32"))
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]]
    """

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init_value))
        self.built = True

    def call(self, x):
        return x * ops.cast(self.scale, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"init_value": self.init_value})
        return config
