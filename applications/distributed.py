"""Distributed training for `keras-vit train/finetune`: `--strategy` on each engine.

    none            one device (default)
    mirrored        TensorFlow  tf.distribute.MirroredStrategy: every GPU (or logical CPU) of one host
    multi_worker    TensorFlow  tf.distribute.MultiWorkerMirroredStrategy: several hosts (TF_CONFIG)
    tpu             TensorFlow  tf.distribute.TPUStrategy (TPUClusterResolver)
    data_parallel   JAX         keras.distribution.DataParallel (one or several processes)
    model_parallel  JAX         keras.distribution.ModelParallel with keras_vit.layout_map
    ddp             PyTorch     torch.nn.parallel.DistributedDataParallel (gloo on CPU, NCCL on GPU)

The cluster comes from flags or from each engine's own environment variables:
`--job-addresses` (comma-separated host:port of every process; the first is the
coordinator), `--num-processes`, `--process-id`; else TF_CONFIG (TensorFlow),
KERAS_DISTRIBUTION_JOB_ADDRESSES/_NUM_PROCESSES/_PROCESS_ID or JAX's own
auto-detection (JAX), MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK as set by
`torchrun` (PyTorch). See docs/distributed.md.

How the training program uses it (applications/training.py):

    dist = distributed.setup(options)          # first: before any TF/JAX/torch computation
    with dist.scope(arch):                      # variables created distributed
        model = modeling.create_training_objects(...)
    dist.fit(model, dist.train_input(data), ..., callbacks=dist.callbacks(...))
    dist.evaluate(model, data, "test")

Only the chief (process 0) writes files; every process restores the committed
backup with `--resume` (the run directory must be visible to all processes: one
host, or a shared filesystem).

`model.fit` fails under MultiWorkerMirroredStrategy in Keras 3
(keras-team/keras#20585: "Attempt to convert a value (PerReplica ...) with an
unsupported type", raised while Keras builds the model symbolically from a
distributed batch). `multi_worker` therefore runs the same model's own
`train_step`/`test_step` (same loss, optimizer, metrics) under
`strategy.run` in a small custom loop that drives the same callbacks.
"""

from __future__ import annotations

import os

from applications.distributed_options import (  # noqa: F401  (this module's interface)
    OPTION_NAMES,
    STRATEGIES,
    Options,
    _bool,
    _mesh_shape,
    add_options,
)
from applications.options import UsageError


def setup(options: Options | None = None, log=print):
    """Starts the engine's distributed runtime; returns the run's
    `applications.distributed_engines.Distributed`.

    Call it first: TensorFlow's multi-worker strategy and JAX's multi-process
    runtime must be set up before any other computation.

    Raises:
        UsageError: For a strategy of another backend, or missing cluster settings.
    """
    import keras

    from applications import distributed_engines as engines

    options = options or Options()
    name = options.strategy or "none"
    if name not in STRATEGIES:
        raise UsageError(f"Unknown --strategy {name!r}; valid: {', '.join(STRATEGIES)}.")
    backend = keras.backend.backend()
    engine = STRATEGIES[name]
    if engine is not None and engine != backend:
        raise UsageError(
            f"--strategy {name} runs on the {engine} backend, but KERAS_BACKEND is {backend}; "
            f"set KERAS_BACKEND={engine}, or pick one of: "
            + ", ".join(s for s, e in STRATEGIES.items() if e in (None, backend)) + "."
        )
    if name != "model_parallel" and (options.mesh_shape or options.shard_embedding):
        raise UsageError("--mesh-shape and --shard-embedding apply to --strategy model_parallel.")
    if name == "none":
        return engines.Distributed(options, log)
    if name in ("mirrored", "tpu"):
        return engines.TFStrategy(options, log)
    if name == "multi_worker":
        return engines.TFMultiWorker(options, log)
    if name in ("data_parallel", "model_parallel"):
        return engines.JaxDistribution(options, log)
    return engines.TorchDDP(options, log)
