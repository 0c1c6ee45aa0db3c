"""`keras_vit.WarmupDecay`, the paper's learning-rate schedule: values by hand, and what a saved
optimizer needs to come back (its registration, the old name included)."""

import math

import keras
import pytest

from keras_vit import WarmupDecay


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_values_by_hand(decay):
    schedule = WarmupDecay(0.1, total_steps=12, warmup_steps=4, decay=decay, end_fraction=0.0)
    values = [float(schedule(step)) for step in range(13)]
    # warmup: (step + 1) / 4 of the peak; then decay over the 8 remaining steps
    assert values[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    progress = [(step - 4) / 8 for step in range(4, 13)]
    factor = ([0.5 * (1 + math.cos(math.pi * p)) for p in progress] if decay == "cosine"
              else [1 - p for p in progress])
    assert values[4:] == pytest.approx([0.1 * f for f in factor], abs=1e-7)


def test_invalid_arguments_name_the_choices():
    with pytest.raises(ValueError, match="cosine, linear"):
        WarmupDecay(0.1, total_steps=10, decay="step")
    with pytest.raises(ValueError, match="total_steps"):
        WarmupDecay(0.1, total_steps=0)


def _optimizer_config(schedule):
    return keras.optimizers.serialize(keras.optimizers.AdamW(learning_rate=schedule))


def test_registered_under_keras_vit_and_the_old_name_still_loads():
    schedule = WarmupDecay(0.5, total_steps=100, warmup_steps=10, decay="linear",
                           end_fraction=0.1)
    config = _optimizer_config(schedule)
    assert config["config"]["learning_rate"]["registered_name"] == "keras_vit>WarmupDecay"
    # What files written before the schedule moved into the library carry.
    config["config"]["learning_rate"]["registered_name"] = "keras_vit_applications>WarmupDecay"
    restored = keras.optimizers.deserialize(config)._learning_rate
    assert isinstance(restored, WarmupDecay)
    assert restored.get_config() == schedule.get_config()
    assert float(restored(55)) == pytest.approx(float(schedule(55)))
