"""Rematerialised encoder blocks: `ViT(..., remat=True)` trains large models in less memory.

Backpropagation keeps every intermediate activation of the forward pass (per block: the two
LayerNorm outputs, q/k/v, the (B, H, T, T) attention probabilities, the (B, T, mlp) GELU input
and output, ...). `RematTransformerBlock` keeps only each block's input and recomputes the
rest during the backward pass (`keras.remat`: `jax.checkpoint`, `tf.recompute_grad`,
`torch.utils.checkpoint`), at the cost of one more forward pass of the encoder per step. The
outputs and gradients are those of `TransformerBlock` (tested on every backend).

The dropout and stochastic-depth masks drawn during the recomputation are the forward pass's:
on PyTorch and TensorFlow the block's seed-generator states are put back to their values
before the forward pass at the start of the recomputed function (else PyTorch would draw new
masks and TensorFlow would advance the seeds twice); JAX replays the traced seeds as they were.

Where it saves memory: PyTorch and TensorFlow on any device, JAX on GPUs and TPUs. On JAX's CPU
backend it saves nothing and costs nothing: XLA's CPU compiler removes the optimization
barriers of `jax.checkpoint` before its common-subexpression elimination, which merges the
recomputation back into the forward pass (compiled dots: 55 with the recomputation before
optimisation, 47 after, as without remat). A warning says so once.
"""

import functools
import warnings

import keras

from keras_vit.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_vit")
class RematTransformerBlock(TransformerBlock):
    """`TransformerBlock` whose activations are recomputed in the backward pass.

    Same arguments, weights (checkpoint names included), outputs and gradients as
    `TransformerBlock`; it stores only its input for the backward pass. `ViT(remat=True)`
    builds its encoder from these blocks, and `.keras` files keep the choice.

    Example:

    >>> import numpy as np
    >>> block = RematTransformerBlock(num_heads=2, mlp_dim=16)
    >>> tuple(block(np.zeros((1, 5, 8), "float32")).shape)
    (1, 5, 8)
    """

    def call(self, x, training=None, return_attention_scores=False, num_queries=None):
        plain = super().call
        if return_attention_scores or isinstance(x, keras.KerasTensor):
            return plain(x, training=training, return_attention_scores=return_attention_scores,
                         num_queries=num_queries)
        seeds = [v for v in self.non_trainable_variables if "seed_generator_state" in v.path]
        if keras.backend.backend() == "jax":
            _warn_on_xla_cpu()
            if seeds:
                # The seed states go in and out of the checkpointed function as values: an update
                # made inside it would leave a tracer of the inner trace in the training step's
                # state (jax.errors.UnexpectedTracerError).
                def block(tokens, states):
                    for variable, value in zip(seeds, states):
                        variable.assign(value)
                    out = plain(tokens, training=training, num_queries=num_queries)
                    return out, [variable.value for variable in seeds]

                out, states = keras.remat(block)(x, [variable.value for variable in seeds])
                for variable, value in zip(seeds, states):
                    variable.assign(value)
                return out
        saved = [keras.ops.copy(v.value) for v in seeds]

        def block(tokens):
            for variable, value in zip(seeds, saved):
                variable.assign(value)  # the recomputation draws the forward pass's masks
            return plain(tokens, training=training, num_queries=num_queries)

        return keras.remat(block)(x)


@functools.cache
def _warn_on_xla_cpu():
    import jax  # noqa: PLC0415 (JAX backend only)

    if jax.default_backend() == "cpu":
        warnings.warn(
            "remat=True saves no memory on JAX's CPU backend: XLA's CPU compiler removes the "
            "optimization barriers of jax.checkpoint and merges the recomputation back into "
            "the forward pass. It does on GPUs and TPUs, and with KERAS_BACKEND=torch or "
            "tensorflow on a CPU.", stacklevel=4)
