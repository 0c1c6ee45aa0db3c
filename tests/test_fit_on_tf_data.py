"""A plain `model.fit(dataset, epochs=N)` on `tf_data`'s training pipeline, as a user writes it:
each epoch is one pass over the split and ends (the pipeline repeated forever by default, so
the first epoch never ended)."""

import keras
import numpy as np

import keras_vit
import tf_data


def test_plain_fit_ends_every_epoch_after_one_pass():
    source = tf_data.load_source("digits")
    config = tf_data.PipelineConfig(image_size=8, batch_size=256, crop_area=(0.8, 1.0))
    train = tf_data.build_dataset(source, "train", config, training=True)
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=16, num_layers=1,
                          num_heads=2, mlp_dim=32, classes=10, classifier_activation=None)
    model.compile(optimizer="adamw",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    counted = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: counted.append(
        int(keras.ops.convert_to_numpy(model.optimizer.iterations))))
    history = model.fit(train, epochs=2, verbose=0, callbacks=[callback])
    per_pass = tf_data.steps_per_epoch(source, "train", 256)  # 1,259 images: 4 full batches
    assert per_pass == 4
    assert counted == [per_pass, 2 * per_pass]
    assert np.all(np.isfinite(history.history["loss"]))
