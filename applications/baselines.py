"""Convolutional baselines for the ablations: a small pre-activation ResNet."""

import keras


def small_resnet(input_shape, classes, width=32, blocks=(2, 2), name="resnet_baseline"):
    """A small ResNet (pre-activation units, BatchNorm) for small images.

    With the defaults it has 171k parameters for 10 classes, close to the ablation's ViT
    (137k), so the data-scale study compares models of similar capacity.

    Args:
        input_shape: (H, W, C) of [0, 255] images (rescaled inside, like keras_vit's ViT).
        classes: number of classes.
        width: channels of the first stage; each later stage doubles them (stride 2).
        blocks: residual units per stage.
    """
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    for stage, units in enumerate(blocks):
        filters = width * 2**stage
        for unit in range(units):
            strides = 2 if (stage > 0 and unit == 0) else 1
            shortcut = x
            y = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
            if strides != 1 or x.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False)(y)
            y = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(y)
            y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
            y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
            x = keras.layers.Add()([shortcut, y])
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=name)
