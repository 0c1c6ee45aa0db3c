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

import argparse
import dataclasses
import os

from applications.options import UsageError

# strategy -> the Keras backend it runs on (None: any).
STRATEGIES = {
    "none": None,
    "mirrored": "tensorflow",
    "multi_worker": "tensorflow",
    "tpu": "tensorflow",
    "data_parallel": "jax",
    "model_parallel": "jax",
    "ddp": "torch",
}
OPTION_NAMES = ("strategy", "job_addresses", "num_processes", "process_id", "mesh_shape",
                "shard_embedding", "tpu")


def _mesh_shape(text: str) -> tuple[int, int]:
    parts = [p for p in text.replace("x", ",").split(",") if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected DATA,MODEL such as 2,2; got {text!r}")
    return values


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_options(p: argparse.ArgumentParser) -> None:
    """--strategy and the cluster flags (all default to "not given")."""
    g = p.add_argument_group("distribution (see docs/distributed.md)")
    g.add_argument("--strategy", choices=tuple(STRATEGIES),
                   help="none (default); TensorFlow: mirrored, multi_worker, tpu; JAX: "
                   "data_parallel, model_parallel; PyTorch: ddp")
    g.add_argument("--job-addresses", metavar="HOST:PORT[,HOST:PORT...]",
                   help="every process's address, process 0 first (JAX and torch need only "
                   "the first, the coordinator); 'auto' lets JAX detect a TPU pod/SLURM cluster")
    g.add_argument("--num-processes", type=int, help="processes in the job (one per host/GPU)")
    g.add_argument("--process-id", type=int, help="this process's index, 0 = chief")
    g.add_argument("--mesh-shape", type=_mesh_shape, metavar="DATA,MODEL",
                   help="model_parallel: device mesh (data-parallel x model-parallel), "
                   "default 1,all-devices")
    g.add_argument("--shard-embedding", type=_bool,
                   help="model_parallel: also shard the patch embedding (false)")
    g.add_argument("--tpu", help="tpu: TPU name or grpc:// address (default: local TPU VM)")


@dataclasses.dataclass
class Options:
    """The distribution flags of one process (not part of the saved run config:
    they differ between processes and may change when a run is resumed)."""

    strategy: str = "none"
    job_addresses: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    mesh_shape: tuple[int, int] | None = None
    shard_embedding: bool = False
    tpu: str | None = None

    @classmethod
    def pop_from(cls, explicit: dict) -> "Options":
        """Removes the distribution flags from `explicit`; returns them."""
        return cls(**{k: explicit.pop(k) for k in OPTION_NAMES if k in explicit})


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
