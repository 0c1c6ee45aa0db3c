"""PyTorch `compile(jit_compile=True)` training: recompilations and first-epoch time, keras-vit
against a plain Keras model of the same shape, interleaved.

The setup of issue 30: a 2-block ViT (hidden 64, 4 heads, MLP 128, 32 px images in 8 px
patches, 10 classes) trained with Adam on 128 random images, batch 16: one epoch of 8 steps,
then two more. Contenders, each in a fresh process with an empty Inductor cache (what a user
waits for the first time; a warm cache hides the compile):

- plain Keras: `Rescaling`, a patchifying `Conv2D`, two blocks of `LayerNormalization`,
  `MultiHeadAttention` and two `Dense`, global average pooling, a `Dense` head;
- keras-vit: `ViT(...)` with its compiled step (`keras_vit/kernels/torch_step.py`: forward
  pass and loss traced and compiled as one graph, the optimizer eager);
- keras-vit, Keras' step: the same model trained by Keras' own `torch.compile` step (what
  keras-vit did before).

Recompilations are counted as `TORCH_LOGS=recompiles` reports them (one per "Recompiling
function" message). Rounds rotate the contenders' order. Prints one line per run and a table
of medians with min-max spreads, and the first-epoch ratio of each contender to plain Keras
in each round.

Usage:
    python benchmarks/torch_compile.py                 # 3 rounds
    python benchmarks/torch_compile.py --rounds 5 --json benchmarks/results/torch_compile.json
    python benchmarks/torch_compile.py --dry-run       # one step per epoch, aot_eager backend
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONTENDERS = ("plain Keras", "keras-vit", "keras-vit, Keras' step")


def plain_model(keras):
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = layers.Conv2D(64, 8, strides=8)(x)
    x = layers.Reshape((16, 64))(x)
    for _ in range(2):
        y = layers.LayerNormalization(epsilon=1e-6)(x)
        x = x + layers.MultiHeadAttention(4, 16)(y, y)
        y = layers.LayerNormalization(epsilon=1e-6)(x)
        y = layers.Dense(128, activation="gelu")(y)
        x = x + layers.Dense(64)(y)
    x = layers.GlobalAveragePooling1D()(layers.LayerNormalization(epsilon=1e-6)(x))
    return keras.Model(inputs, layers.Dense(10)(x))


def child(contender: str, epochs: int, steps: int, backend: str) -> dict:
    """One run in this (fresh) process: per-epoch seconds and recompilations."""
    import logging

    import keras
    import numpy as np
    import torch

    sys.path.insert(0, ROOT)
    messages = []

    class Count(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    torch._logging.set_logs(recompiles=True)
    log = logging.getLogger("torch._dynamo.guards.__recompiles")
    log.addHandler(Count())
    log.propagate = False
    if backend != "inductor":
        compile_ = torch.compile
        torch.compile = lambda *a, **k: compile_(*a, **{**k, "backend": backend})

    keras.utils.set_random_seed(0)
    if contender == "plain Keras":
        model = plain_model(keras)
    else:
        from keras_vit import ViT
        from keras_vit.model import VisionTransformer

        if contender == "keras-vit, Keras' step":
            VisionTransformer.make_train_function = keras.Model.make_train_function
        model = ViT(image_size=32, patch_size=8, hidden_size=64, num_layers=2, num_heads=4,
                    mlp_dim=128, classes=10, classifier_activation=None)
    model.compile(optimizer="adam", jit_compile=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16 * steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 16 * steps)
    rows = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.seen = time.perf_counter(), len(messages)

        def on_epoch_end(self, epoch, logs=None):
            rows.append(dict(seconds=time.perf_counter() - self.start,
                             recompiles=len(messages) - self.seen, loss=float(logs["loss"])))

    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[Timer()])
    return dict(contender=contender, epochs=rows, recompiles=len(messages),
                functions=sorted({m.splitlines()[0] for m in messages}))


def run_child(contender, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="inductor_") as cache:
        env = {**os.environ, "KERAS_BACKEND": "torch", "TORCHINDUCTOR_CACHE_DIR": cache,
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(
            [sys.executable, __file__, "--child", contender, "--epochs", str(args.epochs),
             "--steps", str(args.steps), "--backend", args.backend],
            capture_output=True, text=True, env=env, timeout=args.timeout)
    if done.returncode:
        raise RuntimeError(f"{contender} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--only", default="", help="comma-separated contenders")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--dry-run", action="store_true",
                        help="1 round, 2 epochs of 1 step, aot_eager: checks that it runs")
    parser.add_argument("--json", help="write the runs here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.epochs, args.steps, args.backend)))
        return 0
    if args.dry_run:
        args.rounds, args.epochs, args.steps, args.backend = 1, 2, 1, "aot_eager"
    names = [c for c in CONTENDERS if not args.only or c in args.only.split(",")]
    runs = {name: [] for name in names}
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            result = run_child(name, args)
            runs[name].append(result)
            epochs = ", ".join(f"{e['seconds']:.1f} s ({e['recompiles']})" for e in result["epochs"])
            print(f"round {round_ + 1}: {name}: {result['recompiles']} recompilations; "
                  f"epochs (recompilations): {epochs}", flush=True)
    print()
    print("| contender | recompilations | first epoch, s (median, min-max) | later epochs, s "
          "| first epoch / plain Keras's, same round (median, min-max) |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        first = [r["epochs"][0]["seconds"] for r in results]
        later = [e["seconds"] for r in results for e in r["epochs"][1:]]
        counts = sorted({r["recompiles"] for r in results})
        ratio = ""
        if "plain Keras" in runs and name != "plain Keras":
            ratios = [r["epochs"][0]["seconds"] / p["epochs"][0]["seconds"]
                      for r, p in zip(results, runs["plain Keras"])]
            ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        later_text = f"{statistics.median(later):.2f}" if later else ""
        print(f"| {name} | {'/'.join(map(str, counts))} | {statistics.median(first):.1f} "
              f"({min(first):.1f}-{max(first):.1f}) | {later_text} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(date=time.strftime("%Y-%m-%d"), args=vars(args), runs=runs), f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
