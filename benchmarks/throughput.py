"""Inference and training throughput of keras-vit against its peers, in one run.

For each backend (each in its own process, since Keras reads KERAS_BACKEND once) this measures:
- keras-vit (`keras_vit.ViT`), through Keras' own compiled predict / train steps;
- KerasHub's ViT (`keras_hub.models.ViTImageClassifier`) with identical shapes, the same way;
- the matrix-product ceiling: one fp32 matmul of ViT-B/16's MLP shapes (T*8 x D by D x 4D and
  back), compiled the way the backend compiles a model step;
- with `--products-bound`, the step's own matrix products alone (`step_products`: every
  product and, for training, gradient product of the model, one after another on random
  operands): the throughput no implementation of these FLOPs exceeds with this backend's
  kernels;
and, once, HF transformers' `ViTForImageClassification` in PyTorch (eager, SDPA attention).
Every figure is the median over repeated steps after warm-up. Ratios are against peers measured
in the same run on the same machine.

On a GPU every contender runs there (Keras places the models itself; HF is moved to CUDA), with
device-resident inputs, `--dtype bfloat16` as mixed precision for all of them (Keras'
`mixed_bfloat16` policy; `torch.autocast` for HF, float32 weights in both), and the table adds
each contender's model FLOP utilisation (MFU): the full model's FLOPs per second over the
device's peak dense throughput for the compute dtype (data-sheet figures in `PEAK_TFLOPS`, or
`--peak-tflops`). The MFU numerator is the same architectural FLOP count for every contender,
so MFU ratios equal throughput ratios.

Usage (the `bench` extra installs the peers):

    python benchmarks/throughput.py --variant ViTB16 --batch-size 8 --workload infer
    python benchmarks/throughput.py --variant ViTS16 --batch-size 16 --workload train \
        --backends jax,tensorflow,torch --json results.json
    # on a GPU:
    python benchmarks/throughput.py --variant ViTB16 --batch-size 256 --workload train \
        --dtype bfloat16 --backends jax,torch --models keras_vit,hf_transformers
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

sys.path.insert(0, ROOT)
from keras_vit.variants import VARIANTS  # noqa: E402  (the architectures; imports Keras)

BENCHMARKED = ("ViTTi16", "ViTS16", "ViTS32", "ViTB16", "ViTB32", "ViTL16")


def arch_of(variant):
    v = VARIANTS[variant]
    return dict(patch=v["patch_size"], hidden=v["hidden_size"], layers=v["num_layers"],
                heads=v["num_heads"], mlp=v["mlp_dim"])


def forward_flops(arch, image_size, classes=1000, channels=3, last_block_rows=None):
    """Multiply-adds x 2 of one image's forward pass (matrix products only).

    `last_block_rows`: the output rows the last block computes (1 for keras-vit's class-token
    shortcut; None: all T). Its keys and values are still computed for every token (and, as
    keras-vit does, the queries from the fused QKV product), so the figure counts the work done.
    """
    p, d, m, layers = arch["patch"], arch["hidden"], arch["mlp"], arch["layers"]
    n = (image_size // p) ** 2
    t = n + 1

    def block(rows):
        return 2 * t * d * 3 * d + 2 * 2 * rows * t * d + 2 * rows * d * d + 2 * 2 * rows * d * m

    last = block(t if last_block_rows is None else last_block_rows)
    return 2 * n * p * p * channels * d + (layers - 1) * block(t) + last + 2 * d * classes


def last_block_rows(args):
    """The rows keras-vit's last block computes under `--last-block` (None: all of them)."""
    return 1 if args.last_block == "class_row" else None


def step_products(arch, image_size, batch, workload, classes=1000, channels=3,
                  last_block_rows=None):
    """The matrix products of one step, as (lhs shape, rhs shape) pairs, in the order a model
    runs them.

    Forward: the patch embedding, per block the fused QKV product, the attention logits and
    values (per head, batched), the output projection and the MLP's two layers, then the head;
    `last_block_rows` as in `forward_flops`. A train step adds, for each forward product
    A @ B, the gradient of B (A^T @ G) and of A (G @ B^T), except the pixels' gradient, which
    no one computes.
    """
    p, d, m, layers, heads = (arch[k] for k in ("patch", "hidden", "mlp", "layers", "heads"))
    n = (image_size // p) ** 2
    t = n + 1
    forward = [((batch * n, p * p * channels), (p * p * channels, d), False)]
    for layer in range(layers):
        rows = t if layer < layers - 1 or last_block_rows is None else last_block_rows
        forward += [
            ((batch * t, d), (d, 3 * d), True),
            ((batch, heads, rows, d // heads), (batch, heads, d // heads, t), True),
            ((batch, heads, rows, t), (batch, heads, t, d // heads), True),
            ((batch * rows, d), (d, d), True),
            ((batch * rows, d), (d, m), True),
            ((batch * rows, m), (m, d), True),
        ]
    forward.append(((batch, d), (d, classes), True))
    products = [(a, b) for a, b, _ in forward]
    if workload == "train":
        for a, b, lhs_gradient in forward:
            g = (*a[:-1], b[-1])
            products.append(((*a[:-2], a[-1], a[-2]), g))  # dB = A^T G
            if lhs_gradient:
                products.append((g, (*b[:-2], b[-1], b[-2])))  # dA = G B^T
    return products


def products_flops(products):
    """2 x multiply-adds of (lhs, rhs) products."""
    import math

    return sum(2 * math.prod(a) * b[-1] for a, b in products)


# Peak dense matrix throughput in TFLOP/s (vendor data sheets, without sparsity) by compute
# dtype; the first entry whose name occurs in the device's name applies (so "H100 PCIe" before
# "H100"). float32 is the CUDA-core figure: TF32 tensor cores may run float32 products faster
# where a framework enables them (JAX does on Ampere and newer), so pass --peak-tflops then.
PEAK_TFLOPS = (
    ("H200", {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9}),
    ("H100 PCIe", {"bfloat16": 756.0, "float16": 756.0, "float32": 51.2}),
    ("H100", {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9}),
    ("A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}),
    ("L40S", {"bfloat16": 362.1, "float16": 362.1, "float32": 91.6}),
    ("L4", {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3}),
    ("A10", {"bfloat16": 125.0, "float16": 125.0, "float32": 31.2}),
)


def peak_tflops(device_name, dtype):
    """The data-sheet peak for `dtype` on the device called `device_name`, or None."""
    for name, peaks in PEAK_TFLOPS:
        if name.lower() in (device_name or "").lower():
            return peaks.get(dtype)
    return None


def mfu(images_per_second, model_flops_per_image, peak):
    """Model FLOP utilisation: the model's FLOP/s over the device's peak (TFLOP/s)."""
    if not images_per_second or not peak:
        return None
    return images_per_second * model_flops_per_image / (peak * 1e12)


def timed(step, warmup, steps):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


# --------------------------------------------------------------------------- Keras worker


def keras_worker(args):
    """keras-vit, KerasHub and the matmul ceiling on this backend, steps interleaved.

    The contenders take turns, one step each, so a machine whose load changes during the run
    slows them alike and the ratios stay fair.
    """
    import numpy as np

    import keras

    _host_memory(args)
    backend = keras.backend.backend()
    device = keras_device_name(backend)
    if args.dtype != "float32":
        keras.mixed_precision.set_global_policy(f"mixed_{args.dtype}")
    arch = arch_of(args.variant)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch_size, args.image_size, args.image_size, 3)).astype("float32")
    y = rng.integers(0, 1000, args.batch_size).astype("int32")
    # Inputs already on the device, as HF's are: the steps time the models, not a host copy.
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)

    def step_of(model):
        if args.workload == "train":
            model.compile(
                optimizer=keras.optimizers.AdamW(1e-4, global_clipnorm=1.0),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            return lambda: model.train_on_batch(x, y)
        return lambda: model.predict_on_batch(x)

    ceiling_rows = MATMUL_ROWS * (1 if device == "cpu" else ACCELERATOR_ROWS_FACTOR)
    steps = {"ceiling": matmul_step(backend, ceiling_rows, args.dtype)}  # in the compute dtype
    if args.products_bound:
        steps["products_only"] = products_step(backend, step_products(
            arch, args.image_size, args.batch_size, args.workload,
            last_block_rows=last_block_rows(args)), args.dtype)
    if "keras_vit" in args.models:
        import keras_vit

        steps["keras_vit"] = step_of(keras_vit.ViT(
            image_size=args.image_size, patch_size=arch["patch"], hidden_size=arch["hidden"],
            num_layers=arch["layers"], num_heads=arch["heads"], mlp_dim=arch["mlp"],
            classifier_activation=None, gelu_approximate=args.gelu == "tanh",
            last_block_class_token_only=args.last_block == "class_row",
        ))
    if args.baseline:
        # The same model from another checkout of keras-vit (e.g. a worktree of main), loaded
        # as `keras_vit_base`, timed in turn with the others in this process.
        keras_vit_base = import_baseline(args.baseline)
        steps["keras_vit_base"] = step_of(keras_vit_base.ViT(
            image_size=args.image_size, patch_size=arch["patch"], hidden_size=arch["hidden"],
            num_layers=arch["layers"], num_heads=arch["heads"], mlp_dim=arch["mlp"],
            classifier_activation=None, gelu_approximate=args.gelu == "tanh",
            last_block_class_token_only=args.last_block == "class_row",
        ))
    if "keras_hub" in args.models:
        import keras_hub

        backbone = keras_hub.models.ViTBackbone(
            image_shape=(args.image_size, args.image_size, 3), patch_size=arch["patch"],
            num_layers=arch["layers"], num_heads=arch["heads"], hidden_dim=arch["hidden"],
            mlp_dim=arch["mlp"],
        )
        steps["keras_hub"] = step_of(keras_hub.models.ViTImageClassifier(
            backbone=backbone, num_classes=1000, preprocessor=None, activation=None))
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    results = {"backend": backend, "device": device}
    if "keras_vit" in args.models:
        import keras_vit

        # Which implementation each primitive took (after the run: measured choices included).
        results["keras_vit_kernels"] = keras_vit.kernels.describe()
        results["keras_vit_path"] = os.path.dirname(keras_vit.__file__)
    for name, values in times.items():
        seconds = statistics.median(values)
        if name == "ceiling":
            results["ceiling_gflops"] = matmul_flop(ceiling_rows) / seconds / 1e9
        else:
            results[name] = args.batch_size / seconds
    print(json.dumps(results))


def import_baseline(path):
    """`path`/keras_vit imported as the package `keras_vit_base`: a copy with every
    `keras_vit` name (imports, registered Keras package names) renamed, so that both versions
    live in one process without sharing modules or serialisation names."""
    import importlib
    import re
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="keras_vit_base_")
    target = os.path.join(root, "keras_vit_base")
    shutil.copytree(os.path.join(path, "keras_vit"), target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for folder, _, files in os.walk(target):
        for name in files:
            if name.endswith(".py"):
                file = os.path.join(folder, name)
                with open(file, encoding="utf-8") as f:
                    text = f.read()
                with open(file, "w", encoding="utf-8") as f:
                    f.write(re.sub(r"\bkeras_vit\b", "keras_vit_base", text))
    sys.path.insert(0, root)
    return importlib.import_module("keras_vit_base")


# The ceiling: ViT-B/16's MLP at batch 8 (1576 tokens), 1576x768 @ 768x3072, then back; on an
# accelerator at 16x the rows (batch 128), which a CPU-sized product would leave mostly idle.
MATMUL_ROWS, MATMUL_D, MATMUL_M = 8 * (1 + (224 // 16) ** 2), 768, 3072
ACCELERATOR_ROWS_FACTOR = 16


def matmul_flop(rows):
    return 2 * 2 * rows * MATMUL_D * MATMUL_M


def keras_device_name(backend):
    """'cpu', or the name of the accelerator that `backend` computes on."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return "cpu" if device.platform == "cpu" else device.device_kind
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return "cpu"
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def matmul_step(backend, rows=MATMUL_ROWS, dtype="float32"):
    """One (rows x 768) @ (768 x 3072) and back in `dtype`, compiled like a model step, on the
    backend's default device; returns when the result is ready."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, MATMUL_D)).astype("float32")
    w1 = rng.standard_normal((MATMUL_D, MATMUL_M)).astype("float32")
    w2 = rng.standard_normal((MATMUL_M, MATMUL_D)).astype("float32")
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        f = jax.jit(lambda a, w1, w2: (a @ w1) @ w2)
        a, w1, w2 = (jax.device_put(jnp.asarray(t, dtype)) for t in (a, w1, w2))
        return lambda: f(a, w1, w2).block_until_ready()
    if backend == "tensorflow":
        import tensorflow as tf

        f = tf.function(lambda a, w1, w2: tf.matmul(tf.matmul(a, w1), w2), jit_compile=True)
        a, w1, w2 = (tf.cast(tf.constant(t), dtype) for t in (a, w1, w2))
        return lambda: f(a, w1, w2)[0, 0].numpy()  # one element back: waits, copies nothing
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, w1, w2 = (torch.from_numpy(t).to(device, getattr(torch, dtype)) for t in (a, w1, w2))

    def step():
        out = (a @ w1) @ w2
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    if device == "cpu" and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        # PyTorch has two CPU product kernels, MKL's (`@`) and oneDNN's (which keras-vit
        # takes per shape where it measured faster, keras_vit.kernels.torch); the ceiling is
        # the faster of the two here.
        linear = torch.ops.mkldnn._linear_pointwise
        w1_t, w2_t = w1.t(), w2.t()

        def onednn_step():
            return linear(linear(a, w1_t, None, "none", [], ""), w2_t, None, "none", [], "")

        return min((step, onednn_step), key=lambda f: timed(f, 2, 5)[0])
    return step


def products_step(backend, products, dtype="float32"):
    """Only the matrix products of a model step (`step_products`), one after another, each on
    its own random operands (identical ones would be merged by the compiler), as one compiled
    program: the time no implementation of these FLOPs beats with this backend's kernels.

    Each product waits for the one before it (a control dependency on TensorFlow, an
    optimization barrier on JAX; eager PyTorch runs in order), as a model's dependent chain
    does: independent products would otherwise overlap, which a model step cannot do to the
    same extent. TensorFlow runs them with its own kernels (oneDNN on CPUs, faster than XLA's
    there), PyTorch through `matmul` (MKL on CPUs).
    """
    import numpy as np

    rng = np.random.default_rng(0)
    operands = [tuple(rng.random(shape, dtype=np.float32) for shape in pair) for pair in products]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def chain(operands):
            outs = []
            for a, b in operands:
                if outs:
                    outs[-1], a, b = jax.lax.optimization_barrier((outs[-1], a, b))
                outs.append(a @ b)
            return outs  # every product's result, or the compiler drops all but the last

        f = jax.jit(chain)
        operands = jax.device_put([(jnp.asarray(a, dtype), jnp.asarray(b, dtype))
                                   for a, b in operands])
        return lambda: jax.block_until_ready(f(operands))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=False)
        def chain(operands):
            outs = [tf.zeros(())]
            for a, b in operands:
                with tf.control_dependencies(outs[-1:]):
                    outs.append(tf.matmul(a, b))
            return outs[1:]  # every product's result, or the compiler drops all but the last

        operands = [(tf.cast(a, dtype), tf.cast(b, dtype)) for a, b in operands]
        return lambda: chain(operands)[-1][..., :1, :1].numpy()  # in order: the last one waits
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    operands = [tuple(torch.from_numpy(t).to(device, getattr(torch, dtype)) for t in pair)
                for pair in operands]

    def step():
        for a, b in operands:
            out = a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return step


def _host_memory(args):
    """The same host-memory setting for every contender's process (keras_vit.host_memory)."""
    if args.host_memory == "retain":
        from keras_vit.host_memory import retain_freed_memory

        if not retain_freed_memory():
            raise SystemExit("--host-memory retain needs glibc")


# --------------------------------------------------------------------------- HF worker


def hf_worker(args):
    import numpy as np
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    _host_memory(args)
    arch = arch_of(args.variant)
    config = ViTConfig(
        image_size=args.image_size, patch_size=arch["patch"], hidden_size=arch["hidden"],
        num_hidden_layers=arch["layers"], num_attention_heads=arch["heads"],
        intermediate_size=arch["mlp"], num_labels=1000, attn_implementation="sdpa",
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = ViTForImageClassification(config).to(device)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((args.batch_size, 3, args.image_size, args.image_size)).astype("float32")).to(device)
    y = torch.from_numpy(rng.integers(0, 1000, args.batch_size)).to(device)
    # Mixed precision as Keras' mixed_<dtype> policy: float32 weights, products in <dtype>.
    mixed = args.dtype != "float32"
    autocast = torch.autocast(device, dtype=getattr(torch, args.dtype), enabled=mixed)
    scaler = torch.amp.GradScaler(device, enabled=args.dtype == "float16")

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    if args.workload == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            optimizer.zero_grad()
            with autocast:
                logits = model(pixel_values=x).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            synchronize()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                model(pixel_values=x)
            synchronize()

    seconds, _ = timed(step, args.warmup, args.steps)
    print(json.dumps({"hf_transformers": args.batch_size / seconds,
                      "attn_implementation": model.config._attn_implementation,
                      "device": keras_device_name("torch")}))


# --------------------------------------------------------------------------- driver


def run_worker(kind, backend, argv):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, __file__, f"--worker={kind}", *argv], env=env,
                         capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"{kind} worker on {backend} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="ViTB16", choices=BENCHMARKED)
    parser.add_argument("--workload", default="infer", choices=["infer", "train"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--gelu", default="erf", choices=["erf", "tanh"],
                        help="keras-vit's MLP activation: 'erf' (exact GELU) is what KerasHub and HF "
                        "compute, so the contenders do identical math; 'tanh' is the official "
                        "checkpoints' approximation, keras-vit's default")
    parser.add_argument("--host-memory", default="default", choices=["default", "retain"],
                        help="'retain': every contender's process keeps freed memory for reuse "
                        "(keras_vit.host_memory.retain_freed_memory, an opt-in for eager PyTorch "
                        "inference); 'default': the C library's own policy")
    parser.add_argument("--last-block", default="class_row", choices=["class_row", "all_rows"],
                        help="keras-vit's last block: 'class_row' computes only the class token's "
                        "row, the one the head reads (keras-vit's default; same logits and "
                        "gradients); 'all_rows' computes every row, as the peers do")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's peak dense TFLOP/s for --dtype, the MFU denominator "
                        "(default: PEAK_TFLOPS by the accelerator's name; none on CPUs)")
    parser.add_argument("--products-bound", action="store_true",
                        help="also time only the step's matrix products (one after another, "
                        "each on its own operands): the img/s no implementation of these FLOPs "
                        "exceeds with this backend's kernels")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--models", default="keras_vit,keras_hub,hf_transformers")
    parser.add_argument("--baseline", help="also time keras-vit from this other checkout "
                        "(its keras_vit/ package, e.g. a git worktree of main), interleaved "
                        "with the others in the same process: old and new code in one run")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "keras":
        return keras_worker(args)
    if args.worker == "hf":
        return hf_worker(args)

    passthrough = [f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
                   if key not in ("json", "worker", "peak_tflops", "products_bound", "baseline")]
    passthrough += [f"--baseline={os.path.abspath(args.baseline)}"] if args.baseline else []
    passthrough += ["--products-bound"] if args.products_bound else []
    flops = forward_flops(arch_of(args.variant), args.image_size,
                          last_block_rows=last_block_rows(args))
    flops *= 3 if args.workload == "train" else 1
    # MFU counts the full model's FLOPs for every contender (the architecture's, not the work
    # each implementation happens to do), so MFU ratios equal throughput ratios.
    model_flops = forward_flops(arch_of(args.variant), args.image_size)
    model_flops *= 3 if args.workload == "train" else 1
    rows = {}
    for backend in args.backends.split(","):
        rows[backend] = run_worker("keras", backend, passthrough)
    hf = run_worker("hf", "torch", passthrough) if "hf_transformers" in args.models else {}

    devices = sorted({r["device"] for r in rows.values()} | ({hf["device"]} if hf else set()))
    title = (f"{args.variant} {args.workload}, batch {args.batch_size}, {args.image_size}px, "
             f"{args.dtype}, keras-vit GELU {args.gelu}, last block {args.last_block}, "
             f"host memory {args.host_memory}, on {', '.join(devices)}")

    def peak_of(device):
        return args.peak_tflops or peak_tflops(device, args.dtype)

    for r in rows.values():
        for name in ("keras_vit", "keras_hub"):
            r[f"{name}_mfu"] = mfu(r.get(name), model_flops, peak_of(r["device"]))
    if hf:
        hf["hf_transformers_mfu"] = mfu(hf["hf_transformers"], model_flops, peak_of(hf["device"]))
    for backend, r in rows.items():
        for primitive, choice in r.get("keras_vit_kernels", {}).items():
            print(f"  {backend} kernels.{primitive}: {choice}")
    if args.baseline:
        print(f"\n{title}: new code against the baseline ({args.baseline}), interleaved")
        print("| backend | keras-vit img/s | baseline img/s | KerasHub img/s | new vs KerasHub "
              "| baseline vs KerasHub | new / baseline |")
        print("|---|---|---|---|---|---|---|")
        for backend, r in rows.items():
            ours, base, hub = r.get("keras_vit"), r.get("keras_vit_base"), r.get("keras_hub")
            print(f"| {backend} | {_f(ours)} | {_f(base)} | {_f(hub)} | {_ratio(ours, hub)} | "
                  f"{_ratio(base, hub)} | {_ratio(ours, base)} |")
    print(f"\n{title}  (img/s; GFLOP/s; share of the matmul ceiling; MFU where the peak is known)")
    print("| backend | keras-vit img/s | KerasHub img/s | vs KerasHub | keras-vit GFLOP/s | ceiling GFLOP/s | of ceiling | keras-vit MFU | KerasHub MFU | products only img/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for backend, r in rows.items():
        ours, hub, bound = r.get("keras_vit"), r.get("keras_hub"), r.get("products_only")
        gflops = ours * flops / 1e9 if ours else None
        share = f" ({_pct(ours, bound)} reached)" if bound and ours else ""
        print(f"| {backend} | {_f(ours)} | {_f(hub)} | {_ratio(ours, hub)} | {_f(gflops, 1)} | "
              f"{_f(r['ceiling_gflops'], 1)} | {_pct(gflops, r['ceiling_gflops'])} | "
              f"{_pct(r['keras_vit_mfu'], 1, 1)} | {_pct(r['keras_hub_mfu'], 1, 1)} | "
              f"{_f(bound)}{share} |")
    if hf:
        best = max((r.get("keras_vit") or 0, b) for b, r in rows.items())
        hf_mfu = f", MFU {_pct(hf['hf_transformers_mfu'], 1, 1)}" if hf["hf_transformers_mfu"] else ""
        print(f"\nHF transformers (torch, {hf['attn_implementation']}, {hf['device']}): "
              f"{_f(hf['hf_transformers'])} img/s{hf_mfu}; best keras-vit ({best[1]}) / HF = "
              f"{_ratio(best[0], hf['hf_transformers'])}")
    result = {
        "config": vars(args) | {"gflop_per_image": flops / 1e9,
                                "model_gflop_per_image": model_flops / 1e9},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
        "backends": rows,
        "hf_transformers": hf,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def _f(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}x"


def _pct(a, b, digits=0):
    return "-" if not a or not b else f"{100 * a / b:.{digits}f}%"


if __name__ == "__main__":
    main()
