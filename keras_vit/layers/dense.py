"""`affine` and `Dense`: x W + b over the last axis, with the bias fused into the product.

Every projection in the encoder (patch embedding, q/k/v, attention output, the MLP's two layers)
is a matrix product followed by a bias. XLA fuses that bias add into its neighbours, so JAX and
TensorFlow take the plain `matmul + bias`. Eager PyTorch runs the add as a separate pass that
writes a fresh (tokens, width) buffer, which the next op (GELU, attention) then reads from
memory rather than cache; `torch.addmm` adds the bias inside the BLAS call instead (ViT-Ti/16
MLP at batch 32: 58.7 -> 48.7 ms; benchmarks/RESULTS.md). Same function, float rounding aside.

On CPUs with AVX-512, PyTorch's oneDNN linear kernel (the one its own compiler, Inductor, emits
for CPU linears) beats the MKL `addmm` on every ViT projection shape measured, by 7-34%, and on
the input gradient's product by ~30% (benchmarks/RESULTS.md, session 16); it reads our
(D_in, D_out) kernel through a transposed view, with no copy. It has no autograd formula of its
own, so `_OneDNNAffine` gives it one: the input gradient through the same kernel, the weight
gradient by `mm` (which measured as fast), the bias gradient by a column sum. On an AVX2-only
CPU it measured slower on ViT-B/16's shapes (session 14), so those keep `addmm`, and so does
float16, which the kernel does not take.
"""

import functools

import keras
from keras import ops

from keras_vit.layers.utils import in_xla_tensorflow_graph


def affine(x, kernel, bias, training=None):
    """`x @ kernel + bias` over the last axis of `x` (any rank), kernel (D_in, D_out).

    Args:
        x: inputs (..., D_in).
        kernel: (D_in, D_out), in `x`'s dtype.
        bias: (D_out,), in `x`'s dtype.
        training: whether gradients follow (TensorFlow then takes `_tf_affine_for_training`
            outside XLA).

    Returns:
        (..., D_out).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> y = affine(np.ones((2, 3, 4), "float32"), np.ones((4, 5), "float32"),
    ...            np.arange(5, dtype="float32"))
    >>> keras.ops.convert_to_numpy(y)[0, 0].tolist()
    [4.0, 5.0, 6.0, 7.0, 8.0]
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_affine(x, kernel, bias, training)
    if backend != "torch":
        return ops.matmul(x, kernel) + bias
    import torch  # noqa: PLC0415 (the torch backend only)

    x, kernel, bias = (ops.convert_to_tensor(t) for t in (x, kernel, bias))
    rows = x.reshape(-1, x.shape[-1])
    if (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
            and _onednn_linear_is_faster() and _onednn_linear_takes(x.dtype)):
        rows = _onednn_affine_function().apply(rows, kernel, bias)
    else:
        rows = torch.addmm(bias, rows, kernel)
    return rows.reshape(*x.shape[:-1], kernel.shape[-1])


def fold_scale_and_offset(kernel, bias, scale, offset):
    """The kernel and bias of `(x * scale + offset) @ kernel + bias` as a product of x:
    `(scale[:, None] * kernel, offset @ kernel + bias)`.

    A layer norm's `gamma` and `beta` (`LayerNorm.folds_into_next_product`) applied by the
    product after it: work on the (D_in, D_out) kernel instead of the (tokens, D_in)
    activation, and the same function (float rounding aside).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> k, b = fold_scale_and_offset(np.ones((2, 3), "float32"), np.zeros(3, "float32"),
    ...                              np.array([2.0, 3.0], "float32"), np.ones(2, "float32"))
    >>> keras.ops.convert_to_numpy(k)[:, 0].tolist(), keras.ops.convert_to_numpy(b).tolist()
    ([2.0, 3.0], [2.0, 2.0, 2.0])
    """
    kernel_scaled = ops.expand_dims(scale, -1) * kernel
    return kernel_scaled, ops.squeeze(ops.matmul(ops.expand_dims(offset, 0), kernel), 0) + bias


def _tf_affine(x, kernel, bias, training=None):
    """TensorFlow: a 2-D `MatMul` and a `BiasAdd`, the pair that TF's graph optimizer fuses
    into one oneDNN kernel when XLA is off. Keras' `matmul` of a (B, T, D) tensor by a kernel
    is a broadcast batched product, whose kernel gradient is a product per example summed
    over the batch, and `+ bias` a broadcast add whose gradient is a general reduction; here
    the kernel's gradient is one product and the bias's a `BiasAddGrad` (train steps without
    XLA take `_tf_affine_for_training`'s gradients). Under XLA both forms compile to the same
    code."""
    import tensorflow as tf  # noqa: PLC0415 (the tensorflow backend only)

    x = tf.convert_to_tensor(x)
    # Rows already: no reshapes between the product and what follows.
    rows = x if x.shape.rank == 2 else tf.reshape(x, (-1, x.shape[-1]))
    if training and not in_xla_tensorflow_graph():
        rows = _tf_affine_for_training()(
            rows, tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias))
    else:
        rows = tf.nn.bias_add(tf.matmul(rows, kernel), bias)
    if x.shape.rank == 2:
        return rows
    return tf.reshape(rows, tf.concat([tf.shape(x)[:-1], [kernel.shape[-1]]], axis=0))


@functools.cache
def _tf_affine_for_training():
    """rows (N, D_in) @ kernel + bias with hand-written gradients, for TensorFlow train steps
    without XLA.

    Autodiff takes the input gradient as `MatMul(upstream, kernel, transpose_b=True)`, and
    oneDNN runs that transposed-operand product up to ~15% slower than the same product on a
    row-major (D_out, D_in) matrix; a transposed copy of the kernel costs one pass over the
    small kernel. ViT-S/16 projections at batch 16, forward and backward: 16.6 -> 15.4 ms
    (384 -> 1152), 23.1 -> 20.5 ms (384 -> 1536); S/16 train step 1.025-1.029x
    (benchmarks/RESULTS.md, session 19). The weight gradient (`transpose_a`, no slower) is
    autodiff's product; the bias gradient is a product too (see below).
    """
    import tensorflow as tf  # noqa: PLC0415 (the tensorflow backend only)

    @tf.custom_gradient
    def affine_rows(rows, kernel, bias):
        def gradient(upstream):
            d_in, d_out = kernel.shape
            # (D_out, D_in) through a 3-D transpose and a reshape, a pattern that the graph
            # optimizer leaves alone (a 2-D `Transpose` feeding the product it folds away;
            # `einsum` is as fast for the product but oneDNN's einsum costs ~0.4 ms a call).
            kernel_t = tf.reshape(tf.transpose(kernel[:, :, None], (1, 0, 2)), (d_out, d_in))
            # The bias gradient, the column sums, as a product with a ones vector: oneDNN
            # reads the gradient once, where `BiasAddGrad` took twice as long.
            ones = tf.ones((tf.shape(upstream)[0], 1), upstream.dtype)
            return (tf.matmul(upstream, kernel_t),
                    tf.matmul(rows, upstream, transpose_a=True),
                    tf.reshape(tf.matmul(upstream, ones, transpose_a=True), (d_out,)))

        return tf.nn.bias_add(tf.matmul(rows, kernel), bias), gradient

    return affine_rows


def _onednn_linear(rows, weight, bias):
    """rows @ weight.T + bias by oneDNN; `weight` is (D_out, D_in), as `torch.nn.Linear`'s."""
    import torch  # noqa: PLC0415 (the torch backend only)

    return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")


@functools.cache
def _onednn_affine_function():
    """`_OneDNNAffine`: rows (N, D_in) @ kernel (D_in, D_out) + bias, with its gradients."""
    import torch  # noqa: PLC0415 (the torch backend only)

    class _OneDNNAffine(torch.autograd.Function):
        @staticmethod
        def forward(ctx, rows, kernel, bias):
            ctx.save_for_backward(rows, kernel)
            return _onednn_linear(rows, kernel.t(), bias)  # the kernel's transposed view

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):
            rows, kernel = ctx.saved_tensors
            grad = grad.contiguous()
            need_rows, need_kernel, need_bias = ctx.needs_input_grad
            # d rows = grad @ kernel.T: the (D_in, D_out) kernel is that product's
            # (out, in) weight as it stands.
            grad_rows = _onednn_linear(grad, kernel, None) if need_rows else None
            grad_kernel = torch.mm(rows.t(), grad) if need_kernel else None
            grad_bias = grad.sum(0) if need_bias else None
            return grad_rows, grad_kernel, grad_bias

    return _OneDNNAffine


@functools.cache
def _onednn_linear_takes(dtype):
    """Whether oneDNN's linear kernel runs `dtype` on this CPU, probed once on a tiny product.

    oneDNN builds its bfloat16 inner product only on CPUs with the AVX-512 bf16 or AMX
    instructions (elsewhere: "could not create a primitive descriptor"); those then take
    `addmm`, which converts internally.
    """
    import torch  # noqa: PLC0415 (the torch backend only)

    try:
        _onednn_linear(torch.ones((2, 2), dtype=dtype), torch.ones((2, 2), dtype=dtype),
                       torch.zeros(2, dtype=dtype))
    except RuntimeError:
        return False
    return True


@functools.cache
def _onednn_linear_is_faster():
    """Whether this PyTorch has oneDNN's CPU linear kernel and the CPU runs AVX-512, where that
    kernel measured faster than `addmm` on every ViT shape (see the module docstring)."""
    import torch  # noqa: PLC0415 (the torch backend only)

    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    )


@keras.saving.register_keras_serializable(package="keras_vit")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` whose bias add is fused into the product (see `affine`).

    Same arguments, weights and results as `keras.layers.Dense`. A bias-free layer takes Keras'
    own call, and so does a quantized one (Keras routes it to `quantized_call`); LoRA is kept,
    since `self.kernel` already includes the low-rank update.

    Example:

    >>> import numpy as np
    >>> tuple(Dense(3, kernel_initializer="ones")(np.ones((1, 2), "float32")).shape)
    (1, 3)
    """

    def call(self, inputs, training=None):
        if self.bias is None:
            return super().call(inputs, training=training)
        return self.activation(affine(inputs, self.kernel, self.bias, training))

    def quantize(self, mode=None, type_check=True, config=None):
        # Keras' type check refuses subclasses of Dense; this one changes only the float call,
        # so Keras' quantized kernels apply as they are.
        super().quantize(mode, type_check=False, config=config)
