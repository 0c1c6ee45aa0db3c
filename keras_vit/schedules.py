"""The paper's learning-rate schedule: linear warmup, then cosine or linear decay.

Mirrors `create_learning_rate_schedule` of the official vit_jax code:
``lr(step) = base * min(1, step / warmup) * decay(progress)`` with
``progress = (step - warmup) / (total - warmup)`` clipped to [0, 1] and
``decay = 0.5 (1 + cos(pi progress))`` (cosine) or
``1 - progress`` ending at ``end_fraction`` (linear).
"""

from __future__ import annotations

import math

import keras
from keras import ops

DECAYS = ("cosine", "linear")


@keras.saving.register_keras_serializable(package="keras_vit")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `base_lr`, then cosine or linear decay to the end.

    Part of the library because a compiled model saved with it carries it: `.keras` files that
    `keras-vit train` writes load with `import keras_vit` alone.

    Args:
        base_lr: Peak learning rate, reached after `warmup_steps`.
        total_steps: Steps of the whole run.
        warmup_steps: Steps of the linear warmup from 0.
        decay: "cosine" or "linear".
        end_fraction: Linear decay ends at `base_lr * end_fraction` (vit_jax:
            1e-5 absolute; a fraction keeps it scale-free).

    Example:

    >>> schedule = WarmupDecay(1.0, total_steps=10, warmup_steps=2, decay="linear")
    >>> [round(float(schedule(step)), 3) for step in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0, decay="cosine", end_fraction=0.0):
        super().__init__()
        if decay not in DECAYS:
            raise ValueError(f"Unknown decay {decay!r}; valid: {', '.join(DECAYS)}.")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(max(warmup_steps, 0), total_steps))
        self.decay = decay
        self.end_fraction = float(end_fraction)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        ramp = ops.minimum(1.0, (step + 1.0) / warmup) if self.warmup_steps else 1.0
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "cosine":
            factor = 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        factor = self.end_fraction + (1.0 - self.end_fraction) * factor
        return self.base_lr * ramp * factor

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "end_fraction": self.end_fraction,
        }


# Files written before the schedule moved into the library name it by its old registration.
keras.saving.get_custom_objects()["keras_vit_applications>WarmupDecay"] = WarmupDecay
