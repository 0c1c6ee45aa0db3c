"""PyTorch implementations of the primitives (contracts: `keras_vit.kernels.reference`).

Eager PyTorch runs each op as its own kernel call, so the forms below save passes and buffers:
the bias added inside the product (`addmm`), GELU in place when no gradient is recorded,
PyTorch's fused layer norm, and `scaled_dot_product_attention` on strided views of the packed
QKV product (on CUDA, SDPA picks its flash or memory-efficient kernel for bf16/fp16, softmax
statistics in float32).

A machine-specific path, oneDNN's CPU linear kernel (`torch.ops.mkldnn._linear_pointwise`, a
private op), is taken only where it measured faster than `addmm` on this machine, for the
shape and dtype at hand (`product_choice`). It was once chosen by a CPU-flag rule ("AVX-512:
oneDNN"), which held on the AMD EPYC machines it was tuned on and cost 26% on an Intel Xeon
(ViT-B/16 inference, issue 22).
"""

import contextlib
import functools
import threading
import time

import torch
import torch.nn.functional as F
from keras import ops

from keras_vit.kernels import reference

# --------------------------------------------------------------------------- affine
#
# `torch.addmm` adds the bias inside the BLAS call, where `matmul + bias` runs the add as a
# separate pass that writes a fresh (tokens, width) buffer, which the next op then reads from
# memory rather than cache (ViT-Ti/16 MLP at batch 32: 58.7 -> 48.7 ms; benchmarks/RESULTS.md).

# Products of fewer multiply-adds than this take `addmm` without timing: a timing would cost
# more than it could save, and small products are where a second kernel gains least.
TIMING_MIN_MULTIPLY_ADDS = 1 << 24
# oneDNN must beat `addmm` by this factor (median of interleaved timings) to be chosen: a tie
# on a noisy machine keeps the public path.
ONEDNN_MARGIN = 0.97
# (rows, D_in, D_out, dtype, with gradients) -> "onednn" or "addmm": the choices measured in
# this process (see `describe`).
PRODUCT_CHOICES = {}


def affine(x, kernel, bias, training=None):
    x, kernel, bias = (ops.convert_to_tensor(t) for t in (x, kernel, bias))
    rows = x.reshape(-1, x.shape[-1])
    if product_choice(rows, kernel) == "onednn":
        rows = _onednn_affine_function().apply(rows, kernel, bias)
    else:
        rows = torch.addmm(bias, rows, kernel)
    return rows.reshape(*x.shape[:-1], kernel.shape[-1])


def product_choice(rows, kernel):
    """"onednn" or "addmm" for rows (N, D_in) @ kernel (D_in, D_out): oneDNN's linear kernel
    only on a CPU where this PyTorch has it, builds it for the dtype, and it measured faster
    than `addmm` for this shape and dtype (with gradients if they are recorded). Measured once
    per shape in eager calls, cached in `PRODUCT_CHOICES`; inside torch.compile, and for tiny
    products, `addmm`."""
    if _compiling():
        # First: Dynamo would otherwise trace the probes and the choices' dict, graph-breaking
        # on `_onednn_linear`'s cache and guarding on the dict (a recompilation per new
        # entry); Inductor picks the CPU's product kernels itself.
        return "addmm"
    if (rows.device.type != "cpu" or rows.dtype not in (torch.float32, torch.bfloat16)
            or _onednn_linear() is None):
        return "addmm"
    n, d_in = rows.shape
    d_out = kernel.shape[-1]
    if n * d_in * d_out < TIMING_MIN_MULTIPLY_ADDS:
        return "addmm"
    grad = torch.is_grad_enabled() and (rows.requires_grad or kernel.requires_grad)
    key = (n, d_in, d_out, rows.dtype, grad)
    choice = PRODUCT_CHOICES.get(key)
    if choice is None:
        if not _onednn_linear_takes(rows.dtype):
            return "addmm"
        choice = PRODUCT_CHOICES[key] = _measure_on_own_thread(n, d_in, d_out, rows.dtype, grad)
    return choice


def _measure_on_own_thread(*args):
    """`_measure_product` on a thread of its own. Autograd state is per thread: the caller's
    (`torch.no_grad`, inference mode, and the saved-tensor hooks of `torch.utils.checkpoint`,
    which record every tensor saved for backward while the checkpointed forward runs) must
    neither shape the timing nor see its operands. Inside a rematerialised block
    (`ViT(remat=True)`) the first forward timed both kernels under the checkpoint's hooks:
    twice the tensors of the recomputation, and PyTorch refused the backward pass."""
    result = []
    thread = threading.Thread(target=lambda: result.append(_measure_product(*args)),
                              name="keras_vit-product-timing")
    thread.start()
    thread.join()
    return result[0] if result else "addmm"


def _compiling():
    """Inside `torch.compile`, or while `tracing()`: the public product, no measurement."""
    compiler = getattr(torch, "compiler", None)
    return bool(_TRACING or (compiler is not None and compiler.is_compiling()))


_TRACING = []


@contextlib.contextmanager
def tracing():
    """Marks a trace of the primitives into a graph for a compiler (`torch_step`'s `make_fx`):
    they then take the forms a compiler takes (`_compiling`), and measure nothing."""
    _TRACING.append(True)
    try:
        yield
    finally:
        _TRACING.pop()


def _measure_product(n, d_in, d_out, dtype, grad, repeats=5):
    """Times `addmm` and oneDNN's linear (forward, and backward when `grad`) on random operands
    of this shape, interleaved, one warm-up each; "onednn" only if its median is under
    `ONEDNN_MARGIN` times `addmm`'s."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(n, d_in, generator=generator).to(dtype)
    kernel = (torch.randn(d_in, d_out, generator=generator) / d_in ** 0.5).to(dtype)
    bias = torch.zeros(d_out, dtype=dtype)
    upstream = torch.randn(n, d_out, generator=generator).to(dtype)
    if grad:
        rows.requires_grad_(True)
        kernel.requires_grad_(True)
        bias.requires_grad_(True)

    def run(name):
        with torch.set_grad_enabled(grad):
            if name == "onednn":
                y = _onednn_affine_function().apply(rows, kernel, bias)
            else:
                y = torch.addmm(bias, rows, kernel)
            if grad:
                torch.autograd.backward(y, upstream)
                for t in (rows, kernel, bias):
                    t.grad = None

    times = {"addmm": [], "onednn": []}
    try:
        for i in range(repeats + 1):
            for name in times:
                start = time.perf_counter()
                run(name)
                if i:
                    times[name].append(time.perf_counter() - start)
    except RuntimeError:  # the private kernel failed here: the public path
        return "addmm"
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    return "onednn" if median["onednn"] < ONEDNN_MARGIN * median["addmm"] else "addmm"


@functools.cache
def _onednn_linear():
    """`torch.ops.mkldnn._linear_pointwise` where this PyTorch has it and oneDNN runs; else
    None (the public `addmm` for every product)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def _onednn_product(rows, weight, bias):
    """rows @ weight.T + bias by oneDNN; `weight` is (D_out, D_in), as `torch.nn.Linear`'s."""
    return _onednn_linear()(rows, weight, bias, "none", [], "")


@functools.cache
def _onednn_linear_takes(dtype):
    """Whether oneDNN's linear kernel runs `dtype` on this CPU, probed once on a tiny product
    against `addmm`'s answer. oneDNN builds its bfloat16 inner product only on CPUs with the
    AVX-512 bf16 or AMX instructions (elsewhere: "could not create a primitive descriptor")."""
    if _onednn_linear() is None:
        return False
    try:
        ones = torch.ones((2, 2), dtype=dtype)
        out = _onednn_product(ones, ones, torch.zeros(2, dtype=dtype))
        return bool(torch.equal(out.float(), torch.full((2, 2), 2.0)))
    except (RuntimeError, TypeError):
        return False


@functools.cache
def _onednn_affine_function():
    """`_OneDNNAffine`: rows (N, D_in) @ kernel (D_in, D_out) + bias by oneDNN's linear
    kernel, which reads the kernel through a transposed view (no copy). It has no autograd
    formula of its own, so this gives it one: the input gradient through the same kernel, the
    weight gradient by `mm`, the bias gradient by a column sum."""

    class _OneDNNAffine(torch.autograd.Function):
        @staticmethod
        def forward(ctx, rows, kernel, bias):
            ctx.save_for_backward(rows, kernel)
            return _onednn_product(rows, kernel.t(), bias)  # the kernel's transposed view

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):
            rows, kernel = ctx.saved_tensors
            grad = grad.contiguous()
            need_rows, need_kernel, need_bias = ctx.needs_input_grad
            # d rows = grad @ kernel.T: the (D_in, D_out) kernel is that product's
            # (out, in) weight as it stands.
            grad_rows = _onednn_product(grad, kernel, None) if need_rows else None
            grad_kernel = torch.mm(rows.t(), grad) if need_kernel else None
            grad_bias = grad.sum(0) if need_bias else None
            return grad_rows, grad_kernel, grad_bias

    return _OneDNNAffine


# --------------------------------------------------------------------------- GELU


def gelu(x, approximate, training=None):
    """PyTorch's fused GELU, in place when no gradient is recorded: the widest activation of
    the model then needs no second buffer (eager PyTorch allocates, and on a CPU often
    page-faults, a fresh one per call)."""
    mode = "tanh" if approximate else "none"
    x = ops.convert_to_tensor(x)
    if not torch.is_grad_enabled():
        return torch.ops.aten.gelu_(x, approximate=mode)
    return F.gelu(x, approximate=mode)


# --------------------------------------------------------------------------- layer norm


def layer_norm(x, gamma, beta, epsilon, training=None):
    """PyTorch's fused layer norm, in float32 at least (as Keras' LayerNormalization)."""
    dtype = x.dtype
    compute = torch.promote_types(dtype, torch.float32)
    y = F.layer_norm(x.to(compute), (x.shape[-1],),
                     None if gamma is None else ops.convert_to_tensor(gamma).to(compute),
                     None if beta is None else ops.convert_to_tensor(beta).to(compute),
                     epsilon)
    return y.to(dtype)


normalise = reference.normalise
layer_norm_folds_into_next_product = reference.layer_norm_folds_into_next_product


# --------------------------------------------------------------------------- attention


def attention(qkv, num_queries=None, logit_bias=None, return_probabilities=False,
              dropout=None, training=None):
    """`scaled_dot_product_attention` on strided (B, H, T, D/H) views of the packed QKV
    product, returning (B, Q, H, D/H); the explicit form when probabilities are asked for.

    Called directly rather than through `ops.dot_product_attention`, which on CPUs copies
    queries, keys and values to contiguous tensors first (three copies per block, and three
    more in the backward pass); the kernel reads the strided views as they are. `unbind`, not
    three slices: the backward of a slice zero-fills a whole (3, B, H, T, D/H) gradient per
    slice, unbind's is one stack. The queries come scaled, so the kernel's scale is 1.
    """
    if return_probabilities or dropout is not None:
        return reference.attention(qkv, num_queries, logit_bias, return_probabilities, dropout)
    query, key, value = torch.unbind(qkv.permute(2, 0, 3, 1, 4), 0)
    if num_queries is not None:
        query = query[:, :, :num_queries]
    bias = None if logit_bias is None else logit_bias(query)
    attended = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=1.0)
    return attended.transpose(1, 2), None


@functools.cache
def _on_cuda():
    """The one place this module reads the default device (tests force it); the products
    choose by their operands' device."""
    return torch.cuda.is_available()


def device():
    return "gpu" if _on_cuda() else "cpu"


def describe():
    choices = {f"{n}x{i}->{o} {str(d).replace('torch.', '')}{' +grad' if g else ''}": c
               for (n, i, o, d, g), c in sorted(PRODUCT_CHOICES.items(), key=str)}
    onednn = ("oneDNN linear where measured faster, per shape: "
              + (", ".join(f"{k}: {v}" for k, v in choices.items()) or "none measured yet")
              if _onednn_linear() is not None else "oneDNN linear unavailable")
    cuda = _on_cuda()
    return {
        "affine": f"torch: addmm; {onednn}",
        "gelu": "torch: F.gelu, in place without gradients",
        "layer_norm": "torch: F.layer_norm (float32 statistics)",
        "normalise": "reference: keras.ops",
        "layer_norm_folds_into_next_product": "no",
        "attention": ("torch: scaled_dot_product_attention on strided views (CUDA: flash / "
                      "memory-efficient kernels)" if cuda else
                      "torch: scaled_dot_product_attention on strided views (CPU)"),
    }
