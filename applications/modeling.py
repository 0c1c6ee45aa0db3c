"""Model, optimizer, loss and metrics, created in one place.

`create_training_objects` is the single function to call inside a
`strategy.scope()` (tf.distribute) or a `keras.distribution` context: it
builds (or loads) the model and compiles it, so distributed training slots in
around it without changes here.
"""

from __future__ import annotations

import dataclasses
import math
import os

import keras

from applications.options import UsageError
from keras_vit.schedules import WarmupDecay
from applications import weights as weights_lib


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """Length of a run in steps, derived from data size and epochs/steps."""

    steps_per_epoch: int
    epochs: int
    warmup_steps: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def plan_training(config, steps_per_epoch: int) -> TrainingPlan:
    """Turns --epochs or --steps into (steps per epoch, epochs, warmup).

    With --steps S the data is repeated and an epoch is at most one pass, so
    callbacks (checkpoints, validation) still run about once per pass.
    """
    if steps_per_epoch < 1:
        raise UsageError("The training split yields no full batch; lower --batch-size.")
    if config.steps:
        if config.steps < 1:
            raise UsageError(f"--steps must be positive, got {config.steps}.")
        spe = min(steps_per_epoch, config.steps)
        epochs = math.ceil(config.steps / spe)
        spe = math.ceil(config.steps / epochs)  # spread evenly: epochs * spe ~= steps
    else:
        epochs = config.epochs or 1
        if epochs < 1:
            raise UsageError(f"--epochs must be positive, got {epochs}.")
        spe = steps_per_epoch
    per_call = config.steps_per_execution
    if per_call > 1 and keras.backend.backend() == "torch":
        raise UsageError(
            f"--steps-per-execution {per_call}: Keras runs one step per call on the PyTorch "
            "backend; use 1 (the default) there."
        )
    if spe % per_call:
        # Keras runs whole groups of steps on a repeated dataset: the epoch would overrun.
        divisors = [d for d in range(1, spe + 1) if spe % d == 0]
        raise UsageError(
            f"--steps-per-execution {per_call} does not divide the {spe} steps of an epoch; "
            f"use one of {', '.join(map(str, divisors))}."
        )
    total = spe * epochs
    if config.warmup_steps is not None:
        warmup = min(max(config.warmup_steps, 0), total)
    else:
        warmup = min(int(config.warmup_fraction * total), config.max_warmup_steps)
    return TrainingPlan(steps_per_epoch=spe, epochs=epochs, warmup_steps=warmup)


def check_architecture(arch: dict) -> None:
    """Clear errors for sizes the model cannot take (before building it)."""
    image = _pair(arch.get("image_size", 224))
    patch = _pair(arch["patch_size"])
    if arch.get("resnet_num_layers") is None:
        for axis, size, p in zip(("height", "width"), image, patch):
            if size < p:
                raise UsageError(
                    f"Image {axis} {size} is smaller than the patch size {p}; use "
                    f"--image-size >= {p} or a smaller --patch-size."
                )
            if size % p:
                raise UsageError(
                    f"Image {axis} {size} is not a multiple of the patch size {p}; use "
                    f"--image-size {max(p, size - size % p)} or {size - size % p + p}."
                )
    if arch["hidden_size"] % arch["num_heads"]:
        raise UsageError(
            f"--hidden-size {arch['hidden_size']} is not divisible by --num-heads "
            f"{arch['num_heads']}."
        )


def build_model(config, arch: dict, num_classes: int) -> keras.Model:
    """Builds the ViT for `config`, loading pretrained weights for finetune.

    For fine-tuning the head is always new: a zero-initialised Dense for
    `num_classes` (paper); any `pre_logits` layer of the source is dropped.
    """
    import keras_vit

    check_architecture(arch)
    kwargs = dict(
        arch,
        dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.attention_dropout_rate,
        stochastic_depth_rate=config.stochastic_depth_rate,
        include_preprocessing=config.include_preprocessing,
        remat=getattr(config, "remat", False),
        classes=num_classes,
        name=(config.model or "vit").lower(),
    )
    try:
        model = keras_vit.ViT(**kwargs)
    except ValueError as e:
        raise UsageError(f"Cannot build the model: {e}") from e
    if config.init:
        weights_lib.transfer_from_saved_model(model, config.init)
    elif config.weights:
        weights_lib.load_pretrained(model, config.weights)
    return model


def make_optimizer(config, plan: TrainingPlan, model: keras.Model | None = None
                   ) -> keras.optimizers.Optimizer:
    """AdamW (pre-training) or SGD+momentum (fine-tuning) on a warmup/decay schedule.

    The weight decay applies to kernels only unless --weight-decay-on all; --layer-decay gives
    each block its own learning rate (both through `keras_vit.optimizers.GroupedOptimizer`,
    which the saved model keeps).
    """
    schedule = WarmupDecay(
        base_lr=config.lr,
        total_steps=plan.total_steps,
        warmup_steps=plan.warmup_steps,
        decay=config.decay,
    )
    clip = config.clipnorm if config.clipnorm and config.clipnorm > 0 else None
    common = dict(learning_rate=schedule, global_clipnorm=clip)
    if getattr(config, "ema", 0.0):
        # Weight averaging: fit() swaps the moving average in at the end.
        common.update(use_ema=True, ema_momentum=config.ema)
    if config.optimizer == "sgd":
        if config.weight_decay:
            common["weight_decay"] = config.weight_decay
        optimizer = keras.optimizers.SGD(momentum=config.momentum, **common)
    else:
        optimizer = keras.optimizers.AdamW(
            weight_decay=config.weight_decay, beta_1=config.beta_1, beta_2=config.beta_2,
            **common)
    return group(optimizer, model, weight_decay_on=getattr(config, "weight_decay_on", "kernels"),
                 layer_decay=getattr(config, "layer_decay", None))


def group(optimizer, model=None, weight_decay_on="kernels", layer_decay=None):
    """`optimizer` with kernel-only weight decay and layer decay where they change anything."""
    from keras_vit import optimizers

    decays = bool(optimizer.weight_decay) and weight_decay_on != "all"
    if not decays and not layer_decay:
        return optimizer
    multipliers = None
    if layer_decay:
        if model is None:
            raise ValueError("Layer decay needs the model.")
        try:
            multipliers = optimizers.layer_decay(model, layer_decay)
        except ValueError as e:
            raise UsageError(f"--layer-decay: {e}") from e
    return optimizers.GroupedOptimizer(optimizer, lr_multipliers=multipliers,
                                       weight_decay_on=weight_decay_on)


def loss_and_metrics(num_classes: int, one_hot: bool, label_smoothing: float = 0.0):
    """Cross-entropy loss and top-1/top-5 accuracy for sparse or one-hot labels."""
    k = min(5, num_classes)
    if one_hot or label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        metrics = [
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=k, name="top5_accuracy"),
        ]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=k, name="top5_accuracy"),
        ]
    return loss, metrics


def create_training_objects(config, arch: dict, num_classes: int, plan: TrainingPlan,
                            one_hot: bool) -> keras.Model:
    """Builds the model, optimizer, loss and metrics and compiles them.

    Call it inside `strategy.scope()` for tf.distribute; it creates every
    variable of the run.

    Args:
        config: The `RunConfig`.
        arch: ViT architecture kwargs.
        num_classes: Classes of the dataset.
        plan: Run length (for the learning-rate schedule).
        one_hot: Whether the pipeline emits one-hot labels (MixUp/CutMix).

    Returns:
        The compiled model.
    """
    model = build_model(config, arch, num_classes)
    loss, metrics = loss_and_metrics(num_classes, one_hot, config.label_smoothing)
    # Weighted metrics: identical without sample weights (training), and exact
    # on the zero-weight padding that sharded evaluation (JAX) appends to the
    # last batch, where plain `metrics` would count the padding.
    model.compile(optimizer=make_optimizer(config, plan, model), loss=loss,
                  weighted_metrics=metrics,
                  steps_per_execution=config.steps_per_execution)
    return model


def set_mixed_precision(policy: str | None) -> str:
    """Sets Keras' global dtype policy from --mixed-precision; returns its name."""
    if not policy:
        name = "float32"
    elif policy == "auto":
        name = "mixed_float16" if _has_gpu() else "mixed_bfloat16"
    else:
        name = f"mixed_{policy}"
    keras.mixed_precision.set_global_policy(name)
    return name


def _has_gpu() -> bool:
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return torch.cuda.is_available()
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    except Exception:  # no accelerator runtime at all
        return False


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def saved_model_path(directory: str) -> str:
    """OUTPUT/model.keras."""
    return os.path.join(directory, "model.keras")
