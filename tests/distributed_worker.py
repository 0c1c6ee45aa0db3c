"""Helpers of the distributed tests (not a test module): run `keras-vit` and keep the weights.

As a script, one process of a job:

    python tests/distributed_worker.py WEIGHTS.npz [--logical-cpus N] -- train --strategy ... ARGS

runs `applications.cli.main(ARGS)` unchanged, capturing the model the program
creates, and writes this process's model variables, after training, to
WEIGHTS.npz (arr_0, arr_1, ... in `model.weights` order) and as created, before
training, to WEIGHTS.init.npz, so that a test can compare the processes of a
job with each other and with a reference run. With --logical-cpus N
(TensorFlow) the host CPU is first split into N logical devices.

    python tests/distributed_worker.py WEIGHTS.npz --reference NUM_SHARDS [--resumed-at K] -- train ARGS

instead trains in one process, on one device, what a job of NUM_SHARDS
data-parallel processes trains on: at every step the concatenation of the
NUM_SHARDS processes' batches (`tf_data.build_dataset(process_index=i,
process_count=NUM_SHARDS)`), i.e. the same global batches, with the program's
own `modeling.create_training_objects` and `model.fit`; with --resumed-at K as
if interrupted after K epochs and resumed. Its per-epoch logs go to
OUTPUT/reference.json.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


# -- in the worker process ----------------------------------------------------------------

def split_cpu(n: int) -> None:
    """Splits the host CPU into `n` logical TensorFlow devices (before any TF op)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def run_cli(cli_args: list[str], weights: str | None = None, reference_shards: int = 0,
            resumed_at: int = 0):
    """Runs the program (or the reference) here; returns (exit code, model).

    Saves the model's variables as created (WEIGHTS.init.npz) and after
    training (WEIGHTS) when `weights` is given.
    """
    import keras
    import numpy as np

    from applications import modeling

    keras.config.disable_traceback_filtering()
    captured = {}
    create = modeling.create_training_objects

    def capture(*a, **k):
        captured["model"] = model = create(*a, **k)
        if weights:
            np.savez(weights[:-4] + ".init.npz", *_arrays(model))
        return model

    modeling.create_training_objects = capture
    try:
        if reference_shards:
            rc = reference(cli_args, reference_shards, resumed_at)
        else:
            from applications import cli

            rc = cli.main(cli_args)
    finally:
        modeling.create_training_objects = create
    model = captured.get("model")
    if weights and model is not None:
        np.savez(weights, *_arrays(model))
    return rc, model


def _arrays(model):
    import keras

    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def reference(cli_args, num_shards, resumed_at=0):
    """One process, one device, on the global batches of a NUM_SHARDS-process job.

    With `resumed_at` K, mirrors a job interrupted after K committed epochs
    and resumed: from epoch K on, the data pipeline is rebuilt with the seed
    a resumed `training.run` uses (the model and optimizer carry on, as the
    restored backup does).
    """
    import keras
    import tensorflow as tf

    import tf_data
    from applications import cli, modeling
    from applications import config as config_lib
    from applications import data as data_lib
    from applications import distributed
    from applications.distributed_engines import build_before_fit

    args = cli.build_parser().parse_args(cli_args)
    explicit = {k: v for k, v in vars(args).items() if k != "command"}
    distributed.Options.pop_from(explicit)
    config = config_lib.resolve(args.command, explicit)
    # As training.run does, in the same order: the seed, the data, the model.
    source = data_lib.load_source(config)
    arch = config.architecture()
    image_size = modeling._pair(arch.get("image_size", 224))
    keras.utils.set_random_seed(config.seed)
    data = data_lib.build_run_data(config, source, image_size, config.seed)
    plan = modeling.plan_training(
        config, tf_data.steps_per_epoch(source, "train", config.batch_size))
    model = modeling.create_training_objects(config, arch, source.num_classes, plan, data.one_hot)

    def global_batches(data):
        shards = tuple(
            tf_data.build_dataset(source, "train", data.train_config, training=True,
                                  process_index=i, process_count=num_shards)
            for i in range(num_shards))
        return tf.data.Dataset.zip(shards).map(
            lambda *batches: tuple(tf.concat(parts, 0) for parts in zip(*batches)))

    stages = [(0, resumed_at or plan.epochs, data)]
    if resumed_at:
        # training.run: "A resumed run gets a different data order".
        stages.append((resumed_at, plan.epochs, data_lib.build_run_data(
            config, source, image_size, config.seed + 7919 * resumed_at)))
    logs = {}
    for first, last, stage_data in stages:
        train = global_batches(stage_data)
        build_before_fit(model, train)  # as the program does: fit trains on the first pass
        history = model.fit(train, initial_epoch=first, epochs=last,
                            steps_per_epoch=plan.steps_per_epoch, verbose=0, shuffle=False)
        for k, v in history.history.items():
            logs.setdefault(k, []).extend(float(x) for x in v)
    os.makedirs(config.output, exist_ok=True)
    with open(os.path.join(config.output, "reference.json"), "w") as f:
        json.dump(logs, f)
    return 0


def main():
    import argparse

    argv = sys.argv[1:]
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--logical-cpus", type=int, default=0)
    parser.add_argument("--reference", type=int, default=0)
    parser.add_argument("--resumed-at", type=int, default=0)
    args = parser.parse_args(argv[:split])
    if args.logical_cpus:
        split_cpu(args.logical_cpus)
    rc, _ = run_cli(argv[split + 1:], args.weights, args.reference, args.resumed_at)
    return rc


# -- in the test process ------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_flags(strategy: str, index: int, ports: list[int]) -> list[str]:
    """--strategy and the cluster flags of process `index` of a local job."""
    addresses = ",".join(f"127.0.0.1:{p}" for p in ports)
    return ["--strategy", strategy, "--job-addresses", addresses,
            "--num-processes", str(len(ports)), "--process-id", str(index)]


def start(backend: str, weights, cli_args, log_path, extra_env=None, worker_args=()):
    """Starts one worker process (stdout and stderr to `log_path`)."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device per process unless asked
    env.update(KERAS_BACKEND=backend, **QUIET, **(extra_env or {}))
    log = open(log_path, "w")
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "distributed_worker.py"), str(weights),
         *worker_args, "--", *map(str, cli_args)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )


def wait_all(procs, timeout: float) -> list[int]:
    """Waits for every process, killing all of them at `timeout`; returns exit codes."""
    deadline = time.time() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        kill_all(procs)
    return [p.returncode for p in procs]


def kill_all(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def tail(path, n=3000) -> str:
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    lines = [line for line in text.splitlines()
             if not line.startswith(("W0000", "I0000", "E0000"))]
    return "\n".join(lines)[-n:]


def load(path) -> list:
    import numpy as np

    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


if __name__ == "__main__":
    sys.exit(main())
