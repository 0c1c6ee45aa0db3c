"""`GroupedOptimizer`: per-variable learning-rate multipliers and kernel-only weight decay.

What PyTorch users get from parameter groups (timm's `layer_decay` and `no_weight_decay`), for
any Keras optimizer, on every backend and distribution strategy, saved with the model.

Why a wrapper: Keras' optimizers take one learning rate, and their own
`exclude_from_weight_decay(...)` is not part of their config (a `.keras` file forgets it). A
registered wrapper, as `keras.optimizers.LossScaleOptimizer` wraps an inner optimizer, keeps
both in the file. It leaves the inner optimizer's own update rule alone and changes two
things, where each backend applies them: `_backend_update_step` (TensorFlow's runs under
`tf.distribute`, PyTorch's updates many variables in one fused call) runs once per group of
variables that share a learning-rate multiplier, with the learning rate times that
multiplier; and the decoupled weight decay (`variable -= lr * wd * variable`, what AdamW and
the `weight_decay` of every Keras optimizer do) applies only to the chosen variables, with
each variable's own learning rate, as PyTorch optimizers do per parameter group (timm's layer
decay scales the decay with the group's learning rate too).
"""

from __future__ import annotations

import math
import re

import keras

WEIGHT_DECAY_ON = ("kernels", "all")


class _ScaledWeightDecay:
    """An optimizer seen with another `weight_decay`: every other attribute is the optimizer's."""

    def __init__(self, optimizer, weight_decay):
        self.__dict__.update(_optimizer=optimizer, weight_decay=weight_decay)

    def __getattr__(self, name):
        return getattr(self._optimizer, name)

    def __setattr__(self, name, value):
        setattr(self._optimizer, name, value)


def decays_as_kernel(variable) -> bool:
    """Whether `weight_decay_on="kernels"` decays `variable`: its name ends in "kernel".

    That is big_vision's rule (`wd_mults=[(".*/kernel$", 1.0)]`): the weight matrices of
    dense, convolution and attention projections (`kernel`, `query_kernel`, `out_kernel`, the
    patch embedding's `kernel`, the head's) decay; biases (`bias`, `query_bias`, whose shape
    is 2-D), LayerNorm and GroupNorm scales and offsets (`gamma`, `beta`), the position
    embeddings (`pos_embedding`, `pos_embedding_row`/`_col`, `relative_embedding`) and the
    tokens (`cls`, `mask_token`, register tokens) do not, whatever their shape. A rule by
    name, not by rank: attention biases are 2-D and tokens 3-D here, and timm's "1-D or
    listed in no_weight_decay()" would need the list kept in step with every new token.

    Example:

    >>> import keras
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> [decays_as_kernel(v) for v in layer.weights]      # kernel, bias
    [True, False]
    """
    return variable.name.endswith("kernel")


@keras.saving.register_keras_serializable(package="keras_vit")
class GroupedOptimizer(keras.optimizers.Optimizer):
    """Wraps a Keras optimizer: a learning-rate multiplier per variable, weight decay on
    kernels only.

    Args:
        inner_optimizer: any `keras.optimizers.Optimizer` (SGD, Adam, AdamW, Lion, ...) with
            its learning rate (a float or a schedule), `weight_decay`, clipping, EMA and
            gradient accumulation. The wrapper takes it over: use the wrapper from then on.
            Not a `LossScaleOptimizer` (Keras wraps the wrapper in one under
            `mixed_float16`) nor another `GroupedOptimizer`.
        lr_multipliers: {variable path: multiplier}, e.g. from
            `keras_vit.optimizers.layer_decay(model, 0.75)`. A variable's learning rate is the
            inner optimizer's times its multiplier (1 for paths not listed). Paths
            (`"encoderblock_3/MlpBlock_3/Dense_0/kernel"`) stay the same when a model is saved
            and loaded. At least one path must name a variable the optimizer is built on.
        weight_decay_on: `"kernels"` (default): the inner optimizer's `weight_decay` applies
            only to variables whose name ends in "kernel" (`decays_as_kernel`); `"all"`: to
            every variable, as the inner optimizer alone does.
        no_weight_decay: regular expressions; variables whose path matches one
            (`re.search`) are not decayed either.
        name: the optimizer's name.

    Each variable's update is the inner optimizer's update with that variable's learning
    rate `lr * multiplier`, its decoupled weight decay `lr * multiplier * weight_decay`.
    Global-norm clipping still sees every gradient at once.

    Example:

    >>> import numpy as np, keras
    >>> inputs = keras.Input((2,))
    >>> model = keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs))
    >>> model.get_layer("dense").set_weights([np.ones((2, 1)), np.ones((1,))])
    >>> optimizer = GroupedOptimizer(
    ...     keras.optimizers.SGD(learning_rate=0.1, weight_decay=0.5),
    ...     lr_multipliers={"dense/bias": 0.5})
    >>> optimizer.apply([keras.ops.zeros((2, 1)), keras.ops.ones((1,))], model.trainable_variables)
    >>> kernel, bias = (np.asarray(v) for v in model.trainable_variables)
    >>> round(float(kernel[0, 0]), 4), round(float(bias[0]), 4)  # 1 - 0.1*0.5; 1 - 0.05*1
    (0.95, 0.95)
    """

    def __init__(self, inner_optimizer, lr_multipliers=None, weight_decay_on="kernels",
                 no_weight_decay=(), name=None, **kwargs):
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(f"inner_optimizer must be a keras.optimizers.Optimizer, got "
                            f"{type(inner_optimizer).__name__}.")
        wrapped = (keras.optimizers.LossScaleOptimizer, GroupedOptimizer,
                   getattr(keras.optimizers, "MultiOptimizer", ()))
        if isinstance(inner_optimizer, wrapped):
            raise TypeError(
                f"GroupedOptimizer cannot wrap a {type(inner_optimizer).__name__}; wrap the "
                "plain optimizer (a LossScaleOptimizer goes outside: Keras adds it itself "
                "under mixed_float16).")
        if weight_decay_on not in WEIGHT_DECAY_ON:
            raise ValueError(f"Unknown weight_decay_on {weight_decay_on!r}; valid: "
                             f"{', '.join(WEIGHT_DECAY_ON)}.")
        multipliers = {}
        for path, value in dict(lr_multipliers or {}).items():
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"The learning-rate multiplier of {path!r} is {value}; it must "
                                 "be finite and >= 0.")
            multipliers[str(path)] = value
        patterns = [str(p) for p in (no_weight_decay or ())]
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"no_weight_decay pattern {pattern!r} is not a regular "
                                 f"expression: {e}.") from None
        # The base optimizer's own state (iteration, learning rate) is unused: every read goes
        # to the inner optimizer.
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.inner_optimizer = inner_optimizer
        self.lr_multipliers = multipliers
        self.weight_decay_on = weight_decay_on
        self.no_weight_decay = patterns
        self._groups = None
        self._install(inner_optimizer)

    # -- what the inner optimizer runs -----------------------------------------------------

    def _install(self, inner):
        """Routes the inner optimizer's per-backend update and weight decay through the groups.

        Bound to the instance, as `applications.distributed_engines` routes gradient clipping:
        the inner optimizer's own `apply` (filtering, unscaling, clipping, accumulation, EMA,
        the iteration count, `tf.distribute`'s merge calls) stays as it is.
        """
        update = inner._backend_update_step
        decay = type(inner)._apply_weight_decay

        def backend_update_step(grads, variables, learning_rate):
            for multiplier, pairs in self._by_multiplier(zip(grads, variables), 1):
                rate = learning_rate if multiplier == 1.0 else learning_rate * multiplier
                update([g for g, _ in pairs], [v for _, v in pairs], rate)

        def apply_weight_decay(variables):
            if inner.weight_decay is None:
                return
            decayed = [v for v in variables if self._decays(v)]
            for multiplier, group in self._by_multiplier(decayed, None):
                # lr * (multiplier * wd) = (lr * multiplier) * wd, by the backend's own code
                # (TensorFlow's under tf.distribute), run on a view of the inner optimizer
                # whose weight decay is scaled: nothing shared changes, which replica threads
                # of a MirroredStrategy would otherwise see half-way.
                decay(_ScaledWeightDecay(inner, inner.weight_decay * multiplier), group)

        inner._backend_update_step = backend_update_step
        inner._apply_weight_decay = apply_weight_decay

    def _by_multiplier(self, items, index):
        """Groups `items` (variables, or tuples with the variable at `index`) by multiplier,
        in first-seen order; multiplier-0 variables are left out (frozen)."""
        groups = {}
        for item in items:
            variable = item if index is None else item[index]
            multiplier = self._lookup(variable)[0]
            if multiplier != 0.0:
                groups.setdefault(multiplier, []).append(item)
        return list(groups.items())

    def _lookup(self, variable):
        key = self.inner_optimizer._var_key(variable)
        if self._groups is None or key not in self._groups:
            raise ValueError(f"GroupedOptimizer was built without variable {variable.path!r}; "
                             "build it on every variable it updates.")
        return self._groups[key]

    def _decays(self, variable):
        return self._lookup(variable)[1]

    def multiplier(self, variable) -> float:
        """The learning-rate multiplier of one of the variables the optimizer is built on."""
        return self._lookup(variable)[0]

    def decays(self, variable) -> bool:
        """Whether the weight decay applies to one of the variables the optimizer is built on."""
        return self._decays(variable)

    # -- the optimizer interface, delegated ------------------------------------------------

    def build(self, var_list):
        known = {v.path for v in var_list}
        if self.lr_multipliers and len(known) < len(var_list):
            paths = [v.path for v in var_list]
            twice = sorted({p for p in paths if paths.count(p) > 1})
            raise ValueError(f"Several variables share the path(s) {twice[:3]}: "
                             "lr_multipliers cannot tell them apart (rename the layers).")
        if self.lr_multipliers and not known & set(self.lr_multipliers):
            sample = ", ".join(sorted(self.lr_multipliers)[:3])
            raise ValueError(
                f"None of the {len(self.lr_multipliers)} paths of lr_multipliers ({sample}, ...) "
                f"names a variable of the model (e.g. {sorted(known)[:1]}); were the "
                "multipliers made for another model?")
        patterns = [re.compile(p) for p in self.no_weight_decay]
        groups = {}
        for variable in var_list:
            decay = self.weight_decay_on == "all" or decays_as_kernel(variable)
            decay = decay and not any(p.search(variable.path) for p in patterns)
            groups[self.inner_optimizer._var_key(variable)] = (
                self.lr_multipliers.get(variable.path, 1.0), decay)
        self._groups = groups
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        super().build(var_list)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError("Call `optimizer.build(trainable_variables)` first, or pass "
                                 "the variables with the gradients.")
            self.build(list(trainable_variables))
        self.inner_optimizer.apply(grads, trainable_variables)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        return self.inner_optimizer.stateless_apply(optimizer_variables, grads,
                                                    trainable_variables)

    @property
    def variables(self):
        return self.inner_optimizer.variables

    def set_weights(self, weights):
        self.inner_optimizer.set_weights(weights)

    def save_own_variables(self, store):
        """Nothing: the inner optimizer saves its own state (`.keras` files visit it)."""

    def load_own_variables(self, store):
        """Nothing: the inner optimizer loads its own state."""

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        if "inner_optimizer" in self.__dict__:
            self.inner_optimizer.learning_rate = learning_rate
        else:  # the base constructor's placeholder
            keras.optimizers.Optimizer.learning_rate.fset(self, learning_rate)

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def loss_scale_factor(self):
        inner = self.__dict__.get("inner_optimizer")
        return inner.loss_scale_factor if inner is not None else None

    @loss_scale_factor.setter
    def loss_scale_factor(self, value):
        inner = self.__dict__.get("inner_optimizer")
        if inner is not None:  # (the base constructor sets None before there is one)
            inner.loss_scale_factor = value

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    @property
    def use_ema(self):
        inner = self.__dict__.get("inner_optimizer")
        return inner.use_ema if inner is not None else False

    @use_ema.setter
    def use_ema(self, value):
        if value:
            raise ValueError("Set use_ema on the inner optimizer.")

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "lr_multipliers": dict(self.lr_multipliers),
            "weight_decay_on": self.weight_decay_on,
            "no_weight_decay": list(self.no_weight_decay),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"),
                                                      custom_objects=custom_objects)
        return cls(inner, **config)
