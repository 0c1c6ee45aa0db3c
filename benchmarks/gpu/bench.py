"""Accelerator proof: keras-vit on a GPU against timm, HF transformers and KerasHub, with MFU.

One call (`benchmarks/gpu/run.sh`) does everything, within a time budget, in priority order:

1. `env`: the device, the package versions, and the bf16 matrix-product rate measured on
   random 8192^3 operands (the MFU denominator besides the data sheet's 989.4 TFLOP/s).
2. `check-jax`, `check-torch`: correctness before speed. keras-vit loads an official-layout
   `.npz` (tests/numpy_vit.py makes it and computes its float64 logits, the independent
   reference): float32 logits with TF32 off within 1e-4, `mixed_bfloat16` logits within 1e-2
   (max |error| / max |reference|); then 200 bf16 training steps of a small model lower its loss
   with no NaN.
3. `kernels-jax`, `kernels-torch` (after the keras-vit and timm rows of 4): every path of
   `keras_vit.kernels` on the device against the portable reference, values and gradients,
   float32 and bfloat16 (tests/test_kernels.py run in the task's process).
4. `speed`: ViT-B/16 at 224 px, bf16 mixed precision, training (AdamW, batch 256) and inference
   (batch 512), synthetic inputs already on the device, for keras-vit on JAX and on PyTorch,
   timm's `vit_base_patch16_224` (torch.compile, fused attention), HF's
   `ViTForImageClassification` (SDPA; eager and torch.compile) and KerasHub's ViT on JAX; then
   ViT-L/16 training while time is left.

Each task runs in its own process (a framework keeps its GPU memory until exit; Keras reads
KERAS_BACKEND once) with a timeout cut to what is left of the budget, so one failure or a slow
compile costs its own row, not the run. Rows are written after every task.

Timing: after compilation and warm-up, windows of consecutive steps with one device sync per
window (as a training loop runs: the host queues the next step while the device works); the
median window over its steps is the step time. Keras models run the very step function that
`fit`/`predict` compile (`model.train_function`, with the state carried between steps as `fit`
does on JAX), so no input pipeline or per-step host sync is timed; every peer gets the same.

MFU counts the architecture's FLOPs (matrix products: forward, x3 for training) for every
contender alike, so MFU ratios equal throughput ratios.

Usage:
    benchmarks/gpu/run.sh                                   # on the GPU machine, into $OUT
    python benchmarks/gpu/bench.py --dry-run --out /tmp/gpu # CPU, tiny shapes (make test)
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCHMARKS)

DATA_SHEET_TFLOPS = 989.4  # H100/H200 SXM dense bf16 (NVIDIA data sheet, without sparsity)

ARCHS = {  # the benchmarked architectures (keras_vit.variants.VARIANTS; timm's names)
    "ViTB16": dict(patch=16, hidden=768, layers=12, heads=12, mlp=3072,
                   timm="vit_base_patch16_224"),
    "ViTL16": dict(patch=16, hidden=1024, layers=24, heads=16, mlp=4096,
                   timm="vit_large_patch16_224"),
    # --dry-run: the same code paths on tiny shapes
    "tiny": dict(patch=8, hidden=64, layers=2, heads=2, mlp=128, timm=None),
}


def forward_flops(arch, image_size, classes=1000, channels=3):
    """2 x multiply-adds of one image's forward pass, matrix products only, every row of every
    block (what the architecture costs; benchmarks/throughput.py's count, tested against
    DeiT's published figures)."""
    p, d, m, layers = arch["patch"], arch["hidden"], arch["mlp"], arch["layers"]
    n = (image_size // p) ** 2
    t = n + 1
    block = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * m
    return 2 * n * p * p * channels * d + layers * block + 2 * d * classes


def model_flops(arch, image_size, workload):
    return forward_flops(arch, image_size) * (3 if workload == "train" else 1)


# ------------------------------------------------------------------------------ timing


def time_steps(step, sync, warmup, windows, steps_per_window):
    """Median seconds per step over `windows` runs of `steps_per_window` queued steps."""
    for _ in range(warmup):
        step()
    sync()
    per_step = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps_per_window):
            step()
        sync()
        per_step.append((time.perf_counter() - start) / steps_per_window)
    return statistics.median(per_step), per_step


def jax_kernel_profile(step, sync, steps=3, top=25):
    """The device's busiest kernels over `steps` steps: [(name, ms per step)], from a JAX
    profiler trace (GPU streams where there are any, else XLA's CPU thunks)."""
    import collections
    import glob
    import gzip
    import tempfile

    import jax

    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(steps):
                step()
            sync()
        (trace,) = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(trace) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    processes = {e["pid"]: e["args"]["name"] for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    devices = {pid for pid, name in processes.items() if "/device:" in name}
    wanted = devices or {pid for pid, name in processes.items() if "/host:CPU" in name}
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("pid") in wanted and not (
                not devices and event["name"].startswith(("$", "Pjit", "Common", "Python"))):
            totals[event["name"]] += event.get("dur", 0.0)
    return _top(totals, steps, top)


def torch_kernel_profile(step, sync, steps=3, top=25):
    """As `jax_kernel_profile`, from PyTorch's profiler (CUDA kernels, else CPU operators)."""
    import collections

    import torch

    cuda = torch.cuda.is_available()
    activities = [torch.profiler.ProfilerActivity.CUDA if cuda
                  else torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        sync()
    totals = collections.Counter()
    for event in profiler.key_averages():
        self_time = (getattr(event, "self_device_time_total", None) or
                     getattr(event, "self_cuda_time_total", 0)) if cuda else event.self_cpu_time_total
        if self_time:
            totals[event.key] += self_time
    return _top(totals, steps, top)


def _top(totals_us, steps, top):
    """[(name, ms per step)] of the `top` largest, and the total as the first entry."""
    total = sum(totals_us.values())
    rows = [("TOTAL", round(total / steps / 1e3, 3))]
    rows += [(name[:160], round(us / steps / 1e3, 3)) for name, us in totals_us.most_common(top)]
    return rows


def emit(row):
    print("ROW " + json.dumps(row), flush=True)


# ------------------------------------------------------------------------------ env task


def task_env(args):
    import torch

    versions = {"python": platform.python_version()}
    for name in ("torch", "jax", "keras", "keras_hub", "timm", "transformers", "numpy"):
        try:
            versions[name] = __import__(name).__version__ if name != "keras" else _keras_version()
        except Exception as error:  # noqa: BLE001 (recorded, not fatal)
            versions[name] = f"unavailable: {type(error).__name__}"
    row = {"task": "env", "versions": versions, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        row["device"] = torch.cuda.get_device_name(0)
        size = 8192 if not args.dry_run else 256
        a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1e3 / 20
        row["matmul_bf16_tflops"] = 2 * size ** 3 / seconds / 1e12
    else:
        row["device"] = "cpu"
    emit(row)


def _keras_version():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras.__version__


# ------------------------------------------------------------------------------ checks


def _set_full_precision(backend):
    """float32 products in float32 (no TF32), so the float32 check measures rounding only."""
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    else:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def task_check(args):
    """keras-vit against the float64 reference, then a short bf16 training run."""
    import numpy as np

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import keras
    from numpy_vit import make_official_params, relative_error, vit_forward

    import keras_vit

    backend = keras.backend.backend()
    _set_full_precision(backend)
    rng = np.random.default_rng(0)
    # 64-wide heads as in every published ViT, 65 tokens: the shapes the fused kernels take.
    shape = dict(image_size=64, patch=8, hidden=128, layers=2, heads=2, mlp=256, classes=10)
    params = make_official_params(rng, **shape)
    path = os.path.join(args.out, f"check-{backend}.npz")
    np.savez(path, **params)
    images = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    expected = vit_forward(params, images)

    def logits(policy):
        keras.config.set_dtype_policy(policy)
        model = keras_vit.ViT(image_size=64, patch_size=8, hidden_size=128, num_layers=2,
                              num_heads=2, mlp_dim=256, classes=10, weights=path,
                              classifier_activation=None)
        return np.asarray(model.predict(images, verbose=0), "float64")

    fp32_error = relative_error(logits("float32"), expected)
    bf16_logits = logits("mixed_bfloat16")
    bf16_error = relative_error(bf16_logits, expected)
    # The share of that error no bf16 implementation avoids: the same float64 forward with
    # the weights rounded to bfloat16 (what mixed precision multiplies by).
    import ml_dtypes

    rounded = {k: v.astype(ml_dtypes.bfloat16).astype("float64") for k, v in params.items()}
    bf16_weights_error = relative_error(vit_forward(rounded, images), expected)
    os.remove(path)

    keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(image_size=32, patch_size=4, hidden_size=64, num_layers=2,
                          num_heads=2, mlp_dim=128, classes=10, classifier_activation=None)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.uniform(0, 255, (256, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 256).astype("int32")  # memorised: the loss can only fall by learning
    steps = args.check_steps
    epochs = steps // 4  # 4 batches of 64 per epoch
    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    losses = [float(v) for v in history.history["loss"]]
    finite = all(math.isfinite(v) for v in losses)
    row = {
        "task": "check", "system": f"keras_vit-{backend}", "device": _device(backend),
        "fp32_rel_error": fp32_error, "bf16_rel_error": bf16_error,
        "bf16_weights_only_rel_error": bf16_weights_error,
        "train_steps": epochs * 4, "loss_first_epoch": losses[0], "loss_last_epoch": losses[-1],
        "finite": finite,
    }
    row["passed"] = bool(fp32_error < 1e-4 and bf16_error < 1e-2 and finite
                         and losses[-1] < 0.8 * losses[0])
    emit(row)


def task_kernels(args):
    """Every `keras_vit.kernels` path this device takes, against the portable reference:
    tests/test_kernels.py's values and gradients, float32 and bfloat16, eager and compiled
    (on a GPU: JAX's cuDNN attention with padded lengths and its XLA fallback, the float32
    `dot_product_attention` branch, PyTorch's SDPA in bf16), one row per backend."""
    import keras
    import pytest

    from keras_vit import kernels

    class Outcomes:  # a pytest plugin: counts and the first line of each failure
        def __init__(self):
            self.counts, self.failures = {"passed": 0, "failed": 0, "skipped": 0}, []

        def pytest_runtest_logreport(self, report):
            if report.failed:
                self.counts["failed"] += 1
                lines = str(report.longrepr).strip().splitlines()
                self.failures.append(f"{report.nodeid.split('::')[-1]}: {lines[-1][:200]}")
            elif report.skipped:
                self.counts["skipped"] += 1
            elif report.when == "call":
                self.counts["passed"] += 1

    outcomes = Outcomes()
    # The dry run (CPU, make test) runs one attention case: make test runs the rest itself.
    selection = ["-k", "test_attention and tiny and plain"] if args.dry_run else []
    code = pytest.main([os.path.join(ROOT, "tests", "test_kernels.py"), "-q", "-p",
                        "no:cacheprovider", *selection],
                       plugins=[outcomes])
    emit({"task": "kernels", "system": f"keras_vit-{keras.backend.backend()}",
          "device": kernels.device(), "kernels": kernels.describe(),
          **{f"{k}_tests": v for k, v in outcomes.counts.items()},
          "failures": outcomes.failures[:30],
          "passed": int(code) == 0 and outcomes.counts["passed"] > 0})


def _device(backend):
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return "cpu" if device.platform == "cpu" else device.device_kind
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------ speed


def task_speed(args):
    arch = ARCHS[args.variant]
    system = args.system
    for workload in args.workloads.split(","):
        batch = args.train_batch if workload == "train" else args.infer_batch
        row = {"task": "speed", "system": system, "workload": workload, "variant": args.variant,
               "dtype": "bfloat16", "batch_size": batch, "image_size": args.image_size}
        try:
            if system.startswith(("keras_vit", "keras_hub")):
                row.update(_keras_speed(args, arch, workload, batch))
            else:
                row.update(_torch_peer_speed(args, arch, workload, batch))
        except Exception as error:  # noqa: BLE001 (a failed contender is a row, not a crash)
            row["error"] = f"{type(error).__name__}: {str(error)[:800]}"
        emit(row)
        _release_memory()


def _release_memory():
    import gc

    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _keras_model(system, arch, image_size):
    import keras

    if system.startswith("keras_hub"):
        import keras_hub

        backbone = keras_hub.models.ViTBackbone(
            image_shape=(image_size, image_size, 3), patch_size=arch["patch"],
            num_layers=arch["layers"], num_heads=arch["heads"], hidden_dim=arch["hidden"],
            mlp_dim=arch["mlp"])
        return keras_hub.models.ViTImageClassifier(
            backbone=backbone, num_classes=1000, preprocessor=None, activation=None)
    import keras_vit

    del keras
    # Exact (erf) GELU, as timm, HF and KerasHub compute: identical math for every contender.
    return keras_vit.ViT(
        image_size=image_size, patch_size=arch["patch"], hidden_size=arch["hidden"],
        num_layers=arch["layers"], num_heads=arch["heads"], mlp_dim=arch["mlp"],
        classifier_activation=None, gelu_approximate=False)


def _keras_speed(args, arch, workload, batch):
    import numpy as np

    import keras

    backend = keras.backend.backend()
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = _keras_model(args.system, arch, args.image_size)
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(
        rng.uniform(0, 255, (batch, args.image_size, args.image_size, 3)).astype("float32"))
    y = keras.ops.convert_to_tensor(rng.integers(0, 1000, batch).astype("int32"))
    compile_args = dict(optimizer=keras.optimizers.AdamW(1e-4),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if args.system.endswith("-compile"):
        compile_args["jit_compile"] = True  # keras-vit: kernels/torch_step.py; peers: Keras' step
    model.compile(**compile_args)
    info = {"device": _device(backend), "backend": backend,
            "jit_compile": bool(model.jit_compile)}
    start = time.perf_counter()
    if backend == "jax":
        import jax

        if workload == "train":
            model.train_on_batch(x, y)  # builds and compiles the step fit runs
            state = [model._get_jax_state(trainable_variables=True,
                                          non_trainable_variables=True,
                                          optimizer_variables=True, metrics_variables=True)]

            def step():
                _, state[0] = model.train_function(state[0], iter([(x, y, None)]))
        else:
            model.predict_on_batch(x)
            if args.system.startswith("keras_vit"):
                info["attention_kernel"] = _jax_attention_kernel(model, x)
            model.make_predict_function()
            state = [model._get_jax_state(trainable_variables=True,
                                          non_trainable_variables=True)]

            def step():
                _, state[0] = model.predict_function(state[0], iter([(x,)]))

        def sync():
            jax.block_until_ready(state[0])

        step()
        sync()
    else:
        import torch

        if workload == "train":
            model.train_on_batch(x, y)
            model.make_train_function()

            def step():
                model.train_function([(x, y, None)])
        else:
            model.predict_on_batch(x)
            model.make_predict_function()

            def step():
                model.predict_function([(x,)])

        def sync():
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        step()
        sync()
    info["first_steps_s"] = time.perf_counter() - start
    seconds, windows = time_steps(step, sync, args.warmup, args.windows, args.steps)
    if workload in args.profile:
        info["profile_ms_per_step"] = _profiled(
            jax_kernel_profile if backend == "jax" else torch_kernel_profile, step, sync)
    return _speed_fields(args, arch, workload, batch, seconds, windows) | info


def _profiled(profile, step, sync):
    try:
        return profile(step, sync)
    except Exception as error:  # noqa: BLE001 (a diagnostic; the timing stands without it)
        return [("profile failed", f"{type(error).__name__}: {str(error)[:300]}")]


def _jax_attention_kernel(model, x):
    """Which attention the compiled forward runs: 'cudnn' when XLA's HLO holds cuDNN's fused
    attention call, else 'xla' (plain products and softmax)."""
    import jax

    def forward(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    try:
        text = jax.jit(forward).lower([v.value for v in model.trainable_variables],
                                      [v.value for v in model.non_trainable_variables],
                                      x[:2]).compile().as_text()
    except Exception as error:  # noqa: BLE001
        return f"unknown ({type(error).__name__})"
    return "cudnn" if "cudnn$fmha" in text or "__cudnn" in text else "xla"


def _torch_peer_speed(args, arch, workload, batch):
    import numpy as np
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.system.startswith("timm"):
        import timm

        model = timm.create_model(arch["timm"], num_classes=1000, img_size=args.image_size)
        info = {"attention": "fused_attn" if getattr(model.blocks[0].attn, "fused_attn", False)
                else "plain"}
    else:
        from transformers import ViTConfig, ViTForImageClassification

        config = ViTConfig(
            image_size=args.image_size, patch_size=arch["patch"], hidden_size=arch["hidden"],
            num_hidden_layers=arch["layers"], num_attention_heads=arch["heads"],
            intermediate_size=arch["mlp"], num_labels=1000, attn_implementation="sdpa")
        model = ViTForImageClassification(config)
        info = {"attention": model.config._attn_implementation}
    model = model.to(device)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal(
        (batch, 3, args.image_size, args.image_size)).astype("float32")).to(device)
    y = torch.from_numpy(rng.integers(0, 1000, batch)).to(device)
    compiled = args.system.endswith("-compile") or args.system == "timm"
    forward = model
    if compiled:
        # --dry-run: dynamo's tracing without Inductor's code generation (minutes on 2 CPUs)
        forward = torch.compile(model, backend="eager" if args.dry_run else "inductor")
    hf = not args.system.startswith("timm")

    def logits_of(images):
        out = forward(pixel_values=images) if hf else forward(images)
        return out.logits if hf else out

    autocast = torch.autocast(device, dtype=torch.bfloat16)
    if workload == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                      fused=device == "cuda")

        def step():
            with autocast:
                logits = logits_of(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                logits_of(x)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    step()
    step()
    sync()
    info["first_steps_s"] = time.perf_counter() - start
    info |= {"device": _device("torch"), "torch_compile": compiled}
    seconds, windows = time_steps(step, sync, args.warmup, args.windows, args.steps)
    if workload in args.profile:
        info["profile_ms_per_step"] = _profiled(torch_kernel_profile, step, sync)
    return _speed_fields(args, arch, workload, batch, seconds, windows) | info


def _speed_fields(args, arch, workload, batch, seconds, windows):
    img_per_s = batch / seconds
    flops = model_flops(arch, args.image_size, workload)
    fields = {"img_per_s": img_per_s, "step_ms": seconds * 1e3,
              "window_step_ms": [w * 1e3 for w in windows],
              "gflop_per_image": flops / 1e9,
              "mfu": img_per_s * flops / (DATA_SHEET_TFLOPS * 1e12)}
    if args.measured_tflops:
        fields["mfu_of_measured_matmul"] = img_per_s * flops / (args.measured_tflops * 1e12)
    return fields


# ------------------------------------------------------------------------------ driver


def plan(args):
    """(name, argv, environment, seconds cap) in priority order."""
    def speed(system, variant, workloads, cap, backend="torch", profile=""):
        return (f"speed {system} {variant} {workloads}",
                ["--task", "speed", "--system", system, "--variant", variant,
                 "--workloads", workloads, "--profile", profile], {"KERAS_BACKEND": backend}, cap)

    main = "tiny" if args.dry_run else "ViTB16"
    both = "train,infer"
    tasks = [
        ("env", ["--task", "env"], {}, 60),
        ("check jax", ["--task", "check"], {"KERAS_BACKEND": "jax"}, 90),
        ("check torch", ["--task", "check"], {"KERAS_BACKEND": "torch"}, 60),
        # Kernel profiles of the training steps: where keras-vit's time goes against timm's.
        speed("keras_vit-jax", main, both, 150, "jax", profile="train"),
        speed("timm", main, both, 200, profile="train"),
        speed("keras_vit-torch", main, both, 90, profile="train"),
        # Every GPU kernel path against the reference, values and gradients (issue 30, item 2).
        ("kernels jax", ["--task", "kernels"], {"KERAS_BACKEND": "jax"}, 120),
        ("kernels torch", ["--task", "kernels"], {"KERAS_BACKEND": "torch"}, 60),
        speed("hf", main, both, 75),
        speed("keras_hub-jax", main, both, 130, "jax"),
        speed("hf-compile", main, both, 150),
    ]
    if not args.dry_run:  # Inductor's compile of a Keras step takes minutes on CPUs
        tasks += [speed("keras_vit-torch-compile", main, "train", 150),
                  speed("keras_vit-jax", "ViTL16", "train", 120, "jax"),
                  speed("timm", "ViTL16", "train", 150)]
    return [t for t in tasks if not args.only or any(o in t[0] for o in args.only.split(","))]


def run_all(args):
    os.makedirs(args.out, exist_ok=True)
    deadline = time.monotonic() + args.budget
    rows, log_path = [], os.path.join(args.out, "log.txt")
    json_path = os.path.join(args.out, "h200.json" if not args.dry_run else "dry_run.json")
    today = datetime.date.today().isoformat()
    measured = None
    for name, argv, env, cap in plan(args):
        left = deadline - time.monotonic()
        if left < 20:
            rows.append({"task": name, "skipped": "time budget spent", "date": today})
            continue
        extra = ["--measured-tflops", str(measured)] if measured else []
        command = [sys.executable, __file__, "--out", args.out, *argv, *extra,
                   *(["--dry-run"] if args.dry_run else []),
                   "--check-steps", str(args.check_steps)]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                       **env}
        started = time.monotonic()
        try:
            done = subprocess.run(command, env=environment, capture_output=True, text=True,
                                  timeout=min(cap, left - 5), cwd=ROOT)
            output, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as expired:
            output = ((expired.stdout or b"").decode(errors="replace")
                      + (expired.stderr or b"").decode(errors="replace"))
            code = "timeout"
        seconds = time.monotonic() - started
        with open(log_path, "a") as log:
            log.write(f"\n===== {name} (exit {code}, {seconds:.0f} s) =====\n{output[-20000:]}")
        found = [json.loads(line[4:]) for line in output.splitlines() if line.startswith("ROW ")]
        if not found:
            tail = " | ".join(output.strip().splitlines()[-3:])[-600:]
            found = [{"task": name, "error": f"exit {code}: {tail}"}]
        for row in found:
            row.setdefault("task_name", name)
            row["date"] = today
            row["task_seconds"] = round(seconds, 1)
            if row.get("task") == "env" and row.get("matmul_bf16_tflops"):
                measured = row["matmul_bf16_tflops"]
        rows.extend(found)
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"[{time.monotonic() - deadline + args.budget:5.0f} s] {name}: exit {code}, "
              f"{seconds:.0f} s", flush=True)
    table = format_table(rows)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table)
    print(table)
    return rows


def format_table(rows):
    lines = []
    env = next((r for r in rows if r.get("task") == "env"), {})
    if env:
        rate = env.get("matmul_bf16_tflops")
        lines.append(f"device: {env.get('device')}; bf16 matmul {rate:.0f} TFLOP/s measured"
                     if rate else f"device: {env.get('device')}")
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    lines.append("\n| check | fp32 rel. error | bf16 rel. error | bf16 weights alone | "
                 "loss first -> last epoch | passed |")
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        if r.get("task") == "check":
            lines.append(f"| {r['system']} | {r['fp32_rel_error']:.2e} | {r['bf16_rel_error']:.2e} | "
                         f"{r['bf16_weights_only_rel_error']:.2e} | "
                         f"{r['loss_first_epoch']:.3f} -> {r['loss_last_epoch']:.3f} "
                         f"({r['train_steps']} steps) | {r['passed']} |")
    lines.append("\n| kernels | device | passed | failed | skipped | first failures |")
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        if r.get("task") == "kernels":
            lines.append(f"| {r['system']} | {r['device']} | {r['passed_tests']} | "
                         f"{r['failed_tests']} | {r['skipped_tests']} | "
                         f"{'; '.join(r['failures'][:3])} |")
    lines.append("\n| system | variant | workload | batch | img/s | MFU (989 TF) | MFU (measured) "
                 "| step ms | first steps s | notes |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("task") != "speed":
            continue
        if "error" in r:
            lines.append(f"| {r['system']} | {r['variant']} | {r['workload']} | {r['batch_size']} "
                         f"| failed | | | | | {r['error'][:160]} |")
            continue
        notes = ", ".join(f"{k}={r[k]}" for k in ("attention_kernel", "attention", "jit_compile",
                                                   "torch_compile") if k in r)
        measured = r.get("mfu_of_measured_matmul")
        lines.append(
            f"| {r['system']} | {r['variant']} | {r['workload']} | {r['batch_size']} | "
            f"{r['img_per_s']:.0f} | {100 * r['mfu']:.1f}% | "
            f"{'-' if measured is None else f'{100 * measured:.1f}%'} | {r['step_ms']:.1f} | "
            f"{r['first_steps_s']:.0f} | {notes} |")
    for r in rows:
        if r.get("profile_ms_per_step"):
            lines.append(f"\nprofile, {r['system']} {r['variant']} {r['workload']} "
                         "(ms per step: total, then the busiest kernels):")
            lines += [f"  {ms:>9} {name}" for name, ms in r["profile_ms_per_step"]]
    for r in rows:
        if r.get("task") not in ("env", "check", "kernels", "speed") or "error" in r and r.get("task") != "speed":
            lines.append(f"- {r.get('task_name', r.get('task'))}: "
                         f"{r.get('error') or r.get('skipped')}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-results"))
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds for every task together; later tasks are skipped")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny shapes and few steps, on whatever device is there (CPU)")
    parser.add_argument("--only", help="comma-separated substrings of task names to run")
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="ViTB16", help=argparse.SUPPRESS)
    parser.add_argument("--workloads", default="train,infer", help=argparse.SUPPRESS)
    parser.add_argument("--measured-tflops", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="", help=argparse.SUPPRESS)
    parser.add_argument("--check-steps", type=int, default=200)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.image_size, args.train_batch, args.infer_batch = 32, 4, 8
        args.warmup, args.windows, args.steps = 1, 2, 2
    else:
        args.image_size, args.train_batch, args.infer_batch = 224, 256, 512
        args.warmup, args.windows, args.steps = 3, 3, 6
        if args.variant == "ViTL16":
            args.train_batch = 128
    os.makedirs(args.out, exist_ok=True)
    if args.task is None:
        return run_all(args)
    {"env": task_env, "check": task_check, "kernels": task_kernels,
     "speed": task_speed}[args.task](args)
    return None


if __name__ == "__main__":
    main()
