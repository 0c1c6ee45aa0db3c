"""Optimizers for fine-tuning: per-variable learning rates and kernel-only weight decay.

    optimizer = keras_vit.optimizers.GroupedOptimizer(
        keras.optimizers.AdamW(1e-3, weight_decay=0.05),          # any Keras optimizer
        lr_multipliers=keras_vit.optimizers.layer_decay(model, 0.75),
        weight_decay_on="kernels")                                  # the default
    model.compile(optimizer=optimizer, ...)                         # saved with the model

See docs/fine_tuning.md.
"""

from keras_vit.optimizers.grouped import WEIGHT_DECAY_ON, GroupedOptimizer, decays_as_kernel
from keras_vit.optimizers.layerwise import layer_decay

__all__ = ["WEIGHT_DECAY_ON", "GroupedOptimizer", "decays_as_kernel", "layer_decay"]
