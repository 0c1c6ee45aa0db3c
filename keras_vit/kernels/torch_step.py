"""PyTorch: the train step `VisionTransformer` compiles for `compile(jit_compile=True)`.

Keras' own step (`TorchTrainer.make_train_function`) hands all of a step to `torch.compile`:
the forward pass through every layer's `__call__`, the loss, `loss.backward()`, the optimizer
and the metrics. Dynamo then traces Keras' Python machinery and breaks the graph wherever it
cannot follow it (TensorFlow's `executing_eagerly` in `Rescaling`, `inspect.signature`,
`importlib`, the backward pass), and every piece between two breaks becomes a frame compiled
on its own; the frames of `Layer.__call__`, `forward` and `_setattr_hook` are shared by all
layers, and their guards on `self`'s class, on `kwargs` and on attribute names fail for each
new layer class: a 2-block ViT recompiled 45 times in its first epoch, a plain Keras model of
the same shape 30 times (benchmarks/torch_compile.py, benchmarks/RESULTS.md).

This step compiles what PyTorch training code compiles (timm, torchtitan: the forward pass and
the loss; the optimizer steps outside): the forward pass and the loss as a function of the
weights, traced once per input signature by `make_fx` over Keras' `stateless_call` and
`stateless_compute_loss` (Keras' Python runs once, at trace time, as under `jax.jit`), on fake
tensors, and given to `torch.compile` as one graph of ATen ops (`fullgraph=True`: nothing to
break and nothing to guard on but the inputs). The backward pass is the graph AOTAutograd
derives from it, run by `loss.backward()`; the optimizer (Keras', whose PyTorch versions update
every variable with `torch._foreach_*` multi-tensor ops), the loss tracker and the metrics run
eagerly, as in Keras' uncompiled step. Same weights, same loss, same updates as Keras' step.

Where the forward pass is no function of the weights and inputs alone, tracing fails and the
step is Keras' own, with a warning that says why: random numbers drawn from a seeded
`keras.random.SeedGenerator` (stochastic depth: Keras' PyTorch backend seeds a
`torch.Generator` with the seed's value, a Python int read from a tensor). Dropout layers
draw from PyTorch's generator and trace.
"""

import warnings

import torch
from keras import ops, tree
from torch.fx.experimental.proxy_tensor import make_fx

from keras_vit.kernels import torch as torch_kernels


def make_train_function(model, keras_train_function):
    """The step function for `model.fit` and `train_on_batch` (it takes `[data]`, as Keras'
    does), or None where this step does not apply (Keras' own then). `keras_train_function()`
    builds and returns Keras' own step, taken where tracing fails."""
    from keras.src.backend.torch.trainer import TorchTrainer  # noqa: PLC0415

    if (type(model).train_step is not TorchTrainer.train_step  # a custom train_step
            or model.optimizer is None or not model.trainable_weights
            or model.steps_per_execution > 1):  # which Keras' step refuses, saying why
        return None
    return CompiledTrainStep(model, keras_train_function)


class CompiledTrainStep:
    """Keras' PyTorch train step with the forward pass and loss compiled as one graph."""

    def __init__(self, model, keras_train_function):
        self.model = model
        self.keras_train_function = keras_train_function
        self.fallback = None
        # input signature -> compiled forward-and-loss function
        self.compiled = {}

    def __call__(self, data):
        if self.fallback is not None:
            return self.fallback(data)
        from keras.src.trainers.data_adapters import data_adapter_utils  # noqa: PLC0415

        model = self.model
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data[0])
        x, y, sample_weight = tree.map_structure(
            lambda t: None if t is None else ops.convert_to_tensor(t), (x, y, sample_weight))
        key = repr(tree.map_structure(
            lambda t: None if t is None else (tuple(t.shape), str(t.dtype)),
            (x, y, sample_weight)))
        variables = ([v.value for v in model.trainable_variables],
                     [v.value for v in model.non_trainable_variables],
                     [v.value for v in model.metrics_variables])
        forward = self.compiled.get(key)
        if forward is None:
            forward = self._trace(variables, x, y, sample_weight)
            if forward is None:
                return self.fallback(data)
            self.compiled[key] = forward

        model.zero_grad()
        loss, y_pred, non_trainable, metrics = forward(*variables, x, y, sample_weight)
        for variable, value in zip(model.non_trainable_variables, non_trainable):
            variable.assign(value)
        for variable, value in zip(model.metrics_variables, metrics):
            variable.assign(value)
        model._loss_tracker.update_state(
            loss.detach(), sample_weight=next(t for t in tree.flatten(x) if t is not None).shape[0])
        model.optimizer.scale_loss(loss).backward()
        trainable = model.trainable_weights[:]
        with torch.no_grad():
            model.optimizer.apply([v.value.grad for v in trainable], trainable)
        y_pred = tree.map_structure(lambda t: t.detach(), y_pred)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _trace(self, variables, x, y, sample_weight):
        """`torch.compile` of the traced forward pass and loss; None (and Keras' step from then
        on) where the trace fails."""
        model = self.model

        def forward_and_loss(trainable, non_trainable, metrics, x, y, sample_weight):
            kwargs = {"training": True} if model._call_has_training_arg else {}
            y_pred, non_trainable, losses = model.stateless_call(
                trainable, non_trainable, x, return_losses=True, **kwargs)
            if losses:  # regularisation losses of the forward pass, for compute_loss
                model._losses_override = losses
            try:
                loss, (_, non_trainable, metrics) = model.stateless_compute_loss(
                    trainable, non_trainable, metrics, x=x, y=y, y_pred=y_pred,
                    sample_weight=sample_weight, training=True)
            finally:
                model._losses_override = []
            return loss, y_pred, non_trainable, metrics

        try:
            with torch_kernels.tracing(), torch.enable_grad():
                graph = make_fx(forward_and_loss, tracing_mode="fake")(
                    *variables, x, y, sample_weight)
        except Exception as error:  # noqa: BLE001 (any failure: Keras' own step, said why)
            message = str(error).strip().splitlines()
            warnings.warn(
                "keras_vit: the forward pass could not be traced as a function of the weights "
                f"({type(error).__name__}: {message[0][:200] if message else ''}); training "
                "with Keras' own torch.compile step instead, which recompiles per layer class.",
                stacklevel=3)
            self.fallback = self.keras_train_function()
            model.train_function = self  # which Keras' make_train_function replaced
            return None
        return torch.compile(graph, fullgraph=True, dynamic=False)
