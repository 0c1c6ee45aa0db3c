"""Any image size at run time (`input_shape=(None, None, 3)`): what it costs, and the logits.

Two measurements, each backend in its own process (`--backends`):

- timing (default): a model of any image size, its position embedding stored at `--image-size`,
  against fixed-size models with the same architecture built at each size:
  - compile time per new size: the first `train_on_batch` / `predict_on_batch` at a size minus
    the median of the following steps (JAX compiles every new shape; TensorFlow traces a new
    shape, then one graph for any size once `reduce_retracing` relaxes it, but XLA compiles
    each shape; PyTorch runs eagerly);
  - step time, dynamic / fixed at the same size: `--rounds` rounds, each timing one step of
    each model in alternating order (the machine's load drifts; interleaving cancels the drift
    between the two); the median of the per-round ratios and their 25-75% range (the noise).
    At the stored size the dynamic model's graph is the fixed one's (nothing is resampled);
    at another size it adds the in-graph resampling of the position embedding.
- `--parity`: the logit table. A checkpoint written from a randomly initialised model (its
  head made non-zero) is loaded into a model of any size and into fixed models built at other
  sizes (the NumPy loader resamples the embedding once); max |dynamic - fixed| / max |fixed|
  of the compiled predictions per case and size, and whether the stored size is bit-equal.

    python benchmarks/dynamic_resolution.py --backends jax,tensorflow,torch
    python benchmarks/dynamic_resolution.py --parity --backends jax,tensorflow,torch
    python benchmarks/dynamic_resolution.py --dry-run     # a tiny model, for the test suite

Results: benchmarks/RESULTS.md ("Any image size at run time").
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TI16 = dict(patch_size=16, hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768)
TINY = dict(patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
# The parity cases: ViT arguments on top of the architecture.
CASES = {
    "learned_1d, class token, official": {},
    "learned_1d, class token, bicubic": {"pos_embed_resample": "bicubic"},
    "learned_1d, GAP": {"classifier": "gap"},
    "learned_2d, class token": {"position_embedding": "learned_2d"},
    "hybrid (ResNet stem), class token": {"resnet_num_layers": (1, 1),
                                          "resnet_width_factor": 0.5},
}


def _size(text):
    parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    return (parts[0], parts[-1])


def _arch(args, case=None):
    arch = dict(TINY if args.dry_run else TI16)
    if case is not None and "resnet_num_layers" in CASES[case]:
        # The stem's 1/8 feature map, cut into patches of 2: 16 input pixels per token.
        arch["patch_size"] = arch["patch_size"] // 8
    return arch


def _timed(step):
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def timing(args):
    import keras
    import numpy as np

    import keras_vit

    stored = args.image_size
    arch = _arch(args)
    classes = 10
    rng = np.random.default_rng(0)

    def build(input_shape):
        model = keras_vit.ViT(image_size=stored, input_shape=input_shape, classes=classes,
                              **arch)
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss="sparse_categorical_crossentropy")
        return model

    dynamic = build((None, None, 3))
    batches = {}
    for size in args.sizes:
        batches[size] = (rng.uniform(0, 255, (args.batch_size, *size, 3)).astype("float32"),
                         rng.integers(0, classes, args.batch_size))
    rows = []
    steps = {"train": lambda m, x, y: m.train_on_batch(x, y),
             "predict": lambda m, x, y: m.predict_on_batch(x)}
    # Compile time per new size, in the order given (a new shape each time).
    for mode, step in steps.items():
        for size in args.sizes:
            x, y = batches[size]
            first = _timed(lambda: step(dynamic, x, y))
            steady = statistics.median(_timed(lambda: step(dynamic, x, y))
                                       for _ in range(args.steps))
            rows.append({"kind": "compile", "mode": mode, "model": "dynamic", "size": size,
                         "first_s": first, "step_s": steady, "compile_s": first - steady})
    # Fixed models at each size: their compile time, then the interleaved step times.
    for size in args.sizes:
        fixed = build(size + (3,))
        x, y = batches[size]
        for mode, step in steps.items():
            first = _timed(lambda: step(fixed, x, y))
            steady = statistics.median(_timed(lambda: step(fixed, x, y))
                                       for _ in range(args.steps))
            rows.append({"kind": "compile", "mode": mode, "model": "fixed", "size": size,
                         "first_s": first, "step_s": steady, "compile_s": first - steady})
            ratios, dyn_times, fix_times = [], [], []
            for r in range(args.rounds):
                pair = (dynamic, fixed) if r % 2 == 0 else (fixed, dynamic)
                times = {id(m): _timed(lambda m=m: step(m, x, y)) for m in pair}
                dyn_times.append(times[id(dynamic)])
                fix_times.append(times[id(fixed)])
                ratios.append(times[id(dynamic)] / times[id(fixed)])
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            rows.append({"kind": "step", "mode": mode, "size": size,
                         "stored": size == _pair(stored),
                         "dynamic_ms": 1e3 * statistics.median(dyn_times),
                         "fixed_ms": 1e3 * statistics.median(fix_times),
                         "ratio": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[2]})
        del fixed
    return {"backend": keras.backend.backend(), "jit_compile": str(dynamic.jit_compile),
            "batch_size": args.batch_size, "image_size": stored, "rows": rows}


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def parity(args):
    import keras
    import numpy as np

    import keras_vit
    from keras_vit import checkpoint

    stored = args.image_size
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, options in CASES.items():
            kwargs = dict(classes=10, classifier_activation=None, **_arch(args, case), **options)
            source = keras_vit.ViT(image_size=stored, **kwargs)
            head = source.get_layer("head")
            head.kernel.assign(rng.normal(0, 0.1, head.kernel.shape).astype("float32"))
            path = os.path.join(tmp, "ckpt.npz")
            checkpoint.save_npz(source, path)
            load = dict(kwargs, weights=path)
            dynamic = keras_vit.ViT(image_size=stored, input_shape=(None, None, 3), **load)
            for size in [_pair(stored)] + [s for s in args.sizes if s != _pair(stored)]:
                images = rng.uniform(0, 255, (2, *size, 3)).astype("float32")
                fixed = keras_vit.ViT(image_size=size, **load)
                got = dynamic.predict(images, verbose=0)
                want = fixed.predict(images, verbose=0)
                eager = keras.ops.convert_to_numpy(dynamic(images))
                want_eager = keras.ops.convert_to_numpy(fixed(images))
                scale = float(np.abs(want).max())
                rows.append({"case": case, "size": size, "stored": size == _pair(stored),
                             "relative": float(np.abs(got - want).max()) / scale,
                             "relative_eager": float(np.abs(eager - want_eager).max()) / scale,
                             "bit_equal": bool(np.array_equal(got, want)),
                             "bit_equal_eager": bool(np.array_equal(eager, want_eager))})
    return {"backend": keras.backend.backend(), "image_size": stored, "rows": rows}


def _worker(args):
    result = parity(args) if args.parity else timing(args)
    print("RESULT " + json.dumps(result))


def _run_backend(backend, argv):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{backend} worker failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _size_text(size):
    return f"{size[0]}x{size[1]}"


def report(results, parity_mode):
    lines = []
    if parity_mode:
        lines.append("| backend | case | size | max rel. difference (compiled) | (eager) | bit-equal |")
        lines.append("|---|---|---|---|---|---|")
        for result in results:
            for r in result["rows"]:
                equal = ("yes" if r["bit_equal"] and r["bit_equal_eager"] else "no") \
                    if r["stored"] else ""
                lines.append(f"| {result['backend']} | {r['case']} | {_size_text(r['size'])}"
                             f"{' (stored)' if r['stored'] else ''} | {r['relative']:.1e} | "
                             f"{r['relative_eager']:.1e} | {equal} |")
        return "\n".join(lines)
    lines.append("| backend | mode | size | compile s (dynamic) | compile s (fixed) | "
                 "step ms dynamic | step ms fixed | dynamic / fixed (25-75%) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for result in results:
        compiles = {(r["mode"], r["model"], tuple(r["size"])): r["compile_s"]
                    for r in result["rows"] if r["kind"] == "compile"}
        for r in result["rows"]:
            if r["kind"] != "step":
                continue
            size = tuple(r["size"])
            lines.append(
                f"| {result['backend']} | {r['mode']} | {_size_text(size)}"
                f"{' (stored)' if r['stored'] else ''} | "
                f"{compiles[(r['mode'], 'dynamic', size)]:.2f} | "
                f"{compiles[(r['mode'], 'fixed', size)]:.2f} | {r['dynamic_ms']:.1f} | "
                f"{r['fixed_ms']:.1f} | {r['ratio']:.3f} ({r['ratio_q1']:.3f}-"
                f"{r['ratio_q3']:.3f}) |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--image-size", type=int, default=224,
                        help="the size the position embedding is stored at")
    parser.add_argument("--sizes", default="224,160x256,288",
                        help="sizes to run, in order (compile time per new size)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps after the first, per size")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per size")
    parser.add_argument("--parity", action="store_true", help="the logit table instead")
    parser.add_argument("--dry-run", action="store_true", help="a tiny model, few steps")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.image_size, args.batch_size, args.steps, args.rounds = 32, 2, 1, 2
        if args.sizes == parser.get_default("sizes"):
            args.sizes = "32,24x40"
    args.sizes = [_size(s) for s in args.sizes.split(",") if s] if isinstance(args.sizes, str) \
        else args.sizes
    if args.worker:
        return _worker(args)
    passed = ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
              "--steps", str(args.steps), "--rounds", str(args.rounds),
              "--sizes", ",".join(_size_text(s) for s in args.sizes)]
    passed += ["--parity"] * args.parity + ["--dry-run"] * args.dry_run
    results = [_run_backend(b, passed) for b in args.backends.split(",") if b]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(report(results, args.parity))
    return results


if __name__ == "__main__":
    main()
