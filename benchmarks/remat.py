"""Rematerialisation: peak memory and step time of ViT training with and without `remat=True`.

Each configuration runs in its own process (peak RSS is per process): it builds the model,
compiles an SGD training step, runs `--warmup` steps (compilation) and `--steps` timed steps on
random images, and reports the process's peak resident set size (`resource.getrusage`
ru_maxrss), the RSS after building the model (weights only) and the median step time.

glibc's allocator keeps freed blocks for reuse (its mmap threshold grows with the sizes freed),
so a process's peak RSS follows the allocator's history as much as the live tensors: PyTorch's
ViT-L/16 at batch 4 peaked 37% *higher* with remat that way. The workers run with fixed
thresholds (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ 128 KiB: large buffers are mapped
and unmapped), so peak RSS tracks the live buffers.

`--memory-limit-gb N` caps each worker's address space (RLIMIT_AS): a configuration that needs
more fails to allocate, which the table reports as "out of memory": the way to show a batch
that fits only with remat, on any machine, without the kernel's OOM killer.

On JAX with the CPU backend remat saves nothing: XLA's CPU compiler removes the optimization
barriers of `jax.checkpoint` before its common-subexpression elimination, which then merges the
recomputation back into the forward pass (GPU and TPU compilers keep the barriers).

    KERAS_BACKEND=jax python benchmarks/remat.py --model ViTL16 --batch-size 4
    python benchmarks/remat.py --model ViTL16 --batch-size 24 --backends torch --memory-limit-gb 12
    python benchmarks/remat.py --dry-run      # a tiny model, for the test suite
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _current_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "cannot allocate memory",
                 "resource_exhausted", "resourceexhausted", "memoryerror", "bad_alloc",
                 "failed to allocate", "oom when allocating")


def worker(args):
    if args.memory_limit_gb:
        import resource

        limit = int(args.memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import numpy as np
    import keras

    import keras_vit

    if args.dry_run:
        model = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=32, num_layers=2,
                              num_heads=2, mlp_dim=64, classes=10, remat=args.remat)
    else:
        model = getattr(keras_vit, args.model)(image_size=args.image_size, classes=1000,
                                               remat=args.remat)
    size = model.input_shape[1]
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch_size, size, size, 3)).astype("float32")
    y = rng.integers(0, model.output_shape[-1], args.batch_size)
    after_build = _current_rss_mb()
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model.train_on_batch(x, y)
        float(np.asarray(loss))  # wait for the step
        times.append(time.perf_counter() - start)
    print(json.dumps(dict(
        backend=keras.backend.backend(), model="tiny" if args.dry_run else args.model,
        image_size=size, batch_size=args.batch_size, remat=args.remat,
        params=model.count_params(), rss_after_build_mb=round(after_build),
        peak_rss_mb=round(_rss_mb()), step_s=round(float(np.median(times)), 3),
        steps=args.steps)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViTL16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--backends", default=os.environ.get("KERAS_BACKEND", "jax"),
                        help="comma-separated Keras backends (each in its own processes)")
    parser.add_argument("--memory-limit-gb", type=float, default=0,
                        help="cap each worker's address space (RLIMIT_AS) at this many GiB")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--remat", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    rows = []
    for backend in args.backends.split(","):
        for remat in (False, True):
            command = [sys.executable, os.path.abspath(__file__), "--worker",
                       "--model", args.model, "--image-size", str(args.image_size),
                       "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
                       "--steps", str(args.steps),
                       "--memory-limit-gb", str(args.memory_limit_gb)] + ["--remat"] * remat \
                + ["--dry-run"] * args.dry_run
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                       PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
            for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
                env.setdefault(name, "131072")
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                error = done.stderr.lower()
                if not (args.memory_limit_gb and any(m in error for m in OUT_OF_MEMORY)):
                    raise SystemExit(f"{backend} remat={remat} failed:\n{done.stderr[-3000:]}")
                rows.append(dict(backend=backend, model="tiny" if args.dry_run else args.model,
                                 image_size=args.image_size, batch_size=args.batch_size,
                                 remat=remat, out_of_memory=args.memory_limit_gb))
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| backend | model | batch | remat | peak RSS (MB) | RSS after build (MB) | "
          "activations* (MB) | step (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "out_of_memory" in row:
            print(f"| {row['backend']} | {row['model']}@{row['image_size']} | "
                  f"{row['batch_size']} | {'yes' if row['remat'] else 'no'} | out of memory "
                  f"(limit {row['out_of_memory']:g} GiB) | | | |")
            continue
        print(f"| {row['backend']} | {row['model']}@{row['image_size']} | {row['batch_size']} | "
              f"{'yes' if row['remat'] else 'no'} | {row['peak_rss_mb']:,} | "
              f"{row['rss_after_build_mb']:,} | {row['peak_rss_mb'] - row['rss_after_build_mb']:,} "
              f"| {row['step_s']:.2f} |")
    print("\n*peak RSS minus RSS after building: gradients, optimizer state, activations and "
          "the compiled step.")
    if args.memory_limit_gb:
        print(f"Each worker's address space capped at {args.memory_limit_gb:g} GiB (RLIMIT_AS).")
    return rows


if __name__ == "__main__":
    main()
